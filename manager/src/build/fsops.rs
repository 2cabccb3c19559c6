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
/// COPY --chown, 0 for RUN as Docker). Returns (uid, gid, additional gids).
pub fn resolve_user(
    root: &Path,
    spec: &str,
    default_gid_is_uid: bool,
) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_in_root(root, "/etc/passwd").unwrap_or_default();
    let groups = read_in_root(root, "/etc/group").unwrap_or_default();
    let entry = |line: &str| -> Option<(String, u32, u32)> {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        Some((f[0].to_string(), f[2].parse().ok()?, f[3].parse().ok()?))
    };
    let (uid, pw_gid) = if let Ok(uid) = user.parse::<u32>() {
        let gid = passwd
            .lines()
            .filter_map(entry)
            .find(|(_, u, _)| *u == uid)
            .map(|(_, _, g)| g);
        (uid, gid)
    } else {
        let (_, u, g) = passwd
            .lines()
            .filter_map(entry)
            .find(|(n, _, _)| n == user)
            .ok_or_else(|| {
                format!("unable to find user {user}: no matching entries in passwd file")
            })?;
        (u, Some(g))
    };
    let gid = match group {
        None => pw_gid.unwrap_or(if default_gid_is_uid { uid } else { 0 }),
        Some(g) => match g.parse::<u32>() {
            Ok(g) => g,
            Err(_) => groups
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() >= 3 && f[0] == g).then(|| f[2].parse::<u32>().ok())?
                })
                .next()
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?,
        },
    };
    Ok((uid, gid))
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
