//! `berth network create|ls|inspect|rm|connect|disconnect`: bridge networks of the namespace.

use anyhow::Result;
use berth_proto::berth::services::networks::v1 as pb;
use berth_proto::berth::services::networks::v1::networks_client::NetworksClient;
use clap::Subcommand;

use super::namespaces::parse_labels;
use super::output::{self, Format};
use super::{rpc_error, Env};

/// Network commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a bridge network.
    Create {
        /// Its name.
        name: String,
        /// IPv4 subnet in CIDR form (default: the next free /16 of Docker's pools).
        #[arg(long)]
        subnet: Option<String>,
        /// The gateway (default: the subnet's first address).
        #[arg(long)]
        gateway: Option<String>,
        /// No route out of the network (no masquerade, no published ports).
        #[arg(long)]
        internal: bool,
        /// Labels, `key=value`.
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// List networks.
    #[command(visible_alias = "list")]
    Ls,
    /// Show networks with the containers attached to them (JSON).
    Inspect {
        /// Their names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks no container uses.
    #[command(visible_alias = "remove")]
    Rm {
        /// Their names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Connect a container to a network (at once if its task runs, and for its next task).
    Connect {
        /// A fixed IPv4 address in the network's subnet.
        #[arg(long)]
        ip: Option<String>,
        /// Other names of the container on this network.
        #[arg(long = "alias")]
        aliases: Vec<String>,
        /// The network.
        network: String,
        /// The container.
        container: String,
    },
    /// Disconnect a container from a network.
    Disconnect {
        /// The network.
        network: String,
        /// The container.
        container: String,
    },
}

fn json_of(n: &pb::Network) -> serde_json::Value {
    serde_json::json!({
        "Name": n.name,
        "Id": n.id,
        "Driver": "bridge",
        "Bridge": n.bridge,
        "Internal": n.internal,
        "IPAM": {"Config": [{"Subnet": n.subnet, "Gateway": n.gateway}]},
        "Labels": n.labels,
        "Containers": n.endpoints.iter().map(|e| serde_json::json!({
            "Id": e.container_id,
            "IPv4Address": e.ip,
            "Aliases": e.aliases,
            "Ports": e.ports,
        })).collect::<Vec<_>>(),
    })
}

/// Runs a network command.
pub async fn run(env: &Env, cmd: Cmd) -> Result<()> {
    let mut c = NetworksClient::new(env.ns.clone());
    match cmd {
        Cmd::Create {
            name,
            subnet,
            gateway,
            internal,
            labels,
        } => {
            let n = c
                .create(pb::CreateNetworkRequest {
                    name: name.clone(),
                    subnet: subnet.unwrap_or_default(),
                    gateway: gateway.unwrap_or_default(),
                    internal,
                    labels: parse_labels(&labels)?,
                })
                .await
                .map_err(rpc_error(format!("creating network {name}")))?
                .into_inner()
                .network
                .unwrap_or_default();
            match env.format {
                Format::Json => output::json(&json_of(&n))?,
                Format::Table => println!("{}", n.id),
            }
        }
        Cmd::Ls => {
            let mut nets = c
                .list(pb::ListNetworksRequest {})
                .await
                .map_err(rpc_error("listing networks"))?
                .into_inner()
                .networks;
            nets.sort_by(|a, b| a.name.cmp(&b.name));
            match env.format {
                Format::Json => output::json(&serde_json::json!(nets
                    .iter()
                    .map(json_of)
                    .collect::<Vec<_>>()))?,
                Format::Table => output::table(
                    &[
                        "NETWORK ID",
                        "NAME",
                        "SUBNET",
                        "GATEWAY",
                        "BRIDGE",
                        "INTERNAL",
                        "CONTAINERS",
                    ],
                    &nets
                        .iter()
                        .map(|n| {
                            vec![
                                n.id.get(..12).unwrap_or(&n.id).to_string(),
                                n.name.clone(),
                                n.subnet.clone(),
                                n.gateway.clone(),
                                n.bridge.clone(),
                                n.internal.to_string(),
                                n.endpoints.len().to_string(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )?,
            }
        }
        Cmd::Inspect { names } => {
            let mut out = Vec::new();
            for name in names {
                let n = c
                    .get(pb::GetNetworkRequest { name: name.clone() })
                    .await
                    .map_err(rpc_error(format!("network {name}")))?
                    .into_inner()
                    .network
                    .unwrap_or_default();
                out.push(json_of(&n));
            }
            output::json(&serde_json::Value::Array(out))?;
        }
        Cmd::Rm { names } => {
            for name in names {
                c.delete(pb::DeleteNetworkRequest { name: name.clone() })
                    .await
                    .map_err(rpc_error(format!("removing network {name}")))?;
                println!("{name}");
            }
        }
        Cmd::Connect {
            ip,
            aliases,
            network,
            container,
        } => {
            c.connect_container(pb::ConnectRequest {
                network: network.clone(),
                container_id: container.clone(),
                aliases,
                ip: ip.unwrap_or_default(),
            })
            .await
            .map_err(rpc_error(format!(
                "connecting container {container} to network {network}"
            )))?;
        }
        Cmd::Disconnect { network, container } => {
            c.disconnect_container(pb::DisconnectRequest {
                network: network.clone(),
                container_id: container.clone(),
            })
            .await
            .map_err(rpc_error(format!(
                "disconnecting container {container} from network {network}"
            )))?;
        }
    }
    Ok(())
}
