//! `berth volume create|ls|inspect|rm|prune`: named volumes on berthd.

use anyhow::{bail, Context, Result};
use berth_proto::berth::services::volumes::v1 as pb;
use berth_proto::berth::services::volumes::v1::volumes_client::VolumesClient;
use clap::Subcommand;
use serde_json::json;

use super::namespaces::parse_labels;
use super::output::{self, Format};
use super::{rpc_error, Env};

/// Volume commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a volume (a random name if none is given).
    Create {
        /// Its name (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`).
        name: Option<String>,
        /// Driver: only `local`.
        #[arg(long, short = 'd', default_value = "local")]
        driver: String,
        /// Labels, `key=value`.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Driver options, `key=value`: `type=tmpfs` (`o=size=…`), or `type=none`, `o=bind`,
        /// `device=/host/dir`.
        #[arg(long = "opt", short = 'o')]
        opts: Vec<String>,
    },
    /// List volumes.
    #[command(visible_alias = "list")]
    Ls {
        /// Names only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show volumes as JSON (with the containers using them).
    Inspect {
        /// Their names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes and their data (refused for a volume a container uses).
    #[command(visible_alias = "remove")]
    Rm {
        /// Their names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove the volumes no container uses: anonymous ones, or all with `--all`.
    Prune {
        /// Named volumes too.
        #[arg(long, short = 'a')]
        all: bool,
        /// No confirmation (there is none to skip; accepted for Docker's sake).
        #[arg(long, short = 'f')]
        force: bool,
    },
}

fn created(v: &pb::Volume) -> String {
    v.created_at
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

fn inspect_json(v: &pb::Volume) -> serde_json::Value {
    json!({
        "Name": v.name,
        "Driver": v.driver,
        "Mountpoint": v.mountpoint,
        "Labels": v.labels,
        "Options": v.options,
        "Scope": "local",
        "CreatedAt": created(v),
        "UsedBy": v.used_by,
    })
}

/// Runs a volume command.
pub async fn run(env: &Env, cmd: Cmd) -> Result<()> {
    let mut c = VolumesClient::new(env.ns.clone());
    match cmd {
        Cmd::Create {
            name,
            driver,
            labels,
            opts,
        } => {
            let name = match name {
                Some(n) => {
                    super::mounts::validate_volume_name(&n)?;
                    n
                }
                None => (0..32)
                    .map(|_| format!("{:02x}", fastrand::u8(..)))
                    .collect(),
            };
            let v = c
                .create(pb::CreateVolumeRequest {
                    name: name.clone(),
                    driver,
                    labels: parse_labels(&labels)?,
                    options: parse_labels(&opts).context("--opt")?,
                })
                .await
                .map_err(rpc_error(format!("creating volume {name}")))?
                .into_inner()
                .volume
                .context("berthd returned no volume")?;
            println!("{}", v.name);
        }
        Cmd::Ls { quiet } => {
            let mut vs = c
                .list(pb::ListVolumesRequest {})
                .await
                .map_err(rpc_error("listing volumes"))?
                .into_inner()
                .volumes;
            vs.sort_by(|a, b| a.name.cmp(&b.name));
            if quiet {
                for v in &vs {
                    println!("{}", v.name);
                }
                return Ok(());
            }
            match env.format {
                Format::Json => {
                    output::json(&json!(vs.iter().map(inspect_json).collect::<Vec<_>>()))?
                }
                Format::Table => output::table(
                    &["DRIVER", "VOLUME NAME", "LABELS"],
                    &vs.iter()
                        .map(|v| vec![v.driver.clone(), v.name.clone(), output::labels(&v.labels)])
                        .collect::<Vec<_>>(),
                )?,
            }
        }
        Cmd::Inspect { names } => {
            let mut out = Vec::new();
            for name in names {
                let v = c
                    .get(pb::GetVolumeRequest { name: name.clone() })
                    .await
                    .map_err(rpc_error(format!("volume {name}")))?
                    .into_inner()
                    .volume
                    .context("berthd returned no volume")?;
                out.push(inspect_json(&v));
            }
            output::json(&json!(out))?;
        }
        Cmd::Rm { names } => {
            let mut failed = Vec::new();
            for name in names {
                match c
                    .delete(pb::DeleteVolumeRequest { name: name.clone() })
                    .await
                {
                    Ok(_) => println!("{name}"),
                    Err(e) => {
                        let e = rpc_error(format!("removing volume {name}"))(e);
                        eprintln!("berth: {e:#}");
                        failed.push(name);
                    }
                }
            }
            if !failed.is_empty() {
                bail!("could not remove volume(s) {}", failed.join(", "));
            }
        }
        Cmd::Prune { all, force: _ } => {
            let gone = c
                .prune(pb::PruneVolumesRequest { all })
                .await
                .map_err(rpc_error("pruning volumes"))?
                .into_inner()
                .deleted;
            match env.format {
                Format::Json => output::json(&json!({"VolumesDeleted": gone}))?,
                Format::Table => {
                    println!("Deleted Volumes:");
                    for n in gone {
                        println!("{n}");
                    }
                }
            }
        }
    }
    Ok(())
}
