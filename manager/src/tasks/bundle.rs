//! A task's bundle dir: `config.json`, `rootfs/`, `task.json` (how it was created), the shim's
//! socket and exit files, exec specs.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_store::snapshots::Mount;
use serde::{Deserialize, Serialize};

use super::runtime::Runtime;
use super::{mounts, shim, Result, TaskError};

/// What berthd records about a task when creating it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskInfo {
    /// Container id.
    pub id: String,
    /// Init pid.
    pub pid: u32,
    /// stdio paths as given.
    pub stdin: String,
    /// stdout path.
    pub stdout: String,
    /// stderr path.
    pub stderr: String,
    /// Terminal requested.
    pub terminal: bool,
    /// Runtime binary.
    pub runtime: PathBuf,
    /// Runtime root.
    pub runtime_root: PathBuf,
}

/// An exit: code and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit code (128+signal if killed).
    pub code: u32,
    /// When.
    pub at: SystemTime,
}

impl Exit {
    /// Parses the shim's `CODE SECS NANOS`.
    pub fn parse(s: &str) -> Option<Exit> {
        let mut it = s.split_whitespace();
        let code = it.next()?.parse().ok()?;
        let secs: u64 = it.next()?.parse().ok()?;
        let nanos: u32 = it.next()?.parse().ok()?;
        Some(Exit {
            code,
            at: UNIX_EPOCH + Duration::new(secs, nanos),
        })
    }
}

/// A task's bundle dir.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The dir.
    pub dir: PathBuf,
}

impl Bundle {
    /// The bundle of `id` in namespace `ns`.
    pub fn new(state: &Path, ns: &str, id: &str) -> Bundle {
        Bundle {
            dir: super::tasks_dir(state, ns).join(id),
        }
    }

    /// Its `task.json`, or NotFound.
    pub fn info(&self) -> Result<TaskInfo> {
        let p = self.dir.join("task.json");
        let text = std::fs::read(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                TaskError::NotFound(format!(
                    "no running task found: task {} not found",
                    self.id()
                ))
            } else {
                TaskError::Internal(format!("reading {}: {e}", p.display()))
            }
        })?;
        serde_json::from_slice(&text)
            .map_err(|e| TaskError::Internal(format!("parsing {}: {e}", p.display())))
    }

    /// The container id (the dir's name).
    pub fn id(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The runtime for this task.
    pub fn runtime(&self, info: &TaskInfo) -> Runtime {
        Runtime {
            binary: info.runtime.clone(),
            root: info.runtime_root.clone(),
            log: self.dir.join("log.json"),
        }
    }

    /// The recorded exit of the init process (`""`) or an exec.
    pub fn exit(&self, exec_id: &str) -> Option<Exit> {
        let f = if exec_id.is_empty() {
            self.dir.join("exit")
        } else {
            self.dir.join(format!("exec-{exec_id}.exit"))
        };
        Exit::parse(&std::fs::read_to_string(f).ok()?)
    }

    /// The pid of an exec, once started.
    pub fn exec_pid(&self, exec_id: &str) -> Option<u32> {
        std::fs::read_to_string(self.dir.join(format!("exec-{exec_id}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// True if exec `exec_id` was registered.
    pub fn has_exec(&self, exec_id: &str) -> bool {
        self.dir.join(format!("exec-{exec_id}.json")).exists()
    }
}

/// Everything needed to create a task.
pub struct CreateTask<'a> {
    /// Bundle to create.
    pub bundle: &'a Bundle,
    /// The OCI spec (JSON).
    pub spec: serde_json::Value,
    /// Rootfs mounts.
    pub rootfs: &'a [Mount],
    /// stdio.
    pub stdio: [String; 3],
    /// Terminal.
    pub terminal: bool,
    /// Runtime binary.
    pub runtime: PathBuf,
    /// Runtime root.
    pub runtime_root: PathBuf,
    /// Supervisor binary.
    pub shim: PathBuf,
}

/// Removes a half-made bundle unless disarmed.
struct Undo<'a> {
    dir: &'a Path,
    mounted: bool,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if self.mounted {
            mounts::unmount_all(&self.dir.join("rootfs"));
        }
        if let Err(e) = std::fs::remove_dir_all(self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "removing a failed bundle");
        }
    }
}

/// Creates the bundle, mounts the rootfs and starts the supervisor, which creates the container.
/// On any failure nothing is left behind.
pub fn create(t: CreateTask<'_>) -> Result<TaskInfo> {
    let dir = &t.bundle.dir;
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| TaskError::Internal(format!("creating {}: {e}", parent.display())))?;
    }
    std::fs::create_dir(dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            TaskError::AlreadyExists(format!("task {}: already exists", t.bundle.id()))
        } else {
            TaskError::Internal(format!("creating {}: {e}", dir.display()))
        }
    })?;
    let mut undo = Undo {
        dir,
        mounted: false,
        armed: true,
    };
    let rootfs = dir.join("rootfs");
    std::fs::create_dir(&rootfs)
        .map_err(|e| TaskError::Internal(format!("creating {}: {e}", rootfs.display())))?;
    let mut spec = t.spec;
    if !spec.is_object() {
        return Err(TaskError::InvalidArgument(
            "the container's spec is not a JSON object".into(),
        ));
    }
    if !t.rootfs.is_empty() {
        mounts::mount_all(t.rootfs, &rootfs).map_err(TaskError::Internal)?;
        undo.mounted = true;
        spec["root"]["path"] = serde_json::Value::String("rootfs".into());
    }
    super::volumes::check_sources(&spec)?;
    super::volumes::copy_up(&spec, &rootfs)?;
    super::user::apply(&mut spec, &rootfs)?;
    // The terminal flag on the wire wins over the spec's.
    if spec["process"].is_object() {
        spec["process"]["terminal"] = serde_json::Value::Bool(t.terminal);
    }
    let cfg = serde_json::to_vec(&spec)
        .map_err(|e| TaskError::Internal(format!("encoding config.json: {e}")))?;
    std::fs::write(dir.join("config.json"), cfg)
        .map_err(|e| TaskError::Internal(format!("writing config.json: {e}")))?;
    std::fs::create_dir_all(&t.runtime_root)
        .map_err(|e| TaskError::Internal(format!("creating {}: {e}", t.runtime_root.display())))?;
    let id = t.bundle.id();
    let pid = shim::launch(&shim::Launch {
        shim: &t.shim,
        bundle: dir,
        id: &id,
        runtime: &t.runtime,
        runtime_root: &t.runtime_root,
        stdio: [&t.stdio[0], &t.stdio[1], &t.stdio[2]],
        terminal: t.terminal,
    })
    .inspect_err(|_| {
        // The runtime may have left state behind; delete it (and any cgroup).
        let rt = Runtime {
            binary: t.runtime.clone(),
            root: t.runtime_root.clone(),
            log: dir.join("delete-log.json"),
        };
        let _ = rt.run(&["delete", "--force", &id], None);
    })?;
    let info = TaskInfo {
        id,
        pid,
        stdin: t.stdio[0].clone(),
        stdout: t.stdio[1].clone(),
        stderr: t.stdio[2].clone(),
        terminal: t.terminal,
        runtime: t.runtime,
        runtime_root: t.runtime_root,
    };
    let data = serde_json::to_vec(&info)
        .map_err(|e| TaskError::Internal(format!("encoding task.json: {e}")))?;
    let tmp = dir.join("task.json.tmp");
    std::fs::write(&tmp, data)
        .and_then(|_| std::fs::rename(&tmp, dir.join("task.json")))
        .map_err(|e| TaskError::Internal(format!("writing task.json: {e}")))?;
    undo.armed = false;
    Ok(info)
}

/// Removes the bundle after the runtime's delete: unmounts the rootfs, removes the dir.
pub fn remove(b: &Bundle) -> Result<()> {
    mounts::unmount_all(&b.dir.join("rootfs"));
    std::fs::remove_dir_all(&b.dir)
        .map_err(|e| TaskError::Internal(format!("removing {}: {e}", b.dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_lines_parse() {
        let e = Exit::parse("137 10 5").unwrap();
        assert_eq!(e.code, 137);
        assert_eq!(e.at, UNIX_EPOCH + Duration::new(10, 5));
        assert_eq!(Exit::parse("x"), None);
    }
}
