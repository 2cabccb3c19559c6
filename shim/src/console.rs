//! Terminals: the console socket through which the runtime hands over a pty master, and the
//! relay between that master and the client's FIFOs (or berth's log).
//!
//! Everything here is nonblocking and driven by the supervisor's poll loop: a client that stops
//! reading its stdout FIFO stalls only its own terminal, never the supervisor.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use crate::logs::Logs;

/// A unix socket the runtime connects to (`--console-socket`) to send the pty master. It lives
/// in a private directory of its own under the temp dir, not in the bundle: a unix socket path
/// has at most 107 bytes, which a bundle path with Docker's 64-hex ids (and an exec id) passes.
pub struct Socket {
    listener: UnixListener,
    dir: PathBuf,
}

impl Socket {
    /// Makes a private directory (mode 0700) and binds `sock` in it.
    pub fn bind() -> Result<Socket, String> {
        let template = std::env::temp_dir().join("berth-console-XXXXXX");
        let mut buf = template.as_os_str().as_encoded_bytes().to_vec();
        buf.push(0);
        // SAFETY: mkdtemp rewrites the NUL-terminated template in place.
        if unsafe { libc::mkdtemp(buf.as_mut_ptr().cast()) }.is_null() {
            return Err(format!(
                "making a directory for the console socket: {}",
                std::io::Error::last_os_error()
            ));
        }
        buf.pop();
        let dir = PathBuf::from(std::ffi::OsString::from(
            String::from_utf8_lossy(&buf).into_owned(),
        ));
        let listener = UnixListener::bind(dir.join("sock")).map_err(|e| {
            let _ = std::fs::remove_dir(&dir);
            format!("binding console socket in {}: {e}", dir.display())
        })?;
        Ok(Socket { listener, dir })
    }

    /// The path to give the runtime.
    pub fn path(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// The master the runtime sent. Called after the runtime exited: its message (and the fd in
    /// it) waits in the socket's queue, so nothing here blocks.
    pub fn receive(self) -> Result<OwnedFd, String> {
        self.listener
            .set_nonblocking(true)
            .map_err(|e| format!("console socket: {e}"))?;
        let (conn, _) = self
            .listener
            .accept()
            .map_err(|e| format!("the runtime sent no terminal: {e}"))?;
        recv_fd(conn.as_raw_fd())
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Receives one fd passed with SCM_RIGHTS (the message body, the pty's name, is ignored).
fn recv_fd(sock: RawFd) -> Result<OwnedFd, String> {
    let mut body = [0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: body.as_mut_ptr().cast(),
        iov_len: body.len(),
    };
    // Room for one control message carrying one fd, aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: a zeroed msghdr is valid; its pointers are set to the live buffers above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: recvmsg into the buffers described by `msg`.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(format!(
            "receiving the terminal: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: walking the control messages the kernel wrote into `control`, as CMSG_* allow;
    // every fd received is owned here (the first kept, any others closed).
    let mut fds: Vec<OwnedFd> = Vec::new();
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let n = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<libc::c_int>();
                let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
                for i in 0..n {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err("the runtime's console message was truncated".into());
    }
    fds.into_iter()
        .next()
        .ok_or_else(|| "the runtime's console message carried no fd".into())
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on an fd the caller owns.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

/// What happened to a nonblocking read or write.
enum Io {
    /// This many bytes moved.
    Done(usize),
    /// Nothing now; try again when poll says so.
    Later,
    /// End of file, or the other side is gone (EIO on a master whose slave closed, EPIPE).
    Closed,
}

fn read(fd: RawFd, buf: &mut [u8]) -> Io {
    // SAFETY: read into a live buffer.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    classify(n)
}

fn write(fd: RawFd, buf: &[u8]) -> Io {
    // SAFETY: write from a live buffer.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    classify(n)
}

fn classify(n: isize) -> Io {
    match n {
        0 => Io::Closed,
        n if n > 0 => Io::Done(n as usize),
        _ => match std::io::Error::last_os_error().kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Io::Later,
            _ => Io::Closed,
        },
    }
}

/// Where the terminal's output goes.
enum Output {
    /// The client's FIFO or file, written as it accepts.
    Fd(OwnedFd),
    /// berth's log: the log module reads a copy of the master itself.
    Log,
    /// Nowhere (no stdout given): read and dropped, so the container never blocks on a full pty.
    Discard,
}

/// One process's terminal: its master and the two relays.
pub struct Tty {
    master: OwnedFd,
    input: Option<OwnedFd>,
    output: Option<Output>,
    to_master: Vec<u8>,
    to_output: Vec<u8>,
}

/// Largest chunk moved at once; also the bound of each relay's buffer.
const CHUNK: usize = 32 << 10;
/// Chunks moved each way per [`Tty::pump`].
const ROUNDS: usize = 16;

impl Tty {
    /// Relays between `master` and the client's `stdin` and `stdout` paths (empty: none;
    /// `log:/path`: berth's log).
    pub fn new(master: OwnedFd, stdin: &str, stdout: &str, logs: &mut Logs) -> Result<Tty, String> {
        set_nonblocking(master.as_raw_fd());
        let input = if stdin.is_empty() {
            None
        } else {
            // Read-write on a FIFO: there is always a writer (us), so the relay never sees an
            // end of file when the client closes and reopens; CloseIO ends it explicitly.
            let f = crate::proc::open_tty_input(stdin)?;
            set_nonblocking(f.as_raw_fd());
            Some(OwnedFd::from(f))
        };
        let output = if stdout.starts_with(crate::logs::PREFIX) {
            // SAFETY: dup of the master we own; the log module owns the copy.
            let copy = unsafe { libc::fcntl(master.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
            if copy < 0 {
                return Err(format!("dup: {}", std::io::Error::last_os_error()));
            }
            // SAFETY: `copy` was just created and is owned by nothing else.
            logs.add_source(stdout, "stdout", unsafe { OwnedFd::from_raw_fd(copy) })?;
            Output::Log
        } else if stdout.is_empty() {
            Output::Discard
        } else {
            let f: File = crate::proc::open_stdio(stdout, false)?;
            set_nonblocking(f.as_raw_fd());
            Output::Fd(f.into())
        };
        Ok(Tty {
            master,
            input,
            output: Some(output),
            to_master: Vec::new(),
            to_output: Vec::new(),
        })
    }

    /// The fds to poll, with the events that would let a relay move.
    pub fn poll_fds(&self, out: &mut Vec<libc::pollfd>) {
        let mut add = |fd: RawFd, events: libc::c_short| {
            out.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            })
        };
        let m = self.master.as_raw_fd();
        if let Some(i) = &self.input {
            if self.to_master.is_empty() {
                add(i.as_raw_fd(), libc::POLLIN);
            } else {
                add(m, libc::POLLOUT);
            }
        }
        match &self.output {
            Some(Output::Fd(o)) if !self.to_output.is_empty() => add(o.as_raw_fd(), libc::POLLOUT),
            Some(Output::Fd(_)) | Some(Output::Discard) => add(m, libc::POLLIN),
            Some(Output::Log) | None => {}
        }
    }

    /// Moves what can move now in both directions, at most [`ROUNDS`] chunks each way: a
    /// process that writes without pause must not keep the supervisor from its other work (poll
    /// wakes it again at once while more is ready).
    pub fn pump(&mut self) {
        let mut buf = [0u8; CHUNK];
        // Client → terminal.
        let mut rounds = 0;
        while let Some(i) = &self.input {
            rounds += 1;
            if rounds > ROUNDS {
                break;
            }
            if self.to_master.is_empty() {
                match read(i.as_raw_fd(), &mut buf) {
                    Io::Done(n) => self.to_master.extend_from_slice(&buf[..n]),
                    Io::Later => break,
                    Io::Closed => {
                        self.input = None;
                        break;
                    }
                }
            }
            match write(self.master.as_raw_fd(), &self.to_master) {
                Io::Done(n) => {
                    self.to_master.drain(..n);
                }
                Io::Later => break,
                Io::Closed => {
                    self.input = None;
                    self.to_master.clear();
                }
            }
        }
        // Terminal → client.
        for _ in 0..ROUNDS {
            let fd = match &self.output {
                Some(Output::Fd(o)) => Some(o.as_raw_fd()),
                Some(Output::Discard) => None,
                Some(Output::Log) | None => break,
            };
            if self.to_output.is_empty() {
                match read(self.master.as_raw_fd(), &mut buf) {
                    Io::Done(n) if fd.is_some() => self.to_output.extend_from_slice(&buf[..n]),
                    Io::Done(_) => continue,
                    Io::Later => break,
                    Io::Closed => {
                        // The slave side is closed: every process of this terminal ended.
                        // Closing our end of the FIFO gives the client its end of file.
                        self.output = None;
                        break;
                    }
                }
            }
            let Some(fd) = fd else { break };
            match write(fd, &self.to_output) {
                Io::Done(n) => {
                    self.to_output.drain(..n);
                }
                Io::Later => break,
                Io::Closed => {
                    // The client's side is gone (or full for good): keep reading the master
                    // and drop it, or the container would block on a full terminal.
                    self.output = Some(Output::Discard);
                    self.to_output.clear();
                }
            }
        }
    }

    /// Stops relaying the client's input (CloseIO).
    pub fn close_input(&mut self) {
        self.input = None;
        self.to_master.clear();
    }

    /// Sets the terminal's size.
    pub fn resize(&self, width: u16, height: u16) -> Result<(), String> {
        let ws = libc::winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from a live local.
        if unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
            return Err(format!("resize: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// True once the output has ended (all of it delivered) and nothing is left to do.
    pub fn finished(&self) -> bool {
        !matches!(self.output, Some(Output::Fd(_)) | Some(Output::Discard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A pty pair: (master, slave).
    fn pty() -> (OwnedFd, File) {
        // SAFETY: posix_openpt/grantpt/unlockpt/ptsname_r on the fd we own.
        unsafe {
            let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            assert!(m >= 0);
            assert_eq!(libc::grantpt(m), 0);
            assert_eq!(libc::unlockpt(m), 0);
            let mut name = [0 as libc::c_char; 64];
            assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
            let path = std::ffi::CStr::from_ptr(name.as_ptr()).to_str().unwrap();
            let slave = File::options().read(true).write(true).open(path).unwrap();
            (OwnedFd::from_raw_fd(m), slave)
        }
    }

    fn fifo(dir: &std::path::Path, name: &str) -> String {
        let p = dir.join(name);
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        p.to_str().unwrap().to_string()
    }

    #[test]
    fn relays_both_ways_resizes_and_ends_with_the_slave() {
        let dir = std::env::temp_dir().join(format!("berth-shim-tty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (stdin, stdout) = (fifo(&dir, "in"), fifo(&dir, "out"));
        let (master, mut slave) = pty();
        // Raw, so the line discipline neither echoes nor rewrites newlines.
        // SAFETY: termios calls on the slave we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            libc::tcgetattr(slave.as_raw_fd(), &mut t);
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t);
        }
        let mut logs = Logs::with_max(1 << 20);
        let mut tty = Tty::new(master, &stdin, &stdout, &mut logs).unwrap();
        let mut client_in = File::options().write(true).open(&stdin).unwrap();
        let mut client_out = File::open(&stdout).unwrap();
        client_in.write_all(b"typed").unwrap();
        tty.pump();
        let mut got = [0u8; 5];
        slave.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"typed");
        slave.write_all(b"printed").unwrap();
        tty.pump();
        let mut got = [0u8; 7];
        client_out.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"printed");
        tty.resize(91, 27).unwrap();
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ into a live local.
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!((ws.ws_col, ws.ws_row), (91, 27));
        assert!(!tty.finished());
        drop(slave);
        tty.pump();
        assert!(tty.finished());
        let mut rest = Vec::new();
        client_out.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
