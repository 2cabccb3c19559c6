//! Running the runtime, the container's stdio files, SIGCHLD as a file descriptor, and exit
//! statuses.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::console::{self, Tty};
use crate::logs::Logs;
use crate::Args;

/// Blocks SIGCHLD and returns a signalfd that becomes readable when a child changes state.
pub fn block_sigchld() -> std::io::Result<OwnedFd> {
    // SAFETY: sigset manipulation on a local, then plain syscalls.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Opens one stdio path for the container: empty is /dev/null; a FIFO is opened without blocking
/// (read side for stdin; read-write for output so the open never waits for a reader); a regular
/// file is read (stdin) or appended to (output, created if missing).
pub fn open_stdio(path: &str, input: bool) -> Result<File, String> {
    let path = if path.is_empty() { "/dev/null" } else { path };
    let fifo = std::fs::metadata(path)
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false);
    let mut o = File::options();
    if fifo {
        if input {
            o.read(true).custom_flags(libc::O_NONBLOCK);
        } else {
            o.read(true).write(true);
        }
    } else if input {
        o.read(true);
    } else {
        o.append(true).create(true);
    }
    let f = o
        .open(path)
        .map_err(|e| format!("opening stdio {path}: {e}"))?;
    if fifo && input {
        // The container reads blocking.
        // SAFETY: fcntl on an fd owned by `f`.
        unsafe {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
    }
    Ok(f)
}

/// Opens a terminal's stdin path for the relay: a FIFO read-write (there is always a writer, so
/// a client that closes and reopens never ends the input; CloseIO does), anything else
/// read-only.
pub fn open_tty_input(path: &str) -> Result<File, String> {
    let fifo = std::fs::metadata(path)
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false);
    File::options()
        .read(true)
        .write(fifo)
        .open(path)
        .map_err(|e| format!("opening stdio {path}: {e}"))
}

fn runtime(args: &Args) -> Command {
    let mut c = Command::new(&args.runtime);
    c.arg("--root")
        .arg(&args.runtime_root)
        .arg("--log")
        .arg(args.bundle.join("log.json"))
        .arg("--log-format")
        .arg("json");
    c
}

/// The last error the runtime logged to `BUNDLE/log.json`, if any.
pub fn runtime_error(bundle: &Path) -> Option<String> {
    let text = std::fs::read_to_string(bundle.join("log.json")).ok()?;
    text.lines().rev().find_map(|l| {
        if !l.contains("\"level\":\"error\"") {
            return None;
        }
        json_string_field(l, "msg")
    })
}

/// The value of `"key":"..."` in a one-line JSON object (enough for runc-style log lines;
/// handles the common escapes).
fn json_string_field(line: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\":\"");
    let start = line.find(&pat)? + pat.len();
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// Runs the runtime with the given stdio and waits for it; on failure, the runtime's logged
/// error (or its exit status).
fn run(mut cmd: Command, stdio: [File; 3], what: &str, bundle: &Path) -> Result<(), String> {
    let [i, o, e] = stdio;
    cmd.stdin(Stdio::from(i))
        .stdout(Stdio::from(o))
        .stderr(Stdio::from(e));
    // Its own process group, so that a timeout kills what it started too.
    cmd.process_group(0);
    let runtime = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("running the runtime {runtime} for {what}: {e}"))?;
    drop(cmd); // the parent's copies of the stdio files
    let limit = timeout();
    let status = match wait_until(&mut child, limit) {
        Ok(Some(st)) => st,
        Ok(None) => {
            // SAFETY: a signal to the group our own, unreaped child leads.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
            return Err(format!(
                "runtime {runtime} {what}: no answer within the runtime timeout of {limit:?} \
                 (killed; berthd's runtime_timeout sets it)"
            ));
        }
        Err(e) => return Err(format!("runtime {runtime} {what}: waiting: {e}")),
    };
    if status.success() {
        return Ok(());
    }
    Err(runtime_error(bundle)
        .unwrap_or_else(|| format!("runtime {runtime} {what} failed: {status}")))
}

/// How long the runtime's create or exec may take: `$BERTH_RUNTIME_TIMEOUT_MS` (berthd sets
/// it from its `runtime_timeout`), else 60 s.
fn timeout() -> Duration {
    std::env::var("BERTH_RUNTIME_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(60))
}

/// Waits for `child` until `limit` (on a pidfd: no polling, SIGCHLD untouched); None if it
/// still runs then.
fn wait_until(child: &mut Child, limit: Duration) -> std::io::Result<Option<ExitStatus>> {
    // SAFETY: pidfd_open on our own unreaped child.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut p, 1, ms) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

fn read_pid(path: &Path) -> Result<u32, String> {
    let s = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    s.trim()
        .parse()
        .map_err(|e| format!("{}: bad pid {s:?}: {e}", path.display()))
}

fn open_all(paths: &[String; 3], logs: &mut Logs) -> Result<[File; 3], String> {
    let mut out = |p: &str, stream| {
        if p.starts_with(crate::logs::PREFIX) {
            logs.pipe_for(p, stream)
        } else {
            open_stdio(p, false)
        }
    };
    Ok([
        open_stdio(&paths[0], true)?,
        out(&paths[1], "stdout")?,
        out(&paths[2], "stderr")?,
    ])
}

/// A process the runtime made: its pid and, if it has one, its terminal.
pub struct Started {
    /// Its pid.
    pub pid: u32,
    /// The relay of its terminal.
    pub tty: Option<Tty>,
}

/// Runs `RUNTIME <verb args> [--console-socket S] ID` (create or exec) for a process with the
/// given stdio paths and reads the pid it wrote. With a terminal, the runtime's own stdio is
/// /dev/null and the master it sends on `S` is relayed to `stdio`'s stdin and stdout.
fn start(
    args: &Args,
    verb: &[&std::ffi::OsStr],
    stdio: &[String; 3],
    terminal: bool,
    pid_file: &Path,
    logs: &mut Logs,
) -> Result<Started, String> {
    let what = verb
        .first()
        .map(|v| v.to_string_lossy())
        .unwrap_or_default();
    let mut cmd = runtime(args);
    cmd.args(verb).arg("--pid-file").arg(pid_file);
    if !terminal {
        cmd.arg(&args.id);
        run(cmd, open_all(stdio, logs)?, &what, &args.bundle)?;
        return Ok(Started {
            pid: read_pid(pid_file)?,
            tty: None,
        });
    }
    let socket = console::Socket::bind()?;
    cmd.arg("--console-socket").arg(socket.path()).arg(&args.id);
    let null = [
        open_stdio("", true)?,
        open_stdio("", false)?,
        open_stdio("", false)?,
    ];
    run(cmd, null, &what, &args.bundle)?;
    let pid = read_pid(pid_file)?;
    match socket
        .receive()
        .and_then(|master| Tty::new(master, &stdio[0], &stdio[1], logs))
    {
        Ok(tty) => Ok(Started {
            pid,
            tty: Some(tty),
        }),
        Err(e) => {
            // The process exists but cannot be reached: it must not run on untracked.
            // SAFETY: kill of the pid the runtime just made, a child of this supervisor.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            Err(e)
        }
    }
}

/// `RUNTIME create`: the init process exists, blocked until `start`.
pub fn create(args: &Args, logs: &mut Logs) -> Result<Started, String> {
    start(
        args,
        &[
            "create".as_ref(),
            "--bundle".as_ref(),
            args.bundle.as_os_str(),
        ],
        &args.stdio,
        args.terminal,
        &args.bundle.join("init.pid"),
        logs,
    )
}

/// `RUNTIME exec --detach` of `BUNDLE/exec-<id>.json` with the stdio named in
/// `BUNDLE/exec-<id>.io` (stdin, stdout, stderr, then `terminal` if it has one).
pub fn exec(args: &Args, exec_id: &str, logs: &mut Logs) -> Result<Started, String> {
    let io_path = args.bundle.join(format!("exec-{exec_id}.io"));
    let io = std::fs::read_to_string(&io_path)
        .map_err(|e| format!("exec {exec_id:?} is not registered: {e}"))?;
    let mut lines = io.lines().map(str::to_string);
    let paths = [
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
    ];
    let terminal = lines.next().as_deref() == Some("terminal");
    let process = args.bundle.join(format!("exec-{exec_id}.json"));
    start(
        args,
        &[
            "exec".as_ref(),
            "--process".as_ref(),
            process.as_os_str(),
            "--detach".as_ref(),
        ],
        &paths,
        terminal,
        &args.bundle.join(format!("exec-{exec_id}.pid")),
        logs,
    )
}

/// A wait status as a shell-style exit code (128+signal when killed).
pub fn exit_code(status: libc::c_int) -> u32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status) as u32
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status) as u32
    } else {
        255
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_error_is_read_from_the_last_error_line() {
        let line =
            r#"{"level":"error","msg":"exec: \"nope\": executable file not found","time":"x"}"#;
        assert_eq!(
            json_string_field(line, "msg").as_deref(),
            Some("exec: \"nope\": executable file not found")
        );
    }

    #[test]
    fn signals_map_to_128_plus() {
        assert_eq!(exit_code(9), 137);
        assert_eq!(exit_code(3 << 8), 3);
    }
}
