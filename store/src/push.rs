//! Pushing images from the stores to OCI registries.
//!
//! Blobs first (config and layers, in parallel): a `HEAD` skips the ones the repository has,
//! a blob pulled from another repository of the same registry (its
//! `containerd.io/distribution.source.<registry>` label) is mounted across repositories,
//! the rest are uploaded in chunks. Then the manifests, children before their index, by
//! digest; the root last, under the tag, so the tag never names an incomplete image.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use berth_distribution::client::DEFAULT_CHUNK;
use berth_distribution::{Client, ClientOptions, Reference};
use tracing::info;

use crate::error::{Result, StoreError};
use crate::images::{self, MAX_JSON};
use crate::oci::*;
use crate::pull::{emit, registry_error, ProgressFn, LABEL_DISTRIBUTION_SOURCE};
use crate::store::Store;
use crate::Ctx;

/// Options of [`push`].
#[derive(Clone, Default)]
pub struct PushOptions {
    /// How to reach the registry (`push` is set by [`push`]).
    pub client: ClientOptions,
    /// Push only this platform's manifest (as the root) instead of the whole index.
    pub platform: Option<Platform>,
    /// Parallel blob uploads (0 = 3).
    pub concurrency: usize,
    /// Bytes per upload chunk (0 = 8 MiB).
    pub chunk_size: usize,
    /// Progress callback.
    pub progress: Option<ProgressFn>,
}

/// What [`push`] did.
#[derive(Debug, Clone, Default)]
pub struct PushReport {
    /// The pushed root (index or manifest), as the registry now names it by the tag.
    pub target: Option<Descriptor>,
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Blobs the repository had already.
    pub present: usize,
    /// Blobs mounted from another repository.
    pub mounted: usize,
    /// Manifests and indexes pushed.
    pub manifests: usize,
}

/// Collects manifests (children before parents) and blobs under `desc`.
fn walk(
    store: &Store,
    ctx: &Ctx,
    desc: &Descriptor,
    manifests: &mut Vec<Descriptor>,
    blobs: &mut Vec<(Descriptor, &'static str)>,
    depth: usize,
) -> Result<()> {
    if depth > 8 {
        return Err(StoreError::InvalidArgument(format!(
            "{}: indexes nested too deep",
            desc.digest
        )));
    }
    store
        .content_info(ctx, &desc.digest)
        .map_err(|e| e.context("the image is incomplete in the store (pulled for one platform only? push with --platform)"))?;
    match media_kind(&desc.media_type) {
        Some(MediaKind::Index) | Some(MediaKind::Manifest) => {
            let kids = images::children(store, ctx, desc)?;
            let is_manifest = media_kind(&desc.media_type) == Some(MediaKind::Manifest);
            for (i, k) in kids.iter().enumerate() {
                if is_manifest {
                    let kind = if i == 0 { "config" } else { "layer" };
                    if !blobs.iter().any(|(b, _)| b.digest == k.digest) {
                        store.content_info(ctx, &k.digest)?;
                        blobs.push((k.clone(), kind));
                    }
                } else {
                    walk(store, ctx, k, manifests, blobs, depth + 1)?;
                }
            }
            if !manifests.iter().any(|m| m.digest == desc.digest) {
                manifests.push(desc.clone());
            }
            Ok(())
        }
        _ => Err(StoreError::InvalidArgument(format!(
            "unsupported media type {} (of {})",
            desc.media_type, desc.digest
        ))),
    }
}

/// Pushes local image `name` to `remote` (default: `name` itself).
pub fn push(
    store: &Store,
    ctx: &Ctx,
    name: &str,
    remote: Option<&str>,
    opts: &PushOptions,
) -> Result<PushReport> {
    crate::metadata::validate_namespace(&ctx.namespace)?;
    let img = match store.image(ctx, name) {
        Ok(i) => i,
        Err(e) if e.is_not_found() => store.image(ctx, &images::normalize_name(name)?)?,
        Err(e) => return Err(e),
    };
    let r = Reference::parse(remote.unwrap_or(&img.name)).map_err(registry_error)?;
    let mut copts = opts.client.clone();
    copts.push = true;
    let client = Client::new(&r, copts).map_err(registry_error)?;
    let root = match &opts.platform {
        Some(p) => images::resolve_manifest(store, ctx, &img.target, p)?.0,
        None => img.target.clone(),
    };
    let mut manifests = Vec::new();
    let mut blobs = Vec::new();
    walk(store, ctx, &root, &mut manifests, &mut blobs, 0)?;

    let source_key = format!("{LABEL_DISTRIBUTION_SOURCE}{}", r.registry);
    let chunk = if opts.chunk_size == 0 {
        DEFAULT_CHUNK
    } else {
        opts.chunk_size
    };
    let uploaded = AtomicUsize::new(0);
    let present = AtomicUsize::new(0);
    let mounted = AtomicUsize::new(0);
    let next = AtomicUsize::new(0);
    let first_err: Mutex<Option<StoreError>> = Mutex::new(None);
    let one = |b: &Descriptor, kind: &'static str| -> Result<()> {
        let d = &b.digest;
        if client.blob_exists(d.as_str()).map_err(registry_error)? {
            present.fetch_add(1, Ordering::Relaxed);
            emit(&opts.progress, d, kind, "exists", b.size, b.size);
            return Ok(());
        }
        let info = store.content_info(ctx, d)?;
        if let Some(from) = info.labels.get(&source_key) {
            if from != &r.repository
                && client
                    .mount_blob(d.as_str(), from)
                    .map_err(registry_error)?
            {
                mounted.fetch_add(1, Ordering::Relaxed);
                emit(&opts.progress, d, kind, "mounted", b.size, b.size);
                return Ok(());
            }
        }
        let reader = store.content_reader(ctx, d)?.reader(0)?;
        emit(&opts.progress, d, kind, "uploading", 0, b.size);
        client
            .upload_blob(d.as_str(), b.size, reader, chunk, |n| {
                emit(&opts.progress, d, kind, "uploading", n, b.size)
            })
            .map_err(registry_error)?;
        uploaded.fetch_add(1, Ordering::Relaxed);
        emit(&opts.progress, d, kind, "done", b.size, b.size);
        Ok(())
    };
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
                if let Err(e) = one(b, kind) {
                    if let Ok(mut g) = first_err.lock() {
                        g.get_or_insert(e.context(format!("pushing {kind} {}", b.digest)));
                    }
                    break;
                }
            });
        }
    });
    if let Some(e) = first_err.into_inner().ok().flatten() {
        return Err(e);
    }
    let n = manifests.len();
    for (i, m) in manifests.iter().enumerate() {
        let data = store.content_read_all(ctx, &m.digest, MAX_JSON)?;
        let object = if i + 1 == n {
            r.tag.clone().unwrap_or_else(|| m.digest.to_string())
        } else {
            m.digest.to_string()
        };
        let kind = if media_kind(&m.media_type) == Some(MediaKind::Index) {
            "index"
        } else {
            "manifest"
        };
        emit(&opts.progress, &m.digest, kind, "uploading", 0, m.size);
        client
            .push_manifest(&object, &m.media_type, &data)
            .map_err(registry_error)?;
        emit(&opts.progress, &m.digest, kind, "done", m.size, m.size);
    }
    info!(name, remote = %r, digest = %root.digest, "image pushed");
    Ok(PushReport {
        target: Some(root),
        uploaded: uploaded.into_inner(),
        present: present.into_inner(),
        mounted: mounted.into_inner(),
        manifests: n,
    })
}
