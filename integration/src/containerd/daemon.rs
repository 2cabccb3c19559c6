//! [`Containerd`]: Debian's containerd started on a private temp dir for one test, with the
//! runtime under test as the runc binary of every container it runs, and `ctr` pointed at it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

use super::cleanup;
use super::command::{self, shell_quote, CtrOut};
use super::image;
use crate::bins;
use crate::runtime::guard::{remove_cgroups, unmount_under};
use crate::runtime::{unique_name, wait_for};

/// How long one `ctr` command may take before the test kills it.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(30);
/// How long containerd may take to listen.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The runc shim's default runtime root (`--root` is `<this>/<namespace>`).
pub const DEFAULT_RUNC_ROOT: &str = "/run/containerd/runc";

/// Plugins disabled in the private config: CRI (needs CNI and its own state), and snapshotters
/// that cannot work here (no btrfs/zfs file system, no aufs module, no devmapper pool).
pub const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
];

/// A containerd for one test: its temp dir (config, root, state, socket, log, runc root, the
/// image archive, ctr outputs), its process and its namespace.
pub struct Containerd {
    dir: TempDir,
    child: Option<Child>,
    ns: String,
    runtime: PathBuf,
    calls: AtomicUsize,
}

impl Containerd {
    /// Starts containerd with the runtime under test (`bins::berth_runc()`, i.e. `$BERTH_RUNC`
    /// or the release berth-runc) and imports the busybox image.
    pub fn start() -> Result<Containerd> {
        Self::start_with_runtime(bins::berth_runc())
    }

    /// Starts containerd with `runtime` as the runc binary and imports the busybox image.
    pub fn start_with_runtime(runtime: PathBuf) -> Result<Containerd> {
        if !runtime.is_file() {
            bail!(
                "the runtime under test {} does not exist (build it with `cargo build --release -p berth-runtime` or set BERTH_RUNC)",
                runtime.display()
            );
        }
        // Under /var/tmp, not /tmp: the overlayfs snapshotter needs a real file system.
        let dir = tempfile::Builder::new()
            .prefix("berth-ctrd-")
            .tempdir_in("/var/tmp")
            .context("creating containerd's temp dir")?;
        let mut c = Containerd {
            dir,
            child: None,
            ns: unique_name("berth-it"),
            runtime,
            calls: AtomicUsize::new(0),
        };
        c.spawn()?;
        c.import_image()?;
        Ok(c)
    }

    fn config_toml(&self) -> String {
        let q = |p: PathBuf| toml_string(&p.to_string_lossy());
        let disabled: Vec<String> = DISABLED_PLUGINS.iter().map(|p| toml_string(p)).collect();
        format!(
            "version = 2\n\
             root = {root}\n\
             state = {state}\n\
             disabled_plugins = [{disabled}]\n\
             [grpc]\n  address = {grpc}\n\
             [ttrpc]\n  address = {ttrpc}\n\
             [debug]\n  level = \"debug\"\n\
             [plugins]\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = {opt}\n",
            root = q(self.root()),
            state = q(self.state()),
            disabled = disabled.join(", "),
            grpc = q(self.socket()),
            ttrpc = q(self.dir.path().join("containerd.sock.ttrpc")),
            opt = q(self.dir.path().join("opt")),
        )
    }

    fn spawn(&mut self) -> Result<()> {
        let config = self.dir.path().join("config.toml");
        fs::write(&config, self.config_toml()).context("writing containerd's config")?;
        // The shim falls back to `runc` on its PATH whenever the task's options lack a binary
        // name (ctr 1.6 replaces them with {io_uid, io_gid} for --uidmap): make that the runtime
        // under test too, so no code path silently uses the host's runc.
        let bin = self.bin_dir();
        if !bin.exists() {
            fs::create_dir(&bin).with_context(|| format!("creating {}", bin.display()))?;
            std::os::unix::fs::symlink(&self.runtime, bin.join("runc"))
                .context("linking the runtime under test as `runc`")?;
        }
        let mut path = std::ffi::OsString::from(bin.as_os_str());
        if let Some(old) = std::env::var_os("PATH") {
            path.push(":");
            path.push(old);
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening containerd's log")?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd (install the containerd package: hack/setup.sh does)")?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok()
                && self.ctr(&["version"]).code == 0
            {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Some(st) = c.try_wait()? {
                    self.child = None;
                    bail!("containerd exited early ({st}):\n{}", self.log());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd did not answer `ctr version` within {START_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn import_image(&self) -> Result<()> {
        let archive = self.dir.path().join("image.tar");
        image::write_archive(&archive)?;
        let archive = archive.to_string_lossy().into_owned();
        let out = self.ctr(&["images", "import", &archive]);
        if out.code != 0 {
            bail!(
                "importing the busybox image failed:\n{}\n{}",
                out.describe(),
                self.log_tail(30)
            );
        }
        Ok(())
    }

    /// The temp dir holding everything.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// containerd's `root`.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// containerd's `state`.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The gRPC socket (`ctr -a`).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// The namespace every command of this containerd uses.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// The runc binary under test.
    pub fn runtime(&self) -> &Path {
        &self.runtime
    }

    /// True when the runtime under test is runc itself (the control).
    pub fn is_runc(&self) -> bool {
        self.runtime.file_name().is_some_and(|n| n == "runc")
    }

    /// The root passed as `ctr run --runc-root`; the shim runs the runtime with
    /// `--root <this>/<namespace>`.
    pub fn runc_root(&self) -> PathBuf {
        self.dir.path().join("runc")
    }

    /// A directory first on containerd's (and so the shims') PATH, holding `runc` → the
    /// runtime under test.
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    /// The runtime root the shim uses when a task's options name none:
    /// `/run/containerd/runc/<namespace>` (unique to this containerd, removed on drop).
    pub fn default_runtime_root(&self) -> PathBuf {
        Path::new(DEFAULT_RUNC_ROOT).join(&self.ns)
    }

    /// Where the runtime keeps container `id`'s state: `<runc root>/<namespace>/<id>`.
    pub fn runtime_state_dir(&self, id: &str) -> PathBuf {
        self.runc_root().join(&self.ns).join(id)
    }

    /// The shim's options for container `id` (`options.json` in the bundle: `binary_name`,
    /// `root`), proof of which runtime the shim drives.
    pub fn shim_options(&self, id: &str) -> Result<Value> {
        let path = self.bundle(id).join("options.json");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// containerd's log file (debug level; the shims' logs are copied into it).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("containerd.log")
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `n` warning or error lines of containerd's log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("level=error") || l.contains("level=warning"))
            .collect();
        let start = lines.len().saturating_sub(n);
        format!(
            "--- containerd log ({}), last warnings/errors ---\n{}",
            self.log_path().display(),
            lines[start..].join("\n")
        )
    }

    /// The bundle the shim made for container `id` (holds config.json, log.json, init.pid).
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.state()
            .join("io.containerd.runtime.v2.task")
            .join(&self.ns)
            .join(id)
    }

    /// The OCI config containerd wrote for container `id`.
    pub fn oci_config(&self, id: &str) -> Result<Value> {
        let path = self.bundle(id).join("config.json");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// `linux.cgroupsPath` of container `id`'s config.json.
    pub fn cgroups_path(&self, id: &str) -> Result<String> {
        let config = self.oci_config(id)?;
        config["linux"]["cgroupsPath"]
            .as_str()
            .map(str::to_string)
            .context("config.json has no linux.cgroupsPath")
    }

    /// The runtime's log.json for container `id` (gone once the task is deleted).
    pub fn runtime_log(&self, id: &str) -> String {
        fs::read_to_string(self.bundle(id).join("log.json")).unwrap_or_default()
    }

    /// Runs `ctr -a <socket> -n <ns> <args>` with the default timeout.
    pub fn ctr(&self, args: &[&str]) -> CtrOut {
        self.ctr_timeout(args, CTR_TIMEOUT)
    }

    /// Runs `ctr -a <socket> -n <ns> <args>`, killed after `timeout`.
    pub fn ctr_timeout(&self, args: &[&str], timeout: Duration) -> CtrOut {
        let mut cmd = self.ctr_command();
        cmd.args(args);
        command::run(&mut cmd, None, &self.out_base(), timeout)
    }

    /// `ctr -a <socket> -n <ns>`, with the environment that could redirect it removed.
    fn ctr_command(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a")
            .arg(self.socket())
            .arg("-n")
            .arg(&self.ns)
            .env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE");
        cmd
    }

    fn out_base(&self) -> PathBuf {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        self.dir.path().join(format!("cmd-{n}"))
    }

    /// The `ctr run` flags that pick the runtime under test and its private root.
    pub fn runtime_flags(&self) -> Vec<String> {
        vec![
            "--runc-binary".into(),
            self.runtime.to_string_lossy().into_owned(),
            "--runc-root".into(),
            self.runc_root().to_string_lossy().into_owned(),
        ]
    }

    /// Where ctr makes the IO fifos of `run` and `task exec` (`--fifo-dir`): inside the temp dir,
    /// because ctr leaves them behind after `-d` and the default is the host's
    /// /run/containerd/fifo.
    pub fn fifo_dir(&self) -> PathBuf {
        self.dir.path().join("fifo")
    }

    fn run_argv(&self, flags: &[&str], id: &str, cmd: &[&str]) -> Vec<String> {
        let mut argv: Vec<String> = vec!["run".into()];
        argv.extend(self.runtime_flags());
        argv.push("--fifo-dir".into());
        argv.push(self.fifo_dir().to_string_lossy().into_owned());
        argv.extend(flags.iter().map(|s| s.to_string()));
        argv.push(image::IMAGE.into());
        argv.push(id.into());
        argv.extend(cmd.iter().map(|s| s.to_string()));
        argv
    }

    /// `ctr run <runtime flags> <flags> IMAGE id cmd...`.
    pub fn run(&self, flags: &[&str], id: &str, cmd: &[&str]) -> CtrOut {
        let argv = self.run_argv(flags, id, cmd);
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.ctr(&refs)
    }

    /// [`Containerd::run`] of a short-lived `--rm` task that should exit `code` having printed
    /// exactly `stdout`, run once more when it exited `code` with only a beginning of `stdout`
    /// (nothing, or the first lines).
    ///
    /// containerd 1.6.20's `ctr run` now and then loses the output of a task that exits right
    /// after its start, whatever the runtime: with Debian's runc, 1 run of `containerd_run.rs`
    /// (4 test threads) in 61 failed so; with berth-runc, whose create and start are faster,
    /// about 1 in 10 (about 1 single `ctr run --rm` in 800). Losing output twice in a row
    /// still fails the test, as does any other difference.
    pub fn run_expecting(
        &self,
        flags: &[&str],
        id: &str,
        cmd: &[&str],
        code: i32,
        stdout: &str,
    ) -> CtrOut {
        let out = self.run(flags, id, cmd);
        if out.code != code || out.stdout == stdout || !stdout.starts_with(&out.stdout) {
            return out;
        }
        eprintln!(
            "containerd lost output of {id} (got {:?} of {stdout:?}); running it again",
            out.stdout
        );
        let _ = self.ctr(&["containers", "rm", id]);
        self.run(flags, id, cmd)
    }

    /// `ctr run` with stdin read from the file `stdin` (ctr copies it into the container; it does
    /// not close the container's stdin at end-of-file, so the command must stop reading itself).
    pub fn run_with_stdin(&self, flags: &[&str], id: &str, cmd: &[&str], stdin: &Path) -> CtrOut {
        let argv = self.run_argv(flags, id, cmd);
        let mut c = self.ctr_command();
        c.args(&argv);
        command::run(&mut c, Some(stdin), &self.out_base(), CTR_TIMEOUT)
    }

    /// `ctr task exec --fifo-dir <fifo dir> --exec-id <exec_id> <flags> id cmd...`.
    pub fn exec(&self, flags: &[&str], id: &str, exec_id: &str, cmd: &[&str]) -> CtrOut {
        let fifo = self.fifo_dir().to_string_lossy().into_owned();
        let mut argv = vec!["task", "exec", "--fifo-dir", &fifo, "--exec-id", exec_id];
        argv.extend_from_slice(flags);
        argv.push(id);
        argv.extend_from_slice(cmd);
        self.ctr(&argv)
    }

    /// `ctr run` on a pseudo-terminal: util-linux `script -qec "ctr ..." /dev/null`, because
    /// `ctr run -t` puts its own stdin into raw mode and fails without a terminal. `script -e`
    /// exits with ctr's exit code; its stdout is what the container wrote to its terminal.
    pub fn run_on_pty(&self, flags: &[&str], id: &str, cmd: &[&str]) -> CtrOut {
        self.ctr_on_pty(&self.run_argv(flags, id, cmd))
    }

    /// `ctr task exec -t` on a pseudo-terminal (see [`Containerd::run_on_pty`]).
    pub fn exec_on_pty(&self, id: &str, exec_id: &str, cmd: &[&str]) -> CtrOut {
        let mut argv: Vec<String> = vec![
            "task".into(),
            "exec".into(),
            "-t".into(),
            "--fifo-dir".into(),
            self.fifo_dir().to_string_lossy().into_owned(),
            "--exec-id".into(),
            exec_id.into(),
            id.into(),
        ];
        argv.extend(cmd.iter().map(|s| s.to_string()));
        self.ctr_on_pty(&argv)
    }

    /// `ctr -a <socket> -n <ns> <args>` inside `script -qec ... /dev/null`.
    pub fn ctr_on_pty(&self, args: &[String]) -> CtrOut {
        let mut words = vec![
            "ctr".to_string(),
            "-a".into(),
            self.socket().to_string_lossy().into_owned(),
            "-n".into(),
            self.ns.clone(),
        ];
        words.extend(args.iter().cloned());
        let line: Vec<String> = words.iter().map(|w| shell_quote(w)).collect();
        let mut script = Command::new("script");
        script
            .arg("-qec")
            .arg(line.join(" "))
            .arg("/dev/null")
            .env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE");
        command::run(&mut script, None, &self.out_base(), CTR_TIMEOUT)
    }

    /// Panics with the command's output, containerd's recent warnings/errors and (if the bundle
    /// still exists) the runtime's log.json unless `out` exited 0; returns stdout.
    #[track_caller]
    pub fn ok(&self, out: &CtrOut, id: &str) -> String {
        if out.code != 0 {
            panic!("{}", self.diagnose(out, id));
        }
        out.stdout.clone()
    }

    /// A failure report: the command and its output, the runtime's log.json for `id`, and
    /// containerd's recent warnings and errors.
    pub fn diagnose(&self, out: &CtrOut, id: &str) -> String {
        format!(
            "runtime under test: {}\n{}\n--- {}/log.json ---\n{}\n{}",
            self.runtime.display(),
            out.describe(),
            self.bundle(id).display(),
            self.runtime_log(id),
            self.log_tail(25)
        )
    }

    /// `(pid, status)` of task `id` from `ctr task ls`, None if it is not listed.
    pub fn task(&self, id: &str) -> Option<(i32, String)> {
        let out = self.ctr(&["task", "ls"]);
        parse_task_ls(&out.stdout)
            .into_iter()
            .find(|(task, _, _)| task == id)
            .map(|(_, pid, status)| (pid, status))
    }

    /// Waits up to `timeout` for task `id` to report `status` in `ctr task ls`.
    pub fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> bool {
        wait_for(timeout, || self.task(id).is_some_and(|(_, s)| s == status))
    }

    /// Container ids in this namespace (`ctr c ls -q`).
    pub fn containers(&self) -> Vec<String> {
        self.ctr(&["containers", "ls", "-q"])
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// What is left of container `id` whose cgroup was `cgroups_path`: a listed task or
    /// container, cgroup dirs in any hierarchy, runtime state under the runc root, the bundle,
    /// a running shim. Shims exit asynchronously, so this waits up to 5 s for them to go.
    pub fn leftovers(&self, id: &str, cgroups_path: &str) -> Vec<String> {
        let mut left = Vec::new();
        if let Some((pid, status)) = self.task(id) {
            left.push(format!(
                "`ctr task ls` still lists {id} (pid {pid}, {status})"
            ));
        }
        if self.containers().iter().any(|c| c == id) {
            left.push(format!("`ctr c ls` still lists {id}"));
        }
        for dir in crate::runtime::kernel::cgroup_dirs(cgroups_path) {
            left.push(format!("cgroup dir {} still exists", dir.display()));
        }
        for state in [
            self.runtime_state_dir(id),
            self.default_runtime_root().join(id),
        ] {
            if state.exists() {
                left.push(format!("runtime state {} still exists", state.display()));
            }
        }
        if self.bundle(id).exists() {
            left.push(format!("bundle {} still exists", self.bundle(id).display()));
        }
        let shim_gone = wait_for(Duration::from_secs(5), || {
            !self
                .shims()
                .iter()
                .any(|s| s.id == id && s.namespace == self.ns)
        });
        if !shim_gone {
            left.push(format!("the shim of {id} is still running"));
        }
        left
    }

    /// Running shims of this containerd.
    pub fn shims(&self) -> Vec<cleanup::Shim> {
        cleanup::shims_for(&self.socket())
    }

    /// Stops containerd (SIGTERM) and starts it again on the same config, root and state; the
    /// shims and their containers keep running and containerd reconnects to them.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    /// containerd's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            if Instant::now() > deadline {
                // Not reaped yet, so the pid is still ours.
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Parses `ctr task ls` (`TASK PID STATUS` table) into (id, pid, status).
pub fn parse_task_ls(table: &str) -> Vec<(String, i32, String)> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let id = cols.next()?.to_string();
            let pid = cols.next()?.parse().ok()?;
            let status = cols.next()?.to_string();
            Some((id, pid, status))
        })
        .collect()
}

fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Best effort throughout: the assertions are in the tests.
        let mut ids = Vec::new();
        if self.child.is_some() {
            ids = self.containers();
            for id in &ids {
                let t = Duration::from_secs(10);
                let _ = self.ctr_timeout(&["task", "kill", "-s", "SIGKILL", id], t);
                let _ = self.ctr_timeout(&["task", "rm", "-f", id], t);
                let _ = self.ctr_timeout(&["containers", "rm", id], t);
            }
        }
        self.stop();
        let shims = self.shims();
        for shim in &shims {
            cleanup::kill_shim(shim);
        }
        // Whatever still runs in the namespace's cgroups (a container whose shim was killed).
        remove_cgroups(&format!("/{}", self.ns));
        wait_for(Duration::from_secs(2), || {
            shims.iter().all(|s| !crate::runtime::kernel::alive(s.pid))
        });
        let socket = self.socket();
        for (ns, id) in shims
            .iter()
            .map(|s| (s.namespace.as_str(), s.id.as_str()))
            .chain(ids.iter().map(|id| (self.ns.as_str(), id.as_str())))
        {
            let _ = fs::remove_file(cleanup::shim_socket(&socket, ns, id));
        }
        unmount_under(self.dir.path());
        // Only this containerd's namespace: nobody else uses that name.
        let _ = fs::remove_dir_all(self.default_runtime_root());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_task_ls() {
        let t = "TASK    PID      STATUS    \nt3      13645    RUNNING\nt4      0        STOPPED\n";
        assert_eq!(
            parse_task_ls(t),
            vec![
                ("t3".to_string(), 13645, "RUNNING".to_string()),
                ("t4".to_string(), 0, "STOPPED".to_string())
            ]
        );
        assert!(parse_task_ls("TASK    PID    STATUS    \n").is_empty());
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
