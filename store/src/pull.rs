//! Pulling images from OCI registries into the stores.
//!
//! Everything runs within a resumable temporary lease (after a crash it is kept until it expires,
//! so blobs already committed are not fetched again). The root manifest (or index) is fetched, an
//! index is narrowed to the requested platform, every media type is checked before any blob
//! is downloaded, then the config and the layers are fetched in parallel straight into
//! content ingests (digest and size verified at commit). A layer already in the namespace is
//! skipped; an ingest left by an interrupted pull is resumed with an HTTP Range request from
//! its offset. Manifests are committed after their children, with the GC reference labels,
//! then the image is unpacked (layers applied in parallel by [`images::unpack_target`]) and
//! only then registered, so a failed pull leaves no image and nothing GC would keep.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::SystemTime;

use berth_layer::{apply_layer, decompressed, ApplyOptions, WhiteoutMode};

use berth_distribution::{Client, ClientOptions, DistributionError, Reference};
use tracing::{debug, info, warn};

use crate::digest::{Digest, HashingReader};
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
    /// `resolving`, `waiting`, `downloading`, `retrying`, `exists`, `done`, `unpacking`,
    /// `uploading`, `mounted`.
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
    /// Mirrors tried in order before the registry itself (each a [`ClientOptions`] with its
    /// `endpoint` set). The first one that serves the reference's manifest serves the whole
    /// pull; one that fails or lacks it is skipped with a warning.
    pub mirrors: Vec<ClientOptions>,
}

/// The first of the mirrors, then the registry, that serves `r`'s root manifest: its client and
/// the manifest. The registry's own error is the one reported when every endpoint fails.
fn resolve(
    r: &Reference,
    opts: &PullOptions,
) -> Result<(Client, berth_distribution::FetchedManifest)> {
    for m in &opts.mirrors {
        let mirror = m.endpoint.clone().unwrap_or_default();
        let tried = Client::new(r, m.clone()).and_then(|c| {
            let root = c.fetch_manifest(r.object())?;
            Ok((c, root))
        });
        match tried {
            Ok(found) => {
                info!(reference = %r, mirror = %mirror, "pulling from a mirror");
                return Ok(found);
            }
            Err(e) => warn!(reference = %r, mirror = %mirror, error = %e, "mirror skipped"),
        }
    }
    let client = Client::new(r, opts.client.clone()).map_err(registry_error)?;
    let root = client.fetch_manifest(r.object()).map_err(registry_error)?;
    Ok((client, root))
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

/// The receiving end of a tee: the chunks a download thread also writes to the ingest.
struct TeeReader {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for TeeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(v) => {
                    self.cur = v;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A hashing reader shared with the apply (which needs an owned `'static` reader).
struct SharedHash(Arc<Mutex<HashingReader<Box<dyn Read + Send>>>>);

impl Read for SharedHash {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("hash state poisoned"))?
            .read(buf)
    }
}

/// Starts applying a layer from a tee into `dir` while it downloads: decompress, apply,
/// then check the uncompressed digest against `diff_id`.
fn spawn_apply(
    dir: PathBuf,
    mode: WhiteoutMode,
    diff_id: Digest,
) -> (SyncSender<Vec<u8>>, JoinHandle<Result<()>>) {
    let (tx, rx) = sync_channel::<Vec<u8>>(16);
    let h = std::thread::spawn(move || -> Result<()> {
        let plain = decompressed(TeeReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        })?;
        let shared = Arc::new(Mutex::new(HashingReader::new(plain)));
        let opts = ApplyOptions {
            whiteouts: mode,
            same_owner: nix::unistd::geteuid().is_root(),
            xattrs: true,
        };
        apply_layer(SharedHash(shared.clone()), &dir, &opts)?;
        let mut g = shared
            .lock()
            .map_err(|_| StoreError::Db("hash state poisoned".into()))?;
        g.drain()
            .map_err(|e| StoreError::InvalidArgument(format!("layer stream: {e}")))?;
        let (got, _) = g.digest();
        if got != diff_id {
            return Err(StoreError::InvalidArgument(format!(
                "uncompressed digest {got} does not match the config's diff ID {diff_id}"
            )));
        }
        Ok(())
    });
    (tx, h)
}

/// How one try of a download failed.
enum Try {
    /// Worth another try (the registry or the network failed on the way).
    Transient(StoreError),
    /// Not worth one (bad content, the store failed, 4xx).
    Fatal(StoreError),
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
    /// if it was present already. A try that fails on the way (reset, stall, cut short, 5xx)
    /// is retried as the client's [`berth_distribution::Retries`] say, from where it stopped
    /// (HTTP Range); the stream into the apply ends at the first failure (unpack redoes it).
    fn blob(
        &self,
        desc: &Descriptor,
        kind: &'static str,
        tee: Option<SyncSender<Vec<u8>>>,
    ) -> Result<bool> {
        let retries = self.client.retries();
        let attempts = retries.attempts.max(1);
        let mut tee = tee;
        let mut failed = 0;
        loop {
            match self.blob_once(desc, kind, tee.take()) {
                Ok(fetched) => return Ok(fetched),
                Err(Try::Fatal(e)) => return Err(e),
                Err(Try::Transient(e)) => {
                    failed += 1;
                    if failed >= attempts {
                        return Err(e.context(format!("giving up after {failed} tries")));
                    }
                    let wait = retries.backoff(failed);
                    warn!(
                        digest = %desc.digest, try = failed, of = attempts, error = %e,
                        "download failed; retrying in {wait:?}"
                    );
                    emit(&self.progress, &desc.digest, kind, "retrying", 0, desc.size);
                    std::thread::sleep(wait);
                }
            }
        }
    }

    /// One try of [`Fetcher::blob`].
    fn blob_once(
        &self,
        desc: &Descriptor,
        kind: &'static str,
        mut tee: Option<SyncSender<Vec<u8>>>,
    ) -> std::result::Result<bool, Try> {
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
            Err(e) => return Err(Try::Fatal(e)),
        };
        let mut offset = w.offset();
        if offset >= desc.size {
            w.truncate(0).map_err(Try::Fatal)?;
            offset = 0;
        }
        if offset > 0 {
            info!(digest = %d, offset, "resuming download");
        }
        let body = self.client.fetch_blob(d.as_str(), offset).map_err(|e| {
            if e.is_transient() {
                Try::Transient(registry_error(e))
            } else {
                Try::Fatal(registry_error(e))
            }
        })?;
        if body.offset != offset {
            w.truncate(body.offset).map_err(Try::Fatal)?;
        }
        if body.offset != 0 {
            // A resumed blob: the apply would miss the first bytes; unpack applies it later.
            tee = None;
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
                    return Err(Try::Transient(StoreError::Unavailable(format!(
                        "{kind} {d}: download interrupted after {} of {} bytes: {e} \
                         (pull again to resume)",
                        w.offset(),
                        desc.size
                    ))))
                }
            };
            if w.offset() + n as u64 > desc.size {
                drop(w);
                let _ = self.store.content_abort(self.ctx, &r);
                return Err(Try::Fatal(StoreError::InvalidArgument(format!(
                    "{kind} {d}: the registry sent more than the {} bytes of its descriptor",
                    desc.size
                ))));
            }
            w.write(&buf[..n]).map_err(Try::Fatal)?;
            if let Some(t) = &tee {
                if t.send(buf[..n].to_vec()).is_err() {
                    tee = None; // the apply stopped; unpack redoes this layer
                }
            }
            self.bytes.fetch_add(n as u64, Ordering::Relaxed);
            if w.offset() - last >= 1 << 20 {
                last = w.offset();
                emit(&self.progress, d, kind, "downloading", last, desc.size);
            }
        }
        if w.offset() < desc.size {
            return Err(Try::Transient(StoreError::Unavailable(format!(
                "{kind} {d}: blob cut short: got {} of {} bytes (pull again to resume)",
                w.offset(),
                desc.size
            ))));
        }
        match w.commit(desc.size, Some(d), self.labels()) {
            Ok(_) => {}
            Err(e) if e.is_already_exists() => {}
            Err(e) => {
                let _ = self.store.content_abort(self.ctx, &r);
                return Err(Try::Fatal(StoreError::InvalidArgument(format!(
                    "{kind} {d}: content does not match its descriptor: {e}"
                ))));
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
    let (client, root) = resolve(&r, opts)?;
    store.with_resumable_lease(ctx, |lctx| {
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

        // The config first (small): its diff IDs name the snapshots layers are applied into.
        emit(
            &f.progress,
            &manifest.config.digest,
            "config",
            "waiting",
            0,
            manifest.config.size,
        );
        f.blob(&manifest.config, "config", None)?;
        let cfg: ImageConfig = images::read_json(store, lctx, &manifest.config)?;
        if cfg.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(StoreError::InvalidArgument(format!(
                "config {} has {} diff IDs for {} layers",
                manifest.config.digest,
                cfg.rootfs.diff_ids.len(),
                manifest.layers.len()
            )));
        }
        let chain = chain_ids(&cfg.rootfs.diff_ids);
        let n = manifest.layers.len();
        for l in &manifest.layers {
            emit(&f.progress, &l.digest, "layer", "waiting", 0, l.size);
        }

        // With independent layers (overlayfs), each layer still to download is applied into
        // its own extraction snapshot while it downloads: the body is teed into the ingest
        // and into decompress + apply.
        let sn = store.snapshotter();
        let committed = |c: &Digest| {
            sn.stat(lctx, c.as_str())
                .map(|i| i.kind == crate::metadata::SnapshotKind::Committed)
                .unwrap_or(false)
        };
        let mut keys: Vec<Option<String>> = vec![None; n];
        let mut tees: Vec<Mutex<Option<SyncSender<Vec<u8>>>>> = Vec::with_capacity(n);
        let mut applies: Vec<Option<JoinHandle<Result<()>>>> = Vec::with_capacity(n);
        let stream = opts.unpack && sn.independent_layers();
        for (i, l) in manifest.layers.iter().enumerate() {
            let mut tee = None;
            let mut apply = None;
            if stream && !committed(&chain[i]) && store.content_info(lctx, &l.digest).is_err() {
                let key = format!("extract-{}-{}", fastrand::u64(..), chain[i].hex());
                let mut labels = Labels::new();
                labels.insert(images::LABEL_SNAPSHOT_REF.into(), chain[i].to_string());
                sn.prepare(lctx, &key, None, labels)?;
                keys[i] = Some(key.clone());
                let (dir, mode) = sn.apply_target(lctx, &key)?;
                let (tx, h) = spawn_apply(dir, mode, cfg.rootfs.diff_ids[i].clone());
                tee = Some(tx);
                apply = Some(h);
            }
            tees.push(Mutex::new(tee));
            applies.push(apply);
        }

        // Layers, in parallel.
        let next = AtomicUsize::new(0);
        let fetched = AtomicUsize::new(0);
        let first_err: Mutex<Option<StoreError>> = Mutex::new(None);
        let workers = if opts.concurrency == 0 {
            3
        } else {
            opts.concurrency
        }
        .min(n);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    if first_err.lock().map(|e| e.is_some()).unwrap_or(true) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(b) = manifest.layers.get(i) else {
                        break;
                    };
                    let tee = tees[i].lock().ok().and_then(|mut t| t.take());
                    match f.blob(b, "layer", tee) {
                        Ok(true) => {
                            fetched.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(false) => {}
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
        // Every tee is closed now (taken and dropped, or dropped here), so every apply ends.
        drop(tees);
        let applied: Vec<bool> = applies
            .into_iter()
            .enumerate()
            .map(|(i, h)| match h.map(|h| h.join()) {
                None => false,
                Some(Ok(Ok(()))) => true,
                Some(Ok(Err(e))) => {
                    debug!(layer = i, %e, "streamed apply failed; unpack will redo it");
                    false
                }
                Some(Err(_)) => false,
            })
            .collect();
        let download = match first_err.into_inner().ok().flatten() {
            Some(e) => Err(e),
            None => Ok(()),
        };
        // Commit the streamed snapshots bottom-up while their parents exist; unpack applies
        // whatever is left (a gap, a resumed blob, a failed stream).
        if download.is_ok() {
            for i in 0..n {
                if committed(&chain[i]) {
                    continue;
                }
                let (Some(key), true) = (keys[i].clone(), applied[i]) else {
                    break;
                };
                let parent = (i > 0).then(|| chain[i - 1].as_str());
                match sn.commit_onto(lctx, chain[i].as_str(), &key, parent, Labels::new()) {
                    Ok(()) => keys[i] = None,
                    Err(e) if e.is_already_exists() => {}
                    Err(e) => {
                        warn!(%e, "cannot commit a streamed layer; unpack will redo it");
                        break;
                    }
                }
            }
        }
        for k in keys.into_iter().flatten() {
            if let Err(e) = sn.remove(lctx, &k) {
                warn!(key = k, %e, "cannot remove extraction snapshot");
            }
        }
        download?;
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
