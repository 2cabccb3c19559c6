//! berth-shim: one per container, started by berthd's task manager.
//!
//! `berth-shim BUNDLE ID RUNTIME RUNTIME_ROOT STDIN STDOUT STDERR [terminal]` (an empty stdio
//! path means /dev/null; `log:/path` is berth's log file). It forks; the child becomes a session leader and a child subreaper, runs
//! `RUNTIME create` with the stdio files as the container's fds 0/1/2, binds `BUNDLE/shim.sock`
//! and tells the parent, which prints the init pid and exits 0 (or prints the runtime's error
//! and exits 1). The child then stays as the container's parent: it reaps every process, writes
//! each exit status to a file in the bundle (`exit` for the init process, `exec-<id>.exit` for
//! execs: `CODE SECS NANOS`) and answers one-line requests on the socket:
//!
//! - `wait <exec-id>` — replies `CODE SECS NANOS` when that process has exited;
//! - `exec <exec-id>` — runs `RUNTIME exec --process BUNDLE/exec-<id>.json --detach` with stdio from
//!   `BUNDLE/exec-<id>.io` (three lines, and a fourth, `terminal`, for a pty), replies `ok PID` or
//!   `err MESSAGE`;
//! - `resize W H [exec-id]` — sets the size of that process's terminal;
//! - `closein [exec-id]` — stops relaying the client's stdin to that process's terminal;
//! - `oom [N]` — without N replies `oom COUNT` (OOM kills seen in the container's memory cgroup
//!   since the shim started); with N, replies once the count passes N, or `exit` when the init
//!   process has ended;
//! - `shutdown` — replies `ok` and exits (berthd sends it when the task is deleted).
//!
//! With a terminal, the runtime gets `--console-socket` and the shim keeps the pty master,
//! relaying it to the client's stdin/stdout FIFOs (or the log) from its poll loop.
//!
//! The exit files and the runtime's own state are the source of truth, so berthd can die and
//! come back at any time. Single-threaded, no async runtime, only libc: a few hundred KB of RSS.

mod console;
mod logs;
mod oom;
mod proc;
mod server;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;

/// What the shim was started with.
#[derive(Debug, Clone)]
pub struct Args {
    /// The bundle dir (config.json, rootfs, the shim's files).
    pub bundle: PathBuf,
    /// The container id.
    pub id: String,
    /// The runtime binary.
    pub runtime: PathBuf,
    /// The runtime's `--root`.
    pub runtime_root: PathBuf,
    /// The init process's stdio paths.
    pub stdio: [String; 3],
    /// The init process has a terminal.
    pub terminal: bool,
}

fn parse_args() -> Result<Args, String> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let terminal =
        match (a.len(), a.get(7).map(String::as_str)) {
            (7, _) => false,
            (8, Some("terminal")) => true,
            _ => return Err(
                "usage: berth-shim BUNDLE ID RUNTIME RUNTIME_ROOT STDIN STDOUT STDERR [terminal]"
                    .to_string(),
            ),
        };
    Ok(Args {
        bundle: PathBuf::from(&a[0]),
        id: a[1].clone(),
        runtime: PathBuf::from(&a[2]),
        runtime_root: PathBuf::from(&a[3]),
        stdio: [a[4].clone(), a[5].clone(), a[6].clone()],
        terminal,
    })
}

/// Closes every fd above stderr: the shim lives as long as its container, so a descriptor its
/// parent let slip (a client's connection, a listening socket, a lock) would stay open that
/// long, and pass on to the runtime. The shim needs none: its inputs are its arguments.
fn close_inherited_fds() {
    // SAFETY: close_range only closes descriptors; nothing in this process uses one yet.
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if r == 0 {
        return;
    }
    // Before Linux 5.9: the fds listed in /proc/self/fd (collected first: the listing's own
    // fd is among them).
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|fd| *fd > 2)
                .collect()
        })
        .unwrap_or_default();
    for fd in fds {
        // SAFETY: as above; a stale number (the listing's fd) just fails with EBADF.
        unsafe { libc::close(fd) };
    }
}

fn main() -> ExitCode {
    close_inherited_fds();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth-shim: {e}");
            return ExitCode::from(2);
        }
    };
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        eprintln!("berth-shim: pipe: {}", std::io::Error::last_os_error());
        return ExitCode::from(1);
    }
    // SAFETY: the fds were just created and are owned here only.
    let (rd, wr) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    // SAFETY: single-threaded at this point; the child only continues this program.
    match unsafe { libc::fork() } {
        -1 => {
            eprintln!("berth-shim: fork: {}", std::io::Error::last_os_error());
            ExitCode::from(1)
        }
        0 => {
            drop(rd);
            supervise(args, wr)
        }
        _ => {
            drop(wr);
            report(rd)
        }
    }
}

/// The parent: relays the child's verdict and exits.
fn report(mut rd: File) -> ExitCode {
    let mut msg = String::new();
    if let Err(e) = rd.read_to_string(&mut msg) {
        eprintln!("berth-shim: reading the supervisor's report: {e}");
        return ExitCode::from(1);
    }
    match msg.strip_prefix("ok ") {
        Some(pid) => {
            println!("{}", pid.trim());
            ExitCode::SUCCESS
        }
        None => {
            let m = msg.strip_prefix("err ").unwrap_or(&msg).trim();
            if m.is_empty() {
                eprintln!("supervisor died before the container was created");
            } else {
                eprintln!("{m}");
            }
            ExitCode::from(1)
        }
    }
}

/// The child: creates the container, then serves until `shutdown`.
fn supervise(args: Args, mut wr: File) -> ExitCode {
    let setup = || -> Result<(u32, server::Server), String> {
        // SAFETY: plain syscalls on this process.
        unsafe {
            libc::setsid();
            if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 {
                return Err(format!(
                    "PR_SET_CHILD_SUBREAPER: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        detach_stdio(&args.bundle);
        let sigfd = proc::block_sigchld().map_err(|e| format!("signalfd: {e}"))?;
        let mut logs = logs::Logs::from_env();
        let init = proc::create(&args, &mut logs)?;
        let pid = init.pid;
        let oom = oom::OomWatch::for_pid(pid)
            .inspect_err(|e| eprintln!("berth-shim: no OOM events for this container: {e}"))
            .ok();
        let srv = server::Server::bind(args.clone(), sigfd, init, oom, logs)?;
        Ok((pid, srv))
    };
    match setup() {
        Ok((pid, mut srv)) => {
            let _ = write!(wr, "ok {pid}");
            drop(wr);
            srv.run();
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = write!(wr, "err {e}");
            ExitCode::from(1)
        }
    }
}

/// Points the shim's own fds 0/1/2 away from berthd (stderr to `BUNDLE/shim.log`), so it does
/// not hold berthd's pipes or terminal.
fn detach_stdio(bundle: &std::path::Path) {
    let null = File::options().read(true).write(true).open("/dev/null");
    let log = File::options()
        .create(true)
        .append(true)
        .open(bundle.join("shim.log"));
    if let Ok(null) = null {
        let null: OwnedFd = null.into();
        // SAFETY: dup2 onto the standard fds.
        unsafe {
            libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0);
            libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1);
        }
    }
    if let Ok(log) = log {
        // SAFETY: dup2 onto stderr.
        unsafe {
            libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&log), 2);
        }
    }
}
