//! `containerd.services.tasks.v1.Tasks` over the task manager (`crate::tasks`).

use std::path::PathBuf;

use berth_proto::containerd::events as ev;
use berth_proto::containerd::services::tasks::v1 as pb;
use berth_proto::containerd::services::tasks::v1::tasks_server::Tasks;
use berth_proto::containerd::v1::types::{Process, ProcessInfo, Status as PStatus};
use berth_store::snapshots::Mount;
use tonic::{Request, Response, Status};

use super::events::{any, publish};
use crate::daemon::errors::join_error;
use crate::daemon::meta::{ctx, timestamp};
use crate::daemon::state::State;
use crate::tasks::bundle::{self, CreateTask, Exit};
use crate::tasks::{shim, Bundle, TaskError, TaskInfo};

/// The tasks service.
pub struct TasksService {
    state: State,
    runtime: PathBuf,
    shim: PathBuf,
    /// The init `--init` containers get (`crate::tasks::init`).
    init: PathBuf,
}

fn status(e: TaskError) -> Status {
    match e {
        TaskError::NotFound(m) => Status::not_found(m),
        TaskError::AlreadyExists(m) => Status::already_exists(m),
        TaskError::FailedPrecondition(m) => Status::failed_precondition(m),
        TaskError::InvalidArgument(m) => Status::invalid_argument(m),
        TaskError::Timeout(m) => {
            tracing::warn!(error = %m, "task operation timed out");
            Status::deadline_exceeded(m)
        }
        TaskError::Internal(m) => {
            tracing::warn!(error = %m, "task operation failed");
            Status::internal(m)
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::tasks::Result<T> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(join_error)?
        .map_err(status)
}

/// A string field of a protobuf message, by number (runc's shim options carry `binary_name` = 6
/// and `root` = 7); enough to read those two without the message's definition.
fn proto_string_field(mut b: &[u8], want: u64) -> Option<String> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&x, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(x & 0x7f) << (7 * i);
            if x & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(&mut b)?;
            }
            1 => b = b.get(8..)?,
            5 => b = b.get(4..)?,
            2 => {
                let n = varint(&mut b)? as usize;
                let v = b.get(..n)?;
                if field == want {
                    return String::from_utf8(v.to_vec()).ok();
                }
                b = &b[n..];
            }
            _ => return None,
        }
    }
    None
}

impl TasksService {
    /// The service; the runtime defaults to berthd's `--runtime` (config `runtime`), else
    /// `$BERTH_RUNTIME`, else `berth-runc` next to berthd (or on PATH); the supervisor to
    /// `$BERTH_SHIM` or `berth-shim` likewise. Starts watching the tasks a previous berthd left
    /// running, to publish their exits.
    pub fn new(state: State) -> TasksService {
        let svc = TasksService::new_quiet(state);
        tracing::info!(runtime = %svc.runtime.display(), "default runtime");
        svc.reconnect();
        svc
    }

    /// The service for a front that calls it in-process (the Docker API): the same, without
    /// watching the tasks a previous berthd left (the gRPC instance does that).
    pub fn in_process(state: State) -> TasksService {
        TasksService::new_quiet(state)
    }

    fn new_quiet(state: State) -> TasksService {
        let runtime = match state.default_runtime() {
            Some(r) if r.contains('/') => PathBuf::from(r),
            Some(r) => crate::tasks::helper_binary("BERTH_RUNTIME_UNUSED", r),
            None => crate::tasks::helper_binary("BERTH_RUNTIME", "berth-runc"),
        };
        TasksService {
            runtime,
            shim: crate::tasks::helper_binary("BERTH_SHIM", "berth-shim"),
            init: crate::tasks::init::binary(state.root()),
            state,
        }
    }

    fn reconnect(&self) {
        let base = self.state.state_dir().join("tasks");
        let Ok(nss) = std::fs::read_dir(&base) else {
            return;
        };
        for ns in nss.flatten() {
            let Ok(ids) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            let nsname = ns.file_name().to_string_lossy().into_owned();
            for id in ids.flatten() {
                let b = Bundle { dir: id.path() };
                if let Ok(info) = b.info() {
                    tracing::info!(namespace = %nsname, id = %info.id, "found task");
                    watch_oom(nsname.clone(), b.clone());
                    watch_exit(nsname.clone(), b, info.pid);
                }
            }
        }
    }

    fn bundle(&self, ns: &str, id: &str) -> Result<Bundle, Status> {
        crate::identifiers::validate(id)
            .map_err(|e| Status::invalid_argument(format!("container id: {e}")))?;
        Ok(Bundle::new(self.state.state_dir(), ns, id))
    }

    /// The runtime binary for a container: a path or a known binary name as the runtime name,
    /// else the options' `binary_name`, else the daemon's default.
    fn runtime_for(
        &self,
        name: &str,
        options: Option<&berth_store::metadata::AnyValue>,
    ) -> PathBuf {
        if name.starts_with('/') {
            return PathBuf::from(name);
        }
        if matches!(name, "berth-runc" | "runc" | "crun") {
            return crate::tasks::helper_binary("BERTH_RUNTIME_UNUSED", name);
        }
        if let Some(bin) = options
            .and_then(|o| proto_string_field(&o.value, 6))
            .filter(|s| !s.is_empty())
        {
            return PathBuf::from(bin);
        }
        self.runtime.clone()
    }
}

/// Waits (in the background) for a task's init process and publishes `/tasks/exit`.
fn watch_exit(ns: String, b: Bundle, pid: u32) {
    tokio::spawn(async move {
        let exit = match shim::request(&b.dir, "wait ").await {
            Ok(r) => Exit::parse(&r),
            Err(_) => b.exit(""),
        };
        if let Some(exit) = exit {
            publish(
                &ns,
                "/tasks/exit",
                any(
                    "TaskExit",
                    &ev::TaskExit {
                        container_id: b.id(),
                        id: b.id(),
                        pid,
                        exit_status: exit.code,
                        exited_at: Some(timestamp(exit.at)),
                    },
                ),
            );
        }
    });
}

/// Publishes `/tasks/oom` (in the background) each time the task's supervisor sees the OOM
/// killer in the container's memory cgroup, until the init process ends. Kills from before this
/// call (a restarted berthd) are not published again.
fn watch_oom(ns: String, b: Bundle) {
    tokio::spawn(async move {
        let count = |reply: &str| {
            reply
                .strip_prefix("oom ")
                .and_then(|n| n.parse::<u64>().ok())
        };
        let Some(mut seen) = shim::request(&b.dir, "oom")
            .await
            .ok()
            .and_then(|r| count(&r))
        else {
            return;
        };
        while let Ok(reply) = shim::request(&b.dir, &format!("oom {seen}")).await {
            let Some(now) = count(&reply) else { return };
            for _ in seen..now {
                publish(
                    &ns,
                    "/tasks/oom",
                    any(
                        "TaskOOM",
                        &ev::TaskOom {
                            container_id: b.id(),
                        },
                    ),
                );
            }
            seen = now;
        }
    });
}

/// A process's status: exited (from the exit file) or the runtime's view.
fn process(b: &Bundle, info: &TaskInfo, exec_id: &str) -> Result<Process, TaskError> {
    let mut p = Process {
        container_id: info.id.clone(),
        id: if exec_id.is_empty() {
            info.id.clone()
        } else {
            exec_id.to_string()
        },
        pid: info.pid,
        stdin: info.stdin.clone(),
        stdout: info.stdout.clone(),
        stderr: info.stderr.clone(),
        terminal: info.terminal,
        ..Process::default()
    };
    if !exec_id.is_empty() {
        if !b.has_exec(exec_id) {
            return Err(TaskError::NotFound(format!(
                "process {exec_id:?} not found in task {}",
                info.id
            )));
        }
        p.pid = b.exec_pid(exec_id).unwrap_or(0);
    }
    if let Some(exit) = b.exit(exec_id) {
        p.status = PStatus::Stopped as i32;
        p.exit_status = exit.code;
        p.exited_at = Some(timestamp(exit.at));
        return Ok(p);
    }
    if !exec_id.is_empty() {
        p.status = if p.pid == 0 {
            PStatus::Created
        } else {
            PStatus::Running
        } as i32;
        return Ok(p);
    }
    let st = match b.runtime(info).state(&info.id) {
        Ok((s, _)) => s,
        Err(_) => "stopped".to_string(),
    };
    p.status = match st.as_str() {
        "created" => PStatus::Created,
        "running" => PStatus::Running,
        "paused" => PStatus::Paused,
        "pausing" => PStatus::Pausing,
        "stopped" => PStatus::Stopped,
        _ => PStatus::Unknown,
    } as i32;
    Ok(p)
}

fn store_mount(m: berth_proto::containerd::types::Mount) -> Mount {
    Mount {
        kind: m.r#type,
        source: m.source,
        target: m.target,
        options: m.options,
    }
}

#[tonic::async_trait]
impl Tasks for TasksService {
    async fn create(
        &self,
        req: Request<pb::CreateTaskRequest>,
    ) -> Result<Response<pb::CreateTaskResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let b = self.bundle(&c.namespace, &r.container_id)?;
        if r.checkpoint.is_some() {
            return Err(Status::unimplemented("checkpoint restore is not supported"));
        }
        let store = self.state.store().clone();
        let (c2, id) = (c.clone(), r.container_id.clone());
        let rec = crate::daemon::errors::blocking(move || store.container(&c2, &id)).await?;
        let spec = rec.spec.as_ref().ok_or_else(|| {
            Status::failed_precondition(format!("container {:?} has no spec", rec.id))
        })?;
        let mut spec: serde_json::Value = serde_json::from_slice(&spec.value).map_err(|e| {
            Status::invalid_argument(format!("container {:?}: spec is not JSON: {e}", rec.id))
        })?;
        // `--init`: berthd's init, mounted where the command expects it.
        crate::tasks::init::apply(&mut spec, &self.init).map_err(status)?;
        // Networks the container asked for (berth run's labels): its namespace, addresses,
        // ports and resolver files, before the runtime sees the spec.
        let plan =
            crate::networks::Plan::from_labels(&rec.labels).map_err(crate::networks::status)?;
        let attached = match plan {
            Some(plan) => {
                let (nets, c2, id) = (self.state.networks().clone(), c.clone(), rec.id.clone());
                let (s2, attached) = tokio::task::spawn_blocking(move || {
                    let mut spec = spec;
                    nets.attach(&c2, &id, &plan, &mut spec).map(|a| (spec, a))
                })
                .await
                .map_err(join_error)?
                .map_err(crate::networks::status)?;
                spec = s2;
                attached.is_some()
            }
            None => false,
        };
        let detach_on_error =
            move |nets: std::sync::Arc<crate::networks::Networks>, ns: String, id: String| {
                if attached {
                    if let Err(e) = nets.detach(&ns, &id) {
                        tracing::warn!("undoing the networks of {id}: {e}");
                    }
                }
            };
        let mut rootfs: Vec<Mount> = r.rootfs.into_iter().map(store_mount).collect();
        if rootfs.is_empty() && !rec.snapshot_key.is_empty() {
            let store = self.state.store().clone();
            let (c2, key) = (c.clone(), rec.snapshot_key.clone());
            rootfs = crate::daemon::errors::blocking(move || store.snapshotter().mounts(&c2, &key))
                .await?;
        }
        let runtime = if r.runtime_path.is_empty() {
            self.runtime_for(&rec.runtime_name, rec.runtime_options.as_ref())
        } else {
            PathBuf::from(&r.runtime_path)
        };
        let runtime_root = self.state.state_dir().join("runtime").join(&c.namespace);
        let shim_bin = self.shim.clone();
        // `log:` asks for berth's log file: the shim keeps the output, size-bounded, at a path
        // of berthd's, recorded on the container for `berth logs`.
        let log = crate::tasks::log_path(self.state.state_dir(), &c.namespace, &rec.id);
        let mut stdio = [r.stdin.clone(), r.stdout.clone(), r.stderr.clone()];
        let mut logging = false;
        for s in stdio.iter_mut().skip(1) {
            if s == crate::tasks::LOG_STDIO {
                *s = format!("{}{}", crate::tasks::LOG_STDIO, log.display());
                logging = true;
            }
        }
        if logging {
            let mut rec2 = rec.clone();
            rec2.labels
                .insert(crate::tasks::LOG_LABEL.into(), log.display().to_string());
            let (store, c2) = (self.state.store().clone(), c.clone());
            crate::daemon::errors::blocking(move || store.container_update(&c2, &rec2)).await?;
        }
        let b2 = b.clone();
        let rootfs2 = rootfs.clone();
        let (nets, ns2, id2) = (
            self.state.networks().clone(),
            c.namespace.clone(),
            rec.id.clone(),
        );
        let info = blocking(move || {
            bundle::create(CreateTask {
                bundle: &b2,
                spec,
                rootfs: &rootfs2,
                stdio,
                terminal: r.terminal,
                runtime,
                runtime_root,
                shim: shim_bin,
            })
        })
        .await;
        let info = match info {
            Ok(info) => info,
            Err(e) => {
                let _ = tokio::task::spawn_blocking(move || detach_on_error(nets, ns2, id2)).await;
                return Err(e);
            }
        };
        publish(
            &c.namespace,
            "/tasks/create",
            any(
                "TaskCreate",
                &ev::TaskCreate {
                    container_id: info.id.clone(),
                    bundle: b.dir.display().to_string(),
                    rootfs: rootfs
                        .iter()
                        .map(|m| berth_proto::containerd::types::Mount {
                            r#type: m.kind.clone(),
                            source: m.source.clone(),
                            target: m.target.clone(),
                            options: m.options.clone(),
                        })
                        .collect(),
                    io: Some(ev::TaskIo {
                        stdin: r.stdin,
                        stdout: r.stdout,
                        stderr: r.stderr,
                        terminal: r.terminal,
                    }),
                    checkpoint: String::new(),
                    pid: info.pid,
                },
            ),
        );
        watch_oom(c.namespace.clone(), b.clone());
        watch_exit(c.namespace.clone(), b, info.pid);
        Ok(Response::new(pb::CreateTaskResponse {
            container_id: info.id,
            pid: info.pid,
        }))
    }

    async fn start(
        &self,
        req: Request<pb::StartRequest>,
    ) -> Result<Response<pb::StartResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let b = self.bundle(&c.namespace, &r.container_id)?;
        let b2 = b.clone();
        let info = blocking(move || b2.info()).await?;
        if r.exec_id.is_empty() {
            let (b2, info2) = (b.clone(), info.clone());
            blocking(move || {
                b2.runtime(&info2)
                    .run(&["start", &info2.id], None)
                    .map(|_| ())
            })
            .await?;
            publish(
                &c.namespace,
                "/tasks/start",
                any(
                    "TaskStart",
                    &ev::TaskStart {
                        container_id: info.id.clone(),
                        pid: info.pid,
                    },
                ),
            );
            return Ok(Response::new(pb::StartResponse { pid: info.pid }));
        }
        if !b.has_exec(&r.exec_id) {
            return Err(Status::not_found(format!(
                "process {:?} not found in task {}",
                r.exec_id, info.id
            )));
        }
        let reply = shim::request(&b.dir, &format!("exec {}", r.exec_id))
            .await
            .map_err(|e| Status::unavailable(format!("task {}: supervisor: {e}", info.id)))?;
        let pid: u32 = shim::ok(&reply)
            .map_err(status)?
            .parse()
            .map_err(|e| Status::internal(format!("supervisor replied {reply:?}: {e}")))?;
        publish(
            &c.namespace,
            "/tasks/exec-started",
            any(
                "TaskExecStarted",
                &ev::TaskExecStarted {
                    container_id: info.id.clone(),
                    exec_id: r.exec_id.clone(),
                    pid,
                },
            ),
        );
        let (ns, b2, id, exec_id) = (c.namespace.clone(), b.clone(), info.id, r.exec_id);
        tokio::spawn(async move {
            if let Ok(line) = shim::request(&b2.dir, &format!("wait {exec_id}")).await {
                if let Some(exit) = Exit::parse(&line) {
                    publish(
                        &ns,
                        "/tasks/exit",
                        any(
                            "TaskExit",
                            &ev::TaskExit {
                                container_id: id,
                                id: exec_id,
                                pid,
                                exit_status: exit.code,
                                exited_at: Some(timestamp(exit.at)),
                            },
                        ),
                    );
                }
            }
        });
        Ok(Response::new(pb::StartResponse { pid }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteTaskRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let c = ctx(&req)?;
        let id = req.into_inner().container_id;
        let b = self.bundle(&c.namespace, &id)?;
        let b2 = b.clone();
        let info = blocking(move || b2.info()).await?;
        let (b2, info2) = (b.clone(), info.clone());
        let p = blocking(move || process(&b2, &info2, "")).await?;
        if p.status != PStatus::Stopped as i32 && p.status != PStatus::Created as i32 {
            return Err(Status::failed_precondition(format!(
                "task {id} must be stopped before deletion: {}",
                PStatus::try_from(p.status)
                    .map(|s| s.as_str_name().to_lowercase())
                    .unwrap_or_default()
            )));
        }
        let (b2, info2) = (b.clone(), info.clone());
        blocking(move || {
            match b2
                .runtime(&info2)
                .run(&["delete", "--force", &info2.id], None)
            {
                Ok(_) | Err(TaskError::NotFound(_)) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await?;
        // The init process is gone now; let the supervisor record it, then stop it.
        let exit = match tokio::time::timeout(
            std::time::Duration::from_secs(5),
            shim::request(&b.dir, "wait "),
        )
        .await
        {
            Ok(Ok(line)) => Exit::parse(&line),
            _ => None,
        }
        .or_else(|| b.exit(""));
        let _ = shim::request(&b.dir, "shutdown").await;
        let b2 = b.clone();
        blocking(move || bundle::remove(&b2)).await?;
        // The container's networks go with its task: addresses, ports, namespace.
        let (nets, ns, id2) = (
            self.state.networks().clone(),
            c.namespace.clone(),
            id.clone(),
        );
        tokio::task::spawn_blocking(move || nets.detach(&ns, &id2))
            .await
            .map_err(join_error)?
            .map_err(crate::networks::status)?;
        let exit = exit.unwrap_or(Exit {
            code: 255,
            at: std::time::SystemTime::now(),
        });
        publish(
            &c.namespace,
            "/tasks/delete",
            any(
                "TaskDelete",
                &ev::TaskDelete {
                    container_id: id.clone(),
                    pid: info.pid,
                    exit_status: exit.code,
                    exited_at: Some(timestamp(exit.at)),
                    id: String::new(),
                },
            ),
        );
        Ok(Response::new(pb::DeleteResponse {
            id,
            pid: info.pid,
            exit_status: exit.code,
            exited_at: Some(timestamp(exit.at)),
        }))
    }

    async fn delete_process(
        &self,
        req: Request<pb::DeleteProcessRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let b = self.bundle(&c.namespace, &r.container_id)?;
        if r.exec_id.is_empty() {
            return Err(Status::invalid_argument("exec_id must be set"));
        }
        let b2 = b.clone();
        let info = blocking(move || b2.info()).await?;
        let (b2, exec_id) = (b.clone(), r.exec_id.clone());
        let p = blocking(move || process(&b2, &info, &exec_id)).await?;
        if p.status == PStatus::Running as i32 {
            return Err(Status::failed_precondition(format!(
                "process {} must be stopped before deletion",
                r.exec_id
            )));
        }
        for ext in ["json", "io", "pid"] {
            let _ = std::fs::remove_file(b.dir.join(format!("exec-{}.{ext}", r.exec_id)));
        }
        Ok(Response::new(pb::DeleteResponse {
            id: r.exec_id,
            pid: p.pid,
            exit_status: p.exit_status,
            exited_at: p.exited_at,
        }))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let b = self.bundle(&c.namespace, &r.container_id)?;
        let p = blocking(move || {
            let info = b.info()?;
            process(&b, &info, &r.exec_id)
        })
        .await?;
        Ok(Response::new(pb::GetResponse { process: Some(p) }))
    }

    async fn list(
        &self,
        req: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let c = ctx(&req)?;
        let dir = crate::tasks::tasks_dir(self.state.state_dir(), &c.namespace);
        let tasks = blocking(move || {
            let mut out = Vec::new();
            let Ok(rd) = std::fs::read_dir(&dir) else {
                return Ok(out);
            };
            for e in rd.flatten() {
                let b = Bundle { dir: e.path() };
                if let Ok(info) = b.info() {
                    out.push(process(&b, &info, "")?);
                }
            }
            out.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(out)
        })
        .await?;
        Ok(Response::new(pb::ListTasksResponse { tasks }))
    }

    async fn kill(&self, req: Request<pb::KillRequest>) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let b = self.bundle(&c.namespace, &r.container_id)?;
        blocking(move || {
            let info = b.info()?;
            if r.exec_id.is_empty() {
                if b.exit("").is_some() {
                    return Err(TaskError::NotFound(format!(
                        "process already finished: task {}",
                        info.id
                    )));
                }
                let sig = r.signal.to_string();
                let mut args = vec!["kill"];
                if r.all {
                    args.push("--all");
                }
                args.push(&info.id);
                args.push(&sig);
                b.runtime(&info).run(&args, None).map(|_| ())
            } else {
                let pid = b.exec_pid(&r.exec_id).ok_or_else(|| {
                    TaskError::NotFound(format!("process {:?} not started", r.exec_id))
                })?;
                if b.exit(&r.exec_id).is_some() {
                    return Err(TaskError::NotFound(format!(
                        "process already finished: {}",
                        r.exec_id
                    )));
                }
                let sig = nix::sys::signal::Signal::try_from(r.signal as i32)
                    .map_err(|e| TaskError::InvalidArgument(format!("signal {}: {e}", r.signal)))?;
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)
                    .map_err(|e| TaskError::Internal(format!("kill {pid}: {e}")))
            }
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn exec(&self, req: Request<pb::ExecProcessRequest>) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let b = self.bundle(&c.namespace, &r.container_id)?;
        crate::identifiers::validate(&r.exec_id)
            .map_err(|e| Status::invalid_argument(format!("exec id: {e}")))?;
        let spec = r
            .spec
            .ok_or_else(|| Status::invalid_argument("exec spec must be set"))?;
        let mut proc: serde_json::Value = serde_json::from_slice(&spec.value)
            .map_err(|e| Status::invalid_argument(format!("exec spec is not JSON: {e}")))?;
        proc["terminal"] = serde_json::Value::Bool(r.terminal);
        let (ns, id, exec_id) = (
            c.namespace.clone(),
            r.container_id.clone(),
            r.exec_id.clone(),
        );
        blocking(move || {
            let info = b.info()?;
            if b.exit("").is_some() {
                return Err(TaskError::FailedPrecondition(format!(
                    "task {} is not running",
                    info.id
                )));
            }
            if b.has_exec(&r.exec_id) {
                return Err(TaskError::AlreadyExists(format!(
                    "id {}: already exists",
                    r.exec_id
                )));
            }
            std::fs::write(
                b.dir.join(format!("exec-{}.io", r.exec_id)),
                format!(
                    "{}\n{}\n{}\n{}",
                    r.stdin,
                    r.stdout,
                    r.stderr,
                    if r.terminal { "terminal\n" } else { "" }
                ),
            )
            .and_then(|_| {
                std::fs::write(
                    b.dir.join(format!("exec-{}.json", r.exec_id)),
                    proc.to_string(),
                )
            })
            .map_err(|e| TaskError::Internal(format!("writing the exec spec: {e}")))
        })
        .await?;
        publish(
            &ns,
            "/tasks/exec-added",
            any(
                "TaskExecAdded",
                &ev::TaskExecAdded {
                    container_id: id,
                    exec_id,
                },
            ),
        );
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, req: Request<pb::ResizePtyRequest>) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let b = self.bundle(&c.namespace, &r.container_id)?;
        let b2 = b.clone();
        blocking(move || b2.info()).await?;
        if r.width > u32::from(u16::MAX) || r.height > u32::from(u16::MAX) {
            return Err(Status::invalid_argument(format!(
                "terminal size {}x{}: at most 65535 each way",
                r.width, r.height
            )));
        }
        let line = format!("resize {} {} {}", r.width, r.height, r.exec_id);
        let reply = shim::request(&b.dir, &line).await.map_err(|e| {
            Status::unavailable(format!("task {}: supervisor: {e}", r.container_id))
        })?;
        shim::ok(&reply).map_err(|e| match e {
            TaskError::Internal(m) if m.contains("no terminal") => {
                Status::failed_precondition(format!("task {}: {m}", r.container_id))
            }
            e => status(e),
        })?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, req: Request<pb::CloseIoRequest>) -> Result<Response<()>, Status> {
        // Without a terminal the process holds the stdin FIFO itself, and the client closing its
        // end is the end of input; with one, the supervisor stops relaying.
        let c = ctx(&req)?;
        let r = req.into_inner();
        let b = self.bundle(&c.namespace, &r.container_id)?;
        let b2 = b.clone();
        blocking(move || b2.info()).await?;
        if r.stdin {
            let reply = shim::request(&b.dir, &format!("closein {}", r.exec_id))
                .await
                .map_err(|e| {
                    Status::unavailable(format!("task {}: supervisor: {e}", r.container_id))
                })?;
            shim::ok(&reply).map_err(status)?;
        }
        Ok(Response::new(()))
    }

    async fn pause(&self, req: Request<pb::PauseTaskRequest>) -> Result<Response<()>, Status> {
        self.freeze(req.metadata(), &req.get_ref().container_id, true)
            .await
    }

    async fn resume(&self, req: Request<pb::ResumeTaskRequest>) -> Result<Response<()>, Status> {
        self.freeze(req.metadata(), &req.get_ref().container_id, false)
            .await
    }

    async fn list_pids(
        &self,
        req: Request<pb::ListPidsRequest>,
    ) -> Result<Response<pb::ListPidsResponse>, Status> {
        let c = ctx(&req)?;
        let b = self.bundle(&c.namespace, &req.get_ref().container_id)?;
        let pids = blocking(move || {
            let info = b.info()?;
            let out = b
                .runtime(&info)
                .run(&["ps", "--format", "json", &info.id], None)?;
            serde_json::from_slice::<Vec<u32>>(&out)
                .map_err(|e| TaskError::Internal(format!("runtime ps: bad JSON: {e}")))
        })
        .await?;
        Ok(Response::new(pb::ListPidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo { pid, info: None })
                .collect(),
        }))
    }

    async fn checkpoint(
        &self,
        _req: Request<pb::CheckpointTaskRequest>,
    ) -> Result<Response<pb::CheckpointTaskResponse>, Status> {
        Err(Status::unimplemented("checkpoint is not supported"))
    }

    async fn update(&self, req: Request<pb::UpdateTaskRequest>) -> Result<Response<()>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let b = self.bundle(&c.namespace, &r.container_id)?;
        let res = r
            .resources
            .ok_or_else(|| Status::invalid_argument("resources must be set"))?;
        serde_json::from_slice::<serde_json::Value>(&res.value)
            .map_err(|e| Status::invalid_argument(format!("resources are not JSON: {e}")))?;
        blocking(move || {
            let info = b.info()?;
            b.runtime(&info)
                .run(&["update", "--resources", "-", &info.id], Some(&res.value))
                .map(|_| ())
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn metrics(
        &self,
        req: Request<pb::MetricsRequest>,
    ) -> Result<Response<pb::MetricsResponse>, Status> {
        let c = ctx(&req)?;
        let filter = berth_store::filters::Filter::parse(&req.into_inner().filters)
            .map_err(|e| Status::invalid_argument(format!("filters: {e}")))?;
        let dir = crate::tasks::tasks_dir(self.state.state_dir(), &c.namespace);
        let metrics = blocking(move || {
            let mut out = Vec::new();
            let Ok(rd) = std::fs::read_dir(&dir) else {
                return Ok(out);
            };
            for e in rd.flatten() {
                let b = Bundle { dir: e.path() };
                let Ok(info) = b.info() else { continue };
                if !filter.matches(&IdField(&info.id)) || b.exit("").is_some() {
                    continue;
                }
                out.push(berth_proto::containerd::types::Metric {
                    timestamp: Some(timestamp(std::time::SystemTime::now())),
                    id: info.id.clone(),
                    data: Some(prost_types::Any {
                        type_url: crate::tasks::metrics::TYPE_URL.to_string(),
                        value: crate::tasks::metrics::collect(
                            std::path::Path::new("/sys/fs/cgroup"),
                            info.pid,
                        ),
                    }),
                });
            }
            Ok(out)
        })
        .await?;
        Ok(Response::new(pb::MetricsResponse { metrics }))
    }

    async fn wait(
        &self,
        req: Request<pb::WaitRequest>,
    ) -> Result<Response<pb::WaitResponse>, Status> {
        let c = ctx(&req)?;
        let r = req.into_inner();
        let b = self.bundle(&c.namespace, &r.container_id)?;
        let b2 = b.clone();
        let info = blocking(move || b2.info()).await?;
        if !r.exec_id.is_empty() && !b.has_exec(&r.exec_id) {
            return Err(Status::not_found(format!(
                "process {:?} not found in task {}",
                r.exec_id, r.container_id
            )));
        }
        let exit = match shim::request(&b.dir, &format!("wait {}", r.exec_id)).await {
            // The supervisor is gone (killed) and recorded no exit: the runtime still knows
            // whether the container runs, so wait on that; its exit code is lost (255, as
            // containerd reports an unknown one).
            Err(_) if r.exec_id.is_empty() && b.exit("").is_none() => {
                loop {
                    let (b2, info2) = (b.clone(), info.clone());
                    let st = blocking(move || b2.runtime(&info2).state(&info2.id)).await;
                    match st {
                        Ok((s, _)) if s != "stopped" => {
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await
                        }
                        _ => break,
                    }
                }
                b.exit("").unwrap_or(Exit {
                    code: 255,
                    at: std::time::SystemTime::now(),
                })
            }
            Ok(line) => match Exit::parse(&line) {
                Some(e) => e,
                None => {
                    return Err(shim::ok(&line).map_err(status).err().unwrap_or_else(|| {
                        Status::internal(format!("supervisor replied {line:?}"))
                    }))
                }
            },
            Err(e) => b.exit(&r.exec_id).ok_or_else(|| {
                Status::unavailable(format!(
                    "task {}: supervisor unreachable and no exit recorded: {e}",
                    r.container_id
                ))
            })?,
        };
        Ok(Response::new(pb::WaitResponse {
            exit_status: exit.code,
            exited_at: Some(timestamp(exit.at)),
        }))
    }
}

/// A task seen by metrics filters: only `id`.
struct IdField<'a>(&'a str);

impl berth_store::filters::Adaptor for IdField<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        (path.first().map(String::as_str) == Some("id")).then(|| self.0.to_string())
    }
}

impl TasksService {
    async fn freeze(
        &self,
        md: &tonic::metadata::MetadataMap,
        id: &str,
        pause: bool,
    ) -> Result<Response<()>, Status> {
        let ns = md
            .get(crate::daemon::meta::NAMESPACE_KEY)
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Status::failed_precondition("namespace is required"))?
            .to_string();
        crate::identifiers::validate(&ns)
            .map_err(|e| Status::invalid_argument(format!("namespace validation: {e}")))?;
        let b = self.bundle(&ns, id)?;
        let verb = if pause { "pause" } else { "resume" };
        blocking(move || {
            let info = b.info()?;
            b.runtime(&info).run(&[verb, &info.id], None).map(|_| ())
        })
        .await?;
        let (topic, ev) = if pause {
            (
                "/tasks/paused",
                any(
                    "TaskPaused",
                    &ev::TaskPaused {
                        container_id: id.to_string(),
                    },
                ),
            )
        } else {
            (
                "/tasks/resumed",
                any(
                    "TaskResumed",
                    &ev::TaskResumed {
                        container_id: id.to_string(),
                    },
                ),
            )
        };
        publish(&ns, topic, ev);
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_options_binary_name_is_read() {
        // field 6 (binary_name) = "/usr/bin/crun", field 1 (varint) = 1 before it.
        let mut b = vec![0x08, 0x01, (6 << 3) | 2, 13];
        b.extend_from_slice(b"/usr/bin/crun");
        assert_eq!(proto_string_field(&b, 6).as_deref(), Some("/usr/bin/crun"));
        assert_eq!(proto_string_field(&b, 7), None);
        assert_eq!(proto_string_field(&[0xff], 6), None);
    }
}
