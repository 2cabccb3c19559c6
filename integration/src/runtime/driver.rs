//! Runs the runtime under test the way containerd's shim does: `--root <dir> --log <file>
//! --log-format json` before every command, one root per [`Runtime`] so parallel tests never
//! share state.
//!
//! The runtime's stdout and stderr go to files, never pipes: after `create` or `run --detach` the
//! container keeps them open, and a pipe would never reach end-of-file.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tempfile::TempDir;

use super::bundle::Bundle;
use super::guard::Guard;
use crate::bins;

/// How long one runtime command may take before the test gives up and kills it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The runtime binary with a private state root and log file.
pub struct Runtime {
    bin: PathBuf,
    dir: TempDir,
    root: PathBuf,
    log: PathBuf,
    calls: AtomicUsize,
}

/// What one runtime command did.
#[derive(Debug)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// Its exit status.
    pub status: ExitStatus,
    /// Its stdout (for `run`, the container's output).
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// The file stdout went to (still written by a container after `create`).
    pub stdout_path: PathBuf,
    /// The file stderr went to.
    pub stderr_path: PathBuf,
}

impl Output {
    /// The exit code, None when killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// True on exit code 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics with the command's output unless it exited 0; returns self for chaining.
    #[track_caller]
    pub fn ok(self) -> Output {
        assert!(
            self.success(),
            "`{}` failed: {}",
            self.command,
            self.describe()
        );
        self
    }

    /// Panics unless the command failed (non-zero exit).
    #[track_caller]
    pub fn failed(self) -> Output {
        assert!(
            !self.success(),
            "`{}` should have failed: {}",
            self.command,
            self.describe()
        );
        self
    }

    /// Status, stdout and stderr in one string, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "{}\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }

    /// Reads stdout again (a created container writes to it after the command exits).
    pub fn reread_stdout(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Reads stderr again.
    pub fn reread_stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

/// Extra settings for one command.
#[derive(Default)]
pub struct Io {
    /// Feed this file to stdin (default /dev/null).
    pub stdin: Option<PathBuf>,
    /// Pass these host fds to the runtime as fds 3, 4, ... (for `--preserve-fds`).
    pub extra_fds: Vec<std::os::fd::RawFd>,
}

impl Runtime {
    /// The runtime of [`bins::berth_runc`] with a fresh root.
    pub fn new() -> Result<Runtime> {
        Runtime::with_binary(bins::berth_runc())
    }

    /// A given runtime binary with a fresh root.
    pub fn with_binary(bin: PathBuf) -> Result<Runtime> {
        if !bin.exists() {
            bail!(
                "runtime binary {} does not exist (build it, or set BERTH_RUNC)",
                bin.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-it-rt-")
            .tempdir()
            .context("creating the runtime's temp dir")?;
        let root = dir.path().join("root");
        let log = dir.path().join("log.json");
        Ok(Runtime {
            bin,
            dir,
            root,
            log,
            calls: AtomicUsize::new(0),
        })
    }

    /// The binary under test.
    pub fn binary(&self) -> &Path {
        &self.bin
    }

    /// True when the binary under test is runc itself (the control), for the few assertions
    /// where runc's wording differs from Berth's contract.
    pub fn is_runc(&self) -> bool {
        self.bin.file_name().is_some_and(|n| n == "runc")
    }

    /// The state root passed as `--root`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The log file passed as `--log`.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// A scratch dir that lives as long as this runtime.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `runtime --root R --log L --log-format json ARGS...` and waits for it.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        self.exec_with(args, Io::default())
    }

    /// Runs a command with the global flags and extra settings.
    pub fn exec_with(&self, args: &[&str], io: Io) -> Result<Output> {
        let mut cmd = self.command(args);
        let (out_path, err_path) = self.output_files();
        let stdout = File::create(&out_path).context("creating a stdout file")?;
        let stderr = File::create(&err_path).context("creating a stderr file")?;
        let stdin = match &io.stdin {
            Some(path) => {
                Stdio::from(File::open(path).with_context(|| format!("{}", path.display()))?)
            }
            None => Stdio::null(),
        };
        cmd.stdin(stdin).stdout(stdout).stderr(stderr);
        if !io.extra_fds.is_empty() {
            let mut fds = io.extra_fds.clone();
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec, and no
            // allocation: the copies overwrite the moved vector in place.
            unsafe {
                cmd.pre_exec(move || {
                    // Copy every source above all the targets first: dup2'ing in place would
                    // clobber a source that sits on an earlier target (b opened as fd 3 while
                    // another test thread briefly held it, a as fd 7).
                    let above = 3 + fds.len() as i32;
                    for fd in fds.iter_mut() {
                        let copy = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, above);
                        if copy < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        *fd = copy;
                    }
                    for (i, copy) in fds.iter().enumerate() {
                        // dup2 onto the target clears its close-on-exec flag.
                        if libc::dup2(*copy, 3 + i as i32) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        let command = self.describe(args);
        let status = wait_with_timeout(&mut cmd, &command, COMMAND_TIMEOUT)?;
        Ok(Output {
            command,
            status,
            stdout: fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: fs::read_to_string(&err_path).unwrap_or_default(),
            stdout_path: out_path,
            stderr_path: err_path,
        })
    }

    /// A `Command` for `runtime --root R --log L --log-format json ARGS...`, for tests that
    /// spawn it themselves (e.g. a foreground `run` they signal).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json")
            .args(args);
        cmd
    }

    /// Two fresh file names for a command's stdout and stderr.
    pub fn output_files(&self) -> (PathBuf, PathBuf) {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        (
            self.dir.path().join(format!("out-{n}")),
            self.dir.path().join(format!("err-{n}")),
        )
    }

    fn describe(&self, args: &[&str]) -> String {
        format!("{} {}", self.bin.display(), args.join(" "))
    }

    /// A cleanup guard for container `id` of `bundle`.
    pub fn guard<'a>(&'a self, id: &str, bundle: &'a Bundle) -> Guard<'a> {
        Guard::new(self, id, bundle)
    }

    /// `create --bundle B ID` (writes the bundle's config first).
    pub fn create(&self, id: &str, bundle: &Bundle) -> Result<Output> {
        self.create_with(id, bundle, &[])
    }

    /// `create --bundle B EXTRA... ID`.
    pub fn create_with(&self, id: &str, bundle: &Bundle, extra: &[&str]) -> Result<Output> {
        bundle.save()?;
        let path = bundle.path().display().to_string();
        let mut args = vec!["create", "--bundle", &path];
        args.extend_from_slice(extra);
        args.push(id);
        self.exec(&args)
    }

    /// `run --bundle B ID` in the foreground: stdout is the container's.
    pub fn run(&self, id: &str, bundle: &Bundle) -> Result<Output> {
        self.run_with(id, bundle, &[])
    }

    /// `run --bundle B EXTRA... ID`.
    pub fn run_with(&self, id: &str, bundle: &Bundle, extra: &[&str]) -> Result<Output> {
        bundle.save()?;
        let path = bundle.path().display().to_string();
        let mut args = vec!["run", "--bundle", &path];
        args.extend_from_slice(extra);
        args.push(id);
        self.exec(&args)
    }

    /// `start ID`.
    pub fn start(&self, id: &str) -> Result<Output> {
        self.exec(&["start", id])
    }

    /// `state ID`, parsed; an error (with the runtime's stderr) when it fails.
    pub fn state(&self, id: &str) -> Result<Value> {
        let out = self.exec(&["state", id])?;
        if !out.success() {
            bail!("`state {id}` failed: {}", out.describe());
        }
        serde_json::from_str(&out.stdout)
            .with_context(|| format!("`state {id}` printed no JSON: {}", out.stdout))
    }

    /// The `status` of `state ID`.
    pub fn status(&self, id: &str) -> Result<String> {
        let state = self.state(id)?;
        state["status"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("state has no status: {state}"))
    }

    /// The `pid` of `state ID`.
    pub fn pid(&self, id: &str) -> Result<i32> {
        let state = self.state(id)?;
        let pid = state["pid"]
            .as_i64()
            .with_context(|| format!("state has no pid: {state}"))?;
        i32::try_from(pid).with_context(|| format!("pid {pid} out of range"))
    }

    /// Polls `state ID` until its status is `want` (or the timeout passes).
    pub fn wait_status(&self, id: &str, want: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(id)?;
            if status == want {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("container {id} is {status:?}, not {want:?}, after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill ID SIGNAL`.
    pub fn kill(&self, id: &str, signal: &str) -> Result<Output> {
        self.exec(&["kill", id, signal])
    }

    /// `delete ID`.
    pub fn delete(&self, id: &str) -> Result<Output> {
        self.exec(&["delete", id])
    }

    /// `delete --force ID`.
    pub fn delete_force(&self, id: &str) -> Result<Output> {
        self.exec(&["delete", "--force", id])
    }

    /// `list ARGS...`.
    pub fn list(&self, args: &[&str]) -> Result<Output> {
        let mut all = vec!["list"];
        all.extend_from_slice(args);
        self.exec(&all)
    }

    /// The `msg` of the last `"level":"error"` line of the log file.
    pub fn last_log_error(&self) -> Option<String> {
        let text = fs::read_to_string(&self.log).ok()?;
        text.lines()
            .rev()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|entry| entry["level"] == "error")
            .and_then(|entry| entry["msg"].as_str().map(str::to_string))
    }

    /// The log file's text (for messages).
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Empties the log file, so the next command's errors are the only ones in it.
    pub fn clear_log(&self) -> Result<()> {
        if self.log.exists() {
            fs::write(&self.log, b"").context("truncating the log")?;
        }
        Ok(())
    }
}

/// Spawns `cmd` and waits up to `timeout`, killing it if it takes longer.
pub fn wait_with_timeout(cmd: &mut Command, what: &str, timeout: Duration) -> Result<ExitStatus> {
    let mut child = cmd.spawn().with_context(|| format!("spawning `{what}`"))?;
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for `{what}`"))?
        {
            return Ok(status);
        }
        if Instant::now() > deadline {
            // Not reaped yet, so the pid is still ours: kill() cannot hit another process.
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{what}` did not finish within {timeout:?}; killed it");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}
