//! `berth check`, daemon side: the stores' own check ([`berth_store::Store::check`]) plus
//! berthd's state — network pieces ([`crate::networks::Networks::check`]) and task state
//! directories — each compared with the records that should own it. Used by the gRPC
//! service (berthd running) and by `berthd check` (berthd down, store opened without
//! recovery so that the crash's leftovers are seen as they are).

use std::path::Path;
use std::time::Duration;

use berth_store::{Ctx, Store};
use serde::Serialize;

use crate::networks::Networks;

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
    // Task state (supervisor sockets, exit status) of containers that no longer exist: a
    // supervisor may still run there, so it is reported, not removed.
    let tasks = state.join("tasks");
    for ns in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
        let ns_name = ns.file_name().to_string_lossy().into_owned();
        let ctx = Ctx::new(ns_name.clone());
        for t in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            let id = t.file_name().to_string_lossy().into_owned();
            if store.container(&ctx, &id).is_err() && !berth_store::check::young(&t.path(), grace) {
                report.findings.push(Finding {
                    kind: "orphan-task-state".into(),
                    what: format!("{ns_name}/{id}"),
                    detail: format!("{} belongs to no container", t.path().display()),
                    repaired: false,
                });
            }
        }
    }
    Ok(report)
}
