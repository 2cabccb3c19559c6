//! `berth namespaces ls|create|rm`.

use anyhow::Result;
use berth_proto::containerd::services::namespaces::v1 as pb;
use berth_proto::containerd::services::namespaces::v1::namespaces_client::NamespacesClient;
use clap::Subcommand;

use super::output::{self, Format};
use super::{rpc_error, Env};

/// Namespace commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List namespaces.
    #[command(visible_alias = "list")]
    Ls,
    /// Create a namespace.
    Create {
        /// Its name.
        name: String,
        /// Labels, `key=value`.
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Remove empty namespaces.
    #[command(visible_alias = "remove")]
    Rm {
        /// Their names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Parses `key=value` labels.
pub fn parse_labels(v: &[String]) -> Result<std::collections::HashMap<String, String>> {
    v.iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow::anyhow!("label {l:?} is not key=value"))
        })
        .collect()
}

/// Runs a namespace command.
pub async fn run(env: &Env, cmd: Cmd) -> Result<()> {
    let mut c = NamespacesClient::new(env.channel.clone());
    match cmd {
        Cmd::Ls => {
            let mut ns = c
                .list(pb::ListNamespacesRequest::default())
                .await
                .map_err(rpc_error("listing namespaces"))?
                .into_inner()
                .namespaces;
            ns.sort_by(|a, b| a.name.cmp(&b.name));
            match env.format {
                Format::Json => output::json(&serde_json::json!(ns
                    .iter()
                    .map(|n| serde_json::json!({"name": n.name, "labels": n.labels}))
                    .collect::<Vec<_>>()))?,
                Format::Table => output::table(
                    &["NAME", "LABELS"],
                    &ns.iter()
                        .map(|n| vec![n.name.clone(), output::labels(&n.labels)])
                        .collect::<Vec<_>>(),
                )?,
            }
        }
        Cmd::Create { name, labels } => {
            c.create(pb::CreateNamespaceRequest {
                namespace: Some(pb::Namespace {
                    name: name.clone(),
                    labels: parse_labels(&labels)?,
                }),
            })
            .await
            .map_err(rpc_error(format!("creating namespace {name}")))?;
            println!("{name}");
        }
        Cmd::Rm { names } => {
            for name in names {
                c.delete(pb::DeleteNamespaceRequest { name: name.clone() })
                    .await
                    .map_err(rpc_error(format!("removing namespace {name}")))?;
                println!("{name}");
            }
        }
    }
    Ok(())
}
