//! Docker's containers over the engine: what Docker knows of a container beyond the
//! containerd-style record (its name, the create request, start and exit times, restart
//! count) kept in the record's `io.berth.docker` extension, and the lifecycle: start (a task
//! whose output goes to berth's log file), the monitor that sees each exit and applies
//! AutoRemove and the restart policy, stop, kill and remove.
//!
//! Tasks are made by the task service's own methods, called in-process (the gRPC wire is
//! not used): a container made here is the same to `berth` and `ctr` as one made with them.
//! Exits are announced to waiters (`wait`, `attach`, `logs -f`) through one watch channel per
//! container, in memory; what must survive berthd (exit code, times, restart count, whether
//! it was stopped by hand) is in the record.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use berth_proto::containerd::services::tasks::v1 as tpb;
use berth_proto::containerd::services::tasks::v1::tasks_server::Tasks;
use berth_proto::containerd::v1::types::Status as PStatus;
use berth_store::metadata::{AnyValue, Container};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use super::errors::ApiError;
use super::{blocking, Api, NAMESPACE};

/// The record extension holding [`Meta`].
pub const META_EXTENSION: &str = "io.berth.docker";
/// The record label holding the container's Docker name (for `berth containers ls`).
pub const NAME_LABEL: &str = "io.berth.docker.name";
const META_TYPE: &str = "berth.io/docker/v1/Meta";

/// What Docker knows of a container beyond the record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Meta {
    /// The name, without Docker's leading `/`.
    pub name: String,
    /// Creation time, RFC 3339.
    pub created: String,
    /// The Config as inspect shows it (the request merged with the image's).
    pub config: Value,
    /// The HostConfig as given.
    pub host_config: Value,
    /// Endpoint settings asked for, by network.
    pub endpoints: Value,
    /// The image ID (config digest).
    pub image_id: String,
    /// The process: path and arguments.
    pub path: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Last start, RFC 3339 (empty: never started).
    pub started_at: String,
    /// Last exit, RFC 3339.
    pub finished_at: String,
    /// Last exit code.
    pub exit_code: i64,
    /// Restarts by the restart policy.
    pub restart_count: u64,
    /// Stopped by a user (stop, kill): the restart policy leaves it alone.
    pub manually_stopped: bool,
    /// Anonymous volumes made for it (removed with `rm -v` and AutoRemove).
    pub anonymous_volumes: Vec<String>,
    /// Why the last start failed.
    pub error: String,
    /// The health check's state (none: the container has no health check).
    pub health: Option<super::health::Health>,
}

impl Meta {
    /// The meta of a record (an empty one if the record has none).
    pub fn of(c: &Container) -> Meta {
        c.extensions
            .get(META_EXTENSION)
            .and_then(|a| serde_json::from_slice(&a.value).ok())
            .unwrap_or_default()
    }

    /// Stores it into the record.
    pub fn put(&self, c: &mut Container) {
        c.extensions.insert(
            META_EXTENSION.into(),
            AnyValue {
                type_url: META_TYPE.into(),
                value: serde_json::to_vec(self).unwrap_or_default(),
            },
        );
    }

    /// The restart policy's name ("no" when none).
    pub fn restart_policy(&self) -> (&str, u64) {
        let p = &self.host_config["RestartPolicy"];
        let name = p["Name"].as_str().filter(|s| !s.is_empty()).unwrap_or("no");
        (name, p["MaximumRetryCount"].as_u64().unwrap_or(0))
    }

    /// Whether the container has a terminal.
    pub fn tty(&self) -> bool {
        self.config["Tty"].as_bool().unwrap_or(false)
    }

    /// Whether the container's process has a stdin berthd writes (`docker run -i`).
    pub fn open_stdin(&self) -> bool {
        self.config["OpenStdin"].as_bool().unwrap_or(false)
    }

    /// Whether the first attach that ends closes the stdin (`docker run -i` attached).
    pub fn stdin_once(&self) -> bool {
        self.config["StdinOnce"].as_bool().unwrap_or(false)
    }
}

/// What waiters learn about a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exits {
    /// Exits seen since berthd started.
    pub count: u64,
    /// The last exit code.
    pub code: i64,
    /// Starts seen since berthd started.
    pub starts: u64,
    /// The container is gone.
    pub removed: bool,
}

/// Exit announcements, one channel per container.
#[derive(Default)]
pub struct Notifier {
    chans: Mutex<HashMap<String, watch::Sender<Exits>>>,
}

impl Notifier {
    /// The channel of `id` (made on first use).
    pub fn get(&self, id: &str) -> watch::Sender<Exits> {
        let mut m = self.chans.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(id.to_string())
            .or_insert_with(|| watch::channel(Exits::default()).0)
            .clone()
    }

    fn forget(&self, id: &str) {
        let mut m = self.chans.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(id);
    }
}

/// A container's state as Docker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunState {
    /// created, running, paused, restarting, exited, dead.
    pub status: &'static str,
    /// The init's pid when running.
    pub pid: u32,
}

impl RunState {
    /// Running or paused.
    pub fn running(&self) -> bool {
        matches!(self.status, "running" | "paused")
    }
}

/// A request to the task service in the Docker namespace.
pub fn rq<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        crate::daemon::meta::NAMESPACE_KEY,
        tonic::metadata::MetadataValue::from_static(NAMESPACE),
    );
    r
}

/// A task service error as Docker's answer.
pub fn task_error(what: &str, s: tonic::Status) -> ApiError {
    use tonic::Code;
    let msg = format!("{what}: {}", s.message());
    match s.code() {
        Code::NotFound => ApiError::not_found(msg),
        Code::AlreadyExists | Code::FailedPrecondition => ApiError::conflict(msg),
        Code::InvalidArgument => ApiError::bad_request(msg),
        _ => ApiError::internal(msg),
    }
}

/// Docker's 404 for a container.
pub fn no_such_container(name: &str) -> ApiError {
    ApiError::not_found(format!("No such container: {name}"))
}

fn now() -> String {
    super::rfc3339(std::time::SystemTime::now())
}

impl Api {
    /// Every Docker container record of the namespace.
    pub async fn containers(&self) -> Result<Vec<Container>, ApiError> {
        let (store, ctx) = (self.state.store().clone(), self.ctx());
        blocking(move || Ok(store.container_list(&ctx, &[])?)).await
    }

    /// The container `name` names as dockerd finds it: full ID, name (with or without its
    /// `/`), then a unique ID prefix.
    pub async fn find_container(&self, name: &str) -> Result<Container, ApiError> {
        let all = self.containers().await?;
        if let Some(c) = all.iter().find(|c| c.id == name) {
            return Ok(c.clone());
        }
        let bare = name.strip_prefix('/').unwrap_or(name);
        if let Some(c) = all.iter().find(|c| Meta::of(c).name == bare) {
            return Ok(c.clone());
        }
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hits: Vec<&Container> = all.iter().filter(|c| c.id.starts_with(name)).collect();
            match hits.len() {
                1 => return Ok(hits[0].clone()),
                0 => {}
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "multiple IDs found with provided prefix: {name}"
                    )))
                }
            }
        }
        Err(no_such_container(name))
    }

    /// Reads, changes and writes a container's meta.
    pub async fn update_meta(
        &self,
        id: &str,
        f: impl FnOnce(&mut Meta) + Send + 'static,
    ) -> Result<Meta, ApiError> {
        let (store, ctx, id) = (self.state.store().clone(), self.ctx(), id.to_string());
        blocking(move || {
            let mut c = store.container(&ctx, &id)?;
            let mut m = Meta::of(&c);
            f(&mut m);
            m.put(&mut c);
            store.container_update(&ctx, &c)?;
            Ok(m)
        })
        .await
    }

    /// The container's state from its task (none: created or exited).
    pub async fn run_state(&self, c: &Container) -> RunState {
        let got = self
            .tasks
            .get(rq(tpb::GetRequest {
                container_id: c.id.clone(),
                exec_id: String::new(),
            }))
            .await;
        let restarting = {
            let r = self.restarting.lock().unwrap_or_else(|e| e.into_inner());
            r.contains(&c.id)
        };
        match got.ok().and_then(|r| r.into_inner().process) {
            Some(p) if p.status == PStatus::Running as i32 => RunState {
                status: "running",
                pid: p.pid,
            },
            Some(p)
                if p.status == PStatus::Paused as i32 || p.status == PStatus::Pausing as i32 =>
            {
                RunState {
                    status: "paused",
                    pid: p.pid,
                }
            }
            _ if restarting => RunState {
                status: "restarting",
                pid: 0,
            },
            Some(p) if p.status == PStatus::Created as i32 => RunState {
                status: "created",
                pid: p.pid,
            },
            Some(_) => RunState {
                status: "exited",
                pid: 0,
            },
            None if Meta::of(c).started_at.is_empty() => RunState {
                status: "created",
                pid: 0,
            },
            None => RunState {
                status: "exited",
                pid: 0,
            },
        }
    }

    /// Starts container `id`'s process: a task whose output goes to berth's log file, then
    /// the monitor that sees it exit.
    pub async fn start_task(&self, c: &Container) -> Result<(), ApiError> {
        let id = c.id.clone();
        let meta = Meta::of(c);
        let tty = meta.tty();
        // A stopped task left behind (an exit berthd did not see) goes first.
        let _ = self
            .tasks
            .delete(rq(tpb::DeleteTaskRequest {
                container_id: id.clone(),
            }))
            .await;
        let log = crate::tasks::LOG_STDIO.to_string();
        let stdin = if meta.open_stdin() {
            self.stdins.for_start(self.state.state_dir(), &id).await?
        } else {
            String::new()
        };
        let created = self
            .tasks
            .create(rq(tpb::CreateTaskRequest {
                container_id: id.clone(),
                stdin,
                stdout: log.clone(),
                stderr: if tty { String::new() } else { log },
                terminal: tty,
                ..Default::default()
            }))
            .await;
        if let Err(s) = created {
            self.stdins.exited(&id).await;
            return Err(start_error(&id, s));
        }
        if meta.open_stdin() {
            self.stdins.started(self, &id).await;
        }
        if let Err(s) = self
            .tasks
            .start(rq(tpb::StartRequest {
                container_id: id.clone(),
                exec_id: String::new(),
            }))
            .await
        {
            let _ = self
                .tasks
                .delete(rq(tpb::DeleteTaskRequest {
                    container_id: id.clone(),
                }))
                .await;
            self.stdins.exited(&id).await;
            return Err(start_error(&id, s));
        }
        let meta = self
            .update_meta(&id, |m| {
                m.started_at = now();
                m.manually_stopped = false;
                m.error.clear();
                super::health::reset(m);
            })
            .await?;
        self.notifier.get(&id).send_modify(|e| e.starts += 1);
        self.volume_events(c, "mount");
        self.network_events(&id, &self.joined_networks(&id), "connect");
        self.events.container(&id, &meta, "start", &[]);
        super::health::watch(self, &id, &meta);
        self.monitor(id);
        Ok(())
    }

    /// Watches a running container: on exit, records it, deletes the task, tells waiters,
    /// then removes the container (AutoRemove) or restarts it (its restart policy).
    pub fn monitor(&self, id: String) {
        let api = self.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let waited = api
                .tasks
                .wait(rq(tpb::WaitRequest {
                    container_id: id.clone(),
                    exec_id: String::new(),
                }))
                .await;
            let code = match waited {
                Ok(r) => i64::from(r.into_inner().exit_status),
                Err(e) => {
                    tracing::warn!(container = %id, error = %e.message(), "docker api: waiting for a container");
                    return;
                }
            };
            api.finish(&id, code, started.elapsed()).await;
        });
    }

    async fn finish(&self, id: &str, code: i64, ran: Duration) {
        // Recorded (and announced) while the task is still there: a removal waits for that
        // (see `remove_container`), so the record and the die event come first.
        let meta = self
            .update_meta(id, move |m| {
                m.exit_code = code;
                m.finished_at = now();
            })
            .await;
        if let Ok(m) = &meta {
            if let Ok(c) = self.find_container(id).await {
                self.volume_events(&c, "unmount");
            }
            self.events
                .container(id, m, "die", &[("exitCode", code.to_string())]);
        }
        // The task's deletion takes it off its networks (dockerd: die, then disconnect).
        let networks = self.joined_networks(id);
        let _ = self
            .tasks
            .delete(rq(tpb::DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await;
        self.network_events(id, &networks, "disconnect");
        self.stdins.exited(id).await;
        self.notifier.get(id).send_modify(|e| {
            e.count += 1;
            e.code = code;
        });
        let Ok(meta) = meta else { return };
        if meta.host_config["AutoRemove"].as_bool() == Some(true) {
            if let Err(e) = self.remove_container(id, true).await {
                tracing::warn!(container = %id, error = %e.message, "docker api: auto-remove");
            }
            return;
        }
        let (policy, max) = meta.restart_policy();
        let again = match policy {
            "always" | "unless-stopped" => !meta.manually_stopped,
            "on-failure" => {
                !meta.manually_stopped && code != 0 && (max == 0 || meta.restart_count < max)
            }
            _ => false,
        };
        if !again {
            return;
        }
        // Docker's back-off: 100 ms doubling per quick exit, reset after 10 s of running.
        let delay = {
            let mut d = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
            let cur = d.entry(id.to_string()).or_insert(Duration::ZERO);
            *cur = if ran >= Duration::from_secs(10) || cur.is_zero() {
                Duration::from_millis(100)
            } else {
                (*cur * 2).min(Duration::from_secs(60))
            };
            *cur
        };
        self.set_restarting(id, true);
        tokio::time::sleep(delay).await;
        self.set_restarting(id, false);
        let Ok(c) = self.find_container(id).await else {
            return;
        };
        if Meta::of(&c).manually_stopped {
            return;
        }
        let _ = self.update_meta(id, |m| m.restart_count += 1).await;
        if let Err(e) = self.start_task(&c).await {
            tracing::warn!(container = %id, error = %e.message, "docker api: restart failed");
            let msg = e.message.clone();
            let _ = self.update_meta(id, move |m| m.error = msg).await;
        }
    }

    /// The networks (ID, name) container `id`'s task is on, from its attachment.
    fn joined_networks(&self, id: &str) -> Vec<(String, String)> {
        self.state
            .networks()
            .attachment(NAMESPACE, id)
            .map(|a| {
                a.joined
                    .into_iter()
                    .map(|j| (j.network.id, j.network.name))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `connect` or `disconnect` events of container `id` on `networks`, as dockerd emits
    /// them when a container starts or exits.
    fn network_events(&self, id: &str, networks: &[(String, String)], action: &str) {
        for (nid, name) in networks {
            self.events
                .network(nid, name, action, &[("container", id.to_string())]);
        }
    }

    /// `mount` or `unmount` events for the named volumes container `c` uses.
    fn volume_events(&self, c: &Container, action: &str) {
        let Some(list) = c.labels.get(crate::tasks::volumes::LABEL_VOLUMES) else {
            return;
        };
        for v in list.split(',').filter(|v| !v.is_empty()) {
            self.events
                .volume(v, action, &[("container", c.id.clone())]);
        }
    }

    fn set_restarting(&self, id: &str, on: bool) {
        let mut r = self.restarting.lock().unwrap_or_else(|e| e.into_inner());
        if on {
            r.insert(id.to_string());
        } else {
            r.remove(id);
        }
    }

    /// Sends `signal` to the container's init (409 when it is not running).
    pub async fn signal(&self, c: &Container, signal: u32) -> Result<(), ApiError> {
        self.tasks
            .kill(rq(tpb::KillRequest {
                container_id: c.id.clone(),
                exec_id: String::new(),
                signal,
                all: false,
            }))
            .await
            .map_err(|s| {
                if matches!(s.code(), tonic::Code::NotFound) {
                    ApiError::conflict(format!("Container {} is not running", c.id))
                } else {
                    task_error(&format!("killing {}", c.id), s)
                }
            })?;
        self.events.container(
            &c.id,
            &Meta::of(c),
            "kill",
            &[("signal", signal.to_string())],
        );
        Ok(())
    }

    /// Stops a running container: its stop signal, then SIGKILL after `timeout` seconds;
    /// returns when the monitor has seen the exit. Marks it stopped by hand first, so its
    /// restart policy leaves it alone.
    pub async fn stop_container(
        &self,
        c: &Container,
        timeout: Option<i64>,
        signal: Option<u32>,
    ) -> Result<(), ApiError> {
        let meta = self
            .update_meta(&c.id, |m| m.manually_stopped = true)
            .await?;
        let st = self.run_state(c).await;
        if !st.running() {
            return Ok(());
        }
        let mut rx = self.notifier.get(&c.id).subscribe();
        let seen = rx.borrow().count;
        let sig = signal.unwrap_or_else(|| {
            meta.config["StopSignal"]
                .as_str()
                .and_then(|s| parse_signal(s).ok())
                .unwrap_or(15)
        });
        let timeout = timeout
            .or_else(|| meta.config["StopTimeout"].as_i64())
            .unwrap_or(10);
        // A paused container cannot take a signal until it is thawed.
        if st.status == "paused" {
            let _ = self
                .tasks
                .resume(rq(tpb::ResumeTaskRequest {
                    container_id: c.id.clone(),
                }))
                .await;
        }
        let _ = self.signal(c, sig).await;
        let exited = |rx: &mut watch::Receiver<Exits>| {
            let mut rx = rx.clone();
            async move { rx.wait_for(|e| e.count > seen).await.map(|_| ()) }
        };
        let waited = if timeout < 0 {
            exited(&mut rx).await.ok()
        } else {
            tokio::time::timeout(Duration::from_secs(timeout as u64), exited(&mut rx))
                .await
                .ok()
                .and_then(Result::ok)
        };
        if waited.is_none() {
            let _ = self.signal(c, 9).await;
            let _ = tokio::time::timeout(Duration::from_secs(30), exited(&mut rx)).await;
        }
        self.events.container(&c.id, &meta, "stop", &[]);
        Ok(())
    }

    /// Removes a stopped container: its task if one is left, the record, its snapshot, its
    /// log, and with `volumes` the anonymous volumes made for it.
    pub async fn remove_container(&self, id: &str, volumes: bool) -> Result<(), ApiError> {
        // An exit the monitor has not finished yet (a `docker rm` right after a kill: the
        // monitor deletes the task last) is finished first: its die event and record come
        // before the removal.
        let mut rx = self.notifier.get(id).subscribe();
        let seen = rx.borrow().count;
        if crate::tasks::exists(self.state.state_dir(), NAMESPACE, id) {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|e| e.count > seen)).await;
        }
        let _ = self
            .tasks
            .delete(rq(tpb::DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await;
        if crate::tasks::exists(self.state.state_dir(), NAMESPACE, id) {
            return Err(ApiError::conflict(format!(
                "You cannot remove a running container {id}. Stop the container before attempting removal or force remove"
            )));
        }
        let (store, ctx, id2) = (self.state.store().clone(), self.ctx(), id.to_string());
        let meta = blocking(move || {
            let c = store.container(&ctx, &id2)?;
            store.container_delete(&ctx, &id2)?;
            if !c.snapshot_key.is_empty() {
                if let Err(e) = store.snapshotter().remove(&ctx, &c.snapshot_key) {
                    tracing::warn!(container = %id2, error = %e, "docker api: removing a snapshot");
                }
            }
            Ok(Meta::of(&c))
        })
        .await?;
        crate::tasks::remove_logs(self.state.state_dir(), NAMESPACE, id);
        self.stdins.remove(self.state.state_dir(), id);
        self.events.container(id, &meta, "destroy", &[]);
        if volumes {
            let (store, ctx, names) = (
                self.state.store().clone(),
                self.ctx(),
                meta.anonymous_volumes.clone(),
            );
            let gone = blocking(move || {
                let mut gone = Vec::new();
                for n in names {
                    match store.volume_delete(&ctx, &n) {
                        Ok(_) => gone.push(n),
                        Err(e) => {
                            tracing::warn!(volume = %n, error = %e, "docker api: removing a volume")
                        }
                    }
                }
                Ok(gone)
            })
            .await
            .unwrap_or_default();
            for n in gone {
                self.events.volume(&n, "destroy", &[]);
            }
        }
        crate::daemon::services::events::publish(
            NAMESPACE,
            "/containers/delete",
            crate::daemon::services::events::any(
                "ContainerDelete",
                &berth_proto::containerd::events::ContainerDelete { id: id.to_string() },
            ),
        );
        crate::daemon::services::collect_in_background(self.state.clone());
        self.notifier.get(id).send_modify(|e| e.removed = true);
        self.notifier.forget(id);
        {
            let mut b = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
            b.remove(id);
        }
        Ok(())
    }

    /// After berthd starts: image events start to be relayed to Docker's event stream;
    /// running containers get their monitor (and health probes) again; those a crash left
    /// stopped are finished; `always` and `unless-stopped` ones (and `on-failure` ones that
    /// failed) start again unless a user stopped them, as dockerd does at its start.
    pub async fn restore(&self) {
        self.events.relay_images();
        let Ok(all) = self.containers().await else {
            return;
        };
        for c in all {
            if !c.extensions.contains_key(META_EXTENSION) {
                continue;
            }
            let st = self.run_state(&c).await;
            if st.running() {
                super::health::watch(self, &c.id, &Meta::of(&c));
                self.monitor(c.id.clone());
                continue;
            }
            if crate::tasks::exists(self.state.state_dir(), NAMESPACE, &c.id) {
                // Exited while berthd was down.
                let code = self
                    .tasks
                    .delete(rq(tpb::DeleteTaskRequest {
                        container_id: c.id.clone(),
                    }))
                    .await
                    .map(|r| i64::from(r.into_inner().exit_status))
                    .unwrap_or(255);
                let _ = self
                    .update_meta(&c.id, move |m| {
                        m.exit_code = code;
                        m.finished_at = now();
                    })
                    .await;
            }
            let meta = Meta::of(&c);
            if meta.started_at.is_empty() || meta.manually_stopped {
                continue;
            }
            let (policy, _) = meta.restart_policy();
            if matches!(policy, "always" | "unless-stopped") {
                tracing::info!(container = %c.id, name = %meta.name, "docker api: restarting (restart policy)");
                if let Err(e) = self.start_task(&c).await {
                    tracing::warn!(container = %c.id, error = %e.message, "docker api: restart at start-up failed");
                }
            } else if meta.host_config["AutoRemove"].as_bool() == Some(true) {
                let _ = self.remove_container(&c.id, true).await;
            }
        }
    }
}

fn start_error(id: &str, s: tonic::Status) -> ApiError {
    let msg = s.message().to_string();
    // moby resolves the user when it makes the spec at start: a 500 with libcontainer's words.
    if s.code() == tonic::Code::InvalidArgument && crate::tasks::user::is_unknown(&msg) {
        return ApiError::internal(msg);
    }
    // moby: a missing executable is a 400 with the runtime's words.
    if msg.contains("executable file not found") || msg.contains("no such file or directory") {
        return ApiError::bad_request(format!(
            "failed to create shim task: OCI runtime create failed: {msg}: unknown"
        ));
    }
    task_error(&format!("starting container {id}"), s)
}

/// A signal by number or name (`9`, `KILL`, `SIGKILL`).
pub fn parse_signal(s: &str) -> Result<u32, ApiError> {
    if let Ok(n) = s.parse::<u32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|sig| sig as u32)
        .map_err(|_| ApiError::bad_request(format!("Invalid signal: {s}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_number_or_name() {
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("sigterm").unwrap(), 15);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), 10);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
    }

    #[test]
    fn meta_round_trips_through_the_record() {
        let mut c = Container {
            id: "x".into(),
            labels: Default::default(),
            image: String::new(),
            runtime_name: String::new(),
            runtime_options: None,
            spec: None,
            snapshotter: String::new(),
            snapshot_key: String::new(),
            extensions: Default::default(),
            sandbox: String::new(),
            created_at: std::time::SystemTime::UNIX_EPOCH,
            updated_at: std::time::SystemTime::UNIX_EPOCH,
        };
        assert_eq!(Meta::of(&c).name, "");
        let m = Meta {
            name: "web".into(),
            host_config: serde_json::json!({"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3}}),
            ..Default::default()
        };
        m.put(&mut c);
        let back = Meta::of(&c);
        assert_eq!(back.name, "web");
        assert_eq!(back.restart_policy(), ("on-failure", 3));
    }
}
