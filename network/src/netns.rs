//! Persistent network namespaces: a new netns bind-mounted onto a file, like `ip netns add`,
//! but under a directory the caller owns (e.g. `<state>/netns/<id>`).
//!
//! The namespace is made by a short-lived thread that `unshare(CLONE_NEWNET)`s itself, so no
//! thread of the caller's ever changes namespace; the bind mount keeps it alive after the
//! thread exits. The same thread brings `lo` up: one ioctl, where the CNI loopback plugin
//! would cost a fork and exec of a Go binary on every ADD and DEL, and a container without
//! any network (`--net none`) still gets a working loopback.
//!
//! As `ip netns` does with /run/netns, the directory is made a shared mount point: an unmount
//! of a netns file then propagates to mount namespaces copied while it existed (a service
//! started with PrivateTmp, say), which would otherwise pin the namespace and its veths.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

/// A failure making, entering or removing a network namespace; names the file.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The name would escape the directory or is otherwise unusable as a file name.
    #[error("invalid network namespace name {0:?}")]
    InvalidName(String),
    /// A namespace file of that name exists already.
    #[error("network namespace {0} already exists")]
    Exists(PathBuf),
    /// A step failed.
    #[error("network namespace {path}: {step}: {source}")]
    Io {
        /// The namespace file (or the directory, for directory setup).
        path: PathBuf,
        /// What was being done.
        step: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The worker thread panicked (a bug, or a panic in the closure given to [`Netns::run`]).
    #[error("network namespace {0}: worker thread panicked")]
    Panicked(PathBuf),
}

fn io<'a>(path: &'a Path, step: &'static str) -> impl FnOnce(Errno) -> NetnsError + 'a {
    move |e| NetnsError::Io {
        path: path.to_path_buf(),
        step,
        source: std::io::Error::from(e),
    }
}

fn io_std<'a>(
    path: &'a Path,
    step: &'static str,
) -> impl FnOnce(std::io::Error) -> NetnsError + 'a {
    move |source| NetnsError::Io {
        path: path.to_path_buf(),
        step,
        source,
    }
}

/// A persistent network namespace: the path of its bind-mounted file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    path: PathBuf,
}

impl Netns {
    /// Creates `<dir>/<name>` holding a new network namespace with `lo` up. `dir` is created
    /// if needed and made a shared mount point (see the module docs). Fails if the file
    /// exists; on any failure nothing is left behind.
    pub fn create(dir: &Path, name: &str) -> Result<Netns, NetnsError> {
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains('/')
            || name.contains('\0')
        {
            return Err(NetnsError::InvalidName(name.to_string()));
        }
        prepare_dir(dir)?;
        let path = dir.join(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(NetnsError::Exists(path))
            }
            Err(e) => return Err(io_std(&path, "creating the mount point file")(e)),
        }
        let target = path.clone();
        let made = std::thread::scope(|s| {
            s.spawn(|| -> Result<(), NetnsError> {
                // Only this thread moves; it exits right after.
                unshare(CloneFlags::CLONE_NEWNET).map_err(io(&target, "unshare"))?;
                loopback_up().map_err(io_std(&target, "bringing lo up"))?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(io(&target, "bind-mounting the namespace"))
            })
            .join()
            .unwrap_or_else(|_| Err(NetnsError::Panicked(target.clone())))
        });
        if let Err(e) = made {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        tracing::debug!(path = %path.display(), "created network namespace");
        Ok(Netns { path })
    }

    /// A handle on an existing namespace file (e.g. after a daemon restart); checks nothing.
    pub fn from_path(path: impl Into<PathBuf>) -> Netns {
        Netns { path: path.into() }
    }

    /// The namespace file's path, what CNI_NETNS and an OCI spec's network namespace want.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a thread that has joined the namespace and returns what it returns. The
    /// caller's threads stay where they are.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        let file = File::open(&self.path).map_err(io_std(&self.path, "opening"))?;
        std::thread::scope(|s| {
            s.spawn(|| -> Result<T, NetnsError> {
                setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io(&self.path, "setns"))?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(NetnsError::Panicked(self.path.clone())))
        })
    }

    /// Unmounts and removes the namespace file. Idempotent: a missing or unmounted file is
    /// fine. The namespace itself goes away when nothing else holds it.
    pub fn remove(&self) -> Result<(), NetnsError> {
        remove_path(&self.path)
    }
}

/// Unmounts (lazily) and unlinks a namespace file; succeeds if it is already gone.
pub fn remove_path(path: &Path) -> Result<(), NetnsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(io(path, "unmounting")(e)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_std(path, "removing")(e)),
    }
}

/// Creates `dir` and makes it a shared mount point, bind-mounting it onto itself first when
/// it is not a mount point yet (what `ip netns add` does for /run/netns). Idempotent.
pub fn prepare_dir(dir: &Path) -> Result<(), NetnsError> {
    std::fs::create_dir_all(dir).map_err(io_std(dir, "creating the directory"))?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match mount(None::<&str>, dir, None::<&str>, shared, None::<&str>) {
        Ok(()) => return Ok(()),
        Err(Errno::EINVAL) => {}
        Err(e) => return Err(io(dir, "making the directory a shared mount")(e)),
    }
    mount(
        Some(dir),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(io(dir, "bind-mounting the directory onto itself"))?;
    mount(None::<&str>, dir, None::<&str>, shared, None::<&str>)
        .map_err(io(dir, "making the directory a shared mount"))
}

/// Undoes [`prepare_dir`]'s bind mount (lazily). For tests and for tearing a state directory
/// down; namespace files still mounted below it are detached with it.
pub fn release_dir(dir: &Path) -> Result<(), NetnsError> {
    match umount2(dir, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(io(dir, "unmounting the directory")(e)),
    }
}

const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;

/// Sets IFF_UP on `lo` of the calling thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: plain socket(2); the fd is owned by the OwnedFd below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    use std::os::fd::AsRawFd;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes ifru_flags of the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel filled ifru_flags above.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above, with the flags to set.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCSIFFLAGS as _, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_escape_are_refused() {
        for bad in ["", ".", "..", "a/b"] {
            assert!(matches!(
                Netns::create(Path::new("/nonexistent"), bad),
                Err(NetnsError::InvalidName(_))
            ));
        }
    }
}
