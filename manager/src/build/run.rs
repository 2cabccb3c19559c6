//! RUN: the step's command in a container on the mounted snapshot, through the runtime binary's
//! `run` (a build step needs no supervisor: berthd is its parent and waits for it).
//!
//! The spec is Docker's default for a container: its capabilities, masked and read-only paths,
//! the default seccomp profile (`runspec/seccomp.rs`), no new privileges; the network namespace is
//! a new one with only loopback (`--network none`), the host's (`host`), or a new one that the
//! step's caller joins to a network (the default bridge or a named one: `Networks::attach`
//! points the spec at it and binds its /etc/hosts, resolv.conf and hostname over the rootfs).
//! stdout and stderr go to the client as they come; a build that is cancelled (the client went
//! away) kills the container and waits for the runtime to remove it.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

use super::{BuildError, Event, NetworkMode};

/// Docker's default capabilities, as `berth run` gives them.
use crate::runspec::CAPS;

/// One RUN container.
pub struct RunSpec<'a> {
    /// The container id (also its hostname and cgroup name).
    pub id: &'a str,
    /// The mounted rootfs.
    pub rootfs: &'a Path,
    /// The bundle dir (config.json goes there; heredoc pipes under `pipes/`).
    pub bundle: &'a Path,
    /// argv.
    pub args: &'a [String],
    /// Environment.
    pub env: &'a [String],
    /// Working directory.
    pub cwd: &'a str,
    /// uid, gid.
    pub user: (u32, u32),
    /// Network.
    pub network: &'a NetworkMode,
    /// Heredoc files for /dev/pipes (name, content).
    pub pipes: &'a [(String, String)],
    /// `RUN --mount`s: OCI mount entries, after the defaults.
    pub mounts: &'a [Value],
}

/// The host name of RUN containers (BuildKit's).
pub const HOSTNAME: &str = "buildkitsandbox";

/// The container's OCI spec (before a network is joined).
pub fn spec(r: &RunSpec) -> Value {
    let mut mounts = crate::runspec::default_mounts(false);
    if !r.pipes.is_empty() {
        mounts.push(json!({"destination": "/dev/pipes", "type": "bind",
            "source": r.bundle.join("pipes"), "options": ["rbind", "ro", "nosuid", "nodev"]}));
    }
    mounts.extend(r.mounts.iter().cloned());
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if *r.network != NetworkMode::Host {
        namespaces.push(json!({"type": "network"}));
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": r.user.0, "gid": r.user.1},
            "args": r.args,
            "env": r.env,
            "cwd": r.cwd,
            "capabilities": {"bounding": CAPS, "effective": CAPS, "permitted": CAPS},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": r.rootfs},
        "hostname": HOSTNAME,
        "mounts": mounts,
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "cgroupsPath": format!("/{CGROUP_PARENT}/{}", r.id),
            "namespaces": namespaces,
            "maskedPaths": crate::runspec::MASKED_PATHS,
            "readonlyPaths": crate::runspec::READONLY_PATHS,
            "seccomp": crate::runspec::seccomp::default_profile()
        }
    })
}

/// The cgroup (on every hierarchy) that holds each RUN step's container cgroup,
/// `/berth-build/<id>`.
pub const CGROUP_PARENT: &str = "berth-build";

/// Builds running now. The runtime removes `/berth-build` only when its own create made it,
/// so overlapping builds left it behind on every hierarchy; the last build to end removes it.
static ACTIVE_BUILDS: std::sync::Mutex<usize> = std::sync::Mutex::new(0);

/// Counts a running build for its lifetime; when the last one ends, the empty
/// `/berth-build` parent cgroups go.
pub struct ActiveBuild(());

impl ActiveBuild {
    /// A build starts (before any of its RUN steps can create a cgroup).
    pub fn enter() -> ActiveBuild {
        *ACTIVE_BUILDS.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        ActiveBuild(())
    }
}

impl Drop for ActiveBuild {
    fn drop(&mut self) {
        // The lock is held through the removal, so a build that starts meanwhile counts
        // itself first, or finds no parent and has the runtime make it again.
        let mut n = ACTIVE_BUILDS.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        if *n == 0 {
            remove_cgroup_parent();
        }
    }
}

/// Removes `/berth-build` on every cgroup hierarchy where it is empty (rmdir: a cgroup with
/// children or processes stays, and nothing else is touched). Called when no build runs:
/// at berthd's start and when the last build ends.
pub fn remove_cgroup_parent() {
    for m in crate::check::host::cgroup_mounts() {
        let dir = m.join(CGROUP_PARENT);
        match std::fs::remove_dir(&dir) {
            Ok(()) => tracing::debug!(dir = %dir.display(), "removed the builds' parent cgroup"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Still in use (a build of another berthd on this host, or a RUN container that
            // outlived its build): left.
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "builds' parent cgroup left")
            }
        }
    }
}

/// Runs the container (spec `config`, from [`spec`]) to its end; returns its exit code.
/// Output goes to `emit`.
pub fn run(
    runtime: &Path,
    runtime_root: &Path,
    r: &RunSpec,
    config: &Value,
    step: &str,
    emit: &(dyn Fn(Event) + Sync),
    cancel: &AtomicBool,
) -> Result<i32, BuildError> {
    let internal = |what: &str, e: std::io::Error| BuildError::Failed(format!("{what}: {e}"));
    std::fs::create_dir_all(r.bundle).map_err(|e| internal("creating the bundle", e))?;
    if !r.pipes.is_empty() {
        let dir = r.bundle.join("pipes");
        std::fs::create_dir_all(&dir).map_err(|e| internal("creating pipes", e))?;
        for (name, data) in r.pipes {
            let p = dir.join(name);
            std::fs::write(&p, data).map_err(|e| internal("writing a heredoc", e))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| internal("writing a heredoc", e))?;
        }
    }
    let cfg = serde_json::to_vec(config).map_err(|e| BuildError::Failed(e.to_string()))?;
    std::fs::write(r.bundle.join("config.json"), cfg)
        .map_err(|e| internal("writing config.json", e))?;
    let log = r.bundle.join("runtime.log");
    let rt = |args: &[&str]| -> Command {
        let mut c = Command::new(runtime);
        c.arg("--root")
            .arg(runtime_root)
            .arg("--log")
            .arg(&log)
            .arg("--log-format")
            .arg("json")
            .args(args);
        c
    };
    let bundle = r.bundle.to_string_lossy().into_owned();
    let mut child = rt(&["run", "--bundle", &bundle, r.id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BuildError::Failed(format!("starting runtime {}: {e}", runtime.display())))?;
    // Both pipes feed one channel; output reaches the client as it comes.
    let (tx, rx) = std::sync::mpsc::channel::<(bool, Vec<u8>)>();
    let out: Vec<(Box<dyn Read + Send>, bool)> = [
        child
            .stdout
            .take()
            .map(|p| (Box::new(p) as Box<dyn Read + Send>, false)),
        child
            .stderr
            .take()
            .map(|p| (Box::new(p) as Box<dyn Read + Send>, true)),
    ]
    .into_iter()
    .flatten()
    .collect();
    for (mut pipe, stderr) in out {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send((stderr, buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    drop(tx);
    let send = |(stderr, data): (bool, Vec<u8>)| {
        emit(Event::Output {
            step: step.to_string(),
            data,
            stderr,
        })
    };
    let mut killed = false;
    // A kill can come too early for the runtime (its state not written yet, or locked):
    // it is sent again every 500 ms until the container is gone.
    let mut last_kill: Option<std::time::Instant> = None;
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(m) => {
                send(m);
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(2))
            }
        }
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(e) => return Err(internal("waiting for the runtime", e)),
        }
        if cancel.load(Ordering::Acquire)
            && last_kill.is_none_or(|t| t.elapsed() >= Duration::from_millis(500))
        {
            killed = true;
            last_kill = Some(std::time::Instant::now());
            let _ = rt(&["kill", "--all", r.id, "KILL"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    };
    // The rest of the output (the pipes close when the container's processes are gone).
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while let Ok(m) = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        send(m);
    }
    // `run` removes the container when it ends; make sure, for a killed or failed start.
    let _ = rt(&["delete", "--force", r.id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if killed {
        return Err(BuildError::Cancelled);
    }
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    if code != 0 {
        if let Some(msg) = runtime_error(&log) {
            return Err(BuildError::Failed(format!(
                "runtime failed to run the step: {msg}"
            )));
        }
    }
    Ok(code)
}

/// The runtime's own error (json log), when it failed before the process ran.
fn runtime_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["level"] == "error")
        .filter_map(|v| v["msg"].as_str().map(str::to_string))
        .next_back()
}
