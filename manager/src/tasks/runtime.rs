//! Calling the runtime binary for what does not need the container's parent: start, kill,
//! state, ps, pause, resume, update, delete.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Result, TaskError};

/// A runtime binary with its state root.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The binary.
    pub binary: PathBuf,
    /// Its `--root`.
    pub root: PathBuf,
    /// Where it logs (`<bundle>/log.json`).
    pub log: PathBuf,
}

/// How long one runtime command may run (berthd's `runtime_timeout`), in milliseconds.
static TIMEOUT_MS: AtomicU64 = AtomicU64::new(60_000);

/// Sets how long one runtime command may run, for berthd's whole life (its `runtime_timeout`).
pub fn set_timeout(t: Duration) {
    TIMEOUT_MS.store(
        t.as_millis().clamp(1, u64::MAX as u128) as u64,
        Ordering::Relaxed,
    );
}

/// How long one runtime command may run before it is killed.
pub fn timeout() -> Duration {
    Duration::from_millis(TIMEOUT_MS.load(Ordering::Relaxed))
}

/// The environment variable that gives the supervisor the runtime's timeout (milliseconds)
/// for the `create` and `exec` it runs.
pub const SHIM_TIMEOUT_ENV: &str = "BERTH_RUNTIME_TIMEOUT_MS";

/// Waits for `child` until `limit`; None if it is still running then. Waits on a pidfd, so
/// the end is seen at once without polling and without touching SIGCHLD.
pub fn wait_until(child: &mut Child, limit: Duration) -> std::io::Result<Option<ExitStatus>> {
    // SAFETY: pidfd_open on our own child's pid, which cannot be reaped behind our back
    // (only `child` waits for it).
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new fd that nothing else owns.
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

fn read_all(r: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut v);
        }
        v
    })
}

impl Runtime {
    /// Runs `args`, feeding `stdin`; returns stdout, or an error carrying the runtime's message.
    /// A command still running after [`timeout`] is killed (its whole process group) and the
    /// error names the runtime and the timeout.
    pub fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json")
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so that a timeout kills whatever it started too.
            .process_group(0);
        let what = args.first().copied().unwrap_or("");
        let mut child = cmd.spawn().map_err(|e| {
            TaskError::Internal(format!(
                "running runtime {} {what}: {e}",
                self.binary.display()
            ))
        })?;
        let feed = match (stdin, child.stdin.take()) {
            (Some(data), Some(mut w)) => {
                let data = data.to_vec();
                Some(std::thread::spawn(move || w.write_all(&data)))
            }
            _ => None,
        };
        let out = read_all(child.stdout.take());
        let err = read_all(child.stderr.take());
        let limit = timeout();
        let status = match wait_until(&mut child, limit) {
            Ok(Some(st)) => st,
            Ok(None) => {
                kill_group(&mut child);
                return Err(TaskError::Timeout(format!(
                    "runtime {} {what}: no answer within the runtime timeout of {limit:?} \
                     (killed; berthd's runtime_timeout sets it)",
                    self.binary.display()
                )));
            }
            Err(e) => {
                kill_group(&mut child);
                return Err(TaskError::Internal(format!("runtime {what}: waiting: {e}")));
            }
        };
        if let Some(Ok(Err(e))) = feed.map(|h| h.join()) {
            if status.success() {
                return Err(TaskError::Internal(format!(
                    "runtime {what}: writing stdin: {e}"
                )));
            }
        }
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        if status.success() {
            return Ok(stdout);
        }
        let msg = last_error(&self.log)
            .or_else(|| {
                let s = String::from_utf8_lossy(&stderr).trim().to_string();
                (!s.is_empty()).then_some(s)
            })
            .unwrap_or_else(|| format!("exited with {status}"));
        Err(classify(&format!("runtime {what}: {msg}")))
    }

    /// The runtime's `state`: status string and pid.
    pub fn state(&self, id: &str) -> Result<(String, u32)> {
        let out = self.run(&["state", id], None)?;
        let v: serde_json::Value = serde_json::from_slice(&out)
            .map_err(|e| TaskError::Internal(format!("runtime state: bad JSON: {e}")))?;
        Ok((
            v["status"].as_str().unwrap_or("unknown").to_string(),
            v["pid"].as_u64().unwrap_or(0) as u32,
        ))
    }
}

/// Maps the runtime's wording onto error kinds (see the runc contract).
fn classify(msg: &str) -> TaskError {
    let m = msg.to_ascii_lowercase();
    if m.contains("does not exist") || m.contains("not found") && m.contains("container") {
        TaskError::NotFound(msg.to_string())
    } else if m.contains("not running")
        || m.contains("process already finished")
        || m.contains("no such process")
    {
        TaskError::NotFound(format!("process already finished: {msg}"))
    } else {
        TaskError::Internal(msg.to_string())
    }
}

/// The message of the last error line in a runtime log.json.
pub fn last_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["level"] == "error")
            .then(|| v["msg"].as_str().map(str::to_string))
            .flatten()
    })
}

/// SIGKILLs `child`'s process group (it leads one, see [`Runtime::run`]) and reaps it.
fn kill_group(child: &mut Child) {
    // SAFETY: a signal to the group our own child leads.
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
    let _ = child.kill();
    let _ = child.wait();
}
