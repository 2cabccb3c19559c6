//! Resolving directories inside a root, treating the root as `/`.
//!
//! The kernel does this for us with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`. On
//! kernels without openat2 (ENOSYS, before 5.6) a hand-written walker does the same: one
//! component at a time with `O_NOFOLLOW`, symlinks expanded by hand (absolute targets restart at
//! the root, `..` at the root stays at the root), at most 40 symlinks. Neither `std` nor the tar
//! crate offers root-confined resolution of an untrusted path, hence this module.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{self, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{self, Mode, SFlag};

/// Linux's limit on symlinks followed in one resolution.
const MAX_SYMLINKS: usize = 40;

/// A directory that layer paths are resolved in.
#[derive(Debug)]
pub(crate) struct Root {
    fd: OwnedFd,
    /// Set once openat2 is known to be missing (or when a test forces the fallback walker).
    fallback: AtomicBool,
}

impl Root {
    /// Open `path` (trusted, given by the caller) as the root.
    pub(crate) fn open(path: &Path, force_fallback: bool) -> io::Result<Root> {
        let fd = fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            fd,
            fallback: AtomicBool::new(force_fallback),
        })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Open the directory at cleaned path `rel` (no `..`, no leading `/`), following symlinks
    /// met on the way as if the root were `/`. Returns an `O_PATH` fd.
    pub(crate) fn open_dir(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        if rel.is_empty() {
            return self.fd.try_clone();
        }
        if !self.fallback.load(Ordering::Relaxed) {
            let how = OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
            let mut tries = 0;
            loop {
                match fcntl::openat2(self.fd.as_fd(), rel, how) {
                    Ok(fd) => return Ok(fd),
                    // A concurrent rename somewhere on the system: the kernel asks us to retry.
                    Err(Errno::EAGAIN) if tries < 16 => tries += 1,
                    Err(Errno::ENOSYS) | Err(Errno::EPERM) if tries == 0 => {
                        // ENOSYS: no openat2. EPERM: a seccomp filter refusing it.
                        tracing::debug!("openat2 unavailable, using the component walker");
                        self.fallback.store(true, Ordering::Relaxed);
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.walk(rel, false)
    }

    /// Like [`Root::open_dir`], creating missing directories (mode 0755, owned by the caller)
    /// where the path resolves inside the root: `a/b` under a symlink `a -> /x` creates
    /// ROOT/x/b, also when ROOT/x does not exist yet (a dangling symlink is followed, as docker
    /// and containerd do). The common case (everything exists) costs one openat2.
    pub(crate) fn open_dir_create(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        match self.open_dir(rel) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.walk(rel, true),
            other => other,
        }
    }

    /// The fallback resolver: component by component, never following a symlink implicitly.
    /// With `create`, a missing component is made a directory where it would be.
    fn walk(&self, rel: &[u8], create: bool) -> io::Result<OwnedFd> {
        // Directories entered so far, below the root; popping on ".." can never leave the root.
        let mut stack: Vec<OwnedFd> = Vec::new();
        // Components still to resolve, in reverse order.
        let mut todo: Vec<Vec<u8>> = rel
            .split(|&b| b == b'/')
            .rev()
            .map(<[u8]>::to_vec)
            .collect();
        let mut links = 0;
        while let Some(comp) = todo.pop() {
            match comp.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    stack.pop();
                    continue;
                }
                _ => {}
            }
            let cur = stack.last().map_or(self.fd.as_fd(), |f| f.as_fd());
            let open = || {
                fcntl::openat(
                    cur,
                    comp.as_slice(),
                    OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
            };
            let fd = match open() {
                Err(Errno::ENOENT) if create => {
                    match stat::mkdirat(cur, comp.as_slice(), Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    open()?
                }
                other => other?,
            };
            let st = stat::fstat(&fd)?;
            match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
                SFlag::S_IFDIR => stack.push(fd),
                SFlag::S_IFLNK => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(Errno::ELOOP.into());
                    }
                    let target = fcntl::readlinkat(cur, comp.as_slice())?;
                    let target = target.as_bytes();
                    if target.first() == Some(&b'/') {
                        stack.clear();
                    }
                    todo.extend(target.split(|&b| b == b'/').rev().map(<[u8]>::to_vec));
                }
                _ => return Err(Errno::ENOTDIR.into()),
            }
        }
        match stack.pop() {
            Some(fd) => Ok(fd),
            None => self.fd.try_clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// The directory an fd refers to, read back from /proc.
    fn where_is(fd: &OwnedFd) -> std::path::PathBuf {
        use std::os::fd::AsRawFd;
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
    }

    fn check_both(f: impl Fn(&Root, &Path)) {
        for fallback in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().canonicalize().unwrap();
            let r = Root::open(&root, fallback).unwrap();
            f(&r, &root);
        }
    }

    #[test]
    fn symlinks_resolve_inside_root() {
        check_both(|r, root| {
            std::fs::create_dir_all(root.join("usr/lib/x86_64")).unwrap();
            std::fs::create_dir_all(root.join("etc")).unwrap();
            symlink("usr/lib", root.join("lib")).unwrap();
            symlink("/etc", root.join("abs")).unwrap();
            symlink("../../../../..", root.join("usr/up")).unwrap();
            symlink("/usr/lib/../../etc", root.join("dotty")).unwrap();
            assert_eq!(
                where_is(&r.open_dir(b"lib/x86_64").unwrap()),
                root.join("usr/lib/x86_64")
            );
            assert_eq!(where_is(&r.open_dir(b"abs").unwrap()), root.join("etc"));
            assert_eq!(where_is(&r.open_dir(b"usr/up").unwrap()), root);
            assert_eq!(
                where_is(&r.open_dir(b"usr/up/etc").unwrap()),
                root.join("etc")
            );
            assert_eq!(where_is(&r.open_dir(b"dotty").unwrap()), root.join("etc"));
        });
    }

    #[test]
    fn loops_and_non_dirs_fail() {
        check_both(|r, root| {
            symlink("loop", root.join("loop")).unwrap();
            std::fs::write(root.join("file"), b"x").unwrap();
            let e = r.open_dir(b"loop").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
            let e = r.open_dir(b"file").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR));
            let e = r.open_dir(b"missing/x").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        });
    }

    #[test]
    fn create_missing_follows_symlinked_parents_inside_root() {
        check_both(|r, root| {
            symlink("/inside", root.join("abs")).unwrap();
            std::fs::create_dir(root.join("inside")).unwrap();
            let fd = r.open_dir_create(b"abs/new/deeper").unwrap();
            assert_eq!(where_is(&fd), root.join("inside/new/deeper"));
            symlink("/nowhere/../deep", root.join("dangling")).unwrap();
            let fd = r.open_dir_create(b"dangling/x").unwrap();
            assert_eq!(where_is(&fd), root.join("deep/x"));
            std::fs::create_dir_all(root.join("p/q")).unwrap();
            symlink("p/q", root.join("pq")).unwrap();
            // Relative to the symlink's physical parent (p), not lexically to "pq/..".
            symlink("../r", root.join("p/q/dang")).unwrap();
            let fd = r.open_dir_create(b"pq/dang/s").unwrap();
            assert_eq!(where_is(&fd), root.join("p/r/s"));
        });
    }
}
