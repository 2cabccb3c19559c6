//! `berth build`: sends the build context (a directory with `.dockerignore` applied here, a
//! tar or a lone Dockerfile on stdin) and the options to berthd, and prints its progress.
//! Ctrl-C ends the client, which ends the stream: berthd cancels the build and removes what
//! it made.

use std::collections::HashMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use berth_proto::berth::services::builds::v1 as pb;
use berth_proto::berth::services::builds::v1::builds_client::BuildsClient;
use clap::ValueEnum;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use super::Env;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    /// `tty` when stderr is a terminal, else `plain` (as docker does).
    Auto,
    /// One line per step event, RUN output as it comes.
    Plain,
    /// Steps with their states and timers, repainted in place; `plain` (with a note) when
    /// stderr is no terminal.
    Tty,
}

/// How progress is shown, once the terminal is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    Nothing,
    Plain,
    Tty,
}

/// What `--progress` and `-q` show with stderr a terminal or not. `tty` on no terminal falls
/// back to plain rather than failing as BuildKit does: the build is worth more than its
/// display, and a script that asked for it still gets readable output.
fn shown(progress: Progress, quiet: bool, terminal: bool) -> Shown {
    match progress {
        _ if quiet => Shown::Nothing,
        Progress::Plain => Shown::Plain,
        Progress::Auto | Progress::Tty if terminal => Shown::Tty,
        Progress::Auto | Progress::Tty => Shown::Plain,
    }
}

/// `berth build`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Name (and tag) of the image; repeatable.
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile; with `-` as context, a path in the tar).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Build-time variable `K=V` (`K` alone takes it from the environment).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// The stage to build.
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Pull base images even if the store has them.
    #[arg(long)]
    pub pull: bool,
    /// RUN's network: default (the bridge network), bridge, none, host or a network's name.
    #[arg(long)]
    pub network: Option<String>,
    /// Image label `K=V`; repeatable.
    #[arg(long)]
    pub label: Vec<String>,
    /// Write the image id to this file.
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Progress output.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: Progress,
    /// Print only the image id.
    #[arg(short, long)]
    pub quiet: bool,
    /// The context directory, or `-` for a tar or a Dockerfile on stdin.
    pub context: String,
}

fn key_values(v: &[String], from_env: bool, what: &str) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for s in v {
        match s.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None if from_env => {
                if let Ok(v) = std::env::var(s) {
                    out.insert(s.clone(), v);
                }
            }
            None => bail!("{what} {s:?}: expected KEY=VALUE"),
        }
    }
    Ok(out)
}

/// A `Write` that sends 1 MiB chunks into the request stream.
struct ChunkWriter {
    tx: mpsc::Sender<pb::BuildRequest>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(1 << 20));
        self.tx
            .blocking_send(pb::BuildRequest {
                part: Some(pb::build_request::Part::Chunk(chunk)),
            })
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "berthd stopped reading")
            })
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 1 << 20 {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Writes the context directory as a tar, leaving out what `.dockerignore` excludes.
fn write_context(dir: &Path, out: impl Write) -> Result<()> {
    let matcher = match std::fs::read_to_string(dir.join(".dockerignore")) {
        Ok(s) => berth_build::Matcher::parse(&s).context("parsing .dockerignore")?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => berth_build::Matcher::default(),
        Err(e) => return Err(e).context("reading .dockerignore"),
    };
    let paths = matcher.walk(dir)?;
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    for rel in paths {
        tar.append_path_with_name(dir.join(&rel), &rel)
            .with_context(|| format!("adding {rel} to the context"))?;
    }
    tar.into_inner()?.flush()?;
    Ok(())
}

/// Runs `berth build`.
pub async fn run(env: &Env, a: Args) -> Result<()> {
    let mut options = pb::BuildOptions {
        dockerfile: String::new(),
        dockerfile_content: Vec::new(),
        build_args: key_values(&a.build_args, true, "--build-arg")?,
        target: a.target.clone().unwrap_or_default(),
        tags: a.tags.clone(),
        no_cache: a.no_cache,
        pull: a.pull,
        network: a.network.clone().unwrap_or_default(),
        labels: key_values(&a.label, false, "--label")?,
    };
    // What feeds the context: a directory, a tar on stdin, or nothing.
    enum Feed {
        Dir(PathBuf),
        Stdin(Vec<u8>),
        Empty,
    }
    let feed = if a.context == "-" {
        let mut head = vec![0u8; 512];
        let mut n = 0;
        let mut stdin = std::io::stdin();
        while n < head.len() {
            match stdin.read(&mut head[n..])? {
                0 => break,
                k => n += k,
            }
        }
        head.truncate(n);
        let gzip = head.starts_with(&[0x1f, 0x8b]);
        let zstd = head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
        let tar = n >= 262 && &head[257..262] == b"ustar";
        if gzip || zstd || tar {
            if let Some(f) = &a.file {
                options.dockerfile = f.to_string_lossy().into_owned();
            }
            Feed::Stdin(head)
        } else {
            let mut rest = Vec::new();
            stdin.read_to_end(&mut rest)?;
            head.extend(rest);
            options.dockerfile_content = head;
            Feed::Empty
        }
    } else {
        let dir = PathBuf::from(&a.context);
        if !dir.is_dir() {
            bail!("unable to prepare context: path {:?} not found", a.context);
        }
        let file = a.file.clone().unwrap_or_else(|| dir.join("Dockerfile"));
        options.dockerfile_content = std::fs::read(&file)
            .with_context(|| format!("failed to read dockerfile: open {}", file.display()))?;
        Feed::Dir(dir)
    };
    let (tx, rx) = mpsc::channel::<pb::BuildRequest>(4);
    tx.send(pb::BuildRequest {
        part: Some(pb::build_request::Part::Options(options)),
    })
    .await
    .ok();
    let sender = std::thread::spawn(move || -> Result<()> {
        let mut w = ChunkWriter {
            tx,
            buf: Vec::with_capacity(1 << 20),
        };
        match feed {
            Feed::Dir(dir) => write_context(&dir, &mut w)?,
            Feed::Stdin(head) => {
                w.write_all(&head)?;
                std::io::copy(&mut std::io::stdin(), &mut w)?;
            }
            Feed::Empty => {}
        }
        w.flush()?;
        Ok(())
    });
    let mut replies = BuildsClient::new(env.ns.clone())
        .max_decoding_message_size(16 << 20)
        .build(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| anyhow::anyhow!("failed to solve: {}", s.message()))?
        .into_inner();
    let quiet = a.quiet;
    let mut err = std::io::stderr();
    let shown = shown(a.progress, quiet, err.is_terminal());
    if a.progress == Progress::Tty && shown == Shown::Plain {
        tracing::info!("stderr is not a terminal: showing plain progress");
    }
    let mut tty = (shown == Shown::Tty).then(super::progress::Tty::stderr);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut result = None;
    loop {
        let msg = tokio::select! {
            m = replies.next() => m,
            _ = tick.tick(), if tty.is_some() => {
                if let Some(t) = tty.as_mut() {
                    t.tick()?;
                }
                continue;
            }
        };
        let Some(msg) = msg else { break };
        let msg = match msg {
            Ok(m) => m,
            Err(s) => {
                if let Some(t) = tty.as_mut() {
                    t.finish(Some(s.message()))?;
                }
                let _ = sender.join();
                bail!("failed to solve: {}", s.message());
            }
        };
        match msg.part {
            Some(pb::build_response::Part::Event(e)) => {
                use pb::build_event::Kind;
                match (shown, &mut tty) {
                    (Shown::Tty, Some(t)) => t.event(&e)?,
                    (Shown::Plain, _) => match Kind::try_from(e.kind).unwrap_or(Kind::Warning) {
                        Kind::Start => writeln!(err, "{}", e.step)?,
                        Kind::Cached => writeln!(err, "{}\n  CACHED", e.step)?,
                        Kind::Output => err.write_all(&e.data)?,
                        Kind::Done => writeln!(err, "  DONE {:.1}s", e.elapsed)?,
                        Kind::Warning => writeln!(err, "{}", e.message)?,
                    },
                    _ => {}
                }
            }
            Some(pb::build_response::Part::Result(r)) => result = Some(r),
            None => {}
        }
    }
    if let Some(t) = tty.as_mut() {
        // No result is a failure: the final frame must not say FINISHED.
        t.finish(
            result
                .is_none()
                .then_some("the build ended without a result"),
        )?;
    }
    if let Ok(Err(e)) = sender.join() {
        if result.is_none() {
            return Err(e.context("sending the build context"));
        }
    }
    let r = result.context("berthd ended the build without a result")?;
    if quiet {
        println!("{}", r.image_id);
    } else {
        writeln!(err, "writing image {} done", r.image_id)?;
        for n in &r.names {
            writeln!(err, "naming to {n} done")?;
        }
    }
    if let Some(f) = &a.iidfile {
        std::fs::write(f, &r.image_id).with_context(|| format!("writing {}", f.display()))?;
    }
    Ok(())
}

/// Runs `berth build prune`-like cache removal (`berth builder prune`).
pub async fn prune(env: &Env) -> Result<()> {
    let r = BuildsClient::new(env.ns.clone())
        .prune(pb::PruneRequest {})
        .await
        .map_err(super::rpc_error("build cache prune"))?
        .into_inner();
    println!("removed {} build cache entries", r.entries);
    Ok(())
}

/// `berth builder`: the build cache.
#[derive(clap::Subcommand, Debug)]
pub enum BuilderCmd {
    /// Drop the namespace's build cache (GC reclaims its layers and snapshots).
    Prune,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_modes_follow_the_terminal() {
        assert_eq!(shown(Progress::Auto, false, true), Shown::Tty);
        assert_eq!(shown(Progress::Auto, false, false), Shown::Plain);
        assert_eq!(shown(Progress::Tty, false, true), Shown::Tty);
        // No terminal: plain, with no escape codes, rather than an error.
        assert_eq!(shown(Progress::Tty, false, false), Shown::Plain);
        assert_eq!(shown(Progress::Plain, false, true), Shown::Plain);
        for p in [Progress::Auto, Progress::Plain, Progress::Tty] {
            assert_eq!(shown(p, true, true), Shown::Nothing);
        }
    }
}
