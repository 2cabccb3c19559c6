//! The parent/child channel during create: a SOCK_SEQPACKET socketpair carrying one-byte tags
//! with an optional text. The parent says "go" once it has written the id maps and placed the
//! child in its cgroup; the child answers "ready" (blocked on the start fifo next) or an error.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

/// One message on the sync channel.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    /// Parent → child: maps written, cgroup joined; go on.
    Go,
    /// Child → parent: set up, now waiting on the start fifo.
    Ready,
    /// Child → parent: setting up failed.
    Error(String),
    /// Child → parent: namespaces and mounts are ready; run the createRuntime hooks.
    Hooks,
    /// Parent → child: the hooks ran; here is the container's state for its own hooks.
    State(String),
}

/// Create the socketpair (both ends close-on-exec).
pub fn pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(std::io::Error::from)
}

/// Send a message. Short writes cannot happen on a seqpacket socket.
pub fn send(fd: &OwnedFd, msg: &Message) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(64);
    match msg {
        Message::Go => buf.push(b'G'),
        Message::Ready => buf.push(b'R'),
        Message::Error(text) => {
            buf.push(b'E');
            buf.extend_from_slice(text.as_bytes());
        }
        Message::Hooks => buf.push(b'H'),
        Message::State(text) => {
            buf.push(b'S');
            buf.extend_from_slice(text.as_bytes());
        }
    }
    let n = unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Receive a message; `None` when the other end closed without a word.
pub fn recv(fd: &OwnedFd) -> std::io::Result<Option<Message>> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Ok(None);
        }
        let n = n as usize;
        return Ok(Some(match buf[0] {
            b'G' => Message::Go,
            b'R' => Message::Ready,
            b'E' => Message::Error(String::from_utf8_lossy(&buf[1..n]).into_owned()),
            b'H' => Message::Hooks,
            b'S' => Message::State(String::from_utf8_lossy(&buf[1..n]).into_owned()),
            other => Message::Error(format!("unexpected sync message {other:#x}")),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let (a, b) = pair().unwrap();
        send(&a, &Message::Go).unwrap();
        send(&a, &Message::Error("boom".into())).unwrap();
        assert_eq!(recv(&b).unwrap(), Some(Message::Go));
        assert_eq!(recv(&b).unwrap(), Some(Message::Error("boom".into())));
        drop(a);
        assert_eq!(recv(&b).unwrap(), None);
    }
}
