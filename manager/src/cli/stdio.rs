//! How a foreground process (`berth run`, `berth tasks exec`) reaches this terminal: FIFOs
//! for its stdio (ctr's way, since berthd and its shims open the paths the client names), this
//! terminal in raw mode and its size sent along when the process has a pty, and the signals
//! berth receives passed on to the process.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use berth_proto::containerd::services::tasks::v1 as pb;
use berth_proto::containerd::services::tasks::v1::tasks_client::TasksClient;

use super::Env;
use crate::client::NsChannel;

/// A private directory holding the FIFOs of one process's stdio: `stdin` (with `-i`),
/// `stdout`, and `stderr` (not with a terminal, whose output is all on stdout).
pub struct ClientIo {
    dir: PathBuf,
    stdin: Option<std::fs::File>,
    out: std::fs::File,
    err: Option<std::fs::File>,
}

/// Creates a FIFO and opens it without blocking: read-only for output, read-write for input
/// (so that the FIFO always has a writer until berth closes it at the end of its own stdin).
fn fifo(path: &Path, input: bool) -> Result<std::fs::File> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .with_context(|| format!("mkfifo {}", path.display()))?;
    std::fs::File::options()
        .read(true)
        .write(input)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

fn set_blocking(f: &std::fs::File) {
    // SAFETY: fcntl on an fd owned by `f`.
    unsafe {
        let fd = f.as_raw_fd();
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
    }
}

impl ClientIo {
    /// Makes the directory and the FIFOs.
    pub fn new(stdin: bool, terminal: bool) -> Result<ClientIo> {
        let dir = std::env::temp_dir().join(format!(
            "berth-io-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let opened = (|| -> Result<ClientIo> {
            Ok(ClientIo {
                stdin: stdin.then(|| fifo(&dir.join("stdin"), true)).transpose()?,
                out: fifo(&dir.join("stdout"), false)?,
                err: (!terminal)
                    .then(|| fifo(&dir.join("stderr"), false))
                    .transpose()?,
                dir: dir.clone(),
            })
        })();
        if opened.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        opened
    }

    fn path(&self, name: &str, present: bool) -> String {
        if present {
            self.dir.join(name).display().to_string()
        } else {
            String::new()
        }
    }

    /// The stdin FIFO's path for the request ("" without `-i`).
    pub fn stdin(&self) -> String {
        self.path("stdin", self.stdin.is_some())
    }

    /// The stdout FIFO's path.
    pub fn stdout(&self) -> String {
        self.path("stdout", true)
    }

    /// The stderr FIFO's path ("" with a terminal).
    pub fn stderr(&self) -> String {
        self.path("stderr", self.err.is_some())
    }

    /// Starts copying: this process's stdin into the stdin FIFO (closed at its end of file,
    /// which is the process's end of input), and the output FIFOs to this process's stdout and
    /// stderr until their writers close.
    pub fn copy(mut self) -> Copying {
        if let Some(w) = &self.stdin {
            set_blocking(w);
            if let Ok(mut w) = w.try_clone() {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut w);
                });
            }
        }
        let spawn = |f: &std::fs::File, to_err: bool| {
            set_blocking(f);
            let f = f.try_clone();
            std::thread::spawn(move || {
                let Ok(mut f) = f else { return };
                let _ = if to_err {
                    std::io::copy(&mut f, &mut std::io::stderr())
                } else {
                    std::io::copy(&mut f, &mut std::io::stdout())
                };
                let _ = std::io::stdout().flush();
            })
        };
        let mut threads = vec![spawn(&self.out, false)];
        if let Some(e) = &self.err {
            threads.push(spawn(e, true));
        }
        // Only the copying thread holds the stdin FIFO now: its end of file is the process's.
        self.stdin = None;
        Copying {
            _fifos: self,
            threads,
        }
    }
}

impl Drop for ClientIo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How long output may keep arriving after the process exited.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Output being copied; [`Copying::finish`] waits for the writers to close.
pub struct Copying {
    _fifos: ClientIo,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Copying {
    /// Waits until everything written has been copied, then removes the FIFOs. Called once
    /// the process has exited: what it wrote drains in milliseconds, so after [`DRAIN`] the
    /// writer still open must be another process (a background child holding the output),
    /// and berth stops waiting for it as Docker does.
    pub async fn finish(self) {
        let Copying { _fifos, threads } = self;
        let join = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        let _ = tokio::time::timeout(DRAIN, join).await;
    }
}

/// `-i -t` needs a terminal on stdin (Docker's rule): from a pipe, the container's terminal
/// would wait for input that never ends, since a pty has no end of file to pass on.
pub fn check_interactive_terminal(interactive: bool, tty: bool) -> Result<()> {
    use std::io::IsTerminal;
    if interactive && tty && !std::io::stdin().is_terminal() {
        anyhow::bail!("the input device is not a TTY: use -i without -t to pass a pipe");
    }
    Ok(())
}

/// This terminal in raw mode (input goes to the container's pty as typed, ^C included) until
/// dropped.
pub struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    /// Raw mode on stdin if it is a terminal; None otherwise.
    pub fn enter() -> Option<RawMode> {
        use nix::sys::termios;
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw).ok()?;
        // Release builds abort on panic, and no destructor runs then: the hook restores.
        let for_hook: libc::termios = saved.clone().into();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // SAFETY: tcsetattr on stdin with a complete termios value.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &for_hook) };
            previous(info);
        }));
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}

/// The size (columns, rows) of the terminal on stdout, else stdin; None if neither is one.
pub fn terminal_size() -> Option<(u32, u32)> {
    [std::io::stdout().as_raw_fd(), std::io::stdin().as_raw_fd()]
        .into_iter()
        .find_map(|fd| {
            let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
            // SAFETY: TIOCGWINSZ writes a winsize into a live local.
            let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0;
            (ok && ws.ws_col > 0).then_some((u32::from(ws.ws_col), u32::from(ws.ws_row)))
        })
}

/// Gives an OCI process this terminal's size as its pty's first size (`consoleSize`), so the
/// process never sees a 0x0 terminal before the first resize arrives.
pub fn set_console_size(process: &mut serde_json::Value) {
    if let Some((width, height)) = terminal_size() {
        process["consoleSize"] = serde_json::json!({"height": height, "width": width});
    }
}

/// Signals berth passes on to the process it runs in the foreground (docker's sig-proxy).
const FORWARDED: &[libc::c_int] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Background tasks tying a started process to this terminal; stopped when dropped.
pub struct Forwarding {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Tells berthd this terminal's size for the process's pty (nothing if berth has no terminal).
pub async fn send_size(mut c: TasksClient<NsChannel>, id: &str, exec_id: &str) {
    if let Some((width, height)) = terminal_size() {
        let _ = c
            .resize_pty(pb::ResizePtyRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                width,
                height,
            })
            .await;
    }
}

/// Before the process starts (so that no signal is lost in between): passes the signals in
/// [`FORWARDED`] on to it, and with a terminal sends this terminal's size on every SIGWINCH.
/// After the start, [`send_size`] sends the first one.
pub fn forward(env: &Env, id: &str, exec_id: &str, terminal: bool) -> Forwarding {
    use tokio::signal::unix::{signal, SignalKind};
    let mut tasks = Vec::new();
    for &sig in FORWARDED {
        let Ok(mut stream) = signal(SignalKind::from_raw(sig)) else {
            continue;
        };
        let mut c = TasksClient::new(env.ns.clone());
        let (id, exec_id) = (id.to_string(), exec_id.to_string());
        tasks.push(tokio::spawn(async move {
            while stream.recv().await.is_some() {
                let _ = c
                    .kill(pb::KillRequest {
                        container_id: id.clone(),
                        exec_id: exec_id.clone(),
                        signal: sig as u32,
                        all: false,
                    })
                    .await;
            }
        }));
    }
    if terminal {
        if let Ok(mut winch) = signal(SignalKind::window_change()) {
            let c = TasksClient::new(env.ns.clone());
            let (id, exec_id) = (id.to_string(), exec_id.to_string());
            tasks.push(tokio::spawn(async move {
                while winch.recv().await.is_some() {
                    send_size(c.clone(), &id, &exec_id).await;
                }
            }));
        }
    }
    Forwarding { tasks }
}
