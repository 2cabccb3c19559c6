//! `berth content ls|get|rm`.

use std::io::Write;

use anyhow::{Context, Result};
use berth_proto::containerd::services::content::v1 as pb;
use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use clap::Subcommand;
use tokio_stream::StreamExt;

use super::output::{self, Format};
use super::{rpc_error, Env};

/// Content commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List blobs.
    #[command(visible_alias = "list")]
    Ls {
        /// Show only digests.
        #[arg(long, short)]
        quiet: bool,
        /// containerd-style filters (`digest==...`, `labels."k"==v`).
        filters: Vec<String>,
    },
    /// Write a blob to stdout.
    Get {
        /// Its digest.
        digest: String,
    },
    /// Remove blobs from the namespace.
    #[command(visible_alias = "remove")]
    Rm {
        /// Their digests.
        #[arg(required = true)]
        digests: Vec<String>,
    },
}

/// Lists every blob of the namespace.
pub async fn list(env: &Env, filters: Vec<String>) -> Result<Vec<pb::Info>> {
    let mut c = ContentClient::new(env.ns.clone());
    let mut s = c
        .list(pb::ListContentRequest { filters })
        .await
        .map_err(rpc_error("listing content"))?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.next().await {
        out.extend(m.map_err(rpc_error("listing content"))?.info);
    }
    out.sort_by(|a, b| a.digest.cmp(&b.digest));
    Ok(out)
}

/// Reads a whole blob (for small JSON documents).
pub async fn read_all(env: &Env, digest: &str) -> Result<Vec<u8>> {
    let mut c = ContentClient::new(env.ns.clone());
    let mut s = c
        .read(pb::ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        })
        .await
        .map_err(rpc_error(format!("reading {digest}")))?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.next().await {
        out.extend(m.map_err(rpc_error(format!("reading {digest}")))?.data);
    }
    Ok(out)
}

/// Runs a content command.
pub async fn run(env: &Env, cmd: Cmd) -> Result<()> {
    let mut c = ContentClient::new(env.ns.clone());
    match cmd {
        Cmd::Ls { quiet, filters } => {
            let infos = list(env, filters).await?;
            if quiet {
                for i in &infos {
                    println!("{}", i.digest);
                }
                return Ok(());
            }
            match env.format {
                Format::Json => output::json(&serde_json::json!(infos
                    .iter()
                    .map(|i| serde_json::json!({
                        "digest": i.digest,
                        "size": i.size,
                        "created_at": output::time(&i.created_at),
                        "labels": i.labels,
                    }))
                    .collect::<Vec<_>>()))?,
                Format::Table => output::table(
                    &["DIGEST", "SIZE", "CREATED AT", "LABELS"],
                    &infos
                        .iter()
                        .map(|i| {
                            vec![
                                i.digest.clone(),
                                output::human_size(i.size),
                                output::time(&i.created_at),
                                output::labels(&i.labels),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )?,
            }
        }
        Cmd::Get { digest } => {
            let mut s = c
                .read(pb::ReadContentRequest {
                    digest: digest.clone(),
                    offset: 0,
                    size: 0,
                })
                .await
                .map_err(rpc_error(format!("reading {digest}")))?
                .into_inner();
            let mut out = std::io::stdout().lock();
            while let Some(m) = s.next().await {
                out.write_all(&m.map_err(rpc_error(format!("reading {digest}")))?.data)
                    .context("writing to stdout")?;
            }
            out.flush()?;
        }
        Cmd::Rm { digests } => {
            for d in digests {
                c.delete(pb::DeleteContentRequest { digest: d.clone() })
                    .await
                    .map_err(rpc_error(format!("removing {d}")))?;
                println!("{d}");
            }
        }
    }
    Ok(())
}
