//! berth-cgroups: the cgroups of berth-runc's containers, through the cgroup filesystem.
//!
//! A [`Cgroup`] is resolved from an OCI `linux.cgroupsPath` ([`Cgroup::resolve`]), created
//! ([`Cgroup::create`]), limited ([`Cgroup::set`]), joined ([`Cgroup::add_process`]), frozen,
//! measured and finally removed ([`Cgroup::destroy`]). It serializes to JSON so the runtime can
//! keep it in its state file and act on it in later commands.
//!
//! # Hierarchies
//! - **cgroup v1** (legacy, or hybrid like this project's hosts): one directory per mounted
//!   controller hierarchy under its mount point. Named hierarchies (`name=systemd`) and the
//!   hybrid `unified` cgroup2 mount are left alone. Relative paths are relative to the
//!   caller's own cgroup *in each hierarchy*, which can differ per controller.
//! - **cgroup v2** (unified): one directory; create() enables the available controllers in
//!   every ancestor's `cgroup.subtree_control`. The v2 code is written against a root
//!   directory ([`Layout::v2`]) so it can be used on any cgroup2 mount and tested on a fake tree.
//!
//! # Device rules
//! On v1 the rules are written to `devices.deny` / `devices.allow` in order. On v2 they are
//! compiled to an eBPF program (`BPF_PROG_TYPE_CGROUP_DEVICE`) loaded with bpf(2) and attached
//! to the cgroup directory with `BPF_F_ALLOW_MULTI`, replacing the programs attached there
//! before. Both follow the v1 kernel semantics: a cgroup starts allowing everything; a rule for
//! every device and access ("a *:* rwm") resets the default; later rules override earlier ones.
//!
//! # What is created and removed
//! create() records each directory it actually made (intermediate ones too); destroy() removes
//! exactly those, deepest first, and never any other. A leaf that already existed (for example
//! made by a caller beforehand) is used but not recorded, so destroy() leaves it to its owner.
//! An intermediate directory that by the time of destroy() holds another cgroup is kept.
//!
//! # Values
//! Following runc, a zero memory/cpu/pids value means "not set" (Go configs cannot tell
//! absent from zero), and -1 means unlimited. Kernel memory, realtime cpu and rdma are ignored
//! with a warning; so are the knobs that cgroup v2 does not have (swappiness,
//! disableOOMKiller, net_cls/net_prio) and block-I/O weights where the kernel has no weight
//! file.

mod bpf;
mod devices;
mod error;
mod fsutil;
mod layout;
mod stats;
mod v1;
mod v2;

use std::path::{Path, PathBuf};
use std::time::Instant;

use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

pub use error::{Error, Result};
pub use layout::{Hierarchy, Layout};
pub use stats::{CpuStats, IoEntry, IoStats, MemoryStats, PidsStats, Stats};

use layout::Dir;

/// Which hierarchy the host uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CgroupVersion {
    /// Legacy or hybrid: a hierarchy per controller.
    V1,
    /// Unified: /sys/fs/cgroup is a cgroup2 mount.
    V2,
}

/// V2 when /sys/fs/cgroup/cgroup.controllers exists (unified), V1 otherwise (legacy or hybrid).
pub fn detect() -> CgroupVersion {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        CgroupVersion::V2
    } else {
        CgroupVersion::V1
    }
}

/// A container's cgroup: its directory on every hierarchy, and which of them this value created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    version: CgroupVersion,
    /// The cgroups path as resolved ("/a/b" or "a/b"), for messages.
    cgroups_path: String,
    dirs: Vec<Dir>,
    /// Directories made by create(), parents before children.
    #[serde(default)]
    created: Vec<PathBuf>,
}

impl Cgroup {
    /// Resolves an OCI `linux.cgroupsPath` on this host. Absolute ("/a/b"): under each
    /// hierarchy's root. Relative ("a/b"): below the calling process's own cgroup in each
    /// hierarchy. `None` or "": relative `"<id>"`, as runc does. ".." components and the systemd
    /// "slice:prefix:name" form are rejected. Creates nothing.
    pub fn resolve(cgroups_path: Option<&str>, id: &str) -> Result<Cgroup> {
        Cgroup::resolve_in(Layout::host()?, cgroups_path, id)
    }

    /// Like [`Cgroup::resolve`] against a given layout (a fake tree, or the hybrid unified mount).
    pub fn resolve_in(layout: &Layout, cgroups_path: Option<&str>, id: &str) -> Result<Cgroup> {
        let given = match cgroups_path {
            Some(p) if !p.is_empty() => p,
            _ => {
                if id.is_empty() || id.contains('/') || id == "." || id == ".." {
                    return Err(Error::InvalidPath {
                        path: id.to_string(),
                        reason: "the container id, used as the default cgroups path, must be a \
                                 single path component"
                            .into(),
                    });
                }
                id
            }
        };
        let (absolute, comps) = layout::split_cgroups_path(given)?;
        let dirs = layout
            .hierarchies
            .iter()
            .map(|h| Dir {
                controllers: h.controllers.clone(),
                mount: h.mount_point.clone(),
                path: h.dir_of(&layout::hierarchy_path(h, absolute, &comps)),
            })
            .collect();
        let cgroups_path = format!("{}{}", if absolute { "/" } else { "" }, comps.join("/"));
        Ok(Cgroup {
            version: layout.version,
            cgroups_path,
            dirs,
            created: Vec::new(),
        })
    }

    /// The cgroup version this cgroup lives on.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The cgroups path as resolved (normalised), e.g. "/berth/abc" or "abc".
    pub fn cgroups_path(&self) -> &str {
        &self.cgroups_path
    }

    /// Every directory of this cgroup (one per v1 hierarchy, or the one v2 directory).
    pub fn paths(&self) -> Vec<&Path> {
        self.dirs.iter().map(|d| d.path.as_path()).collect()
    }

    /// The directories create() made, parents first; exactly what destroy() will remove.
    pub fn created(&self) -> &[PathBuf] {
        &self.created
    }

    /// The directory of v1 controller `controller` ("memory", "pids", ...), or on v2 the
    /// cgroup's directory whatever the name. `None` if no hierarchy has that controller.
    pub fn path_of(&self, controller: &str) -> Option<PathBuf> {
        match self.version {
            CgroupVersion::V2 => self.dirs.first().map(|d| d.path.clone()),
            CgroupVersion::V1 => v1::dir(&self.dirs, controller).map(Path::to_path_buf),
        }
    }

    /// The sub-cgroup of this cgroup named by `exec --cgroup` specs: `path` for every
    /// hierarchy, or `controller[,controller]:path` for those controllers' (a later spec wins
    /// over an earlier one). Paths are relative to this cgroup ("/" is the cgroup itself);
    /// ".." is refused, an unknown controller is refused, and every directory must exist. The
    /// result owns nothing: destroying it removes nothing.
    pub fn sub_cgroup(&self, specs: &[String]) -> Result<Cgroup> {
        let mut every: Option<Vec<String>> = None;
        let mut per_controller: Vec<(String, Vec<String>)> = Vec::new();
        for spec in specs {
            let invalid = |reason: String| Error::InvalidPath {
                path: spec.clone(),
                reason,
            };
            let (controllers, path) = match spec.split_once(':') {
                Some((c, p)) => (Some(c), p),
                None => (None, spec.as_str()),
            };
            let mut comps = Vec::new();
            for c in path.split('/') {
                match c {
                    "" | "." => {}
                    ".." => {
                        return Err(invalid(
                            "\"..\" components are not allowed: a process may only join the \
                             container's cgroup or one below it"
                                .into(),
                        ))
                    }
                    c => comps.push(c.to_string()),
                }
            }
            match controllers.filter(|c| !c.is_empty()) {
                None => every = Some(comps),
                Some(list) => {
                    for controller in list.split(',') {
                        if !self.has_controller(controller) {
                            return Err(invalid(format!(
                                "no {controller:?} controller in the container's cgroup"
                            )));
                        }
                        per_controller.push((controller.to_string(), comps.clone()));
                    }
                }
            }
        }
        let mut dirs = self.dirs.clone();
        for d in &mut dirs {
            let chosen = per_controller
                .iter()
                .rev()
                .find(|(c, _)| self.version == CgroupVersion::V2 || d.controllers.contains(c))
                .map(|(_, comps)| comps)
                .or(every.as_ref());
            if let Some(comps) = chosen {
                for c in comps {
                    d.path.push(c);
                }
            }
            if !d.path.is_dir() {
                return Err(Error::InvalidPath {
                    path: specs.join(" "),
                    reason: format!("sub-cgroup {} does not exist", d.path.display()),
                });
            }
        }
        Ok(Cgroup {
            version: self.version,
            cgroups_path: format!("{} ({})", self.cgroups_path, specs.join(" ")),
            dirs,
            created: Vec::new(),
        })
    }

    /// Whether controller `name` is in this cgroup (v1: a hierarchy of it; v2: listed in the
    /// directory's cgroup.controllers).
    fn has_controller(&self, name: &str) -> bool {
        match self.version {
            CgroupVersion::V1 => self
                .dirs
                .iter()
                .any(|d| d.controllers.iter().any(|c| c == name)),
            CgroupVersion::V2 => self.dirs.first().is_some_and(|d| {
                std::fs::read_to_string(d.path.join("cgroup.controllers"))
                    .is_ok_and(|t| t.split_whitespace().any(|c| c == name))
            }),
        }
    }

    /// This cgroup as [`Cgroup::create`] would leave it if it made every directory missing
    /// now (leaves and ancestors, shallowest first): what a caller records before creating,
    /// so that a process killed halfway through the creation leaves a record that names
    /// everything it may have made. (A directory another process makes in between would be
    /// named too; removal takes only empty cgroups.)
    pub fn planned(&self) -> Cgroup {
        let mut out = self.clone();
        for d in &self.dirs {
            let mut missing: Vec<PathBuf> = d
                .path
                .ancestors()
                .take_while(|a| *a != d.mount && a.starts_with(&d.mount))
                .filter(|a| !a.exists())
                .map(Path::to_path_buf)
                .collect();
            missing.reverse();
            for dir in missing {
                if !out.created.contains(&dir) {
                    out.created.push(dir);
                }
            }
        }
        out
    }

    /// Creates the directories (missing ancestors included) and records those it made. On v1 a
    /// new cpuset cgroup gets cpuset.cpus/mems from its parent; on v2 the available
    /// controllers are enabled in the ancestors. An existing leaf is fine. On failure, what
    /// this call created is removed again.
    pub fn create(&mut self) -> Result<()> {
        let mut made = Vec::new();
        let result = self.create_inner(&mut made);
        if let Err(e) = result {
            let deadline = Instant::now() + fsutil::REMOVE_RETRY;
            for dir in made.iter().rev() {
                if let Err(cleanup) = fsutil::rmdir_cgroup(dir, fsutil::RemoveMode::Leaf, deadline)
                {
                    tracing::warn!(error = %cleanup, "cleaning up after a failed cgroup create");
                }
            }
            return Err(e);
        }
        for dir in made {
            if !self.created.contains(&dir) {
                self.created.push(dir);
            }
        }
        Ok(())
    }

    fn create_inner(&self, made: &mut Vec<PathBuf>) -> Result<()> {
        for d in &self.dirs {
            fsutil::mkdir_tracked(&d.mount, &d.path, made)?;
        }
        match self.version {
            CgroupVersion::V1 => v1::after_create(&self.dirs),
            CgroupVersion::V2 => self.dirs.iter().try_for_each(v2::after_create),
        }
    }

    /// Writes the limits of `resources`. Each failed write is an error naming the file and
    /// the value, e.g. "setting /sys/fs/cgroup/memory/x/memory.limit_in_bytes to 1000: Device
    /// or resource busy".
    pub fn set(&self, resources: &LinuxResources) -> Result<()> {
        match self.version {
            CgroupVersion::V1 => v1::set(&self.dirs, resources),
            CgroupVersion::V2 => self.dirs.iter().try_for_each(|d| v2::set(d, resources)),
        }
    }

    /// Moves process `pid` into the cgroup on every hierarchy (cgroup.procs).
    pub fn add_process(&self, pid: i32) -> Result<()> {
        if pid <= 0 {
            return Err(Error::InvalidResource {
                what: "pid".into(),
                reason: format!("{pid} is not a process id"),
            });
        }
        let value = pid.to_string();
        for d in &self.dirs {
            fsutil::write(&d.path, "cgroup.procs", &value)?;
        }
        Ok(())
    }

    /// Moves the calling process, which must be single-threaded, into the cgroup on every
    /// hierarchy. On v1 it writes "0" to `tasks`: the kernel moves the caller's own thread
    /// without taking the global threadgroup lock, whose write side waits for an RCU grace
    /// period (10-15 ms here) on every `cgroup.procs` write. On v2 it writes "0" to
    /// `cgroup.procs` (no such shortcut there).
    pub fn join_self(&self) -> Result<()> {
        let file = match self.version {
            CgroupVersion::V1 => "tasks",
            CgroupVersion::V2 => "cgroup.procs",
        };
        for d in &self.dirs {
            fsutil::write(&d.path, file, "0")?;
        }
        Ok(())
    }

    /// Pids of every process in the cgroup and its child cgroups, sorted (v1: read from the
    /// pids, else freezer, else memory hierarchy). A cgroup that does not exist has none.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let dir = match self.version {
            CgroupVersion::V1 => v1::procs_dir(&self.dirs),
            CgroupVersion::V2 => self.dirs.first().map(|d| d.path.as_path()),
        };
        match dir {
            Some(d) => fsutil::procs_recursive(d),
            None => Ok(Vec::new()),
        }
    }

    /// Freezes every process and waits until the kernel reports the cgroup frozen.
    pub fn freeze(&self) -> Result<()> {
        self.set_frozen(true)
    }

    /// Thaws the cgroup and waits until the kernel reports it thawed.
    pub fn thaw(&self) -> Result<()> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        match self.version {
            CgroupVersion::V1 => v1::set_frozen(&self.dirs, frozen),
            CgroupVersion::V2 => self.dirs.iter().try_for_each(|d| v2::set_frozen(d, frozen)),
        }
    }

    /// Whether the cgroup is frozen now (v1 freezer.state FROZEN; v2 cgroup.events frozen 1).
    pub fn is_frozen(&self) -> Result<bool> {
        match self.version {
            CgroupVersion::V1 => v1::is_frozen(&self.dirs),
            CgroupVersion::V2 => match self.dirs.first() {
                Some(d) => v2::is_frozen(d),
                None => Ok(false),
            },
        }
    }

    /// CPU, memory, pids and block I/O statistics (sections are `None` where a controller is
    /// missing).
    pub fn stats(&self) -> Result<Stats> {
        match self.version {
            CgroupVersion::V1 => v1::stats(&self.dirs),
            CgroupVersion::V2 => match self.dirs.first() {
                Some(d) => v2::stats(d),
                None => Ok(Stats::default()),
            },
        }
    }

    /// Removes the directories create() made, deepest first; never any other. Missing ones are
    /// fine. A cgroup that still has processes is an error naming it and the pids (kill them
    /// first); EBUSY is retried briefly since the kernel frees a cgroup a moment after its last
    /// process exits. Intermediate directories that now hold other cgroups are kept. Child
    /// cgroups inside the leaf (made by the container, e.g. systemd or a nested runtime) are an
    /// error naming them; see [`Cgroup::destroy_with_descendants`]. Every directory is
    /// attempted; the first error is returned.
    pub fn destroy(&self) -> Result<()> {
        self.remove(false)
    }

    /// Like [`Cgroup::destroy`], but first removes the (empty) child cgroups found inside each
    /// leaf this value created: the container made them, inside its own cgroup. Still never
    /// touches a leaf it did not create, nor anything outside its leaves.
    pub fn destroy_with_descendants(&self) -> Result<()> {
        self.remove(true)
    }

    fn remove(&self, descendants: bool) -> Result<()> {
        let mut first_err = None;
        let deadline = Instant::now() + fsutil::REMOVE_RETRY;
        for dir in self.created.iter().rev() {
            let leaf = self.dirs.iter().any(|d| &d.path == dir);
            let result = if leaf {
                let inner = if descendants {
                    fsutil::remove_descendants(dir, deadline)
                } else {
                    Ok(())
                };
                inner.and_then(|()| fsutil::rmdir_cgroup(dir, fsutil::RemoveMode::Leaf, deadline))
            } else {
                fsutil::rmdir_cgroup(dir, fsutil::RemoveMode::Intermediate, deadline)
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "cgroup removal failed");
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Ids of the eBPF device programs attached directly to a cgroup v2 directory (for checks).
pub fn attached_device_programs(dir: &Path) -> std::io::Result<Vec<u32>> {
    bpf::query_device_programs(dir)
}
