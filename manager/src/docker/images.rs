//! `/images/*`: list, inspect, history, tag, remove, pull (create), push, save (get), load
//! and prune, over the store's image records of the `moby` namespace.
//!
//! Docker's model is an image ID (the config's digest) carrying names; the store's is one
//! record per name pointing at a manifest or index. An image here is every record that
//! resolves, for the host's platform, to the same config: its tags are those records'
//! names, its RepoDigests are `repo@<record's target digest>` (as dockerd's containerd store
//! reports them), its size is that of its layers as stored (compressed).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use berth_distribution::{ClientOptions, Credentials};
use berth_store::images::{
    normalize_name, read_json, resolve_manifest, ExportOptions, ImportOptions,
};
use berth_store::metadata::Image;
use berth_store::oci::{media_kind, Manifest, MediaKind, Platform};
use berth_store::pull::{Progress, PullOptions};
use berth_store::push::PushOptions;
use berth_store::{Ctx, Digest, Store, StoreError};
use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::errors::ApiError;
use super::server::{self, empty, line, Chunk, Reply, Req};
use super::{blocking, short_id, Api, NAMESPACE};
use crate::daemon::services;

/// An image as Docker sees it: a config, and the records naming it.
#[derive(Debug, Clone)]
pub struct DockerImage {
    /// The config's digest: the image ID.
    pub id: Digest,
    /// The config document.
    pub config: Value,
    /// The host platform's manifest.
    pub manifest: Manifest,
    /// The records (names) resolving to it.
    pub records: Vec<Image>,
}

/// `repo`, `tag` and `digest` of a full name (`docker.io/library/busybox:latest`,
/// `127.0.0.1:5000/a@sha256:...`).
pub fn split_name(name: &str) -> (&str, Option<&str>, Option<&str>) {
    let (left, digest) = match name.split_once('@') {
        Some((l, d)) => (l, Some(d)),
        None => (name, None),
    };
    match left.rfind(':') {
        Some(i) if !left[i..].contains('/') => (&left[..i], Some(&left[i + 1..]), digest),
        _ => (left, None, digest),
    }
}

/// Docker's short form of a full name: `docker.io/library/busybox:latest` → `busybox:latest`,
/// `docker.io/user/app` → `user/app`; other registries keep their host.
pub fn familiar(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("docker.io/library/") {
        let (repo, _, _) = split_name(rest);
        if !repo.contains('/') {
            return rest.to_string();
        }
    }
    name.strip_prefix("docker.io/").unwrap_or(name).to_string()
}

impl DockerImage {
    /// `sha256:<hex>`.
    pub fn id_str(&self) -> String {
        self.id.to_string()
    }

    /// Familiar `repo:tag` of every record with a tag.
    pub fn tags(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .records
            .iter()
            .filter(|r| matches!(split_name(&r.name), (_, Some(_), None)))
            .map(|r| familiar(&r.name))
            .collect();
        v.sort();
        v
    }

    /// Familiar `repo@digest` of every record.
    pub fn digests(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .records
            .iter()
            .map(|r| {
                let (repo, _, _) = split_name(&r.name);
                familiar(&format!("{repo}@{}", r.target.digest))
            })
            .collect();
        set.into_iter().collect()
    }

    /// No tag names it (only digests, or nothing).
    pub fn dangling(&self) -> bool {
        self.tags().is_empty()
    }

    /// The distinct repositories of its tags.
    fn repositories(&self) -> BTreeSet<String> {
        self.records
            .iter()
            .filter(|r| matches!(split_name(&r.name), (_, Some(_), None)))
            .map(|r| split_name(&r.name).0.to_string())
            .collect()
    }

    /// The layers' stored size plus the config's.
    pub fn size(&self) -> u64 {
        self.manifest.layers.iter().map(|l| l.size).sum::<u64>() + self.manifest.config.size
    }

    /// `created` of the config, in seconds since the epoch (0 when absent).
    pub fn created_unix(&self) -> i64 {
        self.config["created"]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.timestamp())
            .unwrap_or(0)
    }

    /// The config's labels.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.config["config"]["Labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The `ImageSummary` of `GET /images/json`.
    pub fn summary(&self) -> Value {
        let (mut tags, mut digests) = (self.tags(), self.digests());
        if tags.is_empty() && digests.is_empty() {
            tags.push("<none>:<none>".into());
            digests.push("<none>@<none>".into());
        }
        json!({
            "Id": self.id_str(),
            "ParentId": "",
            "RepoTags": tags,
            "RepoDigests": digests,
            "Created": self.created_unix(),
            "Size": self.size(),
            "SharedSize": -1,
            "VirtualSize": self.size(),
            "Labels": self.labels(),
            "Containers": -1,
        })
    }

    /// The `ImageInspect` of `GET /images/{name}/json`.
    pub fn inspect(&self) -> Value {
        let c = &self.config;
        let mut cfg = json!({
            "Hostname": "", "Domainname": "", "User": "",
            "AttachStdin": false, "AttachStdout": false, "AttachStderr": false,
            "Tty": false, "OpenStdin": false, "StdinOnce": false,
            "Env": null, "Cmd": null, "Image": "", "Volumes": null, "WorkingDir": "",
            "Entrypoint": null, "OnBuild": null, "Labels": null,
        });
        if let (Some(dst), Some(src)) = (cfg.as_object_mut(), c["config"].as_object()) {
            for (k, v) in src {
                dst.insert(k.clone(), v.clone());
            }
        }
        let diff_ids = c["rootfs"]["diff_ids"].clone();
        json!({
            "Id": self.id_str(),
            "RepoTags": self.tags(),
            "RepoDigests": self.digests(),
            "Parent": "",
            "Comment": c["comment"].as_str().unwrap_or(""),
            "Created": c["created"].as_str().unwrap_or(""),
            "Container": c["container"].as_str().unwrap_or(""),
            "ContainerConfig": c.get("container_config").cloned().unwrap_or_else(|| cfg.clone()),
            "DockerVersion": c["docker_version"].as_str().unwrap_or(""),
            "Author": c["author"].as_str().unwrap_or(""),
            "Config": cfg,
            "Architecture": c["architecture"].as_str().unwrap_or(""),
            "Variant": c["variant"].as_str(),
            "Os": c["os"].as_str().unwrap_or(""),
            "Size": self.size(),
            "VirtualSize": self.size(),
            "GraphDriver": {"Name": "overlayfs", "Data": null},
            "RootFS": {"Type": "layers", "Layers": if diff_ids.is_null() { json!([]) } else { diff_ids }},
            "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
        })
    }
}

/// Every image of the namespace for the host's platform, grouped by ID (newest first).
/// Records whose content is missing or is for other platforms only are skipped.
pub fn all(store: &Store, ctx: &Ctx) -> Result<Vec<DockerImage>, StoreError> {
    let platform = Platform::host();
    let mut by_id: BTreeMap<Digest, DockerImage> = BTreeMap::new();
    for rec in store.image_list(ctx, &[])? {
        let resolved = resolve_manifest(store, ctx, &rec.target, &platform).and_then(|(_, m)| {
            let c: Value = read_json(store, ctx, &m.config)?;
            Ok((m, c))
        });
        let (manifest, config) = match resolved {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(image = %rec.name, error = %e, "docker api: image skipped");
                continue;
            }
        };
        let id = manifest.config.digest.clone();
        by_id
            .entry(id.clone())
            .or_insert_with(|| DockerImage {
                id,
                config,
                manifest,
                records: Vec::new(),
            })
            .records
            .push(rec);
    }
    let mut v: Vec<DockerImage> = by_id.into_values().collect();
    v.sort_by_key(|i| std::cmp::Reverse(i.created_unix()));
    Ok(v)
}

fn no_such_image(name: &str) -> ApiError {
    ApiError::not_found(format!("No such image: {name}"))
}

fn invalid_reference(e: StoreError) -> ApiError {
    let msg = e.to_string();
    let why = msg.rsplit(": ").next().unwrap_or(&msg).to_string();
    ApiError::bad_request(format!("invalid reference format: {why}"))
}

/// Finds the image `name` names as dockerd does: a reference (`busybox`, `a/b:t`,
/// `repo@sha256:...`) first, then a full or short image ID (`sha256:<hex>`, `<hex prefix>`).
/// Returns the image and, for a reference, the record it matched.
pub fn find(
    store: &Store,
    ctx: &Ctx,
    name: &str,
) -> Result<(DockerImage, Option<Image>), ApiError> {
    let images = all(store, ctx)?;
    let normalized = normalize_name(name);
    if let Ok(full) = &normalized {
        for img in &images {
            if let Some(r) = img.records.iter().find(|r| &r.name == full) {
                return Ok((img.clone(), Some(r.clone())));
            }
        }
        // repo@digest of a tagged record's target.
        if let (repo, None, Some(d)) = split_name(full) {
            for img in &images {
                if let Some(r) = img
                    .records
                    .iter()
                    .find(|r| split_name(&r.name).0 == repo && r.target.digest.to_string() == d)
                {
                    return Ok((img.clone(), Some(r.clone())));
                }
            }
        }
    }
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    if !hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        let hex = hex.to_ascii_lowercase();
        let hits: Vec<&DockerImage> = images
            .iter()
            .filter(|i| i.id.hex().starts_with(&hex))
            .collect();
        match hits.len() {
            0 => {}
            1 => return Ok((hits[0].clone(), None)),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "image ID prefix {name} is ambiguous"
                )))
            }
        }
    }
    match normalized {
        Ok(full) => Err(no_such_image(&familiar(&full))),
        Err(e) if name.starts_with("sha256:") => {
            let _ = e;
            Err(no_such_image(name))
        }
        Err(e) => Err(invalid_reference(e)),
    }
}

/// IDs of the namespace's containers whose image is `img`.
fn users(store: &Store, ctx: &Ctx, img: &DockerImage) -> Result<Vec<String>, StoreError> {
    let names: BTreeSet<&str> = img.records.iter().map(|r| r.name.as_str()).collect();
    Ok(store
        .container_list(ctx, &[])?
        .into_iter()
        .filter(|c| {
            names.contains(c.image.as_str())
                || normalize_name(&c.image).is_ok_and(|n| names.contains(n.as_str()))
        })
        .map(|c| c.id)
        .collect())
}

fn publish_delete(name: &str) {
    use berth_proto::containerd::events as ev;
    services::events::publish(
        NAMESPACE,
        "/images/delete",
        services::events::any(
            "ImageDelete",
            &ev::ImageDelete {
                name: name.to_string(),
            },
        ),
    );
}

/// Deletes every record of `img`; the `Untagged`/`Deleted` list of dockerd.
fn delete_whole(store: &Store, ctx: &Ctx, img: &DockerImage) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for r in &img.records {
        store.image_delete(ctx, &r.name)?;
        publish_delete(&r.name);
        let (repo, tag, digest) = split_name(&r.name);
        let mut untagged = vec![familiar(&r.name)];
        if tag.is_some() && digest.is_none() {
            untagged.push(familiar(&format!("{repo}@{}", r.target.digest)));
        }
        for u in untagged {
            if seen.insert(u.clone()) {
                out.push(json!({ "Untagged": u }));
            }
        }
    }
    out.push(json!({ "Deleted": img.id_str() }));
    Ok(out)
}

/// `GET /images/json`.
pub async fn list(api: &Api, req: Req) -> Reply {
    let f = req.filters()?;
    f.only(&["reference", "dangling", "label", "before", "since"])?;
    let dangling = f.bool("dangling")?;
    if let Some(v) = req.q("filter").filter(|v| !v.is_empty()) {
        return Err(ApiError::unsupported(format!(
            "the old filter parameter ({v})"
        )));
    }
    let all_images = req.q_bool("all")?;
    let _ = all_images; // no intermediate images exist here: -a lists the same
    let (store, ctx) = (api.state.store().clone(), api.ctx());
    let images = blocking(move || {
        let images = all(&store, &ctx)?;
        let find_time = |name: &str| -> Result<i64, ApiError> {
            Ok(find(&store, &ctx, name)?.0.created_unix())
        };
        let before = f.get("before").first().map(|n| find_time(n)).transpose()?;
        let since = f.get("since").first().map(|n| find_time(n)).transpose()?;
        let refs = f.get("reference").to_vec();
        Ok(images
            .into_iter()
            .filter(|i| dangling.is_none_or(|d| i.dangling() == d))
            .filter(|i| f.labels_match(&i.labels()))
            .filter(|i| before.is_none_or(|t| i.created_unix() < t))
            .filter(|i| since.is_none_or(|t| i.created_unix() > t))
            .filter_map(|i| {
                if refs.is_empty() {
                    return Some(i.summary());
                }
                // As dockerd: only the names that match are listed, and an image none of
                // whose names match is left out.
                let matches = |t: &String| {
                    let (repo, _, _) = split_name(t);
                    refs.iter().any(|p| glob(p, t) || glob(p, repo))
                };
                let tags: Vec<String> = i.tags().into_iter().filter(matches).collect();
                let digests: Vec<String> = i.digests().into_iter().filter(matches).collect();
                if tags.is_empty() && digests.is_empty() {
                    return None;
                }
                let mut s = i.summary();
                s["RepoTags"] = json!(tags);
                s["RepoDigests"] = json!(digests);
                Some(s)
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(server::json(StatusCode::OK, &images))
}

/// Go's `path.Match` for reference filters: `*` and `?` within a path component.
pub fn glob(pattern: &str, s: &str) -> bool {
    fn m(p: &[u8], s: &[u8]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| m(&p[1..], &s[i..])),
            Some(b'?') => !s.is_empty() && s[0] != b'/' && m(&p[1..], &s[1..]),
            Some(&c) => !s.is_empty() && s[0] == c && m(&p[1..], &s[1..]),
        }
    }
    m(pattern.as_bytes(), s.as_bytes())
}

/// `GET /images/{name}/json`.
pub async fn inspect(api: &Api, _req: Req, name: &str) -> Reply {
    let (store, ctx, name) = (api.state.store().clone(), api.ctx(), name.to_string());
    let v = blocking(move || Ok(find(&store, &ctx, &name)?.0.inspect())).await?;
    Ok(server::json(StatusCode::OK, &v))
}

/// `GET /images/{name}/history`: the config's history, newest first.
pub async fn history(api: &Api, _req: Req, name: &str) -> Reply {
    let (store, ctx, name) = (api.state.store().clone(), api.ctx(), name.to_string());
    let v = blocking(move || {
        let (img, _) = find(&store, &ctx, &name)?;
        let mut layers = img.manifest.layers.iter();
        let mut out = Vec::new();
        let hist = img.config["history"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let parse = |s: &Value| {
            s.as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.timestamp())
                .unwrap_or(0)
        };
        if hist.is_empty() {
            for l in layers {
                out.push(json!({
                    "Id": "<missing>", "Created": img.created_unix(), "CreatedBy": "",
                    "Tags": null, "Size": l.size, "Comment": "",
                }));
            }
        } else {
            for h in &hist {
                let size = if h["empty_layer"].as_bool().unwrap_or(false) {
                    0
                } else {
                    layers.next().map(|l| l.size).unwrap_or(0)
                };
                out.push(json!({
                    "Id": "<missing>",
                    "Created": parse(&h["created"]),
                    "CreatedBy": h["created_by"].as_str().unwrap_or(""),
                    "Tags": null,
                    "Size": size,
                    "Comment": h["comment"].as_str().unwrap_or(""),
                }));
            }
        }
        out.reverse();
        if let Some(top) = out.first_mut() {
            top["Id"] = json!(img.id_str());
            top["Tags"] = json!(img.tags());
        }
        Ok(out)
    })
    .await?;
    Ok(server::json(StatusCode::OK, &v))
}

/// `POST /images/{name}/tag?repo=&tag=`: another record for the same target (201).
pub async fn tag(api: &Api, req: Req, name: &str) -> Reply {
    let repo = req.q("repo").unwrap_or("").to_string();
    let tag = req.q("tag").unwrap_or("").to_string();
    if repo.is_empty() {
        return Err(ApiError::bad_request("repository name (repo) is required"));
    }
    let new_name = tag_name(&repo, &tag)?;
    let (store, ctx, name) = (api.state.store().clone(), api.ctx(), name.to_string());
    let rec = blocking(move || {
        let (img, rec) = find(&store, &ctx, &name)?;
        let src = rec
            .or_else(|| img.records.first().cloned())
            .ok_or_else(|| no_such_image(&name))?;
        let new = Image {
            name: new_name,
            target: src.target.clone(),
            labels: Default::default(),
            created_at: std::time::UNIX_EPOCH,
            updated_at: std::time::UNIX_EPOCH,
        };
        match store.image_create(&ctx, &new) {
            Ok(i) => Ok(i),
            Err(e) if e.is_already_exists() => {
                Ok(store.image_update(&ctx, &new, &["target".to_string()])?)
            }
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    services::images::publish_image(NAMESPACE, &rec);
    Ok(empty(StatusCode::CREATED))
}

/// The full image name of a `repo` and `tag` pair (tag, commit), refusing a digest.
pub(super) fn tag_name(repo: &str, tag: &str) -> Result<String, ApiError> {
    let new_ref = if tag.is_empty() {
        repo.to_string()
    } else {
        format!("{repo}:{tag}")
    };
    let new_name = normalize_name(&new_ref).map_err(invalid_reference)?;
    if split_name(&new_name).2.is_some() {
        return Err(ApiError::bad_request(
            "refusing to create a tag with a digest reference",
        ));
    }
    Ok(new_name)
}

/// `DELETE /images/{name}?force=&noprune=`: untag, or remove the image when its last name
/// goes (or when named by ID), with dockerd's conflicts.
pub async fn remove(api: &Api, req: Req, name: &str) -> Reply {
    let force = req.q_bool("force")?;
    let _noprune = req.q_bool("noprune")?; // no parent images here: nothing to prune
    let (store, ctx, name) = (api.state.store().clone(), api.ctx(), name.to_string());
    let out = blocking(move || {
        let (img, rec) = find(&store, &ctx, &name)?;
        match rec {
            // One of several names: untag only.
            Some(r) if img.records.len() > 1 => {
                store.image_delete(&ctx, &r.name)?;
                publish_delete(&r.name);
                Ok(vec![json!({ "Untagged": familiar(&r.name) })])
            }
            Some(r) => {
                let users = users(&store, &ctx, &img)?;
                if let (Some(c), false) = (users.first(), force) {
                    return Err(ApiError::conflict(format!(
                        "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {}",
                        short_id(c),
                        short_id(&img.id_str())
                    )));
                }
                let _ = r;
                delete_whole(&store, &ctx, &img)
            }
            None => {
                if !force && img.repositories().len() > 1 {
                    return Err(ApiError::conflict(format!(
                        "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                        short_id(&img.id_str())
                    )));
                }
                let users = users(&store, &ctx, &img)?;
                if let (Some(c), false) = (users.first(), force) {
                    return Err(ApiError::conflict(format!(
                        "conflict: unable to delete {} (must be forced) - image is being used by stopped container {}",
                        short_id(&img.id_str()),
                        short_id(c)
                    )));
                }
                delete_whole(&store, &ctx, &img)
            }
        }
    })
    .await?;
    services::collect_in_background(api.state.clone());
    Ok(server::json(StatusCode::OK, &out))
}

/// `POST /images/prune?filters=`: dangling images (or, with `dangling=false`, every image)
/// that no container uses.
pub async fn prune(api: &Api, req: Req) -> Reply {
    let f = req.filters()?;
    if !f.get("until").is_empty() {
        return Err(ApiError::unsupported("the until filter of image prune"));
    }
    f.only(&["dangling", "label", "label!"])?;
    if !f.get("label!").is_empty() {
        return Err(ApiError::unsupported("the label! filter of image prune"));
    }
    let dangling_only = f.bool("dangling")?.unwrap_or(true);
    let (store, ctx) = (api.state.store().clone(), api.ctx());
    let (deleted, reclaimed) = blocking(move || {
        let mut deleted = Vec::new();
        let mut reclaimed = 0u64;
        for img in all(&store, &ctx)? {
            if (dangling_only && !img.dangling())
                || !f.labels_match(&img.labels())
                || !users(&store, &ctx, &img)?.is_empty()
            {
                continue;
            }
            deleted.extend(delete_whole(&store, &ctx, &img)?);
            reclaimed += img.size();
        }
        Ok((deleted, reclaimed))
    })
    .await?;
    if !deleted.is_empty() {
        services::collect_in_background(api.state.clone());
    }
    Ok(server::json(
        StatusCode::OK,
        &json!({ "ImagesDeleted": if deleted.is_empty() { Value::Null } else { json!(deleted) }, "SpaceReclaimed": reclaimed }),
    ))
}

/// The credentials of an `X-Registry-Auth` header (base64url JSON `AuthConfig`).
pub fn registry_auth(req: &Req) -> Result<Option<Credentials>, ApiError> {
    let Some(h) = req.headers.get("X-Registry-Auth") else {
        return Ok(None);
    };
    let raw = h
        .to_str()
        .map_err(|_| ApiError::bad_request("X-Registry-Auth is not ASCII"))?
        .trim();
    if raw.is_empty() {
        return Ok(None);
    }
    decode_auth(raw)
}

/// Decodes an `X-Registry-Auth` value.
pub fn decode_auth(raw: &str) -> Result<Option<Credentials>, ApiError> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine;
    let bad = |why: &str| ApiError::bad_request(format!("invalid X-Registry-Auth header: {why}"));
    let data = URL_SAFE
        .decode(raw)
        .or_else(|_| URL_SAFE_NO_PAD.decode(raw))
        .or_else(|_| STANDARD.decode(raw))
        .map_err(|_| bad("not base64"))?;
    let v: Value = serde_json::from_slice(&data).map_err(|_| bad("not JSON"))?;
    auth_config_credentials(&v)
}

/// The credentials of an `AuthConfig` (`X-Registry-Auth`'s JSON, `POST /auth`'s body):
/// `username` and `password`, or `auth` (base64 `user:password`). None when empty.
pub fn auth_config_credentials(v: &Value) -> Result<Option<Credentials>, ApiError> {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    let bad = |why: &str| ApiError::bad_request(format!("invalid credentials: {why}"));
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    for k in ["identitytoken", "registrytoken"] {
        if !s(k).is_empty() {
            return Err(ApiError::unsupported(format!("credentials given as {k}")));
        }
    }
    let (mut user, mut pass) = (s("username"), s("password"));
    if user.is_empty() && !s("auth").is_empty() {
        let a = STANDARD
            .decode(s("auth"))
            .map_err(|_| bad("auth is not base64"))?;
        let a = String::from_utf8(a).map_err(|_| bad("auth is not UTF-8"))?;
        let (u, p) = a
            .split_once(':')
            .ok_or_else(|| bad("auth is not user:password"))?;
        (user, pass) = (u.to_string(), p.to_string());
    }
    if user.is_empty() && pass.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: user,
        password: pass,
    }))
}

/// How to reach `host`: as dockerd, a registry on a loopback address is "insecure" and spoken
/// to over plain HTTP, unless berthd's config has a section for it (which then decides).
pub fn client_options(api: &Api, host: &str, credentials: Option<Credentials>) -> ClientOptions {
    let name = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    let loopback = name == "localhost"
        || name
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let base = ClientOptions {
        plain_http: loopback && !api.state.registries().configured(host),
        credentials,
        ..ClientOptions::default()
    };
    api.state.registries().client_options(host, &base)
}

fn registry_of(name: &str) -> Result<String, ApiError> {
    berth_distribution::Reference::parse(name)
        .map(|r| r.registry)
        .map_err(|e| ApiError::bad_request(format!("invalid reference format: {e}")))
}

/// A text progress bar as dockerd draws it: `[====>      ]  1.2MB/3.4MB`.
fn progress_bar(current: u64, total: u64) -> String {
    let human = |n: u64| {
        let f = n as f64;
        if f >= 1e9 {
            format!("{:.3}GB", f / 1e9)
        } else if f >= 1e6 {
            format!("{:.3}MB", f / 1e6)
        } else if f >= 1e3 {
            format!("{:.3}kB", f / 1e3)
        } else {
            format!("{n}B")
        }
    };
    if total == 0 {
        return human(current);
    }
    let width = 50u64;
    let done = (current.min(total) * width / total) as usize;
    let mut bar = "=".repeat(done);
    if done < width as usize {
        bar.push('>');
        bar.push_str(&" ".repeat(width as usize - done - 1));
    }
    format!("[{bar}] {:>9}/{}", human(current), human(total))
}

fn progress_line(status: &str, id: &str, p: Option<(u64, u64)>) -> Bytes {
    let mut v = json!({"status": status, "id": id, "progressDetail": {}});
    if let Some((cur, total)) = p {
        v["progressDetail"] = json!({"current": cur, "total": total});
        v["progress"] = json!(progress_bar(cur, total));
    }
    line(&v)
}

/// `POST /images/create?fromImage=&tag=&platform=`: a pull, with dockerd's progress stream.
/// A failure before any progress (a missing tag, an unreachable registry) is an ordinary error
/// answer with its status.
pub async fn create(api: &Api, req: Req) -> Reply {
    if req.q("fromSrc").is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::unsupported(
            "image import (fromSrc, docker import)",
        ));
    }
    let from = req
        .q("fromImage")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("fromImage is required"))?
        .to_string();
    let tag = req.q("tag").unwrap_or("").to_string();
    let reference = if tag.is_empty() {
        let (_, t, d) = split_name(&from);
        if t.is_none() && d.is_none() {
            return Err(ApiError::unsupported(
                "pulling every tag of a repository (docker pull --all-tags)",
            ));
        }
        from.clone()
    } else if tag.starts_with("sha256:") {
        format!("{from}@{tag}")
    } else {
        format!("{from}:{tag}")
    };
    let name = normalize_name(&reference).map_err(invalid_reference)?;
    let platform = match req.q("platform").filter(|p| !p.is_empty()) {
        Some(p) => Some(Platform::parse(p).map_err(|e| ApiError::bad_request(e.to_string()))?),
        None => None,
    };
    let host = registry_of(&name)?;
    let client = client_options(api, &host, registry_auth(&req)?);
    let (repo, _, _) = split_name(&name);
    let repo_path = repo
        .split_once('/')
        .map(|(_, p)| p)
        .unwrap_or(repo)
        .to_string();
    let shown_tag = split_name(&name)
        .2
        .or(split_name(&name).1)
        .unwrap_or("latest")
        .to_string();
    let (tx, rx) = mpsc::channel::<Chunk>(64);
    struct Seen {
        started: bool,
        layers: Vec<String>,
    }
    let seen = Arc::new(Mutex::new(Seen {
        started: false,
        layers: Vec::new(),
    }));
    let progress = {
        let (tx, seen) = (tx.clone(), seen.clone());
        let header = line(&json!({"status": format!("Pulling from {repo_path}"), "id": shown_tag}));
        Arc::new(move |p: &Progress| {
            if p.kind != "layer" {
                return;
            }
            let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
            if !s.started {
                s.started = true;
                let _ = tx.try_send(Ok(header.clone()));
            }
            let id = short_id(&p.id);
            // Layers fetched now end with "Pull complete"; those present stay "Already exists".
            if p.status != "exists" && !s.layers.contains(&id) {
                s.layers.push(id.clone());
            }
            let l = match p.status {
                "waiting" => progress_line("Pulling fs layer", &id, None),
                "downloading" => progress_line("Downloading", &id, Some((p.offset, p.total))),
                "done" => progress_line("Download complete", &id, None),
                "exists" => progress_line("Already exists", &id, None),
                _ => return,
            };
            let _ = tx.try_send(Ok(l));
        })
    };
    let opts = PullOptions {
        mirrors: api.state.registries().mirrors(&host, &client),
        client,
        platform,
        unpack: true,
        concurrency: 0,
        progress: Some(progress),
    };
    let (store, ctx) = (api.state.store().clone(), api.ctx());
    let familiar_name = familiar(&name);
    tokio::spawn(async move {
        let res = tokio::task::spawn_blocking(move || {
            let before = store.image(&ctx, &name).ok().map(|i| i.target.digest);
            berth_store::pull::pull(&store, &ctx, &name, &opts).map(|r| (before, r))
        })
        .await;
        let msg: Result<Vec<Bytes>, ApiError> = match res {
            Err(e) => Err(ApiError::internal(format!("pull failed: {e}"))),
            Ok(Err(e)) => Err(pull_error(&familiar_name, e)),
            Ok(Ok((before, rep))) => {
                services::images::publish_image(NAMESPACE, &rep.image);
                let mut lines = Vec::new();
                let s = seen.lock().unwrap_or_else(|e| e.into_inner());
                if !s.started {
                    lines.push(line(
                        &json!({"status": format!("Pulling from {repo_path}"), "id": shown_tag}),
                    ));
                }
                for id in &s.layers {
                    lines.push(progress_line("Pull complete", id, None));
                }
                lines.push(line(
                    &json!({"status": format!("Digest: {}", rep.image.target.digest)}),
                ));
                let status = if before.as_ref() == Some(&rep.image.target.digest) {
                    format!("Status: Image is up to date for {familiar_name}")
                } else {
                    format!("Status: Downloaded newer image for {familiar_name}")
                };
                lines.push(line(&json!({ "status": status })));
                Ok(lines)
            }
        };
        match msg {
            Err(e) => {
                let _ = tx.send(Err(e)).await;
            }
            Ok(lines) => {
                for l in lines {
                    if tx.send(Ok(l)).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = tokio::task::spawn_blocking(crate::daemon::trim_heap).await;
    });
    server::stream(rx, "application/json", true).await
}

/// A pull's error in dockerd's words where it has them (a missing tag).
fn pull_error(name: &str, e: StoreError) -> ApiError {
    let e: ApiError = e.into();
    if e.status == StatusCode::NOT_FOUND && !e.message.contains("no manifest for platform") {
        return ApiError::not_found(format!("manifest for {name} not found: {}", e.message));
    }
    e
}

/// `POST /images/{name}/push?tag=`: pushes the local `name:tag`, with dockerd's progress.
pub async fn push(api: &Api, req: Req, name: &str) -> Reply {
    let tag = req.q("tag").unwrap_or("").to_string();
    let (_, t, d) = split_name(name);
    let reference = if !tag.is_empty() {
        format!("{name}:{tag}")
    } else if t.is_some() || d.is_some() {
        name.to_string()
    } else {
        return Err(ApiError::unsupported(
            "pushing every tag of a repository (docker push --all-tags)",
        ));
    };
    let full = normalize_name(&reference).map_err(invalid_reference)?;
    let host = registry_of(&full)?;
    let client = client_options(api, &host, registry_auth(&req)?);
    let (store, ctx) = (api.state.store().clone(), api.ctx());
    let rec = {
        let (store, ctx, full) = (store.clone(), ctx.clone(), full.clone());
        blocking(move || match store.image(&ctx, &full) {
            Ok(r) => Ok(r),
            Err(e) if e.is_not_found() => Err(ApiError::not_found(format!(
                "An image does not exist locally with the tag: {}",
                familiar(split_name(&full).0)
            ))),
            Err(e) => Err(e.into()),
        })
        .await?
    };
    let (repo, rtag, _) = split_name(&full);
    let shown_tag = rtag.unwrap_or("latest").to_string();
    let (tx, rx) = mpsc::channel::<Chunk>(64);
    let _ = tx
        .send(Ok(line(&json!({
            "status": format!("The push refers to repository [{}]", familiar(repo))
        }))))
        .await;
    let progress = {
        let tx = tx.clone();
        let prepared = Arc::new(Mutex::new(BTreeSet::new()));
        Arc::new(move |p: &Progress| {
            if p.kind != "layer" {
                return;
            }
            let id = short_id(&p.id);
            if prepared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.clone())
            {
                let _ = tx.try_send(Ok(progress_line("Preparing", &id, None)));
            }
            let l = match p.status {
                "uploading" => progress_line("Pushing", &id, Some((p.offset, p.total))),
                "done" => progress_line("Pushed", &id, None),
                "exists" => progress_line("Layer already exists", &id, None),
                "mounted" => progress_line("Mounted from another repository", &id, None),
                _ => return,
            };
            let _ = tx.try_send(Ok(l));
        })
    };
    // A pulled index keeps only the host's manifests: push the host's, as dockerd 20.10 does.
    let platform =
        (media_kind(&rec.target.media_type) == Some(MediaKind::Index)).then(Platform::host);
    let opts = PushOptions {
        client,
        platform,
        concurrency: 0,
        chunk_size: 0,
        progress: Some(progress),
    };
    tokio::spawn(async move {
        let res = tokio::task::spawn_blocking(move || {
            berth_store::push::push(&store, &ctx, &full, None, &opts)
        })
        .await;
        let msg = match res {
            Err(e) => Err(ApiError::internal(format!("push failed: {e}"))),
            Ok(Err(e)) => Err(ApiError::from(e)),
            Ok(Ok(rep)) => Ok(rep),
        };
        match msg {
            Err(e) => {
                let _ = tx.send(Err(e)).await;
            }
            Ok(rep) => {
                if let Some(t) = rep.target {
                    let _ = tx
                        .send(Ok(line(&json!({"status": format!(
                            "{shown_tag}: digest: {} size: {}", t.digest, t.size
                        )}))))
                        .await;
                    let _ = tx
                        .send(Ok(line(&json!({
                            "progressDetail": {},
                            "aux": {"Tag": shown_tag, "Digest": t.digest.to_string(), "Size": t.size},
                        }))))
                        .await;
                }
            }
        }
    });
    server::stream(rx, "application/json", true).await
}

/// The sending end of a streamed answer as a blocking `Write`, in chunks of ~1 MiB.
struct ChunkWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

const CHUNK: usize = 1 << 20;

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let b = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(Bytes::from(b)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// `GET /images/{name}/get` and `GET /images/get?names=...`: `docker save`, a tar streamed as
/// it is written (an OCI image layout with a `docker save` manifest.json beside it).
pub async fn save(api: &Api, req: Req, name: Option<&str>) -> Reply {
    let wanted: Vec<String> = match name {
        Some(n) => vec![n.to_string()],
        None => req.q_all("names"),
    };
    if wanted.is_empty() {
        return Err(ApiError::bad_request("no image names given"));
    }
    let (store, ctx) = (api.state.store().clone(), api.ctx());
    let names = {
        let (store, ctx) = (store.clone(), ctx.clone());
        blocking(move || {
            let mut names = Vec::new();
            for w in &wanted {
                let (img, rec) = find(&store, &ctx, w)?;
                match rec {
                    Some(r) => names.push(r.name),
                    None => names.extend(img.records.iter().map(|r| r.name.clone())),
                }
            }
            names.dedup();
            Ok(names)
        })
        .await?
    };
    let (tx, rx) = mpsc::channel::<Chunk>(4);
    tokio::task::spawn_blocking(move || {
        let mut w = ChunkWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let opts = ExportOptions {
            platform: Some(Platform::host()),
            docker_manifest: true,
        };
        let res = store
            .export(&ctx, &names, &mut w, &opts)
            .map_err(ApiError::from)
            .and_then(|()| {
                w.flush()
                    .map_err(|e| ApiError::internal(format!("writing the archive: {e}")))
            });
        if let Err(e) = res {
            let _ = tx.blocking_send(Err(e));
        }
    });
    server::stream(rx, "application/x-tar", false).await
}

/// `POST /images/load`: imports a `docker save` or OCI archive from the body (streamed to
/// the store, unpacked for the host) and answers with dockerd's "Loaded image" lines as a
/// chunked JSON stream. A bad archive is an error answer (400) and leaves no image.
pub async fn load(api: &Api, req: Req) -> Reply {
    let _quiet = req.q_bool("quiet")?;
    let reader = req.body_reader();
    let (store, ctx) = (api.state.store().clone(), api.ctx());
    let (tx, rx) = mpsc::channel::<Chunk>(16);
    tokio::spawn(async move {
        let res = tokio::task::spawn_blocking(move || {
            let opts = ImportOptions {
                base_name: None,
                unpack: true,
                platform: None,
            };
            let r = store.import(&ctx, reader, &opts);
            crate::daemon::trim_heap();
            r
        })
        .await;
        let images = match res {
            Err(e) => Err(ApiError::internal(format!("load failed: {e}"))),
            Ok(r) => r.map_err(ApiError::from),
        };
        match images {
            Err(e) => {
                let _ = tx.send(Err(e)).await;
            }
            Ok(images) => {
                for i in &images {
                    services::images::publish_image(NAMESPACE, i);
                    let text = match split_name(&i.name) {
                        (_, Some(_), None) => format!("Loaded image: {}\n", familiar(&i.name)),
                        _ => format!("Loaded image ID: {}\n", i.target.digest),
                    };
                    if tx.send(Ok(line(&json!({ "stream": text })))).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    server::stream(rx, "application/json", true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_and_familiarise_as_docker_prints_them() {
        assert_eq!(
            split_name("docker.io/library/busybox:latest"),
            ("docker.io/library/busybox", Some("latest"), None)
        );
        assert_eq!(
            split_name("127.0.0.1:5000/a/b@sha256:00"),
            ("127.0.0.1:5000/a/b", None, Some("sha256:00"))
        );
        assert_eq!(
            split_name("127.0.0.1:5000/a"),
            ("127.0.0.1:5000/a", None, None)
        );
        assert_eq!(
            familiar("docker.io/library/busybox:latest"),
            "busybox:latest"
        );
        assert_eq!(familiar("docker.io/user/app:1"), "user/app:1");
        assert_eq!(familiar("127.0.0.1:5000/x:1"), "127.0.0.1:5000/x:1");
        assert_eq!(
            familiar("docker.io/library/busybox@sha256:00"),
            "busybox@sha256:00"
        );
    }

    #[test]
    fn reference_globs_stay_within_a_component() {
        assert!(glob("busybox", "busybox"));
        assert!(glob("busy*", "busybox"));
        assert!(glob("*:latest", "busybox:latest"));
        assert!(!glob("*", "a/b"));
        assert!(glob("a/*", "a/b"));
        assert!(!glob("busybox", "busybox:latest"));
    }

    #[test]
    fn registry_auth_decodes_dockers_header() {
        use base64::Engine;
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE.encode(s);
        assert!(decode_auth(&enc("{}")).unwrap().is_none());
        let c = decode_auth(&enc(r#"{"username":"u","password":"p"}"#))
            .unwrap()
            .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p"));
        let auth = base64::engine::general_purpose::STANDARD.encode("u2:p2");
        let c = decode_auth(&enc(&format!(r#"{{"auth":"{auth}"}}"#)))
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "u2");
        let e = decode_auth(&enc(r#"{"identitytoken":"t"}"#)).unwrap_err();
        assert!(e.message.contains("identitytoken"), "{}", e.message);
        assert!(decode_auth("%%%").is_err());
    }

    #[test]
    fn the_progress_bar_has_dockers_shape() {
        let b = progress_bar(50, 100);
        assert!(b.starts_with("[=========================>"), "{b}");
        assert!(b.ends_with("50B/100B"), "{b}");
    }
}
