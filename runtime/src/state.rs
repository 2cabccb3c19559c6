//! Per-container state under `--root`: `<root>/<id>/state.json` (written to a temp file then
//! renamed, so a reader never sees half a file) and `exec.fifo` (exists from create until start).
//! Commands that change a container hold an exclusive `flock` on its directory, so two commands
//! on one id cannot interleave.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Errors of the state directory.
#[derive(Debug, Error)]
pub enum StateError {
    #[error("container {0:?} does not exist")]
    NotExist(String),
    #[error("container with id {0:?} already exists")]
    Exists(String),
    #[error("invalid container id {0:?}: {1}")]
    InvalidId(String, &'static str),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state of container {id:?} is corrupt: {source}")]
    Corrupt {
        id: String,
        source: serde_json::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// What the runtime remembers about a container between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    /// The init's pid in the runtime's pid namespace.
    pub pid: i32,
    /// The init's start time (field 22 of /proc/<pid>/stat): tells a reused pid apart.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339 creation time.
    pub created: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    #[serde(default)]
    pub owner: String,
    /// Where the container's cgroup is, to signal, freeze and remove it later.
    pub cgroup: Option<berth_cgroups::Cgroup>,
    /// For a container without a mount namespace of its own: the id of the rootfs bind mount
    /// its init made in the caller's namespace, which `delete` takes away (if it is still the
    /// top mount there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_ns_rootfs_mount: Option<u64>,
}

/// The container statuses of the OCI state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// The OCI state JSON that `state` prints and `list --format json` lists.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OciState {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(skip_serializing_if = "HashMap::is_empty", default)]
    pub annotations: HashMap<String, String>,
    pub owner: String,
}

/// Check an id the way runc does: letters, digits and `_ + - .`, not `.` or `..`.
pub fn validate_id(id: &str) -> Result<(), StateError> {
    let bad = |why| Err(StateError::InvalidId(id.to_string(), why));
    if id.is_empty() {
        return bad("it is empty");
    }
    if id.len() > 1024 {
        return bad("it is longer than 1024 bytes");
    }
    if id == "." || id == ".." || id.contains("..") {
        return bad("it must not contain \"..\"");
    }
    if id.contains('/') {
        return bad("it must not contain \"/\"");
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'))
    {
        return bad("only letters, digits and _ + - . are allowed");
    }
    Ok(())
}

/// A container's state directory, locked for the lifetime of this value.
pub struct StateDir {
    pub id: String,
    pub path: PathBuf,
    _lock: Flock<File>,
}

impl StateDir {
    /// Claim a new id: create `<root>/<id>` (fails if it exists) and lock it.
    pub fn create(root: &Path, id: &str) -> Result<StateDir, StateError> {
        validate_id(id)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(root)
            .map_err(io("creating state root", root))?;
        let path = root.join(id);
        match fs::DirBuilder::new().mode(0o711).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(StateError::Exists(id.to_string()))
            }
            Err(e) => return Err(io("creating state dir", &path)(e)),
        }
        Self::lock_dir(id, path)
    }

    /// Open and lock the state directory of an existing container.
    pub fn open(root: &Path, id: &str) -> Result<StateDir, StateError> {
        validate_id(id)?;
        let path = root.join(id);
        if !path.is_dir() {
            return Err(StateError::NotExist(id.to_string()));
        }
        Self::lock_dir(id, path)
    }

    fn lock_dir(id: &str, path: PathBuf) -> Result<StateDir, StateError> {
        let dir = File::open(&path).map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                StateError::NotExist(id.to_string())
            } else {
                io("opening state dir", &path)(e)
            }
        })?;
        let lock = Flock::lock(dir, FlockArg::LockExclusive).map_err(|(_, errno)| {
            io("locking state dir", &path)(std::io::Error::from_raw_os_error(errno as i32))
        })?;
        // A delete that held the lock before us may have removed the directory.
        if !path.is_dir() {
            return Err(StateError::NotExist(id.to_string()));
        }
        Ok(StateDir {
            id: id.to_string(),
            path,
            _lock: lock,
        })
    }

    /// The descriptor that holds the lock: the init closes its copy at once (see
    /// `init::InitArgs::parent_fds`), so that only the runtime holds the lock.
    pub fn lock_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&*self._lock)
    }

    /// Records the cgroup a create made, before the init exists: a create killed before it
    /// saved state.json leaves this file, from which `delete` removes the cgroup and whatever
    /// runs in it (written atomically, temp + rename).
    pub fn save_creating_cgroup(&self, cg: &berth_cgroups::Cgroup) -> Result<(), StateError> {
        let tmp = self.path.join(format!("{CREATING_CGROUP}.tmp"));
        let data = serde_json::to_vec(cg).map_err(|source| StateError::Corrupt {
            id: self.id.clone(),
            source,
        })?;
        fs::write(&tmp, data).map_err(io("writing", &tmp))?;
        let dst = self.path.join(CREATING_CGROUP);
        fs::rename(&tmp, &dst).map_err(io("renaming", &dst))?;
        Ok(())
    }

    /// The cgroup recorded by [`StateDir::save_creating_cgroup`], if the file is there.
    pub fn load_creating_cgroup(&self) -> Result<Option<berth_cgroups::Cgroup>, StateError> {
        let path = self.path.join(CREATING_CGROUP);
        match fs::read(&path) {
            Ok(d) => serde_json::from_slice(&d)
                .map(Some)
                .map_err(|source| StateError::Corrupt {
                    id: self.id.clone(),
                    source,
                }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("reading", &path)(e)),
        }
    }

    /// The path of the start fifo.
    pub fn fifo_path(&self) -> PathBuf {
        self.path.join(FIFO_NAME)
    }

    /// Write state.json atomically (temp file + rename).
    pub fn save(&self, state: &ContainerState) -> Result<(), StateError> {
        let tmp = self.path.join("state.json.tmp");
        let data = serde_json::to_vec(state).map_err(|source| StateError::Corrupt {
            id: self.id.clone(),
            source,
        })?;
        let mut f = File::create(&tmp).map_err(io("writing", &tmp))?;
        f.write_all(&data).map_err(io("writing", &tmp))?;
        drop(f);
        let dst = self.path.join("state.json");
        fs::rename(&tmp, &dst).map_err(io("renaming", &dst))?;
        Ok(())
    }

    /// Read state.json.
    pub fn load(&self) -> Result<ContainerState, StateError> {
        load_state(&self.path, &self.id)
    }

    /// Remove the whole directory (the lock dies with the value).
    pub fn remove(self) -> Result<(), StateError> {
        match fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("removing state dir", &self.path)(e)),
        }
    }
}

/// The start fifo's file name inside a state dir.
pub const FIFO_NAME: &str = "exec.fifo";

/// The cgroup of a create in progress, inside its state dir (see
/// [`StateDir::save_creating_cgroup`]).
pub const CREATING_CGROUP: &str = "creating-cgroup.json";

/// Read a container's state.json without locking (it is always replaced whole).
pub fn load_state(dir: &Path, id: &str) -> Result<ContainerState, StateError> {
    let path = dir.join("state.json");
    let data = match fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(StateError::NotExist(id.to_string()))
        }
        Err(e) => return Err(io("reading", &path)(e)),
    };
    serde_json::from_slice(&data).map_err(|source| StateError::Corrupt {
        id: id.to_string(),
        source,
    })
}

/// Read `<root>/<id>/state.json` of an existing container.
pub fn read(root: &Path, id: &str) -> Result<ContainerState, StateError> {
    validate_id(id)?;
    load_state(&root.join(id), id)
}

/// The ids of every container under `root`, sorted.
pub fn list_ids(root: &Path) -> Result<Vec<String>, StateError> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("listing", root)(e)),
    };
    let mut ids: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("state.json").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ids.sort();
    Ok(ids)
}

/// What /proc says of a pid: its start time and whether it is a zombie.
pub fn proc_stat(pid: i32) -> Option<(u64, char)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

impl ContainerState {
    /// Whether the init process is still the one we started and has not exited.
    pub fn init_alive(&self) -> bool {
        self.pid > 0
            && matches!(proc_stat(self.pid), Some((start, st)) if start == self.pid_start && st != 'Z' && st != 'X')
    }

    /// The current status, derived from the init's liveness, the fifo and the freezer.
    pub fn status(&self, dir: &Path) -> Status {
        if !self.init_alive() {
            return Status::Stopped;
        }
        if dir.join(FIFO_NAME).exists() {
            return Status::Created;
        }
        if let Some(cg) = &self.cgroup {
            if cg.is_frozen().unwrap_or(false) {
                return Status::Paused;
            }
        }
        Status::Running
    }

    /// The OCI state as printed by `state`.
    pub fn to_oci(&self, status: Status) -> OciState {
        OciState {
            oci_version: crate::OCI_VERSION.to_string(),
            id: self.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            status,
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            annotations: self.annotations.clone(),
            owner: self.owner.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("abc-1_2.3+x").is_ok());
        for bad in ["", ".", "..", "a/b", "../x", "a..b", "a b", "a\nb"] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_creating_cgroup_is_read_back_and_a_corrupt_one_is_named() {
        let root = tempfile::tempdir().unwrap();
        let dir = StateDir::create(root.path(), "two").unwrap();
        assert!(dir.load_creating_cgroup().unwrap().is_none());
        let cg = berth_cgroups::Cgroup::resolve(Some("/berth-unit/two"), "two").unwrap();
        dir.save_creating_cgroup(&cg).unwrap();
        assert_eq!(dir.load_creating_cgroup().unwrap(), Some(cg));
        fs::write(dir.path.join(CREATING_CGROUP), "{").unwrap();
        let err = dir.load_creating_cgroup().unwrap_err().to_string();
        assert!(err.contains("two"), "{err}");
        dir.remove().unwrap();
    }

    #[test]
    fn an_id_is_claimed_once() {
        let root = tempfile::tempdir().unwrap();
        let dir = StateDir::create(root.path(), "one").unwrap();
        let err = StateDir::create(root.path(), "one").err().unwrap();
        assert!(err.to_string().contains("already exists"), "{err}");
        dir.remove().unwrap();
        assert!(!root.path().join("one").exists());
    }

    #[test]
    fn our_own_process_is_alive() {
        let pid = std::process::id() as i32;
        let (start, state) = proc_stat(pid).unwrap();
        assert!(state == 'R' || state == 'S');
        let st = ContainerState {
            id: "x".into(),
            pid,
            pid_start: start,
            bundle: "/".into(),
            rootfs: "/".into(),
            created: String::new(),
            annotations: HashMap::new(),
            owner: String::new(),
            cgroup: None,
            shared_ns_rootfs_mount: None,
        };
        assert!(st.init_alive());
        let reused = ContainerState {
            pid_start: start + 1,
            ..st
        };
        assert!(!reused.init_alive());
    }
}
