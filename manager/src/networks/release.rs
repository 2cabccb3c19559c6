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
//! A teardown that fails in the worker stays queued and is tried again after
//! [`RETRY_DELAYS`] (CNI DEL is idempotent: the spec has plugins succeed on what is already
//! gone, and the plugins' cache keeps the ADD result for them). One that still fails is
//! logged and dropped; `berth check` then reports what it left (an address lease, a rule) and
//! `--repair` removes it. A drain on a caller's path tries once and drops the entry either
//! way, so an attach never races a stale release of the same container.
//!
//! `berth check` counts queued attachments as owners of their namespace and leases.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::{Duration, Instant};

use berth_network::cni::{Cni, RuntimeConf};
use berth_network::hostports;
use berth_network::netns;

use super::{internal, Attachment, NetworkError, Result};

/// How long the worker waits before each new try of a teardown that failed; one more failure
/// than there are delays and it gives up.
const RETRY_DELAYS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(4)];

/// A queued release whose teardown failed: how often, and when to try again.
struct Retry {
    failures: usize,
    due: Instant,
}

/// Who runs a release: the worker may keep a failed one queued for a retry; a caller draining
/// the queue must have it gone when the drain returns.
#[derive(Clone, Copy, PartialEq)]
enum By {
    Worker,
    Caller,
}

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
    /// Failed releases still queued, by key. Lost with berthd, whose start drains them anyway.
    retries: Mutex<HashMap<String, Retry>>,
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
            retries: Mutex::new(HashMap::new()),
        })
    }

    /// Moves container attachment directory `cdir` into the queue under `key` and wakes the
    /// worker. On an error nothing moved.
    pub(super) fn queue(self: &Arc<Self>, cdir: &Path, key: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let dst = self.dir.join(key);
        if dst.exists() {
            // Cannot happen (an attach drains its key first); never overwrite one.
            self.release(key, By::Caller);
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
            self.wait_for_work();
            let now = Instant::now();
            self.drain_by(By::Worker, |key, _| self.due(key, now));
            // A retry whose entry went some other way must not keep the worker awake.
            self.lock_retries()
                .retain(|key, _| self.dir.join(key).exists());
        }
    }

    /// Returns once something was queued or a retry is due.
    fn wait_for_work(&self) {
        let mut q = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *q {
                *q = false;
                return;
            }
            let next = self.lock_retries().values().map(|r| r.due).min();
            q = match next {
                None => self.wake.wait(q).unwrap_or_else(|e| e.into_inner()),
                Some(due) => {
                    let now = Instant::now();
                    if due <= now {
                        return;
                    }
                    match self.wake.wait_timeout(q, due - now) {
                        Ok((q, _)) => q,
                        Err(e) => e.into_inner().0,
                    }
                }
            };
        }
    }

    /// Whether queued release `key` is not waiting out a retry delay at `now`.
    fn due(&self, key: &str, now: Instant) -> bool {
        self.lock_retries().get(key).is_none_or(|r| r.due <= now)
    }

    fn lock_retries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Retry>> {
        self.retries.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Releases now every queued attachment `pick` selects (by key and attachment); when it
    /// returns they are gone from the queue, released or (on a failure) given up.
    pub(super) fn drain(&self, pick: impl Fn(&str, &Attachment) -> bool) {
        self.drain_by(By::Caller, pick)
    }

    fn drain_by(&self, by: By, pick: impl Fn(&str, &Attachment) -> bool) {
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
                self.release(&key, by);
            }
        }
    }

    /// Releases queued attachment `key` if it is still queued. A failure run `by` the worker
    /// keeps it queued for a retry while [`RETRY_DELAYS`] last.
    fn release(&self, key: &str, by: By) {
        let _busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let item = self.dir.join(key);
        if !item.exists() {
            self.lock_retries().remove(key);
            return;
        }
        let a = std::fs::read(item.join("attachment.json"))
            .ok()
            .and_then(|t| serde_json::from_slice::<Attachment>(&t).ok());
        let done = a.map_or(Ok(()), |a| teardown(&self.cni, &self.ipam_dir, &a));
        {
            let mut retries = self.lock_retries();
            match done {
                Ok(()) => tracing::debug!(key, "released a container's networks"),
                Err(e) => {
                    let failures = retries.get(key).map_or(0, |r| r.failures);
                    match RETRY_DELAYS.get(failures).filter(|_| by == By::Worker) {
                        Some(delay) => {
                            tracing::warn!(
                                key,
                                "releasing a container's networks (try {}): {e}; trying again \
                                 in {delay:?}",
                                failures + 1
                            );
                            let due = Instant::now() + *delay;
                            retries.insert(
                                key.to_string(),
                                Retry {
                                    failures: failures + 1,
                                    due,
                                },
                            );
                            return;
                        }
                        None => tracing::error!(
                            key,
                            "releasing a container's networks (try {}): {e}; giving up, \
                             `berth check` reports what is left",
                            failures + 1
                        ),
                    }
                }
            }
            retries.remove(key);
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
