//! Pulling images from OCI registries into the stores.
//!
//! Everything runs within a temporary lease. The root manifest (or index) is fetched, an
//! index is narrowed to the requested platform, every media type is checked before any blob
//! is downloaded, then the config and the layers are fetched in parallel straight into
//! content ingests (digest and size verified at commit). A layer already in the namespace is
//! skipped; an ingest left by an interrupted pull is resumed with an HTTP Range request from
//! its offset. Manifests are committed after their children, with the GC reference labels,
//! then the image is unpacked (layers applied in parallel by [`images::unpack_target`]) and
//! only then registered, so a failed pull leaves no image and nothing GC would keep.

use std::io::Read;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use berth_distribution::{Client, ClientOptions, DistributionError, Reference};
use tracing::{debug, info};

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::images::{self, UnpackReport, MAX_JSON};
use crate::metadata::{Image, Labels};
use crate::oci::*;
use crate::store::Store;
use crate::Ctx;

/// Content label naming the repository a blob came from, per registry (as containerd).
pub const LABEL_DISTRIBUTION_SOURCE: &str = "containerd.io/distribution.source.";

/// One progress event of a pull or push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The blob (digest).
    pub id: String,
    /// `index`, `manifest`, `config` or `layer`.
    pub kind: &'static str,
    /// `resolving`, `waiting`, `downloading`, `exists`, `done`, `unpacking`, `uploading`,
    /// `mounted`.
    pub status: &'static str,
    /// Bytes transferred so far.
    pub offset: u64,
    /// Size of the blob.
    pub total: u64,
}

/// Receives progress events (called from worker threads).
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Options of [`pull`].
#[derive(Clone, Default)]
pub struct PullOptions {
    /// How to reach the registry.
    pub client: ClientOptions,
    /// Platform to fetch and unpack (default: the host's).
    pub platform: Option<Platform>,
    /// Unpack the layers into snapshots.
    pub unpack: bool,
    /// Parallel layer downloads (0 = 3).
    pub concurrency: usize,
    /// Progress callback.
    pub progress: Option<ProgressFn>,
}

/// What [`pull`] did.
#[derive(Debug, Clone)]
pub struct PullReport {
    /// The registered image.
    pub image: Image,
    /// The manifest chosen for the platform.
    pub manifest: Descriptor,
    /// Layers downloaded now.
    pub layers_fetched: usize,
    /// Layers that were already in the store.
    pub layers_present: usize,
    /// Bytes downloaded.
    pub bytes_fetched: u64,
    /// The unpack, if asked for.
    pub unpack: Option<UnpackReport>,
}

/// Maps a registry error onto the store's error kinds.
pub fn registry_error(e: DistributionError) -> StoreError {
    match e {
        DistributionError::NotFound { .. } => StoreError::NotFound(e.to_string()),
        DistributionError::Unauthorized { .. } => StoreError::FailedPrecondition(e.to_string()),
        DistributionError::Status { .. } | DistributionError::Transport { .. } => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::InvalidArgument(e.to_string()),
    }
}

pub(crate) fn emit(
    p: &Option<ProgressFn>,
    id: &Digest,
    kind: &'static str,
    status: &'static str,
    offset: u64,
    total: u64,
) {
    if let Some(f) = p {
        f(&Progress {
            id: id.to_string(),
            kind,
            status,
            offset,
            total,
        });
    }
}

fn parse<T: serde::de::DeserializeOwned>(data: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(data)
        .map_err(|e| StoreError::InvalidArgument(format!("{what}: invalid JSON: {e}")))
}

/// Writes `data` as blob `desc` with `labels` (nothing if the namespace has it already).
fn put_bytes(
    store: &Store,
    ctx: &Ctx,
    desc: &Descriptor,
    data: &[u8],
    labels: Labels,
) -> Result<()> {
    if store.content_info(ctx, &desc.digest).is_ok() {
        return Ok(());
    }
    let r = format!("pull-{}", desc.digest);
    let mut w = match store.content_writer(ctx, &r, Some(desc.size), Some(desc.digest.clone())) {
        Ok(w) => w,
        Err(e) if e.is_already_exists() => return Ok(()),
        Err(e) => return Err(e),
    };
    w.truncate(0)?;
    w.write(data)?;
    match w.commit(desc.size, Some(&desc.digest), labels) {
        Ok(_) => Ok(()),
        Err(e) if e.is_already_exists() => Ok(()),
        Err(e) => {
            let _ = store.content_abort(ctx, &r);
            Err(e)
        }
    }
}

struct Fetcher<'a> {
    store: &'a Store,
    ctx: &'a Ctx,
    client: &'a Client,
    source: (String, String),
    progress: Option<ProgressFn>,
    bytes: AtomicU64,
}

impl Fetcher<'_> {
    fn labels(&self) -> Labels {
        let mut l = Labels::new();
        l.insert(self.source.0.clone(), self.source.1.clone());
        l
    }

    /// Downloads one blob into the content store, resuming its ingest. True if fetched, false
    /// if it was present already.
    fn blob(&self, desc: &Descriptor, kind: &'static str) -> Result<bool> {
        let d = &desc.digest;
        if self.store.content_info(self.ctx, d).is_ok() {
            emit(&self.progress, d, kind, "exists", desc.size, desc.size);
            return Ok(false);
        }
        let r = format!("{kind}-{d}");
        let mut w = match self
            .store
            .content_writer(self.ctx, &r, Some(desc.size), Some(d.clone()))
        {
            Ok(w) => w,
            Err(e) if e.is_already_exists() => {
                emit(&self.progress, d, kind, "exists", desc.size, desc.size);
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let mut offset = w.offset();
        if offset >= desc.size {
            w.truncate(0)?;
            offset = 0;
        }
        if offset > 0 {
            info!(digest = %d, offset, "resuming download");
        }
        let body = self
            .client
            .fetch_blob(d.as_str(), offset)
            .map_err(registry_error)?;
        if body.offset != offset {
            w.truncate(body.offset)?;
        }
        let mut reader = body.reader;
        let mut buf = vec![0u8; 256 << 10];
        let mut last = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(StoreError::Unavailable(format!(
                        "{kind} {d}: download interrupted after {} of {} bytes: {e} \
                         (pull again to resume)",
                        w.offset(),
                        desc.size
                    )))
                }
            };
            if w.offset() + n as u64 > desc.size {
                drop(w);
                let _ = self.store.content_abort(self.ctx, &r);
                return Err(StoreError::InvalidArgument(format!(
                    "{kind} {d}: the registry sent more than the {} bytes of its descriptor",
                    desc.size
                )));
            }
            w.write(&buf[..n])?;
            self.bytes.fetch_add(n as u64, Ordering::Relaxed);
            if w.offset() - last >= 1 << 20 {
                last = w.offset();
                emit(&self.progress, d, kind, "downloading", last, desc.size);
            }
        }
        if w.offset() < desc.size {
            return Err(StoreError::Unavailable(format!(
                "{kind} {d}: blob cut short: got {} of {} bytes (pull again to resume)",
                w.offset(),
                desc.size
            )));
        }
        match w.commit(desc.size, Some(d), self.labels()) {
            Ok(_) => {}
            Err(e) if e.is_already_exists() => {}
            Err(e) => {
                let _ = self.store.content_abort(self.ctx, &r);
                return Err(StoreError::InvalidArgument(format!(
                    "{kind} {d}: content does not match its descriptor: {e}"
                )));
            }
        }
        emit(&self.progress, d, kind, "done", desc.size, desc.size);
        Ok(true)
    }

    /// Fetches manifest `desc` (by digest) and checks it is what the descriptor says.
    fn manifest(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        emit(
            &self.progress,
            &desc.digest,
            "manifest",
            "resolving",
            0,
            desc.size,
        );
        let m = self
            .client
            .fetch_manifest(desc.digest.as_str())
            .map_err(registry_error)?;
        if m.data.len() as u64 != desc.size {
            return Err(StoreError::InvalidArgument(format!(
                "manifest {}: {} bytes, its descriptor says {}",
                desc.digest,
                m.data.len(),
                desc.size
            )));
        }
        Ok(m.data)
    }
}

/// Picks the manifest for `platform` from an index.
fn select(index: &Index, digest: &Digest, platform: &Platform) -> Result<Descriptor> {
    let manifests: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| media_kind(&d.media_type) == Some(MediaKind::Manifest))
        .collect();
    if let Some(d) = manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p)))
    {
        return Ok((*d).clone());
    }
    if manifests.len() == 1 && manifests[0].platform.is_none() {
        return Ok(manifests[0].clone());
    }
    let have: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
        .collect();
    Err(StoreError::NotFound(format!(
        "no manifest for platform {platform} in index {digest} (it has: {})",
        if have.is_empty() {
            "none with a platform".to_string()
        } else {
            have.join(", ")
        }
    )))
}

/// Pulls `reference` (`registry/repo:tag` or `@digest`) into namespace `ctx`, unpacks it with
/// `opts.unpack`, and registers it under its normalised name.
pub fn pull(store: &Store, ctx: &Ctx, reference: &str, opts: &PullOptions) -> Result<PullReport> {
    crate::metadata::validate_namespace(&ctx.namespace)?;
    let r = Reference::parse(reference).map_err(registry_error)?;
    let name = r.to_string();
    let platform = opts.platform.clone().unwrap_or_else(Platform::host);
    let client = Client::new(&r, opts.client.clone()).map_err(registry_error)?;
    store.with_temp_lease(ctx, |lctx| {
        let f = Fetcher {
            store,
            ctx: lctx,
            client: &client,
            source: (
                format!("{LABEL_DISTRIBUTION_SOURCE}{}", r.registry),
                r.repository.clone(),
            ),
            progress: opts.progress.clone(),
            bytes: AtomicU64::new(0),
        };
        let root = client.fetch_manifest(r.object()).map_err(registry_error)?;
        let root_desc = Descriptor::new(
            &root.media_type,
            Digest::parse(&root.digest)?,
            root.data.len() as u64,
        );
        emit(
            &f.progress,
            &root_desc.digest,
            "index",
            "resolving",
            0,
            root_desc.size,
        );
        // (descriptor, bytes, children for GC labels), committed children first.
        let mut docs: Vec<(Descriptor, Vec<u8>, Vec<Descriptor>)> = Vec::new();
        let (mdesc, mdata) = match media_kind(&root.media_type) {
            Some(MediaKind::Index) => {
                let idx: Index = parse(&root.data, &format!("index {name}"))?;
                let chosen = select(&idx, &root_desc.digest, &platform)?;
                let data = f.manifest(&chosen)?;
                docs.push((root_desc.clone(), root.data.clone(), idx.manifests.clone()));
                (chosen, data)
            }
            Some(MediaKind::Manifest) => (root_desc.clone(), root.data.clone()),
            _ => {
                return Err(StoreError::InvalidArgument(format!(
                    "{name}: unsupported media type {}",
                    root.media_type
                )))
            }
        };
        let manifest: Manifest = parse(&mdata, &format!("manifest {}", mdesc.digest))?;
        if media_kind(&manifest.config.media_type) != Some(MediaKind::Config) {
            return Err(StoreError::InvalidArgument(format!(
                "manifest {}: unsupported config media type {}",
                mdesc.digest, manifest.config.media_type
            )));
        }
        if manifest.config.size > MAX_JSON {
            return Err(StoreError::InvalidArgument(format!(
                "config {} is larger than {MAX_JSON} bytes",
                manifest.config.digest
            )));
        }
        for l in &manifest.layers {
            if media_kind(&l.media_type) != Some(MediaKind::Layer) {
                return Err(StoreError::InvalidArgument(format!(
                    "manifest {}: unsupported layer media type {} (of {})",
                    mdesc.digest, l.media_type, l.digest
                )));
            }
        }
        let mut kids = vec![manifest.config.clone()];
        kids.extend(manifest.layers.iter().cloned());
        docs.insert(0, (mdesc.clone(), mdata, kids));

        // Config and layers, in parallel.
        let mut blobs: Vec<(&Descriptor, &'static str)> = vec![(&manifest.config, "config")];
        blobs.extend(manifest.layers.iter().map(|l| (l, "layer")));
        for (b, kind) in &blobs {
            emit(&f.progress, &b.digest, kind, "waiting", 0, b.size);
        }
        let next = AtomicUsize::new(0);
        let fetched = AtomicUsize::new(0);
        let first_err: Mutex<Option<StoreError>> = Mutex::new(None);
        let workers = if opts.concurrency == 0 {
            3
        } else {
            opts.concurrency
        }
        .min(blobs.len());
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    if first_err.lock().map(|e| e.is_some()).unwrap_or(true) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some((b, kind)) = blobs.get(i) else { break };
                    match f.blob(b, kind) {
                        Ok(true) if *kind == "layer" => {
                            fetched.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            if let Ok(mut g) = first_err.lock() {
                                g.get_or_insert(e);
                            }
                            break;
                        }
                    }
                });
            }
        });
        if let Some(e) = first_err.into_inner().ok().flatten() {
            return Err(e);
        }
        let cfg: ImageConfig = images::read_json(store, lctx, &manifest.config)?;
        if cfg.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(StoreError::InvalidArgument(format!(
                "config {} has {} diff IDs for {} layers",
                manifest.config.digest,
                cfg.rootfs.diff_ids.len(),
                manifest.layers.len()
            )));
        }
        for (desc, data, kids) in &docs {
            let mut labels: Labels = images::gc_child_labels(desc, kids)
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect();
            labels.insert(f.source.0.clone(), f.source.1.clone());
            put_bytes(store, lctx, desc, data, labels)?;
        }
        let unpack = if opts.unpack {
            emit(&f.progress, &mdesc.digest, "manifest", "unpacking", 0, 0);
            let r = images::unpack_target(store, lctx, &root_desc, &platform)
                .map_err(|e| e.context(format!("unpacking {name}")))?;
            Some(r)
        } else {
            None
        };
        let img = Image {
            name: name.clone(),
            target: root_desc.clone(),
            labels: Labels::new(),
            created_at: SystemTime::now(),
            updated_at: SystemTime::now(),
        };
        let image = match store.image_create(ctx, &img) {
            Ok(i) => i,
            Err(e) if e.is_already_exists() => store.image_update(ctx, &img, &["target".into()])?,
            Err(e) => return Err(e),
        };
        let layers_fetched = fetched.load(Ordering::Relaxed);
        let report = PullReport {
            image,
            manifest: mdesc,
            layers_fetched,
            layers_present: manifest.layers.len() - layers_fetched,
            bytes_fetched: f.bytes.load(Ordering::Relaxed),
            unpack,
        };
        debug!(?report, "pull done");
        info!(name, digest = %root_desc.digest, fetched = report.layers_fetched, "image pulled");
        Ok(report)
    })
}
