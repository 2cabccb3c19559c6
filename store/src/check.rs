//! `berth check` for the stores: every blob against its digest, every metadata reference
//! (image → index/manifest → config and layers, snapshot → parent and directory, container →
//! snapshot), and every snapshot directory against a record.
//!
//! Repair is conservative: orphans (a blob no namespace records, a snapshot directory no
//! record names) are removed; a corrupt blob is moved aside to `<content>/quarantine/` (its
//! records then show as missing, so a pull fetches it again) and nothing referenced is ever
//! deleted; broken records are reported, not dropped.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::metadata::MetaRead;
use crate::oci::{media_kind, Index, Manifest, MediaKind};
use crate::{Digest, Result, Store};

/// What is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// A blob whose content does not hash to its name.
    CorruptBlob,
    /// A content record (or an image's reference) whose blob is not on disk.
    MissingBlob,
    /// A blob file no namespace records.
    OrphanBlob,
    /// An image whose manifest or config cannot be read or parsed.
    BrokenImage,
    /// A snapshot record without its directory, or whose parent is gone.
    BrokenSnapshot,
    /// A snapshot directory no record names.
    OrphanSnapshotDir,
    /// A container whose snapshot is gone.
    BrokenContainer,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Its kind.
    pub kind: ProblemKind,
    /// The thing, named (`ns/image`, a digest, a path).
    pub what: String,
    /// Details.
    pub detail: String,
    /// Whether `--repair` fixed it.
    pub repaired: bool,
}

/// What a check looked at and found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Blobs hashed.
    pub blobs: usize,
    /// Images walked.
    pub images: usize,
    /// Snapshot records checked.
    pub snapshots: usize,
    /// Containers checked.
    pub containers: usize,
    /// What is wrong.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    fn add(&mut self, kind: ProblemKind, what: impl Into<String>, detail: impl Into<String>) {
        self.problems.push(Problem {
            kind,
            what: what.into(),
            detail: detail.into(),
            repaired: false,
        });
    }

    fn repaired(&mut self, kind: ProblemKind, what: impl Into<String>, detail: impl Into<String>) {
        self.add(kind, what, detail);
        if let Some(p) = self.problems.last_mut() {
            p.repaired = true;
        }
    }
}

/// Whether `path` changed within `grace`: it may belong to an operation in progress (a check
/// beside a running berthd), so it is not called an orphan.
pub fn young(path: &std::path::Path, grace: Duration) -> bool {
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age < grace)
}

impl Store {
    /// Checks the stores; with `repair`, removes orphans and quarantines corrupt blobs. Files
    /// changed within `grace` are not called orphans (zero when berthd is down).
    pub fn check(&self, repair: bool, grace: Duration) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        let content = &self.inner.content;
        let (namespaces, records, images, snaps, containers) = self.inner.meta.read(|r| {
            let namespaces = r.namespaces()?;
            let mut records = Vec::new();
            let mut images = Vec::new();
            let mut containers = Vec::new();
            for n in &namespaces {
                for c in r.contents(&n.name)? {
                    records.push((n.name.clone(), c.digest));
                }
                for i in r.images(&n.name)? {
                    images.push((n.name.clone(), i));
                }
                for c in r.containers(&n.name)? {
                    containers.push((n.name.clone(), c));
                }
            }
            Ok((namespaces, records, images, r.all_snapshots()?, containers))
        })?;
        let _ = namespaces;

        // Blobs: each file against its name; files no namespace records.
        let recorded: HashSet<&Digest> = records.iter().map(|(_, d)| d).collect();
        let mut corrupt = HashSet::new();
        for d in content.list()? {
            report.blobs += 1;
            let path = content.blob_path(&d);
            let actual = std::fs::File::open(&path).and_then(Digest::of_reader);
            let ok = matches!(&actual, Ok((got, _)) if *got == d);
            if !ok {
                let detail = match actual {
                    Ok((got, _)) => format!("{} hashes to {got}", path.display()),
                    Err(e) => format!("{}: {e}", path.display()),
                };
                corrupt.insert(d.clone());
                if repair {
                    let q = content.root().join("quarantine").join(d.hex());
                    let moved = q
                        .parent()
                        .map(std::fs::create_dir_all)
                        .unwrap_or(Ok(()))
                        .and_then(|()| std::fs::rename(&path, &q));
                    match moved {
                        Ok(()) => report.repaired(
                            ProblemKind::CorruptBlob,
                            d.to_string(),
                            format!("{detail}; moved to {}", q.display()),
                        ),
                        Err(e) => report.add(
                            ProblemKind::CorruptBlob,
                            d.to_string(),
                            format!("{detail}; could not move it aside: {e}"),
                        ),
                    }
                } else {
                    report.add(ProblemKind::CorruptBlob, d.to_string(), detail);
                }
                continue;
            }
            if !recorded.contains(&d) && !young(&path, grace) {
                if repair && std::fs::remove_file(&path).is_ok() {
                    report.repaired(ProblemKind::OrphanBlob, d.to_string(), "removed");
                } else {
                    report.add(
                        ProblemKind::OrphanBlob,
                        d.to_string(),
                        path.display().to_string(),
                    );
                }
            }
        }
        let present = |d: &Digest| content.exists(d);
        for (ns, d) in &records {
            if !present(d) {
                report.add(
                    ProblemKind::MissingBlob,
                    format!("{ns}/{d}"),
                    "recorded in the namespace, not on disk",
                );
            }
        }

        // Images: the target, and under it every manifest present with its config and layers.
        for (ns, img) in &images {
            report.images += 1;
            let what = format!("{ns}/{}", img.name);
            let mut todo = vec![img.target.clone()];
            let mut found_manifest = false;
            while let Some(desc) = todo.pop() {
                if !present(&desc.digest) {
                    if desc.digest != img.target.digest
                        && media_kind(&desc.media_type) == Some(MediaKind::Manifest)
                    {
                        // Another platform's manifest of an index: not fetched.
                        continue;
                    }
                    report.add(
                        ProblemKind::MissingBlob,
                        what.clone(),
                        format!("{} {} is not in the store", desc.media_type, desc.digest),
                    );
                    continue;
                }
                let read = || content.read_all(&desc.digest, 16 << 20);
                match media_kind(&desc.media_type) {
                    Some(MediaKind::Index) => {
                        match read().map_err(|e| e.to_string()).and_then(|b| {
                            serde_json::from_slice::<Index>(&b).map_err(|e| e.to_string())
                        }) {
                            Ok(ix) => todo.extend(ix.manifests),
                            Err(e) => report.add(
                                ProblemKind::BrokenImage,
                                what.clone(),
                                format!("index {}: {e}", desc.digest),
                            ),
                        }
                    }
                    Some(MediaKind::Manifest) => {
                        match read().map_err(|e| e.to_string()).and_then(|b| {
                            serde_json::from_slice::<Manifest>(&b).map_err(|e| e.to_string())
                        }) {
                            Ok(m) => {
                                found_manifest = true;
                                todo.push(m.config);
                                todo.extend(m.layers);
                            }
                            Err(e) => report.add(
                                ProblemKind::BrokenImage,
                                what.clone(),
                                format!("manifest {}: {e}", desc.digest),
                            ),
                        }
                    }
                    _ => {}
                }
            }
            if !found_manifest && media_kind(&img.target.media_type) == Some(MediaKind::Index) {
                report.add(
                    ProblemKind::BrokenImage,
                    what,
                    "no manifest of its index is in the store",
                );
            }
        }

        // Snapshots: directory and parent of each record; directories without a record.
        let sn = self.inner.snapshotter.clone();
        let dir = sn.snapshots_dir();
        let mine: Vec<_> = snaps.iter().filter(|(_, s, _, _)| s == sn.name()).collect();
        let keys: BTreeSet<(&str, &str)> = mine
            .iter()
            .map(|(ns, _, key, _)| (ns.as_str(), key.as_str()))
            .collect();
        let ids: HashSet<u64> = mine.iter().map(|(_, _, _, r)| r.id).collect();
        for (ns, _, key, rec) in &mine {
            report.snapshots += 1;
            let what = format!("{ns}/{key}");
            let d = dir.join(rec.id.to_string());
            if !d.join("fs").is_dir() {
                report.add(
                    ProblemKind::BrokenSnapshot,
                    what.clone(),
                    format!("its directory {} is missing", d.display()),
                );
            }
            if let Some(p) = &rec.parent {
                if !keys.contains(&(ns.as_str(), p.as_str())) {
                    report.add(
                        ProblemKind::BrokenSnapshot,
                        what,
                        format!("its parent {p:?} is gone"),
                    );
                }
            }
        }
        let mut orphans: Vec<PathBuf> = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let recorded = name.parse::<u64>().is_ok_and(|id| ids.contains(&id));
                if !recorded && !young(&e.path(), grace) {
                    orphans.push(e.path());
                }
            }
        }
        for p in orphans {
            if repair && std::fs::remove_dir_all(&p).is_ok() {
                report.repaired(
                    ProblemKind::OrphanSnapshotDir,
                    p.display().to_string(),
                    "removed",
                );
            } else {
                report.add(
                    ProblemKind::OrphanSnapshotDir,
                    p.display().to_string(),
                    "no snapshot record names it",
                );
            }
        }

        // Containers: their snapshot.
        for (ns, c) in &containers {
            report.containers += 1;
            if c.snapshot_key.is_empty() || c.snapshotter != sn.name() {
                continue;
            }
            if !keys.contains(&(ns.as_str(), c.snapshot_key.as_str())) {
                report.add(
                    ProblemKind::BrokenContainer,
                    format!("{ns}/{}", c.id),
                    format!("its snapshot {:?} is gone", c.snapshot_key),
                );
            }
        }
        Ok(report)
    }
}
