//! `berth tasks ls|kill|ps|pause|resume|wait|rm|metrics`.

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
