//! `docker exec`: `POST /containers/{id}/exec` (create), `POST /exec/{id}/start`,
//! `GET /exec/{id}/json` (inspect) and `POST /exec/{id}/resize`.
//!
//! Exec instances live in memory (as in dockerd, they do not survive the daemon). A start runs
//! the process through the task service's `exec` and `start`, with FIFOs berthd makes in a
//! private directory under its state dir (`docker-exec/<exec id>/`): the process's output is
//! read from them and written to the hijacked connection (framed with Docker's 8-byte header
//! unless it has a terminal); the client's input is written to the stdin FIFO, which berthd
//! closes when the client half-closes its side (that is the process's end of input).
//!
//! A runner task owns each started process: it waits for the exit, drains the output, records
//! the exit code (the CLI reads it from inspect once the stream ends), then ends the stream,
//! deletes the process from the task and removes the FIFOs. A client that goes away only
//! closes the process's stdin: its output is still drained (and dropped), so the process
//! never blocks on a full pipe, and the runner cleans up when it exits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_proto::containerd::services::tasks::v1 as tpb;
use berth_proto::containerd::services::tasks::v1::tasks_server::Tasks;
use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, UPGRADE};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::errors::ApiError;
use super::lifecycle::{rq, task_error, Meta};
use super::logs;
use super::server::{empty, json as json_reply, Body, Reply, Req};
use super::{Api, NAMESPACE};

/// How long output may keep coming after the process exited (a background child holding the
/// FIFO open is not waited for longer, as the CLI's `berth tasks exec` does).
const DRAIN: Duration = Duration::from_secs(2);
/// Finished exec instances are forgotten this long after their exit (never-started ones this
/// long after their creation).
const KEEP: Duration = Duration::from_secs(600);
/// The content type of a hijacked stream (API 1.41 names both kinds alike).
const RAW_STREAM: &str = "application/vnd.docker.raw-stream";
/// The OCI process type of an exec's spec.
const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// What `POST /containers/{id}/exec` asks for (the body, as [`super::server::parse_body`]
/// reads it); [`ExecConfig::check`] says whether berthd can run it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecConfig {
    attach_stdin: bool,
    attach_stdout: bool,
    attach_stderr: bool,
    detach_keys: String,
    tty: bool,
    env: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    privileged: bool,
    user: String,
    working_dir: String,
}

impl ExecConfig {
    /// The command asked for (empty: none).
    pub fn cmd(&self) -> &[String] {
        self.cmd.as_deref().unwrap_or_default()
    }

    /// Checks what does not depend on the container: detach keys, a command, an absolute
    /// working directory, `KEY[=VALUE]` environment entries (400 naming the bad one).
    pub fn check(&self) -> Result<(), ApiError> {
        super::detach::DetachKeys::for_exec(&self.detach_keys)?;
        if self.cmd().is_empty() {
            return Err(ApiError::bad_request("No exec command specified"));
        }
        if !self.working_dir.is_empty() && !self.working_dir.starts_with('/') {
            return Err(ApiError::bad_request(format!(
                "the working directory '{}' is invalid, it needs to be an absolute path",
                self.working_dir
            )));
        }
        for e in self.env.iter().flatten() {
            if e.is_empty() || e.starts_with('=') {
                return Err(ApiError::bad_request(format!(
                    "invalid environment variable: {e:?}"
                )));
            }
        }
        Ok(())
    }
}

/// One exec instance.
#[derive(Debug)]
struct Instance {
    container_id: String,
    config: ExecConfig,
    created: Instant,
    started: bool,
    running: bool,
    pid: u32,
    exit_code: Option<i64>,
    ended: Option<Instant>,
}

/// The exec instances berthd knows, by ID.
#[derive(Default)]
pub struct Execs {
    map: Mutex<HashMap<String, Instance>>,
}

impl Execs {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Instance>) -> T) -> T {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut m)
    }

    /// Forgets instances that ended (or were never started) more than [`KEEP`] ago.
    fn prune(&self) {
        self.with(|m| {
            m.retain(|_, i| match (i.started, i.ended) {
                (_, Some(t)) => t.elapsed() < KEEP,
                (false, None) => i.created.elapsed() < KEEP,
                (true, None) => true,
            })
        });
    }

    /// The IDs of container `container_id`'s exec instances that are running (what
    /// container inspect shows as `ExecIDs`).
    pub fn running_of(&self, container_id: &str) -> Vec<String> {
        let mut v: Vec<String> = self.with(|m| {
            m.iter()
                .filter(|(_, i)| i.container_id == container_id && i.running)
                .map(|(id, _)| id.clone())
                .collect()
        });
        v.sort();
        v
    }

    fn finish(&self, id: &str, code: i64) {
        self.with(|m| {
            if let Some(i) = m.get_mut(id) {
                i.running = false;
                i.exit_code = Some(code);
                i.ended = Some(Instant::now());
            }
        });
    }
}

fn no_such_exec(id: &str) -> ApiError {
    ApiError::not_found(format!("No such exec instance: {id}"))
}

fn new_id() -> String {
    (0..4)
        .map(|_| format!("{:016x}", fastrand::u64(..)))
        .collect()
}

/// `POST /containers/{id}/exec`.
pub async fn create(api: &Api, req: Req, name: &str) -> Reply {
    let cfg: ExecConfig = req.json().await?;
    cfg.check()?;
    let c = api.find_container(name).await?;
    check_running(api, &c).await?;
    let id = register(api, &c, cfg, false);
    Ok(json_reply(StatusCode::CREATED, &json!({ "Id": id })))
}

/// Records a new exec instance of `c` (already claimed as started with `started`); its ID.
fn register(
    api: &Api,
    c: &berth_store::metadata::Container,
    cfg: ExecConfig,
    started: bool,
) -> String {
    api.execs.prune();
    let id = new_id();
    let what = exec_event("exec_create", &cfg);
    api.execs.with(|m| {
        m.insert(
            id.clone(),
            Instance {
                container_id: c.id.clone(),
                config: cfg,
                created: Instant::now(),
                started,
                running: started,
                pid: 0,
                exit_code: None,
                ended: None,
            },
        )
    });
    api.events
        .container(&c.id, &Meta::of(c), &what, &[("execID", id.clone())]);
    tracing::debug!(container = %c.id, exec = %id, "docker api: exec created");
    id
}

/// `exec_create: sh -c ...`, as dockerd names exec events.
fn exec_event(action: &str, cfg: &ExecConfig) -> String {
    format!(
        "{action}: {}",
        cfg.cmd.clone().unwrap_or_default().join(" ")
    )
}

/// What a health probe gives back: its exit code and the start of its output.
pub(super) struct ProbeResult {
    /// The exit code (-1: it did not finish within its timeout).
    pub code: i64,
    /// stdout and stderr as they came, at most [`PROBE_OUTPUT`] bytes.
    pub output: String,
}

/// The most output a probe keeps (dockerd's limit).
pub(super) const PROBE_OUTPUT: usize = 4096;

/// Runs `cmd` in running container `c` as an exec (the path `docker exec` takes), collecting
/// its output; past `timeout` the process is killed and the result is a failure (-1).
pub(super) async fn probe(
    api: &Api,
    c: &berth_store::metadata::Container,
    cmd: Vec<String>,
    timeout: Duration,
) -> ProbeResult {
    let cfg = ExecConfig {
        attach_stdout: true,
        attach_stderr: true,
        cmd: Some(cmd),
        ..Default::default()
    };
    let id = register(api, c, cfg.clone(), true);
    let mut s = match launch(api, c, &id, &cfg).await {
        Ok(s) => s,
        Err(e) => {
            return ProbeResult {
                code: 126,
                output: e.message,
            }
        }
    };
    drop(s.stdin.take());
    let mut output = Vec::new();
    let collect = async {
        while let Some(b) = s.out.recv().await {
            // Each item is one frame: its 8-byte header, then the data.
            let data = b.get(8..).unwrap_or(&[]);
            let room = PROBE_OUTPUT.saturating_sub(output.len());
            output.extend_from_slice(&data[..data.len().min(room)]);
        }
    };
    let timed_out = tokio::time::timeout(timeout, collect).await.is_err();
    if timed_out {
        if let Err(st) = api
            .tasks
            .kill(rq(tpb::KillRequest {
                container_id: c.id.clone(),
                exec_id: id.clone(),
                signal: 9,
                all: false,
            }))
            .await
        {
            tracing::debug!(exec = %id, error = %st.message(), "docker api: killing a probe");
        }
        // The runner records the exit and cleans up; the output is not waited for again.
        tokio::spawn(async move { while s.out.recv().await.is_some() {} });
        return ProbeResult {
            code: -1,
            output: format!("Health check exceeded timeout ({}s)", timeout.as_secs_f64()),
        };
    }
    ended(&mut s.done).await;
    let code = api
        .execs
        .with(|m| m.get(&id).and_then(|i| i.exit_code))
        .unwrap_or(-1);
    ProbeResult {
        code,
        output: String::from_utf8_lossy(&output).into_owned(),
    }
}

/// 409 unless the container is running, with dockerd's words.
async fn check_running(api: &Api, c: &berth_store::metadata::Container) -> Result<(), ApiError> {
    let st = api.run_state(c).await;
    match st.status {
        "running" => Ok(()),
        "paused" => Err(ApiError::conflict(format!(
            "Container {} is paused, unpause the container before exec",
            c.id
        ))),
        "restarting" => Err(ApiError::conflict(format!(
            "Container {} is restarting, wait until the container is running",
            c.id
        ))),
        _ => Err(ApiError::conflict(format!(
            "Container {} is not running",
            c.id
        ))),
    }
}

/// `GET /exec/{id}/json`.
pub async fn inspect(api: &Api, _req: Req, id: &str) -> Reply {
    let v = api.execs.with(|m| {
        m.get(id).map(|i| {
            let cmd = i.config.cmd.clone().unwrap_or_default();
            json!({
                "ID": id,
                "Running": i.running,
                "ExitCode": i.exit_code,
                "ProcessConfig": {
                    "tty": i.config.tty,
                    "entrypoint": cmd.first().cloned().unwrap_or_default(),
                    "arguments": cmd.get(1..).unwrap_or(&[]),
                    "privileged": i.config.privileged,
                    "user": i.config.user,
                },
                "OpenStdin": i.config.attach_stdin,
                "OpenStderr": i.config.attach_stderr,
                "OpenStdout": i.config.attach_stdout,
                "CanRemove": false,
                "ContainerID": i.container_id,
                "DetachKeys": "",
                "Pid": i.pid,
            })
        })
    });
    match v {
        Some(v) => Ok(json_reply(StatusCode::OK, &v)),
        None => Err(no_such_exec(id)),
    }
}

/// `POST /exec/{id}/resize?h=&w=`.
pub async fn resize(api: &Api, req: Req, id: &str) -> Reply {
    let (height, width) = size_q(&req)?;
    let cid = api
        .execs
        .with(|m| m.get(id).map(|i| i.container_id.clone()))
        .ok_or_else(|| no_such_exec(id))?;
    api.tasks
        .resize_pty(rq(tpb::ResizePtyRequest {
            container_id: cid,
            exec_id: id.to_string(),
            width,
            height,
        }))
        .await
        .map_err(|s| task_error("resizing the exec's terminal", s))?;
    Ok(empty(StatusCode::OK))
}

/// The `h` and `w` of a resize request (not numbers: 400).
pub(super) fn size_q(req: &Req) -> Result<(u32, u32), ApiError> {
    let dim = |k: &str| -> Result<u32, ApiError> {
        let v = req.q(k).unwrap_or("");
        v.parse::<u32>()
            .map_err(|_| ApiError::bad_request(format!("invalid value for {k}: {v:?}")))
    };
    Ok((dim("h")?, dim("w")?))
}

/// The body of `POST /exec/{id}/start` (its `Tty` repeats the instance's and is not read).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct StartConfig {
    detach: bool,
}

/// The FIFOs of one started process, in their private directory (removed on drop).
struct Fifos {
    dir: PathBuf,
}

impl Fifos {
    fn new(state: &Path, id: &str) -> Result<Fifos, ApiError> {
        use std::os::unix::fs::DirBuilderExt;
        let base = state.join("docker-exec");
        let mk = |p: &Path| {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(p)
                .map_err(|e| ApiError::internal(format!("creating {}: {e}", p.display())))
        };
        mk(&base)?;
        // What a previous berthd left (its processes lost their reader with it) goes once.
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(|| sweep(&base));
        let dir = base.join(id);
        mk(&dir)?;
        Ok(Fifos { dir })
    }

    /// Makes FIFO `name`; its path.
    fn make(&self, name: &str) -> Result<PathBuf, ApiError> {
        let p = self.dir.join(name);
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| ApiError::internal(format!("mkfifo {}: {e}", p.display())))?;
        Ok(p)
    }
}

/// Removes every entry of `dir` (stale FIFO dirs or spooled bodies of an earlier berthd).
pub fn sweep(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let r = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        if let Err(e) = r {
            tracing::warn!(path = %p.display(), error = %e, "docker api: removing a stale entry");
        }
    }
}

impl Drop for Fifos {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "docker api: removing exec FIFOs");
        }
    }
}

/// What a started process gives the connection.
struct Streams {
    /// Output, framed as the client wants it; closed when everything has been sent.
    out: mpsc::Receiver<Bytes>,
    /// The process's stdin, if the client attached it.
    stdin: Option<pipe::Sender>,
    /// Turns true when the process has exited and its output is drained.
    done: watch::Receiver<bool>,
}

/// The container record's spec (null when it has none).
fn record_spec(c: &berth_store::metadata::Container) -> Result<Value, ApiError> {
    Ok(c.spec
        .as_ref()
        .map(|s| serde_json::from_slice(&s.value))
        .transpose()
        .map_err(|e| ApiError::internal(format!("the container's spec is not JSON: {e}")))?
        .unwrap_or(Value::Null))
}

/// Who an exec runs as, as dockerd decides: `-u` resolved against the container's files (with
/// its `--group-add`), else the container's own process user as its start resolved it (the
/// task's config.json in `bundle`; `None` when that cannot be read: the record's user stays).
fn exec_user(
    bundle: &Path,
    asked: &str,
    group_add: &[String],
) -> Result<Option<crate::build::fsops::ExecUser>, String> {
    if !asked.is_empty() {
        return crate::build::fsops::resolve_exec_user(&bundle.join("rootfs"), asked, group_add)
            .map(Some);
    }
    let Some(cfg) = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    else {
        return Ok(None);
    };
    let p = &cfg["process"];
    let id = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    let (Some(uid), Some(gid)) = (id(&p["user"]["uid"]), id(&p["user"]["gid"])) else {
        return Ok(None);
    };
    let home = p["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|e| e.strip_prefix("HOME="))
        .unwrap_or("/")
        .to_string();
    Ok(Some(crate::build::fsops::ExecUser {
        uid,
        gid,
        additional_gids: p["user"]["additionalGids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(id)
            .collect(),
        home,
    }))
}

/// The process an exec runs: the container's own process with the exec's command, terminal,
/// environment, directory and user.
fn exec_process(c: &berth_store::metadata::Container, cfg: &ExecConfig) -> Result<Value, ApiError> {
    let spec = record_spec(c)?;
    let mut p = spec
        .get("process")
        .cloned()
        .unwrap_or_else(|| json!({"cwd": "/"}));
    p["args"] = json!(cfg.cmd.clone().unwrap_or_default());
    p["terminal"] = Value::Bool(cfg.tty);
    if let Some(extra) = &cfg.env {
        let mut env: Vec<String> = p["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        for e in extra {
            let key = e.split_once('=').map(|(k, _)| k).unwrap_or(e);
            env.retain(|x| x.split_once('=').map(|(k, _)| k).unwrap_or(x) != key);
            if e.contains('=') {
                env.push(e.clone());
            }
        }
        p["env"] = json!(env);
    }
    if !cfg.working_dir.is_empty() {
        p["cwd"] = json!(cfg.working_dir);
    }
    if cfg.privileged {
        // dockerd's exec --privileged: every capability, as a privileged container gets.
        let caps = crate::runspec::privileged_caps();
        p["capabilities"] = json!({"bounding": caps, "effective": caps, "permitted": caps});
    }
    Ok(p)
}

/// `POST /exec/{id}/start`: runs the process; without Detach, the connection is taken over
/// (`Upgrade: tcp`; without that header the output is the response body and there is no
/// input) until the process has exited and its output is sent.
pub async fn start(api: &Api, mut req: Req, id: &str) -> Reply {
    let upgrade = req.upgrade.take();
    let hijack = req.headers.contains_key(UPGRADE);
    let sc: StartConfig = req.json().await?;
    // Claimed here, so that two starts of one instance cannot both run it.
    let (cid, mut cfg) = api.execs.with(|m| {
        let i = m.get_mut(id).ok_or_else(|| no_such_exec(id))?;
        if i.exit_code.is_some() {
            return Err(ApiError::conflict(format!(
                "Error: Exec command {id} has already run"
            )));
        }
        if i.started {
            return Err(ApiError::conflict(format!(
                "Error: Exec command {id} is already running"
            )));
        }
        i.started = true;
        i.running = true;
        Ok((i.container_id.clone(), i.config.clone()))
    })?;
    if sc.detach {
        cfg.attach_stdin = false;
        cfg.attach_stdout = false;
        cfg.attach_stderr = false;
    }
    // A plain request has no way to send input.
    if !hijack {
        cfg.attach_stdin = false;
    }
    // The terminal is the instance's (the start's Tty only repeats it).
    let tty = cfg.tty;
    let c = match api.find_container(&cid).await {
        Ok(c) => c,
        Err(e) => {
            api.execs.finish(id, 126);
            return Err(e);
        }
    };
    if let Err(e) = check_running(api, &c).await {
        // Not run: the instance can be started again once the container runs.
        api.execs.with(|m| {
            if let Some(i) = m.get_mut(id) {
                i.started = false;
                i.running = false;
            }
        });
        return Err(e);
    }
    if let (Some(on), true, false) = (upgrade, hijack, sc.detach) {
        // As dockerd, the 101 goes out before the process starts: output that came with the
        // answer's head would land in the client's header buffer, where docker-py (compose)
        // never looks for it.
        let (api, id) = (api.clone(), id.to_string());
        tokio::spawn(async move {
            let up = match on.await {
                Ok(up) => up,
                Err(e) => {
                    tracing::debug!(exec = %id, error = %e, "docker api: exec upgrade failed");
                    // Nothing ran: the instance can be started again.
                    api.execs.with(|m| {
                        if let Some(i) = m.get_mut(&id) {
                            i.started = false;
                            i.running = false;
                        }
                    });
                    return;
                }
            };
            let streams = started_streams(launch(&api, &c, &id, &cfg).await, tty);
            // Checked at create; only a terminal's input is watched, as by dockerd.
            let escape = super::detach::DetachKeys::parse(&cfg.detach_keys)
                .ok()
                .filter(|_| tty)
                .map(|k| k.watch());
            pump(api, c.id, id, streams, up, escape).await;
        });
        let mut r: Response<Body> = empty(StatusCode::SWITCHING_PROTOCOLS);
        let h = r.headers_mut();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("tcp"));
        h.insert(CONTENT_TYPE, HeaderValue::from_static(RAW_STREAM));
        return Ok(r);
    }
    let started = launch(api, &c, id, &cfg).await;
    if sc.detach {
        return started.map(|_| empty(StatusCode::OK));
    }
    Ok(body_of(api, &cid, id, started_streams(started, tty)))
}

/// The streams of a started process, or (as dockerd) a stream holding the error that kept
/// it from starting; its exit code is then 126.
fn started_streams(started: Result<Streams, ApiError>, tty: bool) -> Streams {
    started.unwrap_or_else(|e| {
        let (tx, out) = mpsc::channel(1);
        let msg = format!("{}\r\n", e.message);
        let _ = tx.try_send(if tty {
            Bytes::from(msg)
        } else {
            logs::frame(1, msg.as_bytes())
        });
        let (_done_tx, done) = watch::channel(true);
        Streams {
            out,
            stdin: None,
            done,
        }
    })
}

/// Creates and starts the process; its runner relays its output. On failure the instance is
/// marked finished with 126 and nothing is left behind.
async fn launch(
    api: &Api,
    c: &berth_store::metadata::Container,
    id: &str,
    cfg: &ExecConfig,
) -> Result<Streams, ApiError> {
    let r = prepare_and_start(api, c, id, cfg).await;
    if r.is_ok() {
        api.events.container(
            &c.id,
            &Meta::of(c),
            &exec_event("exec_start", cfg),
            &[("execID", id.to_string())],
        );
    }
    if let Err(e) = &r {
        tracing::debug!(container = %c.id, exec = %id, error = %e.message, "docker api: exec failed to start");
        api.execs.finish(id, 126);
    }
    r
}

async fn prepare_and_start(
    api: &Api,
    c: &berth_store::metadata::Container,
    id: &str,
    cfg: &ExecConfig,
) -> Result<Streams, ApiError> {
    let mut process = exec_process(c, cfg)?;
    let bundle = crate::tasks::bundle::Bundle::new(api.state.state_dir(), NAMESPACE, &c.id).dir;
    let (user, group_add) = (
        cfg.user.clone(),
        crate::tasks::user::group_add(&record_spec(c)?),
    );
    let resolved = tokio::task::spawn_blocking(move || exec_user(&bundle, &user, &group_add))
        .await
        .map_err(|e| ApiError::internal(format!("task failed: {e}")))?
        .map_err(ApiError::bad_request)?;
    if let Some(u) = resolved {
        crate::tasks::user::set_user(&mut process, &u);
    }
    let fifos = Fifos::new(api.state.state_dir(), id)?;
    let path = |p: &Option<PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let stdout_p = (cfg.attach_stdout || cfg.tty && cfg.attach_stderr)
        .then(|| fifos.make("stdout"))
        .transpose()?;
    let stderr_p = (cfg.attach_stderr && !cfg.tty)
        .then(|| fifos.make("stderr"))
        .transpose()?;
    let stdin_p = cfg.attach_stdin.then(|| fifos.make("stdin")).transpose()?;
    let open_err = |p: &Option<PathBuf>, e: std::io::Error| {
        ApiError::internal(format!("opening {}: {e}", path(p)))
    };
    // Opened before the start: the reader keeps what a quick process writes; the writer
    // (read-write, so the open does not wait) keeps the process from seeing the end of its
    // input before the client's.
    let open_rx = |p: &Option<PathBuf>| -> Result<Option<pipe::Receiver>, ApiError> {
        p.as_ref()
            .map(|x| pipe::OpenOptions::new().open_receiver(x))
            .transpose()
            .map_err(|e| open_err(p, e))
    };
    let out_rx = open_rx(&stdout_p)?;
    let err_rx = open_rx(&stderr_p)?;
    let stdin_tx = stdin_p
        .as_ref()
        .map(|x| pipe::OpenOptions::new().read_write(true).open_sender(x))
        .transpose()
        .map_err(|e| open_err(&stdin_p, e))?;
    let spec = serde_json::to_vec(&process)
        .map_err(|e| ApiError::internal(format!("encoding the exec's process: {e}")))?;
    api.tasks
        .exec(rq(tpb::ExecProcessRequest {
            container_id: c.id.clone(),
            exec_id: id.to_string(),
            stdin: path(&stdin_p),
            stdout: path(&stdout_p),
            stderr: path(&stderr_p),
            terminal: cfg.tty,
            spec: Some(prost_types::Any {
                type_url: PROCESS_TYPE.into(),
                value: spec,
            }),
        }))
        .await
        .map_err(|s| task_error(&format!("exec in {}", c.id), s))?;
    let pid = match api
        .tasks
        .start(rq(tpb::StartRequest {
            container_id: c.id.clone(),
            exec_id: id.to_string(),
        }))
        .await
    {
        Ok(r) => r.into_inner().pid,
        Err(s) => {
            delete_process(api, &c.id, id).await;
            let msg = s.message().to_string();
            return Err(ApiError::bad_request(format!(
                "OCI runtime exec failed: {msg}: unknown"
            )));
        }
    };
    api.execs.with(|m| {
        if let Some(i) = m.get_mut(id) {
            i.pid = pid;
        }
    });
    tracing::debug!(container = %c.id, exec = %id, pid, "docker api: exec started");
    let (tx, out) = mpsc::channel::<Bytes>(64);
    let (done_tx, done) = watch::channel(false);
    let (exited_tx, exited) = watch::channel(false);
    let tty = cfg.tty;
    let readers: Vec<_> = [(out_rx, 1u8), (err_rx, 2u8)]
        .into_iter()
        .filter_map(|(rx, stream)| rx.map(|rx| (rx, stream)))
        .map(|(rx, stream)| tokio::spawn(relay(rx, stream, tty, tx.clone(), exited.clone())))
        .collect();
    let (api2, cid, eid) = (api.clone(), c.id.clone(), id.to_string());
    let meta = Meta::of(c);
    tokio::spawn(async move {
        let code = match api2
            .tasks
            .wait(rq(tpb::WaitRequest {
                container_id: cid.clone(),
                exec_id: eid.clone(),
            }))
            .await
        {
            Ok(r) => i64::from(r.into_inner().exit_status),
            Err(s) => {
                tracing::warn!(container = %cid, exec = %eid, error = %s.message(), "docker api: waiting for an exec");
                255
            }
        };
        // Output still in the pipes comes first (as fast as the client takes it); a child
        // left holding them is not waited for (see `relay`).
        let _ = exited_tx.send(true);
        for r in readers {
            let _ = r.await;
        }
        // Recorded, and the process and its FIFOs gone, before the stream ends (`tx` is the
        // last sender): the CLI asks for the code right after.
        api2.execs.finish(&eid, code);
        api2.events.container(
            &cid,
            &meta,
            "exec_die",
            &[("execID", eid.clone()), ("exitCode", code.to_string())],
        );
        delete_process(&api2, &cid, &eid).await;
        drop(fifos);
        drop(tx);
        let _ = done_tx.send(true);
        tracing::debug!(container = %cid, exec = %eid, code, "docker api: exec ended");
    });
    Ok(Streams {
        out,
        stdin: stdin_tx,
        done,
    })
}

async fn delete_process(api: &Api, cid: &str, eid: &str) {
    if let Err(s) = api
        .tasks
        .delete_process(rq(tpb::DeleteProcessRequest {
            container_id: cid.to_string(),
            exec_id: eid.to_string(),
        }))
        .await
    {
        tracing::debug!(container = %cid, exec = %eid, error = %s.message(), "docker api: deleting an exec process");
    }
}

/// Copies one output FIFO to `tx` until its writers are gone, framed unless `tty`. Once the
/// client is gone, output is read and dropped (the process must not block on a full pipe).
/// After the process has exited (`exited`), a FIFO that stays silent for [`DRAIN`] is held by
/// some other process (a background child): the relay stops there, as the CLI does.
async fn relay(
    mut rx: pipe::Receiver,
    stream: u8,
    tty: bool,
    tx: mpsc::Sender<Bytes>,
    mut exited: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut open = true;
    let mut gone = false;
    loop {
        let r = if gone {
            match tokio::time::timeout(DRAIN, rx.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => return,
            }
        } else {
            tokio::select! {
                r = rx.read(&mut buf) => r,
                // Reading is cancel-safe: nothing read is lost when this wins.
                c = exited.wait_for(|e| *e) => {
                    let _ = c.map(|_| ());
                    gone = true;
                    continue;
                }
            }
        };
        match r {
            Ok(0) => return,
            Ok(n) => {
                if open {
                    let b = if tty {
                        Bytes::copy_from_slice(&buf[..n])
                    } else {
                        logs::frame(stream, &buf[..n])
                    };
                    open = tx.send(b).await.is_ok();
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::debug!(error = %e, "docker api: reading exec output");
                return;
            }
        }
    }
}

/// Gives the output to a client that did not hijack its connection, as the response body;
/// it has no way to send input, so the process's stdin ends now.
fn body_of(api: &Api, cid: &str, id: &str, s: Streams) -> Response<Body> {
    if s.stdin.is_some() {
        drop(s.stdin);
        close_stdin(api.clone(), cid.to_string(), id.to_string());
    }
    let body = ReceiverStream::new(s.out).map(|b| Ok::<_, std::io::Error>(Frame::data(b)));
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(RAW_STREAM));
    r
}

/// Runs a hijacked connection: the client's bytes to the process's stdin, its output back,
/// until the process ends (or the client goes away, or types the detach keys `escape` watches
/// for: then the process keeps running with its input open, and its output is drained).
async fn pump(
    api: Api,
    cid: String,
    id: String,
    s: Streams,
    up: hyper::upgrade::Upgraded,
    escape: Option<super::detach::Escape>,
) {
    let Streams {
        mut out,
        stdin,
        mut done,
    } = s;
    let io = hyper_util::rt::TokioIo::new(up);
    let (mut rd, mut wr) = tokio::io::split(io);
    let (detached_tx, detached_rx) = tokio::sync::oneshot::channel::<()>();
    // Input: the client's bytes to the stdin FIFO until it half-closes (or goes away, or
    // the process ends); then the process's stdin is closed. A detach leaves it open.
    let input = stdin.map(|mut w| {
        let (api, cid, id) = (api.clone(), cid.clone(), id.clone());
        let mut done = done.clone();
        tokio::spawn(async move {
            let end = copy_input(&mut rd, &mut w, escape, ended(&mut done)).await;
            if end == InputEnd::Detached {
                let _ = detached_tx.send(());
                return;
            }
            drop(w);
            close_stdin(api, cid, id);
        })
    });
    // Output until the runner closes the channel (or the client detaches).
    let end = copy_output(&mut out, &mut wr, detached_rx).await;
    // The runner drains what comes after this (its sends fail from now on).
    drop(out);
    if end != OutputEnd::ClientGone {
        let _ = wr.flush().await;
        let _ = wr.shutdown().await;
    }
    if end == OutputEnd::Detached {
        let meta = api.find_container(&cid).await.map(|c| Meta::of(&c));
        if let Ok(m) = meta {
            api.events
                .container(&cid, &m, "exec_detach", &[("execID", id.clone())]);
        }
        tracing::debug!(container = %cid, exec = %id, "docker api: exec detached");
        return;
    }
    // The input side ends with the process (or with the client).
    ended(&mut done).await;
    if let Some(t) = input {
        let _ = t.await;
    }
}

/// How the output of a hijacked connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OutputEnd {
    /// Everything was sent.
    Done,
    /// The client went away.
    ClientGone,
    /// The client typed the detach keys (the input side said so through `detached`).
    Detached,
}

/// Writes `out` to a hijacked connection until it ends, the client goes away, or the input
/// side reports a detach on `detached` (a sender dropped without a word: no detach). Shared
/// by exec and attach.
pub(super) async fn copy_output<W>(
    out: &mut mpsc::Receiver<Bytes>,
    wr: &mut W,
    mut detached: tokio::sync::oneshot::Receiver<()>,
) -> OutputEnd
where
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut may_detach = true;
    loop {
        tokio::select! {
            b = out.recv() => match b {
                Some(b) => {
                    if wr.write_all(&b).await.is_err() {
                        return OutputEnd::ClientGone;
                    }
                }
                None => return OutputEnd::Done,
            },
            r = &mut detached, if may_detach => match r {
                Ok(()) => return OutputEnd::Detached,
                Err(_) => may_detach = false,
            },
        }
    }
}

/// How the input of a hijacked connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum InputEnd {
    /// The client half-closed or went away, or the input could not be written.
    Closed,
    /// The client typed the detach keys: the process keeps running, the attachment ends.
    Detached,
    /// The process is gone.
    Ended,
}

/// Copies a hijacked connection's input to a process's stdin until the client half-closes
/// (or goes away, or the input cannot be written), types the detach keys `escape` watches
/// for, or `ended` completes (the process is gone). Shared by exec and attach.
pub(super) async fn copy_input<R, W>(
    rd: &mut R,
    w: &mut W,
    mut escape: Option<super::detach::Escape>,
    ended: impl std::future::Future<Output = ()>,
) -> InputEnd
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    tokio::pin!(ended);
    let mut buf = vec![0u8; 32 * 1024];
    let mut passed = Vec::new();
    loop {
        tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) | Err(_) => return InputEnd::Closed,
                Ok(n) => {
                    let (data, detached) = match escape.as_mut() {
                        Some(e) => {
                            passed.clear();
                            let d = e.feed(&buf[..n], &mut passed);
                            (&passed[..], d)
                        }
                        None => (&buf[..n], false),
                    };
                    tokio::select! {
                        r = w.write_all(data) => if r.is_err() { return InputEnd::Closed },
                        _ = &mut ended => return InputEnd::Ended,
                    }
                    if detached {
                        return InputEnd::Detached;
                    }
                }
            },
            _ = &mut ended => return InputEnd::Ended,
        }
    }
}

/// Returns once the process has ended and its output is drained.
async fn ended(done: &mut watch::Receiver<bool>) {
    let _ = done.wait_for(|d| *d).await.map(|_| ());
}

/// Tells the supervisor the process's input has ended (a terminal's relay stops; without a
/// terminal, closing berthd's end of the FIFO already was the end of file).
fn close_stdin(api: Api, cid: String, id: String) {
    tokio::spawn(async move {
        if let Err(s) = api
            .tasks
            .close_io(rq(tpb::CloseIoRequest {
                container_id: cid,
                exec_id: id.clone(),
                stdin: true,
            }))
            .await
        {
            tracing::debug!(exec = %id, error = %s.message(), "docker api: closing an exec's stdin");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A container record whose spec is `spec`.
    fn container_with(spec: Value) -> berth_store::metadata::Container {
        berth_store::metadata::Container {
            id: "x".into(),
            labels: Default::default(),
            image: String::new(),
            runtime_name: String::new(),
            runtime_options: None,
            spec: Some(berth_store::metadata::AnyValue {
                type_url: String::new(),
                value: serde_json::to_vec(&spec).unwrap(),
            }),
            snapshotter: String::new(),
            snapshot_key: String::new(),
            extensions: Default::default(),
            sandbox: String::new(),
            created_at: std::time::SystemTime::UNIX_EPOCH,
            updated_at: std::time::SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn exec_env_replaces_the_containers_and_keeps_the_rest() {
        let c = container_with(json!({"process": {
            "args": ["sleep", "1"], "cwd": "/", "env": ["PATH=/bin", "A=1"], "user": {"uid": 0, "gid": 0}
        }}));
        let cfg = ExecConfig {
            cmd: Some(vec!["sh".into(), "-c".into(), "env".into()]),
            env: Some(vec!["A=2".into(), "B=3".into()]),
            working_dir: "/tmp".into(),
            tty: true,
            ..Default::default()
        };
        let p = exec_process(&c, &cfg).unwrap();
        assert!(p.get("capabilities").is_none());
        assert_eq!(p["args"], json!(["sh", "-c", "env"]));
        assert_eq!(p["env"], json!(["PATH=/bin", "A=2", "B=3"]));
        assert_eq!(p["cwd"], "/tmp");
        assert_eq!(p["terminal"], true);
        assert_eq!(p["user"]["uid"], 0);
    }

    #[test]
    fn privileged_exec_gets_every_capability() {
        let c = container_with(json!({"process": {
            "args": ["sleep", "1"], "cwd": "/",
            "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN"]}
        }}));
        let mut cfg = ExecConfig {
            cmd: Some(vec!["id".into()]),
            ..Default::default()
        };
        let p = exec_process(&c, &cfg).unwrap();
        assert_eq!(p["capabilities"]["effective"], json!(["CAP_CHOWN"]));
        cfg.privileged = true;
        let p = exec_process(&c, &cfg).unwrap();
        let all = json!(crate::runspec::privileged_caps());
        for set in ["bounding", "effective", "permitted"] {
            assert_eq!(p["capabilities"][set], all, "{set}");
        }
    }

    #[test]
    fn exec_ids_are_64_hex_and_valid_task_ids() {
        let id = new_id();
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        crate::identifiers::validate(&id).unwrap();
    }
}
