//! Terminals: with `process.terminal`, the container's init makes a pty in the container's own
//! devpts, sends the master to `--console-socket` in one SCM_RIGHTS message whose body is the
//! pty's name, and takes the slave as its controlling terminal and stdio.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

/// Connect to the console socket (before pivot_root: its path is on the host).
pub fn connect(path: &Path) -> Result<OwnedFd, String> {
    let stream = UnixStream::connect(path)
        .map_err(|e| format!("connecting to console socket {}: {e}", path.display()))?;
    Ok(OwnedFd::from(stream))
}

/// Make the pty, send its master, and make its slave our terminal and stdio. Runs inside the
/// container's mount namespace (after pivot_root, or after joining it for exec), so /dev/ptmx
/// is the container's. The init also binds the pty onto /dev/console (`bind_console`).
pub fn setup(socket: &OwnedFd, size: Option<(u16, u16)>, bind_console: bool) -> Result<(), String> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| format!("opening /dev/ptmx: {e}"))?;
    grantpt(&master).map_err(|e| format!("grantpt: {e}"))?;
    unlockpt(&master).map_err(|e| format!("unlockpt: {e}"))?;
    let name = ptsname_r(&master).map_err(|e| format!("ptsname: {e}"))?;
    let slave_fd = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("opening {name}: {e}"))?;
    if let Some((rows, cols)) = size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        unsafe { libc::ioctl(slave_fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    if bind_console {
        // /dev/console is the container's terminal too.
        let console = Path::new("/dev/console");
        if console.symlink_metadata().is_err() {
            let _ = std::fs::File::create(console);
        }
        let _ = nix::mount::mount(
            Some(name.as_str()),
            console,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        );
    }

    let master_raw: RawFd = master.as_raw_fd();
    let fds = [master_raw];
    let iov = [IoSlice::new(name.as_bytes())];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("sending pty master to console socket: {e}"))?;
    drop(master);

    if unsafe { libc::ioctl(slave_fd.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(format!(
            "setting {name} as controlling terminal: {}",
            std::io::Error::last_os_error()
        ));
    }
    for target in 0..3 {
        if unsafe { libc::dup2(slave_fd.as_raw_fd(), target) } < 0 {
            return Err(format!(
                "dup2 of the pty onto fd {target}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Receive one pty master from a connected console-socket peer (used by `run` when it has a
/// terminal and no console socket was given, and by tests).
pub fn recv_master(stream: &UnixStream) -> Result<(OwnedFd, String), String> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned};
    let mut buf = [0u8; 4096];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .map_err(|e| format!("receiving pty master: {e}"))?;
    let mut fd = None;
    for c in msg.cmsgs().map_err(|e| e.to_string())? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            fd = fds.first().copied();
        }
    }
    let n = msg.bytes;
    let fd = fd.ok_or("no fd in console message")?;
    let name = String::from_utf8_lossy(&buf[..n]).into_owned();
    Ok((unsafe { OwnedFd::from_raw_fd(fd) }, name))
}
