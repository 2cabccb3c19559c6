//! `berth tasks ls|start|exec|kill|ps|pause|resume|wait|rm|metrics`.

use anyhow::{Context, Result};
use berth_proto::containerd::services::tasks::v1 as pb;
use berth_proto::containerd::services::tasks::v1::tasks_client::TasksClient;
use berth_proto::containerd::v1::types::Status;
use clap::Subcommand;

use super::output::{self, Format};
use super::{rpc_error, Env};

/// Task commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List tasks.
    #[command(visible_alias = "list")]
    Ls,
    /// Start a created task; prints its pid.
    Start {
        /// The container id.
        id: String,
    },
    /// Run another process in a running task; its output is printed and berth exits with its
    /// exit code (127 when the executable does not exist).
    Exec(ExecArgs),
    /// A running task's cgroup statistics: memory, pids, CPU time.
    Metrics {
        /// The container id.
        id: String,
    },
    /// Send a signal (default SIGTERM) to a task's init process (or all its processes).
    Kill {
        /// Signal number or name (TERM, SIGKILL, 9).
        #[arg(short, long, default_value = "SIGTERM")]
        signal: String,
        /// Every process of the container.
        #[arg(short, long)]
        all: bool,
        /// The container id.
        id: String,
    },
    /// The task's processes.
    Ps {
        /// The container id.
        id: String,
    },
    /// Freeze a task.
    Pause {
        /// The container id.
        id: String,
    },
    /// Thaw a task.
    Resume {
        /// The container id.
        id: String,
    },
    /// Wait for a task to exit; berth exits with its code.
    Wait {
        /// The container id.
        id: String,
    },
    /// Delete a stopped task; prints its exit code.
    #[command(visible_alias = "delete")]
    Rm {
        /// The container id.
        id: String,
    },
}

/// `tasks exec` options.
#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// The process's id within the task [default: a random one].
    #[arg(long)]
    exec_id: Option<String>,
    /// Extra environment, KEY=VALUE.
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// Working directory.
    #[arg(long)]
    cwd: Option<String>,
    /// UID[:GID] to run as.
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// Give the process a terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// Pass this process's stdin to it.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// The container id.
    id: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    args: Vec<String>,
}

/// A signal by number or name.
pub fn signal(s: &str) -> Result<u32> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(n);
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    let sig: nix::sys::signal::Signal = name
        .parse()
        .with_context(|| format!("--signal {s:?}: not a signal"))?;
    Ok(sig as u32)
}

fn status(s: i32) -> String {
    Status::try_from(s)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| "UNKNOWN".into())
}

/// The process an exec runs: the container's own process with the command and flags applied.
fn exec_process(spec: &serde_json::Value, o: &ExecArgs) -> Result<serde_json::Value> {
    let mut p = spec
        .get("process")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({"cwd": "/"}));
    p["args"] = serde_json::json!(o.args);
    p["terminal"] = serde_json::Value::Bool(o.tty);
    if !o.env.is_empty() {
        let mut all: Vec<serde_json::Value> = p["env"].as_array().cloned().unwrap_or_default();
        for e in &o.env {
            if !e.contains('=') {
                anyhow::bail!("--env {e:?}: expected KEY=VALUE");
            }
            all.push(serde_json::json!(e));
        }
        p["env"] = serde_json::Value::Array(all);
    }
    if let Some(c) = &o.cwd {
        if !c.starts_with('/') {
            anyhow::bail!("--cwd {c:?}: must be an absolute path");
        }
        p["cwd"] = serde_json::json!(c);
    }
    if let Some(u) = &o.user {
        let (uid, gid) = u.split_once(':').unwrap_or((u, "0"));
        let num = |s: &str| {
            s.parse::<u32>()
                .with_context(|| format!("--user {u:?}: expected UID[:GID] as numbers"))
        };
        p["user"] = serde_json::json!({"uid": num(uid)?, "gid": num(gid)?});
    }
    Ok(p)
}

/// `tasks exec`: returns the process's exit code.
async fn exec(env: &Env, o: ExecArgs) -> Result<i32> {
    use berth_proto::containerd::services::containers::v1 as cpb;
    let id = o.id.as_str();
    let container = cpb::containers_client::ContainersClient::new(env.ns.clone())
        .get(cpb::GetContainerRequest { id: id.to_string() })
        .await
        .map_err(rpc_error(format!("getting container {id}")))?
        .into_inner()
        .container
        .context("berthd returned no container")?;
    let spec: serde_json::Value = container
        .spec
        .as_ref()
        .map(|a| serde_json::from_slice(&a.value))
        .transpose()
        .context("the container's spec is not JSON")?
        .unwrap_or_default();
    super::stdio::check_interactive_terminal(o.interactive, o.tty)?;
    let mut p = exec_process(&spec, &o)?;
    if o.tty {
        super::stdio::set_console_size(&mut p);
    }
    let exec_id = o
        .exec_id
        .clone()
        .unwrap_or_else(|| format!("exec-{:08x}", fastrand::u32(..)));
    let io = super::stdio::ClientIo::new(o.interactive, o.tty)?;
    let mut c = TasksClient::new(env.ns.clone());
    c.exec(pb::ExecProcessRequest {
        container_id: id.to_string(),
        exec_id: exec_id.clone(),
        stdin: io.stdin(),
        stdout: io.stdout(),
        stderr: io.stderr(),
        terminal: o.tty,
        spec: Some(prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
            value: serde_json::to_vec(&p)?,
        }),
    })
    .await
    .map_err(rpc_error(format!("exec in {id}")))?;
    let mut waiter = TasksClient::new(env.ns.clone());
    let wait = {
        let (id, exec_id) = (id.to_string(), exec_id.clone());
        tokio::spawn(async move {
            waiter
                .wait(pb::WaitRequest {
                    container_id: id,
                    exec_id,
                })
                .await
        })
    };
    let delete = |mut c: TasksClient<_>| {
        let (id, exec_id) = (id.to_string(), exec_id.clone());
        async move {
            let _ = c
                .delete_process(pb::DeleteProcessRequest {
                    container_id: id,
                    exec_id,
                })
                .await;
        }
    };
    let forwarding = super::stdio::forward(env, id, &exec_id, o.tty);
    if let Err(e) = c
        .start(pb::StartRequest {
            container_id: id.to_string(),
            exec_id: exec_id.clone(),
        })
        .await
    {
        wait.abort();
        delete(c).await;
        if e.message().contains("executable file not found")
            || e.message().contains("not found in $PATH")
        {
            eprintln!("berth: {}", e.message());
            return Ok(127);
        }
        return Err(rpc_error(format!("starting exec {exec_id} in {id}"))(e));
    }
    let raw = (o.tty && o.interactive)
        .then(super::stdio::RawMode::enter)
        .flatten();
    let copying = io.copy();
    if o.tty {
        super::stdio::send_size(c.clone(), id, &exec_id).await;
    }
    let code = wait
        .await
        .context("waiting for the exec")?
        .map_err(rpc_error(format!("waiting for exec {exec_id}")))?
        .into_inner()
        .exit_status as i32;
    drop(forwarding);
    copying.finish().await;
    drop(raw);
    delete(c).await;
    Ok(code)
}

/// `tasks metrics`: the decoded cgroup statistics.
async fn metrics(env: &Env, id: &str) -> Result<()> {
    use crate::tasks::metrics::Metrics;
    let ms = TasksClient::new(env.ns.clone())
        .metrics(pb::MetricsRequest {
            filters: vec![format!("id=={id}")],
        })
        .await
        .map_err(rpc_error(format!("metrics of {id}")))?
        .into_inner()
        .metrics;
    let m = ms
        .into_iter()
        .find(|m| m.id == id)
        .with_context(|| format!("no metrics for {id}: is its task running?"))?;
    let data = m.data.map(|a| a.value).unwrap_or_default();
    let m = <Metrics as prost::Message>::decode(data.as_slice())
        .context("berthd's metrics do not decode")?;
    let mem = m
        .memory
        .as_ref()
        .and_then(|x| x.usage.clone())
        .unwrap_or_default();
    let pids = m.pids.clone().unwrap_or_default();
    let cpu = m
        .cpu
        .as_ref()
        .and_then(|c| c.usage.clone())
        .unwrap_or_default();
    match env.format {
        Format::Json => output::json(&serde_json::json!({
            "id": id,
            "memory": {"usage": mem.usage, "limit": mem.limit, "max_usage": mem.max,
                       "failcnt": mem.failcnt,
                       "rss": m.memory.as_ref().map_or(0, |x| x.total_rss),
                       "cache": m.memory.as_ref().map_or(0, |x| x.total_cache)},
            "pids": {"current": pids.current, "limit": pids.limit},
            "cpu": {"total_ns": cpu.total, "user_ns": cpu.user, "kernel_ns": cpu.kernel},
        }))?,
        Format::Table => output::table(
            &["METRIC", "VALUE"],
            &[
                vec!["memory.usage_in_bytes".into(), mem.usage.to_string()],
                vec!["memory.limit_in_bytes".into(), mem.limit.to_string()],
                vec!["memory.max_usage_in_bytes".into(), mem.max.to_string()],
                vec!["pids.current".into(), pids.current.to_string()],
                vec!["pids.limit".into(), pids.limit.to_string()],
                vec!["cpu.usage_ns".into(), cpu.total.to_string()],
            ],
        )?,
    }
    Ok(())
}

/// Runs a task command; returns the exit code for `wait`.
pub async fn run(env: &Env, cmd: Cmd) -> Result<i32> {
    let mut c = TasksClient::new(env.ns.clone());
    match cmd {
        Cmd::Ls => {
            let ts = c
                .list(pb::ListTasksRequest::default())
                .await
                .map_err(rpc_error("listing tasks"))?
                .into_inner()
                .tasks;
            match env.format {
                Format::Json => output::json(&serde_json::json!(ts
                    .iter()
                    .map(|t| serde_json::json!({
                        "id": t.id, "pid": t.pid, "status": status(t.status),
                        "exit_status": t.exit_status,
                    }))
                    .collect::<Vec<_>>()))?,
                Format::Table => output::table(
                    &["TASK", "PID", "STATUS"],
                    &ts.iter()
                        .map(|t| vec![t.id.clone(), t.pid.to_string(), status(t.status)])
                        .collect::<Vec<_>>(),
                )?,
            }
        }
        Cmd::Start { id } => {
            let r = c
                .start(pb::StartRequest {
                    container_id: id.clone(),
                    exec_id: String::new(),
                })
                .await
                .map_err(rpc_error(format!("starting {id}")))?
                .into_inner();
            println!("{}", r.pid);
        }
        Cmd::Exec(o) => return exec(env, o).await,
        Cmd::Metrics { id } => metrics(env, &id).await?,
        Cmd::Kill { signal: s, all, id } => {
            c.kill(pb::KillRequest {
                container_id: id.clone(),
                exec_id: String::new(),
                signal: signal(&s)?,
                all,
            })
            .await
            .map_err(rpc_error(format!("killing {id}")))?;
        }
        Cmd::Ps { id } => {
            let ps = c
                .list_pids(pb::ListPidsRequest {
                    container_id: id.clone(),
                })
                .await
                .map_err(rpc_error(format!("listing processes of {id}")))?
                .into_inner()
                .processes;
            output::table(
                &["PID"],
                &ps.iter()
                    .map(|p| vec![p.pid.to_string()])
                    .collect::<Vec<_>>(),
            )?;
        }
        Cmd::Pause { id } => {
            c.pause(pb::PauseTaskRequest {
                container_id: id.clone(),
            })
            .await
            .map_err(rpc_error(format!("pausing {id}")))?;
        }
        Cmd::Resume { id } => {
            c.resume(pb::ResumeTaskRequest {
                container_id: id.clone(),
            })
            .await
            .map_err(rpc_error(format!("resuming {id}")))?;
        }
        Cmd::Wait { id } => {
            let r = c
                .wait(pb::WaitRequest {
                    container_id: id.clone(),
                    exec_id: String::new(),
                })
                .await
                .map_err(rpc_error(format!("waiting for {id}")))?
                .into_inner();
            return Ok(r.exit_status as i32);
        }
        Cmd::Rm { id } => {
            let r = c
                .delete(pb::DeleteTaskRequest {
                    container_id: id.clone(),
                })
                .await
                .map_err(rpc_error(format!("deleting task {id}")))?
                .into_inner();
            println!("{id}: exit status {}", r.exit_status);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_number_and_name() {
        assert_eq!(signal("9").unwrap(), 9);
        assert_eq!(signal("KILL").unwrap(), 9);
        assert_eq!(signal("SIGTERM").unwrap(), 15);
        assert!(signal("NOPE").is_err());
    }
}
