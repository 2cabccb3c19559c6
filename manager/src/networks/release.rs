//! Tearing down a container's attachment off the caller's path.
//!
//! The CNI DELs of a detach (the bridge plugin, and host-local under it) and the removal of
//! published ports' rules are a few processes, tens of milliseconds, and nothing the caller of a
//! task delete waits for needs them done: the container is dead, its names already leave the
//! resolver. So a detach moves the container's attachment directory into the queue
//! `<state>/networks-releasing/<ns>--<id>/` (one rename: atomic, and it survives a crash) and
//! returns; a worker thread then runs the DELs, removes the network namespace and the
//! directory. What the queue still holds is drained at once where it matters:
//! - an attach of the same container (the netns name, the plugins' cache and host-local's
//!   lease are keyed by its id), or one that publishes ports while a queued one holds some;
//! - removing a network a queued attachment joined;
//! - berthd's start (a crash leaves the queue as it was).
//!
//! `berth check` counts queued attachments as owners of their namespace and leases.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Once};

use berth_network::cni::{Cni, RuntimeConf};
use berth_network::hostports;
use berth_network::netns;

use super::{internal, Attachment, NetworkError, Result};

/// The queue of attachments to tear down and its worker.
pub(super) struct Releaser {
    cni: Cni,
    ipam_dir: PathBuf,
    dir: PathBuf,
    /// One release at a time, by the worker or by a caller draining the queue.
    busy: Mutex<()>,
    /// Set when something was queued; the worker waits on it.
    queued: Mutex<bool>,
    wake: Condvar,
    worker: Once,
}

impl Releaser {
    pub(super) fn new(cni: Cni, ipam_dir: PathBuf, dir: PathBuf) -> Arc<Releaser> {
        Arc::new(Releaser {
            cni,
            ipam_dir,
            dir,
            busy: Mutex::new(()),
            queued: Mutex::new(false),
            wake: Condvar::new(),
            worker: Once::new(),
        })
    }

    /// Moves container attachment directory `cdir` into the queue under `key` and wakes the
    /// worker. On an error nothing moved.
    pub(super) fn queue(self: &Arc<Self>, cdir: &Path, key: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let dst = self.dir.join(key);
        if dst.exists() {
            // Cannot happen (an attach drains its key first); never overwrite one.
            self.release(key);
        }
        std::fs::rename(cdir, &dst)?;
        self.worker.call_once(|| {
            let me = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("berth-net-release".into())
                .spawn(move || me.run());
            if let Err(e) = spawned {
                tracing::warn!("no network release thread ({e}): releasing as attachments go");
            }
        });
        *self.queued.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_one();
        Ok(())
    }

    fn run(self: Arc<Self>) {
        loop {
            {
                let mut q = self.queued.lock().unwrap_or_else(|e| e.into_inner());
                while !*q {
                    q = self.wake.wait(q).unwrap_or_else(|e| e.into_inner());
                }
                *q = false;
            }
            self.drain(|_, _| true);
        }
    }

    /// The queued attachments, by key.
    pub(super) fn pending(&self) -> Vec<(String, Attachment)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let key = e.file_name().to_string_lossy().into_owned();
                let text = std::fs::read(e.path().join("attachment.json")).ok()?;
                Some((key, serde_json::from_slice(&text).ok()?))
            })
            .collect()
    }

    /// Releases now every queued attachment `pick` selects (by key and attachment).
    pub(super) fn drain(&self, pick: impl Fn(&str, &Attachment) -> bool) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let key = e.file_name().to_string_lossy().into_owned();
            let a = std::fs::read(e.path().join("attachment.json"))
                .ok()
                .and_then(|t| serde_json::from_slice::<Attachment>(&t).ok());
            // An entry without a readable attachment is debris of a crash mid-release.
            if a.as_ref().is_none_or(|a| pick(&key, a)) {
                self.release(&key);
            }
        }
    }

    /// Releases queued attachment `key` if it is still queued.
    fn release(&self, key: &str) {
        let _busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let item = self.dir.join(key);
        if !item.exists() {
            return;
        }
        let a = std::fs::read(item.join("attachment.json"))
            .ok()
            .and_then(|t| serde_json::from_slice::<Attachment>(&t).ok());
        if let Some(a) = a {
            match teardown(&self.cni, &self.ipam_dir, &a) {
                Ok(()) => tracing::debug!(key, "released a container's networks"),
                Err(e) => tracing::warn!(key, "releasing a container's networks: {e}"),
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&item) {
            tracing::warn!(key, "removing {}: {e}", item.display());
        }
    }
}

/// Undoes what an attach set up: each network's CNI DEL and published ports (in reverse
/// order, going on past a failure) and the network namespace. Returns the first error.
pub(super) fn teardown(cni: &Cni, ipam_dir: &Path, a: &Attachment) -> Result<()> {
    let mut first_err = None;
    for j in a.joined.iter().rev() {
        if let Err(e) = del_join(cni, ipam_dir, a, j) {
            first_err.get_or_insert(e);
        }
    }
    if let Err(e) = netns::remove_path(&a.netns) {
        first_err.get_or_insert(internal(e));
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Leaves network join `j` of attachment `a`: its published ports (berth's rules, or
/// portmap's DEL for an attachment an older berthd made), then the CNI DEL.
pub(super) fn del_join(
    cni: &Cni,
    ipam_dir: &Path,
    a: &Attachment,
    j: &super::Joined,
) -> Result<()> {
    let publishing = j.publishes && !a.ports.is_empty();
    let mut first_err = None;
    if publishing && a.own_ports {
        if let Err(e) = hostports::unpublish(&a.container_id) {
            first_err.get_or_insert(internal(e));
        }
    }
    let portmap = publishing && !a.own_ports;
    let list = j
        .network
        .network()
        .and_then(|n| n.conflist(ipam_dir, portmap).map_err(internal))?;
    let mut rt = RuntimeConf::new(&a.container_id, &a.netns, &j.ifname);
    if portmap {
        rt = rt.with_port_mappings(&a.ports);
    }
    if let Err(e) = cni.del(&list, &rt) {
        first_err.get_or_insert(NetworkError::Internal(format!(
            "network {}: {e}",
            j.network.name
        )));
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
