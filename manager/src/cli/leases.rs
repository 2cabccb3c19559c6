//! `berth leases ls`.

use anyhow::Result;
use berth_proto::containerd::services::leases::v1 as pb;
use berth_proto::containerd::services::leases::v1::leases_client::LeasesClient;
use clap::Subcommand;

use super::output::{self, Format};
use super::{rpc_error, Env};

/// Lease commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List leases.
    #[command(visible_alias = "list")]
    Ls {
        /// containerd-style filters (`id==x`, `labels."k"==v`).
        filters: Vec<String>,
    },
}

/// Runs a lease command.
pub async fn run(env: &Env, cmd: Cmd) -> Result<()> {
    let mut c = LeasesClient::new(env.ns.clone());
    match cmd {
        Cmd::Ls { filters } => {
            let mut ls = c
                .list(pb::ListRequest { filters })
                .await
                .map_err(rpc_error("listing leases"))?
                .into_inner()
                .leases;
            ls.sort_by(|a, b| a.id.cmp(&b.id));
            match env.format {
                Format::Json => output::json(&serde_json::json!(ls
                    .iter()
                    .map(|l| serde_json::json!({
                        "id": l.id,
                        "created_at": output::time(&l.created_at),
                        "labels": l.labels,
                    }))
                    .collect::<Vec<_>>()))?,
                Format::Table => output::table(
                    &["ID", "CREATED AT", "LABELS"],
                    &ls.iter()
                        .map(|l| {
                            vec![
                                l.id.clone(),
                                output::time(&l.created_at),
                                output::labels(&l.labels),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )?,
            }
        }
    }
    Ok(())
}
