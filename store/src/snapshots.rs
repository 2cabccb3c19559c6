//! Snapshotters: the overlayfs one (containerd's layout and mounts) and a plain-copy fallback
//! (`native`: every snapshot is a full copy of its parent) for file systems without overlay.
//! Both keep their records in the metadata database and their trees under
//! `<root>/snapshots/<id>/fs` (overlay also `<id>/work`).

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::SystemTime;

use berth_layer::WhiteoutMode;
use tracing::{debug, info, warn};

use crate::error::{IoContext, Result, StoreError};
use crate::filters::{label_field, Adaptor, Filter};
use crate::fsutil;
use crate::metadata::{
    Labels, LeaseResource, MetaRead, Metadata, SnapshotKind, SnapshotRecord, WriteTx,
};
use crate::Ctx;

/// A mount, as containerd's `types.Mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// File-system type (`bind`, `overlay`).
    pub kind: String,
    /// Source (`overlay` or a directory).
    pub source: String,
    /// Target within the container rootfs (empty for rootfs mounts).
    pub target: String,
    /// Mount options (`ro`, `rbind`, `lowerdir=...`).
    pub options: Vec<String>,
}

/// A snapshot as the API shows it (containerd's `snapshots.Info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Key (active, view) or name (committed).
    pub name: String,
    /// Parent's name.
    pub parent: Option<String>,
    /// Kind.
    pub kind: SnapshotKind,
    /// Labels.
    pub labels: Labels,
    /// Creation time.
    pub created_at: SystemTime,
    /// Last update.
    pub updated_at: SystemTime,
}

impl Adaptor for SnapshotInfo {
    fn field(&self, path: &[String]) -> Option<String> {
        match path[0].as_str() {
            "name" => Some(self.name.clone()),
            "parent" => self.parent.clone(),
            "kind" => Some(self.kind.as_str().to_string()),
            "labels" => label_field(&self.labels, path),
            _ => None,
        }
    }
}

/// Disk usage of a snapshot (its own layer only, like containerd).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Bytes used (allocated blocks).
    pub size: u64,
    /// Inodes.
    pub inodes: u64,
}

/// The snapshotter contract (containerd's `snapshots.Snapshotter`), namespaced by [`Ctx`].
/// Snapshots created while `ctx.lease` is set are added to that lease.
pub trait Snapshotter: Send + Sync {
    /// The snapshotter's name (`overlayfs`, `native`): the key of its labels and lease resources.
    fn name(&self) -> &'static str;
    /// Creates an active (writable) snapshot `key` on committed `parent`; returns its mounts.
    fn prepare(
        &self,
        ctx: &Ctx,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>>;
    /// Creates a read-only view `key` of committed `parent`; returns its mounts.
    fn view(
        &self,
        ctx: &Ctx,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>>;
    /// The mounts of an active snapshot or view.
    fn mounts(&self, ctx: &Ctx, key: &str) -> Result<Vec<Mount>>;
    /// Commits active snapshot `key` as `name` (the key disappears).
    fn commit(&self, ctx: &Ctx, name: &str, key: &str, labels: Labels) -> Result<()>;
    /// Removes a snapshot; `FailedPrecondition` while it has children.
    fn remove(&self, ctx: &Ctx, key: &str) -> Result<()>;
    /// One snapshot's info.
    fn stat(&self, ctx: &Ctx, key: &str) -> Result<SnapshotInfo>;
    /// Updates labels (fieldpaths `labels` or `labels.<key>`; empty = all labels).
    fn update(&self, ctx: &Ctx, info: &SnapshotInfo, fieldpaths: &[String])
        -> Result<SnapshotInfo>;
    /// Snapshots of the namespace matching any of `filters` (containerd filter syntax).
    fn list(&self, ctx: &Ctx, filters: &[String]) -> Result<Vec<SnapshotInfo>>;
    /// Disk usage of one snapshot.
    fn usage(&self, ctx: &Ctx, key: &str) -> Result<Usage>;
    /// Removes directories no record points to (left by crashes); returns them.
    fn cleanup(&self) -> Result<Vec<PathBuf>>;
    /// The directory holding one directory per snapshot, named by its record's id.
    fn snapshots_dir(&self) -> PathBuf;
    /// Where a layer diff for active snapshot `key` is applied, and with which whiteout mode.
    fn apply_target(&self, ctx: &Ctx, key: &str) -> Result<(PathBuf, WhiteoutMode)>;
    /// True if a layer applied into a parentless active snapshot may be committed onto any
    /// parent with [`commit_onto`](Self::commit_onto) (overlay: an upper dir does not depend on
    /// its lowers). Lets unpack apply all layers in parallel.
    fn independent_layers(&self) -> bool;
    /// Commits active `key` as `name` with `parent` as its parent (only if
    /// [`independent_layers`](Self::independent_layers)).
    fn commit_onto(
        &self,
        ctx: &Ctx,
        name: &str,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<()>;
    /// For GC: removes the record of `key` in `tx` (children must be gone) and moves its
    /// directory aside; returns the directory to delete once `tx` committed.
    fn remove_in_tx(&self, tx: &WriteTx, ns: &str, key: &str) -> Result<PathBuf>;
}

/// Which layout and mounts a [`FsSnapshotter`] produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// overlayfs: `fs` is the upper dir, parents are lower dirs.
    Overlay,
    /// Plain copies and bind mounts.
    Native,
}

/// The overlayfs or native snapshotter.
pub struct FsSnapshotter {
    meta: Arc<Metadata>,
    root: PathBuf,
    driver: Driver,
}

/// True if an overlay mount works in a scratch directory under `dir` (which must exist).
pub fn overlay_supported(dir: &Path) -> bool {
    let base = dir.join(format!(".overlay-probe-{}", fsutil::random_suffix()));
    let ok = (|| -> std::io::Result<bool> {
        for d in ["lower", "upper", "work", "merged"] {
            fs::create_dir_all(base.join(d))?;
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            base.join("lower").display(),
            base.join("upper").display(),
            base.join("work").display()
        );
        let merged = base.join("merged");
        let r = nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        );
        if r.is_ok() {
            let _ = nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH);
        }
        Ok(r.is_ok())
    })()
    .unwrap_or(false);
    let _ = fs::remove_dir_all(&base);
    ok
}

impl FsSnapshotter {
    /// Opens a snapshotter rooted at `root` (e.g. `<root>/io.containerd.snapshotter.v1.overlayfs`).
    pub fn open(
        meta: Arc<Metadata>,
        root: impl Into<PathBuf>,
        driver: Driver,
    ) -> Result<FsSnapshotter> {
        let root = root.into();
        let snaps = root.join("snapshots");
        fs::create_dir_all(&snaps).ctx("create directory", &snaps)?;
        // Each snapshot tree in a block group of its own (see set_topdir).
        fsutil::set_topdir(&snaps);
        Ok(FsSnapshotter { meta, root, driver })
    }

    /// The directory of snapshot `id`.
    fn dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    fn fs_path(&self, id: u64) -> PathBuf {
        self.dir(id).join("fs")
    }

    fn lease_kind(&self) -> String {
        format!("snapshots/{}", self.name())
    }

    fn get(&self, r: &impl MetaRead, ns: &str, key: &str) -> Result<SnapshotRecord> {
        r.snapshot(ns, self.name(), key)?
            .ok_or_else(|| StoreError::NotFound(format!("snapshot {key:?}")))
    }

    /// The ids of `parent` and its ancestors, nearest first.
    fn parent_ids(&self, r: &impl MetaRead, ns: &str, parent: Option<&str>) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        let mut cur = parent.map(str::to_string);
        while let Some(p) = cur {
            let rec = self.get(r, ns, &p)?;
            out.push(rec.id);
            cur = rec.parent;
            if out.len() > 10_000 {
                return Err(StoreError::FailedPrecondition(format!(
                    "snapshot parent chain of {p:?} loops"
                )));
            }
        }
        Ok(out)
    }

    fn mounts_for(&self, rec: &SnapshotRecord, parents: &[u64]) -> Vec<Mount> {
        let bind = |path: PathBuf, ro: bool| Mount {
            kind: "bind".into(),
            source: path.display().to_string(),
            target: String::new(),
            options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
        };
        let ro = rec.kind == SnapshotKind::View;
        if self.driver == Driver::Native || parents.is_empty() {
            return vec![bind(self.fs_path(rec.id), ro)];
        }
        let lower = parents
            .iter()
            .map(|id| self.fs_path(*id).display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        if ro {
            if parents.len() == 1 {
                return vec![bind(self.fs_path(parents[0]), true)];
            }
            return vec![Mount {
                kind: "overlay".into(),
                source: "overlay".into(),
                target: String::new(),
                options: vec![format!("lowerdir={lower}")],
            }];
        }
        vec![Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                format!("workdir={}", self.dir(rec.id).join("work").display()),
                format!("upperdir={}", self.fs_path(rec.id).display()),
                format!("lowerdir={lower}"),
            ],
        }]
    }

    fn create(
        &self,
        ctx: &Ctx,
        kind: SnapshotKind,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        if key.is_empty() {
            return Err(StoreError::InvalidArgument(
                "snapshot key must not be empty".into(),
            ));
        }
        let parent = parent.filter(|p| !p.is_empty());
        // Check before any copying: a clear error without work.
        self.meta.read(|r| {
            if r.snapshot(&ctx.namespace, self.name(), key)?.is_some() {
                return Err(StoreError::AlreadyExists(format!("snapshot {key:?}")));
            }
            if let Some(p) = parent {
                let rec = r
                    .snapshot(&ctx.namespace, self.name(), p)?
                    .ok_or_else(|| StoreError::NotFound(format!("parent snapshot {p:?}")))?;
                if rec.kind != SnapshotKind::Committed {
                    return Err(StoreError::InvalidArgument(format!(
                        "parent snapshot {p:?} is not committed"
                    )));
                }
            }
            Ok(())
        })?;
        let snaps = self.root.join("snapshots");
        let tmp = snaps.join(format!("new-{}", fsutil::random_suffix()));
        let mut builder = fs::DirBuilder::new();
        builder.mode(0o700);
        builder.create(&tmp).ctx("create directory", &tmp)?;
        let mut renamed: Option<PathBuf> = None;
        let res = (|| {
            let fsdir = tmp.join("fs");
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&fsdir)
                .ctx("create directory", &fsdir)?;
            if self.driver == Driver::Overlay {
                let w = tmp.join("work");
                fs::DirBuilder::new()
                    .mode(0o711)
                    .create(&w)
                    .ctx("create directory", &w)?;
            }
            if let (Driver::Native, Some(p)) = (self.driver, parent) {
                let pid = self.meta.read(|r| self.get(r, &ctx.namespace, p))?.id;
                copy_tree(&self.fs_path(pid), &fsdir)?;
            }
            self.meta.write(|tx| {
                let ns = &ctx.namespace;
                tx.ensure_namespace(ns)?;
                if tx.snapshot(ns, self.name(), key)?.is_some() {
                    return Err(StoreError::AlreadyExists(format!("snapshot {key:?}")));
                }
                let parents = self.parent_ids(tx, ns, parent)?;
                let id = tx.next_id(&format!("snapshots/{}", self.name()))?;
                let now = SystemTime::now();
                let rec = SnapshotRecord {
                    id,
                    kind,
                    parent: parent.map(str::to_string),
                    labels,
                    created_at: now,
                    updated_at: now,
                };
                tx.put_snapshot(ns, self.name(), key, &rec)?;
                if let Some(l) = &ctx.lease {
                    tx.lease_add(
                        ns,
                        l,
                        LeaseResource {
                            kind: self.lease_kind(),
                            id: key.to_string(),
                        },
                    )?;
                }
                let dir = self.dir(id);
                fs::rename(&tmp, &dir).ctx("rename", &dir)?;
                renamed = Some(dir);
                Ok(self.mounts_for(&rec, &parents))
            })
        })();
        if res.is_err() {
            let _ = fs::remove_dir_all(renamed.as_ref().unwrap_or(&tmp));
        } else if let Some(d) = &renamed {
            debug!(key, dir = %d.display(), "snapshot created");
        }
        res
    }

    fn do_commit(
        &self,
        ctx: &Ctx,
        name: &str,
        key: &str,
        parent: Option<Option<&str>>,
        labels: Labels,
    ) -> Result<()> {
        if name.is_empty() {
            return Err(StoreError::InvalidArgument(
                "snapshot name must not be empty".into(),
            ));
        }
        let ns = &ctx.namespace;
        self.meta.write(|tx| {
            let rec = self.get(tx, ns, key)?;
            if rec.kind != SnapshotKind::Active {
                return Err(StoreError::FailedPrecondition(format!(
                    "snapshot {key:?} is not active"
                )));
            }
            if tx.snapshot(ns, self.name(), name)?.is_some() {
                return Err(StoreError::AlreadyExists(format!("snapshot {name:?}")));
            }
            let new_parent = match parent {
                None => rec.parent.clone(),
                Some(p) => {
                    if let Some(p) = p {
                        let prec = self.get(tx, ns, p)?;
                        if prec.kind != SnapshotKind::Committed {
                            return Err(StoreError::InvalidArgument(format!(
                                "parent snapshot {p:?} is not committed"
                            )));
                        }
                    }
                    p.map(str::to_string)
                }
            };
            let mut all = rec.labels.clone();
            all.extend(labels);
            let now = SystemTime::now();
            let committed = SnapshotRecord {
                id: rec.id,
                kind: SnapshotKind::Committed,
                parent: new_parent,
                labels: all,
                created_at: now,
                updated_at: now,
            };
            tx.delete_snapshot(ns, self.name(), key)?;
            tx.put_snapshot(ns, self.name(), name, &committed)?;
            if let Some(l) = &ctx.lease {
                tx.lease_add(
                    ns,
                    l,
                    LeaseResource {
                        kind: self.lease_kind(),
                        id: name.to_string(),
                    },
                )?;
            }
            Ok(())
        })?;
        // The work dir is only needed while active.
        let work = self.dir_of(ctx, name)?.join("work");
        if work.exists() {
            let _ = fs::remove_dir_all(&work).map(|_| fs::create_dir(&work));
        }
        Ok(())
    }

    fn dir_of(&self, ctx: &Ctx, key: &str) -> Result<PathBuf> {
        Ok(self.dir(self.meta.read(|r| self.get(r, &ctx.namespace, key))?.id))
    }

    fn info(name: &str, r: &SnapshotRecord) -> SnapshotInfo {
        SnapshotInfo {
            name: name.to_string(),
            parent: r.parent.clone(),
            kind: r.kind,
            labels: r.labels.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl Snapshotter for FsSnapshotter {
    fn name(&self) -> &'static str {
        match self.driver {
            Driver::Overlay => "overlayfs",
            Driver::Native => "native",
        }
    }

    fn prepare(
        &self,
        ctx: &Ctx,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        self.create(ctx, SnapshotKind::Active, key, parent, labels)
    }

    fn view(
        &self,
        ctx: &Ctx,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        self.create(ctx, SnapshotKind::View, key, parent, labels)
    }

    fn mounts(&self, ctx: &Ctx, key: &str) -> Result<Vec<Mount>> {
        self.meta.read(|r| {
            let rec = self.get(r, &ctx.namespace, key)?;
            if rec.kind == SnapshotKind::Committed {
                return Err(StoreError::FailedPrecondition(format!(
                    "snapshot {key:?} is committed: it has no mounts"
                )));
            }
            let parents = self.parent_ids(r, &ctx.namespace, rec.parent.as_deref())?;
            Ok(self.mounts_for(&rec, &parents))
        })
    }

    fn commit(&self, ctx: &Ctx, name: &str, key: &str, labels: Labels) -> Result<()> {
        self.do_commit(ctx, name, key, None, labels)
    }

    fn commit_onto(
        &self,
        ctx: &Ctx,
        name: &str,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<()> {
        if !self.independent_layers() {
            return Err(StoreError::FailedPrecondition(format!(
                "snapshotter {} cannot re-parent a snapshot",
                self.name()
            )));
        }
        self.do_commit(ctx, name, key, Some(parent), labels)
    }

    fn remove(&self, ctx: &Ctx, key: &str) -> Result<()> {
        let dir = match self
            .meta
            .write(|tx| self.remove_in_tx(tx, &ctx.namespace, key))
        {
            Ok(dir) => dir,
            Err(e) if e.is_disk_full() => {
                // A full disk refuses even the metadata write that would free space (the
                // database is copy-on-write). An active snapshot being removed is nobody's
                // parent and its files are going anyway: free them first, then try again.
                let info = self.stat(ctx, key)?;
                if info.kind != SnapshotKind::Active {
                    return Err(e);
                }
                let (files, _) = self.apply_target(ctx, key)?;
                // The failed transaction may have moved the directory aside already.
                let files = match files.parent().and_then(|d| d.file_name()) {
                    Some(id) if !files.exists() => self
                        .root
                        .join("snapshots")
                        .join(format!("rm-{}", id.to_string_lossy()))
                        .join("fs"),
                    _ => files,
                };
                warn!(
                    key,
                    "disk full: emptying the snapshot before removing its record"
                );
                fsutil::empty_dir(&files)?;
                self.meta
                    .write(|tx| self.remove_in_tx(tx, &ctx.namespace, key))?
            }
            Err(e) => return Err(e),
        };
        fs::remove_dir_all(&dir).ctx("remove", &dir)
    }

    fn remove_in_tx(&self, tx: &WriteTx, ns: &str, key: &str) -> Result<PathBuf> {
        let rec = self.get(tx, ns, key)?;
        let children: Vec<String> = tx
            .snapshots(ns, self.name())?
            .into_iter()
            .filter(|(_, r)| r.parent.as_deref() == Some(key))
            .map(|(k, _)| k)
            .collect();
        if !children.is_empty() {
            return Err(StoreError::FailedPrecondition(format!(
                "cannot remove snapshot {key:?}: it has children ({})",
                children.join(", ")
            )));
        }
        tx.delete_snapshot(ns, self.name(), key)?;
        let dir = self.dir(rec.id);
        let aside = self.root.join("snapshots").join(format!("rm-{}", rec.id));
        if dir.exists() {
            fs::rename(&dir, &aside).ctx("rename", &dir)?;
        }
        Ok(aside)
    }

    fn stat(&self, ctx: &Ctx, key: &str) -> Result<SnapshotInfo> {
        let rec = self.meta.read(|r| self.get(r, &ctx.namespace, key))?;
        Ok(Self::info(key, &rec))
    }

    fn update(
        &self,
        ctx: &Ctx,
        info: &SnapshotInfo,
        fieldpaths: &[String],
    ) -> Result<SnapshotInfo> {
        let ns = &ctx.namespace;
        self.meta.write(|tx| {
            let mut rec = self.get(tx, ns, &info.name)?;
            rec.labels = apply_label_update(&rec.labels, &info.labels, fieldpaths, "snapshot")?;
            rec.updated_at = SystemTime::now();
            tx.put_snapshot(ns, self.name(), &info.name, &rec)?;
            Ok(Self::info(&info.name, &rec))
        })
    }

    fn list(&self, ctx: &Ctx, filters: &[String]) -> Result<Vec<SnapshotInfo>> {
        let f = Filter::parse(filters)?;
        let all = self
            .meta
            .read(|r| r.snapshots(&ctx.namespace, self.name()))?;
        Ok(all
            .iter()
            .map(|(k, r)| Self::info(k, r))
            .filter(|i| f.matches(i))
            .collect())
    }

    fn usage(&self, ctx: &Ctx, key: &str) -> Result<Usage> {
        let dir = self.fs_path(self.meta.read(|r| self.get(r, &ctx.namespace, key))?.id);
        let mut seen = HashSet::new();
        let mut u = Usage::default();
        disk_usage(&dir, &mut seen, &mut u)?;
        Ok(u)
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    fn cleanup(&self) -> Result<Vec<PathBuf>> {
        let ids: HashSet<u64> = self
            .meta
            .read(|r| r.all_snapshots())?
            .into_iter()
            .filter(|(_, sn, _, _)| sn == self.name())
            .map(|(_, _, _, r)| r.id)
            .collect();
        let snaps = self.root.join("snapshots");
        let mut removed = Vec::new();
        for e in fs::read_dir(&snaps).ctx("read directory", &snaps)? {
            let e = e.ctx("read directory", &snaps)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let keep = name
                .parse::<u64>()
                .map(|id| ids.contains(&id))
                .unwrap_or(false);
            if !keep {
                let p = e.path();
                if let Err(err) = fs::remove_dir_all(&p) {
                    warn!(path = %p.display(), %err, "cannot remove orphan snapshot directory");
                    continue;
                }
                info!(path = %p.display(), "removed orphan snapshot directory");
                removed.push(p);
            }
        }
        Ok(removed)
    }

    fn apply_target(&self, ctx: &Ctx, key: &str) -> Result<(PathBuf, WhiteoutMode)> {
        let rec = self.meta.read(|r| self.get(r, &ctx.namespace, key))?;
        if rec.kind != SnapshotKind::Active {
            return Err(StoreError::FailedPrecondition(format!(
                "snapshot {key:?} is not active"
            )));
        }
        let mode = match self.driver {
            Driver::Overlay => WhiteoutMode::OverlayUpper,
            Driver::Native => WhiteoutMode::Delete,
        };
        Ok((self.fs_path(rec.id), mode))
    }

    fn independent_layers(&self) -> bool {
        self.driver == Driver::Overlay
    }
}

/// Applies a label update as containerd does: `fieldpaths` empty replaces all labels;
/// `labels` replaces all; `labels.<k>` sets or (if absent in `new`) removes one.
pub(crate) fn apply_label_update(
    old: &Labels,
    new: &Labels,
    fieldpaths: &[String],
    what: &str,
) -> Result<Labels> {
    if fieldpaths.is_empty() {
        return Ok(new.clone());
    }
    let mut out = old.clone();
    for fp in fieldpaths {
        if fp == "labels" {
            out = new.clone();
        } else if let Some(k) = fp.strip_prefix("labels.") {
            match new.get(k) {
                Some(v) => {
                    out.insert(k.to_string(), v.clone());
                }
                None => {
                    out.remove(k);
                }
            }
        } else {
            return Err(StoreError::InvalidArgument(format!(
                "cannot update {fp:?} of a {what}: only labels are mutable"
            )));
        }
    }
    Ok(out)
}

fn disk_usage(p: &Path, seen: &mut HashSet<(u64, u64)>, u: &mut Usage) -> Result<()> {
    let m = fs::symlink_metadata(p).ctx("stat", p)?;
    if seen.insert((m.dev(), m.ino())) {
        u.inodes += 1;
        u.size += m.blocks() * 512;
    }
    if m.is_dir() {
        for e in fs::read_dir(p).ctx("read directory", p)? {
            disk_usage(&e.ctx("read directory", p)?.path(), seen, u)?;
        }
    }
    Ok(())
}

/// Copies a tree with everything a rootfs needs (owners, modes, times, links, devices,
/// xattrs): `cp -a` does all of it correctly and with reflinks where possible.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let out = Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .output()
        .ctx("run cp", to)?;
    if !out.status.success() {
        return Err(StoreError::io(
            "copy snapshot",
            to,
            std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        ));
    }
    Ok(())
}
