//! Volumes at task create: Docker's copy-up. A spec mount the client marked (annotation
//! [`ANNOTATION_COPY_UP`], a comma list of destinations) whose source is a volume's data dir
//! (`…/volumes/<ns>/<name>/_data`) and is empty gets a copy of the image's content at that
//! destination, with owners, modes, times and symlinks preserved.
//!
//! Safety: the image's directory is opened inside the rootfs with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` (a symlinked path stays in the rootfs),
//! the volume's with `RESOLVE_NO_SYMLINKS`, and the copy walks both trees with `*at` calls on
//! directory fds and `O_NOFOLLOW`, so no symlink is followed out of the rootfs or the volume.
//! Copies into one volume are serialised by a `flock` on its data dir, and a failed copy
//! empties the volume again.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde_json::Value;

use super::{Result, TaskError};

/// Spec annotation listing the mount destinations whose volume is filled from the image when
/// empty (set by the client that builds the spec).
pub const ANNOTATION_COPY_UP: &str = "berth.io/copy-up";
/// Container label listing the volumes a container uses; the store refuses to remove them
/// (the same string as `berth_store::volumes::LABEL_VOLUMES`).
pub const LABEL_VOLUMES: &str = "berth.io/volumes";
/// Volume label of an anonymous volume (`berth_store::volumes::LABEL_ANONYMOUS`).
pub const LABEL_ANONYMOUS: &str = "berth.io/anonymous";

/// Refuses a spec whose volume mount source (a `…/volumes/<ns>/<name>/_data`) has a symlink
/// anywhere on its path: the runtime would follow it and bind whatever it leads to, which a
/// volume never is. Whether or not the volume is copied up.
pub fn check_sources(spec: &Value) -> Result<()> {
    for m in spec["mounts"].as_array().into_iter().flatten() {
        let source = Path::new(m["source"].as_str().unwrap_or(""));
        if !is_volume_data(source) {
            continue;
        }
        let dest = m["destination"].as_str().unwrap_or("");
        match openat2(
            libc::AT_FDCWD,
            source,
            libc::O_DIRECTORY | libc::O_PATH,
            libc::RESOLVE_NO_SYMLINKS,
        ) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                return Err(TaskError::InvalidArgument(format!(
                    "volume mount {dest:?}: {} is not a directory (a symlink is never followed)",
                    source.display()
                )))
            }
            Err(e) => {
                return Err(TaskError::Internal(format!(
                    "volume mount {dest:?}: opening {}: {e}",
                    source.display()
                )))
            }
        }
    }
    Ok(())
}

/// Copies the image's content into every marked, empty volume of `spec`. `rootfs` is the
/// mounted root filesystem. On failure the volumes filled so far are emptied again.
pub fn copy_up(spec: &Value, rootfs: &Path) -> Result<()> {
    let Some(list) = spec["annotations"][ANNOTATION_COPY_UP].as_str() else {
        return Ok(());
    };
    let mut filled: Vec<OwnedFd> = Vec::new();
    for dest in list.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match copy_one(spec, rootfs, dest) {
            Ok(Some(fd)) => filled.push(fd),
            Ok(None) => {}
            Err(e) => {
                for fd in &filled {
                    empty_dir(fd);
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Fills the volume mounted at `dest` if it is empty; its data dir's fd if it copied.
fn copy_one(spec: &Value, rootfs: &Path, dest: &str) -> Result<Option<OwnedFd>> {
    let bad = |m: String| TaskError::InvalidArgument(format!("copy-up to {dest:?}: {m}"));
    let mount = spec["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .rfind(|m| m["destination"].as_str() == Some(dest))
        .ok_or_else(|| bad("no mount has that destination".into()))?;
    let source = Path::new(mount["source"].as_str().unwrap_or(""));
    if !is_volume_data(source) {
        return Err(bad(format!(
            "source {} is not a volume's data dir",
            source.display()
        )));
    }
    let internal = |what: &str, p: &Path, e: io::Error| {
        TaskError::Internal(format!("copy-up to {dest:?}: {what} {}: {e}", p.display()))
    };
    let data = openat2(
        libc::AT_FDCWD,
        source,
        libc::O_DIRECTORY | libc::O_RDONLY,
        libc::RESOLVE_NO_SYMLINKS,
    )
    .map_err(|e| internal("opening", source, e))?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(data.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(internal("locking", source, io::Error::last_os_error()));
    }
    if entries(&data)
        .map_err(|e| internal("reading", source, e))?
        .next()
        .is_some()
    {
        return Ok(None);
    }
    let root = openat2(
        libc::AT_FDCWD,
        rootfs,
        libc::O_DIRECTORY | libc::O_RDONLY,
        0,
    )
    .map_err(|e| internal("opening", rootfs, e))?;
    let rel = dest.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let src = match openat2(
        root.as_raw_fd(),
        Path::new(rel),
        libc::O_DIRECTORY | libc::O_RDONLY,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        // Nothing (or no directory) there in the image: nothing to copy.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            return Ok(None)
        }
        Err(e) => return Err(internal("opening the image's", Path::new(dest), e)),
    };
    let copied = copy_tree(&src, &data).and_then(|()| {
        let st = fstat(&src)?;
        attrs(&data, &st)
    });
    if let Err(e) = copied {
        empty_dir(&data);
        return Err(internal("copying into", source, e));
    }
    tracing::debug!(dest, volume = %source.display(), "volume filled from the image");
    Ok(Some(data))
}

/// `…/volumes/<ns>/<name>/_data`, with plain components.
fn is_volume_data(p: &Path) -> bool {
    let comps: Vec<_> = p.components().collect();
    p.is_absolute()
        && comps.len() >= 5
        && comps.iter().all(|c| {
            matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )
        })
        && comps[comps.len() - 1].as_os_str() == "_data"
        && comps[comps.len() - 4].as_os_str() == "volumes"
}

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
fn openat2(dirfd: RawFd, path: &Path, flags: libc::c_int, resolve: u64) -> io::Result<OwnedFd> {
    let p = cstr(path.as_os_str().as_bytes())?;
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64;
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

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)`: `name` is one component.
fn openat(dir: &OwnedFd, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: valid C string; the fd is ours.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode,
        )
    })?;
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid out pointer.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

fn lstatat(dir: &OwnedFd, name: &CStr) -> io::Result<libc::stat> {
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

/// The names in a directory (through its fd: the directory is not looked up again).
fn entries(dir: &OwnedFd) -> io::Result<impl Iterator<Item = io::Result<std::ffi::OsString>>> {
    Ok(
        std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?
            .map(|e| e.map(|e| e.file_name())),
    )
}

fn times(st: &libc::stat) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec,
        },
        libc::timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec,
        },
    ]
}

/// Owner, then mode (a chown clears set-id bits), then times, of an open file or directory.
fn attrs(fd: &OwnedFd, st: &libc::stat) -> io::Result<()> {
    // SAFETY: plain syscalls on an fd we own.
    unsafe {
        check(libc::fchown(fd.as_raw_fd(), st.st_uid, st.st_gid))?;
        check(libc::fchmod(fd.as_raw_fd(), st.st_mode & 0o7777))?;
        check(libc::futimens(fd.as_raw_fd(), times(st).as_ptr()))?;
    }
    Ok(())
}

/// Copies the contents of directory `src` into directory `dst`, never following symlinks.
fn copy_tree(src: &OwnedFd, dst: &OwnedFd) -> io::Result<()> {
    for name in entries(src)? {
        let name = name?;
        let c = cstr(name.as_bytes())?;
        let st = lstatat(src, &c)?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                // SAFETY: valid C string.
                check(unsafe { libc::mkdirat(dst.as_raw_fd(), c.as_ptr(), 0o700) })?;
                let s = openat(src, &c, libc::O_DIRECTORY | libc::O_RDONLY, 0)?;
                let d = openat(dst, &c, libc::O_DIRECTORY | libc::O_RDONLY, 0)?;
                copy_tree(&s, &d)?;
                attrs(&d, &st)?;
            }
            libc::S_IFREG => {
                let s = openat(src, &c, libc::O_RDONLY, 0)?;
                let d = openat(
                    dst,
                    &c,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                    0o600,
                )?;
                let (mut sf, mut df) = (File::from(s), File::from(d));
                io::copy(&mut sf, &mut df)?;
                attrs(&OwnedFd::from(df), &st)?;
            }
            libc::S_IFLNK => {
                let target = readlinkat(src, &c)?;
                let t = cstr(target.as_os_str().as_bytes())?;
                // SAFETY: valid C strings; nothing is followed.
                unsafe {
                    check(libc::symlinkat(t.as_ptr(), dst.as_raw_fd(), c.as_ptr()))?;
                    check(libc::fchownat(
                        dst.as_raw_fd(),
                        c.as_ptr(),
                        st.st_uid,
                        st.st_gid,
                        libc::AT_SYMLINK_NOFOLLOW,
                    ))?;
                    check(libc::utimensat(
                        dst.as_raw_fd(),
                        c.as_ptr(),
                        times(&st).as_ptr(),
                        libc::AT_SYMLINK_NOFOLLOW,
                    ))?;
                }
            }
            _ => {
                // Devices, fifos, sockets: made with their mode (umask aside) and owner.
                // SAFETY: valid C string; nothing is followed.
                unsafe {
                    check(libc::mknodat(
                        dst.as_raw_fd(),
                        c.as_ptr(),
                        st.st_mode,
                        st.st_rdev,
                    ))?;
                    check(libc::fchownat(
                        dst.as_raw_fd(),
                        c.as_ptr(),
                        st.st_uid,
                        st.st_gid,
                        libc::AT_SYMLINK_NOFOLLOW,
                    ))?;
                }
            }
        }
    }
    Ok(())
}

/// `readlinkat(dir, name)`.
fn readlinkat(dir: &OwnedFd, name: &CStr) -> io::Result<std::path::PathBuf> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: buf is writable for its length.
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
    Ok(OsStr::from_bytes(&buf).into())
}

/// Removes everything in directory `dir` (best effort: after a failed copy).
fn empty_dir(dir: &OwnedFd) {
    let Ok(names) = entries(dir) else { return };
    for name in names.flatten() {
        let p = Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(&name);
        let r = match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
            Ok(_) => std::fs::remove_file(&p),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            tracing::warn!(path = %p.display(), error = %e, "emptying a volume after a failed copy-up");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_match_the_stores() {
        assert_eq!(LABEL_VOLUMES, berth_store::volumes::LABEL_VOLUMES);
        assert_eq!(LABEL_ANONYMOUS, berth_store::volumes::LABEL_ANONYMOUS);
    }

    #[test]
    fn a_volume_source_under_a_symlink_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("volumes/ns/v1/_data");
        std::fs::create_dir_all(&real).unwrap();
        std::os::unix::fs::symlink(
            t.path().join("volumes/ns/v1"),
            t.path().join("volumes/ns/v2"),
        )
        .unwrap();
        let spec = |src: &Path| json!({"mounts": [{"destination": "/d", "source": src}]});
        check_sources(&spec(&real)).unwrap();
        let e = check_sources(&spec(&t.path().join("volumes/ns/v2/_data"))).unwrap_err();
        assert!(e.to_string().contains("a symlink is never followed"), "{e}");
    }

    #[test]
    fn only_volume_data_dirs_are_filled() {
        assert!(is_volume_data(Path::new(
            "/var/lib/berth/volumes/ns/v1/_data"
        )));
        assert!(!is_volume_data(Path::new("/etc")));
        assert!(!is_volume_data(Path::new("/x/volumes/ns/v1/data")));
        assert!(!is_volume_data(Path::new("/x/volumes/ns/../_data")));
        assert!(!is_volume_data(Path::new("volumes/ns/v1/_data")));
    }

    #[test]
    fn copies_into_an_empty_volume_only_and_stays_in_the_rootfs() {
        let t = tempfile::tempdir().unwrap();
        let rootfs = t.path().join("rootfs");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(rootfs.join("data/sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "s").unwrap();
        std::fs::write(rootfs.join("data/sub/f"), "hello").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", rootfs.join("data/link")).unwrap();
        // A symlinked destination resolves inside the rootfs, not to the host's dir.
        std::os::unix::fs::symlink(&outside, rootfs.join("evil")).unwrap();
        let data = t.path().join("volumes/ns/v1/_data");
        let data2 = t.path().join("volumes/ns/v2/_data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&data2).unwrap();
        let spec = json!({
            "annotations": {ANNOTATION_COPY_UP: "/data,/evil"},
            "mounts": [
                {"destination": "/data", "type": "bind", "source": data},
                {"destination": "/evil", "type": "bind", "source": data2},
            ]
        });
        copy_up(&spec, &rootfs).unwrap();
        assert_eq!(
            std::fs::read_to_string(data.join("sub/f")).unwrap(),
            "hello"
        );
        assert_eq!(
            std::fs::read_link(data.join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert!(
            std::fs::read_dir(&data2).unwrap().next().is_none(),
            "nothing copied from outside the rootfs"
        );
        // Not empty any more: left alone.
        std::fs::write(rootfs.join("data/sub/f"), "changed").unwrap();
        copy_up(&spec, &rootfs).unwrap();
        assert_eq!(
            std::fs::read_to_string(data.join("sub/f")).unwrap(),
            "hello"
        );
        // A source that is no volume is refused.
        let spec = json!({
            "annotations": {ANNOTATION_COPY_UP: "/data"},
            "mounts": [{"destination": "/data", "type": "bind", "source": outside}]
        });
        let e = copy_up(&spec, &rootfs).unwrap_err().to_string();
        assert!(e.contains("not a volume's data dir"), "{e}");
    }
}
