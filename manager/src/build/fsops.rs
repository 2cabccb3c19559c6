//! File operations of COPY/ADD/WORKDIR on a mounted rootfs: every destination path is resolved
//! inside the rootfs with `openat2(RESOLVE_IN_ROOT)` and written with `*at` calls that never
//! follow a symlink, so a symlink an earlier RUN left in the image cannot send a write to the
//! host. Sources (the build context berthd extracted, or a read-only view of another stage)
//! are resolved with `RESOLVE_BENEATH` (context: a symlink leading out of it is refused) or
//! `RESOLVE_IN_ROOT` (a stage or image: its absolute symlinks stay in it).

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// `RESOLVE_NO_MAGICLINKS | RESOLVE_BENEATH`: refuse anything leading out of the root.
pub const BENEATH: u64 = 0x02 | 0x08;
/// `RESOLVE_NO_MAGICLINKS | RESOLVE_IN_ROOT`: `..` and absolute symlinks stay inside.
pub const IN_ROOT: u64 = 0x02 | 0x10;

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `openat2(dirfd, path, flags | O_CLOEXEC, resolve)`.
pub fn openat2(dirfd: RawFd, path: &Path, flags: libc::c_int, resolve: u64) -> io::Result<OwnedFd> {
    let p = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: open_how is plain data.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    // SAFETY: valid C string and open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            p.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Opens a directory as the root of later lookups.
pub fn open_root(p: &Path) -> io::Result<OwnedFd> {
    openat2(libc::AT_FDCWD, p, libc::O_DIRECTORY | libc::O_RDONLY, 0)
}

/// The path through which an fd's file can be reached (`/proc/self/fd/N`).
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn lstatat(dir: &OwnedFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// Splits a cleaned absolute container path into its components.
fn components(p: &str) -> Vec<&str> {
    p.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

/// Opens directory `path` inside `root` (resolved in the root), creating the missing ones
/// (mode 0755, owned by `owner`). A component that exists and is not a directory is an error.
pub fn mkdir_all(root: &OwnedFd, path: &str, owner: (u32, u32)) -> io::Result<OwnedFd> {
    let mut cur = openat2(
        root.as_raw_fd(),
        Path::new("."),
        libc::O_DIRECTORY | libc::O_RDONLY,
        IN_ROOT,
    )?;
    for c in components(path) {
        if c == ".." {
            cur = openat2(
                cur.as_raw_fd(),
                Path::new(".."),
                libc::O_DIRECTORY | libc::O_RDONLY,
                IN_ROOT,
            )?;
            continue;
        }
        let name = cstr(c.as_bytes())?;
        // Resolve from the root so that a symlinked directory stays inside it.
        let next = openat2(
            cur.as_raw_fd(),
            Path::new(c),
            libc::O_DIRECTORY | libc::O_RDONLY,
            IN_ROOT,
        );
        cur = match next {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                // SAFETY: valid C string.
                check(unsafe { libc::mkdirat(cur.as_raw_fd(), name.as_ptr(), 0o755) })?;
                let fd = openat2(
                    cur.as_raw_fd(),
                    Path::new(c),
                    libc::O_DIRECTORY | libc::O_RDONLY | libc::O_NOFOLLOW,
                    IN_ROOT,
                )?;
                // SAFETY: plain syscalls on an fd we own.
                unsafe {
                    check(libc::fchown(fd.as_raw_fd(), owner.0, owner.1))?;
                    check(libc::fchmod(fd.as_raw_fd(), 0o755))?;
                }
                fd
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(io::Error::other(format!("{path}: {c} is not a directory")))
            }
            Err(e) => return Err(e),
        };
    }
    Ok(cur)
}

/// Whether `path` inside `root` is a directory (following symlinks inside the root).
pub fn is_dir_in(root: &OwnedFd, path: &str) -> bool {
    openat2(
        root.as_raw_fd(),
        Path::new(path.trim_start_matches('/')),
        libc::O_DIRECTORY | libc::O_PATH,
        IN_ROOT,
    )
    .is_ok()
}

/// How copied entries are owned and moded.
#[derive(Debug, Clone, Copy)]
pub struct CopyOpts {
    /// Owner of every entry; `None` keeps the source's.
    pub owner: Option<(u32, u32)>,
    /// Mode of every file and directory; `None` keeps the source's.
    pub mode: Option<u32>,
}

/// Removes `name` in `dir` unless it is a directory (a file is replaced by a copy).
fn remove_non_dir(dir: &OwnedFd, name: &CStr) -> io::Result<Option<libc::stat>> {
    match lstatat(dir, name) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => Ok(Some(st)),
        Ok(_) => {
            // SAFETY: valid C string.
            check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) })?;
            Ok(None)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

fn set_times_at(dir: &OwnedFd, name: &CStr, md: &std::fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let ts = [
        libc::timespec {
            tv_sec: md.atime(),
            tv_nsec: md.atime_nsec(),
        },
        libc::timespec {
            tv_sec: md.mtime(),
            tv_nsec: md.mtime_nsec(),
        },
    ];
    // SAFETY: valid C string and two timespecs.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// Copies source `src` (a path on the host: the context or a mounted read-only tree, not
/// followed if it is a symlink) to `name` in directory `dst`. Directories are merged into an
/// existing directory of that name.
/// `follow` follows `src` itself if it is a symlink (a top-level source, as Docker does).
pub fn copy_entry(
    src: &Path,
    dst: &OwnedFd,
    name: &OsStr,
    o: &CopyOpts,
    follow: bool,
) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = if follow {
        std::fs::metadata(src)?
    } else {
        std::fs::symlink_metadata(src)?
    };
    let c = cstr(name.as_bytes())?;
    let (uid, gid) = o.owner.unwrap_or((md.uid(), md.gid()));
    let ft = md.file_type();
    if ft.is_dir() {
        if remove_non_dir(dst, &c)?.is_none() {
            // SAFETY: valid C string.
            check(unsafe { libc::mkdirat(dst.as_raw_fd(), c.as_ptr(), 0o700) })?;
        }
        let d = openat2(
            dst.as_raw_fd(),
            Path::new(name),
            libc::O_DIRECTORY | libc::O_RDONLY | libc::O_NOFOLLOW,
            BENEATH,
        )?;
        copy_dir_contents(src, &d, o)?;
        let mode = o.mode.unwrap_or(md.permissions().mode() & 0o7777);
        // SAFETY: plain syscalls on an fd we own.
        unsafe {
            check(libc::fchown(d.as_raw_fd(), uid, gid))?;
            check(libc::fchmod(d.as_raw_fd(), mode))?;
        }
        set_times_at(dst, &c, &md)?;
    } else if ft.is_symlink() {
        remove_non_dir(dst, &c)?;
        let target = std::fs::read_link(src)?;
        let t = cstr(target.as_os_str().as_bytes())?;
        // SAFETY: valid C strings; nothing is followed.
        unsafe {
            check(libc::symlinkat(t.as_ptr(), dst.as_raw_fd(), c.as_ptr()))?;
            check(libc::fchownat(
                dst.as_raw_fd(),
                c.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            ))?;
        }
        set_times_at(dst, &c, &md)?;
    } else if ft.is_file() {
        if remove_non_dir(dst, &c)?.is_some() {
            return Err(io::Error::other(format!(
                "cannot replace directory {} with a file",
                Path::new(name).display()
            )));
        }
        let mut sf = File::open(src)?;
        // SAFETY: valid C string.
        let fd = check(unsafe {
            libc::openat(
                dst.as_raw_fd(),
                c.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600,
            )
        })?;
        // SAFETY: a new fd we own.
        let mut df = unsafe { File::from_raw_fd(fd) };
        io::copy(&mut sf, &mut df)?;
        let mode = o.mode.unwrap_or(md.permissions().mode() & 0o7777);
        // SAFETY: plain syscalls on an fd we own.
        unsafe {
            check(libc::fchown(df.as_raw_fd(), uid, gid))?;
            check(libc::fchmod(df.as_raw_fd(), mode))?;
        }
        drop(df);
        set_times_at(dst, &c, &md)?;
    } else {
        // Devices and fifos keep their kind; sockets cannot be copied and are skipped.
        if ft.is_socket() {
            return Ok(());
        }
        remove_non_dir(dst, &c)?;
        // SAFETY: valid C string; nothing is followed.
        unsafe {
            check(libc::mknodat(
                dst.as_raw_fd(),
                c.as_ptr(),
                md.mode() as libc::mode_t,
                md.rdev() as libc::dev_t,
            ))?;
            check(libc::fchownat(
                dst.as_raw_fd(),
                c.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            ))?;
        }
    }
    Ok(())
}

use std::os::unix::fs::FileTypeExt;

/// Copies the entries of directory `src` into directory `dst`.
pub fn copy_dir_contents(src: &Path, dst: &OwnedFd, o: &CopyOpts) -> io::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(src)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for n in names {
        copy_entry(&src.join(&n), dst, &n, o, false)?;
    }
    Ok(())
}

/// Writes a new file `name` in `dst` with `data`, owner and mode.
pub fn write_file(
    dst: &OwnedFd,
    name: &OsStr,
    data: &[u8],
    owner: (u32, u32),
    mode: u32,
) -> io::Result<()> {
    let c = cstr(name.as_bytes())?;
    if remove_non_dir(dst, &c)?.is_some() {
        return Err(io::Error::other(format!(
            "{} is a directory",
            Path::new(name).display()
        )));
    }
    // SAFETY: valid C string.
    let fd = check(unsafe {
        libc::openat(
            dst.as_raw_fd(),
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        )
    })?;
    // SAFETY: a new fd we own.
    let mut f = unsafe { File::from_raw_fd(fd) };
    f.write_all(data)?;
    // SAFETY: plain syscalls on an fd we own.
    unsafe {
        check(libc::fchown(f.as_raw_fd(), owner.0, owner.1))?;
        check(libc::fchmod(f.as_raw_fd(), mode))?;
    }
    Ok(())
}

/// Reads a small file of the rootfs (e.g. /etc/passwd), resolved inside it; `None` if missing.
pub fn read_in_root(root: &Path, path: &str) -> Option<String> {
    let r = open_root(root).ok()?;
    let fd = openat2(
        r.as_raw_fd(),
        Path::new(path.trim_start_matches('/')),
        libc::O_RDONLY,
        IN_ROOT,
    )
    .ok()?;
    let mut s = String::new();
    File::from(fd).take(4 << 20).read_to_string(&mut s).ok()?;
    Some(s)
}

/// Resolves `user[:group]` (names or ids) against the rootfs' /etc/passwd and /etc/group, as
/// Docker does: a name must exist; a uid alone gets its passwd group (else gid = uid for
/// COPY --chown, 0 for RUN as Docker). Returns (uid, gid).
pub fn resolve_user(
    root: &Path,
    spec: &str,
    default_gid_is_uid: bool,
) -> Result<(u32, u32), String> {
    let (passwd, group) = user_files(root);
    exec_user(&passwd, &group, spec, &[], default_gid_is_uid).map(|u| (u.uid, u.gid))
}

/// A process's identity as a container's own files give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// Supplementary groups: those listing the user in /etc/group (when no group was given),
    /// then `group_add`'s; sorted, without repeats.
    pub additional_gids: Vec<u32>,
    /// The passwd entry's home directory (`/` when the user has no entry).
    pub home: String,
}

/// Resolves what a container runs as (`docker run -u`, the image's `USER`, `--group-add`)
/// against its rootfs, as dockerd does with runc's libcontainer/user at start: [`exec_user`]
/// over the rootfs' /etc/passwd and /etc/group, read with `openat2(RESOLVE_IN_ROOT)` so that
/// a symlink there never leads to the host's files.
pub fn resolve_exec_user(
    root: &Path,
    spec: &str,
    group_add: &[String],
) -> Result<ExecUser, String> {
    let (passwd, group) = user_files(root);
    exec_user(&passwd, &group, spec, group_add, false)
}

fn user_files(root: &Path) -> (String, String) {
    (
        read_in_root(root, "/etc/passwd").unwrap_or_default(),
        read_in_root(root, "/etc/group").unwrap_or_default(),
    )
}

/// libcontainer's `GetExecUser` and `GetAdditionalGroups` over the text of /etc/passwd and
/// /etc/group: an empty user is uid 0; a name must have a passwd entry, a uid need not (its
/// gid is then 0, or the uid with `default_gid_is_uid`); an explicit group (name or gid) is the
/// primary group and leaves out the supplementary ones; a `group_add` entry is a group name or
/// gid, a name that is not in /etc/group being an error.
pub fn exec_user(
    passwd: &str,
    group: &str,
    spec: &str,
    group_add: &[String],
    default_gid_is_uid: bool,
) -> Result<ExecUser, String> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g).filter(|g| !g.is_empty())),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    // name, uid, gid, home
    let entries: Vec<(&str, u32, u32, &str)> = passwd
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            let home = f.get(5).copied().unwrap_or("");
            Some((f[0], f[2].parse().ok()?, f[3].parse().ok()?, home))
        })
        .collect();
    // name, gid, members
    let groups: Vec<(&str, u32, Vec<&str>)> = group
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            let members = f
                .get(3)
                .map(|m| m.split(',').filter(|m| !m.is_empty()).collect())
                .unwrap_or_default();
            Some((f[0], f[2].parse().ok()?, members))
        })
        .collect();
    let matched = match user.parse::<u32>() {
        Ok(uid) => entries.iter().find(|e| e.1 == uid),
        Err(_) => entries.iter().find(|e| e.0 == user),
    };
    let (uid, pw_gid, name, home) = match (matched, user.parse::<u32>()) {
        (Some(&(n, u, g, h)), _) => (u, Some(g), Some(n), h.to_string()),
        (None, Ok(uid)) => (uid, None, None, "/".to_string()),
        (None, Err(_)) => {
            return Err(format!(
                "unable to find user {user}: no matching entries in passwd file"
            ))
        }
    };
    let mut additional = Vec::new();
    let gid = match grp {
        None => {
            if let Some(n) = name {
                additional.extend(groups.iter().filter(|g| g.2.contains(&n)).map(|g| g.1));
            }
            pw_gid.unwrap_or(if default_gid_is_uid { uid } else { 0 })
        }
        Some(g) => match g.parse::<u32>() {
            Ok(g) => g,
            Err(_) => groups
                .iter()
                .find(|e| e.0 == g)
                .map(|e| e.1)
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?,
        },
    };
    for g in group_add {
        let gid = match groups.iter().find(|e| e.0 == g || e.1.to_string() == *g) {
            Some(e) => e.1,
            None => g.parse::<u32>().map_err(|_| {
                format!("Unable to find group {g}: no matching entries in group file")
            })?,
        };
        additional.push(gid);
    }
    additional.sort_unstable();
    additional.dedup();
    Ok(ExecUser {
        uid,
        gid,
        additional_gids: additional,
        home,
    })
}

/// A digest of the files under `path` (a source of COPY/ADD): names, kinds, modes, owners,
/// sizes, symlink targets and contents, in sorted order; modification times are left out, as
/// BuildKit's content checksum does.
pub fn tree_digest(h: &mut Sha256, path: &Path, rel: &str, follow: bool) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let md = if follow {
        std::fs::metadata(path)?
    } else {
        std::fs::symlink_metadata(path)?
    };
    h.update(rel.as_bytes());
    h.update([0]);
    h.update(format!("{:o} {} {} {}", md.mode(), md.uid(), md.gid(), md.len()).as_bytes());
    let ft = md.file_type();
    if ft.is_symlink() {
        h.update(std::fs::read_link(path)?.as_os_str().as_bytes());
    } else if ft.is_file() {
        let mut f = File::open(path)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    } else if ft.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for n in names {
            let r = format!("{rel}/{}", n.to_string_lossy());
            tree_digest(h, &path.join(&n), &r, false)?;
        }
    }
    h.update([0xff]);
    Ok(())
}

/// Matches `name` against a shell pattern with `*`, `?` and `[...]` (Go's filepath.Match,
/// within one path element).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn m(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| m(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && m(&p[1..], &n[1..]),
            Some('[') => {
                let Some(end) = p.iter().position(|c| *c == ']') else {
                    return !n.is_empty() && n[0] == '[' && m(&p[1..], &n[1..]);
                };
                if n.is_empty() {
                    return false;
                }
                let class = &p[1..end];
                let (neg, class) = match class.first() {
                    Some('^') | Some('!') => (true, &class[1..]),
                    _ => (false, class),
                };
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == '-' {
                        hit |= class[i] <= n[0] && n[0] <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == n[0];
                        i += 1;
                    }
                }
                hit != neg && m(&p[end + 1..], &n[1..])
            }
            Some('\\') if p.len() > 1 => !n.is_empty() && n[0] == p[1] && m(&p[2..], &n[1..]),
            Some(c) => !n.is_empty() && n[0] == *c && m(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    m(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:App:/home/app:/bin/sh\nbad line\n";
    const GROUP: &str =
        "root:x:0:\nwheel:x:10:root,app\napp:x:1001:\naudio:x:29:app\nstaff:x:50:\n";

    fn user(spec: &str, add: &[&str]) -> Result<ExecUser, String> {
        let add: Vec<String> = add.iter().map(|s| s.to_string()).collect();
        exec_user(PASSWD, GROUP, spec, &add, false)
    }

    #[test]
    fn users_resolve_as_libcontainer_does() {
        let u = user("app", &[]).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1001, "/home/app"));
        assert_eq!(u.additional_gids, [10, 29]);
        // An empty user is root, with root's groups.
        let r = user("", &[]).unwrap();
        assert_eq!((r.uid, r.gid, r.additional_gids), (0, 0, vec![10]));
        assert_eq!(r.home, "/root");
        // A uid finds its entry; one without an entry is gid 0, home /, no groups.
        assert_eq!(user("1000", &[]).unwrap(), u);
        let n = user("4242", &[]).unwrap();
        assert_eq!((n.uid, n.gid, n.home.as_str()), (4242, 0, "/"));
        assert!(n.additional_gids.is_empty());
        // An explicit group (name or gid) is the primary one and drops the supplementary.
        let g = user("app:staff", &[]).unwrap();
        assert_eq!((g.uid, g.gid), (1000, 50));
        assert!(g.additional_gids.is_empty());
        assert_eq!(user("app:77", &[]).unwrap().gid, 77);
        assert_eq!(user("4242:audio", &[]).unwrap().gid, 29);
        // "app:" is "app".
        assert_eq!(user("app:", &[]).unwrap(), u);
        // --group-add: names or gids, with or without entries, no repeats.
        let a = user("app", &["staff", "10", "5000"]).unwrap();
        assert_eq!(a.additional_gids, [10, 29, 50, 5000]);
        assert_eq!(user("app:staff", &["audio"]).unwrap().additional_gids, [29]);
        // COPY --chown's default group for a uid without an entry.
        assert_eq!(exec_user("", "", "7", &[], true).unwrap().gid, 7);
    }

    #[test]
    fn unknown_users_and_groups_are_named() {
        assert_eq!(
            user("nobody", &[]).unwrap_err(),
            "unable to find user nobody: no matching entries in passwd file"
        );
        assert_eq!(
            exec_user("", "", "app", &[], false).unwrap_err(),
            "unable to find user app: no matching entries in passwd file"
        );
        assert_eq!(
            user("app:nogroup", &[]).unwrap_err(),
            "unable to find group nogroup: no matching entries in group file"
        );
        assert_eq!(
            user("app", &["video"]).unwrap_err(),
            "Unable to find group video: no matching entries in group file"
        );
    }

    #[test]
    fn user_files_are_read_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        let host = d.path().join("host-passwd");
        std::fs::write(&host, "hostonly:x:4321:4321::/h:/bin/sh\n").unwrap();
        // Relative and absolute links out of the root both stay inside it.
        let rel = format!("../..{}", host.display());
        std::os::unix::fs::symlink(&rel, root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink(&host, root.join("etc/group")).unwrap();
        let e = resolve_exec_user(&root, "hostonly", &[]).unwrap_err();
        assert!(e.contains("unable to find user hostonly"), "{e}");
    }

    #[test]
    fn globs_match_like_go() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "a.txt.bak"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[^a-c]x", "bx"));
    }

    #[test]
    fn writes_stay_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let r = open_root(&root).unwrap();
        // The link's target resolves inside the root, where it is missing: refused.
        assert!(mkdir_all(&r, "/link/sub", (0, 0)).is_err());
        assert!(!outside.join("sub").exists());
        // Once it exists inside the root, writes land there.
        let inside = root.join(outside.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside).unwrap();
        let dir = mkdir_all(&r, "/link/sub", (0, 0)).unwrap();
        write_file(&dir, OsStr::new("f"), b"x", (0, 0), 0o644).unwrap();
        assert!(!outside.join("sub").exists());
        assert!(inside.join("sub/f").exists());
    }
}
