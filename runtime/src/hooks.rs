//! Runtime-spec hooks: each one a program run with the container's state JSON on stdin, its own
//! args, env and timeout, in the namespaces of whoever calls [`run`].
//!
//! No threads: a hook is supervised by one poll(2) loop that writes the state to its stdin,
//! collects the start of its stdout and stderr, and wakes on its exit (through a pidfd) or on the
//! deadline. That makes [`run`] usable from the container's init between clone and execve.
//!
//! Each hook runs in a process group of its own; on timeout the whole group gets SIGKILL (so a
//! `sh -c` wrapper's children die too) and the hook is reaped. A hook that exits normally may
//! leave background processes behind on purpose; they are not touched. With `env` set the hook
//! gets exactly that environment; without it, the caller's, except for the hooks the init runs
//! inside the container, which get the container process's environment (as runc's do).

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Hooks};

/// How much of a hook's stderr (or stdout, when stderr is empty) an error quotes.
const QUOTED_OUTPUT: usize = 500;
/// How much of each output stream is kept; the rest is read and dropped.
const KEPT_OUTPUT: usize = 4096;
/// Reads of 8 KiB at most when collecting a finished hook's output.
const DRAIN_READS: usize = 16;
/// Poll period when the kernel has no pidfd (before 5.3).
const TICK: Duration = Duration::from_millis(10);

/// The points of the container lifecycle where hooks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookKind {
    /// Deprecated; runs at the same point as CreateRuntime, before it, in the runtime namespace.
    Prestart,
    /// After the container's namespaces exist, before pivot_root; in the runtime namespace.
    CreateRuntime,
    /// After CreateRuntime, before pivot_root; in the container namespace (from the init).
    CreateContainer,
    /// On `start`, before the user program is executed; in the container (from the init).
    StartContainer,
    /// After the user program started, before `start` returns; in the runtime namespace.
    Poststart,
    /// After the container is deleted; in the runtime namespace. Failures only warn.
    Poststop,
}

impl HookKind {
    /// Every kind, in lifecycle order.
    pub const ALL: [HookKind; 6] = [
        HookKind::Prestart,
        HookKind::CreateRuntime,
        HookKind::CreateContainer,
        HookKind::StartContainer,
        HookKind::Poststart,
        HookKind::Poststop,
    ];

    /// The name config.json uses for this kind (`createRuntime`...).
    pub fn name(self) -> &'static str {
        match self {
            HookKind::Prestart => "prestart",
            HookKind::CreateRuntime => "createRuntime",
            HookKind::CreateContainer => "createContainer",
            HookKind::StartContainer => "startContainer",
            HookKind::Poststart => "poststart",
            HookKind::Poststop => "poststop",
        }
    }

    /// The hooks of this kind in `hooks`, in order.
    pub fn of(self, hooks: &Hooks) -> &[Hook] {
        #[allow(deprecated)]
        let list = match self {
            HookKind::Prestart => hooks.prestart(),
            HookKind::CreateRuntime => hooks.create_runtime(),
            HookKind::CreateContainer => hooks.create_container(),
            HookKind::StartContainer => hooks.start_container(),
            HookKind::Poststart => hooks.poststart(),
            HookKind::Poststop => hooks.poststop(),
        };
        list.as_deref().unwrap_or(&[])
    }
}

impl fmt::Display for HookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Run every hook of `kind` in order, in the calling process's namespaces, each with
/// `state_json` (the container's OCI state) on stdin.
///
/// Stops at the first hook that cannot be started, exits non-zero, is killed, or outlives its
/// timeout (it is then killed with SIGKILL and reaped); the error names the kind, the hook's
/// path, what happened, and quotes the start of its stderr. Poststop hooks too stop at the first
/// failure, as runc's do: the caller has already torn the container down and reports the error.
///
pub fn run(hooks: &Hooks, kind: HookKind, state_json: &[u8]) -> Result<(), String> {
    run_with_env(hooks, kind, state_json, None)
}

/// [`run`], where a hook without `env` gets `default_env` (when given) instead of the caller's.
pub fn run_with_env(
    hooks: &Hooks,
    kind: HookKind,
    state_json: &[u8],
    default_env: Option<&[String]>,
) -> Result<(), String> {
    for (i, hook) in kind.of(hooks).iter().enumerate() {
        run_hook(hook, state_json, default_env)
            .map_err(|e| format!("{kind} hook #{i} {}: {e}", hook.path().display()))?;
    }
    Ok(())
}

/// Run one hook to completion; the error says what went wrong (without the hook's name).
pub fn run_hook(
    hook: &Hook,
    state_json: &[u8],
    default_env: Option<&[String]>,
) -> Result<(), String> {
    let path = hook.path();
    if !path.is_absolute() {
        return Err("the hook path must be absolute".to_string());
    }
    let timeout = match hook.timeout() {
        None => None,
        Some(t) if t > 0 => Some(Duration::from_secs(t as u64)),
        Some(t) => return Err(format!("timeout must be greater than zero, not {t}")),
    };
    let mut cmd = Command::new(path);
    crate::sealed::scrub(&mut cmd);
    if let Some([argv0, rest @ ..]) = hook.args().as_deref() {
        cmd.arg0(argv0).args(rest);
    }
    if let Some(env) = hook.env().as_deref().or(default_env) {
        cmd.env_clear();
        for entry in env {
            match entry.split_once('=') {
                Some((k, v)) if !k.is_empty() => {
                    cmd.env(k, v);
                }
                _ => return Err(format!("env entry {entry:?} is not KEY=VALUE")),
            }
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);

    let _sigpipe = SigpipeBlocked::new();
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("cannot be started: {e}"))?;
    let deadline = timeout.map(|t| started + t);
    let outcome = supervise(&mut child, state_json, deadline);
    match outcome {
        Ok(Outcome::Exited(status, output)) => {
            if status.success() {
                return Ok(());
            }
            let what = match (status.code(), status.signal()) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(sig)) => format!("was killed by signal {}", signal_name(sig)),
                _ => format!("ended with {status}"),
            };
            Err(format!("{what}{}", output.quote()))
        }
        Ok(Outcome::TimedOut(output)) => Err(format!(
            "timed out after {}s and was killed{}",
            timeout.map(|t| t.as_secs()).unwrap_or(0),
            output.quote()
        )),
        Err(e) => {
            kill_group(&mut child);
            Err(format!("supervising it failed: {e}"))
        }
    }
}

enum Outcome {
    Exited(ExitStatus, Output),
    TimedOut(Output),
}

/// The start of what the hook wrote.
#[derive(Default)]
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Output {
    /// "; stderr: ..." quoting the start of stderr (or stdout when stderr is empty).
    fn quote(&self) -> String {
        let (name, bytes) = if !self.stderr.trim_ascii().is_empty() {
            ("stderr", &self.stderr)
        } else if !self.stdout.trim_ascii().is_empty() {
            ("stdout", &self.stdout)
        } else {
            return String::new();
        };
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(QUOTED_OUTPUT)]);
        let more = if bytes.len() > QUOTED_OUTPUT {
            "..."
        } else {
            ""
        };
        format!("; {name}: {}{more}", text.trim())
    }
}

/// Feed stdin, drain stdout/stderr and wait for the exit or the deadline, in one poll loop.
fn supervise(
    child: &mut Child,
    input: &[u8],
    deadline: Option<Instant>,
) -> std::io::Result<Outcome> {
    let mut stdin: Option<ChildStdin> = child.stdin.take();
    let mut stdout: Option<ChildStdout> = child.stdout.take();
    let mut stderr: Option<ChildStderr> = child.stderr.take();
    for fd in [
        stdin.as_ref().map(|s| s.as_raw_fd()),
        stdout.as_ref().map(|s| s.as_raw_fd()),
        stderr.as_ref().map(|s| s.as_raw_fd()),
    ]
    .into_iter()
    .flatten()
    {
        set_nonblocking(fd)?;
    }
    if input.is_empty() {
        stdin = None;
    }
    let pidfd = pidfd_open(child.id());
    let mut written = 0usize;
    let mut out = Output::default();
    loop {
        if let Some(status) = child.try_wait()? {
            // What the hook wrote before exiting is in the pipes; whatever a leftover background
            // process may write later is not waited for.
            drain(&mut stdout, &mut out.stdout);
            drain(&mut stderr, &mut out.stderr);
            return Ok(Outcome::Exited(status, out));
        }
        let now = Instant::now();
        if let Some(d) = deadline {
            if now >= d {
                kill_group(child);
                drain(&mut stdout, &mut out.stdout);
                drain(&mut stderr, &mut out.stderr);
                return Ok(Outcome::TimedOut(out));
            }
        }
        let mut wait = deadline.map(|d| d - now);
        if pidfd.is_none() {
            wait = Some(wait.map_or(TICK, |w| w.min(TICK)));
        }
        let timeout_ms = wait.map_or(-1, |w| w.as_millis().clamp(1, i32::MAX as u128) as i32);

        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(4);
        let watch = |fd: RawFd, events: libc::c_short| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        if let Some(s) = &stdin {
            fds.push(watch(s.as_raw_fd(), libc::POLLOUT));
        }
        if let Some(s) = &stdout {
            fds.push(watch(s.as_raw_fd(), libc::POLLIN));
        }
        if let Some(s) = &stderr {
            fds.push(watch(s.as_raw_fd(), libc::POLLIN));
        }
        if let Some(p) = &pidfd {
            fds.push(watch(p.as_raw_fd(), libc::POLLIN));
        }
        // SAFETY: fds is a valid array of pollfd for its length.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        let ready = |fd: RawFd| {
            fds.iter().any(|p| {
                p.fd == fd
                    && p.revents & (libc::POLLIN | libc::POLLOUT | libc::POLLERR | libc::POLLHUP)
                        != 0
            })
        };
        if let Some(s) = stdin.as_mut() {
            if ready(s.as_raw_fd()) {
                match s.write(&input[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    // A hook that does not read its stdin is fine.
                    Err(e) if e.kind() == ErrorKind::BrokenPipe => written = input.len(),
                    Err(e) => return Err(e),
                }
                if written >= input.len() {
                    stdin = None; // EOF for the hook
                }
            }
        }
        if stdout.as_ref().is_some_and(|s| ready(s.as_raw_fd())) {
            read_some(&mut stdout, &mut out.stdout);
        }
        if stderr.as_ref().is_some_and(|s| ready(s.as_raw_fd())) {
            read_some(&mut stderr, &mut out.stderr);
        }
    }
}

/// One read from a non-blocking stream; drops the stream at EOF or error.
fn read_some<R: Read>(stream: &mut Option<R>, keep: &mut Vec<u8>) -> bool {
    let Some(s) = stream.as_mut() else {
        return false;
    };
    let mut buf = [0u8; 8192];
    match s.read(&mut buf) {
        Ok(0) => {
            *stream = None;
            false
        }
        Ok(n) => {
            let room = KEPT_OUTPUT.saturating_sub(keep.len());
            keep.extend_from_slice(&buf[..n.min(room)]);
            true
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => false,
        Err(_) => {
            *stream = None;
            false
        }
    }
}

/// Read what is already buffered, without waiting for writers that may still hold the pipe
/// (a pipe holds at most 64 KiB unless resized; a writer that keeps filling it is cut off).
fn drain<R: Read>(stream: &mut Option<R>, keep: &mut Vec<u8>) {
    for _ in 0..DRAIN_READS {
        if !read_some(stream, keep) {
            break;
        }
    }
    *stream = None;
}

/// SIGKILL the hook's process group and reap the hook.
fn kill_group(child: &mut Child) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: plain kill(2); the group is the hook's own (process_group(0)), still unreaped.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let _ = child.kill();
    let _ = child.wait();
}

fn set_nonblocking(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A pidfd for the hook, readable once it exits; `None` on kernels before 5.3.
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: plain syscall; on success the fd is new and ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("{sig}"))
}

/// SIGPIPE blocked in this thread while a hook is fed, so that writing to a hook that closed its
/// stdin is an EPIPE error and never kills a caller that has not ignored SIGPIPE. A SIGPIPE left
/// pending is consumed before the old mask comes back. (Spawned hooks start with an empty mask.)
struct SigpipeBlocked {
    old: libc::sigset_t,
    was_blocked: bool,
}

impl SigpipeBlocked {
    fn new() -> SigpipeBlocked {
        // SAFETY: sigset manipulation on local values; pthread_sigmask on the calling thread.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            let was_blocked = libc::sigismember(&old, libc::SIGPIPE) == 1;
            SigpipeBlocked { old, was_blocked }
        }
    }
}

impl Drop for SigpipeBlocked {
    fn drop(&mut self) {
        if self.was_blocked {
            return;
        }
        // SAFETY: as in new(); sigtimedwait with a zero timeout only takes a pending SIGPIPE.
        unsafe {
            let mut pending: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut pending);
            if libc::sigpending(&mut pending) == 0
                && libc::sigismember(&pending, libc::SIGPIPE) == 1
            {
                let mut only: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut only);
                libc::sigaddset(&mut only, libc::SIGPIPE);
                let zero = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                libc::sigtimedwait(&only, std::ptr::null_mut(), &zero);
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}
