//! Image logic: parsing manifests and indexes, platform selection, GC labels, import of OCI
//! image-layout and `docker save` archives, export to OCI archives, and unpacking into
//! snapshots.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use berth_layer::{
    apply_layer, decompressed, detect_compression, ApplyOptions, Compression, MAX_ENTRY_METADATA,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tracing::{debug, info, warn};

use crate::digest::{Digest, Hasher};
use crate::error::{ErrorKind, Result, StoreError};
use crate::metadata::{Image, Labels};
use crate::oci::*;
use crate::store::Store;
use crate::Ctx;

/// Largest JSON document (manifest, index, config) read into memory.
pub const MAX_JSON: u64 = 16 << 20;
/// Most bytes of JSON documents (index, manifests, configs, docker-save's `json` files) an
/// imported archive may hold: they are kept in memory until the import ends. Real archives hold
/// kilobytes per image.
pub const MAX_ARCHIVE_JSON: u64 = 64 << 20;
/// Content label: a layer blob's uncompressed digest.
pub const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";
/// Snapshot label naming the chain ID a snapshot is being extracted for.
pub const LABEL_SNAPSHOT_REF: &str = "containerd.io/snapshot.ref";

/// Options of [`import`].
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Prefix for images whose archive names only a tag (`org.opencontainers.image.ref.name`
    /// without a repository): the image is named `<base_name>:<tag>`.
    pub base_name: Option<String>,
    /// Unpack every imported image for `platform` before registering it (an image whose
    /// layers cannot be applied is then not registered).
    pub unpack: bool,
    /// Platform to unpack for (default: the host's).
    pub platform: Option<Platform>,
}

/// Options of [`export`].
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Only the manifests of this platform (default: every platform, all blobs required).
    pub platform: Option<Platform>,
    /// Also write `docker save`'s `manifest.json` (config, layers and RepoTags of each image
    /// for `platform`, default the host's, pointing into `blobs/`), so that dockerd's
    /// `docker load` takes the archive too, as containerd's export does.
    pub docker_manifest: bool,
}

/// What [`unpack`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackReport {
    /// The top snapshot (the chain ID of all layers): the parent for a container's rootfs.
    pub chain_id: Digest,
    /// Number of layers of the image.
    pub layers: usize,
    /// Layers applied now (the others were unpacked already).
    pub applied: usize,
    /// The snapshotter used.
    pub snapshotter: String,
}

/// Normalises an image reference as docker/containerd do: `busybox` →
/// `docker.io/library/busybox:latest`, `example.com/a/b` → `example.com/a/b:latest`.
pub fn normalize_name(name: &str) -> Result<String> {
    let bad =
        |why: &str| StoreError::InvalidArgument(format!("invalid image reference {name:?}: {why}"));
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains whitespace or control characters"));
    }
    let (rest, digest) = match name.split_once('@') {
        Some((r, d)) => {
            Digest::parse(d).map_err(|e| bad(&e.to_string()))?;
            (r, Some(d))
        }
        None => (name, None),
    };
    let (repo, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if repo.is_empty() || tag == Some("") {
        return Err(bad("empty repository or tag"));
    }
    let (domain, path) = match repo.split_once('/') {
        Some((d, p)) if d.contains('.') || d.contains(':') || d == "localhost" => {
            (d.to_string(), p.to_string())
        }
        _ => ("docker.io".to_string(), repo.to_string()),
    };
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(bad("repository name must be lowercase"));
    }
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    let mut out = format!("{domain}/{path}");
    match (tag, digest) {
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        _ => {}
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    Ok(out)
}

fn unsupported(desc: &Descriptor) -> StoreError {
    StoreError::InvalidArgument(format!(
        "unsupported media type {} (of {})",
        desc.media_type, desc.digest
    ))
}

/// Reads and parses a JSON blob named by `desc`, checking its size.
pub fn read_json<T: DeserializeOwned>(store: &Store, ctx: &Ctx, desc: &Descriptor) -> Result<T> {
    let data = store.content_read_all(ctx, &desc.digest, MAX_JSON)?;
    if data.len() as u64 != desc.size {
        return Err(StoreError::InvalidArgument(format!(
            "{} is {} bytes but its descriptor says {}",
            desc.digest,
            data.len(),
            desc.size
        )));
    }
    serde_json::from_slice(&data).map_err(|e| {
        StoreError::InvalidArgument(format!(
            "{} ({}): invalid JSON: {e}",
            desc.digest, desc.media_type
        ))
    })
}

/// The descriptors `desc` references directly: an index's manifests, a manifest's config and
/// layers; nothing for configs and layers. `InvalidArgument` for an unsupported media type.
pub fn children(store: &Store, ctx: &Ctx, desc: &Descriptor) -> Result<Vec<Descriptor>> {
    match media_kind(&desc.media_type) {
        Some(MediaKind::Index) => Ok(read_json::<Index>(store, ctx, desc)?.manifests),
        Some(MediaKind::Manifest) => {
            let m: Manifest = read_json(store, ctx, desc)?;
            let mut out = vec![m.config];
            out.extend(m.layers);
            Ok(out)
        }
        Some(MediaKind::Config) | Some(MediaKind::Layer) => Ok(Vec::new()),
        None => Err(unsupported(desc)),
    }
}

/// The `containerd.io/gc.ref.content.*` labels a parent gets for its children
/// (`m.<i>` for an index's manifests, `config` and `l.<i>` for a manifest's blobs).
pub fn gc_child_labels(
    parent: &Descriptor,
    children: &[Descriptor],
) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    match media_kind(&parent.media_type) {
        Some(MediaKind::Index) => {
            for (i, c) in children.iter().enumerate() {
                out.push((
                    format!("containerd.io/gc.ref.content.m.{i}"),
                    Some(c.digest.to_string()),
                ));
            }
        }
        Some(MediaKind::Manifest) => {
            for (i, c) in children.iter().enumerate() {
                let k = if i == 0 {
                    "containerd.io/gc.ref.content.config".to_string()
                } else {
                    format!("containerd.io/gc.ref.content.l.{}", i - 1)
                };
                out.push((k, Some(c.digest.to_string())));
            }
        }
        _ => {}
    }
    out
}

/// Resolves `target` to the manifest for `platform` (descending through indexes).
pub fn resolve_manifest(
    store: &Store,
    ctx: &Ctx,
    target: &Descriptor,
    platform: &Platform,
) -> Result<(Descriptor, Manifest)> {
    resolve_inner(store, ctx, target, platform, 0)
}

fn resolve_inner(
    store: &Store,
    ctx: &Ctx,
    target: &Descriptor,
    platform: &Platform,
    depth: usize,
) -> Result<(Descriptor, Manifest)> {
    if depth > 8 {
        return Err(StoreError::InvalidArgument(format!(
            "{}: indexes nested too deep",
            target.digest
        )));
    }
    match media_kind(&target.media_type) {
        Some(MediaKind::Manifest) => {
            let m: Manifest = read_json(store, ctx, target)?;
            Ok((target.clone(), m))
        }
        Some(MediaKind::Index) => {
            let idx: Index = read_json(store, ctx, target)?;
            for d in &idx.manifests {
                let ok = match &d.platform {
                    Some(p) => platform.matches(p),
                    None => {
                        media_kind(&d.media_type) == Some(MediaKind::Index) || {
                            // No platform in the index: ask the config.
                            match read_json::<Manifest>(store, ctx, d)
                                .and_then(|m| read_json::<ImageConfig>(store, ctx, &m.config))
                            {
                                Ok(c) => platform.matches(&Platform {
                                    architecture: c.architecture,
                                    os: c.os,
                                    variant: c.variant,
                                    ..Platform::default()
                                }),
                                Err(_) => false,
                            }
                        }
                    }
                };
                if ok {
                    match resolve_inner(store, ctx, d, platform, depth + 1) {
                        Ok(r) => return Ok(r),
                        Err(e)
                            if e.is_not_found()
                                && media_kind(&d.media_type) == Some(MediaKind::Index) =>
                        {
                            continue
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(StoreError::NotFound(format!(
                "no manifest for platform {platform} in {}",
                target.digest
            )))
        }
        _ => Err(unsupported(target)),
    }
}

// ---------------------------------------------------------------------------------------
// import

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// What the archive held, by path.
#[derive(Default)]
struct Unpacked {
    /// path → (digest, size) of every regular file written as content.
    files: HashMap<String, (Digest, u64)>,
    /// path → bytes of the small JSON documents.
    json: HashMap<String, Vec<u8>>,
    /// symlink path → target path (docker save links duplicate layers).
    links: HashMap<String, String>,
    /// Bytes held in `json`.
    json_bytes: u64,
}

fn clean_path(p: &str) -> String {
    let p = p.trim_start_matches("./");
    p.trim_end_matches('/').to_string()
}

fn corrupt(e: io::Error, what: &str) -> StoreError {
    StoreError::InvalidArgument(format!("corrupt or truncated archive: {what}: {e}"))
}

fn write_blob(
    store: &Store,
    ctx: &Ctx,
    path: &str,
    mut src: impl Read,
    size: u64,
    expected: Option<Digest>,
) -> Result<(Digest, u64)> {
    let r = format!(
        "import-{}-{}",
        crate::fsutil::random_suffix(),
        Digest::of(path.as_bytes()).hex()
    );
    let mut w = match store.content_writer(ctx, &r, Some(size), expected.clone()) {
        Ok(w) => w,
        Err(e) if e.is_already_exists() => {
            // Already committed in this namespace: skip the bytes, keep it in the lease.
            let d = expected.ok_or(e)?;
            io::copy(&mut src, &mut io::sink()).map_err(|e| corrupt(e, path))?;
            if let Some(l) = &ctx.lease {
                store.lease_add_resource(
                    ctx,
                    l,
                    crate::metadata::LeaseResource {
                        kind: "content".into(),
                        id: d.to_string(),
                    },
                )?;
            }
            return Ok((d, size));
        }
        Err(e) => return Err(e),
    };
    if w.offset() > 0 {
        w.truncate(0)?;
    }
    let mut buf = vec![0u8; 1 << 20];
    let res = (|| {
        loop {
            let n = src.read(&mut buf).map_err(|e| corrupt(e, path))?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n])?;
        }
        if w.offset() != size {
            return Err(StoreError::InvalidArgument(format!(
                "corrupt or truncated archive: entry {path} has {} of its {size} bytes",
                w.offset()
            )));
        }
        let d = w.digest();
        if let Some(want) = &expected {
            if *want != d {
                return Err(StoreError::InvalidArgument(format!(
                    "blob {path} does not match its digest: expected {want}, content is {d}"
                )));
            }
        }
        Ok(d)
    })();
    let d = match res {
        Ok(d) => d,
        Err(e) => {
            drop(w);
            let _ = store.content_abort(ctx, &r);
            return Err(e);
        }
    };
    match w.commit(size, Some(&d), Labels::new()) {
        Ok(_) => {}
        Err(e) if e.is_already_exists() => {}
        Err(e) => {
            let _ = store.content_abort(ctx, &r);
            return Err(e);
        }
    }
    Ok((d, size))
}

/// How far the tar parser has read the archive, and how far it may read (see [`Counted`]).
struct ArchivePos {
    offset: Cell<u64>,
    limit: Cell<u64>,
}

/// The archive stream as the tar parser reads it, refusing to read past `pos.limit`.
///
/// To reach the next entry the tar crate skips the rest of the last entry's data, then reads
/// the next header and the metadata records before it (PAX records, GNU long names, sparse
/// maps) into memory whole, whatever size their headers claim: without a limit, an archive
/// that starts with a PAX header claiming gigabytes made berthd hold all of it in memory.
struct Counted<R> {
    inner: R,
    pos: Rc<ArchivePos>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = self.pos.limit.get().saturating_sub(self.pos.offset.get());
        if room == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "an entry's metadata records (PAX headers, GNU long names, sparse maps) \
                     run past {} MiB",
                    MAX_ENTRY_METADATA >> 20
                ),
            ));
        }
        let take = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..take])?;
        self.pos.offset.set(self.pos.offset.get() + n as u64);
        Ok(n)
    }
}

fn read_archive(store: &Store, ctx: &Ctx, archive: impl Read) -> Result<Unpacked> {
    let mut out = Unpacked::default();
    let pos = Rc::new(ArchivePos {
        offset: Cell::new(0),
        limit: Cell::new(u64::MAX),
    });
    let mut ar = tar::Archive::new(Counted {
        inner: archive,
        pos: pos.clone(),
    });
    let mut entries = ar
        .entries()
        .map_err(|e| corrupt(e, "reading the first header"))?;
    let mut last = String::from("(start)");
    // Where the next header starts: after the last entry's data and its padding.
    let mut next_header = 0u64;
    loop {
        pos.limit.set(
            next_header
                .max(pos.offset.get())
                .saturating_add(MAX_ENTRY_METADATA),
        );
        let next = entries.next();
        pos.limit.set(u64::MAX);
        let Some(entry) = next else { break };
        let mut entry = entry.map_err(|e| corrupt(e, &format!("header after {last:?}")))?;
        let on_archive = if entry.header().entry_type().is_gnu_sparse() {
            entry.header().entry_size().unwrap_or(0)
        } else {
            entry.size()
        };
        next_header = entry
            .raw_file_position()
            .saturating_add(on_archive)
            .saturating_add(511)
            / 512
            * 512;
        let raw = entry
            .path()
            .map_err(|e| corrupt(e, "entry name"))?
            .to_string_lossy()
            .into_owned();
        let path = clean_path(&raw);
        last = path.clone();
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Ok(Some(t)) = entry.link_name() {
                let t = t.to_string_lossy().into_owned();
                let target = if kind.is_symlink() && !t.starts_with('/') {
                    match path.rfind('/') {
                        Some(i) => normalize_rel(&format!("{}/{}", &path[..i], t)),
                        None => normalize_rel(&t),
                    }
                } else {
                    clean_path(&t)
                };
                out.links.insert(path, target);
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let size = entry.size();
        let is_json = path.ends_with(".json")
            || path == "oci-layout"
            || path == "repositories"
            || path.ends_with("/json");
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            let d = Digest::from_hex(hex)
                .map_err(|e| StoreError::InvalidArgument(format!("archive entry {path:?}: {e}")))?;
            let got = write_blob(store, ctx, &path, &mut entry, size, Some(d))?;
            out.files.insert(path, got);
        } else if is_json && size <= MAX_JSON {
            if out.json_bytes.saturating_add(size) > MAX_ARCHIVE_JSON {
                return Err(StoreError::InvalidArgument(format!(
                    "archive holds more than {} MiB of JSON documents (at {path:?}); they are \
                     kept in memory during the import",
                    MAX_ARCHIVE_JSON >> 20
                )));
            }
            let mut buf = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut buf).map_err(|e| corrupt(e, &path))?;
            out.json_bytes += buf.len() as u64;
            if let Some(old) = out.json.insert(path, buf) {
                out.json_bytes -= old.len() as u64;
            }
        } else {
            let got = write_blob(store, ctx, &path, &mut entry, size, None)?;
            out.files.insert(path, got);
        }
        debug!(path = last, size, "archive entry imported");
    }
    Ok(out)
}

fn normalize_rel(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// Verifies that `desc` and everything below it is present with the right sizes and media
/// types, and sets the GC labels on indexes and manifests.
fn verify_tree(
    store: &Store,
    ctx: &Ctx,
    desc: &Descriptor,
    named_by: &str,
    depth: usize,
) -> Result<()> {
    if depth > 8 {
        return Err(StoreError::InvalidArgument(format!(
            "{}: indexes nested too deep",
            desc.digest
        )));
    }
    let kind = media_kind(&desc.media_type).ok_or_else(|| unsupported(desc))?;
    let info = store.content_info(ctx, &desc.digest).map_err(|e| {
        if e.is_not_found() {
            StoreError::NotFound(format!(
                "blob {} named by {named_by} is missing from the archive",
                desc.digest
            ))
        } else {
            e
        }
    })?;
    if info.size != desc.size {
        return Err(StoreError::InvalidArgument(format!(
            "blob {} named by {named_by} is {} bytes, the descriptor says {}",
            desc.digest, info.size, desc.size
        )));
    }
    if matches!(kind, MediaKind::Index | MediaKind::Manifest) {
        let kids = children(store, ctx, desc)?;
        let me = format!("{} {}", media_label(kind), desc.digest);
        for k in &kids {
            verify_tree(store, ctx, k, &me, depth + 1)?;
        }
        store.content_set_labels(ctx, &desc.digest, &gc_child_labels(desc, &kids))?;
    }
    Ok(())
}

fn media_label(k: MediaKind) -> &'static str {
    match k {
        MediaKind::Index => "index",
        MediaKind::Manifest => "manifest",
        MediaKind::Config => "config",
        MediaKind::Layer => "layer",
    }
}

fn json_file<T: DeserializeOwned>(u: &Unpacked, path: &str) -> Result<Option<T>> {
    match u.json.get(path) {
        None => Ok(None),
        Some(b) => serde_json::from_slice(b)
            .map(Some)
            .map_err(|e| StoreError::InvalidArgument(format!("archive {path}: invalid JSON: {e}"))),
    }
}

fn oci_names(desc: &Descriptor, base: Option<&str>) -> Result<Option<String>> {
    if let Some(n) = desc.annotations.get(ANNOTATION_IMAGE_NAME) {
        return normalize_name(n).map(Some);
    }
    match desc.annotations.get(ANNOTATION_REF_NAME) {
        Some(r) if r.contains('/') || r.contains(':') || r.contains('@') => {
            normalize_name(r).map(Some)
        }
        Some(tag) => match base {
            Some(b) => normalize_name(&format!("{b}:{tag}")).map(Some),
            None => Ok(None),
        },
        None => Ok(None),
    }
}

fn import_oci(
    store: &Store,
    ctx: &Ctx,
    u: &Unpacked,
    opts: &ImportOptions,
) -> Result<Vec<(String, Descriptor)>> {
    let idx: Index = json_file(u, "index.json")?
        .ok_or_else(|| StoreError::InvalidArgument("OCI archive without index.json".into()))?;
    let mut out = Vec::new();
    for d in &idx.manifests {
        verify_tree(store, ctx, d, "index.json", 0)?;
        match oci_names(d, opts.base_name.as_deref())? {
            Some(n) => {
                let mut t = d.clone();
                t.annotations.remove(ANNOTATION_IMAGE_NAME);
                t.annotations.remove(ANNOTATION_REF_NAME);
                out.push((n, t));
            }
            None => {
                warn!(digest = %d.digest, "index.json entry has no image name; skipped (give a base name)")
            }
        }
    }
    Ok(out)
}

fn file_blob(u: &Unpacked, path: &str) -> Result<(Digest, u64)> {
    let mut p = clean_path(path);
    for _ in 0..16 {
        if let Some(f) = u.files.get(&p) {
            return Ok(f.clone());
        }
        if let Some(b) = u.json.get(&p) {
            return Ok((Digest::of(b), b.len() as u64));
        }
        match u.links.get(&p) {
            Some(t) => p = t.clone(),
            None => break,
        }
    }
    Err(StoreError::NotFound(format!(
        "manifest.json names {path:?}, which is not in the archive"
    )))
}

fn put_json_blob(store: &Store, ctx: &Ctx, what: &str, data: &[u8]) -> Result<Digest> {
    let d = Digest::of(data);
    write_blob(store, ctx, what, data, data.len() as u64, Some(d.clone()))?;
    Ok(d)
}

fn import_docker(store: &Store, ctx: &Ctx, u: &Unpacked) -> Result<Vec<(String, Descriptor)>> {
    let entries: Vec<DockerEntry> = json_file(u, "manifest.json")?.unwrap_or_default();
    let mut out = Vec::new();
    for e in entries {
        // The config: usually `<hex>.json`, kept in memory; store it as content.
        let cfg_path = clean_path(&e.config);
        let (cfg_digest, cfg_size) = match u.json.get(&cfg_path) {
            Some(b) => (put_json_blob(store, ctx, &cfg_path, b)?, b.len() as u64),
            None => file_blob(u, &cfg_path)?,
        };
        let cfg_desc = Descriptor::new(MEDIA_TYPE_DOCKER_CONFIG, cfg_digest.clone(), cfg_size);
        let cfg: ImageConfig = read_json(store, ctx, &cfg_desc)
            .map_err(|err| err.context(format!("config {cfg_path}")))?;
        if cfg.rootfs.diff_ids.len() != e.layers.len() {
            return Err(StoreError::InvalidArgument(format!(
                "config {cfg_path} lists {} diff IDs but manifest.json {} layers",
                cfg.rootfs.diff_ids.len(),
                e.layers.len()
            )));
        }
        let mut layers = Vec::new();
        for l in &e.layers {
            let (d, size) = file_blob(u, l)?;
            let mut head = [0u8; 4];
            let n = store.content_store().reader_at(&d)?.read_at(&mut head, 0)?;
            let mt = match detect_compression(&head[..n]) {
                Compression::None => MEDIA_TYPE_DOCKER_LAYER,
                Compression::Gzip => MEDIA_TYPE_DOCKER_LAYER_GZIP,
                Compression::Zstd => MEDIA_TYPE_OCI_LAYER_ZSTD,
            };
            layers.push(Descriptor::new(mt, d, size));
        }
        let m = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_DOCKER_MANIFEST.into()),
            config: cfg_desc,
            layers,
            annotations: BTreeMap::new(),
        };
        let data =
            serde_json::to_vec(&m).map_err(|err| StoreError::InvalidArgument(err.to_string()))?;
        let md = put_json_blob(store, ctx, "manifest", &data)?;
        let mut desc = Descriptor::new(MEDIA_TYPE_DOCKER_MANIFEST, md, data.len() as u64);
        desc.platform = Some(Platform {
            architecture: cfg.architecture.clone(),
            os: cfg.os.clone(),
            variant: cfg.variant.clone(),
            ..Platform::default()
        });
        verify_tree(store, ctx, &desc, "manifest.json", 0)?;
        desc.platform = None;
        for t in e.repo_tags.unwrap_or_default() {
            out.push((normalize_name(&t)?, desc.clone()));
        }
    }
    Ok(out)
}

/// Imports an OCI image-layout archive (`oci-layout`, `index.json`, `blobs/sha256/...`) or a
/// `docker save` archive (`manifest.json`, uncompressed layer tars, config JSON; converted to
/// a Docker schema2 manifest stored as content, as containerd does).
///
/// Every blob is written through a content writer and verified against its digest; every
/// blob the manifests name must be present. Image records are created (or retargeted) only
/// after all content is committed (and, with `opts.unpack`, unpacked). Everything runs within
/// a temporary lease, so an interrupted import leaves nothing GC will not remove.
pub fn import(
    store: &Store,
    ctx: &Ctx,
    archive: impl Read,
    opts: &ImportOptions,
) -> Result<Vec<Image>> {
    crate::metadata::validate_namespace(&ctx.namespace)?;
    store.with_temp_lease(ctx, |lctx| {
        let u = read_archive(store, lctx, archive)?;
        let targets = if u.json.contains_key("index.json") {
            import_oci(store, lctx, &u, opts)?
        } else if u.json.contains_key("manifest.json") {
            import_docker(store, lctx, &u)?
        } else {
            return Err(StoreError::InvalidArgument(
                "archive has neither index.json (OCI layout) nor manifest.json (docker save)"
                    .into(),
            ));
        };
        if targets.is_empty() {
            return Err(StoreError::InvalidArgument(
                "archive names no image (no io.containerd.image.name, \
                 org.opencontainers.image.ref.name or RepoTags); give a base name"
                    .into(),
            ));
        }
        if opts.unpack {
            let platform = opts.platform.clone().unwrap_or_else(Platform::host);
            for (name, t) in &targets {
                match unpack_target(store, lctx, t, &platform) {
                    Ok(r) => info!(name, chain_id = %r.chain_id, applied = r.applied, "unpacked"),
                    Err(e)
                        if e.is_not_found()
                            && e.to_string().contains("no manifest for platform") =>
                    {
                        warn!(name, %e, "not unpacked")
                    }
                    Err(e) => return Err(e.context(format!("unpacking {name}"))),
                }
            }
        }
        let mut images = Vec::new();
        for (name, target) in targets {
            let img = Image {
                name: name.clone(),
                target,
                labels: Labels::new(),
                created_at: SystemTime::now(),
                updated_at: SystemTime::now(),
            };
            let img = match store.image_create(ctx, &img) {
                Ok(i) => i,
                Err(e) if e.is_already_exists() => {
                    store.image_update(ctx, &img, &["target".into()])?
                }
                Err(e) => return Err(e),
            };
            info!(name, digest = %img.target.digest, "image imported");
            images.push(img);
        }
        Ok(images)
    })
}

// ---------------------------------------------------------------------------------------
// export

fn tar_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn collect_blobs(
    store: &Store,
    ctx: &Ctx,
    desc: &Descriptor,
    platform: Option<&Platform>,
    out: &mut Vec<Descriptor>,
    depth: usize,
) -> Result<()> {
    if depth > 8 {
        return Err(StoreError::InvalidArgument(format!(
            "{}: indexes nested too deep",
            desc.digest
        )));
    }
    if out.iter().any(|d| d.digest == desc.digest) {
        return Ok(());
    }
    store.content_info(ctx, &desc.digest)?;
    out.push(desc.clone());
    let mut kids = children(store, ctx, desc)?;
    if let (Some(p), Some(MediaKind::Index)) = (platform, media_kind(&desc.media_type)) {
        kids.retain(|k| k.platform.as_ref().is_none_or(|kp| p.matches(kp)));
    }
    for k in kids {
        collect_blobs(store, ctx, &k, platform, out, depth + 1)?;
    }
    Ok(())
}

/// Writes images `names` as an OCI image-layout tar to `out`: `oci-layout`, `blobs/sha256/*`
/// (the same blobs, hence digests, as stored), and `index.json` whose entries carry the
/// `io.containerd.image.name` and `org.opencontainers.image.ref.name` annotations.
pub fn export(
    store: &Store,
    ctx: &Ctx,
    names: &[String],
    out: impl Write,
    opts: &ExportOptions,
) -> Result<()> {
    if names.is_empty() {
        return Err(StoreError::InvalidArgument(
            "export needs at least one image name".into(),
        ));
    }
    let mut index = Index {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_INDEX.into()),
        manifests: Vec::new(),
        annotations: BTreeMap::new(),
    };
    let mut blobs = Vec::new();
    let mut docker_entries = Vec::new();
    for n in names {
        let img = store.image(ctx, n)?;
        if opts.docker_manifest {
            let platform = opts.platform.clone().unwrap_or_else(Platform::host);
            let (_, m) = resolve_manifest(store, ctx, &img.target, &platform)
                .map_err(|e| e.context(format!("exporting {n}")))?;
            let blob = |d: &Descriptor| format!("blobs/sha256/{}", d.digest.hex());
            let base = img.name.split('@').next().unwrap_or(&img.name);
            let tagged = base.rfind(':').is_some_and(|i| !base[i..].contains('/'));
            let repo_tags: Vec<String> = if tagged && !img.name.contains('@') {
                vec![docker_repo_tag(&img.name)]
            } else {
                Vec::new()
            };
            docker_entries.push(serde_json::json!({
                "Config": blob(&m.config),
                "RepoTags": repo_tags,
                "Layers": m.layers.iter().map(blob).collect::<Vec<_>>(),
            }));
        }
        collect_blobs(
            store,
            ctx,
            &img.target,
            opts.platform.as_ref(),
            &mut blobs,
            0,
        )
        .map_err(|e| e.context(format!("exporting {n}")))?;
        let mut t = img.target.clone();
        t.annotations
            .insert(ANNOTATION_IMAGE_NAME.into(), img.name.clone());
        t.annotations
            .insert(ANNOTATION_REF_NAME.into(), oci_ref_name(&img.name));
        index.manifests.push(t);
    }
    let io_err = |e: io::Error| StoreError::io("write archive", "(export stream)", e);
    let mut b = tar::Builder::new(out);
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    b.append_data(
        &mut tar_header(layout.len() as u64),
        "oci-layout",
        &layout[..],
    )
    .map_err(io_err)?;
    for d in &blobs {
        let r = store.content_reader(ctx, &d.digest)?;
        let f = r.reader(0)?;
        b.append_data(
            &mut tar_header(r.size()),
            format!("blobs/sha256/{}", d.digest.hex()),
            f,
        )
        .map_err(io_err)?;
    }
    let idx = serde_json::to_vec(&index).map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
    b.append_data(&mut tar_header(idx.len() as u64), "index.json", &idx[..])
        .map_err(io_err)?;
    if opts.docker_manifest {
        let m = serde_json::to_vec(&docker_entries)
            .map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
        b.append_data(&mut tar_header(m.len() as u64), "manifest.json", &m[..])
            .map_err(io_err)?;
    }
    b.into_inner().and_then(|mut w| w.flush()).map_err(io_err)?;
    Ok(())
}

/// How `docker save` names an image in RepoTags: `docker.io/library/busybox:1` → `busybox:1`,
/// `docker.io/user/app:1` → `user/app:1`.
fn docker_repo_tag(name: &str) -> String {
    let n = name.strip_prefix("docker.io/").unwrap_or(name);
    match n.strip_prefix("library/") {
        Some(rest) if !rest.split(':').next().unwrap_or(rest).contains('/') => rest.to_string(),
        _ => n.to_string(),
    }
}

/// The OCI ref name of a full image name: its tag (or the name if it has none).
fn oci_ref_name(name: &str) -> String {
    let base = name.split('@').next().unwrap_or(name);
    match base.rfind(':') {
        Some(i) if !base[i..].contains('/') => base[i + 1..].to_string(),
        _ => name.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// unpack

/// A reader hashing what passes through it into a shared hasher, so the caller can finish the
/// hash after the consumer (the tar applier) is done with the reader.
struct SharedHash<R> {
    inner: Arc<Mutex<(R, Hasher)>>,
}

impl<R: Read> Read for SharedHash<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut g = self
            .inner
            .lock()
            .map_err(|_| io::Error::other("hash state poisoned"))?;
        let (r, h) = &mut *g;
        let n = r.read(buf)?;
        h.update(&buf[..n]);
        Ok(n)
    }
}

/// Applies layer `layer` onto `dir`, verifying the uncompressed stream's digest is `diff_id`.
fn apply_one(
    store: &Store,
    ctx: &Ctx,
    layer: &Descriptor,
    diff_id: &Digest,
    dir: &std::path::Path,
    mode: berth_layer::WhiteoutMode,
) -> Result<()> {
    let blob = store.content_reader(ctx, &layer.digest)?.into_file();
    let plain = decompressed(blob)?;
    let shared = Arc::new(Mutex::new((plain, Hasher::new())));
    let opts = ApplyOptions {
        whiteouts: mode,
        same_owner: nix::unistd::geteuid().is_root(),
        xattrs: true,
    };
    apply_layer(
        SharedHash {
            inner: shared.clone(),
        },
        dir,
        &opts,
    )?;
    let mut g = shared
        .lock()
        .map_err(|_| StoreError::Db("hash state poisoned".into()))?;
    let (r, h) = &mut *g;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).map_err(|e| {
            StoreError::InvalidArgument(format!("layer {}: reading the rest: {e}", layer.digest))
        })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let got = h.digest();
    if got != *diff_id {
        return Err(StoreError::InvalidArgument(format!(
            "layer {}: uncompressed digest {got} does not match the config's diff ID {diff_id}",
            layer.digest
        )));
    }
    Ok(())
}

/// Unpacks image `name` for `platform` (default: the host's) into snapshots named by chain ID,
/// skipping layers already unpacked. See [`unpack_target`].
pub fn unpack(
    store: &Store,
    ctx: &Ctx,
    name: &str,
    platform: Option<&Platform>,
) -> Result<UnpackReport> {
    let img = store.image(ctx, name)?;
    let p = platform.cloned().unwrap_or_else(Platform::host);
    let run = |c: &Ctx| unpack_target(store, c, &img.target, &p);
    if ctx.lease.is_some() {
        run(ctx)
    } else {
        store.with_temp_lease(ctx, run)
    }
}

/// Unpacks `target` (index or manifest) for `platform`. With overlayfs every missing layer is
/// decompressed and applied in parallel into its own `extract-<random>-<chainid>` snapshot
/// (an upper dir does not depend on its lowers), then committed in order as its chain ID.
/// With the native snapshotter layers are applied one after another onto a copy of the parent.
/// Sets `containerd.io/uncompressed` on layer blobs and `containerd.io/gc.ref.snapshot.<sn>`
/// on the config blob. Run it within a lease (as [`unpack`] does).
pub fn unpack_target(
    store: &Store,
    ctx: &Ctx,
    target: &Descriptor,
    platform: &Platform,
) -> Result<UnpackReport> {
    let (_, manifest) = resolve_manifest(store, ctx, target, platform)?;
    let cfg: ImageConfig = read_json(store, ctx, &manifest.config)?;
    let diff_ids = cfg.rootfs.diff_ids.clone();
    if diff_ids.len() != manifest.layers.len() || diff_ids.is_empty() {
        return Err(StoreError::InvalidArgument(format!(
            "config {} has {} diff IDs for {} layers",
            manifest.config.digest,
            diff_ids.len(),
            manifest.layers.len()
        )));
    }
    for l in &manifest.layers {
        if media_kind(&l.media_type) != Some(MediaKind::Layer) {
            return Err(unsupported(l));
        }
    }
    let chain = chain_ids(&diff_ids);
    let sn = store.snapshotter();
    let exists = |c: &Digest| match sn.stat(ctx, c.as_str()) {
        Ok(i) => Ok(i.kind == crate::metadata::SnapshotKind::Committed),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    };
    let mut first = chain.len();
    for (i, c) in chain.iter().enumerate() {
        if !exists(c)? {
            first = i;
            break;
        }
    }
    let n = chain.len();
    let key_of = |i: usize| {
        format!(
            "extract-{}-{}",
            crate::fsutil::random_suffix(),
            chain[i].hex()
        )
    };
    let labels_of = |i: usize| {
        let mut l = Labels::new();
        l.insert(LABEL_SNAPSHOT_REF.into(), chain[i].to_string());
        l
    };
    let mut keys: Vec<Option<String>> = vec![None; n];
    let res = (|| -> Result<()> {
        if first == n {
            return Ok(());
        }
        if sn.independent_layers() {
            for (i, k) in keys.iter_mut().enumerate().skip(first) {
                let key = key_of(i);
                sn.prepare(ctx, &key, None, labels_of(i))?;
                *k = Some(key);
            }
            let targets = (first..n)
                .map(|i| sn.apply_target(ctx, keys[i].as_deref().unwrap_or_default()))
                .collect::<Result<Vec<_>>>()?;
            let next = AtomicUsize::new(first);
            let results: Vec<Mutex<Option<Result<()>>>> =
                (0..n).map(|_| Mutex::new(None)).collect();
            let workers = std::thread::available_parallelism()
                .map(|p| p.get())
                .unwrap_or(2)
                .min(n - first);
            std::thread::scope(|s| {
                for _ in 0..workers {
                    s.spawn(|| loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= n {
                            break;
                        }
                        let (dir, mode) = &targets[i - first];
                        let r =
                            apply_one(store, ctx, &manifest.layers[i], &diff_ids[i], dir, *mode)
                                .map_err(|e| {
                                    e.context(format!("layer {i} ({})", manifest.layers[i].digest))
                                });
                        if let Ok(mut slot) = results[i].lock() {
                            *slot = Some(r);
                        }
                    });
                }
            });
            for (i, slot) in results.into_iter().enumerate().skip(first) {
                let r = slot
                    .into_inner()
                    .map_err(|_| StoreError::Db("unpack result poisoned".into()))?
                    .unwrap_or_else(|| Err(StoreError::Db(format!("layer {i} was not applied"))));
                r?;
            }
            for i in first..n {
                let key = keys[i].clone().unwrap_or_default();
                let parent = if i == 0 {
                    None
                } else {
                    Some(chain[i - 1].as_str())
                };
                match sn.commit_onto(ctx, chain[i].as_str(), &key, parent, Labels::new()) {
                    Ok(()) => keys[i] = None,
                    Err(e) if e.is_already_exists() => {} // unpacked concurrently; ours is removed below
                    Err(e) => return Err(e),
                }
            }
        } else {
            for i in first..n {
                let key = key_of(i);
                let parent = if i == 0 {
                    None
                } else {
                    Some(chain[i - 1].as_str())
                };
                sn.prepare(ctx, &key, parent, labels_of(i))?;
                keys[i] = Some(key.clone());
                let (dir, mode) = sn.apply_target(ctx, &key)?;
                apply_one(store, ctx, &manifest.layers[i], &diff_ids[i], &dir, mode)
                    .map_err(|e| e.context(format!("layer {i} ({})", manifest.layers[i].digest)))?;
                match sn.commit(ctx, chain[i].as_str(), &key, Labels::new()) {
                    Ok(()) => keys[i] = None,
                    Err(e) if e.is_already_exists() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    })();
    for k in keys.into_iter().flatten() {
        if let Err(e) = sn.remove(ctx, &k) {
            warn!(key = k, %e, "cannot remove extraction snapshot");
        }
    }
    res?;
    for (l, d) in manifest.layers.iter().zip(&diff_ids) {
        store.content_set_labels(
            ctx,
            &l.digest,
            &[(LABEL_UNCOMPRESSED.into(), Some(d.to_string()))],
        )?;
    }
    let top = chain[n - 1].clone();
    store.content_set_labels(
        ctx,
        &manifest.config.digest,
        &[(
            format!("containerd.io/gc.ref.snapshot.{}", sn.name()),
            Some(top.to_string()),
        )],
    )?;
    Ok(UnpackReport {
        chain_id: top,
        layers: n,
        applied: n - first,
        snapshotter: sn.name().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise_like_docker() {
        assert_eq!(
            normalize_name("busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize_name("busybox:1.36").unwrap(),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(normalize_name("me/app").unwrap(), "docker.io/me/app:latest");
        assert_eq!(
            normalize_name("localhost:5000/app").unwrap(),
            "localhost:5000/app:latest"
        );
        assert_eq!(
            normalize_name("example.com/a/b:v1").unwrap(),
            "example.com/a/b:v1"
        );
        assert!(normalize_name("Busybox").is_err());
        assert!(normalize_name("").is_err());
        assert!(normalize_name("a b").is_err());
        assert_eq!(oci_ref_name("docker.io/library/busybox:1.36"), "1.36");
        assert_eq!(oci_ref_name("localhost:5000/app"), "localhost:5000/app");
    }
}
