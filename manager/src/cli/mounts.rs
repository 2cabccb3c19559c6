//! `berth run`'s `-v`, `--mount` and `--tmpfs` flags and the image's VOLUME list, as Docker
//! reads them, become spec mounts: volumes (made on berthd when missing; anonymous ones for a
//! bare `-v /path` and each image VOLUME no flag covers), binds of host paths, tmpfs mounts.
//!
//! Everything is parsed and checked before anything is made (a bad flag or a bind of a
//! missing path leaves nothing); volumes this run made are removed again if it fails later
//! ([`Applied::created`]). The container records the volumes it uses in its
//! `berth.io/volumes` label (berthd refuses to remove those), and marks the volume mounts
//! that want Docker's copy-up in the spec's `berth.io/copy-up` annotation (berthd fills an
//! empty volume from the image when it creates the task).

use std::collections::HashMap;

use anyhow::{anyhow, Context, Result};
use berth_proto::berth::services::volumes::v1 as vpb;
use berth_proto::berth::services::volumes::v1::volumes_client::VolumesClient;
use serde_json::{json, Value};

use super::{rpc_error, Env};
pub use crate::runspec::mounts::{plan, validate_volume_name, Req};
use crate::tasks::volumes::{ANNOTATION_COPY_UP, LABEL_ANONYMOUS, LABEL_VOLUMES};

/// What [`apply`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Labels for the container record (`berth.io/volumes`).
    pub labels: HashMap<String, String>,
    /// Volumes this run created (removed again if the run fails).
    pub created: Vec<String>,
    /// Anonymous volumes this run created (removed with the container by `--rm`).
    pub anonymous: Vec<String>,
}

fn anonymous_name() -> String {
    (0..32)
        .map(|_| format!("{:02x}", fastrand::u8(..)))
        .collect()
}

/// The spec mount for a volume as berthd describes it.
fn volume_mount(v: &vpb::Volume, dst: &str, ro: bool) -> Result<Value> {
    crate::runspec::mounts::volume_mount(
        &v.name,
        |k| v.options.get(k).map(String::as_str),
        &v.mountpoint,
        dst,
        ro,
    )
}

/// Parses the flags, checks bind sources, makes missing volumes on berthd and adds every
/// mount to `spec` (the copy-up annotation too). On failure, removes the volumes it made.
pub async fn apply(
    env: &Env,
    volumes: &[String],
    mounts: &[String],
    tmpfs: &[String],
    cfg: &Value,
    spec: &mut Value,
) -> Result<Applied> {
    let reqs = plan(volumes, mounts, tmpfs, cfg)?;
    for r in &reqs {
        if let Req::Bind { src, .. } = r {
            std::fs::metadata(src)
                .map_err(|e| anyhow!("bind source path {src:?} does not exist: {e}"))?;
        }
    }
    let mut applied = Applied::default();
    let made = add(env, &reqs, spec, &mut applied).await;
    if let Err(e) = made {
        remove_volumes(env, &applied.created).await;
        return Err(e);
    }
    Ok(applied)
}

async fn add(env: &Env, reqs: &[Req], spec: &mut Value, applied: &mut Applied) -> Result<()> {
    let mut client = VolumesClient::new(env.ns.clone());
    let (mut names, mut copy) = (Vec::new(), Vec::new());
    for r in reqs {
        let m = match r {
            Req::Bind {
                src,
                dst,
                ro,
                propagation,
            } => {
                let mut opts = vec!["rbind", if *ro { "ro" } else { "rw" }];
                opts.extend(propagation.as_deref());
                json!({"destination": dst, "type": "bind", "source": src, "options": opts})
            }
            Req::Tmpfs { dst, options } => {
                let mut opts: Vec<String> = vec!["nosuid".into(), "nodev".into(), "noexec".into()];
                opts.extend(options.iter().cloned());
                json!({"destination": dst, "type": "tmpfs", "source": "tmpfs", "options": opts})
            }
            Req::Volume {
                name,
                dst,
                ro,
                copy: wants_copy,
                labels,
                opts,
            } => {
                let anonymous = name.is_none();
                let name = name.clone().unwrap_or_else(anonymous_name);
                let existing = if anonymous {
                    None
                } else {
                    match client
                        .get(vpb::GetVolumeRequest { name: name.clone() })
                        .await
                    {
                        Ok(r) => r.into_inner().volume,
                        Err(s) if s.code() == tonic::Code::NotFound => None,
                        Err(s) => return Err(rpc_error(format!("volume {name}"))(s)),
                    }
                };
                let v = match existing {
                    Some(v) => v,
                    None => {
                        let mut labels: HashMap<String, String> =
                            labels.clone().into_iter().collect();
                        if anonymous {
                            labels.insert(LABEL_ANONYMOUS.into(), String::new());
                        }
                        let v = client
                            .create(vpb::CreateVolumeRequest {
                                name: name.clone(),
                                driver: String::new(),
                                labels,
                                options: opts.clone().into_iter().collect(),
                            })
                            .await
                            .map_err(rpc_error(format!("creating volume {name}")))?
                            .into_inner()
                            .volume
                            .context("berthd returned no volume")?;
                        applied.created.push(name.clone());
                        if anonymous {
                            applied.anonymous.push(name.clone());
                        }
                        v
                    }
                };
                if *wants_copy && v.options.is_empty() {
                    copy.push(dst.clone());
                }
                names.push(name);
                volume_mount(&v, dst, *ro)?
            }
        };
        spec["mounts"]
            .as_array_mut()
            .context("the spec has no mounts list")?
            .push(m);
    }
    if !copy.is_empty() {
        if !spec["annotations"].is_object() {
            spec["annotations"] = json!({});
        }
        spec["annotations"][ANNOTATION_COPY_UP] = Value::String(copy.join(","));
    }
    if !names.is_empty() {
        applied
            .labels
            .insert(LABEL_VOLUMES.to_string(), names.join(","));
    }
    Ok(())
}

/// Removes volumes (best effort: after the container using them is gone).
pub async fn remove_volumes(env: &Env, names: &[String]) {
    let mut client = VolumesClient::new(env.ns.clone());
    for name in names {
        if let Err(e) = client
            .delete(vpb::DeleteVolumeRequest { name: name.clone() })
            .await
        {
            tracing::warn!(volume = %name, error = %e.message(), "removing a volume");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_mounts_follow_the_driver_options() {
        let mut v = vpb::Volume {
            name: "v".into(),
            mountpoint: "/r/volumes/ns/v/_data".into(),
            ..Default::default()
        };
        let m = volume_mount(&v, "/d", true).unwrap();
        assert_eq!(m["source"], "/r/volumes/ns/v/_data");
        assert_eq!(m["options"], json!(["rbind", "ro"]));
        v.options.insert("type".into(), "tmpfs".into());
        v.options.insert("o".into(), "size=1m".into());
        let m = volume_mount(&v, "/d", false).unwrap();
        assert_eq!(m["type"], "tmpfs");
        assert_eq!(m["options"], json!(["nosuid", "nodev", "size=1m", "rw"]));
    }
}
