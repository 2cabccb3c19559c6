//! `docker cp`: `GET /containers/{id}/archive?path=` (a tar of the path, with its stat in the
//! `X-Docker-Container-Path-Stat` header), `HEAD` of the same (the stat alone) and
//! `PUT /containers/{id}/archive?path=&noOverwriteDirNonDir=` (a tar extracted into a
//! directory).
//!
//! The work is done in the container's filesystem as its processes see it (see [`View`]):
//! while it runs (or is paused), through its own root, `/proc/<pid>/root`, so its volumes,
//! binds and tmpfs are reached and their read-only flags are the kernel's; when it does not
//! run, on its rootfs (the task's bundle rootfs, else its snapshot mounted for the request),
//! with a path under one of the spec's binds or volumes resolved in that mount's source.
//! Every path is resolved inside its root without ever following a symlink out of it (the
//! CVE-2018-15664 class): directories with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`,
//! so that `..` and absolute symlinks stay in the container (for a stopped container's volume
//! or bind: in that volume or bind, where dockerd would follow them into the container's
//! rootfs); the last component is never followed (a symlink is archived as a symlink, as
//! dockerd does); the tree is walked with `*at` calls and `O_NOFOLLOW`; extraction is the
//! layer crate's confined apply, rooted at the destination directory's fd.
//!
//! A PUT into a read-only bind or volume is refused with dockerd's 500 "mounted volume is
//! marked read-only", one into a read-only rootfs with "container rootfs is marked
//! read-only", before anything is written. With `copyUIDGID` (`docker cp -a`) the entries are
//! owned by the container's user (resolved in its /etc/passwd); Docker API containers have no
//! user namespace (`UsernsMode` other than host is refused), so ids are written as they are.
//!
//! Not covered: a stopped container's tmpfs has no content (the copy lands in the rootfs under
//! it, as with dockerd 20.10); a stopped container's directory that holds a mount point is
//! copied out with the directory under the nested mount, and a tar extracted above a mount
//! point writes the rootfs under it (mounts are mapped by the requested path alone, not
//! merged); a bind or volume whose source is reached through a symlink is refused while the
//! container is stopped. Hard links inside a copied tree are archived as separate files. A
//! container started while its stopped snapshot is mounted for a copy would mount the same
//! snapshot twice; copies are short, and that race is not guarded against.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Response, StatusCode};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::errors::ApiError;
use super::server::{empty, stream, Chunk, Reply, Req};
use super::{Api, NAMESPACE};
use crate::build::fsops::{openat2, IN_ROOT};

/// The header carrying the path's stat, base64 JSON.
const STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

/// `/containers/{id}/archive`: GET, HEAD or PUT.
pub async fn handle(api: &Api, req: Req, name: &str) -> Reply {
    match req.method {
        Method::GET => get(api, req, name, false).await,
        Method::HEAD => get(api, req, name, true).await,
        Method::PUT => put(api, req, name).await,
        _ => Err(ApiError::not_found("page not found")),
    }
}

/// The container's rootfs for the time of a request: the task's, or its snapshot mounted.
pub(super) struct Rootfs {
    pub(super) path: PathBuf,
    _mount: Option<crate::daemon::mounts::TempMount>,
}

fn is_mount_point(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(p), p.parent().map(std::fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

/// Runs in a blocking thread.
pub(super) fn rootfs(api: &Api, c: &berth_store::metadata::Container) -> Result<Rootfs, ApiError> {
    let state = api.state.state_dir();
    if crate::tasks::exists(state, NAMESPACE, &c.id) {
        let p = crate::tasks::bundle::Bundle::new(state, NAMESPACE, &c.id)
            .dir
            .join("rootfs");
        if is_mount_point(&p) {
            return Ok(Rootfs {
                path: p,
                _mount: None,
            });
        }
    }
    if c.snapshot_key.is_empty() {
        return Err(ApiError::internal(format!(
            "container {} has no snapshot",
            c.id
        )));
    }
    let mounts = api
        .state
        .store()
        .snapshotter()
        .mounts(&api.ctx(), &c.snapshot_key)?;
    let tm = crate::daemon::mounts::TempMount::new(state, &mounts).map_err(|e| {
        ApiError::internal(format!("mounting the snapshot of container {}: {e}", c.id))
    })?;
    Ok(Rootfs {
        path: tm.path().to_path_buf(),
        _mount: Some(tm),
    })
}

/// A bind mount of the container's spec (a volume's data dir or a host path), or another
/// mount (tmpfs, proc, ...), as a copy of a stopped container maps paths onto it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SpecMount {
    /// The destination's components below the root (cleaned).
    dest: Vec<String>,
    /// The host path (binds).
    source: PathBuf,
    /// A bind (its source has the content); else a mount with no content while stopped.
    bind: bool,
    /// Mounted read-only.
    ro: bool,
}

fn spec_mounts(spec: &serde_json::Value) -> Vec<SpecMount> {
    spec["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let dest = wanted(m["destination"].as_str()?).parts;
            let opts: Vec<&str> = m["options"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o.as_str())
                .collect();
            let bind = m["type"].as_str() == Some("bind")
                || opts.iter().any(|o| *o == "bind" || *o == "rbind");
            if dest.is_empty() {
                return None;
            }
            Some(SpecMount {
                dest,
                source: PathBuf::from(m["source"].as_str().unwrap_or("")),
                bind,
                ro: opts.contains(&"ro"),
            })
        })
        .collect()
}

/// The mount (of those `pick` keeps) whose destination is the longest prefix of `parts`: the
/// one a path lands in.
fn mount_of<'a>(
    mounts: &'a [SpecMount],
    parts: &[String],
    pick: impl Fn(&SpecMount) -> bool,
) -> Option<&'a SpecMount> {
    mounts
        .iter()
        .filter(|m| pick(m) && parts.starts_with(&m.dest))
        .max_by_key(|m| m.dest.len())
}

/// The container's filesystem as a copy sees it.
///
/// - Running (or paused): its own root, `/proc/<pid>/root`, with its volumes, binds and tmpfs
///   mounted as its processes see them. The pid is pinned with a pidfd while the root is
///   opened, and the root must be the task's rootfs (same device and inode), so a pid reused
///   by another process can never lend its root; otherwise the stopped view is used.
/// - Otherwise: the rootfs (the task's bundle rootfs or the snapshot mounted for the request),
///   and a path under a bind or volume of the spec (longest destination prefix) is resolved in
///   that mount's source instead, with `RESOLVE_IN_ROOT` at the source (so `..` and symlinks
///   in the volume stay in the volume) and the source itself opened with
///   `RESOLVE_NO_SYMLINKS`. A tmpfs has no content while stopped: as with dockerd, the path
///   lands in the rootfs under it. Copying out a directory that holds a mount point gives the
///   directory under the nested mount, not the mount's content (not merged).
pub(super) struct View {
    root: OwnedFd,
    /// What `readlink /proc/self/fd/N` of a file under `root` starts with.
    root_prefix: PathBuf,
    live: bool,
    mounts: Vec<SpecMount>,
    readonly_root: bool,
    _fs: Option<Rootfs>,
}

/// Where one path of a request is resolved: a root and the path below it, and the container
/// path of that root (for the link targets reported).
struct Located {
    root: OwnedFd,
    rel: Wanted,
    root_prefix: PathBuf,
    dest: String,
}

/// `pidfd_open(pid)`: the process, pinned; `None` if it is gone.
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: a plain syscall; the fd returned is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a new fd we own.
    Some(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// True while the pidfd's process has not exited.
fn pidfd_alive(pidfd: &OwnedFd) -> bool {
    // SAFETY: signal 0 only checks; null info is allowed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    r == 0
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    lstatat(fd, &cstr(b"")?)
}

/// The running container's root through `/proc/<pid>/root`, if `pid` is still its init.
fn live_root(state: &Path, id: &str, pid: u32) -> Option<OwnedFd> {
    let pidfd = pidfd_open(pid)?;
    let root = crate::build::fsops::open_root(Path::new(&format!("/proc/{pid}/root"))).ok()?;
    if !pidfd_alive(&pidfd) {
        return None;
    }
    // The pidfd's process was alive after the root was opened: the root is its root. It is
    // the container's if it is the task's rootfs.
    let bundle = crate::tasks::bundle::Bundle::new(state, NAMESPACE, id)
        .dir
        .join("rootfs");
    let want = crate::build::fsops::open_root(&bundle).ok()?;
    let (a, b) = (fstat(&root).ok()?, fstat(&want).ok()?);
    if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino) {
        tracing::debug!(container = %id, pid, "docker cp: the pid's root is not the container's");
        return None;
    }
    Some(root)
}

impl View {
    /// Runs in a blocking thread. `pid`: the task's init while it runs, else 0.
    pub(super) fn open(
        api: &Api,
        c: &berth_store::metadata::Container,
        pid: u32,
    ) -> Result<View, ApiError> {
        let spec: serde_json::Value = c
            .spec
            .as_ref()
            .and_then(|s| serde_json::from_slice(&s.value).ok())
            .unwrap_or_default();
        let mounts = spec_mounts(&spec);
        let readonly_root = spec["root"]["readonly"].as_bool().unwrap_or(false);
        if pid > 0 {
            if let Some(root) = live_root(api.state.state_dir(), &c.id, pid) {
                return Ok(View {
                    root,
                    root_prefix: PathBuf::from("/"),
                    live: true,
                    mounts,
                    readonly_root,
                    _fs: None,
                });
            }
        }
        let fs = rootfs(api, c)?;
        let root = crate::build::fsops::open_root(&fs.path)
            .map_err(|e| ApiError::internal(format!("opening the rootfs: {e}")))?;
        Ok(View {
            root,
            root_prefix: fs.path.clone(),
            live: false,
            mounts,
            readonly_root,
            _fs: Some(fs),
        })
    }

    /// The container's root, as a path (`/proc/self/fd/N`) for reading its files.
    fn root_path(&self) -> PathBuf {
        crate::build::fsops::fd_path(&self.root)
    }

    /// A PUT into `w` is refused as dockerd refuses it: into a read-only bind or volume, or
    /// into the rootfs of a container whose rootfs is read-only (a path in a mount that is
    /// not a bind counts as the rootfs when stopped: dockerd does not reach a tmpfs then).
    fn check_writable(&self, w: &Wanted) -> Result<(), ApiError> {
        let live = self.live;
        match mount_of(&self.mounts, &w.parts, |m| live || m.bind) {
            Some(m) if m.ro => Err(ApiError::internal("mounted volume is marked read-only")),
            None if self.readonly_root => {
                Err(ApiError::internal("container rootfs is marked read-only"))
            }
            _ => Ok(()),
        }
    }

    /// Where `w` is resolved. `path`/`name`: the request's, for errors.
    fn locate(&self, w: &Wanted, path: &str, name: &str) -> Result<Located, ApiError> {
        let whole = |root: &OwnedFd, root_prefix: PathBuf| -> Result<Located, ApiError> {
            Ok(Located {
                root: root
                    .try_clone()
                    .map_err(|e| ApiError::internal(format!("duplicating an fd: {e}")))?,
                rel: w.clone(),
                root_prefix,
                dest: String::new(),
            })
        };
        if self.live {
            return whole(&self.root, self.root_prefix.clone());
        }
        let Some(m) = mount_of(&self.mounts, &w.parts, |m| m.bind) else {
            return whole(&self.root, self.root_prefix.clone());
        };
        let dest = format!("/{}", m.dest.join("/"));
        let rest = &w.parts[m.dest.len()..];
        let no_links = |p: &Path, flags| {
            openat2(libc::AT_FDCWD, p, flags, libc::RESOLVE_NO_SYMLINKS).map_err(|e| {
                match e.raw_os_error() {
                    Some(libc::ELOOP) => ApiError::bad_request(format!(
                        "the source {} of the mount at {dest} in container {name} is a \
                         symlink or under one, which a copy does not follow while the \
                         container is stopped",
                        m.source.display()
                    )),
                    _ => io_error(e, path, name),
                }
            })
        };
        let src = no_links(&m.source, libc::O_PATH)?;
        let st = fstat(&src).map_err(|e| io_error(e, path, name))?;
        let prefix_of =
            |fd: &OwnedFd| std::fs::read_link(crate::build::fsops::fd_path(fd)).unwrap_or_default();
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            let root = no_links(&m.source, libc::O_DIRECTORY | libc::O_RDONLY)?;
            let root_prefix = prefix_of(&root);
            return Ok(Located {
                root,
                rel: Wanted {
                    parts: rest.to_vec(),
                    // The mount's root is a directory, never a link.
                    follow_last: w.follow_last || rest.is_empty(),
                    base: w.base.clone(),
                },
                root_prefix,
                dest,
            });
        }
        // A file bound onto a file: only the file itself is there.
        if !rest.is_empty() || w.follow_last {
            return Err(io_error(
                io::Error::from_raw_os_error(libc::ENOTDIR),
                path,
                name,
            ));
        }
        let (Some(parent), Some(file)) = (m.source.parent(), m.source.file_name()) else {
            return Err(not_found(path, name));
        };
        let root = no_links(parent, libc::O_DIRECTORY | libc::O_RDONLY)?;
        let root_prefix = prefix_of(&root);
        Ok(Located {
            root,
            rel: Wanted {
                parts: vec![file.to_string_lossy().into_owned()],
                follow_last: false,
                base: w.base.clone(),
            },
            root_prefix,
            dest: format!("/{}", m.dest[..m.dest.len() - 1].join("/")),
        })
    }
}

/// A requested path, cleaned as Go's filepath.Clean does (`..` lexically, in the root), with
/// whether its last component is to be followed (a trailing `/` or `/.`) and the name its tar
/// entries get.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wanted {
    /// Components below the root.
    parts: Vec<String>,
    /// The whole path is a directory to enter (trailing `/` or `/.`, or the root).
    follow_last: bool,
    /// The name of the archive's top entry (`.` for `/.`).
    base: String,
}

fn wanted(path: &str) -> Wanted {
    let mut parts: Vec<String> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c.to_string()),
        }
    }
    let dot = path == "." || path.ends_with("/.");
    let slash = path.ends_with('/');
    let base = if dot || parts.is_empty() {
        ".".to_string()
    } else {
        parts.last().cloned().unwrap_or_default()
    };
    Wanted {
        follow_last: dot || slash || parts.is_empty(),
        parts,
        base,
    }
}

pub(super) fn cstr(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

pub(super) fn lstatat(dir: &OwnedFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Opens a directory inside the root: `rel` resolved with RESOLVE_IN_ROOT.
fn open_dir_in(root: &OwnedFd, rel: &str) -> io::Result<OwnedFd> {
    let rel = if rel.is_empty() { "." } else { rel };
    openat2(
        root.as_raw_fd(),
        Path::new(rel),
        libc::O_DIRECTORY | libc::O_RDONLY,
        IN_ROOT,
    )
}

/// What a path resolved to: a directory fd and the entry in it (empty name: the directory
/// itself), with its lstat.
struct Target {
    dir: OwnedFd,
    name: CString,
    st: libc::stat,
}

fn resolve(root: &OwnedFd, w: &Wanted) -> io::Result<Target> {
    if w.follow_last {
        let dir = open_dir_in(root, &w.parts.join("/"))?;
        let empty = cstr(b"")?;
        let st = lstatat(&dir, &empty)?;
        return Ok(Target {
            dir,
            name: empty,
            st,
        });
    }
    let n = w.parts.len();
    let dir = open_dir_in(root, &w.parts[..n - 1].join("/"))?;
    let name = cstr(w.parts[n - 1].as_bytes())?;
    let st = lstatat(&dir, &name)?;
    Ok(Target { dir, name, st })
}

/// Go's os.FileMode of a stat mode (what the CLI decodes from the stat header).
fn go_mode(mode: u32) -> u64 {
    let mut m = u64::from(mode & 0o777);
    m |= match mode & libc::S_IFMT {
        libc::S_IFDIR => 1 << 31,
        libc::S_IFLNK => 1 << 27,
        libc::S_IFBLK => 1 << 26,
        libc::S_IFCHR => (1 << 26) | (1 << 21),
        libc::S_IFIFO => 1 << 25,
        libc::S_IFSOCK => 1 << 24,
        _ => 0,
    };
    if mode & libc::S_ISUID != 0 {
        m |= 1 << 23;
    }
    if mode & libc::S_ISGID != 0 {
        m |= 1 << 22;
    }
    if mode & libc::S_ISVTX != 0 {
        m |= 1 << 20;
    }
    m
}

/// The container path a symlink resolves to (inside the root), as dockerd reports it.
fn link_target(l: &Located, t: &Target) -> String {
    let (root, w) = (&l.root, &l.rel);
    let raw = {
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: valid C string and buffer of the size given.
        let n = unsafe {
            libc::readlinkat(
                t.dir.as_raw_fd(),
                t.name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return String::new();
        }
        buf.truncate(n as usize);
        String::from_utf8_lossy(&buf).into_owned()
    };
    let joined = if raw.starts_with('/') {
        raw.clone()
    } else {
        let mut p = w.parts[..w.parts.len().saturating_sub(1)].join("/");
        p.push('/');
        p.push_str(&raw);
        p
    };
    // Resolved in the root; a dangling link keeps its lexical path.
    let resolved = openat2(
        root.as_raw_fd(),
        Path::new(joined.trim_start_matches('/')),
        libc::O_PATH,
        IN_ROOT,
    )
    .ok()
    .and_then(|fd| std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok())
    .and_then(|p| {
        p.strip_prefix(&l.root_prefix)
            .ok()
            .map(|r| container_path(&l.dest, &r.to_string_lossy()))
    });
    resolved.unwrap_or_else(|| container_path(&l.dest, &wanted(&joined).parts.join("/")))
}

/// `rel` below the mount at `dest` (empty: the root), as an absolute container path.
fn container_path(dest: &str, rel: &str) -> String {
    match (dest.trim_end_matches('/'), rel.trim_matches('/')) {
        ("", r) => format!("/{r}"),
        (d, "") => d.to_string(),
        (d, r) => format!("{d}/{r}"),
    }
}

fn stat_json(t: &Target, base: &str, link: String) -> serde_json::Value {
    let mtime = chrono::DateTime::from_timestamp(t.st.st_mtime, t.st.st_mtime_nsec as u32)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        .unwrap_or_default();
    json!({
        "name": base,
        "size": t.st.st_size,
        "mode": go_mode(t.st.st_mode),
        "mtime": mtime,
        "linkTarget": link,
    })
}

fn not_found(path: &str, name: &str) -> ApiError {
    ApiError::not_found(format!(
        "Could not find the file {path} in container {name}"
    ))
}

fn io_error(e: io::Error, path: &str, name: &str) -> ApiError {
    match e.raw_os_error() {
        Some(libc::ENOENT) => not_found(path, name),
        Some(libc::ENOTDIR) => ApiError::bad_request(format!("{path}: not a directory")),
        Some(libc::ELOOP) => {
            ApiError::bad_request(format!("{path}: too many levels of symbolic links"))
        }
        _ => ApiError::internal(format!("{path} in container {name}: {e}")),
    }
}

/// Writes tar bytes to the response, in 64 KiB pieces.
pub(super) struct ChanWriter {
    pub(super) tx: mpsc::Sender<Chunk>,
    pub(super) buf: Vec<u8>,
}

impl ChanWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let b = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(b))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

impl Write for ChanWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 64 * 1024 {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

fn header(st: &libc::stat, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    h
}

/// True for the kernel's file systems a running container has mounted (/proc, /sys, cgroups,
/// /dev/pts, ...): a copy through its root archives their directory alone, as a copy of the
/// rootfs would find it (their files are views of the kernel, some as large as its memory).
fn is_kernel_fs(d: &OwnedFd) -> bool {
    use nix::sys::statfs as sf;
    let Ok(st) = sf::fstatfs(d) else {
        return false;
    };
    [
        sf::PROC_SUPER_MAGIC,
        sf::SYSFS_MAGIC,
        sf::CGROUP_SUPER_MAGIC,
        sf::CGROUP2_SUPER_MAGIC,
        sf::DEVPTS_SUPER_MAGIC,
        sf::SECURITYFS_MAGIC,
        sf::DEBUGFS_MAGIC,
        sf::TRACEFS_MAGIC,
        sf::BPF_FS_MAGIC,
        sf::SELINUX_MAGIC,
    ]
    .contains(&st.filesystem_type())
}

/// Adds `name` of `dir` (with lstat `st`) to the archive as `tar_name`, never following a
/// symlink; directories recursively, except the kernel's file systems ([`is_kernel_fs`]).
pub(super) fn add<W: Write>(
    b: &mut tar::Builder<W>,
    dir: &OwnedFd,
    name: &CStr,
    st: &libc::stat,
    tar_name: &str,
) -> io::Result<()> {
    let kind = st.st_mode & libc::S_IFMT;
    let open = |flags: libc::c_int| -> io::Result<OwnedFd> {
        // SAFETY: valid C string; the fd returned is ours.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    // The directory itself (an empty name): reopened through ".".
    let self_name = name.to_bytes().is_empty();
    match kind {
        libc::S_IFDIR => {
            let d = if self_name {
                dir.try_clone()?
            } else {
                open(libc::O_RDONLY | libc::O_DIRECTORY)?
            };
            let mut h = header(st, tar::EntryType::Directory);
            b.append_data(&mut h, format!("{tar_name}/"), io::empty())?;
            if is_kernel_fs(&d) {
                return Ok(());
            }
            let mut names: Vec<Vec<u8>> = Vec::new();
            {
                let mut it = nix::dir::Dir::from_fd(d.try_clone()?).map_err(io::Error::from)?;
                for e in it.iter() {
                    let e = e.map_err(io::Error::from)?;
                    let n = e.file_name().to_bytes();
                    if n != b"." && n != b".." {
                        names.push(n.to_vec());
                    }
                }
            }
            names.sort();
            for n in names {
                let c = cstr(&n)?;
                let cst = match lstatat(&d, &c) {
                    Ok(s) => s,
                    // Removed meanwhile: as tar does, it is left out.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(e) => return Err(e),
                };
                let child = format!("{tar_name}/{}", String::from_utf8_lossy(&n));
                add(b, &d, &c, &cst, &child)?;
            }
        }
        libc::S_IFREG => {
            let fd = open(libc::O_RDONLY | libc::O_NONBLOCK)?;
            let f = File::from(fd);
            let md = f.metadata()?;
            if !md.is_file() {
                return Err(io::Error::other(format!(
                    "{tar_name} changed while archived"
                )));
            }
            let mut h = header(st, tar::EntryType::Regular);
            h.set_size(md.len());
            b.append_data(&mut h, tar_name, f.take(md.len()))?;
        }
        libc::S_IFLNK => {
            let mut buf = vec![0u8; libc::PATH_MAX as usize];
            // SAFETY: valid C string and buffer of the size given.
            let n = unsafe {
                libc::readlinkat(
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            buf.truncate(n as usize);
            let mut h = header(st, tar::EntryType::Symlink);
            b.append_link(&mut h, tar_name, OsStr::from_bytes(&buf))?;
        }
        libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
            let ty = match kind {
                libc::S_IFCHR => tar::EntryType::Char,
                libc::S_IFBLK => tar::EntryType::Block,
                _ => tar::EntryType::Fifo,
            };
            let mut h = header(st, ty);
            if kind != libc::S_IFIFO {
                h.set_device_major(libc::major(st.st_rdev))?;
                h.set_device_minor(libc::minor(st.st_rdev))?;
            }
            b.append_data(&mut h, tar_name, io::empty())?;
        }
        // Sockets cannot be archived.
        _ => {}
    }
    Ok(())
}

/// The pid of the container's init while it runs (or is paused), else 0.
async fn live_pid(api: &Api, c: &berth_store::metadata::Container) -> u32 {
    let st = api.run_state(c).await;
    if st.running() {
        st.pid
    } else {
        0
    }
}

/// GET (the tar) and HEAD (only the stat).
async fn get(api: &Api, req: Req, name: &str, head_only: bool) -> Reply {
    let path = req.q("path").unwrap_or("").to_string();
    if path.is_empty() {
        return Err(ApiError::bad_request("Path cannot be empty"));
    }
    let c = api.find_container(name).await?;
    let pid = live_pid(api, &c).await;
    let (stat_tx, stat_rx) = oneshot::channel::<Result<String, ApiError>>();
    let (tx, rx) = mpsc::channel::<Chunk>(8);
    let (api2, name2) = (api.clone(), name.to_string());
    tokio::task::spawn_blocking(move || {
        let w = wanted(&path);
        let opened = (|| {
            let fs = View::open(&api2, &c, pid)?;
            let l = fs.locate(&w, &path, &name2)?;
            let t = resolve(&l.root, &l.rel).map_err(|e| io_error(e, &path, &name2))?;
            let link = if t.st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                link_target(&l, &t)
            } else {
                String::new()
            };
            let stat = stat_json(&t, &w.base, link);
            let enc = base64::engine::general_purpose::STANDARD.encode(stat.to_string());
            Ok((fs, t, enc))
        })();
        let (fs, t, enc) = match opened {
            Ok(x) => x,
            Err(e) => {
                let _ = stat_tx.send(Err(e));
                return;
            }
        };
        if stat_tx.send(Ok(enc)).is_err() || head_only {
            return;
        }
        let mut b = tar::Builder::new(ChanWriter {
            tx: tx.clone(),
            buf: Vec::new(),
        });
        b.follow_symlinks(false);
        let r = add(&mut b, &t.dir, &t.name, &t.st, &w.base)
            .and_then(|_| b.finish())
            .and_then(|_| b.get_mut().flush());
        if let Err(e) = r {
            if e.kind() != io::ErrorKind::BrokenPipe {
                tracing::warn!(path = %path, error = %e, "docker api: archiving a container path");
                let _ = tx.blocking_send(Err(ApiError::internal(format!("archiving {path}: {e}"))));
            }
        }
        drop(fs);
    });
    let enc = stat_rx
        .await
        .map_err(|_| ApiError::internal("archive: the worker ended early"))??;
    let hv =
        HeaderValue::from_str(&enc).map_err(|e| ApiError::internal(format!("stat header: {e}")))?;
    let mut r = if head_only {
        let mut r = empty(StatusCode::OK);
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
        r
    } else {
        stream(rx, "application/x-tar", false).await?
    };
    r.headers_mut().insert(STAT_HEADER, hv);
    Ok(r)
}

/// Where a PUT body is kept while it is checked (it is read twice: checked, then applied).
struct Spool {
    path: PathBuf,
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Checks a tar before it is applied: it must be one, name no whiteouts (a copy writes
/// files, it does not delete), and with `no_overwrite` not put a directory where a
/// non-directory is or the reverse.
fn check_tar(f: &mut File, dest: &OwnedFd, no_overwrite: bool) -> Result<(), ApiError> {
    let bad = |e: &dyn std::fmt::Display| {
        ApiError::bad_request(format!("the request body is not a valid tar archive: {e}"))
    };
    f.rewind()
        .map_err(|e| ApiError::internal(format!("reading the spooled archive: {e}")))?;
    let mut a = tar::Archive::new(&mut *f);
    let mut n = 0u64;
    for e in a.entries().map_err(|e| bad(&e))? {
        let e = e.map_err(|e| bad(&e))?;
        n += 1;
        let p = e.path().map_err(|e| bad(&e))?.into_owned();
        let base = p
            .file_name()
            .map(|b| b.to_string_lossy().into_owned())
            .unwrap_or_default();
        if base.starts_with(berth_layer::WHITEOUT_PREFIX) {
            return Err(ApiError::bad_request(format!(
                "{}: whiteout entries cannot be copied into a container",
                p.display()
            )));
        }
        if !no_overwrite {
            continue;
        }
        let w = wanted(&p.to_string_lossy());
        if w.parts.is_empty() {
            continue;
        }
        let is_dir = e.header().entry_type() == tar::EntryType::Directory;
        let existing = resolve(
            dest,
            &Wanted {
                follow_last: false,
                ..w.clone()
            },
        );
        let Ok(t) = existing else { continue };
        let there_dir = t.st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if there_dir && !is_dir {
            return Err(ApiError::bad_request(format!(
                "cannot overwrite directory \"/{}\" with non-directory \"{}\"",
                w.parts.join("/"),
                p.display()
            )));
        }
        if !there_dir && is_dir {
            return Err(ApiError::bad_request(format!(
                "cannot overwrite non-directory \"/{}\" with directory \"{}\"",
                w.parts.join("/"),
                p.display()
            )));
        }
    }
    if n == 0 {
        return Err(bad(&"no entries"));
    }
    Ok(())
}

/// A copy of the (checked) tar in `f` at `out` with every entry owned by `uid`:`gid`.
fn rechown(f: &mut File, out: &Path, uid: u32, gid: u32) -> Result<File, ApiError> {
    let internal =
        |e: io::Error| ApiError::internal(format!("rewriting the archive's owners: {e}"));
    f.rewind().map_err(internal)?;
    let o = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(internal)?;
    let mut b = tar::Builder::new(o);
    let mut a = tar::Archive::new(&mut *f);
    for e in a.entries().map_err(internal)? {
        let mut e = e.map_err(internal)?;
        let mut h = e.header().clone();
        h.set_uid(u64::from(uid));
        h.set_gid(u64::from(gid));
        let path = e.path().map_err(internal)?.into_owned();
        match h.entry_type() {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = e
                    .link_name()
                    .map_err(internal)?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                b.append_link(&mut h, &path, &target).map_err(internal)?;
            }
            _ => b.append_data(&mut h, &path, &mut e).map_err(internal)?,
        }
    }
    b.into_inner().map_err(internal)
}

/// PUT: the body (a tar) extracted into the directory `path`.
async fn put(api: &Api, req: Req, name: &str) -> Reply {
    let path = req.q("path").unwrap_or("").to_string();
    if path.is_empty() {
        return Err(ApiError::bad_request("Path cannot be empty"));
    }
    let copy_uidgid = req.q_bool("copyUIDGID")?;
    let no_overwrite = req.q_bool("noOverwriteDirNonDir")?;
    let c = api.find_container(name).await?;
    let pid = live_pid(api, &c).await;
    let spool_dir = api.state.state_dir().join("docker-cp");
    let mut body = req.body_reader();
    let (api2, name2) = (api.clone(), name.to_string());
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&spool_dir)
            .map_err(|e| ApiError::internal(format!("creating {}: {e}", spool_dir.display())))?;
        // Bodies an earlier berthd was spooling when it stopped go once.
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(|| super::exec::sweep(&spool_dir));
        let spool = Spool {
            path: spool_dir.join(format!(
                "put-{}-{:016x}",
                std::process::id(),
                fastrand::u64(..)
            )),
        };
        let mut f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&spool.path)
            .map_err(|e| ApiError::internal(format!("creating {}: {e}", spool.path.display())))?;
        io::copy(&mut body, &mut f)
            .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        let fs = View::open(&api2, &c, pid)?;
        let w = wanted(&path);
        fs.check_writable(&w)?;
        let l = fs.locate(&w, &path, &name2)?;
        let dest =
            open_dir_in(&l.root, &l.rel.parts.join("/")).map_err(|e| match e.raw_os_error() {
                Some(libc::ENOTDIR) => ApiError::bad_request("extraction point is not a directory"),
                _ => io_error(e, &path, &name2),
            })?;
        check_tar(&mut f, &dest, no_overwrite)?;
        // `docker cp -a`: everything is owned by the container's user, as dockerd does.
        let (mut f, _owned) = if copy_uidgid {
            let user = super::lifecycle::Meta::of(&c).config["User"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let (uid, gid) = if user.is_empty() {
                (0, 0)
            } else {
                crate::build::fsops::resolve_user(&fs.root_path(), &user, false)
                    .map_err(ApiError::bad_request)?
            };
            let owned = Spool {
                path: spool.path.with_extension("owned"),
            };
            let out = rechown(&mut f, &owned.path, uid, gid)?;
            (out, Some(owned))
        } else {
            (f, None)
        };
        f.rewind()
            .map_err(|e| ApiError::internal(format!("reading the spooled archive: {e}")))?;
        let opts = berth_layer::ApplyOptions {
            whiteouts: berth_layer::WhiteoutMode::Delete,
            same_owner: true,
            xattrs: false,
        };
        // The destination's fd is the root of the extraction: nothing in the tar, nor a
        // symlink in the container, leads out of it.
        let dest_path = PathBuf::from(format!("/proc/self/fd/{}", dest.as_raw_fd()));
        berth_layer::apply_layer(f, &dest_path, &opts).map_err(|e| match e {
            berth_layer::LayerError::Corrupt { .. }
            | berth_layer::LayerError::PathEscape { .. } => {
                ApiError::bad_request(format!("extracting into {path}: {e}"))
            }
            e => ApiError::internal(format!("extracting into {path}: {e}")),
        })?;
        drop(dest);
        drop(fs);
        Ok::<(), ApiError>(())
    })
    .await
    .map_err(|e| ApiError::internal(format!("task failed: {e}")))??;
    Ok(Response::new(super::server::full(Vec::new())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_clean_like_go_and_keep_a_trailing_dot() {
        let w = wanted("/etc/../etc/passwd");
        assert_eq!(w.parts, ["etc", "passwd"]);
        assert!(!w.follow_last);
        assert_eq!(w.base, "passwd");
        let w = wanted("/data/.");
        assert!(w.follow_last);
        assert_eq!(w.base, ".");
        let w = wanted("/data/");
        assert!(w.follow_last);
        assert_eq!(w.base, "data");
        let w = wanted("/../../..");
        assert!(w.parts.is_empty());
        assert!(w.follow_last);
    }

    #[test]
    fn go_modes() {
        assert_eq!(go_mode(libc::S_IFDIR | 0o755), (1 << 31) | 0o755);
        assert_eq!(go_mode(libc::S_IFLNK | 0o777), (1 << 27) | 0o777);
        assert_eq!(go_mode(libc::S_IFREG | 0o4755), (1 << 23) | 0o755);
    }

    #[test]
    fn a_symlink_out_of_the_root_stays_in_it() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/shadow"), b"inside").unwrap();
        std::os::unix::fs::symlink("/", root.join("evil")).unwrap();
        std::os::unix::fs::symlink("/../../..", root.join("etc/x")).unwrap();
        let r = crate::build::fsops::open_root(&root).unwrap();
        for p in ["/evil/etc/shadow", "/etc/x/etc/shadow", "/../etc/shadow"] {
            let t = resolve(&r, &wanted(p)).unwrap();
            let mut b = tar::Builder::new(Vec::new());
            add(&mut b, &t.dir, &t.name, &t.st, "shadow").unwrap();
            let data = b.into_inner().unwrap();
            let mut a = tar::Archive::new(&data[..]);
            let mut e = a.entries().unwrap().next().unwrap().unwrap();
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            assert_eq!(s, "inside", "{p}");
        }
        // The link itself is archived as a link.
        let t = resolve(&r, &wanted("/evil")).unwrap();
        assert_eq!(t.st.st_mode & libc::S_IFMT, libc::S_IFLNK);
        let l = Located {
            root: r.try_clone().unwrap(),
            rel: wanted("/evil"),
            root_prefix: root.clone(),
            dest: String::new(),
        };
        assert_eq!(link_target(&l, &t), "/");
    }

    fn stopped_view(root: &Path, mounts: serde_json::Value, readonly_root: bool) -> View {
        View {
            root: crate::build::fsops::open_root(root).unwrap(),
            root_prefix: root.to_path_buf(),
            live: false,
            mounts: spec_mounts(&json!({ "mounts": mounts })),
            readonly_root,
            _fs: None,
        }
    }

    fn read_at(v: &View, path: &str) -> Result<String, ApiError> {
        let w = wanted(path);
        let l = v.locate(&w, path, "c")?;
        let t = resolve(&l.root, &l.rel).map_err(|e| io_error(e, path, "c"))?;
        let fd = openat2(
            t.dir.as_raw_fd(),
            Path::new(if t.name.to_bytes().is_empty() {
                "."
            } else {
                std::str::from_utf8(t.name.to_bytes()).unwrap()
            }),
            libc::O_RDONLY | libc::O_NOFOLLOW,
            0,
        )
        .map_err(|e| io_error(e, path, "c"))?;
        let mut s = String::new();
        File::from(fd).read_to_string(&mut s).unwrap();
        Ok(s)
    }

    #[test]
    fn spec_mounts_and_the_longest_prefix() {
        let m = spec_mounts(&json!({"mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/data/", "type": "bind", "source": "/v/a", "options": ["rbind", "ro"]},
            {"destination": "/data/sub", "source": "/v/b", "options": ["rbind", "rw"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]},
            {"destination": "/", "type": "bind", "source": "/"},
        ]}));
        assert_eq!(m.len(), 4, "a mount on / is no mount a path maps onto");
        assert!(m[1].bind && m[1].ro && m[2].bind && !m[2].ro && !m[3].bind);
        let parts = |p: &str| wanted(p).parts;
        let pick = |p: &str| mount_of(&m, &parts(p), |m| m.bind).map(|m| m.source.clone());
        assert_eq!(pick("/data/x"), Some(PathBuf::from("/v/a")));
        assert_eq!(pick("/data/sub/x"), Some(PathBuf::from("/v/b")));
        assert_eq!(pick("/data/subway"), Some(PathBuf::from("/v/a")));
        assert_eq!(pick("/database"), None);
        assert_eq!(pick("/tmp/x"), None);
        assert_eq!(pick("/data/../etc"), None);
    }

    #[test]
    fn a_stopped_containers_volume_keeps_its_links_and_dotdot_inside() {
        let d = tempfile::tempdir().unwrap();
        let (root, vol) = (d.path().join("root"), d.path().join("vol"));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::write(root.join("etc/passwd"), b"rootfs").unwrap();
        std::fs::write(root.join("data/under"), b"under the mount").unwrap();
        std::fs::create_dir_all(vol.join("etc")).unwrap();
        std::fs::write(vol.join("etc/passwd"), b"volume").unwrap();
        std::fs::write(vol.join("f"), b"in the volume").unwrap();
        std::os::unix::fs::symlink("/", vol.join("root")).unwrap();
        std::os::unix::fs::symlink("../../..", vol.join("up")).unwrap();
        let v = stopped_view(
            &root,
            json!([{"destination": "/data", "type": "bind", "source": vol, "options": ["rbind"]}]),
            false,
        );
        assert_eq!(read_at(&v, "/data/f").unwrap(), "in the volume");
        assert_eq!(read_at(&v, "/data/root/etc/passwd").unwrap(), "volume");
        assert_eq!(read_at(&v, "/data/up/etc/passwd").unwrap(), "volume");
        assert_eq!(read_at(&v, "/data/../etc/passwd").unwrap(), "rootfs");
        assert_eq!(read_at(&v, "/data/../../../etc/passwd").unwrap(), "rootfs");
        assert!(read_at(&v, "/data/under").is_err());
        // A link in the volume is reported by its container path.
        let w = wanted("/data/up");
        let l = v.locate(&w, "/data/up", "c").unwrap();
        let t = resolve(&l.root, &l.rel).unwrap();
        assert_eq!(link_target(&l, &t), "/data");
        assert_eq!(container_path("/data", "etc"), "/data/etc");
        assert_eq!(container_path("", "etc"), "/etc");
        assert_eq!(container_path("/data", ""), "/data");
    }

    #[test]
    fn a_stopped_containers_bind_source_under_a_symlink_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::create_dir_all(d.path().join("real")).unwrap();
        std::os::unix::fs::symlink(d.path().join("real"), d.path().join("link")).unwrap();
        std::os::unix::fs::symlink("/", d.path().join("slash")).unwrap();
        for src in ["link", "slash", "link/x"] {
            let v = stopped_view(
                &root,
                json!([{"destination": "/data", "type": "bind",
                        "source": d.path().join(src), "options": ["rbind"]}]),
                false,
            );
            let e = read_at(&v, "/data/etc/passwd").unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{src}: {}", e.message);
            assert!(e.message.contains("symlink"), "{src}: {}", e.message);
        }
    }

    #[test]
    fn a_file_bind_is_the_file_alone() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(d.path().join("cfg"), b"bound file").unwrap();
        let v = stopped_view(
            &root,
            json!([{"destination": "/etc/cfg", "type": "bind",
                    "source": d.path().join("cfg"), "options": ["rbind", "ro"]}]),
            true,
        );
        assert_eq!(read_at(&v, "/etc/cfg").unwrap(), "bound file");
        let e = read_at(&v, "/etc/cfg/x").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{}", e.message);
        // Writes: refused in the read-only bind and the read-only rootfs.
        let e = v.check_writable(&wanted("/etc/cfg")).unwrap_err();
        assert_eq!(e.message, "mounted volume is marked read-only");
        let e = v.check_writable(&wanted("/etc")).unwrap_err();
        assert_eq!(e.message, "container rootfs is marked read-only");
    }

    #[test]
    fn a_pid_whose_root_is_not_the_tasks_rootfs_is_not_used() {
        let d = tempfile::tempdir().unwrap();
        let bundle = crate::tasks::bundle::Bundle::new(d.path(), NAMESPACE, "c1").dir;
        std::fs::create_dir_all(&bundle).unwrap();
        // Our own process stands for the container's init: its root is /.
        let me = std::process::id();
        std::os::unix::fs::symlink("/", bundle.join("rootfs")).unwrap();
        assert!(live_root(d.path(), "c1", me).is_some());
        std::fs::remove_file(bundle.join("rootfs")).unwrap();
        std::fs::create_dir(bundle.join("rootfs")).unwrap();
        assert!(live_root(d.path(), "c1", me).is_none());
        // No task at all.
        assert!(live_root(d.path(), "c2", me).is_none());
    }

    #[test]
    fn the_kernels_file_systems_are_archived_as_their_directory_alone() {
        let r = crate::build::fsops::open_root(Path::new("/")).unwrap();
        for p in ["/proc", "/sys"] {
            let t = resolve(&r, &wanted(p)).unwrap();
            let mut b = tar::Builder::new(Vec::new());
            add(&mut b, &t.dir, &t.name, &t.st, "x").unwrap();
            let data = b.into_inner().unwrap();
            let mut a = tar::Archive::new(&data[..]);
            let names: Vec<String> = a
                .entries()
                .unwrap()
                .map(|e| e.unwrap().path().unwrap().display().to_string())
                .collect();
            assert_eq!(names, ["x/"], "{p}");
        }
    }
}
