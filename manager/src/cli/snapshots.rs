//! `berth snapshots ls|tree|rm|mounts`.

use std::collections::BTreeMap;

use anyhow::Result;
use berth_proto::containerd::services::snapshots::v1 as pb;
use berth_proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use clap::Subcommand;
use tokio_stream::StreamExt;

use super::output::{self, Format};
use super::{rpc_error, Env};

/// Snapshot commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List snapshots.
    #[command(visible_alias = "list")]
    Ls,
    /// Show snapshots as a tree of parents and children.
    Tree,
    /// Remove snapshots.
    #[command(visible_alias = "remove")]
    Rm {
        /// Their keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Print the mount commands of an active snapshot or view.
    Mounts {
        /// Where it would be mounted.
        target: String,
        /// The snapshot's key.
        key: String,
    },
    /// Create a read-only view of a committed snapshot and print its mounts.
    View {
        /// The view's key.
        key: String,
        /// The committed snapshot to view.
        parent: String,
    },
}

fn kind(k: i32) -> &'static str {
    match pb::Kind::try_from(k) {
        Ok(pb::Kind::View) => "View",
        Ok(pb::Kind::Active) => "Active",
        Ok(pb::Kind::Committed) => "Committed",
        _ => "Unknown",
    }
}

/// Lists every snapshot of the namespace.
pub async fn list(env: &Env) -> Result<Vec<pb::Info>> {
    let mut c = SnapshotsClient::new(env.ns.clone());
    let mut s = c
        .list(pb::ListSnapshotsRequest {
            snapshotter: String::new(),
            filters: vec![],
        })
        .await
        .map_err(rpc_error("listing snapshots"))?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.next().await {
        out.extend(m.map_err(rpc_error("listing snapshots"))?.info);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn mount_lines(target: &str, ms: &[berth_proto::containerd::types::Mount]) -> Vec<String> {
    ms.iter()
        .map(|m| {
            format!(
                "mount -t {} {} {} -o {}",
                m.r#type,
                m.source,
                target,
                m.options.join(",")
            )
        })
        .collect()
}

/// Runs a snapshot command.
pub async fn run(env: &Env, cmd: Cmd) -> Result<()> {
    let mut c = SnapshotsClient::new(env.ns.clone());
    match cmd {
        Cmd::Ls => {
            let infos = list(env).await?;
            match env.format {
                Format::Json => output::json(&serde_json::json!(infos
                    .iter()
                    .map(|i| serde_json::json!({
                        "key": i.name,
                        "parent": i.parent,
                        "kind": kind(i.kind),
                        "created_at": output::time(&i.created_at),
                        "labels": i.labels,
                    }))
                    .collect::<Vec<_>>()))?,
                Format::Table => output::table(
                    &["KEY", "PARENT", "KIND"],
                    &infos
                        .iter()
                        .map(|i| vec![i.name.clone(), i.parent.clone(), kind(i.kind).into()])
                        .collect::<Vec<_>>(),
                )?,
            }
        }
        Cmd::Tree => {
            let infos = list(env).await?;
            let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let names: std::collections::HashSet<&str> =
                infos.iter().map(|i| i.name.as_str()).collect();
            let mut roots = Vec::new();
            for i in &infos {
                if i.parent.is_empty() || !names.contains(i.parent.as_str()) {
                    roots.push(i.name.clone());
                } else {
                    children
                        .entry(i.parent.clone())
                        .or_default()
                        .push(i.name.clone());
                }
            }
            fn walk(
                name: &str,
                depth: usize,
                children: &BTreeMap<String, Vec<String>>,
                out: &mut Vec<(usize, String)>,
            ) {
                out.push((depth, name.to_string()));
                for c in children.get(name).into_iter().flatten() {
                    walk(c, depth + 1, children, out);
                }
            }
            let mut lines = Vec::new();
            for r in &roots {
                walk(r, 0, &children, &mut lines);
            }
            match env.format {
                Format::Json => output::json(&serde_json::json!(lines
                    .iter()
                    .map(|(d, n)| serde_json::json!({"depth": d, "key": n}))
                    .collect::<Vec<_>>()))?,
                Format::Table => {
                    for (d, n) in lines {
                        println!("{}{}{n}", "  ".repeat(d), if d > 0 { "\\_ " } else { "" });
                    }
                }
            }
        }
        Cmd::Rm { keys } => {
            for k in keys {
                c.remove(pb::RemoveSnapshotRequest {
                    snapshotter: String::new(),
                    key: k.clone(),
                })
                .await
                .map_err(rpc_error(format!("removing snapshot {k}")))?;
                println!("{k}");
            }
        }
        Cmd::Mounts { target, key } => {
            let ms = c
                .mounts(pb::MountsRequest {
                    snapshotter: String::new(),
                    key: key.clone(),
                })
                .await
                .map_err(rpc_error(format!("mounts of {key}")))?
                .into_inner()
                .mounts;
            for l in mount_lines(&target, &ms) {
                println!("{l}");
            }
        }
        Cmd::View { key, parent } => {
            let ms = c
                .view(pb::ViewSnapshotRequest {
                    snapshotter: String::new(),
                    key: key.clone(),
                    parent,
                    labels: Default::default(),
                })
                .await
                .map_err(rpc_error(format!("view {key}")))?
                .into_inner()
                .mounts;
            match env.format {
                Format::Json => output::json(&serde_json::json!(ms
                    .iter()
                    .map(|m| serde_json::json!({"type": m.r#type, "source": m.source, "options": m.options}))
                    .collect::<Vec<_>>()))?,
                Format::Table => {
                    for l in mount_lines("<target>", &ms) {
                        println!("{l}");
                    }
                }
            }
        }
    }
    Ok(())
}
