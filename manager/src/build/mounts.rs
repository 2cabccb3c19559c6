//! `RUN --mount`: what a RUN container gets mounted besides its rootfs, and what is undone
//! after it.
//!
//! - `type=bind` (the default): a file or directory of the context (`from` absent; resolved
//!   beneath the context, a symlink leading out is refused) or of a stage or image (`from=`;
//!   resolved in a read-only view of it, its symlinks staying inside). The source is opened
//!   with `openat2` and bind-mounted from its fd onto a staging path in the build's work dir,
//!   which the spec binds read-only; `rw` puts an overlay with a throwaway upper dir over it
//!   (a file is copied), so writes are discarded.
//! - `type=cache`: a directory `<root>/build-cache-mounts/<ns>/<sha256 of id>` (`id` defaults
//!   to the target), made on first use with `mode`/`uid`/`gid` (0755, 0:0) and, with `from`,
//!   seeded from `source` of that stage or image. It outlives builds, is never part of an
//!   image, and `berth builder prune` removes it. `sharing=shared` lets builds use it at
//!   once, `locked` makes them take turns (flock on `<dir>.lock`), `private` gives a build
//!   that finds it in use a fresh empty directory of its own, discarded after the step.
//! - `type=tmpfs`: a tmpfs (`size=` as go-units reads it), gone with the container.
//!
//! Targets are absolute or relative to the working dir (`/` is refused, as by BuildKit).
//! A target missing from the rootfs is created before the run and removed after it (with the
//! directories made for it, when empty), so the layer holds no trace of the mount.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_build::instructions::{Mount, MountType, Run, Sharing};
use berth_build::Source;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::{fsops, hex, oci, Build, BuildError, View};

/// The mounts of one RUN: spec entries, and what holds them until the container is gone.
pub(super) struct Prepared<'a> {
    /// OCI `mounts` entries, parents before children.
    pub spec: Vec<Value>,
    /// Dropped after the run, in order: staging mounts, views, locks, temp dirs.
    staged: Vec<Staged>,
    _views: Vec<View<'a>>,
    _locks: Vec<File>,
    /// Mount points made in the rootfs: (first component that was missing, the target).
    stubs: Vec<(String, String)>,
}

/// A staging mount point in the work dir: unmounted (`mounts` times) and removed on drop.
struct Staged {
    path: PathBuf,
    mounts: usize,
    /// Other paths to remove after it (overlay upper and work dirs, copies).
    extra: Vec<PathBuf>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        for _ in 0..self.mounts {
            if let Err(e) = umount2(&self.path, MntFlags::empty()) {
                tracing::warn!(path = %self.path.display(), error = %e, "unmounting a RUN mount; detaching");
                let _ = umount2(&self.path, MntFlags::MNT_DETACH);
            }
        }
        let r = if self.path.is_dir() {
            if self.mounts == 0 {
                // A directory of our own (a private cache), not a mount point.
                std::fs::remove_dir_all(&self.path)
            } else {
                std::fs::remove_dir(&self.path)
            }
        } else {
            std::fs::remove_file(&self.path)
        };
        if let Err(e) = r {
            tracing::warn!(path = %self.path.display(), error = %e, "removing a RUN mount point");
        }
        for p in &self.extra {
            let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
        }
    }
}

/// A cleaned absolute path.
fn clean_abs(p: &str) -> String {
    let c = berth_build::ignore::clean_path(&format!("/{p}"));
    if c.is_empty() {
        "/".into()
    } else {
        c
    }
}

/// The absolute target of a mount (relative ones are under the working dir).
pub(super) fn target_of(m: &Mount, cwd: &str) -> Result<String, BuildError> {
    let t = m.target.as_deref().unwrap_or("");
    let abs = if t.starts_with('/') {
        clean_abs(t)
    } else {
        clean_abs(&format!("{cwd}/{t}"))
    };
    if abs == "/" {
        return Err(BuildError::Invalid(format!("invalid mount target {abs:?}")));
    }
    Ok(abs)
}

/// A mount's `source=` as a relative path ("." for the whole tree).
fn source_rel(m: &Mount) -> String {
    let c = clean_abs(m.source.as_deref().unwrap_or(""));
    let rel = c.trim_start_matches('/');
    if rel.is_empty() {
        ".".into()
    } else {
        rel.into()
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> BuildError {
    BuildError::Failed(format!("{what}: {e}"))
}

impl<'e> Build<'e> {
    /// Where `from=` of a mount points: a stage (by index or name, as the planner resolved
    /// it) or an image.
    fn mount_from(&self, from: &str) -> Source {
        if let Ok(n) = from.parse::<usize>() {
            return Source::Stage(n);
        }
        let lower = from.to_ascii_lowercase();
        match self
            .stage_names
            .iter()
            .rev()
            .find(|(_, n)| n.as_deref() == Some(lower.as_str()))
        {
            Some((i, _)) => Source::Stage(*i),
            None => Source::Image(from.to_string()),
        }
    }

    /// The key and top chain of a stage or image a mount reads.
    fn mounted_tree(
        &self,
        src: &Source,
    ) -> Result<(String, Option<berth_store::Digest>), BuildError> {
        match src {
            Source::Stage(i) => {
                let d = self
                    .done
                    .lock()
                    .map_err(|_| BuildError::Failed("poisoned".into()))?;
                let o = d
                    .get(i)
                    .ok_or_else(|| BuildError::Failed(format!("stage {i} was not built")))?;
                Ok((o.key.clone(), o.fs.chain()))
            }
            Source::Image(r) => {
                let b = self.images.get(r)?;
                if !b.diff_ids.is_empty() {
                    self.engine.store.unpack(&self.ctx, &b.name, None)?;
                }
                Ok((b.manifest.to_string(), oci::chain_ids(&b.diff_ids).pop()))
            }
            Source::Context => Ok(("context".into(), None)),
        }
    }

    /// What of RUN's mounts goes into its cache key besides their flags: the content of a
    /// bound context path, the key of a bound (or cache-seeding) stage or image. `None` when
    /// the RUN reads nothing that way.
    pub(super) fn mounts_digest(&self, r: &Run) -> Result<Option<String>, BuildError> {
        let mut h = Sha256::new();
        let mut any = false;
        for m in &r.mounts {
            match (m.kind, &m.from) {
                (MountType::Bind, None) => {
                    let rel = source_rel(m);
                    let root = fsops::open_root(&self.context)
                        .map_err(|e| failed("opening the context", e))?;
                    let fd = open_source(&root, &rel, true, m)?;
                    h.update(b"context\0");
                    fsops::tree_digest(&mut h, &fsops::fd_path(&fd), &rel, true)
                        .map_err(|e| failed(&format!("reading {rel}"), e))?;
                    any = true;
                }
                (MountType::Bind | MountType::Cache, Some(f)) => {
                    let (key, _) = self.mounted_tree(&self.mount_from(f))?;
                    h.update(format!("from {key} {}\0", source_rel(m)).as_bytes());
                    any = true;
                }
                _ => {}
            }
        }
        Ok(any.then(|| hex(h)))
    }

    /// Mounts what RUN's `--mount`s need and makes their mount points in `rootfs`.
    pub(super) fn prepare_mounts(
        &self,
        r: &Run,
        rootfs: &Path,
        cwd: &str,
    ) -> Result<Prepared<'_>, BuildError> {
        let mut p = Prepared {
            spec: Vec::new(),
            staged: Vec::new(),
            _views: Vec::new(),
            _locks: Vec::new(),
            stubs: Vec::new(),
        };
        let res = self.prepare_into(&mut p, r, rootfs, cwd);
        if let Err(e) = res {
            p.finish(rootfs);
            return Err(e);
        }
        // Parents first.
        p.spec.sort_by_key(|v| {
            v["destination"]
                .as_str()
                .map(|d| d.matches('/').count())
                .unwrap_or(0)
        });
        Ok(p)
    }

    fn prepare_into<'s>(
        &'s self,
        p: &mut Prepared<'s>,
        r: &Run,
        rootfs: &Path,
        cwd: &str,
    ) -> Result<(), BuildError> {
        let dir = self.work.join("mnt");
        std::fs::create_dir_all(&dir).map_err(|e| failed("creating the mounts dir", e))?;
        let root = fsops::open_root(rootfs).map_err(|e| failed("opening the rootfs", e))?;
        for (n, m) in r.mounts.iter().enumerate() {
            let target = target_of(m, cwd)?;
            let rw = if m.read_only { "ro" } else { "rw" };
            match m.kind {
                MountType::Secret | MountType::Ssh => {
                    return Err(BuildError::Invalid(format!(
                        "RUN --mount=type={} is not supported by berth build yet",
                        m.kind.as_str()
                    )))
                }
                MountType::Tmpfs => {
                    let mut opts = vec!["nosuid".to_string(), "nodev".into(), "mode=1777".into()];
                    if let Some(s) = &m.size {
                        let b = berth_build::instructions::ram_in_bytes(s)
                            .map_err(BuildError::Invalid)?;
                        opts.push(format!("size={b}"));
                    }
                    self.stub(p, &root, &target, true)?;
                    p.spec.push(json!({"destination": target, "type": "tmpfs",
                        "source": "tmpfs", "options": opts}));
                }
                MountType::Cache => {
                    let src = self.cache_dir(p, m, &target, &dir, n)?;
                    self.stub(p, &root, &target, true)?;
                    p.spec.push(json!({"destination": target, "type": "bind",
                        "source": src, "options": ["rbind", rw]}));
                }
                MountType::Bind => {
                    let rel = source_rel(m);
                    let fd = match &m.from {
                        None => {
                            let ctx = fsops::open_root(&self.context)
                                .map_err(|e| failed("opening the context", e))?;
                            open_source(&ctx, &rel, true, m)?
                        }
                        Some(f) => {
                            let (_, chain) = self.mounted_tree(&self.mount_from(f))?;
                            let view = self.view(chain.as_ref())?;
                            let vroot = fsops::open_root(view.path())
                                .map_err(|e| failed("opening a view", e))?;
                            let fd = open_source(&vroot, &rel, false, m)?;
                            p._views.push(view);
                            fd
                        }
                    };
                    let is_dir = std::fs::metadata(fsops::fd_path(&fd))
                        .map_err(|e| failed(&format!("reading {rel}"), e))?
                        .is_dir();
                    let src = stage_bind(p, &fd, is_dir, m.read_only, &dir, n)?;
                    self.stub(p, &root, &target, is_dir)?;
                    p.spec.push(json!({"destination": target, "type": "bind",
                        "source": src, "options": ["rbind", rw]}));
                }
            }
        }
        Ok(())
    }

    /// Makes the mount points of files bound over the rootfs besides the `--mount`s (a
    /// network's /etc/hosts, resolv.conf and hostname) where missing; `finish` removes them
    /// with the others.
    pub(super) fn stub_files(
        &self,
        p: &mut Prepared<'_>,
        rootfs: &Path,
        targets: &[&str],
    ) -> Result<(), BuildError> {
        let root = fsops::open_root(rootfs).map_err(|e| failed("opening the rootfs", e))?;
        for t in targets {
            self.stub(p, &root, t, false)?;
        }
        Ok(())
    }

    /// The directory of a cache mount, made (and seeded) on first use, locked as its
    /// `sharing` says.
    fn cache_dir(
        &self,
        p: &mut Prepared<'_>,
        m: &Mount,
        target: &str,
        work: &Path,
        n: usize,
    ) -> Result<PathBuf, BuildError> {
        let id = m.id.clone().unwrap_or_else(|| target.to_string());
        let base = self.engine.cache_mounts.join(&self.ctx.namespace);
        std::fs::create_dir_all(&base).map_err(|e| failed("creating the cache mounts dir", e))?;
        let name = hex(Sha256::new_with_prefix(id.as_bytes()));
        let dir = base.join(&name);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(base.join(format!("{name}.lock")))
            .map_err(|e| failed("opening the cache mount's lock", e))?;
        let sharing = m.sharing.unwrap_or(Sharing::Shared);
        let (op, wait) = match sharing {
            Sharing::Shared => (libc::LOCK_SH, true),
            Sharing::Locked => (libc::LOCK_EX, true),
            Sharing::Private => (libc::LOCK_EX, false),
        };
        loop {
            // SAFETY: flock on an fd we own.
            if unsafe { libc::flock(lock.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(failed("locking a cache mount", e));
            }
            if !wait {
                // In use: a private cache of this step's own, thrown away after it.
                let own = work.join(format!("{n}-private-cache"));
                self.new_cache_dir(m, &own)?;
                p.staged.push(Staged {
                    path: own.clone(),
                    mounts: 0,
                    extra: Vec::new(),
                });
                return Ok(own);
            }
            if self.abort.load(Ordering::Acquire) {
                return Err(BuildError::Cancelled);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Held until the step ends (shared users too, so `locked` and `private` ones see them).
        p._locks.push(lock);
        if !dir.exists() {
            let tmp = base.join(format!("{name}.new-{}", self.id));
            let _ = std::fs::remove_dir_all(&tmp);
            self.new_cache_dir(m, &tmp)?;
            // RENAME_NOREPLACE: a plain rename would replace an empty directory another
            // build just put there and may be using.
            let (from, to) = (
                CString::new(tmp.as_os_str().as_bytes()).map_err(|e| failed("a cache path", e))?,
                CString::new(dir.as_os_str().as_bytes()).map_err(|e| failed("a cache path", e))?,
            );
            // SAFETY: valid C strings.
            let r = unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    from.as_ptr(),
                    libc::AT_FDCWD,
                    to.as_ptr(),
                    libc::RENAME_NOREPLACE,
                )
            };
            if r != 0 {
                let e = std::io::Error::last_os_error();
                // Another build made it first.
                let _ = std::fs::remove_dir_all(&tmp);
                if !dir.is_dir() {
                    return Err(failed("creating a cache mount", e));
                }
            }
        }
        Ok(dir)
    }

    /// A new cache directory with the mount's mode and owner, seeded from `from`/`source`.
    fn new_cache_dir(&self, m: &Mount, dir: &Path) -> Result<(), BuildError> {
        std::fs::create_dir(dir).map_err(|e| failed("creating a cache mount", e))?;
        if let Some(f) = &m.from {
            let (_, chain) = self.mounted_tree(&self.mount_from(f))?;
            let view = self.view(chain.as_ref())?;
            let vroot = fsops::open_root(view.path()).map_err(|e| failed("opening a view", e))?;
            let src = open_source(&vroot, &source_rel(m), false, m)?;
            let dst = fsops::open_root(dir).map_err(|e| failed("opening a cache mount", e))?;
            fsops::copy_dir_contents(
                &fsops::fd_path(&src),
                &dst,
                &fsops::CopyOpts {
                    owner: None,
                    mode: None,
                },
            )
            .map_err(|e| failed("seeding a cache mount", e))?;
        }
        let c = CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| failed("a cache mount path", e))?;
        let uid = m.uid.unwrap_or(0);
        let gid = m.gid.unwrap_or(0);
        // SAFETY: valid C string.
        if unsafe { libc::chown(c.as_ptr(), uid, gid) } != 0 {
            return Err(failed(
                "chown of a cache mount",
                std::io::Error::last_os_error(),
            ));
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir,
            std::fs::Permissions::from_mode(m.mode.unwrap_or(0o755) & 0o7777),
        )
        .map_err(|e| failed("chmod of a cache mount", e))?;
        Ok(())
    }

    /// Makes `target` in the rootfs when missing (a directory, or an empty file for a file
    /// bind), remembering what was made.
    fn stub(
        &self,
        p: &mut Prepared<'_>,
        root: &OwnedFd,
        target: &str,
        dir: bool,
    ) -> Result<(), BuildError> {
        self.stub_in(p, root, target, dir, 0)
    }

    /// [`Self::stub`], `links` symlinks deep: a component that is a symlink to a missing
    /// path (an image's /etc/resolv.conf pointing at systemd's stub, say) is made where the
    /// link leads, inside the rootfs, as runc makes a mount point behind a symlink.
    fn stub_in(
        &self,
        p: &mut Prepared<'_>,
        root: &OwnedFd,
        target: &str,
        dir: bool,
        links: usize,
    ) -> Result<(), BuildError> {
        let comps: Vec<&str> = target.split('/').filter(|c| !c.is_empty()).collect();
        let mut first_missing = None;
        for i in 1..=comps.len() {
            let prefix = comps[..i].join("/");
            match fsops::openat2(
                root.as_raw_fd(),
                Path::new(&prefix),
                libc::O_PATH,
                fsops::IN_ROOT,
            ) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    if let Some(link) = dangling_link(root, &prefix) {
                        if links >= 40 {
                            return Err(failed(
                                &format!("mount target {target}"),
                                std::io::Error::from_raw_os_error(libc::ELOOP),
                            ));
                        }
                        let parent = comps[..i - 1].join("/");
                        let mut next = resolve_link(&parent, &link);
                        for c in &comps[i..] {
                            next.push('/');
                            next.push_str(c);
                        }
                        return self.stub_in(p, root, &next, dir, links + 1);
                    }
                    first_missing = Some(format!("/{prefix}"));
                    break;
                }
                Err(e) => return Err(failed(&format!("mount target {target}"), e)),
            }
        }
        let Some(first) = first_missing else {
            return Ok(());
        };
        let made = if dir {
            fsops::mkdir_all(root, target, (0, 0)).map(drop)
        } else {
            let (parent, name) = target.rsplit_once('/').unwrap_or(("", target));
            fsops::mkdir_all(root, parent, (0, 0)).and_then(|pfd| {
                let c = CString::new(name).map_err(std::io::Error::other)?;
                // SAFETY: valid C string, fd we own.
                let fd = unsafe {
                    libc::openat(
                        pfd.as_raw_fd(),
                        c.as_ptr(),
                        libc::O_CREAT
                            | libc::O_EXCL
                            | libc::O_NOFOLLOW
                            | libc::O_CLOEXEC
                            | libc::O_WRONLY,
                        0o644,
                    )
                };
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: fd we just opened.
                unsafe { libc::close(fd) };
                Ok(())
            })
        };
        // Recorded first, so that a half-made stub is removed too.
        p.stubs.push((first, target.to_string()));
        made.map_err(|e| failed(&format!("creating the mount point {target}"), e))
    }
}

/// The target of `path` (relative to the rootfs) when it is itself a symlink.
fn dangling_link(root: &OwnedFd, path: &str) -> Option<String> {
    let fd = fsops::openat2(
        root.as_raw_fd(),
        Path::new(path),
        libc::O_PATH | libc::O_NOFOLLOW,
        fsops::IN_ROOT,
    )
    .ok()?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: an O_PATH fd of ours, an empty path (the fd itself), a buffer of its length.
    let n = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    String::from_utf8(buf).ok()
}

/// Where symlink `link` found in directory `parent` leads, as a path from the rootfs (`..`
/// stops at its top, as the kernel's RESOLVE_IN_ROOT does).
fn resolve_link(parent: &str, link: &str) -> String {
    let mut out: Vec<&str> = if link.starts_with('/') {
        Vec::new()
    } else {
        parent.split('/').filter(|c| !c.is_empty()).collect()
    };
    for c in link.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

impl Prepared<'_> {
    /// After the run: staging mounts and views go, mount points made for the run are removed
    /// (directories only when empty; files only when still empty).
    pub(super) fn finish(mut self, rootfs: &Path) {
        while self.staged.pop().is_some() {}
        self._views.clear();
        self._locks.clear();
        let Ok(root) = fsops::open_root(rootfs) else {
            return;
        };
        for (first, target) in self.stubs.iter().rev() {
            let mut cur = target.as_str();
            loop {
                remove_stub(&root, cur);
                if cur == first || cur.len() <= first.len() {
                    break;
                }
                match cur.rsplit_once('/') {
                    Some((parent, _)) if !parent.is_empty() => cur = parent,
                    _ => break,
                }
            }
        }
    }
}

/// Removes `path` in the rootfs if it is an empty directory or an empty file.
fn remove_stub(root: &OwnedFd, path: &str) {
    let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
    let parent = if parent.is_empty() {
        "."
    } else {
        parent.trim_start_matches('/')
    };
    let Ok(pfd) = fsops::openat2(
        root.as_raw_fd(),
        Path::new(parent),
        libc::O_DIRECTORY | libc::O_RDONLY,
        fsops::IN_ROOT,
    ) else {
        return;
    };
    let Ok(c) = CString::new(name) else { return };
    // SAFETY: stat is plain data; valid C string and out pointer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe {
        libc::fstatat(
            pfd.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return;
    }
    let flags = match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => libc::AT_REMOVEDIR,
        libc::S_IFREG if st.st_size == 0 => 0,
        _ => return,
    };
    // SAFETY: valid C string; fails harmlessly on a non-empty directory.
    unsafe { libc::unlinkat(pfd.as_raw_fd(), c.as_ptr(), flags) };
}

/// Opens a mount's source under `root` (`beneath`: the context, where a way out is refused).
fn open_source(root: &OwnedFd, rel: &str, beneath: bool, m: &Mount) -> Result<OwnedFd, BuildError> {
    let resolve = if beneath {
        fsops::BENEATH
    } else {
        fsops::IN_ROOT
    };
    let written = m.source.as_deref().unwrap_or(".");
    fsops::openat2(root.as_raw_fd(), Path::new(rel), libc::O_PATH, resolve).map_err(|e| {
        match e.raw_os_error() {
            Some(libc::EXDEV) | Some(libc::ELOOP) if beneath => BuildError::Invalid(format!(
                "forbidden path outside the build context: {written}"
            )),
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => BuildError::Invalid(format!(
                "failed to compute cache key: \"/{}\": not found",
                rel.trim_start_matches("./")
            )),
            _ => failed(&format!("opening the mount source {written}"), e),
        }
    })
}

/// Binds the source (an `O_PATH` fd) onto a staging path in the work dir; a writable mount
/// gets an overlay with a throwaway upper dir on top (a file: a copy). Returns what the
/// spec binds.
fn stage_bind(
    p: &mut Prepared<'_>,
    fd: &OwnedFd,
    is_dir: bool,
    read_only: bool,
    work: &Path,
    n: usize,
) -> Result<PathBuf, BuildError> {
    let src = fsops::fd_path(fd);
    let at = work.join(format!("{n}"));
    if !read_only && !is_dir {
        std::fs::copy(&src, &at).map_err(|e| failed("copying a bind source", e))?;
        p.staged.push(Staged {
            path: at.clone(),
            mounts: 0,
            extra: Vec::new(),
        });
        return Ok(at);
    }
    if is_dir {
        std::fs::create_dir(&at)
    } else {
        File::create(&at).map(drop)
    }
    .map_err(|e| failed("creating a staging mount point", e))?;
    let mut staged = Staged {
        path: at.clone(),
        mounts: 0,
        extra: Vec::new(),
    };
    mount(
        Some(&src),
        &at,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| failed("binding a mount source", e))?;
    staged.mounts = 1;
    mount(
        None::<&str>,
        &at,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| failed("making a mount source read-only", e))?;
    if read_only {
        p.staged.push(staged);
        return Ok(at);
    }
    // rw directory: an overlay whose upper dir is thrown away.
    let upper = work.join(format!("{n}-upper"));
    let wdir = work.join(format!("{n}-work"));
    let over = work.join(format!("{n}-rw"));
    for d in [&upper, &wdir, &over] {
        std::fs::create_dir(d).map_err(|e| failed("creating an overlay dir", e))?;
    }
    p.staged.push(staged);
    let mut top = Staged {
        path: over.clone(),
        mounts: 0,
        extra: vec![upper.clone(), wdir.clone()],
    };
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        at.display(),
        upper.display(),
        wdir.display()
    );
    mount(
        Some("overlay"),
        &over,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| failed("mounting a writable overlay on a bind source", e))?;
    top.mounts = 1;
    p.staged.push(top);
    Ok(over)
}

impl Drop for Prepared<'_> {
    fn drop(&mut self) {
        // Top mounts first (an overlay before the bind under it).
        while self.staged.pop().is_some() {}
    }
}

/// Removes a namespace's cache mount directories no build is using; returns how many.
pub(super) fn prune(base: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(base) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains('.') {
            continue;
        }
        let Ok(lock) = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(base.join(format!("{name}.lock")))
        else {
            continue;
        };
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            continue; // in use
        }
        match std::fs::remove_dir_all(e.path()) {
            Ok(()) => n += 1,
            Err(err) => {
                tracing::warn!(dir = %e.path().display(), error = %err, "removing a cache mount")
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::resolve_link;

    #[test]
    fn links_resolve_inside_the_rootfs() {
        assert_eq!(
            resolve_link("etc", "../run/systemd/resolve/stub-resolv.conf"),
            "run/systemd/resolve/stub-resolv.conf"
        );
        assert_eq!(resolve_link("etc", "/run/x"), "run/x");
        assert_eq!(
            resolve_link("a/b", "../../../../../x"),
            "x",
            "no way above the top"
        );
        assert_eq!(resolve_link("a", "./b/./c"), "a/b/c");
    }
}
