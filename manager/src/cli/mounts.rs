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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path};

use anyhow::{anyhow, bail, Context, Result};
use berth_proto::berth::services::volumes::v1 as vpb;
use berth_proto::berth::services::volumes::v1::volumes_client::VolumesClient;
use serde_json::{json, Value};

use super::{rpc_error, Env};
use crate::tasks::volumes::{ANNOTATION_COPY_UP, LABEL_ANONYMOUS, LABEL_VOLUMES};

/// One mount asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Req {
    /// A volume: named, or anonymous (`name: None`).
    Volume {
        /// Its name; `None` for a new anonymous volume.
        name: Option<String>,
        /// Where in the container.
        dst: String,
        /// Read-only.
        ro: bool,
        /// Fill it from the image when empty (not with `nocopy`).
        copy: bool,
        /// Labels for a volume this run creates (`--mount volume-label=`).
        labels: BTreeMap<String, String>,
        /// Driver options for a volume this run creates (`--mount volume-opt=`).
        opts: BTreeMap<String, String>,
    },
    /// A bind of a host path.
    Bind {
        /// Host path (absolute, must exist).
        src: String,
        /// Where in the container.
        dst: String,
        /// Read-only.
        ro: bool,
        /// Propagation (`rprivate`, `shared`, ...), if given.
        propagation: Option<String>,
    },
    /// A tmpfs.
    Tmpfs {
        /// Where in the container.
        dst: String,
        /// Mount options (`size=…`, `mode=…`, `ro`).
        options: Vec<String>,
    },
}

impl Req {
    /// The destination.
    pub fn dst(&self) -> &str {
        match self {
            Req::Volume { dst, .. } | Req::Bind { dst, .. } | Req::Tmpfs { dst, .. } => dst,
        }
    }
}

const PROPAGATIONS: &[&str] = &[
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

/// Docker's rule for a local volume's name: `[a-zA-Z0-9][a-zA-Z0-9_.-]+` (berthd checks too).
pub fn validate_volume_name(name: &str) -> Result<()> {
    let ok = name.len() >= 2
        && name.len() <= 255
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        bail!(
            "volume name {name:?} is invalid: it must match [a-zA-Z0-9][a-zA-Z0-9_.-]+ \
             (a host path must be absolute)"
        );
    }
    Ok(())
}

/// A container path: absolute, not `/`, no `..`, no comma (the copy-up list uses commas).
fn check_dst(dst: &str) -> Result<()> {
    let p = Path::new(dst);
    if !p.is_absolute() {
        bail!("mount destination {dst:?} must be an absolute path");
    }
    if p.components().all(|c| c == Component::RootDir) {
        bail!("mount destination {dst:?} cannot be /");
    }
    if p.components().any(|c| c == Component::ParentDir) || dst.contains(',') {
        bail!("mount destination {dst:?} must not contain \"..\" or a comma");
    }
    Ok(())
}

/// `-v SRC:DST[:OPTS]` or `-v DST[:OPTS]` (an anonymous volume). SRC is a host path when
/// absolute, else a volume name. OPTS: `ro`, `rw`, `nocopy`, a propagation, `z`/`Z` (ignored).
pub fn parse_volume_flag(s: &str) -> Result<Req> {
    let what = || format!("-v {s:?}");
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [d] => (None, *d, ""),
        [a, b] if !b.starts_with('/') => (None, *a, *b),
        [a, b] => (Some(*a), *b, ""),
        [a, b, o] => (Some(*a), *b, *o),
        _ => bail!("{}: expected [SRC:]DST[:OPTIONS]", what()),
    };
    check_dst(dst).with_context(what)?;
    let (mut ro, mut copy, mut propagation) = (false, true, None);
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => ro = true,
            "rw" => ro = false,
            "nocopy" => copy = false,
            "z" | "Z" => {}
            p if PROPAGATIONS.contains(&p) => propagation = Some(p.to_string()),
            _ => bail!(
                "{}: unknown option {o:?} (ro, rw, nocopy, or a propagation)",
                what()
            ),
        }
    }
    match src {
        Some(src) if src.starts_with('/') => {
            if !copy {
                bail!("{}: nocopy is for volumes, not binds", what());
            }
            Ok(Req::Bind {
                src: src.to_string(),
                dst: dst.to_string(),
                ro,
                propagation,
            })
        }
        src => {
            if let Some(n) = src {
                validate_volume_name(n).with_context(what)?;
            }
            if propagation.is_some() {
                bail!("{}: a propagation is for binds, not volumes", what());
            }
            Ok(Req::Volume {
                name: src.map(str::to_string),
                dst: dst.to_string(),
                ro,
                copy,
                labels: BTreeMap::new(),
                opts: BTreeMap::new(),
            })
        }
    }
}

fn flag_bool(what: &str, key: &str, v: Option<&str>) -> Result<bool> {
    match v {
        None | Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(v) => bail!("{what}: {key}={v:?} is not true or false"),
    }
}

fn key_value(what: &str, key: &str, v: Option<&str>) -> Result<(String, String)> {
    let v = v.ok_or_else(|| anyhow!("{what}: {key} needs a value"))?;
    let (k, val) = v.split_once('=').unwrap_or((v, ""));
    if k.is_empty() {
        bail!("{what}: {key}={v:?} has no key");
    }
    Ok((k.to_string(), val.to_string()))
}

/// `--mount type=volume|bind|tmpfs,source=…,target=…[,readonly][,volume-nocopy]
/// [,volume-label=k=v][,volume-opt=k=v][,bind-propagation=…][,tmpfs-size=…][,tmpfs-mode=…]`
/// (Docker's syntax; `type` defaults to volume). The older `--mount SRC:DST[:ro]` is a bind.
pub fn parse_mount_flag(s: &str) -> Result<Req> {
    let what = format!("--mount {s:?}");
    if !s.contains('=') {
        let r = parse_volume_flag(s).map_err(|e| anyhow!("{what}: {e:#}"))?;
        if !matches!(r, Req::Bind { .. }) {
            bail!("{what}: expected type=…,source=…,target=… or SRC:DST[:ro] with an absolute SRC");
        }
        return Ok(r);
    }
    let mut kind = "volume".to_string();
    let (mut src, mut dst) = (None::<String>, None::<String>);
    let (mut ro, mut copy) = (false, true);
    let (mut labels, mut opts) = (BTreeMap::new(), BTreeMap::new());
    let mut propagation = None;
    let mut tmpfs = Vec::new();
    let mut only: Vec<(&str, &str)> = Vec::new();
    for field in s.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field, None),
        };
        let need = |v: Option<&str>| -> Result<String> {
            v.filter(|v| !v.is_empty())
                .map(str::to_string)
                .ok_or_else(|| anyhow!("{what}: {k} needs a value"))
        };
        match k {
            "type" => kind = need(v)?,
            "source" | "src" => src = Some(need(v)?),
            "target" | "destination" | "dst" => dst = Some(need(v)?),
            "readonly" | "ro" => ro = flag_bool(&what, k, v)?,
            "volume-nocopy" => {
                copy = !flag_bool(&what, k, v)?;
                only.push((k, "volume"));
            }
            "volume-label" => {
                let (a, b) = key_value(&what, k, v)?;
                labels.insert(a, b);
                only.push((k, "volume"));
            }
            "volume-opt" => {
                let (a, b) = key_value(&what, k, v)?;
                opts.insert(a, b);
                only.push((k, "volume"));
            }
            "volume-driver" => {
                if need(v)? != "local" {
                    bail!("{what}: only the local volume driver is supported");
                }
                only.push((k, "volume"));
            }
            "bind-propagation" => {
                let p = need(v)?;
                if !PROPAGATIONS.contains(&p.as_str()) {
                    bail!("{what}: bind-propagation {p:?} is not one of {PROPAGATIONS:?}");
                }
                propagation = Some(p);
                only.push((k, "bind"));
            }
            "tmpfs-size" => {
                let n = super::run::parse_size(&need(v)?).map_err(|e| anyhow!("{what}: {e}"))?;
                tmpfs.push(format!("size={n}"));
                only.push((k, "tmpfs"));
            }
            "tmpfs-mode" => {
                let m = need(v)?;
                u32::from_str_radix(&m, 8)
                    .map_err(|_| anyhow!("{what}: tmpfs-mode {m:?} is not an octal mode"))?;
                tmpfs.push(format!("mode={m}"));
                only.push((k, "tmpfs"));
            }
            "consistency" | "bind-nonrecursive" => {}
            _ => bail!("{what}: unknown field {k:?}"),
        }
    }
    if let Some((k, t)) = only.iter().find(|(_, t)| *t != kind) {
        bail!("{what}: {k} is only for type={t}");
    }
    let dst = dst.ok_or_else(|| anyhow!("{what}: target is required"))?;
    check_dst(&dst).with_context(|| what.clone())?;
    match kind.as_str() {
        "bind" => {
            let src = src.ok_or_else(|| anyhow!("{what}: source is required for a bind"))?;
            if !src.starts_with('/') {
                bail!("{what}: a bind's source {src:?} must be an absolute path");
            }
            Ok(Req::Bind {
                src,
                dst,
                ro,
                propagation,
            })
        }
        "volume" => {
            if let Some(n) = &src {
                validate_volume_name(n).with_context(|| what.clone())?;
            }
            Ok(Req::Volume {
                name: src,
                dst,
                ro,
                copy,
                labels,
                opts,
            })
        }
        "tmpfs" => {
            if src.is_some() {
                bail!("{what}: a tmpfs has no source");
            }
            if ro {
                tmpfs.push("ro".into());
            }
            Ok(Req::Tmpfs {
                dst,
                options: tmpfs,
            })
        }
        t => bail!("{what}: type {t:?} is not volume, bind or tmpfs"),
    }
}

/// `--tmpfs /path[:opt,opt]` (`size=64m`, `mode=1777`, ...).
pub fn parse_tmpfs_flag(s: &str) -> Result<Req> {
    let what = || format!("--tmpfs {s:?}");
    let (dst, opts) = s.split_once(':').unwrap_or((s, ""));
    check_dst(dst).with_context(what)?;
    let mut options = Vec::new();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        if o.contains(char::is_whitespace) {
            bail!("{}: option {o:?} contains whitespace", what());
        }
        options.push(o.to_string());
    }
    Ok(Req::Tmpfs {
        dst: dst.to_string(),
        options,
    })
}

/// Every mount of a run, in order: the flags, then an anonymous volume for each image VOLUME
/// (`cfg` is the image config's `config`) that no flag covers. Duplicate destinations are
/// refused.
pub fn plan(
    volumes: &[String],
    mounts: &[String],
    tmpfs: &[String],
    cfg: &Value,
) -> Result<Vec<Req>> {
    let mut reqs = Vec::new();
    for v in volumes {
        reqs.push(parse_volume_flag(v)?);
    }
    for m in mounts {
        reqs.push(parse_mount_flag(m)?);
    }
    for t in tmpfs {
        reqs.push(parse_tmpfs_flag(t)?);
    }
    let clean = |d: &str| d.trim_end_matches('/').to_string();
    let mut seen = HashSet::new();
    for r in &reqs {
        if !seen.insert(clean(r.dst())) {
            bail!("duplicate mount point {}", r.dst());
        }
    }
    if let Some(vols) = cfg["Volumes"].as_object() {
        for dst in vols.keys() {
            if check_dst(dst).is_err() || !seen.insert(clean(dst)) {
                continue;
            }
            reqs.push(Req::Volume {
                name: None,
                dst: dst.clone(),
                ro: false,
                copy: true,
                labels: BTreeMap::new(),
                opts: BTreeMap::new(),
            });
        }
    }
    Ok(reqs)
}

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
    let mode = if ro { "ro" } else { "rw" };
    match v.options.get("type").map(String::as_str) {
        None => {
            if v.mountpoint.is_empty() {
                bail!("volume {:?} has no mountpoint", v.name);
            }
            Ok(
                json!({"destination": dst, "type": "bind", "source": v.mountpoint, "options": ["rbind", mode]}),
            )
        }
        Some("tmpfs") => {
            let mut opts: Vec<String> = vec!["nosuid".into(), "nodev".into()];
            opts.extend(
                v.options
                    .get("o")
                    .into_iter()
                    .flat_map(|o| o.split(','))
                    .filter(|o| !o.is_empty())
                    .map(str::to_string),
            );
            opts.push(mode.into());
            Ok(json!({"destination": dst, "type": "tmpfs", "source": "tmpfs", "options": opts}))
        }
        Some(_) => {
            let dev = v
                .options
                .get("device")
                .with_context(|| format!("volume {:?} has no device", v.name))?;
            Ok(
                json!({"destination": dst, "type": "bind", "source": dev, "options": ["rbind", mode]}),
            )
        }
    }
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

    fn vol(name: Option<&str>, dst: &str, ro: bool, copy: bool) -> Req {
        Req::Volume {
            name: name.map(str::to_string),
            dst: dst.into(),
            ro,
            copy,
            labels: BTreeMap::new(),
            opts: BTreeMap::new(),
        }
    }

    fn err(r: Result<Req>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn volume_names_follow_dockers_rule() {
        for ok in ["ab", "data", "a.b-c_d", "0x"] {
            validate_volume_name(ok).unwrap();
        }
        for bad in ["", "a", "..", "../x", "a/b", ".x", "-x", "a b", "x:y"] {
            let e = validate_volume_name(bad).unwrap_err().to_string();
            assert!(e.contains("is invalid"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn dash_v() {
        assert_eq!(
            parse_volume_flag("data:/d").unwrap(),
            vol(Some("data"), "/d", false, true)
        );
        assert_eq!(
            parse_volume_flag("data:/d:ro,nocopy").unwrap(),
            vol(Some("data"), "/d", true, false)
        );
        assert_eq!(
            parse_volume_flag("/d").unwrap(),
            vol(None, "/d", false, true)
        );
        assert_eq!(
            parse_volume_flag("/d:ro").unwrap(),
            vol(None, "/d", true, true)
        );
        assert_eq!(
            parse_volume_flag("/host:/d:rw,rshared").unwrap(),
            Req::Bind {
                src: "/host".into(),
                dst: "/d".into(),
                ro: false,
                propagation: Some("rshared".into())
            }
        );
        assert!(err(parse_volume_flag("../x:/d")).contains("volume name \"../x\" is invalid"));
        assert!(err(parse_volume_flag("x:rel")).contains("absolute"));
        assert!(err(parse_volume_flag("x:/")).contains("cannot be /"));
        assert!(err(parse_volume_flag("x:/a/../b")).contains(".."));
        assert!(err(parse_volume_flag("x:/d:bogus")).contains("\"bogus\""));
        assert!(err(parse_volume_flag("/h:/d:nocopy")).contains("nocopy"));
        assert!(err(parse_volume_flag("a:/b:ro:x")).contains("expected"));
    }

    #[test]
    fn dash_dash_mount() {
        assert_eq!(
            parse_mount_flag("type=volume,src=data,dst=/d,readonly").unwrap(),
            vol(Some("data"), "/d", true, true)
        );
        assert_eq!(
            parse_mount_flag("target=/d,volume-nocopy").unwrap(),
            vol(None, "/d", false, false)
        );
        let Req::Volume { labels, opts, .. } = parse_mount_flag(
            "source=v1,target=/d,volume-label=a=b,volume-opt=type=tmpfs,volume-opt=device=tmpfs",
        )
        .unwrap() else {
            panic!("not a volume")
        };
        assert_eq!(labels.get("a").map(String::as_str), Some("b"));
        assert_eq!(opts.get("type").map(String::as_str), Some("tmpfs"));
        assert_eq!(
            parse_mount_flag("type=bind,source=/h,target=/d,ro=true,bind-propagation=rprivate")
                .unwrap(),
            Req::Bind {
                src: "/h".into(),
                dst: "/d".into(),
                ro: true,
                propagation: Some("rprivate".into())
            }
        );
        assert_eq!(
            parse_mount_flag("type=tmpfs,destination=/t,tmpfs-size=1m,tmpfs-mode=1770").unwrap(),
            Req::Tmpfs {
                dst: "/t".into(),
                options: vec!["size=1048576".into(), "mode=1770".into()]
            }
        );
        // The older SRC:DST[:ro] form is a bind.
        assert_eq!(
            parse_mount_flag("/h:/d:ro").unwrap(),
            Req::Bind {
                src: "/h".into(),
                dst: "/d".into(),
                ro: true,
                propagation: None
            }
        );
        assert!(err(parse_mount_flag("rel:/x")).contains("--mount"));
        assert!(err(parse_mount_flag("type=bind,src=rel,dst=/d")).contains("absolute"));
        assert!(err(parse_mount_flag("type=bind,dst=/d")).contains("source is required"));
        assert!(err(parse_mount_flag("type=volume,src=../x,dst=/d")).contains("is invalid"));
        assert!(err(parse_mount_flag("type=nfs,dst=/d")).contains("\"nfs\""));
        assert!(err(parse_mount_flag("type=volume,src=v")).contains("target is required"));
        assert!(
            err(parse_mount_flag("type=bind,src=/h,dst=/d,tmpfs-size=1")).contains("type=tmpfs")
        );
        assert!(err(parse_mount_flag("dst=/d,wat=1")).contains("\"wat\""));
        assert!(err(parse_mount_flag("dst=/d,ro=maybe")).contains("maybe"));
    }

    #[test]
    fn dash_dash_tmpfs() {
        assert_eq!(
            parse_tmpfs_flag("/t:size=64m,mode=1777").unwrap(),
            Req::Tmpfs {
                dst: "/t".into(),
                options: vec!["size=64m".into(), "mode=1777".into()]
            }
        );
        assert!(err(parse_tmpfs_flag("t")).contains("absolute"));
    }

    #[test]
    fn the_image_volumes_become_anonymous_volumes_unless_covered() {
        let cfg = json!({"Volumes": {"/data": {}, "/cache/": {}, "rel": {}}});
        let p = plan(&["v1:/data".into()], &[], &[], &cfg).unwrap();
        assert_eq!(
            p,
            vec![
                vol(Some("v1"), "/data", false, true),
                vol(None, "/cache/", false, true)
            ]
        );
        let e = plan(&["v1:/d".into()], &["type=tmpfs,dst=/d/".into()], &[], &cfg).unwrap_err();
        assert!(e.to_string().contains("duplicate mount point /d/"), "{e}");
    }

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
