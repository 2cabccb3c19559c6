//! `berth logs [-f] [--tail N] ID`: a container's output as the shim recorded it in berth's
//! size-bounded log file (`berth run -d`), each record's text on the stream it came from.
//!
//! The file's path is the container's `io.berth.log` label; the client reads it directly, so
//! `berth logs` runs on berthd's host (as `ctr` does for its FIFOs).

use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use berth_proto::containerd::services::containers::v1 as cpb;
use berth_proto::containerd::services::tasks::v1 as tpb;
use berth_proto::containerd::v1::types::Status;
use clap::Args as ClapArgs;

use super::{rpc_error, Env};

/// `berth logs` options.
#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Keep printing new output until the task exits.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N records.
    #[arg(long)]
    pub tail: Option<usize>,
    /// The container id.
    pub id: String,
}

/// Prints one record (`TIMESTAMP STREAM F|P TEXT`) on its stream.
fn print_record(line: &str) {
    let mut parts = line.splitn(4, ' ');
    let (_, stream, tag, text) = (parts.next(), parts.next(), parts.next(), parts.next());
    let text = text.unwrap_or("");
    let end = if tag == Some("P") { "" } else { "\n" };
    if stream == Some("stderr") {
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "{text}{end}");
    } else {
        let mut o = std::io::stdout().lock();
        let _ = write!(o, "{text}{end}");
        let _ = o.flush();
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::File::open(path)
        .map(|f| {
            std::io::BufReader::new(f)
                .lines()
                .map_while(std::result::Result::ok)
                .collect()
        })
        .unwrap_or_default()
}

async fn running(env: &Env, id: &str) -> bool {
    match tpb::tasks_client::TasksClient::new(env.ns.clone())
        .get(tpb::GetRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        })
        .await
    {
        Ok(r) => r
            .into_inner()
            .process
            .is_some_and(|p| p.status != Status::Stopped as i32),
        Err(_) => false,
    }
}

/// Whether `path` now names another file than `f` (the shim rotated the log).
fn rotated(f: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() != b.ino() || a.dev() != b.dev(),
        (Ok(_), Err(_)) => false,
        _ => true,
    }
}

/// Runs `berth logs`.
pub async fn run(env: &Env, a: Args) -> Result<()> {
    let c = cpb::containers_client::ContainersClient::new(env.ns.clone())
        .get(cpb::GetContainerRequest { id: a.id.clone() })
        .await
        .map_err(rpc_error(format!("container {}", a.id)))?
        .into_inner()
        .container
        .context("berthd returned no container")?;
    let path = PathBuf::from(
        c.labels
            .get(crate::tasks::LOG_LABEL)
            .with_context(|| {
                format!(
                    "container {} has no log: its output went to a terminal or FIFOs \
                     (berth keeps logs of `berth run -d`)",
                    a.id
                )
            })?
            .clone(),
    );
    // The rotated file first, then the current one.
    let mut lines = read_lines(&path.with_extension("log.1"));
    let mut file = std::fs::File::open(&path).ok();
    let mut offset = 0u64;
    if let Some(f) = file.as_mut() {
        let mut text = String::new();
        f.read_to_string(&mut text)
            .with_context(|| format!("reading {}", path.display()))?;
        // Only whole records; a record being written is picked up by --follow.
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        offset = whole as u64;
        lines.extend(text[..whole].lines().map(str::to_string));
    }
    let skip = a.tail.map_or(0, |n| lines.len().saturating_sub(n));
    for l in &lines[skip..] {
        print_record(l);
    }
    if !a.follow {
        return Ok(());
    }
    let mut pending = String::new();
    let mut idle_checks = 0u32;
    loop {
        if file.is_none() {
            file = std::fs::File::open(&path).ok();
            offset = 0;
        }
        let mut got = false;
        if let Some(f) = file.as_mut() {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len > offset {
                f.seek(SeekFrom::Start(offset))?;
                let mut buf = String::new();
                f.read_to_string(&mut buf)?;
                offset += buf.len() as u64;
                pending.push_str(&buf);
                while let Some(i) = pending.find('\n') {
                    let line: String = pending.drain(..=i).collect();
                    print_record(line.trim_end_matches('\n'));
                }
                got = true;
            } else if rotated(f, &path) {
                // Our file became `.1` and is read to its end: go on with the new one.
                file = std::fs::File::open(&path).ok();
                offset = 0;
                continue;
            }
        }
        if !got {
            idle_checks += 1;
            // The shim drains the pipes before it reports an exit: once the task is gone and
            // nothing new came, everything has been printed.
            if idle_checks % 5 == 0 && !running(env, &a.id).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        } else {
            idle_checks = 0;
        }
    }
}
