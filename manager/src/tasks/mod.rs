//! The task manager: a bundle per task under `<state>/tasks/<namespace>/<id>/`, one
//! `berth-shim` supervisor per task, and the runtime binary (berth-runc, runc or crun) for
//! everything that does not need the container's parent.
//!
//! berthd keeps no task state in memory: the bundle's files (`task.json`, the shim's `exit`
//! files and socket) and the runtime's own state are the truth, so a restarted berthd finds
//! every task again just by looking.

pub mod bundle;
pub mod init;
pub mod metrics;
pub mod mounts;
pub mod runtime;
pub mod shim;
pub mod user;
pub mod volumes;

use std::path::{Path, PathBuf};

pub use bundle::{Bundle, TaskInfo};

/// Errors of task operations, mapped onto gRPC codes by the service.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// No such task or process.
    #[error("{0}")]
    NotFound(String),
    /// It exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// Wrong state for the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Bad request.
    #[error("{0}")]
    InvalidArgument(String),
    /// The runtime, the supervisor or the system failed.
    #[error("{0}")]
    Internal(String),
    /// The runtime did not finish within its timeout (and was killed).
    #[error("{0}")]
    Timeout(String),
}

/// Result of task operations.
pub type Result<T> = std::result::Result<T, TaskError>;

/// Where a namespace's task bundles live.
pub fn tasks_dir(state: &Path, ns: &str) -> PathBuf {
    state.join("tasks").join(ns)
}

/// True if container `id` of namespace `ns` has a task.
pub fn exists(state: &Path, ns: &str, id: &str) -> bool {
    tasks_dir(state, ns).join(id).join("task.json").exists()
}

/// A task's stdout/stderr of `log:` asks for berth's log file (`log:/path` names one).
pub const LOG_STDIO: &str = "log:";
/// The container label that records where its log file is.
pub const LOG_LABEL: &str = "io.berth.log";

/// Where berthd keeps container `id`'s log (its rotated copy is `<id>.log.1`).
pub fn log_path(state_dir: &Path, ns: &str, id: &str) -> PathBuf {
    state_dir.join("logs").join(ns).join(format!("{id}.log"))
}

/// Removes a container's log files (when the container is deleted).
pub fn remove_logs(state_dir: &Path, ns: &str, id: &str) {
    let p = log_path(state_dir, ns, id);
    for f in [p.clone(), p.with_extension("log.1")] {
        if let Err(e) = std::fs::remove_file(&f) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %f.display(), error = %e, "removing a container log");
            }
        }
    }
}

/// A helper binary: `$<var>`, else next to the running berthd, else found on PATH by name.
pub fn helper_binary(var: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let p = dir.join(name);
            if p.exists() {
                return p;
            }
        }
    }
    PathBuf::from(name)
}
