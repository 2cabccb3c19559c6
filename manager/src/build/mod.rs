//! The build engine: runs a berth-build [`Plan`] against the store (no gRPC here; the
//! `Builds` service is a thin front, `daemon/services/builds.rs`).
//!
//! A build gets a work dir `<state>/builds/<id>` (the extracted context, RUN bundles) and a
//! temporary lease that keeps everything it makes from GC until it ends; both go when it ends,
//! whatever the outcome. Stages run group by group of the plan's `parallel` list, the stages
//! of one group on threads of their own. Each step's cache key is berth-build's
//! [`cache_key`] over its parent's key and, for COPY/ADD, a digest of the source files; a hit
//! ([`cache`]) costs no container and no diff. A step that changes files works on an active
//! snapshot of its parent, mounted under the state dir: RUN runs a container on it
//! ([`run`]), COPY/ADD/WORKDIR write into it ([`fsops`]); then the overlay upper dir is
//! diffed into a gzip layer blob and the snapshot committed under the layers' chain ID, which
//! is the name image unpack uses, so the built image runs without another unpack.

pub mod cache;
pub mod fsops;
mod mounts;
pub mod remote;
pub mod run;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use berth_build::instructions::Transfer;
use berth_build::{
    cache_key, Base, BuildOptions, ImageConfig, ImageResolver, Instruction, Plan, PlannedStage,
    Source, Step,
};
use berth_layer::{Compression, WhiteoutMode};
use berth_store::images::{gc_child_labels, normalize_name, read_json, resolve_manifest};
use berth_store::metadata::{Image, Labels};
use berth_store::oci::{self, Descriptor, Manifest, Platform};
use berth_store::{Ctx, Digest, Store, StoreError};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::daemon::mounts::TempMount;

/// RUN's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// A network namespace of its own with only loopback.
    None,
    /// The host's network.
    Host,
    /// A network namespace of its own on this berthd network (`bridge`, the default, or a
    /// user-defined one), joined as containers join it (`crate::networks`) for the step only.
    Network(String),
}

impl Default for NetworkMode {
    /// Docker's classic builder: the default bridge.
    fn default() -> NetworkMode {
        NetworkMode::Network(crate::networks::DEFAULT_NETWORK.to_string())
    }
}

impl NetworkMode {
    /// `--network` (berth build, `docker build`, the Docker API's `networkmode`): `default`
    /// or empty (the bridge), `bridge`, `none`, `host` or a network's name. Whether a named
    /// network exists is checked when the build starts.
    pub fn parse(s: &str) -> Result<NetworkMode, BuildError> {
        match s {
            "" | "default" => Ok(NetworkMode::default()),
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            other if other.starts_with("container:") => Err(BuildError::Invalid(format!(
                "--network {other:?}: a build step cannot join another container's network \
                 (default, bridge, none, host or a network's name)"
            ))),
            name => Ok(NetworkMode::Network(name.to_string())),
        }
    }
}

/// What a client asks for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The Dockerfile's path in the context ("" = `Dockerfile`), read when `dockerfile_content`
    /// is `None`.
    pub dockerfile: String,
    /// The Dockerfile sent alongside the context.
    pub dockerfile_content: Option<String>,
    /// `--build-arg`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `-t`, already checked with [`check_tags`].
    pub tags: Vec<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--pull`.
    pub pull: bool,
    /// `--network`.
    pub network: NetworkMode,
    /// `--label`.
    pub labels: BTreeMap<String, String>,
}

/// Progress, streamed to the client.
#[derive(Debug, Clone)]
pub enum Event {
    /// A step starts.
    Start(String),
    /// A step came from the cache.
    Cached(String),
    /// Output of a RUN.
    Output {
        /// The step.
        step: String,
        /// The bytes.
        data: Vec<u8>,
        /// From stderr.
        stderr: bool,
    },
    /// A step is done.
    Done(String, f64),
    /// A warning.
    Warning(String),
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Bad input: the Dockerfile, the context, a COPY source, an option.
    #[error("{0}")]
    Invalid(String),
    /// A base image is missing and cannot be pulled.
    #[error("{0}")]
    NotFound(String),
    /// A step failed (RUN's exit code, the runtime, the file system).
    #[error("{0}")]
    Failed(String),
    /// The client went away.
    #[error("build cancelled")]
    Cancelled,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl BuildError {
    fn at(self, step: &str, line: usize) -> BuildError {
        let wrap = |m: String| format!("step {step} (Dockerfile line {line}): {m}");
        match self {
            BuildError::Invalid(m) => BuildError::Invalid(wrap(m)),
            BuildError::NotFound(m) => BuildError::NotFound(wrap(m)),
            BuildError::Failed(m) => BuildError::Failed(wrap(m)),
            BuildError::Cancelled => BuildError::Cancelled,
            BuildError::Store(e) => BuildError::Failed(wrap(e.to_string())),
        }
    }
}

/// The result.
#[derive(Debug, Clone)]
pub struct Output {
    /// The config's digest (Docker's image id).
    pub image_id: Digest,
    /// The manifest's digest.
    pub manifest: Digest,
    /// The image records made or updated.
    pub names: Vec<String>,
}

/// What the engine needs from the daemon.
#[derive(Clone)]
pub struct Engine {
    /// The stores.
    pub store: Store,
    /// berthd's state dir.
    pub state_dir: PathBuf,
    /// The runtime binary RUN uses.
    pub runtime: PathBuf,
    /// Where `RUN --mount=type=cache` directories live (`<root>/build-cache-mounts`), one dir
    /// per namespace.
    pub cache_mounts: PathBuf,
    /// Registry settings (for base images not in the store).
    pub registries: crate::daemon::registries::Registries,
    /// berthd's networks, which RUN steps join (`NetworkMode::Network`).
    pub networks: Arc<crate::networks::Networks>,
}

/// Names the tags as image names, refusing a bad one before anything is built.
pub fn check_tags(tags: &[String]) -> Result<Vec<String>, BuildError> {
    tags.iter()
        .map(|t| {
            normalize_name(t).map_err(|e| {
                BuildError::Invalid(format!(
                    "invalid argument {t:?} for \"-t, --tag\" flag: {e}"
                ))
            })
        })
        .collect()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn hex(h: Sha256) -> String {
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A base image, read from the store.
struct BaseImage {
    /// Its name in the store.
    name: String,
    manifest: Digest,
    config: Value,
    layers: Vec<Descriptor>,
    diff_ids: Vec<Digest>,
}

/// The filesystem of a stage so far.
#[derive(Debug, Clone, Default)]
struct Fs {
    layers: Vec<Descriptor>,
    diff_ids: Vec<Digest>,
}

impl Fs {
    fn chain(&self) -> Option<Digest> {
        oci::chain_ids(&self.diff_ids).pop()
    }
}

/// A finished stage.
#[derive(Clone)]
struct StageOut {
    key: String,
    fs: Fs,
    /// The image config's `config` object.
    config: Value,
    history: Vec<Value>,
    created: String,
    platform: (String, String, String),
}

/// Base images by reference: looked up (and pulled when missing or asked to) once per build.
struct Images<'a> {
    engine: &'a Engine,
    ctx: &'a Ctx,
    pull: bool,
    emit: &'a (dyn Fn(Event) + Sync),
    seen: Mutex<BTreeMap<String, Result<Arc<BaseImage>, String>>>,
}

impl Images<'_> {
    fn get(&self, reference: &str) -> Result<Arc<BaseImage>, BuildError> {
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| BuildError::Failed("poisoned".into()))?;
        if let Some(r) = seen.get(reference) {
            return r.clone().map_err(BuildError::NotFound);
        }
        let r = self.load(reference).map_err(|e| e.to_string());
        seen.insert(reference.to_string(), r.clone());
        r.map_err(BuildError::NotFound)
    }

    fn load(&self, reference: &str) -> Result<Arc<BaseImage>, BuildError> {
        let store = &self.engine.store;
        let name = normalize_name(reference)
            .map_err(|e| BuildError::Invalid(format!("base image {reference:?}: {e}")))?;
        let present = match store.image(self.ctx, &name) {
            Ok(_) => true,
            Err(e) if e.is_not_found() => false,
            Err(e) => return Err(e.into()),
        };
        if self.pull || !present {
            (self.emit)(Event::Warning(format!("pulling {name}")));
            let host = berth_distribution::Reference::parse(&name)
                .map(|r| r.registry)
                .map_err(|e| BuildError::Invalid(format!("base image {reference:?}: {e}")))?;
            let base = berth_distribution::ClientOptions::default();
            let opts = berth_store::pull::PullOptions {
                client: self.engine.registries.client_options(&host, &base),
                mirrors: self.engine.registries.mirrors(&host, &base),
                platform: None,
                unpack: true,
                concurrency: 0,
                progress: None,
            };
            if let Err(e) = berth_store::pull::pull(store, self.ctx, &name, &opts) {
                if present {
                    (self.emit)(Event::Warning(format!(
                        "pulling {name} failed, using the local image: {e}"
                    )));
                } else {
                    return Err(BuildError::NotFound(format!(
                        "base image {reference}: not in the store ({name}) and pulling it failed: {e}"
                    )));
                }
            }
        }
        let img = store.image(self.ctx, &name)?;
        let (mdesc, m) = resolve_manifest(store, self.ctx, &img.target, &Platform::host())?;
        let config: Value = read_json(store, self.ctx, &m.config)?;
        let diff_ids = config["rootfs"]["diff_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str().and_then(|s| Digest::parse(s).ok()))
            .collect::<Vec<_>>();
        Ok(Arc::new(BaseImage {
            name,
            manifest: mdesc.digest,
            config,
            layers: m.layers,
            diff_ids,
        }))
    }
}

impl ImageResolver for Images<'_> {
    fn config(&self, image: &str, _: Option<&str>) -> Option<ImageConfig> {
        let b = self.get(image).ok()?;
        serde_json::from_value(b.config["config"].clone()).ok()
    }
}

/// Removes an active snapshot or view on drop unless it was committed.
struct Active<'a> {
    store: &'a Store,
    ctx: Ctx,
    key: String,
    live: bool,
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        if self.live {
            if let Err(e) = self.store.snapshotter().remove(&self.ctx, &self.key) {
                tracing::warn!(key = self.key, error = %e, "removing a build snapshot");
            }
        }
    }
}

/// Removes the build's work dir on drop.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.0.display(), error = %e, "removing a build dir");
            }
        }
    }
}

/// Hashes the uncompressed tar while passing it to the compressor.
struct DiffIdWriter<W: Write> {
    inner: berth_layer::Compressor<W>,
    hash: Sha256,
}

impl<W: Write> Write for DiffIdWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Where COPY/ADD read from: a directory on the host, kept open (and mounted) while needed.
struct Sources<'a> {
    items: Vec<SourceItem>,
    _mount: Option<View<'a>>,
    _downloads: Option<RemoveOnDrop>,
}

/// A directory removed with what is in it when dropped (ADD's downloads).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A mounted read-only view; unmounted, then removed, on drop (fields drop in order).
struct View<'a> {
    tm: TempMount,
    _snapshot: Option<Active<'a>>,
}

impl View<'_> {
    fn path(&self) -> &Path {
        self.tm.path()
    }
}

struct SourceItem {
    /// The source as written (for messages).
    _written: String,
    /// The base name it gets in a destination directory.
    name: String,
    /// Open O_PATH; reached through `/proc/self/fd/N`.
    fd: OwnedFd,
    /// Downloaded by ADD: copied as a file, never unpacked.
    remote: bool,
}

impl SourceItem {
    fn path(&self) -> PathBuf {
        fsops::fd_path(&self.fd)
    }
}

/// One running build.
struct Build<'a> {
    engine: &'a Engine,
    /// The namespace, with the build's lease.
    ctx: Ctx,
    id: String,
    work: PathBuf,
    context: PathBuf,
    req: &'a Request,
    images: Images<'a>,
    emit: &'a (dyn Fn(Event) + Sync),
    abort: &'a AtomicBool,
    /// Original instruction text by line.
    text: BTreeMap<usize, String>,
    done: Mutex<BTreeMap<usize, StageOut>>,
    seq: std::sync::atomic::AtomicUsize,
    /// The planned stages' indices and names (for `RUN --mount=from=`).
    stage_names: Vec<(usize, Option<String>)>,
}

impl Engine {
    /// Runs a build: `context` is the context as a tar stream (possibly empty). `abort` is
    /// set by the caller when the client goes away; it is also set here when one stage fails,
    /// to stop the others.
    pub fn build(
        &self,
        ns: &Ctx,
        req: &Request,
        context: Box<dyn Read + Send>,
        emit: &(dyn Fn(Event) + Sync),
        abort: &AtomicBool,
    ) -> Result<Output, BuildError> {
        if let NetworkMode::Network(name) = &req.network {
            // Before anything is made: a build on a network that is not there fails at once,
            // even if no RUN step would run.
            self.networks.get(ns, name).map_err(network_error)?;
        }
        // Dropped last, once every RUN container of this build is gone.
        let _active = run::ActiveBuild::enter();
        let id = format!("{:016x}", fastrand::u64(..));
        let work = self.state_dir.join("builds").join(&id);
        std::fs::create_dir_all(&work)
            .map_err(|e| BuildError::Failed(format!("creating {}: {e}", work.display())))?;
        let _work_guard = WorkDir(work.clone());
        let ctx_dir = work.join("context");
        std::fs::create_dir(&ctx_dir)
            .map_err(|e| BuildError::Failed(format!("creating {}: {e}", ctx_dir.display())))?;
        extract_context(context, &ctx_dir)?;
        let text = self.dockerfile(req, &ctx_dir)?;
        let stages =
            berth_build::parse_dockerfile(&text).map_err(|e| BuildError::Invalid(e.to_string()))?;
        let mut lines = BTreeMap::new();
        for st in &stages.stages {
            if let Some(orig) = text.lines().nth(st.line.saturating_sub(1)) {
                lines.insert(st.line, orig.trim().to_string());
            }
            for c in &st.commands {
                lines.insert(c.line, c.original.clone());
            }
        }
        let images = Images {
            engine: self,
            ctx: ns,
            pull: req.pull,
            emit,
            seen: Mutex::new(BTreeMap::new()),
        };
        let opts = BuildOptions {
            build_args: req.build_args.clone(),
            target: req.target.clone(),
            platform_args: berth_build::platform_args(&host_platform(), &host_platform()),
        };
        let plan = berth_build::plan(&stages, &opts, &images)
            .map_err(|e| BuildError::Invalid(e.to_string()))?;
        for w in &plan.warnings {
            emit(Event::Warning(w.clone()));
        }
        // A lease for everything the build makes, removed at the end (and by berthd's crash
        // recovery, being temporary).
        let mut labels = Labels::new();
        labels.insert(berth_store::LABEL_TEMPORARY_LEASE.into(), "true".into());
        let exp = chrono::Utc::now() + chrono::Duration::hours(24);
        labels.insert(berth_store::LABEL_GC_EXPIRE.into(), exp.to_rfc3339());
        let lease = self
            .store
            .lease_create(ns, &format!("build-{id}"), labels)?;
        let b = Build {
            engine: self,
            ctx: ns.with_lease(&lease.id),
            id,
            work: work.clone(),
            context: ctx_dir,
            req,
            images,
            emit,
            abort,
            text: lines,
            done: Mutex::new(BTreeMap::new()),
            seq: Default::default(),
            stage_names: plan
                .stages
                .iter()
                .map(|s| (s.index, s.name.clone()))
                .collect(),
        };
        let res = b.run(&plan);
        if let Err(e) = self.store.lease_delete(ns, &lease.id) {
            tracing::warn!(lease = lease.id, error = %e, "removing the build lease");
        }
        res
    }

    fn dockerfile(&self, req: &Request, ctx_dir: &Path) -> Result<String, BuildError> {
        if let Some(t) = &req.dockerfile_content {
            return Ok(t.clone());
        }
        let name = if req.dockerfile.is_empty() {
            "Dockerfile"
        } else {
            req.dockerfile.as_str()
        };
        let root = fsops::open_root(ctx_dir)
            .map_err(|e| BuildError::Failed(format!("opening the context: {e}")))?;
        use std::os::fd::AsRawFd;
        let fd = fsops::openat2(
            root.as_raw_fd(),
            Path::new(name.trim_start_matches('/')),
            libc::O_RDONLY,
            fsops::BENEATH,
        )
        .map_err(|e| {
            BuildError::Invalid(format!(
                "failed to read dockerfile: open {name}: {}",
                io_text(&e)
            ))
        })?;
        let mut s = String::new();
        std::fs::File::from(fd)
            .take(16 << 20)
            .read_to_string(&mut s)
            .map_err(|e| BuildError::Invalid(format!("failed to read dockerfile {name}: {e}")))?;
        Ok(s)
    }

    /// At berthd's start no build runs: removes the work dirs a crashed berthd left. (Their
    /// snapshots, `extract-build-*` keys in a temporary lease, go with the store's recovery.)
    pub fn recover(&self) {
        self.networks.release_builds();
        run::remove_cgroup_parent();
        let Ok(rd) = std::fs::read_dir(self.state_dir.join("builds")) else {
            return;
        };
        for e in rd.flatten() {
            if e.file_name() == "runtime" {
                continue;
            }
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => {
                    tracing::info!(dir = %e.path().display(), "removed an interrupted build's dir")
                }
                Err(err) => {
                    tracing::warn!(dir = %e.path().display(), error = %err, "removing an interrupted build's dir")
                }
            }
        }
    }

    /// Drops the namespace's build cache (GC reclaims the rest).
    pub fn prune(&self, ctx: &Ctx) -> Result<u64, StoreError> {
        let n = cache::prune(&self.store, ctx)?;
        Ok(n + mounts::prune(&self.cache_mounts.join(&ctx.namespace)))
    }
}

fn io_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) => "no such file or directory".into(),
        Some(libc::EXDEV) | Some(libc::ELOOP) => "path leads outside the build context".into(),
        _ => e.to_string(),
    }
}

fn host_platform() -> String {
    let p = Platform::host();
    if p.variant.is_empty() {
        format!("{}/{}", p.os, p.architecture)
    } else {
        format!("{}/{}/{}", p.os, p.architecture, p.variant)
    }
}

/// Extracts the context tar (plain or compressed) into `dir`, confined to it. An empty stream
/// is an empty context.
fn extract_context(mut context: Box<dyn Read + Send>, dir: &Path) -> Result<(), BuildError> {
    let mut head = vec![0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match context.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(BuildError::Invalid(format!(
                    "reading the build context: {e}"
                )))
            }
        }
    }
    if n == 0 {
        return Ok(());
    }
    head.truncate(n);
    let plain = berth_layer::detect_compression(&head) == Compression::None;
    if plain && (n < 512 || &head[257..262] != b"ustar") && head.iter().any(|b| *b != 0) {
        return Err(BuildError::Invalid(
            "invalid build context: not a tar archive (expected a tar stream or a Dockerfile)"
                .into(),
        ));
    }
    let stream = std::io::Cursor::new(head).chain(context);
    let opts = berth_layer::ApplyOptions {
        whiteouts: WhiteoutMode::Delete,
        same_owner: nix::unistd::geteuid().is_root(),
        xattrs: false,
    };
    berth_layer::apply_layer(stream, dir, &opts)
        .map_err(|e| BuildError::Invalid(format!("invalid build context: {e}")))?;
    Ok(())
}

impl Build<'_> {
    fn stopped(&self) -> bool {
        self.abort.load(Ordering::Acquire)
    }

    fn run(&self, plan: &Plan) -> Result<Output, BuildError> {
        for group in &plan.parallel {
            let stages: Vec<&PlannedStage> = group.iter().filter_map(|i| plan.stage(*i)).collect();
            let errors: Mutex<Vec<BuildError>> = Mutex::new(Vec::new());
            let one = |st: &PlannedStage| match self.stage(st) {
                Ok(out) => {
                    if let Ok(mut d) = self.done.lock() {
                        d.insert(st.index, out);
                    }
                }
                Err(e) => {
                    self.abort.store(true, Ordering::Release);
                    if let Ok(mut v) = errors.lock() {
                        v.push(e);
                    }
                }
            };
            if stages.len() == 1 {
                one(stages[0]);
            } else {
                std::thread::scope(|s| {
                    for st in &stages {
                        let one = &one;
                        s.spawn(move || one(st));
                    }
                });
            }
            let mut errs = errors.into_inner().unwrap_or_default();
            if !errs.is_empty() {
                // The first real failure, not the stages it stopped.
                let i = errs
                    .iter()
                    .position(|e| !matches!(e, BuildError::Cancelled))
                    .unwrap_or(0);
                return Err(errs.swap_remove(i));
            }
            if self.stopped() {
                return Err(BuildError::Cancelled);
            }
        }
        let out = self
            .done
            .lock()
            .ok()
            .and_then(|d| d.get(&plan.target).cloned())
            .ok_or_else(|| BuildError::Failed("the target stage was not built".into()))?;
        let target = plan
            .target_stage()
            .ok_or_else(|| BuildError::Failed("no target stage".into()))?;
        self.commit_image(target, &out)
    }

    fn label(
        &self,
        st: &PlannedStage,
        n: usize,
        total: usize,
        line: usize,
        fallback: &str,
    ) -> String {
        let text = self
            .text
            .get(&line)
            .cloned()
            .unwrap_or_else(|| fallback.trim_end_matches(" # buildkit").to_string());
        let text = text.lines().next().unwrap_or_default().to_string();
        format!("[{} {n}/{total}] {text}", st.display_name)
    }

    fn stage(&self, st: &PlannedStage) -> Result<StageOut, BuildError> {
        let total = st.steps.len() + 1;
        let from_label = self.label(st, 1, total, st.line, "FROM");
        let started = Instant::now();
        let host = Platform::host();
        let mut out = match &st.base {
            Base::Scratch => StageOut {
                key: "scratch".into(),
                fs: Fs::default(),
                config: json!({}),
                history: Vec::new(),
                created: now(),
                platform: (
                    host.os.clone(),
                    host.architecture.clone(),
                    host.variant.clone(),
                ),
            },
            Base::Image(r) => {
                let b = self.images.get(r).map_err(|e| e.at(&from_label, st.line))?;
                if !b.diff_ids.is_empty() {
                    self.engine
                        .store
                        .unpack(&self.ctx, &b.name, None)
                        .map_err(|e| BuildError::from(e).at(&from_label, st.line))?;
                }
                StageOut {
                    key: b.manifest.to_string(),
                    fs: Fs {
                        layers: b.layers.clone(),
                        diff_ids: b.diff_ids.clone(),
                    },
                    config: b.config["config"].clone(),
                    history: b.config["history"].as_array().cloned().unwrap_or_default(),
                    created: b.config["created"].as_str().unwrap_or_default().to_string(),
                    platform: (
                        b.config["os"].as_str().unwrap_or("linux").to_string(),
                        b.config["architecture"]
                            .as_str()
                            .unwrap_or(&host.architecture)
                            .to_string(),
                        b.config["variant"].as_str().unwrap_or_default().to_string(),
                    ),
                }
            }
            Base::Stage(i) => self
                .done
                .lock()
                .ok()
                .and_then(|d| d.get(i).cloned())
                .ok_or_else(|| BuildError::Failed(format!("stage {i} was not built")))?,
        };
        (self.emit)(Event::Start(from_label.clone()));
        (self.emit)(Event::Done(from_label, started.elapsed().as_secs_f64()));
        for (n, step) in st.steps.iter().enumerate() {
            if self.stopped() {
                return Err(BuildError::Cancelled);
            }
            let label = self.label(st, n + 2, total, step.line, &step.created_by);
            self.step(st, step, &label, &mut out)
                .map_err(|e| e.at(&label, step.line))?;
        }
        Ok(out)
    }

    fn step(
        &self,
        st: &PlannedStage,
        step: &Step,
        label: &str,
        out: &mut StageOut,
    ) -> Result<(), BuildError> {
        let started = Instant::now();
        let store = &self.engine.store;
        // Sources first: their digest is part of the key.
        let sources = match &step.instruction {
            Instruction::Copy(t) | Instruction::Add(t) => {
                Some(self.sources(st, step, t, matches!(step.instruction, Instruction::Add(_)))?)
            }
            _ => None,
        };
        let digest = match &step.instruction {
            Instruction::Run(r) if !r.mounts.is_empty() => self.mounts_digest(r)?,
            _ => sources.as_ref().map(|(_, d)| d.clone()),
        };
        let key = cache_key(&out.key, step, digest.as_deref());
        if !self.req.no_cache {
            if let Some(e) = cache::lookup(store, &self.ctx, &key)? {
                (self.emit)(Event::Cached(label.to_string()));
                self.apply(step, out, &key, &e);
                return Ok(());
            }
        }
        (self.emit)(Event::Start(label.to_string()));
        let parent = out.fs.chain();
        let layer = match &step.instruction {
            Instruction::Run(r) => {
                let network = match r.network {
                    Some(berth_build::instructions::NetworkMode::Host) => NetworkMode::Host,
                    Some(berth_build::instructions::NetworkMode::None) => NetworkMode::None,
                    _ => self.req.network.clone(),
                };
                self.fs_step(parent.as_ref(), &mut |rootfs| {
                    self.run_step(step, r, rootfs, &network, label)
                })?
            }
            Instruction::Copy(t) | Instruction::Add(t) => {
                let (srcs, _) = sources
                    .as_ref()
                    .ok_or_else(|| BuildError::Failed("no sources".into()))?;
                let from_context = t.from.is_none();
                self.fs_step(parent.as_ref(), &mut |rootfs| {
                    copy_into(
                        rootfs,
                        srcs,
                        t,
                        &step.config,
                        from_context,
                        matches!(step.instruction, Instruction::Add(_)),
                    )
                })?
            }
            Instruction::Workdir(_) => {
                let dir = step.config.working_dir.clone();
                self.fs_step(parent.as_ref(), &mut |rootfs| {
                    let root =
                        fsops::open_root(rootfs).map_err(|e| BuildError::Failed(e.to_string()))?;
                    fsops::mkdir_all(&root, &dir, (0, 0))
                        .map_err(|e| BuildError::Failed(format!("creating {dir}: {e}")))?;
                    Ok(())
                })?
            }
            _ => None,
        };
        let entry = cache::Entry {
            created: now(),
            layer,
        };
        cache::store_entry(store, &self.ctx, &key, &entry)?;
        self.apply(step, out, &key, &entry);
        (self.emit)(Event::Done(
            label.to_string(),
            started.elapsed().as_secs_f64(),
        ));
        Ok(())
    }

    /// Moves the stage on by one step.
    fn apply(&self, step: &Step, out: &mut StageOut, key: &str, e: &cache::Entry) {
        out.key = key.to_string();
        let mut h = json!({
            "created": e.created,
            "created_by": step.created_by,
            "comment": "buildkit.dockerfile.v0",
        });
        match &e.layer {
            Some(l) => {
                out.fs.layers.push(l.desc.clone());
                out.fs.diff_ids.push(l.diff_id.clone());
            }
            None => h["empty_layer"] = json!(true),
        }
        out.history.push(h);
        out.created = e.created.clone();
        out.config = step.config.merged_into(&out.config);
    }

    /// COPY/ADD sources: opened, and their digest.
    fn sources(
        &self,
        st: &PlannedStage,
        step: &Step,
        t: &Transfer,
        add: bool,
    ) -> Result<(Sources<'_>, String), BuildError> {
        let _ = st;
        let mut h = Sha256::new();
        let (root, mount, beneath) = match step.sources.iter().find(|s| **s != Source::Context) {
            None => (self.context.clone(), None, true),
            Some(src) => {
                let (key, chain) = match src {
                    Source::Stage(i) => {
                        let d = self
                            .done
                            .lock()
                            .map_err(|_| BuildError::Failed("poisoned".into()))?;
                        let o = d.get(i).ok_or_else(|| {
                            BuildError::Failed(format!("stage {i} was not built"))
                        })?;
                        (o.key.clone(), o.fs.chain())
                    }
                    Source::Image(r) => {
                        let b = self.images.get(r)?;
                        if !b.diff_ids.is_empty() {
                            self.engine.store.unpack(&self.ctx, &b.name, None)?;
                        }
                        (b.manifest.to_string(), oci::chain_ids(&b.diff_ids).pop())
                    }
                    Source::Context => unreachable!(),
                };
                h.update(format!("from {key}\n").as_bytes());
                let tm = self.view(chain.as_ref())?;
                (tm.path().to_path_buf(), Some(tm), false)
            }
        };
        if !t.excludes.is_empty() || t.parents {
            return Err(BuildError::Invalid(
                "COPY --exclude and --parents are not supported by berth build yet".into(),
            ));
        }
        use std::os::fd::AsRawFd;
        let rootfd = fsops::open_root(&root)
            .map_err(|e| BuildError::Failed(format!("opening sources: {e}")))?;
        let resolve = if beneath {
            fsops::BENEATH
        } else {
            fsops::IN_ROOT
        };
        let outside = |src: &str| {
            BuildError::Invalid(format!("forbidden path outside the build context: {src}"))
        };
        let mut items = Vec::new();
        let mut downloads = None;
        for src in &t.sources {
            if add && Transfer::is_url(src) {
                let dir = downloads.get_or_insert_with(|| {
                    let n = self.seq.fetch_add(1, Ordering::Relaxed);
                    RemoveOnDrop(self.work.join(format!("download-{n}")))
                });
                std::fs::create_dir_all(&dir.0)
                    .map_err(|e| BuildError::Failed(format!("ADD {src}: {e}")))?;
                let got = remote::fetch(src, &dir.0, t.checksum.as_deref())?;
                h.update(format!("url {src} {} {}\n", got.name, got.digest).as_bytes());
                let fd = std::fs::File::open(&got.path)
                    .map(OwnedFd::from)
                    .map_err(|e| BuildError::Failed(format!("ADD {src}: {e}")))?;
                items.push(SourceItem {
                    _written: src.clone(),
                    name: got.name,
                    fd,
                    remote: true,
                });
                continue;
            }
            let clean = berth_build::ignore::clean_path(src);
            let rel = clean.trim_start_matches('/').to_string();
            let rel = if rel.is_empty() { ".".to_string() } else { rel };
            if rel == ".." || rel.starts_with("../") {
                return Err(outside(src));
            }
            let (parent, last) = match rel.rsplit_once('/') {
                Some((p, l)) => (p.to_string(), l.to_string()),
                None => (".".to_string(), rel.clone()),
            };
            let wild = last.contains(['*', '?', '[']);
            let names: Vec<String> = if wild {
                let pfd = fsops::openat2(
                    rootfd.as_raw_fd(),
                    Path::new(&parent),
                    libc::O_PATH | libc::O_DIRECTORY,
                    resolve,
                )
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::EXDEV) | Some(libc::ELOOP) if beneath => outside(src),
                    _ => BuildError::Invalid(format!(
                        "failed to compute cache key: \"/{parent}\": not found"
                    )),
                })?;
                let mut v: Vec<String> = std::fs::read_dir(fsops::fd_path(&pfd))
                    .map_err(|e| BuildError::Failed(e.to_string()))?
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| fsops::glob_match(&last, n))
                    .collect();
                v.sort();
                if v.is_empty() {
                    return Err(BuildError::Invalid(format!("failed to compute cache key: no source files were specified ({src} matches nothing)")));
                }
                v.into_iter()
                    .map(|n| {
                        if parent == "." {
                            n
                        } else {
                            format!("{parent}/{n}")
                        }
                    })
                    .collect()
            } else {
                vec![rel.clone()]
            };
            for n in names {
                let fd = fsops::openat2(rootfd.as_raw_fd(), Path::new(&n), libc::O_PATH, resolve)
                    .map_err(|e| match e.raw_os_error() {
                    Some(libc::EXDEV) | Some(libc::ELOOP) if beneath => outside(src),
                    Some(libc::ENOENT) | Some(libc::ENOTDIR) => BuildError::Invalid(format!(
                        "failed to compute cache key: \"/{n}\": not found"
                    )),
                    _ => BuildError::Failed(format!("opening {src}: {e}")),
                })?;
                let name = n.rsplit('/').next().unwrap_or_default().to_string();
                let item = SourceItem {
                    _written: src.clone(),
                    name: if name == "." { String::new() } else { name },
                    fd,
                    remote: false,
                };
                if beneath {
                    fsops::tree_digest(&mut h, &item.path(), &n, true)
                        .map_err(|e| BuildError::Failed(format!("reading {src}: {e}")))?;
                }
                items.push(item);
            }
        }
        Ok((
            Sources {
                items,
                _mount: mount,
                _downloads: downloads,
            },
            hex(h),
        ))
    }

    /// A read-only view of a committed chain, mounted (an empty dir for none).
    fn view(&self, chain: Option<&Digest>) -> Result<View<'_>, BuildError> {
        let store = &self.engine.store;
        let Some(c) = chain else {
            let tm = TempMount::new(&self.engine.state_dir, &[])
                .map_err(|e| BuildError::Failed(format!("mounting: {e}")))?;
            return Ok(View {
                tm,
                _snapshot: None,
            });
        };
        let key = format!(
            "extract-build-{}-view-{}",
            self.id,
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let mounts = store
            .snapshotter()
            .view(&self.ctx, &key, Some(c.as_str()), Labels::new())?;
        let active = Active {
            store,
            ctx: self.ctx.clone(),
            key,
            live: true,
        };
        let tm = TempMount::new(&self.engine.state_dir, &mounts)
            .map_err(|e| BuildError::Failed(format!("mounting a view: {e}")))?;
        Ok(View {
            tm,
            _snapshot: Some(active),
        })
    }

    /// Runs `f` on a writable snapshot of `parent`, then turns what changed into a layer.
    fn fs_step(
        &self,
        parent: Option<&Digest>,
        f: &mut dyn FnMut(&Path) -> Result<(), BuildError>,
    ) -> Result<Option<cache::Layer>, BuildError> {
        let store = &self.engine.store;
        let sn = store.snapshotter();
        let key = format!(
            "extract-build-{}-{}",
            self.id,
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let mounts = sn.prepare(&self.ctx, &key, parent.map(|p| p.as_str()), Labels::new())?;
        let mut active = Active {
            store,
            ctx: self.ctx.clone(),
            key: key.clone(),
            live: true,
        };
        {
            let tm = TempMount::new(&self.engine.state_dir, &mounts)
                .map_err(|e| BuildError::Failed(format!("mounting the step's rootfs: {e}")))?;
            f(tm.path())?;
        }
        let (upper, mode) = sn.apply_target(&self.ctx, &key)?;
        let layer = write_layer(store, &self.ctx, &format!("build-{key}"), &mut |out| {
            if mode == WhiteoutMode::OverlayUpper {
                Ok(berth_layer::diff_overlay_upper(&upper, out).map_err(StoreError::from)?)
            } else {
                let lower = self.view(parent)?;
                Ok(berth_layer::diff_trees(lower.path(), &upper, out).map_err(StoreError::from)?)
            }
        })?;
        let Some((desc, diff_id)) = layer else {
            return Ok(None);
        };
        let chain = match parent {
            None => diff_id.clone(),
            Some(p) => Digest::of(format!("{p} {diff_id}").as_bytes()),
        };
        match sn.commit(&self.ctx, chain.as_str(), &key, Labels::new()) {
            Ok(()) => active.live = false,
            Err(e) if e.is_already_exists() => {} // the same layer exists: ours goes
            Err(e) => return Err(e.into()),
        }
        drop(active);
        Ok(Some(cache::Layer {
            desc,
            diff_id,
            chain,
        }))
    }

    fn run_step(
        &self,
        step: &Step,
        r: &berth_build::instructions::Run,
        rootfs: &Path,
        network: &NetworkMode,
        label: &str,
    ) -> Result<(), BuildError> {
        let cfg = &step.config;
        let cwd = if cfg.working_dir.is_empty() {
            "/".to_string()
        } else {
            cfg.working_dir.clone()
        };
        let root = fsops::open_root(rootfs).map_err(|e| BuildError::Failed(e.to_string()))?;
        fsops::mkdir_all(&root, &cwd, (0, 0))
            .map_err(|e| BuildError::Failed(format!("creating the working dir {cwd}: {e}")))?;
        drop(root);
        let user = if cfg.user.is_empty() {
            (0, 0)
        } else {
            fsops::resolve_user(rootfs, &cfg.user, false).map_err(BuildError::Failed)?
        };
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let id = format!("build-{}-{n}", self.id);
        let bundle = self.work.join(format!("run-{n}"));
        let pipes: Vec<(String, String)> = step
            .pipes
            .iter()
            .map(|p| (p.name.clone(), p.data.clone()))
            .collect();
        let mut mounts = self.prepare_mounts(r, rootfs, &cwd)?;
        let mount_spec = mounts.spec.clone();
        let spec = run::RunSpec {
            id: &id,
            rootfs,
            bundle: &bundle,
            args: &step.argv,
            env: &step.env,
            cwd: &cwd,
            user,
            network,
            pipes: &pipes,
            mounts: &mount_spec,
        };
        let runtime_root = self.engine.state_dir.join("builds").join("runtime");
        let mut config = run::spec(&spec);
        let code = self
            .join_network(&id, network, &mut config, &mut mounts, rootfs)
            .and_then(|net| {
                let code = run::run(
                    &self.engine.runtime,
                    &runtime_root,
                    &spec,
                    &config,
                    label,
                    self.emit,
                    self.abort,
                );
                // The container is gone (run waits for the runtime's delete, also when
                // killed): its network goes now, on success, failure or cancel alike.
                drop(net);
                code
            });
        mounts.finish(rootfs);
        let code = code?;
        if code != 0 {
            let cmd = serde_json::to_string(&step.argv.join(" ")).unwrap_or_default();
            return Err(BuildError::Failed(format!(
                "process {cmd} did not complete successfully: exit code: {code}"
            )));
        }
        Ok(())
    }

    /// For a step on a network: joins container `id` to it as `berth run --net` would
    /// (`Networks::attach`: a netns with an address, /etc/hosts, resolv.conf and hostname
    /// bound over the rootfs, whose missing mount points are made here and removed after the
    /// run, so the layer never holds them). Released when the returned guard is dropped.
    fn join_network(
        &self,
        id: &str,
        network: &NetworkMode,
        config: &mut Value,
        mounts: &mut mounts::Prepared<'_>,
        rootfs: &Path,
    ) -> Result<Option<StepNetwork<'_>>, BuildError> {
        let NetworkMode::Network(name) = network else {
            return Ok(None);
        };
        self.stub_files(
            mounts,
            rootfs,
            &["/etc/hosts", "/etc/resolv.conf", "/etc/hostname"],
        )?;
        let plan = crate::networks::Plan {
            joins: vec![crate::networks::Join {
                name: name.clone(),
                ..Default::default()
            }],
            hostname: run::HOSTNAME.to_string(),
            build: Some(self.id.clone()),
            ..Default::default()
        };
        let networks = &self.engine.networks;
        networks
            .attach(&self.ctx, id, &plan, config)
            .map_err(network_error)?;
        Ok(Some(StepNetwork {
            networks,
            namespace: self.ctx.namespace.clone(),
            id: id.to_string(),
        }))
    }

    /// Writes the image (config, manifest) and names it.
    fn commit_image(&self, st: &PlannedStage, out: &StageOut) -> Result<Output, BuildError> {
        let mut config = out.config.clone();
        if !self.req.labels.is_empty() {
            if !config["Labels"].is_object() {
                config["Labels"] = json!({});
            }
            for (k, v) in &self.req.labels {
                config["Labels"][k] = json!(v);
            }
        }
        let _ = st;
        let (os, arch, variant) = &out.platform;
        let mut doc = json!({
            "architecture": arch,
            "os": os,
            "config": config,
            "created": out.created,
            "history": out.history,
            "rootfs": {"type": "layers", "diff_ids": out.fs.diff_ids},
        });
        if !variant.is_empty() {
            doc["variant"] = json!(variant);
        }
        write_image(
            &self.engine.store,
            &self.ctx,
            &doc,
            &out.fs.layers,
            &self.req.tags,
        )
    }
}

/// A RUN step's place on a network; dropping it releases everything `Networks::attach` made
/// (CNI DEL: veth and address lease; the netns; hosts and resolv.conf).
struct StepNetwork<'a> {
    networks: &'a crate::networks::Networks,
    namespace: String,
    id: String,
}

impl Drop for StepNetwork<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.networks.detach(&self.namespace, &self.id) {
            tracing::warn!(id = self.id, error = %e, "releasing a build step's network");
        }
    }
}

/// A network error as the build reports it (a missing network is the client's mistake).
fn network_error(e: crate::networks::NetworkError) -> BuildError {
    use crate::networks::NetworkError as N;
    match e {
        N::NotFound(m) => BuildError::NotFound(m),
        N::InvalidArgument(m) => BuildError::Invalid(m),
        other => BuildError::Failed(other.to_string()),
    }
}

/// Writes a snapshot's changes, as `diff` produces them (an uncompressed layer tar), into a
/// gzip layer blob of the content store under ingest ref `r`, labelled with its uncompressed
/// digest. Returns the layer's descriptor and diff ID, or `None` when nothing changed. Run it
/// inside a lease.
pub fn write_layer(
    store: &Store,
    ctx: &Ctx,
    r: &str,
    diff: &mut dyn FnMut(&mut dyn Write) -> Result<berth_layer::DiffStats, BuildError>,
) -> Result<Option<(Descriptor, Digest)>, BuildError> {
    let mut w = store.content_writer(ctx, r, None, None)?;
    w.truncate(0)?;
    let res = (|| -> Result<(String, u64), BuildError> {
        let mut tee = DiffIdWriter {
            inner: berth_layer::compressor(&mut w, Compression::Gzip).map_err(StoreError::from)?,
            hash: Sha256::new(),
        };
        let stats = diff(&mut tee)?;
        let DiffIdWriter { inner, hash } = tee;
        inner
            .finish()
            .map_err(|e| BuildError::Failed(format!("compressing the layer: {e}")))?;
        Ok((hex(hash), stats.entries))
    })();
    let (diff_hex, entries) = match res {
        Ok(v) => v,
        Err(e) => {
            drop(w);
            let _ = store.content_abort(ctx, r);
            return Err(e);
        }
    };
    if entries == 0 {
        drop(w);
        let _ = store.content_abort(ctx, r);
        return Ok(None);
    }
    let diff_id = Digest::from_hex(&diff_hex)?;
    let size = w.offset();
    let computed = w.digest();
    let mut labels = Labels::new();
    labels.insert(
        berth_store::images::LABEL_UNCOMPRESSED.into(),
        diff_id.to_string(),
    );
    let digest = match w.commit(size, None, labels) {
        Ok(d) => d,
        Err(e) if e.is_already_exists() => computed,
        Err(e) => return Err(e.into()),
    };
    Ok(Some((
        Descriptor::new(oci::MEDIA_TYPE_OCI_LAYER_GZIP, digest, size),
        diff_id,
    )))
}

/// Writes an image: config `doc`, a manifest of `layers`, and an image record per name in
/// `tags` (none: a dangling `berth-dangling@<config digest>` record). The config blob gets
/// the GC reference to the top layer's snapshot. Run it inside a lease.
pub fn write_image(
    store: &Store,
    ctx: &Ctx,
    doc: &Value,
    layers: &[Descriptor],
    tags: &[String],
) -> Result<Output, BuildError> {
    let cfg_bytes = serde_json::to_vec(doc).map_err(|e| BuildError::Failed(e.to_string()))?;
    let diff_ids: Vec<Digest> = doc["rootfs"]["diff_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str().and_then(|s| s.parse().ok()))
        .collect();
    let mut cfg_labels = Labels::new();
    if let Some(top) = oci::chain_ids(&diff_ids).pop() {
        cfg_labels.insert(
            format!(
                "containerd.io/gc.ref.snapshot.{}",
                store.snapshotter().name()
            ),
            top.to_string(),
        );
    }
    let cfg_digest = put_blob(store, ctx, "config", &cfg_bytes, cfg_labels)?;
    let cfg_desc = Descriptor::new(
        oci::MEDIA_TYPE_OCI_CONFIG,
        cfg_digest.clone(),
        cfg_bytes.len() as u64,
    );
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_TYPE_OCI_MANIFEST.into()),
        config: cfg_desc.clone(),
        layers: layers.to_vec(),
        annotations: BTreeMap::new(),
    };
    let m_bytes = serde_json::to_vec(&manifest).map_err(|e| BuildError::Failed(e.to_string()))?;
    let m_desc = Descriptor::new(
        oci::MEDIA_TYPE_OCI_MANIFEST,
        Digest::of(&m_bytes),
        m_bytes.len() as u64,
    );
    let mut children = vec![cfg_desc];
    children.extend(layers.iter().cloned());
    let m_labels: Labels = gc_child_labels(&m_desc, &children)
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    let m_digest = put_blob(store, ctx, "manifest", &m_bytes, m_labels)?;
    let names = if tags.is_empty() {
        vec![format!("berth-dangling@{cfg_digest}")]
    } else {
        tags.to_vec()
    };
    let plain = Ctx::new(ctx.namespace.clone());
    for name in &names {
        let img = Image {
            name: name.clone(),
            target: m_desc.clone(),
            labels: Labels::new(),
            created_at: std::time::SystemTime::now(),
            updated_at: std::time::SystemTime::now(),
        };
        match store.image_create(&plain, &img) {
            Ok(_) => {}
            Err(e) if e.is_already_exists() => {
                store.image_update(&plain, &img, &["target".into()])?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Output {
        image_id: cfg_digest,
        manifest: m_digest,
        names,
    })
}

/// Writes a blob (a config, a manifest) into the content store with `labels`; an existing one
/// only gets the labels.
fn put_blob(
    store: &Store,
    ctx: &Ctx,
    what: &str,
    data: &[u8],
    labels: Labels,
) -> Result<Digest, BuildError> {
    let d = Digest::of(data);
    let r = format!("build-{what}-{}", d.hex());
    let mut w = match store.content_writer(ctx, &r, Some(data.len() as u64), Some(d.clone())) {
        Ok(w) => w,
        Err(e) if e.is_already_exists() => {
            if !labels.is_empty() {
                let l: Vec<(String, Option<String>)> =
                    labels.into_iter().map(|(k, v)| (k, Some(v))).collect();
                store.content_set_labels(ctx, &d, &l)?;
            }
            return Ok(d);
        }
        Err(e) => return Err(e.into()),
    };
    w.truncate(0)?;
    w.write(data)?;
    match w.commit(data.len() as u64, Some(&d), labels) {
        Ok(_) => Ok(d),
        Err(e) if e.is_already_exists() => Ok(d),
        Err(e) => Err(e.into()),
    }
}

/// COPY/ADD into the mounted rootfs.
fn copy_into(
    rootfs: &Path,
    srcs: &Sources,
    t: &Transfer,
    cfg: &ImageConfig,
    from_context: bool,
    add: bool,
) -> Result<(), BuildError> {
    let fail = |what: &str, e: std::io::Error| BuildError::Failed(format!("{what}: {e}"));
    let root = fsops::open_root(rootfs).map_err(|e| fail("opening the rootfs", e))?;
    let workdir = if cfg.working_dir.is_empty() {
        "/"
    } else {
        cfg.working_dir.as_str()
    };
    let abs = if t.dest.starts_with('/') {
        t.dest.clone()
    } else {
        format!("{}/{}", workdir.trim_end_matches('/'), t.dest)
    };
    let dir_form =
        t.dest.ends_with('/') || t.dest.ends_with("/.") || t.dest == "." || t.dest.is_empty();
    let count = srcs.items.len() + t.inline.len();
    if count > 1 && !dir_form {
        return Err(BuildError::Invalid(
            "When using COPY with more than one source file, the destination must be a directory and end with a /".into(),
        ));
    }
    let owner = match &t.chown {
        Some(spec) => Some(fsops::resolve_user(rootfs, spec, true).map_err(BuildError::Invalid)?),
        None if from_context || !t.inline.is_empty() => Some((0, 0)),
        None => None,
    };
    let mode = match &t.chmod {
        Some(m) => Some(
            u32::from_str_radix(m, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| {
                    BuildError::Invalid(format!(
                        "invalid chmod parameter {m:?}: only octal modes are supported"
                    ))
                })?,
        ),
        None => None,
    };
    let opts = fsops::CopyOpts { owner, mode };
    // Directories the copy creates on the way get the --chown owner too (BuildKit and
    // buildah do this; the classic builder left them to root).
    let dirs_owner = owner.unwrap_or((0, 0));
    let split = |p: &str| -> (String, String) {
        let p = berth_build::ignore::clean_path(p);
        match p.rsplit_once('/') {
            Some((d, f)) => (
                if d.is_empty() {
                    "/".into()
                } else {
                    d.to_string()
                },
                f.to_string(),
            ),
            None => ("/".into(), p),
        }
    };
    for item in &srcs.items {
        let path = item.path();
        let md = std::fs::metadata(&path).map_err(|e| fail("reading a source", e))?;
        if md.is_dir() {
            let d = fsops::mkdir_all(&root, &abs, dirs_owner)
                .map_err(|e| fail(&format!("creating {abs}"), e))?;
            fsops::copy_dir_contents(&path, &d, &opts).map_err(|e| fail("copying", e))?;
            continue;
        }
        if add && !item.remote && md.is_file() && is_archive(&path) {
            let d = fsops::mkdir_all(&root, &abs, dirs_owner)
                .map_err(|e| fail(&format!("creating {abs}"), e))?;
            let f = std::fs::File::open(&path).map_err(|e| fail("opening an archive", e))?;
            let o = berth_layer::ApplyOptions {
                whiteouts: WhiteoutMode::Delete,
                same_owner: true,
                xattrs: true,
            };
            berth_layer::apply_layer(f, &fsops::fd_path(&d), &o)
                .map_err(|e| BuildError::Failed(format!("extracting {}: {e}", item.name)))?;
            continue;
        }
        let (dir, name) = if dir_form || fsops::is_dir_in(&root, &abs) {
            (abs.clone(), item.name.clone())
        } else {
            split(&abs)
        };
        let d = fsops::mkdir_all(&root, &dir, dirs_owner)
            .map_err(|e| fail(&format!("creating {dir}"), e))?;
        fsops::copy_entry(&path, &d, std::ffi::OsStr::new(&name), &opts, true)
            .map_err(|e| fail("copying", e))?;
    }
    for f in &t.inline {
        let (dir, name) = if dir_form || fsops::is_dir_in(&root, &abs) {
            (abs.clone(), f.name.clone())
        } else {
            split(&abs)
        };
        let d = fsops::mkdir_all(&root, &dir, dirs_owner)
            .map_err(|e| fail(&format!("creating {dir}"), e))?;
        fsops::write_file(
            &d,
            std::ffi::OsStr::new(&name),
            f.data.as_bytes(),
            owner.unwrap_or((0, 0)),
            mode.unwrap_or(0o644),
        )
        .map_err(|e| fail("writing a heredoc", e))?;
    }
    Ok(())
}

/// Whether a file is a tar archive ADD unpacks (plain, gzip or zstd).
fn is_archive(p: &Path) -> bool {
    let mut head = vec![0u8; 512];
    let Ok(mut f) = std::fs::File::open(p) else {
        return false;
    };
    let n = f.read(&mut head).unwrap_or(0);
    head.truncate(n);
    match berth_layer::detect_compression(&head) {
        Compression::None => n >= 262 && &head[257..262] == b"ustar",
        _ => true,
    }
}
