//! Fixtures for the runtime's end-to-end tests: busybox bundles, a driver for the runc command
//! line, cleanup guards and readers for what the kernel reports about a container.
//!
//! The tests are black-box: they only use the runc command line, so every one of them also runs
//! against runc itself (`BERTH_RUNC=/usr/bin/runc`), which is the suite's control.

pub mod bundle;
pub mod checks;
pub mod console;
pub mod driver;
pub mod guard;
pub mod kernel;

pub use bundle::{Bundle, DEFAULT_CAPS};
pub use checks::assert_error;
pub use driver::{Io, Output, Runtime};
pub use guard::{assert_no_leftovers, Guard};

use std::sync::atomic::{AtomicUsize, Ordering};

/// A name unique to this test process and call, e.g. `it-4242-7-lifecycle`: container ids and
/// cgroup paths built from it never collide between parallel tests or test binaries.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_for(timeout: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// What the runtime sends a seccomp agent on an accepted connection: the listener fd (one
/// SCM_RIGHTS message; any extra fds are closed) and the message body (the process state).
pub fn receive_seccomp_listener(
    stream: &std::os::unix::net::UnixStream,
) -> anyhow::Result<(std::os::fd::OwnedFd, String)> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = nix::sys::socket::recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        nix::sys::socket::MsgFlags::empty(),
    )?;
    let mut fd = None;
    for c in msg.cmsgs()? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                fd.get_or_insert(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
    }
    let n = msg.bytes;
    let fd = fd.ok_or_else(|| anyhow::anyhow!("no listener fd arrived"))?;
    Ok((fd, String::from_utf8_lossy(&buf[..n]).into_owned()))
}
