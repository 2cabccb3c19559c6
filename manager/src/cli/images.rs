//! `berth images import|export|ls|rm|check|unpack|pull|push|tag`.
//!
//! Import and export go through Berth's `Archives` service: the CLI streams the archive file to
//! the daemon (or the daemon's export to a file) in 1 MiB chunks. `ls` and `check` walk each
//! image's index/manifest/config through the standard content service.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use berth_proto::berth::services::distribution::v1 as dpb;
use berth_proto::berth::services::distribution::v1::distribution_client::DistributionClient;
use berth_proto::berth::services::images::v1 as apb;
use berth_proto::berth::services::images::v1::archives_client::ArchivesClient;
use berth_proto::containerd::services::content::v1 as cpb;
use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use berth_proto::containerd::services::images::v1 as pb;
use berth_proto::containerd::services::images::v1::images_client::ImagesClient;
use berth_proto::containerd::services::snapshots::v1 as spb;
use berth_proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::containerd::types::{Descriptor, Platform};
use clap::Subcommand;
use sha2::Digest as _;
use tokio_stream::StreamExt;

use super::output::{self, Format};
use super::{content, rpc_error, Env};

/// Image commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Import an OCI image-layout or `docker save` archive (`-` = stdin) and unpack it.
    Import {
        /// The archive.
        file: PathBuf,
        /// Name for images the archive names only by tag (`<base-name>:<tag>`).
        #[arg(long)]
        base_name: Option<String>,
        /// Only store the content; do not unpack into snapshots.
        #[arg(long)]
        no_unpack: bool,
        /// Platform to unpack, `os/arch[/variant]` (default: this host's).
        #[arg(long)]
        platform: Option<String>,
        /// Labels for the created images, `key=value`.
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Export images as an OCI image-layout archive (`-` = stdout).
    Export {
        /// The archive to write.
        file: PathBuf,
        /// The images.
        #[arg(required = true)]
        names: Vec<String>,
        /// Only this platform's manifests, `os/arch[/variant]` (default: all).
        #[arg(long)]
        platform: Option<String>,
    },
    /// List images.
    #[command(visible_alias = "list")]
    Ls {
        /// Show only names.
        #[arg(long, short)]
        quiet: bool,
        /// containerd-style filters (`name==...`, `labels."k"==v`).
        filters: Vec<String>,
    },
    /// Remove images; garbage collection then frees what nothing else uses.
    #[command(visible_alias = "remove")]
    Rm {
        /// The images.
        #[arg(required = true)]
        names: Vec<String>,
        /// Return before garbage collection finished.
        #[arg(long)]
        r#async: bool,
    },
    /// Check that every blob of each image is present, and whether it is unpacked.
    Check {
        /// containerd-style filters (default: all images).
        filters: Vec<String>,
    },
    /// Unpack an image into snapshots.
    Unpack {
        /// The image.
        name: String,
        /// Platform, `os/arch[/variant]` (default: this host's).
        #[arg(long)]
        platform: Option<String>,
    },
    /// Pull an image from a registry (berthd downloads, verifies and unpacks it).
    Pull {
        /// `registry/repository[:tag][@digest]`.
        reference: String,
        /// Platform, `os/arch[/variant]` (default: the daemon's).
        #[arg(long)]
        platform: Option<String>,
        /// Only store the content; do not unpack into snapshots.
        #[arg(long)]
        no_unpack: bool,
        /// Parallel layer downloads (default 3).
        #[arg(long, default_value_t = 0)]
        concurrency: u32,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Push a local image to a registry.
    Push {
        /// The local image.
        name: String,
        /// Where to push (default: the image's own name).
        remote: Option<String>,
        /// Push only this platform's manifest, `os/arch[/variant]`.
        #[arg(long)]
        platform: Option<String>,
        /// Bytes per upload chunk (default 8 MiB).
        #[arg(long, default_value_t = 0)]
        chunk_size: u64,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Give an image more names (same target).
    Tag {
        /// The existing image.
        source: String,
        /// The new names.
        #[arg(required = true)]
        targets: Vec<String>,
        /// Replace a name that exists already.
        #[arg(long)]
        force: bool,
    },
}

/// How to reach a registry.
#[derive(clap::Args, Debug)]
pub struct RegistryArgs {
    /// Speak plain HTTP to the registry.
    #[arg(long)]
    plain_http: bool,
    /// Credentials, `user:password` (default: Docker's config.json).
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// Docker config.json holding `auths` (default: $DOCKER_CONFIG/config.json or
    /// ~/.docker/config.json).
    #[arg(long)]
    config: Option<PathBuf>,
}

impl RegistryArgs {
    /// The options for the registry of `reference`.
    fn options(&self, reference: &str) -> Result<dpb::RegistryOptions> {
        use berth_distribution::{Credentials, DockerConfig, Reference};
        let r = Reference::parse(reference)?;
        let creds = match &self.user {
            Some(u) => Some(Credentials::parse(u).context("--user")?),
            None => match self.config.clone().or_else(DockerConfig::default_path) {
                Some(p) => DockerConfig::load(&p)?.credentials(&r.registry)?,
                None => None,
            },
        };
        let (username, password) = creds.map(|c| (c.username, c.password)).unwrap_or_default();
        Ok(dpb::RegistryOptions {
            plain_http: self.plain_http,
            username,
            password,
        })
    }
}

fn parse_platform(s: &Option<String>) -> Result<Option<Platform>> {
    let Some(s) = s else { return Ok(None) };
    let p: Vec<&str> = s.split('/').collect();
    if !(2..=3).contains(&p.len()) || p.iter().any(|x| x.is_empty()) {
        bail!("--platform {s:?}: expected os/arch[/variant]");
    }
    Ok(Some(Platform {
        os: p[0].into(),
        architecture: p[1].into(),
        variant: p.get(2).map(|v| v.to_string()).unwrap_or_default(),
    }))
}

/// What walking an image's content found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Sum of the sizes of every descriptor reached.
    pub size: i64,
    /// Platforms of the manifests (from their configs).
    pub platforms: Vec<String>,
    /// Descriptors whose blob is missing.
    pub missing: Vec<String>,
    /// Blobs reached (present or not).
    pub total: usize,
    /// Chain id of each manifest (from the config's diff ids).
    pub chain_ids: Vec<String>,
}

fn is_index(mt: &str) -> bool {
    mt.contains("image.index") || mt.contains("manifest.list")
}

fn is_manifest(mt: &str) -> bool {
    mt.contains("image.manifest") || mt.contains("distribution.manifest.v2")
}

fn sha256(s: &str) -> String {
    let h = sha2::Sha256::digest(s.as_bytes());
    format!(
        "sha256:{}",
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Walks an image's descriptors through the content service.
pub async fn walk(env: &Env, target: &Descriptor) -> Result<Walk> {
    let mut w = Walk::default();
    let mut c = ContentClient::new(env.ns.clone());
    let mut todo = vec![target.clone()];
    while let Some(d) = todo.pop() {
        w.total += 1;
        w.size += d.size;
        let present = c
            .info(cpb::InfoRequest {
                digest: d.digest.clone(),
            })
            .await
            .is_ok();
        if !present {
            w.missing.push(d.digest.clone());
            continue;
        }
        if is_index(&d.media_type) || is_manifest(&d.media_type) {
            let doc: serde_json::Value =
                serde_json::from_slice(&content::read_all(env, &d.digest).await?)
                    .with_context(|| format!("parsing {}", d.digest))?;
            let desc = |v: &serde_json::Value| Descriptor {
                media_type: v["mediaType"].as_str().unwrap_or_default().to_string(),
                digest: v["digest"].as_str().unwrap_or_default().to_string(),
                size: v["size"].as_i64().unwrap_or(0),
                annotations: Default::default(),
            };
            if is_index(&d.media_type) {
                for m in doc["manifests"].as_array().into_iter().flatten() {
                    todo.push(desc(m));
                }
            } else {
                let cfg = desc(&doc["config"]);
                for l in doc["layers"].as_array().into_iter().flatten() {
                    todo.push(desc(l));
                }
                if c.info(cpb::InfoRequest {
                    digest: cfg.digest.clone(),
                })
                .await
                .is_ok()
                {
                    let cj: serde_json::Value =
                        serde_json::from_slice(&content::read_all(env, &cfg.digest).await?)
                            .with_context(|| format!("parsing config {}", cfg.digest))?;
                    let mut p = format!(
                        "{}/{}",
                        cj["os"].as_str().unwrap_or("?"),
                        cj["architecture"].as_str().unwrap_or("?")
                    );
                    if let Some(v) = cj["variant"].as_str().filter(|v| !v.is_empty()) {
                        p.push('/');
                        p.push_str(v);
                    }
                    w.platforms.push(p);
                    let mut chain = String::new();
                    for id in cj["rootfs"]["diff_ids"].as_array().into_iter().flatten() {
                        let id = id.as_str().unwrap_or_default();
                        chain = if chain.is_empty() {
                            id.to_string()
                        } else {
                            sha256(&format!("{chain} {id}"))
                        };
                    }
                    w.chain_ids.push(chain);
                }
                w.total += 1;
                w.size += cfg.size;
                if c.info(cpb::InfoRequest {
                    digest: cfg.digest.clone(),
                })
                .await
                .is_err()
                {
                    w.missing.push(cfg.digest);
                }
            }
        }
    }
    w.platforms.sort();
    w.platforms.dedup();
    Ok(w)
}

async fn list(env: &Env, filters: Vec<String>) -> Result<Vec<pb::Image>> {
    let mut is = ImagesClient::new(env.ns.clone())
        .list(pb::ListImagesRequest { filters })
        .await
        .map_err(rpc_error("listing images"))?
        .into_inner()
        .images;
    is.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(is)
}

/// Runs an image command.
pub async fn run(env: &Env, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Import {
            file,
            base_name,
            no_unpack,
            platform,
            labels,
        } => {
            import(
                env,
                file,
                base_name,
                !no_unpack,
                parse_platform(&platform)?,
                labels,
            )
            .await
        }
        Cmd::Export {
            file,
            names,
            platform,
        } => export(env, file, names, parse_platform(&platform)?).await,
        Cmd::Ls { quiet, filters } => {
            let images = list(env, filters).await?;
            if quiet {
                for i in &images {
                    println!("{}", i.name);
                }
                return Ok(());
            }
            let mut rows = Vec::new();
            let mut docs = Vec::new();
            for i in &images {
                let t = i.target.clone().unwrap_or_default();
                let w = walk(env, &t).await?;
                rows.push(vec![
                    i.name.clone(),
                    t.media_type.clone(),
                    t.digest.clone(),
                    output::human_size(w.size),
                    if w.platforms.is_empty() {
                        "-".into()
                    } else {
                        w.platforms.join(",")
                    },
                    output::labels(&i.labels),
                ]);
                docs.push(serde_json::json!({
                    "name": i.name,
                    "target": { "mediaType": t.media_type, "digest": t.digest, "size": t.size },
                    "size": w.size,
                    "platforms": w.platforms,
                    "labels": i.labels,
                    "created_at": output::time(&i.created_at),
                    "updated_at": output::time(&i.updated_at),
                }));
            }
            match env.format {
                Format::Json => output::json(&serde_json::Value::Array(docs))?,
                Format::Table => output::table(
                    &["REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"],
                    &rows,
                )?,
            }
            Ok(())
        }
        Cmd::Rm { names, r#async } => {
            let mut c = ImagesClient::new(env.ns.clone());
            for n in names {
                let n = super::image_name(env, &n).await?;
                c.delete(pb::DeleteImageRequest {
                    name: n.clone(),
                    sync: !r#async,
                })
                .await
                .map_err(rpc_error(format!("removing image {n}")))?;
                println!("{n}");
            }
            Ok(())
        }
        Cmd::Check { filters } => check(env, filters).await,
        Cmd::Pull {
            reference,
            platform,
            no_unpack,
            concurrency,
            registry,
        } => {
            let req = dpb::PullRequest {
                registry: Some(registry.options(&reference)?),
                reference,
                platform: parse_platform(&platform)?,
                unpack: !no_unpack,
                concurrency,
            };
            pull(env, req).await
        }
        Cmd::Push {
            name,
            remote,
            platform,
            chunk_size,
            registry,
        } => {
            let req = dpb::PushRequest {
                registry: Some(registry.options(remote.as_deref().unwrap_or(&name))?),
                name,
                remote: remote.unwrap_or_default(),
                platform: parse_platform(&platform)?,
                chunk_size,
            };
            push(env, req).await
        }
        Cmd::Tag {
            source,
            targets,
            force,
        } => tag(env, source, targets, force).await,
        Cmd::Unpack { name, platform } => {
            let r = ArchivesClient::new(env.ns.clone())
                .unpack(apb::UnpackRequest {
                    name: name.clone(),
                    platform: parse_platform(&platform)?,
                    snapshotter: String::new(),
                })
                .await
                .map_err(rpc_error(format!("unpacking {name}")))?
                .into_inner();
            match env.format {
                Format::Json => {
                    output::json(&serde_json::json!({"name": name, "chain_id": r.chain_id}))?
                }
                Format::Table => println!("{name}: unpacked as {}", r.chain_id),
            }
            Ok(())
        }
    }
}

async fn check(env: &Env, filters: Vec<String>) -> Result<()> {
    let images = list(env, filters).await?;
    let mut sn = SnapshotsClient::new(env.ns.clone());
    let mut rows = Vec::new();
    let mut docs = Vec::new();
    let mut incomplete = 0;
    for i in &images {
        let t = i.target.clone().unwrap_or_default();
        let w = walk(env, &t).await?;
        let mut unpacked = !w.chain_ids.is_empty();
        for ch in &w.chain_ids {
            let ok = sn
                .stat(spb::StatSnapshotRequest {
                    snapshotter: String::new(),
                    key: ch.clone(),
                })
                .await
                .is_ok();
            unpacked &= ok;
        }
        let status = if w.missing.is_empty() {
            "complete".to_string()
        } else {
            incomplete += 1;
            format!("incomplete ({}/{} missing)", w.missing.len(), w.total)
        };
        rows.push(vec![
            i.name.clone(),
            t.digest.clone(),
            status.clone(),
            output::human_size(w.size),
            unpacked.to_string(),
        ]);
        docs.push(serde_json::json!({
            "name": i.name, "digest": t.digest, "complete": w.missing.is_empty(),
            "missing": w.missing, "size": w.size, "unpacked": unpacked,
        }));
    }
    match env.format {
        Format::Json => output::json(&serde_json::Value::Array(docs))?,
        Format::Table => output::table(&["REF", "DIGEST", "STATUS", "SIZE", "UNPACKED"], &rows)?,
    }
    if incomplete > 0 {
        bail!("{incomplete} image(s) incomplete");
    }
    Ok(())
}

async fn import(
    env: &Env,
    file: PathBuf,
    base_name: Option<String>,
    unpack: bool,
    platform: Option<Platform>,
    labels: Vec<String>,
) -> Result<()> {
    let (mut src, total): (Box<dyn Read + Send>, Option<u64>) = if file.as_os_str() == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let f =
            std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(f), len)
    };
    let options = apb::ImportOptions {
        base_name: base_name.unwrap_or_default(),
        unpack,
        all_platforms: false,
        platform,
        snapshotter: String::new(),
        labels: super::namespaces::parse_labels(&labels)?,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<apb::ImportRequest>(4);
    tx.send(apb::ImportRequest {
        part: Some(apb::import_request::Part::Options(options)),
    })
    .await
    .ok();
    // A reader thread feeds 1 MiB chunks; the bounded channel keeps memory flat.
    let name = file.display().to_string();
    let reader = std::thread::spawn(move || -> Result<()> {
        loop {
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0;
            while n < buf.len() {
                match src.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e).with_context(|| format!("reading {name}")),
                }
            }
            if n == 0 {
                return Ok(());
            }
            buf.truncate(n);
            if tx
                .blocking_send(apb::ImportRequest {
                    part: Some(apb::import_request::Part::Chunk(buf)),
                })
                .is_err()
            {
                return Ok(()); // the daemon stopped reading: its reply says why
            }
        }
    });
    let bar = if std::io::stderr().is_terminal() && env.format == Format::Table {
        let b = match total {
            Some(t) => indicatif::ProgressBar::new(t),
            None => indicatif::ProgressBar::new_spinner(),
        };
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.set_message("importing");
        Some(b)
    } else {
        None
    };
    let mut replies = ArchivesClient::new(env.ns.clone())
        .max_encoding_message_size(16 << 20)
        .import(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(rpc_error(format!("importing {}", file.display())))?
        .into_inner();
    let mut result = None;
    while let Some(m) = replies.next().await {
        let m = m.map_err(rpc_error(format!("importing {}", file.display())))?;
        match m.part {
            Some(apb::import_response::Part::Progress(p)) => match &bar {
                Some(b) => b.set_position(p.received as u64),
                None if env.format == Format::Table => {
                    eprintln!("import: {} received", output::human_size(p.received))
                }
                None => {}
            },
            Some(apb::import_response::Part::Result(r)) => result = Some(r),
            None => {}
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    match reader.join() {
        Ok(r) => r?,
        Err(_) => bail!("the archive reader thread panicked"),
    }
    let r = result.context("berthd ended the import without a result")?;
    match env.format {
        Format::Json => output::json(&serde_json::json!(r
            .images
            .iter()
            .zip(r.chain_ids.iter().chain(std::iter::repeat(&String::new())))
            .map(|(i, ch)| serde_json::json!({
                "name": i.name,
                "digest": i.target.as_ref().map(|t| t.digest.clone()).unwrap_or_default(),
                "chain_id": ch,
            }))
            .collect::<Vec<_>>()))?,
        Format::Table => {
            for (i, img) in r.images.iter().enumerate() {
                let d = img.target.as_ref().map(|t| t.digest.as_str()).unwrap_or("");
                match r.chain_ids.get(i).filter(|c| !c.is_empty()) {
                    Some(ch) => println!("imported {} ({d}), unpacked as {ch}", img.name),
                    None => println!("imported {} ({d})", img.name),
                }
            }
        }
    }
    Ok(())
}

async fn export(
    env: &Env,
    file: PathBuf,
    names: Vec<String>,
    platform: Option<Platform>,
) -> Result<()> {
    let mut s = ArchivesClient::new(env.ns.clone())
        .max_decoding_message_size(16 << 20)
        .export(apb::ExportRequest {
            names: names.clone(),
            all_platforms: platform.is_none(),
            platform,
        })
        .await
        .map_err(rpc_error(format!("exporting {}", names.join(", "))))?
        .into_inner();
    let to_stdout = file.as_os_str() == "-";
    // Write to a temp file beside the target and rename at the end: a failed export leaves no
    // half archive under the requested name.
    let tmp = file.with_extension(format!("partial-{}", std::process::id()));
    let mut out: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
        ))
    };
    let res: Result<()> = async {
        while let Some(m) = s.next().await {
            let m = m.map_err(rpc_error(format!("exporting {}", names.join(", "))))?;
            out.write_all(&m.chunk).context("writing the archive")?;
        }
        out.flush().context("writing the archive")?;
        Ok(())
    }
    .await;
    drop(out);
    if to_stdout {
        return res;
    }
    match res {
        Ok(()) => std::fs::rename(&tmp, &file)
            .with_context(|| format!("renaming {} to {}", tmp.display(), file.display())),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Renders progress events: one bar per blob on a terminal, else a line per finished blob.
struct ProgressView {
    multi: Option<indicatif::MultiProgress>,
    bars: std::collections::HashMap<String, indicatif::ProgressBar>,
    verb: &'static str,
    plain: bool,
}

impl ProgressView {
    fn new(env: &Env, verb: &'static str) -> ProgressView {
        let tty = std::io::stderr().is_terminal() && env.format == Format::Table;
        ProgressView {
            multi: tty.then(indicatif::MultiProgress::new),
            bars: Default::default(),
            verb,
            plain: env.format == Format::Table,
        }
    }

    fn show(&mut self, p: &dpb::Progress) {
        let short =
            p.id.split_once(':')
                .map(|(_, h)| &h[..h.len().min(12)])
                .unwrap_or(&p.id);
        let label = format!("{} {short}", p.kind);
        let Some(multi) = &self.multi else {
            if self.plain && matches!(p.status.as_str(), "done" | "exists" | "mounted") {
                eprintln!("{label}: {} ({})", p.status, output::human_size(p.total));
            } else if self.plain && p.status == "unpacking" {
                eprintln!("unpacking");
            }
            return;
        };
        let bar = self.bars.entry(p.id.clone()).or_insert_with(|| {
            let b = multi.add(indicatif::ProgressBar::new(p.total.max(0) as u64));
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix:22} {msg:11} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_prefix(label);
            b
        });
        if p.total > 0 {
            bar.set_length(p.total as u64);
        }
        bar.set_position(p.offset.max(0) as u64);
        let msg = if p.status == "downloading" || p.status == "uploading" {
            self.verb
        } else {
            p.status.as_str()
        };
        bar.set_message(msg.to_string());
        if matches!(p.status.as_str(), "done" | "exists" | "mounted") {
            bar.finish();
        }
    }

    fn finish(&self) {
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}

/// One reply of a pull or push stream: progress to show, or the result.
enum Reply<R> {
    Progress(dpb::Progress),
    Result(R),
    Nothing,
}

/// Show a pull's or push's progress until the stream ends; returns its result, if any came.
async fn follow<M, R>(
    env: &Env,
    verb: &'static str,
    what: &str,
    mut replies: tonic::Streaming<M>,
    split: impl Fn(M) -> Reply<R>,
) -> Result<Option<R>> {
    let mut view = ProgressView::new(env, verb);
    let mut result = None;
    while let Some(m) = replies.next().await {
        let m = m.map_err(|e| {
            view.finish();
            rpc_error(what)(e)
        })?;
        match split(m) {
            Reply::Progress(p) => view.show(&p),
            Reply::Result(r) => result = Some(r),
            Reply::Nothing => {}
        }
    }
    view.finish();
    Ok(result)
}

async fn pull(env: &Env, req: dpb::PullRequest) -> Result<()> {
    let what = format!("pulling {}", req.reference);
    let replies = DistributionClient::new(env.ns.clone())
        .pull(req)
        .await
        .map_err(rpc_error(&what))?
        .into_inner();
    let result = follow(env, "downloading", &what, replies, |m| match m.event {
        Some(dpb::pull_response::Event::Progress(p)) => Reply::Progress(p),
        Some(dpb::pull_response::Event::Result(r)) => Reply::Result(r),
        None => Reply::Nothing,
    })
    .await?;
    let r = result.context("berthd ended the pull without a result")?;
    let digest = r
        .target
        .as_ref()
        .map(|t| t.digest.clone())
        .unwrap_or_default();
    match env.format {
        Format::Json => output::json(&serde_json::json!({
            "name": r.name,
            "digest": digest,
            "manifest": r.manifest.as_ref().map(|m| m.digest.clone()).unwrap_or_default(),
            "layers_fetched": r.layers_fetched,
            "layers_present": r.layers_present,
            "bytes_fetched": r.bytes_fetched,
            "chain_id": r.chain_id,
        }))?,
        Format::Table => {
            println!(
                "pulled {} ({digest}): {} layers fetched ({}), {} already present",
                r.name,
                r.layers_fetched,
                output::human_size(r.bytes_fetched as i64),
                r.layers_present
            );
            if !r.chain_id.is_empty() {
                println!("unpacked as {}", r.chain_id);
            }
        }
    }
    Ok(())
}

async fn push(env: &Env, req: dpb::PushRequest) -> Result<()> {
    let dest = if req.remote.is_empty() {
        req.name.clone()
    } else {
        req.remote.clone()
    };
    let what = format!("pushing {} to {dest}", req.name);
    let replies = DistributionClient::new(env.ns.clone())
        .push(req)
        .await
        .map_err(rpc_error(&what))?
        .into_inner();
    let result = follow(env, "uploading", &what, replies, |m| match m.event {
        Some(dpb::push_response::Event::Progress(p)) => Reply::Progress(p),
        Some(dpb::push_response::Event::Result(r)) => Reply::Result(r),
        None => Reply::Nothing,
    })
    .await?;
    let r = result.context("berthd ended the push without a result")?;
    let digest = r
        .target
        .as_ref()
        .map(|t| t.digest.clone())
        .unwrap_or_default();
    match env.format {
        Format::Json => output::json(&serde_json::json!({
            "remote": dest,
            "digest": digest,
            "uploaded": r.uploaded,
            "present": r.present,
            "mounted": r.mounted,
            "manifests": r.manifests,
        }))?,
        Format::Table => println!(
            "pushed {dest} ({digest}): {} blobs uploaded, {} already there, {} mounted",
            r.uploaded, r.present, r.mounted
        ),
    }
    Ok(())
}

async fn tag(env: &Env, source: String, targets: Vec<String>, force: bool) -> Result<()> {
    let mut c = ImagesClient::new(env.ns.clone());
    let src = c
        .get(pb::GetImageRequest {
            name: source.clone(),
        })
        .await
        .map_err(rpc_error(format!("image {source}")))?
        .into_inner()
        .image
        .with_context(|| format!("image {source}: berthd returned no image"))?;
    for t in targets {
        let img = pb::Image {
            name: t.clone(),
            labels: src.labels.clone(),
            target: src.target.clone(),
            created_at: None,
            updated_at: None,
        };
        match c
            .create(pb::CreateImageRequest {
                image: Some(img.clone()),
            })
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == tonic::Code::AlreadyExists && force => {
                c.update(pb::UpdateImageRequest {
                    image: Some(img),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["target".into(), "labels".into()],
                    }),
                })
                .await
                .map_err(rpc_error(format!("retagging {t}")))?;
            }
            Err(e) if e.code() == tonic::Code::AlreadyExists => {
                bail!("image {t} exists already (use --force to replace it)")
            }
            Err(e) => return Err(rpc_error(format!("tagging {t}"))(e)),
        }
        println!("{t}");
    }
    Ok(())
}
