//! The [`Store`] facade: everything the API layer needs, under one root directory.
//!
//! Layout (containerd's names): `<root>/io.containerd.content.v1.content/`,
//! `<root>/io.containerd.metadata.v1.bolt/meta.redb`,
//! `<root>/io.containerd.snapshotter.v1.<overlayfs|native>/`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use tracing::{info, warn};

use crate::content::{ContentStore, ReaderAt, Status, Writer};
use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::filters::{label_field, Adaptor, Filter};
use crate::gc::{self, GcReport};
use crate::images::{self, ExportOptions, ImportOptions, UnpackReport};
use crate::metadata::{
    Container, ContentInfo, Image, Labels, Lease, LeaseResource, MetaRead, Metadata, Namespace,
};
use crate::oci::Platform;
use crate::snapshots::{apply_label_update, overlay_supported, Driver, FsSnapshotter, Snapshotter};
use crate::Ctx;

/// Which snapshotter to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotterChoice {
    /// overlayfs if a probe mount under the root works, else native.
    #[default]
    Auto,
    /// overlayfs (fails to open if overlay mounts do not work).
    Overlay,
    /// Plain copies.
    Native,
}

/// Where and how to open a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Persistent root (`/var/lib/berth`).
    pub root: PathBuf,
    /// Snapshotter choice.
    pub snapshotter: SnapshotterChoice,
    /// Run [`Store::cleanup`] when opening (berthd does; `berthd check` must see the store
    /// as the crash left it).
    pub recover: bool,
}

impl StoreConfig {
    /// Defaults for `root`: automatic snapshotter choice, recovery on open.
    pub fn new(root: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            root: root.into(),
            snapshotter: SnapshotterChoice::Auto,
            recover: true,
        }
    }
}

/// What [`Store::cleanup`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Temporary leases of interrupted operations that were removed.
    pub leases: Vec<String>,
    /// `extract-*` snapshots of interrupted unpacks, as `ns/key`.
    pub snapshots: Vec<String>,
    /// Snapshot directories without a record.
    pub snapshot_dirs: Vec<PathBuf>,
    /// Ingests removed.
    pub ingests: Vec<String>,
    /// What the GC run after it removed.
    pub gc: GcReport,
}

/// Label marking a lease the stores created for one operation (removed by `cleanup`).
pub const LABEL_TEMPORARY_LEASE: &str = "berth.io/temporary";
/// Label marking a temporary lease whose content is worth keeping after a crash (a pull's: a
/// second pull then fetches only what is missing). `cleanup` leaves such a lease to expire.
pub const LABEL_RESUMABLE_LEASE: &str = "berth.io/resumable";
/// Label of a lease's expiry time (RFC 3339).
pub const LABEL_GC_EXPIRE: &str = "containerd.io/gc.expire";

pub(crate) struct Inner {
    pub(crate) root: PathBuf,
    pub(crate) meta: Arc<Metadata>,
    pub(crate) content: ContentStore,
    pub(crate) snapshotter: Arc<dyn Snapshotter>,
    /// Held shared by operations that publish content, exclusively by GC.
    gc_lock: RwLock<()>,
}

/// The stores of one berthd root. Cheap to clone, `Send + Sync`; every method is blocking.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl Store {
    /// Opens (creating) the stores under `cfg.root`, picks the snapshotter, and recovers from
    /// a crash: see [`cleanup`](Self::cleanup), which `open` runs.
    pub fn open(cfg: &StoreConfig) -> Result<Store> {
        let root = cfg.root.clone();
        std::fs::create_dir_all(&root).map_err(|e| StoreError::io("create directory", &root, e))?;
        let meta = Arc::new(Metadata::open(
            &root.join("io.containerd.metadata.v1.bolt/meta.redb"),
        )?);
        let content = ContentStore::open(root.join("io.containerd.content.v1.content"))?;
        let driver = match cfg.snapshotter {
            SnapshotterChoice::Native => Driver::Native,
            SnapshotterChoice::Overlay => {
                if !overlay_supported(&root) {
                    return Err(StoreError::FailedPrecondition(format!(
                        "overlayfs snapshotter requested but an overlay mount under {} fails",
                        root.display()
                    )));
                }
                Driver::Overlay
            }
            SnapshotterChoice::Auto => {
                if overlay_supported(&root) {
                    Driver::Overlay
                } else {
                    warn!(
                        "overlay mounts do not work here: using the native (copying) snapshotter"
                    );
                    Driver::Native
                }
            }
        };
        let sn_root = root.join(match driver {
            Driver::Overlay => "io.containerd.snapshotter.v1.overlayfs",
            Driver::Native => "io.containerd.snapshotter.v1.native",
        });
        let snapshotter: Arc<dyn Snapshotter> =
            Arc::new(FsSnapshotter::open(meta.clone(), sn_root, driver)?);
        let store = Store {
            inner: Arc::new(Inner {
                root,
                meta,
                content,
                snapshotter,
                gc_lock: RwLock::new(()),
            }),
        };
        if cfg.recover {
            let report = store.cleanup()?;
            info!(
                snapshotter = store.snapshotter().name(),
                ?report,
                "store opened"
            );
        }
        Ok(store)
    }

    /// The root directory.
    pub fn root(&self) -> &std::path::Path {
        &self.inner.root
    }

    /// The metadata database (for reads the facade does not offer).
    pub fn metadata(&self) -> &Metadata {
        &self.inner.meta
    }

    /// The on-disk content store (namespace-blind).
    pub fn content_store(&self) -> &ContentStore {
        &self.inner.content
    }

    /// The snapshotter in use.
    pub fn snapshotter(&self) -> &dyn Snapshotter {
        self.inner.snapshotter.as_ref()
    }

    pub(crate) fn gc_shared(&self) -> RwLockReadGuard<'_, ()> {
        self.inner.gc_lock.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn gc_exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.inner
            .gc_lock
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    // ---- namespaces ----

    /// Every namespace.
    pub fn namespaces(&self) -> Result<Vec<Namespace>> {
        self.inner.meta.read(|r| r.namespaces())
    }

    /// One namespace; `NotFound` if missing.
    pub fn namespace(&self, name: &str) -> Result<Namespace> {
        self.inner
            .meta
            .read(|r| r.namespace(name))?
            .ok_or_else(|| StoreError::NotFound(format!("namespace {name}")))
    }

    /// Creates a namespace; `AlreadyExists` if it exists, `InvalidArgument` for a bad name.
    pub fn namespace_create(&self, ns: &Namespace) -> Result<()> {
        self.inner.meta.write(|tx| tx.create_namespace(ns))
    }

    /// Updates a namespace's labels (fieldpaths as containerd: `labels`, `labels.<k>`).
    pub fn namespace_update(&self, ns: &Namespace, fieldpaths: &[String]) -> Result<Namespace> {
        self.inner.meta.write(|tx| {
            let mut cur = tx
                .namespace(&ns.name)?
                .ok_or_else(|| StoreError::NotFound(format!("namespace {}", ns.name)))?;
            cur.labels = apply_label_update(&cur.labels, &ns.labels, fieldpaths, "namespace")?;
            tx.update_namespace(&cur)?;
            Ok(cur)
        })
    }

    /// Deletes an empty namespace (`FailedPrecondition` naming what it still holds).
    pub fn namespace_delete(&self, name: &str) -> Result<()> {
        self.inner.meta.write(|tx| tx.delete_namespace(name))
    }

    // ---- content ----

    /// A blob's info in the namespace; `NotFound` if it was not committed there.
    pub fn content_info(&self, ctx: &Ctx, d: &Digest) -> Result<ContentInfo> {
        self.inner
            .meta
            .read(|r| r.content(&ctx.namespace, d))?
            .ok_or_else(|| StoreError::NotFound(format!("content {d}")))
    }

    /// Updates a blob's labels (fieldpaths `labels`, `labels.<k>`; empty = replace all).
    pub fn content_update(
        &self,
        ctx: &Ctx,
        info: &ContentInfo,
        fieldpaths: &[String],
    ) -> Result<ContentInfo> {
        let _g = self.gc_shared();
        self.inner.meta.write(|tx| {
            let mut cur = tx
                .content(&ctx.namespace, &info.digest)?
                .ok_or_else(|| StoreError::NotFound(format!("content {}", info.digest)))?;
            cur.labels = apply_label_update(&cur.labels, &info.labels, fieldpaths, "blob")?;
            cur.updated_at = SystemTime::now();
            tx.put_content(&ctx.namespace, &cur)?;
            Ok(cur)
        })
    }

    /// Sets (or with `None` removes) labels on a blob, keeping the others.
    pub fn content_set_labels(
        &self,
        ctx: &Ctx,
        d: &Digest,
        labels: &[(String, Option<String>)],
    ) -> Result<ContentInfo> {
        let _g = self.gc_shared();
        self.inner.meta.write(|tx| {
            let mut cur = tx
                .content(&ctx.namespace, d)?
                .ok_or_else(|| StoreError::NotFound(format!("content {d}")))?;
            for (k, v) in labels {
                match v {
                    Some(v) => cur.labels.insert(k.clone(), v.clone()),
                    None => cur.labels.remove(k),
                };
            }
            cur.updated_at = SystemTime::now();
            tx.put_content(&ctx.namespace, &cur)?;
            Ok(cur)
        })
    }

    /// Blobs of the namespace matching any filter (`digest`, `size`, `labels.<k>`).
    pub fn content_list(&self, ctx: &Ctx, filters: &[String]) -> Result<Vec<ContentInfo>> {
        let f = Filter::parse(filters)?;
        Ok(self
            .inner
            .meta
            .read(|r| r.contents(&ctx.namespace))?
            .into_iter()
            .filter(|c| f.matches(c))
            .collect())
    }

    /// Removes a blob from the namespace; the file goes when no namespace has it.
    pub fn content_delete(&self, ctx: &Ctx, d: &Digest) -> Result<()> {
        let _g = self.gc_exclusive();
        let still_used = self.inner.meta.write(|tx| {
            if !tx.delete_content(&ctx.namespace, d)? {
                return Err(StoreError::NotFound(format!("content {d}")));
            }
            tx.content_referenced(d)
        })?;
        if !still_used {
            match self.inner.content.delete(d) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Opens a blob of the namespace for reading.
    pub fn content_reader(&self, ctx: &Ctx, d: &Digest) -> Result<ReaderAt> {
        self.content_info(ctx, d)?;
        self.inner.content.reader_at(d)
    }

    /// Reads a whole blob of the namespace (at most `limit` bytes).
    pub fn content_read_all(&self, ctx: &Ctx, d: &Digest, limit: u64) -> Result<Vec<u8>> {
        self.content_info(ctx, d)?;
        self.inner.content.read_all(d, limit)
    }

    fn backend_ref(ctx: &Ctx, r: &str) -> String {
        format!("{}/{}", ctx.namespace, r)
    }

    /// Opens (or resumes) an ingest in the namespace. `AlreadyExists` if `expected` is
    /// already committed in this namespace; `Unavailable` if another writer holds the ref.
    /// Within a lease, the ingest is added to it.
    pub fn content_writer(
        &self,
        ctx: &Ctx,
        r: &str,
        total: Option<u64>,
        expected: Option<Digest>,
    ) -> Result<ContentWriter> {
        crate::metadata::validate_namespace(&ctx.namespace)?;
        if let Some(d) = &expected {
            if self
                .inner
                .meta
                .read(|r| r.content(&ctx.namespace, d))?
                .is_some()
            {
                return Err(StoreError::AlreadyExists(format!("content {d}")));
            }
        }
        if let Some(l) = &ctx.lease {
            self.inner.meta.write(|tx| {
                tx.lease_add(
                    &ctx.namespace,
                    l,
                    LeaseResource {
                        kind: "ingests".into(),
                        id: r.to_string(),
                    },
                )
            })?;
        }
        let w = self
            .inner
            .content
            .writer(&Self::backend_ref(ctx, r), total, expected)?;
        Ok(ContentWriter {
            store: self.clone(),
            ctx: ctx.clone(),
            r#ref: r.to_string(),
            w,
        })
    }

    fn strip_status(ctx: &Ctx, mut s: Status) -> Option<Status> {
        let p = format!("{}/", ctx.namespace);
        s.r#ref = s.r#ref.strip_prefix(&p)?.to_string();
        Some(s)
    }

    /// The status of ingest `ref` in the namespace.
    pub fn content_status(&self, ctx: &Ctx, r: &str) -> Result<Status> {
        let s = self.inner.content.status(&Self::backend_ref(ctx, r))?;
        Self::strip_status(ctx, s).ok_or_else(|| StoreError::NotFound(format!("ingest {r:?}")))
    }

    /// Ingests of the namespace matching any filter (`ref`).
    pub fn content_statuses(&self, ctx: &Ctx, filters: &[String]) -> Result<Vec<Status>> {
        let f = Filter::parse(filters)?;
        Ok(self
            .inner
            .content
            .list_statuses()?
            .into_iter()
            .filter_map(|s| Self::strip_status(ctx, s))
            .filter(|s| f.matches(s))
            .collect())
    }

    /// Aborts ingest `ref` of the namespace.
    pub fn content_abort(&self, ctx: &Ctx, r: &str) -> Result<()> {
        self.inner.content.abort(&Self::backend_ref(ctx, r))
    }

    // ---- images ----

    /// One image; `NotFound` if missing.
    pub fn image(&self, ctx: &Ctx, name: &str) -> Result<Image> {
        self.inner
            .meta
            .read(|r| r.image(&ctx.namespace, name))?
            .ok_or_else(|| StoreError::NotFound(format!("image {name:?}")))
    }

    /// Images of the namespace matching any filter (`name`, `target.digest`,
    /// `target.mediatype`, `labels.<k>`).
    pub fn image_list(&self, ctx: &Ctx, filters: &[String]) -> Result<Vec<Image>> {
        let f = Filter::parse(filters)?;
        Ok(self
            .inner
            .meta
            .read(|r| r.images(&ctx.namespace))?
            .into_iter()
            .filter(|i| f.matches(i))
            .collect())
    }

    /// Creates an image record; `AlreadyExists` if the name is taken. Times are set here.
    pub fn image_create(&self, ctx: &Ctx, img: &Image) -> Result<Image> {
        validate_image(img)?;
        let _g = self.gc_shared();
        self.inner.meta.write(|tx| {
            if tx.image(&ctx.namespace, &img.name)?.is_some() {
                return Err(StoreError::AlreadyExists(format!("image {:?}", img.name)));
            }
            let now = SystemTime::now();
            let mut img = img.clone();
            img.created_at = now;
            img.updated_at = now;
            tx.put_image(&ctx.namespace, &img)?;
            Ok(img)
        })
    }

    /// Updates an image (fieldpaths: `labels`, `labels.<k>`, `target`, `annotations`; empty =
    /// labels and target). `NotFound` if missing.
    pub fn image_update(&self, ctx: &Ctx, img: &Image, fieldpaths: &[String]) -> Result<Image> {
        validate_image(img)?;
        let _g = self.gc_shared();
        self.inner.meta.write(|tx| {
            let mut cur = tx
                .image(&ctx.namespace, &img.name)?
                .ok_or_else(|| StoreError::NotFound(format!("image {:?}", img.name)))?;
            if fieldpaths.is_empty() {
                cur.labels = img.labels.clone();
                cur.target = img.target.clone();
            } else {
                let mut label_paths = Vec::new();
                for fp in fieldpaths {
                    match fp.as_str() {
                        "target" => cur.target = img.target.clone(),
                        "annotations" => cur.target.annotations = img.target.annotations.clone(),
                        _ => label_paths.push(fp.clone()),
                    }
                }
                if !label_paths.is_empty() {
                    cur.labels =
                        apply_label_update(&cur.labels, &img.labels, &label_paths, "image")?;
                }
            }
            cur.updated_at = SystemTime::now();
            tx.put_image(&ctx.namespace, &cur)?;
            Ok(cur)
        })
    }

    /// Deletes an image record (run [`collect`](Self::collect) to free what it held).
    pub fn image_delete(&self, ctx: &Ctx, name: &str) -> Result<()> {
        self.inner
            .meta
            .write(|tx| tx.delete_image(&ctx.namespace, name))
    }

    /// Imports an OCI image-layout or `docker save` archive; see [`images::import`].
    pub fn import(
        &self,
        ctx: &Ctx,
        archive: impl Read,
        opts: &ImportOptions,
    ) -> Result<Vec<Image>> {
        images::import(self, ctx, archive, opts)
    }

    /// Exports images as an OCI archive; see [`images::export`].
    pub fn export(
        &self,
        ctx: &Ctx,
        names: &[String],
        out: impl Write,
        opts: &ExportOptions,
    ) -> Result<()> {
        images::export(self, ctx, names, out, opts)
    }

    /// Unpacks an image into snapshots; see [`images::unpack`].
    pub fn unpack(
        &self,
        ctx: &Ctx,
        name: &str,
        platform: Option<&Platform>,
    ) -> Result<UnpackReport> {
        images::unpack(self, ctx, name, platform)
    }

    // ---- leases ----

    /// Creates a lease (`id` empty = a random one); `AlreadyExists` if taken.
    pub fn lease_create(&self, ctx: &Ctx, id: &str, labels: Labels) -> Result<Lease> {
        if let Some(exp) = labels.get(LABEL_GC_EXPIRE) {
            chrono::DateTime::parse_from_rfc3339(exp).map_err(|e| {
                StoreError::InvalidArgument(format!("lease label {LABEL_GC_EXPIRE}={exp:?}: {e}"))
            })?;
        }
        let id = if id.is_empty() {
            format!("lease-{}", crate::fsutil::random_suffix())
        } else {
            id.to_string()
        };
        self.inner.meta.write(|tx| {
            if tx.lease(&ctx.namespace, &id)?.is_some() {
                return Err(StoreError::AlreadyExists(format!("lease {id:?}")));
            }
            let l = Lease {
                id: id.clone(),
                labels,
                created_at: SystemTime::now(),
                resources: Default::default(),
            };
            tx.put_lease(&ctx.namespace, &l)?;
            Ok(l)
        })
    }

    /// Deletes a lease (run [`collect`](Self::collect) to free what it held).
    pub fn lease_delete(&self, ctx: &Ctx, id: &str) -> Result<()> {
        self.inner
            .meta
            .write(|tx| tx.delete_lease(&ctx.namespace, id))
    }

    /// Leases of the namespace matching any filter (`id`, `labels.<k>`).
    pub fn lease_list(&self, ctx: &Ctx, filters: &[String]) -> Result<Vec<Lease>> {
        let f = Filter::parse(filters)?;
        Ok(self
            .inner
            .meta
            .read(|r| r.leases(&ctx.namespace))?
            .into_iter()
            .filter(|l| f.matches(l))
            .collect())
    }

    /// Adds a resource to a lease.
    pub fn lease_add_resource(&self, ctx: &Ctx, id: &str, r: LeaseResource) -> Result<()> {
        self.inner
            .meta
            .write(|tx| tx.lease_add(&ctx.namespace, id, r))
    }

    /// Removes a resource from a lease.
    pub fn lease_delete_resource(&self, ctx: &Ctx, id: &str, r: &LeaseResource) -> Result<()> {
        self.inner
            .meta
            .write(|tx| tx.lease_remove(&ctx.namespace, id, r))
    }

    /// A lease's resources.
    pub fn lease_resources(&self, ctx: &Ctx, id: &str) -> Result<Vec<LeaseResource>> {
        let l = self
            .inner
            .meta
            .read(|r| r.lease(&ctx.namespace, id))?
            .ok_or_else(|| StoreError::NotFound(format!("lease {id:?}")))?;
        Ok(l.resources.into_iter().collect())
    }

    /// Runs `f` within a fresh temporary lease (expiring in 24 h, removed by `cleanup` after a
    /// crash), deleting the lease afterwards: what `f` creates is safe from GC until then.
    pub fn with_temp_lease<R>(&self, ctx: &Ctx, f: impl FnOnce(&Ctx) -> Result<R>) -> Result<R> {
        self.temp_lease(ctx, false, f)
    }

    /// Like [`Store::with_temp_lease`], but after a crash `cleanup` keeps the lease (until it
    /// expires) and the content it holds, so that the operation can pick up where it stopped.
    pub fn with_resumable_lease<R>(
        &self,
        ctx: &Ctx,
        f: impl FnOnce(&Ctx) -> Result<R>,
    ) -> Result<R> {
        self.temp_lease(ctx, true, f)
    }

    fn temp_lease<R>(
        &self,
        ctx: &Ctx,
        resumable: bool,
        f: impl FnOnce(&Ctx) -> Result<R>,
    ) -> Result<R> {
        let mut labels = Labels::new();
        labels.insert(LABEL_TEMPORARY_LEASE.into(), "true".into());
        if resumable {
            labels.insert(LABEL_RESUMABLE_LEASE.into(), "true".into());
        }
        let exp = chrono::Utc::now() + chrono::Duration::hours(24);
        labels.insert(LABEL_GC_EXPIRE.into(), exp.to_rfc3339());
        let lease = self.lease_create(ctx, "", labels)?;
        let res = f(&ctx.with_lease(&lease.id));
        if let Err(e) = self.lease_delete(ctx, &lease.id) {
            warn!(lease = lease.id, %e, "cannot delete temporary lease");
        }
        res
    }

    // ---- containers ----

    /// One container.
    pub fn container(&self, ctx: &Ctx, id: &str) -> Result<Container> {
        self.inner
            .meta
            .read(|r| r.container(&ctx.namespace, id))?
            .ok_or_else(|| StoreError::NotFound(format!("container {id:?}")))
    }

    /// Containers of the namespace matching any filter (`id`, `image`, `labels.<k>`, ...).
    pub fn container_list(&self, ctx: &Ctx, filters: &[String]) -> Result<Vec<Container>> {
        let f = Filter::parse(filters)?;
        Ok(self
            .inner
            .meta
            .read(|r| r.containers(&ctx.namespace))?
            .into_iter()
            .filter(|c| f.matches(c))
            .collect())
    }

    /// Creates a container record (times set here).
    pub fn container_create(&self, ctx: &Ctx, c: &Container) -> Result<Container> {
        let _g = self.gc_shared();
        let now = SystemTime::now();
        let mut c = c.clone();
        c.created_at = now;
        c.updated_at = now;
        self.inner
            .meta
            .write(|tx| tx.create_container(&ctx.namespace, &c))?;
        Ok(c)
    }

    /// Replaces a container record (keeps `created_at`).
    pub fn container_update(&self, ctx: &Ctx, c: &Container) -> Result<Container> {
        let _g = self.gc_shared();
        self.inner.meta.write(|tx| {
            let cur = tx
                .container(&ctx.namespace, &c.id)?
                .ok_or_else(|| StoreError::NotFound(format!("container {:?}", c.id)))?;
            let mut c = c.clone();
            c.created_at = cur.created_at;
            c.updated_at = SystemTime::now();
            tx.update_container(&ctx.namespace, &c)?;
            Ok(c)
        })
    }

    /// Deletes a container record.
    pub fn container_delete(&self, ctx: &Ctx, id: &str) -> Result<()> {
        self.inner
            .meta
            .write(|tx| tx.delete_container(&ctx.namespace, id))
    }

    // ---- engine records (networks, ...) ----

    /// Record `name` of `kind` in the namespace, decoded; `None` if missing.
    pub fn record<T: serde::de::DeserializeOwned>(
        &self,
        ctx: &Ctx,
        kind: &str,
        name: &str,
    ) -> Result<Option<T>> {
        let bytes = self
            .inner
            .meta
            .read(|r| r.record(&ctx.namespace, kind, name))?;
        bytes
            .map(|b| {
                serde_json::from_slice(&b).map_err(|source| StoreError::Corrupt {
                    what: format!("{kind} record {name:?}"),
                    source,
                })
            })
            .transpose()
    }

    /// Every record of `kind` in the namespace, decoded, by name.
    pub fn records<T: serde::de::DeserializeOwned>(
        &self,
        ctx: &Ctx,
        kind: &str,
    ) -> Result<Vec<(String, T)>> {
        let rows = self.inner.meta.read(|r| r.records(&ctx.namespace, kind))?;
        rows.into_iter()
            .map(|(name, b)| {
                let v = serde_json::from_slice(&b).map_err(|source| StoreError::Corrupt {
                    what: format!("{kind} record {name:?}"),
                    source,
                })?;
                Ok((name, v))
            })
            .collect()
    }

    /// Creates record `name` of `kind` in the namespace; `AlreadyExists` if taken.
    pub fn record_create<T: serde::Serialize>(
        &self,
        ctx: &Ctx,
        kind: &str,
        name: &str,
        value: &T,
    ) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|source| StoreError::Corrupt {
            what: format!("{kind} record {name:?}"),
            source,
        })?;
        self.inner.meta.write(|tx| {
            if tx.record(&ctx.namespace, kind, name)?.is_some() {
                return Err(StoreError::AlreadyExists(format!("{kind} {name:?}")));
            }
            tx.put_record(&ctx.namespace, kind, name, &bytes)
        })
    }

    /// Deletes record `name` of `kind`; `NotFound` if missing.
    pub fn record_delete(&self, ctx: &Ctx, kind: &str, name: &str) -> Result<()> {
        self.inner.meta.write(|tx| {
            if !tx.delete_record(&ctx.namespace, kind, name)? {
                return Err(StoreError::NotFound(format!("{kind} {name:?}")));
            }
            Ok(())
        })
    }

    // ---- GC and recovery ----

    /// Garbage collection: removes expired leases, then every blob and snapshot that no image,
    /// container, lease or `containerd.io/gc.root` object reaches; returns what it removed.
    pub fn collect(&self) -> Result<GcReport> {
        gc::collect(self)
    }

    /// Recovery after a crash: removes temporary leases of interrupted operations (at open no
    /// operation can be running: the database is locked by this process) and their `extract-*`
    /// snapshots, leftovers of ingest creation, snapshot directories without a record, then
    /// runs GC (which removes the blobs those leases held). Resumable ingests are kept, and so
    /// are resumable leases (an interrupted pull's) until they expire: a second pull finds the
    /// blobs the first completed and fetches only the rest.
    pub fn cleanup(&self) -> Result<CleanupReport> {
        let mut report = CleanupReport::default();
        let temp: Vec<(String, String, bool)> = self.inner.meta.read(|r| {
            let mut out = Vec::new();
            for n in r.namespaces()? {
                for l in r.leases(&n.name)? {
                    if l.labels.contains_key(LABEL_TEMPORARY_LEASE) {
                        let resumable = l.labels.contains_key(LABEL_RESUMABLE_LEASE);
                        out.push((n.name.clone(), l.id, resumable));
                    }
                }
            }
            Ok(out)
        })?;
        for (ns, id, resumable) in temp {
            let lease = self.inner.meta.read(|r| r.lease(&ns, &id))?;
            if !resumable {
                self.inner.meta.write(|tx| tx.delete_lease(&ns, &id))?;
                report.leases.push(format!("{ns}/{id}"));
            }
            // Active snapshots of an interrupted unpack (GC keeps active snapshots).
            let kind = format!("snapshots/{}", self.inner.snapshotter.name());
            let ctx = Ctx::new(ns.clone());
            for r in lease.map(|l| l.resources).unwrap_or_default() {
                if r.kind == kind && r.id.starts_with("extract-") {
                    match self.inner.snapshotter.remove(&ctx, &r.id) {
                        Ok(()) => report.snapshots.push(format!("{ns}/{}", r.id)),
                        Err(e) if e.is_not_found() => {}
                        Err(e) => warn!(key = r.id, %e, "cannot remove interrupted extraction"),
                    }
                }
            }
        }
        report.ingests = self.inner.content.cleanup_ingests(None)?;
        // Ingests of imports are never resumed (an import restarts from its archive).
        for st in self.inner.content.list_statuses()? {
            if st
                .r#ref
                .split_once('/')
                .is_some_and(|(_, r)| r.starts_with("import-"))
            {
                match self.inner.content.abort(&st.r#ref) {
                    Ok(()) => report.ingests.push(st.r#ref),
                    Err(e) => warn!(r#ref = st.r#ref, %e, "cannot remove stale import ingest"),
                }
            }
        }
        report.gc = self.collect()?;
        report.snapshot_dirs = self.inner.snapshotter.cleanup()?;
        Ok(report)
    }
}

fn validate_image(img: &Image) -> Result<()> {
    if img.name.is_empty() {
        return Err(StoreError::InvalidArgument(
            "image name must not be empty".into(),
        ));
    }
    if img.target.media_type.is_empty() {
        return Err(StoreError::InvalidArgument(format!(
            "image {:?}: target media type must not be empty",
            img.name
        )));
    }
    Ok(())
}

/// A writer into an ingest of one namespace; [`commit`](Self::commit) publishes the blob in
/// that namespace (and in the context's lease).
pub struct ContentWriter {
    store: Store,
    ctx: Ctx,
    r#ref: String,
    w: Writer,
}

impl ContentWriter {
    /// The ref (without namespace).
    pub fn r#ref(&self) -> &str {
        &self.r#ref
    }
    /// Bytes written so far (a resumed ingest starts at what it had).
    pub fn offset(&self) -> u64 {
        self.w.offset()
    }
    /// Digest of the bytes written so far.
    pub fn digest(&self) -> Digest {
        self.w.digest()
    }
    /// Status of the ingest (ref without namespace).
    pub fn status(&self) -> Result<Status> {
        let mut s = self.w.status()?;
        s.r#ref = self.r#ref.clone();
        Ok(s)
    }
    /// Records the expected total.
    pub fn set_total(&mut self, total: u64) -> Result<()> {
        self.w.set_total(total)
    }
    /// Appends at the current offset.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.w.write(data)
    }
    /// Cuts the ingest back to `size` bytes.
    pub fn truncate(&mut self, size: u64) -> Result<()> {
        self.w.truncate(size)
    }
    /// Verifies size (0 = don't check) and digest, publishes the blob and records it in the
    /// namespace with `labels`. `AlreadyExists` if the namespace had it already (the ingest is
    /// removed); a blob committed earlier in another namespace is simply shared.
    pub fn commit(self, size: u64, expected: Option<&Digest>, labels: Labels) -> Result<Digest> {
        let ContentWriter { store, ctx, w, .. } = self;
        let _g = store.gc_shared();
        let digest = w.digest();
        let n = w.offset();
        match w.commit(size, expected) {
            Ok(_) => {}
            Err(e) if e.is_already_exists() => {}
            Err(e) => return Err(e),
        }
        store.inner.meta.write(|tx| {
            if tx.content(&ctx.namespace, &digest)?.is_some() {
                return Err(StoreError::AlreadyExists(format!("content {digest}")));
            }
            let now = SystemTime::now();
            tx.put_content(
                &ctx.namespace,
                &ContentInfo {
                    digest: digest.clone(),
                    size: n,
                    created_at: now,
                    updated_at: now,
                    labels,
                },
            )?;
            if let Some(l) = &ctx.lease {
                tx.lease_add(
                    &ctx.namespace,
                    l,
                    LeaseResource {
                        kind: "content".into(),
                        id: digest.to_string(),
                    },
                )?;
            }
            Ok(())
        })?;
        Ok(digest)
    }
}

impl Write for ContentWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.w.write(buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Adaptor for ContentInfo {
    fn field(&self, path: &[String]) -> Option<String> {
        match path[0].as_str() {
            "digest" => Some(self.digest.to_string()),
            "size" => Some(self.size.to_string()),
            "labels" => label_field(&self.labels, path),
            _ => None,
        }
    }
}

impl Adaptor for Status {
    fn field(&self, path: &[String]) -> Option<String> {
        match path[0].as_str() {
            "ref" => Some(self.r#ref.clone()),
            _ => None,
        }
    }
}

impl Adaptor for Image {
    fn field(&self, path: &[String]) -> Option<String> {
        match (path[0].as_str(), path.get(1).map(String::as_str)) {
            ("name", _) => Some(self.name.clone()),
            ("target", Some("digest")) => Some(self.target.digest.to_string()),
            ("target", Some("mediatype")) => Some(self.target.media_type.clone()),
            ("labels", _) => label_field(&self.labels, path),
            _ => None,
        }
    }
}

impl Adaptor for Lease {
    fn field(&self, path: &[String]) -> Option<String> {
        match path[0].as_str() {
            "id" => Some(self.id.clone()),
            "labels" => label_field(&self.labels, path),
            _ => None,
        }
    }
}

impl Adaptor for Container {
    fn field(&self, path: &[String]) -> Option<String> {
        match path[0].as_str() {
            "id" => Some(self.id.clone()),
            "image" => Some(self.image.clone()),
            "runtime" => Some(self.runtime_name.clone()),
            "snapshotter" => Some(self.snapshotter.clone()),
            "snapshotkey" => Some(self.snapshot_key.clone()),
            "labels" => label_field(&self.labels, path),
            _ => None,
        }
    }
}
