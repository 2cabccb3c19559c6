//! What a run asks to mount, as Docker reads it: `-v`, `--mount` and `--tmpfs` (also the
//! Docker API's Binds, Mounts and Tmpfs, which use the same syntax) and the image's VOLUME
//! list, parsed and checked before anything is made. Shared by `berth run` (which makes the
//! volumes over the API, `cli/mounts.rs`) and the Docker API front (which makes them in the
//! store).

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

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
                let n = super::parse_size(&need(v)?).map_err(|e| anyhow!("{what}: {e}"))?;
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

/// The spec mount of volume `name` at `dst`: a bind of its data dir (`mountpoint`, for a
/// volume without options), a tmpfs (`type=tmpfs`, `o=` its options) or a bind of its
/// `device`, read-only with `ro`. Shared by `berth run` and the Docker API.
pub fn volume_mount<'a>(
    name: &str,
    options: impl Fn(&str) -> Option<&'a str>,
    mountpoint: &str,
    dst: &str,
    ro: bool,
) -> Result<Value> {
    let mode = if ro { "ro" } else { "rw" };
    match options("type") {
        None => {
            if mountpoint.is_empty() {
                bail!("volume {name:?} has no mountpoint");
            }
            Ok(
                json!({"destination": dst, "type": "bind", "source": mountpoint, "options": ["rbind", mode]}),
            )
        }
        Some("tmpfs") => {
            let mut opts: Vec<String> = vec!["nosuid".into(), "nodev".into()];
            opts.extend(
                options("o")
                    .into_iter()
                    .flat_map(|o| o.split(','))
                    .filter(|o| !o.is_empty())
                    .map(str::to_string),
            );
            opts.push(mode.into());
            Ok(json!({"destination": dst, "type": "tmpfs", "source": "tmpfs", "options": opts}))
        }
        Some(_) => {
            let dev =
                options("device").with_context(|| format!("volume {name:?} has no device"))?;
            Ok(
                json!({"destination": dst, "type": "bind", "source": dev, "options": ["rbind", mode]}),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
