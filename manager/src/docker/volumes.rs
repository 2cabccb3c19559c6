//! `/volumes/*`: list, inspect, create, remove, prune in Docker's shapes, over the store's
//! volumes of the `moby` namespace (`berth_store::volumes`).

use std::collections::BTreeMap;

use berth_store::metadata::Volume;
use berth_store::{Ctx, Store};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::errors::ApiError;
use super::server::{self, empty, Reply, Req};
use super::system::dir_size;
use super::{blocking, Api};

/// Docker's `Volume`; the mountpoint is the data dir of a volume without options.
pub fn shape(store: &Store, ctx: &Ctx, v: &Volume) -> Value {
    let mountpoint = if v.options.is_empty() {
        store
            .volume_data(ctx, &v.name)
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let created: chrono::DateTime<chrono::Utc> = v.created_at.into();
    json!({
        "Name": v.name,
        "Driver": v.driver,
        "Mountpoint": mountpoint,
        "CreatedAt": created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "Labels": v.labels,
        "Scope": "local",
        "Options": if v.options.is_empty() { Value::Null } else { json!(v.options) },
    })
}

/// `GET /volumes?filters=`: `{"Volumes": [...], "Warnings": []}`.
pub async fn list(api: &Api, req: Req) -> Reply {
    let f = req.filters()?;
    f.only(&["name", "label", "dangling", "driver"])?;
    let dangling = f.bool("dangling")?;
    let (store, ctx) = (api.state.store().clone(), api.ctx());
    let vols = blocking(move || {
        let mut out = Vec::new();
        for v in store.volume_list(&ctx)? {
            let keep = (f.get("name").is_empty()
                || f.get("name").iter().any(|n| v.name.contains(n.as_str())))
                && (f.get("driver").is_empty() || f.get("driver").contains(&v.driver))
                && f.labels_match(&v.labels)
                && match dangling {
                    None => true,
                    Some(d) => store.volume_users(&ctx, &v.name)?.is_empty() == d,
                };
            if keep {
                out.push(shape(&store, &ctx, &v));
            }
        }
        Ok(out)
    })
    .await?;
    Ok(server::json(
        StatusCode::OK,
        &json!({"Volumes": vols, "Warnings": []}),
    ))
}

fn no_such_volume(name: &str) -> ApiError {
    ApiError::not_found(format!("get {name}: no such volume"))
}

/// `GET /volumes/{name}`.
pub async fn inspect(api: &Api, _req: Req, name: &str) -> Reply {
    let (store, ctx, name) = (api.state.store().clone(), api.ctx(), name.to_string());
    let v = blocking(move || match store.volume(&ctx, &name) {
        Ok(v) => Ok(shape(&store, &ctx, &v)),
        Err(e) if e.is_not_found() || e.kind() == berth_store::ErrorKind::InvalidArgument => {
            Err(no_such_volume(&name))
        }
        Err(e) => Err(e.into()),
    })
    .await?;
    Ok(server::json(StatusCode::OK, &v))
}

/// The body of `POST /volumes/create`; [`CreateRequest::check`] refuses what berthd does not do.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateRequest {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Driver")]
    driver: String,
    #[serde(rename = "DriverOpts")]
    driver_opts: Option<BTreeMap<String, String>>,
    #[serde(rename = "Labels")]
    labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "ClusterVolumeSpec")]
    cluster: Option<Value>,
}

impl CreateRequest {
    /// Refuses, naming it, a driver other than `local` and cluster volumes.
    pub fn check(&self) -> Result<(), ApiError> {
        if !(self.driver.is_empty() || self.driver == berth_store::volumes::DRIVER) {
            return Err(ApiError::unsupported(format!(
                "volume driver {:?} (only \"local\")",
                self.driver
            )));
        }
        if self.cluster.as_ref().is_some_and(|c| !c.is_null()) {
            return Err(ApiError::unsupported("cluster volumes (ClusterVolumeSpec)"));
        }
        Ok(())
    }
}

/// `POST /volumes/create` (201 with the volume). As dockerd: no name makes an anonymous one
/// (a random name); an existing volume with the same driver and options is answered as is,
/// one with other options is a 409.
pub async fn create(api: &Api, req: Req) -> Reply {
    let r: CreateRequest = req.json().await?;
    r.check()?;
    let name = if r.name.is_empty() {
        berth_store::Digest::of(&fastrand::u64(..).to_le_bytes())
            .hex()
            .to_string()
    } else {
        r.name
    };
    let opts = r.driver_opts.unwrap_or_default();
    let labels = r.labels.unwrap_or_default();
    let (store, ctx) = (api.state.store().clone(), api.ctx());
    let v = blocking(move || {
        if let Ok(v) = store.volume(&ctx, &name) {
            if v.options != opts {
                return Err(ApiError::conflict(format!(
                    "volume {name} already exists with different options"
                )));
            }
            return Ok((shape(&store, &ctx, &v), false));
        }
        let v = store.volume_create(&ctx, &name, labels.into_iter().collect(), opts)?;
        Ok((shape(&store, &ctx, &v), true))
    })
    .await?;
    let (v, made) = v;
    if made {
        api.events
            .volume(v["Name"].as_str().unwrap_or(""), "create", &[]);
    }
    Ok(server::json(StatusCode::CREATED, &v))
}

/// `DELETE /volumes/{name}?force=` (204): missing is a 404 (not with `force`), in use a 409.
pub async fn remove(api: &Api, req: Req, name: &str) -> Reply {
    let force = req.q_bool("force")?;
    let (store, ctx, name) = (api.state.store().clone(), api.ctx(), name.to_string());
    let n2 = name.clone();
    let gone = blocking(move || {
        let name = n2;
        match store.volume(&ctx, &name) {
            Ok(_) => {}
            Err(e) if e.is_not_found() || e.kind() == berth_store::ErrorKind::InvalidArgument => {
                return if force {
                    Ok(false)
                } else {
                    Err(no_such_volume(&name))
                };
            }
            Err(e) => return Err(e.into()),
        }
        let users = store.volume_users(&ctx, &name)?;
        if !users.is_empty() {
            return Err(ApiError::conflict(format!(
                "remove {name}: volume is in use - [{}]",
                users.join(", ")
            )));
        }
        store.volume_delete(&ctx, &name)?;
        Ok(true)
    })
    .await?;
    if gone {
        api.events.volume(&name, "destroy", &[]);
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /volumes/prune`: every volume no container uses (API 1.41 prunes named ones too).
pub async fn prune(api: &Api, req: Req) -> Reply {
    let f = req.filters()?;
    f.only(&["label"])?;
    if !f.get("label").is_empty() {
        return Err(ApiError::unsupported("the label filter of volume prune"));
    }
    let (store, ctx) = (api.state.store().clone(), api.ctx());
    let (deleted, reclaimed) = blocking(move || {
        // Sizes first: the data is gone once pruned.
        let sizes: BTreeMap<String, u64> = store
            .volume_list(&ctx)?
            .iter()
            .filter(|v| v.options.is_empty())
            .filter_map(|v| {
                let p = store.volume_data(&ctx, &v.name).ok()?;
                Some((v.name.clone(), dir_size(&p)))
            })
            .collect();
        let gone = store.volume_prune(&ctx, true)?;
        let reclaimed = gone.iter().filter_map(|n| sizes.get(n)).sum::<u64>();
        Ok((gone, reclaimed))
    })
    .await?;
    Ok(server::json(
        StatusCode::OK,
        &json!({"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed}),
    ))
}
