//! The receiving end of `--console-socket`: a unix socket the runtime connects to and sends
//! the pty master over (one SCM_RIGHTS message whose body is the pty's name).

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use tempfile::TempDir;

/// A listening console socket in its own temp dir.
pub struct ConsoleSocket {
    _dir: TempDir,
    path: PathBuf,
    listener: UnixListener,
}

/// What the runtime sent over the console socket.
pub struct Received {
    /// The pty master.
    pub master: OwnedFd,
    /// The message body (the pty's name).
    pub name: String,
    /// How many fds the message carried in all (the contract says one).
    pub fd_count: usize,
    stream: UnixStream,
}

impl ConsoleSocket {
    /// Binds a new socket.
    pub fn new() -> Result<ConsoleSocket> {
        let dir = tempfile::Builder::new()
            .prefix("berth-it-console-")
            .tempdir()
            .context("creating the console socket's dir")?;
        let path = dir.path().join("console.sock");
        let listener =
            UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        listener
            .set_nonblocking(true)
            .context("making the listener non-blocking")?;
        Ok(ConsoleSocket {
            _dir: dir,
            path,
            listener,
        })
    }

    /// The socket's path (what `--console-socket` gets).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts the runtime's connection and reads its first message.
    pub fn receive(&self, timeout: Duration) -> Result<Received> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match self.listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        bail!("nobody connected to the console socket within {timeout:?}");
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e).context("accepting on the console socket"),
            }
        };
        stream
            .set_nonblocking(false)
            .context("making the stream blocking")?;
        stream
            .set_read_timeout(Some(timeout))
            .context("setting a read timeout")?;
        let (name, fds) = receive_one(&stream)?;
        let mut fds = fds.into_iter();
        let Some(master) = fds.next() else {
            bail!("the console socket message carried no fd (body {name:?})");
        };
        let fd_count = 1 + fds.len();
        Ok(Received {
            master,
            name,
            fd_count,
            stream,
        })
    }
}

impl Received {
    /// Reads the connection until the runtime's side closes and counts the messages that
    /// followed the first (the contract says none). The runtime may keep its end open until
    /// the container starts (containerd's shim never waits for the close), so call this after
    /// `start`; an end still open after `timeout` is an error: some process kept it.
    pub fn extra_messages(&self, timeout: Duration) -> Result<usize> {
        self.stream
            .set_read_timeout(Some(timeout))
            .context("setting a read timeout")?;
        let mut extra = 0;
        loop {
            let (body, more) = receive_one(&self.stream)
                .with_context(|| format!("the console socket was not closed within {timeout:?}"))?;
            if body.is_empty() && more.is_empty() {
                return Ok(extra);
            }
            extra += 1;
        }
    }
}

/// One recvmsg: the body as text and the fds it carried (empty body and no fds at EOF).
fn receive_one(stream: &UnixStream) -> Result<(String, Vec<OwnedFd>)> {
    let mut buf = [0u8; 4096];
    let mut space = nix::cmsg_space!([RawFd; 8]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context("recvmsg on the console socket")?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().context("reading control messages")? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: the kernel just installed these fds in this process; nobody else owns them.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let len = msg.bytes;
    let body = String::from_utf8_lossy(&buf[..len])
        .trim_end_matches('\0')
        .to_string();
    Ok((body, fds))
}

/// Reads from `fd` (a pty master) until the text contains `needle`, the other side closes
/// (EIO on a pty), or the timeout passes; returns what was read.
pub fn read_until(fd: &OwnedFd, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&text).contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready <= 0 {
            if ready < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
                continue;
            }
            break;
        }
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        text.extend_from_slice(&buf[..n as usize]);
    }
    String::from_utf8_lossy(&text).into_owned()
}
