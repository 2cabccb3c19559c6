//! The crate's error type: every variant names the path, file or value concerned.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while resolving, creating, configuring or removing a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `linux.cgroupsPath` (or the container id used as its default) is unusable.
    #[error("invalid cgroups path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The systemd `slice:prefix:name` form was given; only cgroupfs paths are supported.
    #[error(
        "invalid cgroups path {0:?}: the systemd \"slice:prefix:name\" form is not supported \
         (berth manages cgroups through the cgroup filesystem; use a path like \"/berth/<id>\")"
    )]
    SystemdPath(String),
    /// The host's cgroup mounts could not be understood.
    #[error("cgroup layout of this host: {0}")]
    Layout(String),
    /// Reading a cgroup file or a /proc file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A cgroup file held something we could not parse.
    #[error("parsing {path}: unexpected content {content:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held (trimmed).
        content: String,
    },
    /// Writing a value to a cgroup file failed.
    #[error("setting {path} to {value}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The value we tried to write.
        value: String,
        /// The underlying error (e.g. EBUSY, EINVAL).
        source: io::Error,
    },
    /// Creating a cgroup directory failed.
    #[error("creating cgroup directory {path}: {source}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Removing a cgroup directory failed for a reason other than being busy.
    #[error("removing cgroup {path}: {source}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The cgroup still holds processes, so the kernel refuses to remove it.
    #[error("cannot remove cgroup {path}: it still has processes {pids:?} (kill them first)")]
    Busy {
        /// The directory.
        path: PathBuf,
        /// The processes still in it.
        pids: Vec<i32>,
    },
    /// The cgroup has child cgroups that this `Cgroup` did not create.
    #[error("cannot remove cgroup {path}: it has child cgroups not created by this container: {children:?}")]
    HasChildren {
        /// The directory.
        path: PathBuf,
        /// Names of the child directories.
        children: Vec<String>,
    },
    /// A resource needs a controller that is not mounted on this host.
    #[error("cannot set {what}: the {controller} cgroup controller is not available on this host")]
    MissingController {
        /// The controller (e.g. "memory").
        controller: String,
        /// The resource that needed it (e.g. "memory.limit").
        what: String,
    },
    /// A resource value is invalid before it ever reaches the kernel.
    #[error("invalid resource {what}: {reason}")]
    InvalidResource {
        /// The OCI field (e.g. "memory.swappiness").
        what: String,
        /// Why it is invalid.
        reason: String,
    },
    /// Something this cgroup version cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// Freezing or thawing did not reach the wanted state in time.
    #[error("timed out after {waited:?} waiting for {path} to become {state}")]
    StateTimeout {
        /// The state file (freezer.state or cgroup.events).
        path: PathBuf,
        /// The wanted state.
        state: &'static str,
        /// How long we waited.
        waited: Duration,
    },
    /// Loading or attaching the cgroup v2 device eBPF program failed.
    #[error("cgroup v2 device rules for {path}: {op}: {source}")]
    Bpf {
        /// The cgroup directory.
        path: PathBuf,
        /// The step that failed (e.g. "BPF_PROG_LOAD").
        op: String,
        /// The underlying error (with the verifier log appended when there is one).
        source: io::Error,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
