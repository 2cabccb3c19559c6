//! Small fd-relative filesystem helpers the crates we use do not offer: xattrs (nix has no
//! xattr API; these are thin libc wrappers) and a recursive remove that never follows symlinks
//! and works from a directory fd.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{self, UnlinkatFlags};

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

/// `/proc/self/fd/<dir>/<name>`: a path naming `name` in `dir` for the `l*xattr` calls, which
/// have no `*at` form before Linux 6.13. The final component is not followed by `l*` calls.
fn proc_path(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<CString> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    cstr(&p)
}

/// Set an xattr on an open file or directory.
pub(crate) fn fsetxattr(fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> io::Result<()> {
    let n = cstr(name.as_bytes())?;
    // SAFETY: valid fd, NUL-terminated name, value pointer and length from a slice.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(r).map(drop).map_err(Into::into)
}

/// Set an xattr on `name` in `dir` without following it if it is a symlink.
pub(crate) fn lsetxattr_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    key: &str,
    value: &[u8],
) -> io::Result<()> {
    let p = proc_path(dir, name)?;
    let k = cstr(key.as_bytes())?;
    // SAFETY: NUL-terminated path and name, value pointer and length from a slice.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(r).map(drop).map_err(Into::into)
}

/// All xattrs of `name` in `dir` (not following a symlink), sorted by name.
pub(crate) fn list_xattrs_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
) -> io::Result<Vec<(String, Vec<u8>)>> {
    let p = proc_path(dir, name)?;
    let mut names = vec![0u8; 1024];
    let len = loop {
        // SAFETY: buffer pointer and length from a live Vec.
        let r = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        match Errno::result(r) {
            Ok(n) => break n as usize,
            Err(Errno::ERANGE) => names.resize(names.len() * 4, 0),
            Err(Errno::ENOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for key in names[..len].split(|&b| b == 0).filter(|k| !k.is_empty()) {
        let key_c = cstr(key)?;
        let mut val = vec![0u8; 256];
        let vlen = loop {
            // SAFETY: as above.
            let r = unsafe {
                libc::lgetxattr(
                    p.as_ptr(),
                    key_c.as_ptr(),
                    val.as_mut_ptr().cast(),
                    val.len(),
                )
            };
            match Errno::result(r) {
                Ok(n) => break Some(n as usize),
                Err(Errno::ERANGE) => val.resize(val.len() * 4, 0),
                // Removed between list and get.
                Err(Errno::ENODATA) => break None,
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(vlen) = vlen {
            val.truncate(vlen);
            out.push((String::from_utf8_lossy(key).into_owned(), val));
        }
    }
    out.sort();
    Ok(out)
}

/// Remove `name` in `dir` whatever it is (a directory recursively), never following symlinks.
/// A missing `name` is not an error.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    empty_dir_at(dir, name, &mut |_| false)?;
    match unistd::unlinkat(dir, name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Remove the children of directory `name` in `dir` for which `keep(child name)` is false.
pub(crate) fn empty_dir_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    keep: &mut dyn FnMut(&[u8]) -> bool,
) -> io::Result<()> {
    let d = Dir::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    empty_dir(d, keep)
}

fn empty_dir(mut d: Dir, keep: &mut dyn FnMut(&[u8]) -> bool) -> io::Result<()> {
    // Collect first: unlinking while iterating getdents is allowed but may skip entries.
    let mut children: Vec<(Vec<u8>, Option<Type>)> = Vec::new();
    for ent in d.iter() {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        children.push((n.to_vec(), ent.file_type()));
    }
    let fd = d.as_fd();
    for (child, ty) in children {
        if keep(&child) {
            continue;
        }
        if ty != Some(Type::Directory) {
            match unistd::unlinkat(fd, child.as_slice(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => continue,
                Err(Errno::EISDIR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        remove_all_at(fd, &child)?;
    }
    Ok(())
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<libc::stat> {
    nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(Into::into)
}
