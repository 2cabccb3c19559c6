//! Garbage collection, containerd's tri-colour idea reduced to a mark from roots and a sweep,
//! inside one metadata write transaction (nothing can be created while it decides).
//!
//! Roots per namespace: image targets, containers' rootfs snapshots, lease resources, objects
//! labelled `containerd.io/gc.root`, and (more conservative than containerd) active and view
//! snapshots. Edges: `containerd.io/gc.ref.content*` labels, `containerd.io/gc.ref.snapshot.<sn>*`
//! labels and snapshot parents. Expired leases (`containerd.io/gc.expire` in the past) are
//! deleted first. A blob file is removed once no namespace has a record of it.

use std::collections::{BTreeSet, HashSet};
use std::fs;

use tracing::{info, warn};

use crate::digest::Digest;
use crate::error::Result;
use crate::metadata::{Labels, MetaRead, SnapshotKind, WriteTx};
use crate::store::{Store, LABEL_GC_EXPIRE};

/// Label making an object a GC root.
pub const LABEL_GC_ROOT: &str = "containerd.io/gc.root";
/// Prefix of labels referencing content.
pub const LABEL_GC_REF_CONTENT: &str = "containerd.io/gc.ref.content";
/// Prefix of labels referencing snapshots (`containerd.io/gc.ref.snapshot.<snapshotter>`).
pub const LABEL_GC_REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot.";

/// What a collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Expired leases removed, as `ns/id`.
    pub leases: Vec<String>,
    /// Content records removed, as (namespace, digest).
    pub content: Vec<(String, Digest)>,
    /// Blob files removed (no namespace had them any more).
    pub blobs: Vec<Digest>,
    /// Snapshots removed, as (namespace, snapshotter, key).
    pub snapshots: Vec<(String, String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Node {
    Content(Digest),
    Snapshot(String, String),
}

/// The objects `labels` reference.
fn label_refs(labels: &Labels, out: &mut Vec<Node>) {
    for (k, v) in labels {
        if k == LABEL_GC_REF_CONTENT
            || k.strip_prefix(LABEL_GC_REF_CONTENT)
                .is_some_and(|r| r.starts_with('.') || r.starts_with('/'))
        {
            match Digest::parse(v) {
                Ok(d) => out.push(Node::Content(d)),
                Err(e) => warn!(label = k, %e, "ignoring bad gc content reference"),
            }
        } else if let Some(rest) = k.strip_prefix(LABEL_GC_REF_SNAPSHOT) {
            let sn = rest.split('/').next().unwrap_or(rest);
            if !sn.is_empty() {
                out.push(Node::Snapshot(sn.to_string(), v.clone()));
            }
        }
    }
}

fn expired(labels: &Labels, now: chrono::DateTime<chrono::Utc>) -> bool {
    labels
        .get(LABEL_GC_EXPIRE)
        .and_then(|v| chrono::DateTime::parse_from_rfc3339(v).ok())
        .is_some_and(|t| t < now)
}

fn mark(tx: &WriteTx, ns: &str) -> Result<HashSet<Node>> {
    let mut stack: Vec<Node> = Vec::new();
    for img in tx.images(ns)? {
        stack.push(Node::Content(img.target.digest.clone()));
        label_refs(&img.labels, &mut stack);
    }
    for c in tx.containers(ns)? {
        if !c.snapshot_key.is_empty() && !c.snapshotter.is_empty() {
            stack.push(Node::Snapshot(
                c.snapshotter.clone(),
                c.snapshot_key.clone(),
            ));
        }
        label_refs(&c.labels, &mut stack);
    }
    for l in tx.leases(ns)? {
        for r in &l.resources {
            if r.kind == "content" {
                if let Ok(d) = Digest::parse(&r.id) {
                    stack.push(Node::Content(d));
                }
            } else if let Some(sn) = r.kind.strip_prefix("snapshots/") {
                stack.push(Node::Snapshot(sn.to_string(), r.id.clone()));
            }
        }
    }
    for c in tx.contents(ns)? {
        if c.labels.contains_key(LABEL_GC_ROOT) {
            stack.push(Node::Content(c.digest.clone()));
        }
    }
    for (_, sn, key, r) in tx.all_snapshots()?.into_iter().filter(|s| s.0 == ns) {
        if r.labels.contains_key(LABEL_GC_ROOT) || r.kind != SnapshotKind::Committed {
            stack.push(Node::Snapshot(sn, key));
        }
    }
    let mut marked = HashSet::new();
    while let Some(n) = stack.pop() {
        if !marked.insert(n.clone()) {
            continue;
        }
        match &n {
            Node::Content(d) => {
                if let Some(c) = tx.content(ns, d)? {
                    label_refs(&c.labels, &mut stack);
                }
            }
            Node::Snapshot(sn, key) => {
                if let Some(r) = tx.snapshot(ns, sn, key)? {
                    if let Some(p) = &r.parent {
                        stack.push(Node::Snapshot(sn.clone(), p.clone()));
                    }
                    label_refs(&r.labels, &mut stack);
                }
            }
        }
    }
    Ok(marked)
}

/// Runs a collection; see the module documentation.
pub fn collect(store: &Store) -> Result<GcReport> {
    let _g = store.gc_exclusive();
    let snapshotter = store.inner.snapshotter.clone();
    let sn_name = snapshotter.name();
    let now = chrono::Utc::now();
    let mut report = GcReport::default();
    let mut dirs = Vec::new();
    store.inner.meta.write(|tx| {
        for n in tx.namespaces()? {
            let ns = n.name;
            for l in tx.leases(&ns)? {
                if expired(&l.labels, now) {
                    tx.delete_lease(&ns, &l.id)?;
                    report.leases.push(format!("{ns}/{}", l.id));
                }
            }
            let marked = mark(tx, &ns)?;
            for c in tx.contents(&ns)? {
                if !marked.contains(&Node::Content(c.digest.clone())) {
                    tx.delete_content(&ns, &c.digest)?;
                    report.content.push((ns.clone(), c.digest));
                }
            }
            // Snapshots: remove leaves first until every unmarked one is gone.
            let mut doomed: BTreeSet<String> = tx
                .snapshots(&ns, sn_name)?
                .into_iter()
                .filter(|(k, _)| !marked.contains(&Node::Snapshot(sn_name.to_string(), k.clone())))
                .map(|(k, _)| k)
                .collect();
            while !doomed.is_empty() {
                let all = tx.snapshots(&ns, sn_name)?;
                let parents: HashSet<&str> = all
                    .iter()
                    .filter_map(|(_, r)| r.parent.as_deref())
                    .collect();
                let leaves: Vec<String> = doomed
                    .iter()
                    .filter(|k| !parents.contains(k.as_str()))
                    .cloned()
                    .collect();
                if leaves.is_empty() {
                    warn!(
                        ns,
                        ?doomed,
                        "snapshots held by marked children; keeping them"
                    );
                    break;
                }
                for k in leaves {
                    dirs.push(snapshotter.remove_in_tx(tx, &ns, &k)?);
                    doomed.remove(&k);
                    report.snapshots.push((ns.clone(), sn_name.to_string(), k));
                }
            }
        }
        Ok(())
    })?;
    for d in dirs {
        if let Err(e) = fs::remove_dir_all(&d) {
            warn!(dir = %d.display(), %e, "cannot remove collected snapshot directory");
        }
    }
    let on_disk = store.inner.content.list()?;
    let referenced: HashSet<Digest> = store.inner.meta.read(|r| {
        let mut s = HashSet::new();
        for n in r.namespaces()? {
            for c in r.contents(&n.name)? {
                s.insert(c.digest);
            }
        }
        Ok(s)
    })?;
    for d in on_disk {
        if !referenced.contains(&d) {
            match store.inner.content.delete(&d) {
                Ok(()) => report.blobs.push(d),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
    }
    if report != GcReport::default() {
        info!(
            leases = report.leases.len(),
            content = report.content.len(),
            blobs = report.blobs.len(),
            snapshots = report.snapshots.len(),
            "garbage collected"
        );
    }
    Ok(report)
}
