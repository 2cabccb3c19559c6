//! `berth check`, daemon side: the stores' own check ([`berth_store::Store::check`]) plus
//! berthd's state — network pieces ([`crate::networks::Networks::check`]) and task state
//! directories, supervisors, mounts under the state dir and cgroups ([`host`]) — each compared
//! with the records that should own it. Used by the gRPC
//! service (berthd running) and by `berthd check` (berthd down, store opened without
//! recovery so that the crash's leftovers are seen as they are).

use std::path::Path;
use std::time::Duration;

use berth_store::Store;
use serde::Serialize;

use crate::networks::Networks;

pub mod host;

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Kind, kebab-case (`corrupt-blob`, `orphan-netns`, ...).
    pub kind: String,
    /// The thing, named.
    pub what: String,
    /// Details.
    pub detail: String,
    /// Whether repair fixed it.
    pub repaired: bool,
}

/// A whole check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Blobs hashed.
    pub blobs: usize,
    /// Images walked.
    pub images: usize,
    /// Snapshot records checked.
    pub snapshots: usize,
    /// Containers checked.
    pub containers: usize,
    /// What is wrong.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Nothing wrong is left (everything found was repaired).
    pub fn clean(&self) -> bool {
        self.findings.iter().all(|f| f.repaired)
    }
}

/// Checks the stores and berthd's state under `state`; files changed within `grace` are
/// not called orphans (an operation may be in flight).
pub fn run(
    store: &Store,
    networks: &Networks,
    state: &Path,
    repair: bool,
    grace: Duration,
) -> berth_store::Result<Report> {
    let s = store.check(repair, grace)?;
    let mut report = Report {
        blobs: s.blobs,
        images: s.images,
        snapshots: s.snapshots,
        containers: s.containers,
        findings: Vec::new(),
    };
    for p in s.problems {
        let kind = serde_json::to_value(p.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        report.findings.push(Finding {
            kind,
            what: p.what,
            detail: p.detail,
            repaired: p.repaired,
        });
    }
    for (kind, what, detail, repaired) in networks.check(repair, grace) {
        report.findings.push(Finding {
            kind: kind.to_string(),
            what,
            detail,
            repaired,
        });
    }
    host::check(store, state, repair, grace, &mut report);
    Ok(report)
}

impl From<Report> for berth_proto::berth::services::check::v1::CheckResponse {
    fn from(r: Report) -> Self {
        use berth_proto::berth::services::check::v1 as pb;
        pb::CheckResponse {
            blobs: r.blobs as u64,
            images: r.images as u64,
            snapshots: r.snapshots as u64,
            containers: r.containers as u64,
            findings: r
                .findings
                .into_iter()
                .map(|f| pb::Finding {
                    kind: f.kind,
                    what: f.what,
                    detail: f.detail,
                    repaired: f.repaired,
                })
                .collect(),
        }
    }
}

/// `berthd check`: the same check with berthd down. Refuses a root that is not a berthd's, or
/// one a running berthd holds ([`crate::daemon::lock`]), and holds the root's lock while it
/// runs so that berthd cannot start under it. The store is opened without crash recovery
/// (what a crash left is seen, and only `repair` changes anything) and nothing counts as in
/// flight (no grace period). With `repair`, when anything was found, a second pass without
/// repairing says what is left. Returns the check and that re-check.
pub fn offline(
    root: &Path,
    state: &Path,
    repair: bool,
) -> anyhow::Result<(Report, Option<Report>)> {
    use anyhow::{bail, Context};
    use berth_store::{SnapshotterChoice, StoreConfig};
    for (flag, dir) in [("--root", root), ("--state", state)] {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!("{flag} {}: not a directory", dir.display()),
            Err(e) => bail!("{flag} {}: {e}", dir.display()),
        }
    }
    let db = root.join("io.containerd.metadata.v1.bolt/meta.redb");
    if !db.is_file() {
        bail!(
            "--root {}: not a berthd root (no {})",
            root.display(),
            db.display()
        );
    }
    let _lock = crate::daemon::lock::RootLock::take(root, "berthd check")?;
    // The snapshotter whose directory is there (berthd's automatic choice made it).
    let snapshotter = if root.join("io.containerd.snapshotter.v1.overlayfs").is_dir() {
        SnapshotterChoice::Overlay
    } else if root.join("io.containerd.snapshotter.v1.native").is_dir() {
        SnapshotterChoice::Native
    } else {
        SnapshotterChoice::Auto
    };
    let store = Store::open(&StoreConfig {
        root: root.to_path_buf(),
        snapshotter,
        recover: false,
    })
    .with_context(|| format!("opening the stores under {}", root.display()))?;
    let networks = Networks::new(store.clone(), root, state);
    let first = run(&store, &networks, state, repair, Duration::ZERO)
        .with_context(|| format!("checking {}", root.display()))?;
    let recheck = if repair && !first.findings.is_empty() {
        Some(
            run(&store, &networks, state, false, Duration::ZERO)
                .with_context(|| format!("checking {} again", root.display()))?,
        )
    } else {
        None
    };
    Ok((first, recheck))
}
