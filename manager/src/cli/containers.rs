//! `berth containers ls|info|rm`.

use anyhow::Result;
use berth_proto::containerd::services::containers::v1 as pb;
use berth_proto::containerd::services::containers::v1::containers_client::ContainersClient;
use berth_proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::containerd::services::snapshots::v1::RemoveSnapshotRequest;
use clap::Subcommand;

use super::output::{self, Format};
use super::{rpc_error, Env};

/// Container commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List containers.
    #[command(visible_alias = "list")]
    Ls {
        /// containerd-style filters (`id==x`, `image==y`).
        filters: Vec<String>,
    },
    /// Show a container record with its spec.
    Info {
        /// The container id.
        id: String,
    },
    /// Remove containers (and their rootfs snapshots).
    #[command(visible_alias = "remove")]
    Rm {
        /// Their ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

fn json(c: &pb::Container) -> serde_json::Value {
    let spec = c
        .spec
        .as_ref()
        .and_then(|s| serde_json::from_slice::<serde_json::Value>(&s.value).ok());
    serde_json::json!({
        "id": c.id,
        "image": c.image,
        "runtime": c.runtime.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
        "snapshotter": c.snapshotter,
        "snapshot_key": c.snapshot_key,
        "labels": c.labels,
        "created_at": output::time(&c.created_at),
        "spec": spec,
    })
}

/// Runs a container command.
pub async fn run(env: &Env, cmd: Cmd) -> Result<()> {
    let mut c = ContainersClient::new(env.ns.clone());
    match cmd {
        Cmd::Ls { filters } => {
            let mut cs = c
                .list(pb::ListContainersRequest { filters })
                .await
                .map_err(rpc_error("listing containers"))?
                .into_inner()
                .containers;
            cs.sort_by(|a, b| a.id.cmp(&b.id));
            match env.format {
                Format::Json => {
                    output::json(&serde_json::json!(cs.iter().map(json).collect::<Vec<_>>()))?
                }
                Format::Table => output::table(
                    &["CONTAINER", "IMAGE", "RUNTIME"],
                    &cs.iter()
                        .map(|x| {
                            vec![
                                x.id.clone(),
                                x.image.clone(),
                                x.runtime
                                    .as_ref()
                                    .map(|r| r.name.clone())
                                    .unwrap_or_default(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )?,
            }
        }
        Cmd::Info { id } => {
            let x = c
                .get(pb::GetContainerRequest { id: id.clone() })
                .await
                .map_err(rpc_error(format!("container {id}")))?
                .into_inner()
                .container
                .unwrap_or_default();
            let mut out = json(&x);
            out["network_settings"] = network_settings(env, &id).await?;
            output::json(&out)?;
        }
        Cmd::Rm { ids } => {
            for id in ids {
                let x = c
                    .get(pb::GetContainerRequest { id: id.clone() })
                    .await
                    .map_err(rpc_error(format!("container {id}")))?
                    .into_inner()
                    .container
                    .unwrap_or_default();
                c.delete(pb::DeleteContainerRequest { id: id.clone() })
                    .await
                    .map_err(rpc_error(format!("removing container {id}")))?;
                if !x.snapshot_key.is_empty() {
                    let _ = SnapshotsClient::new(env.ns.clone())
                        .remove(RemoveSnapshotRequest {
                            snapshotter: x.snapshotter.clone(),
                            key: x.snapshot_key.clone(),
                        })
                        .await;
                }
                println!("{id}");
            }
        }
    }
    Ok(())
}

/// The networks container `id`'s task is on now, Docker's `NetworkSettings` in short:
/// `{"networks": {NAME: {"ip", "aliases"}}, "ports": ["HOST_IP:HOST_PORT->PORT/PROTO"]}`
/// (empty when it has no task or no network of berthd's).
async fn network_settings(env: &Env, id: &str) -> Result<serde_json::Value> {
    use berth_proto::berth::services::networks::v1 as npb;
    use berth_proto::berth::services::networks::v1::networks_client::NetworksClient;
    let nets = NetworksClient::new(env.ns.clone())
        .list(npb::ListNetworksRequest {})
        .await
        .map_err(rpc_error("listing networks"))?
        .into_inner()
        .networks;
    let mut networks = serde_json::Map::new();
    let mut ports = Vec::new();
    for n in nets {
        for e in n.endpoints.iter().filter(|e| e.container_id == id) {
            networks.insert(
                n.name.clone(),
                serde_json::json!({"ip": e.ip, "aliases": e.aliases}),
            );
            ports.extend(e.ports.iter().cloned());
        }
    }
    Ok(serde_json::json!({"networks": networks, "ports": ports}))
}
