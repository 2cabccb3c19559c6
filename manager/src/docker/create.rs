//! `POST /containers/create`: Docker's Config, HostConfig and NetworkingConfig become a
//! container record in the `moby` namespace: the OCI spec (`crate::runspec`, shared with
//! `berth run`), the network labels berthd reads when it creates the task, the volumes and
//! binds as spec mounts, and a snapshot of the image's layers as its rootfs.
//!
//! Every field the docker CLI and docker-compose send is either honoured or, when it asks for
//! something berthd does not do, refused with a 400 naming it: a field left at its zero
//! value (false, 0, "", null, [], {}) asks for nothing and passes.

use std::collections::{BTreeMap, HashMap};

use berth_store::metadata::{AnyValue, Container};
use http::StatusCode;
use serde_json::{json, Map, Value};

use super::errors::ApiError;
use super::lifecycle::{Meta, NAME_LABEL};
use super::server::{json as json_reply, Reply, Req};
use super::{blocking, images, Api};
use crate::runspec::mounts::Req as MountReq;
use crate::runspec::{self, RunOptions, Ulimit};
use crate::tasks::volumes::{ANNOTATION_COPY_UP, LABEL_ANONYMOUS, LABEL_VOLUMES};

/// The spec's type URL, as containerd's clients send it.
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// Config fields berthd reads.
const CONFIG_FIELDS: &[&str] = &[
    "Hostname",
    "User",
    "Env",
    "Cmd",
    "Image",
    "Volumes",
    "WorkingDir",
    "Entrypoint",
    "Labels",
    "StopSignal",
    "StopTimeout",
    "Tty",
    "ExposedPorts",
    // What the client attaches to is its business (the attach call says it again).
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "StdinOnce",
    // The process gets a stdin berthd writes (`super::stdin`).
    "OpenStdin",
    // Run by berthd (`super::health`).
    "Healthcheck",
    "ArgsEscaped",
    "OnBuild",
    "Shell",
];

/// HostConfig fields berthd reads.
const HOST_FIELDS: &[&str] = &[
    "Binds",
    "Mounts",
    "Tmpfs",
    "PortBindings",
    "PublishAllPorts",
    "NetworkMode",
    "RestartPolicy",
    "AutoRemove",
    "Memory",
    "MemorySwap",
    "NanoCpus",
    "CpuShares",
    "CpusetCpus",
    "PidsLimit",
    "CapAdd",
    "CapDrop",
    "ReadonlyRootfs",
    "SecurityOpt",
    "ExtraHosts",
    "Dns",
    "Ulimits",
    "LogConfig",
    "ConsoleSize",
    "Privileged",
    "Init",
    // Resolved with the user at start (`crate::tasks::user`).
    "GroupAdd",
    // Defaults that ask for what berthd does anyway.
    "IpcMode",
    "PidMode",
    "UTSMode",
    "CgroupnsMode",
    "Isolation",
    "UsernsMode",
    "ContainerIDFile",
    "VolumeDriver",
    "MemorySwappiness",
    "OomKillDisable",
];

/// Whether `v` asks for nothing.
pub(super) fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty() || o.values().all(is_zero),
    }
}

/// Refuses a field outside `known` that asks for something.
pub(super) fn only(
    section: &str,
    obj: &Map<String, Value>,
    known: &[&str],
) -> Result<(), ApiError> {
    for (k, v) in obj {
        if !known.contains(&k.as_str()) && !is_zero(v) {
            return Err(ApiError::unsupported(format!("{section}{k}")));
        }
    }
    Ok(())
}

/// Checks fields whose defaults are fine but whose other values berthd does not do.
fn defaults_only(host: &Value) -> Result<(), ApiError> {
    for (k, ok) in [
        ("IpcMode", &["", "private", "shareable"][..]),
        ("PidMode", &[""][..]),
        ("UTSMode", &[""][..]),
        ("CgroupnsMode", &["", "private", "host"][..]),
        ("Isolation", &["", "default"][..]),
        ("UsernsMode", &["", "host"][..]),
        ("VolumeDriver", &["", "local"][..]),
    ] {
        let v = host[k].as_str().unwrap_or("");
        if !ok.contains(&v) {
            return Err(ApiError::unsupported(format!("HostConfig.{k}={v:?}")));
        }
    }
    if let Some(s) = host["MemorySwappiness"].as_i64() {
        if s != -1 {
            return Err(ApiError::unsupported("HostConfig.MemorySwappiness"));
        }
    }
    if host["OomKillDisable"].as_bool() == Some(true) {
        return Err(ApiError::unsupported("HostConfig.OomKillDisable"));
    }
    let log = &host["LogConfig"];
    let ty = log["Type"].as_str().unwrap_or("");
    if !matches!(ty, "" | "json-file" | "local") {
        return Err(ApiError::unsupported(format!(
            "log driver {ty:?} (HostConfig.LogConfig.Type; berthd keeps a size-bounded log file)"
        )));
    }
    if log["Config"].as_object().is_some_and(|c| !c.is_empty()) {
        return Err(ApiError::unsupported(
            "HostConfig.LogConfig.Config (the log's size bound is berthd's)",
        ));
    }
    Ok(())
}

fn strs(v: &Value, what: &str) -> Result<Vec<String>, ApiError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::bad_request(format!("{what}: expected strings")))
            })
            .collect(),
        _ => Err(ApiError::bad_request(format!(
            "{what}: expected a list of strings"
        ))),
    }
}

/// A boolean field (null: false).
fn flag(v: &Value, what: &str) -> Result<bool, ApiError> {
    match v {
        Value::Null => Ok(false),
        Value::Bool(b) => Ok(*b),
        _ => Err(ApiError::bad_request(format!("{what}: expected a boolean"))),
    }
}

fn int(v: &Value, what: &str) -> Result<Option<i64>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("{what}: expected an integer"))),
        _ => Err(ApiError::bad_request(format!(
            "{what}: expected an integer"
        ))),
    }
}

/// Docker's container name rule.
pub fn valid_name(name: &str) -> bool {
    let mut b = name.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() >= 2
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

const ADJECTIVES: &[&str] = &[
    "agile", "brave", "calm", "clever", "crisp", "eager", "fair", "gentle", "happy", "humble",
    "jolly", "keen", "kind", "lucid", "merry", "modest", "nimble", "patient", "proud", "quiet",
    "ready", "sharp", "steady", "swift", "tender", "upbeat", "vivid", "warm", "wise", "zealous",
];
const NAMES: &[&str] = &[
    "ada", "babbage", "boole", "cerf", "church", "curie", "dijkstra", "euler", "fermat", "gauss",
    "hamilton", "hopper", "kahn", "knuth", "lamport", "liskov", "lovelace", "mccarthy", "noether",
    "pascal", "ritchie", "shannon", "thompson", "turing", "wirth", "wozniak",
];

/// A Docker-style `adjective_name` not in `taken`.
pub fn generate_name(taken: &dyn Fn(&str) -> bool) -> String {
    for i in 0.. {
        let base = format!(
            "{}_{}",
            ADJECTIVES[fastrand::usize(..ADJECTIVES.len())],
            NAMES[fastrand::usize(..NAMES.len())]
        );
        let n = if i < 10 {
            base
        } else {
            format!("{base}{}", fastrand::u32(..10_000))
        };
        if !taken(&n) {
            return n;
        }
    }
    unreachable!("the loop returns")
}

/// A new 64-hex container ID.
fn new_id() -> String {
    (0..32)
        .map(|_| format!("{:02x}", fastrand::u8(..)))
        .collect()
}

/// `HostConfig.Mounts` entries as `--mount` values (one parser for both).
fn mount_flag(m: &Value) -> Result<String, ApiError> {
    let ty = m["Type"].as_str().unwrap_or("volume");
    let mut parts = vec![format!("type={ty}")];
    if let Some(s) = m["Source"].as_str().filter(|s| !s.is_empty()) {
        parts.push(format!("source={s}"));
    }
    let target = m["Target"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("HostConfig.Mounts: Target is required"))?;
    parts.push(format!("target={target}"));
    if m["ReadOnly"].as_bool() == Some(true) {
        parts.push("readonly".into());
    }
    if m["VolumeOptions"]["NoCopy"].as_bool() == Some(true) {
        parts.push("volume-nocopy".into());
    }
    if let Some(l) = m["VolumeOptions"]["Labels"].as_object() {
        for (k, v) in l {
            parts.push(format!("volume-label={k}={}", v.as_str().unwrap_or("")));
        }
    }
    if let Some(p) = m["BindOptions"]["Propagation"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        parts.push(format!("bind-propagation={p}"));
    }
    if let Some(s) = m["TmpfsOptions"]["SizeBytes"].as_i64().filter(|s| *s > 0) {
        parts.push(format!("tmpfs-size={s}"));
    }
    if let Some(s) = m["TmpfsOptions"]["Mode"].as_u64().filter(|s| *s > 0) {
        parts.push(format!("tmpfs-mode={s:o}"));
    }
    for k in ["Consistency"] {
        if !is_zero(&m[k]) && m[k] != "default" {
            return Err(ApiError::unsupported(format!("HostConfig.Mounts[].{k}")));
        }
    }
    if !is_zero(&m["VolumeOptions"]["DriverConfig"]) {
        return Err(ApiError::unsupported(
            "HostConfig.Mounts[].VolumeOptions.DriverConfig",
        ));
    }
    Ok(parts.join(","))
}

/// The spec mount of a store volume (data dir, tmpfs, or a device).
fn volume_mount(
    store: &berth_store::Store,
    ctx: &berth_store::Ctx,
    v: &berth_store::metadata::Volume,
    dst: &str,
    ro: bool,
) -> Result<Value, ApiError> {
    let data = if v.options.is_empty() {
        store.volume_data(ctx, &v.name)?.display().to_string()
    } else {
        String::new()
    };
    runspec::mounts::volume_mount(
        &v.name,
        |k| v.options.get(k).map(String::as_str),
        &data,
        dst,
        ro,
    )
    .map_err(|e| ApiError::internal(format!("{e:#}")))
}

/// Volumes made by a create that failed later are removed again.
struct Made<'a> {
    store: &'a berth_store::Store,
    ctx: &'a berth_store::Ctx,
    volumes: Vec<String>,
    snapshot: Option<String>,
    done: bool,
}

impl Drop for Made<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(k) = &self.snapshot {
            let _ = self.store.snapshotter().remove(self.ctx, k);
        }
        for v in &self.volumes {
            let _ = self.store.volume_delete(self.ctx, v);
        }
    }
}

/// The networks part: `runspec::net` flags from NetworkMode, PortBindings, the endpoints'
/// aliases, ExtraHosts and Dns (the container's own names are added by [`Plan::net_flags`]).
fn net_flags(host: &Value, endpoints: &Value) -> Result<runspec::net::NetFlags, ApiError> {
    let mode = match host["NetworkMode"].as_str().unwrap_or("") {
        "" | "default" => "bridge".to_string(),
        m => m.to_string(),
    };
    let mut nets = vec![mode.clone()];
    let mut aliases = Vec::new();
    if let Some(eps) = endpoints.as_object() {
        for (net, ep) in eps {
            if net != &mode && !(mode == "bridge" && net == "default") {
                nets.push(net.clone());
            }
            aliases.extend(strs(&ep["Aliases"], "EndpointsConfig.Aliases")?);
            for k in [
                "IPAMConfig",
                "Links",
                "DriverOpts",
                "MacAddress",
                "IPAddress",
            ] {
                if !is_zero(&ep[k]) {
                    return Err(ApiError::unsupported(format!(
                        "NetworkingConfig.EndpointsConfig.{k}"
                    )));
                }
            }
        }
    }
    aliases.dedup();
    let mut publish = Vec::new();
    if let Some(pb) = host["PortBindings"].as_object() {
        for (port, binds) in pb {
            let list = binds.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                publish.push(port.clone());
            }
            for b in list {
                let ip = b["HostIp"].as_str().unwrap_or("");
                let hp = b["HostPort"].as_str().unwrap_or("");
                let ip = if ip.contains(':') && !ip.starts_with('[') {
                    format!("[{ip}]")
                } else {
                    ip.to_string()
                };
                publish.push(if ip.is_empty() {
                    format!("{hp}:{port}")
                } else {
                    format!("{ip}:{hp}:{port}")
                });
            }
        }
    }
    Ok(runspec::net::NetFlags {
        net: nets,
        publish,
        publish_all: host["PublishAllPorts"].as_bool().unwrap_or(false),
        ip: None,
        network_alias: aliases,
        hostname: None,
        dns: strs(&host["Dns"], "HostConfig.Dns")?,
        add_host: strs(&host["ExtraHosts"], "HostConfig.ExtraHosts")?,
    })
}

/// What a create request asks for, checked and translated before anything is looked up:
/// [`plan`] makes it from the query and the parsed body (pure, so the fuzz target calls it as
/// berthd does), [`Plan::spec`] and [`Plan::attach`] turn it into the OCI spec, the network
/// labels and the mounts once the image's config is known.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The name asked for (valid by Docker's rule), without the leading `/`; `None`: berthd
    /// picks one.
    pub name: Option<String>,
    /// The Config part: the body without HostConfig and NetworkingConfig.
    pub config: Value,
    /// HostConfig (null when not sent).
    pub host: Value,
    /// NetworkingConfig.EndpointsConfig.
    pub endpoints: Value,
    /// Config.Image, not empty.
    pub image: String,
    /// The run options for `runspec::spec`.
    pub opts: RunOptions,
    /// HostConfig.Binds, as `-v` values.
    pub binds: Vec<String>,
    /// HostConfig.Mounts, as `--mount` values.
    pub mounts: Vec<String>,
    /// HostConfig.Tmpfs, as `--tmpfs` values.
    pub tmpfs: Vec<String>,
    /// The network flags, without the container's own names (see [`Plan::net_flags`]).
    pub net: runspec::net::NetFlags,
}

/// Checks the query of `POST /containers/create`: the name (returned without its leading
/// `/`; empty: none asked for) and the platform.
pub fn check_query(name: &str, platform: Option<&str>) -> Result<String, ApiError> {
    let name = name.trim_start_matches('/');
    if !name.is_empty() && !valid_name(name) {
        return Err(ApiError::bad_request(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    if let Some(p) = platform.filter(|p| !p.is_empty()) {
        if !p.starts_with("linux") {
            return Err(ApiError::unsupported(format!("platform {p:?}")));
        }
    }
    Ok(name.to_string())
}

/// Checks a create request (the `name` and `platform` query parameters and the parsed body)
/// and translates it into run options, mount flags and network flags, without looking
/// anything up: every answer is a [`Plan`] or a 4xx naming what was wrong.
pub fn plan(name: &str, platform: Option<&str>, body: &Value) -> Result<Plan, ApiError> {
    let name = check_query(name, platform)?;
    let Some(top) = body.as_object() else {
        return Err(ApiError::bad_request(
            "the request body is not a JSON object",
        ));
    };
    let host = body["HostConfig"].clone();
    let endpoints = body["NetworkingConfig"]["EndpointsConfig"].clone();
    let config: Map<String, Value> = top
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "HostConfig" | "NetworkingConfig"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    only("Config.", &config, CONFIG_FIELDS)?;
    if !host.is_null() && !host.is_object() {
        return Err(ApiError::bad_request("HostConfig: expected an object"));
    }
    let empty = Map::new();
    only(
        "HostConfig.",
        host.as_object().unwrap_or(&empty),
        HOST_FIELDS,
    )?;
    defaults_only(&host)?;
    let config = Value::Object(config);
    super::health::validate(&config["Healthcheck"])?;
    let image = config["Image"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("Config.Image is required"))?
        .to_string();
    let policy = host["RestartPolicy"]["Name"].as_str().unwrap_or("");
    if !matches!(
        policy,
        "" | "no" | "always" | "unless-stopped" | "on-failure"
    ) {
        return Err(ApiError::bad_request(format!(
            "invalid restart policy '{policy}'"
        )));
    }
    if host["RestartPolicy"]["MaximumRetryCount"]
        .as_i64()
        .unwrap_or(0)
        != 0
        && policy != "on-failure"
    {
        return Err(ApiError::bad_request(format!(
            "maximum retry count cannot be used with restart policy '{policy}'"
        )));
    }
    if host["AutoRemove"].as_bool() == Some(true) && !matches!(policy, "" | "no") {
        return Err(ApiError::conflict(
            "Conflicting options: AutoRemove and restart policy",
        ));
    }
    let mut ulimits = Vec::new();
    for u in host["Ulimits"].as_array().into_iter().flatten() {
        ulimits.push(Ulimit {
            name: u["Name"].as_str().unwrap_or("").to_string(),
            soft: u["Soft"].as_u64().unwrap_or(0),
            hard: u["Hard"].as_u64().unwrap_or(0),
        });
    }
    let opts = RunOptions {
        entrypoint: match &config["Entrypoint"] {
            Value::Null => None,
            v => Some(strs(v, "Entrypoint")?),
        },
        cmd: strs(&config["Cmd"], "Cmd")?,
        env: strs(&config["Env"], "Env")?,
        cwd: config["WorkingDir"].as_str().map(str::to_string),
        user: config["User"].as_str().map(str::to_string),
        group_add: strs(&host["GroupAdd"], "HostConfig.GroupAdd")?,
        tty: config["Tty"].as_bool().unwrap_or(false),
        memory: int(&host["Memory"], "HostConfig.Memory")?,
        memory_swap: int(&host["MemorySwap"], "HostConfig.MemorySwap")?,
        cpus: int(&host["NanoCpus"], "HostConfig.NanoCpus")?
            .filter(|n| *n != 0)
            .map(|n| n as f64 / 1e9),
        cpu_shares: int(&host["CpuShares"], "HostConfig.CpuShares")?
            .filter(|n| *n != 0)
            .map(|n| n.max(0) as u64),
        cpuset_cpus: host["CpusetCpus"].as_str().map(str::to_string),
        pids_limit: int(&host["PidsLimit"], "HostConfig.PidsLimit")?,
        security_opt: strs(&host["SecurityOpt"], "HostConfig.SecurityOpt")?,
        cap_add: strs(&host["CapAdd"], "HostConfig.CapAdd")?,
        cap_drop: strs(&host["CapDrop"], "HostConfig.CapDrop")?,
        readonly_rootfs: host["ReadonlyRootfs"].as_bool().unwrap_or(false),
        ulimits,
        privileged: flag(&host["Privileged"], "HostConfig.Privileged")?,
        init: flag(&host["Init"], "HostConfig.Init")?,
    };
    let binds = strs(&host["Binds"], "HostConfig.Binds")?;
    let mounts = host["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(mount_flag)
        .collect::<Result<Vec<_>, _>>()?;
    let tmpfs: Vec<String> = host["Tmpfs"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| match v.as_str().filter(|s| !s.is_empty()) {
            Some(o) => format!("{k}:{o}"),
            None => k.clone(),
        })
        .collect();
    Ok(Plan {
        name: (!name.is_empty()).then_some(name),
        net: net_flags(&host, &endpoints)?,
        config,
        host,
        endpoints,
        image,
        opts,
        binds,
        mounts,
        tmpfs,
    })
}

impl Plan {
    /// The network flags of the container named `name` with short ID `short`: on
    /// user-defined networks it answers to both, as with dockerd (docker-compose looks for the
    /// short ID to know the endpoint is set up).
    pub fn net_flags(&self, name: &str, short: &str) -> runspec::net::NetFlags {
        let mut flags = self.net.clone();
        let mode = flags.net.first().map(String::as_str).unwrap_or("bridge");
        if !matches!(mode, "bridge" | "none" | "host") && !mode.starts_with("container:") {
            flags.network_alias.insert(0, short.to_string());
            flags.network_alias.insert(0, name.to_string());
            flags.network_alias.dedup();
        }
        flags
    }

    /// The OCI spec of container `id` from `image_cfg` (the image config's `config`): runspec's,
    /// with the host name and terminal size asked for.
    pub fn spec(&self, id: &str, image_cfg: &Value) -> Result<Value, ApiError> {
        let (config, host) = (&self.config, &self.host);
        let mut spec = runspec::spec(super::NAMESPACE, id, &self.opts, image_cfg).map_err(|e| {
            ApiError::bad_request(format!("invalid {}: {}", e.field.docker(), e.message))
        })?;
        spec["hostname"] = json!(config["Hostname"]
            .as_str()
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| id.chars().take(12).collect()));
        if self.opts.tty {
            spec["process"]["consoleSize"] = json!({
                "height": host["ConsoleSize"][0].as_u64().filter(|h| *h > 0).unwrap_or(24),
                "width": host["ConsoleSize"][1].as_u64().filter(|w| *w > 0).unwrap_or(80),
            });
        }
        Ok(spec)
    }

    /// Applies `flags` (with a `container:` network already naming the container by ID) to
    /// `spec`, returning the record's network labels, and plans the mounts (the image's
    /// VOLUMEs included).
    pub fn attach(
        &self,
        flags: &runspec::net::NetFlags,
        image_cfg: &Value,
        spec: &mut Value,
    ) -> Result<(HashMap<String, String>, Vec<MountReq>), ApiError> {
        let labels = runspec::net::apply(flags, image_cfg, spec).map_err(|e| {
            ApiError::bad_request(format!("{e:#}").replace("--net ", "network mode "))
        })?;
        let reqs = runspec::mounts::plan(&self.binds, &self.mounts, &self.tmpfs, image_cfg)
            .map_err(|e| ApiError::bad_request(format!("invalid mount config: {e:#}")))?;
        Ok((labels, reqs))
    }
}

/// `POST /containers/create?name=`.
pub async fn create(api: &Api, req: Req) -> Reply {
    // The query is checked before the body is read, the body before anything is looked up.
    let name_q = check_query(req.q("name").unwrap_or(""), req.q("platform"))?;
    let platform = req.q("platform").map(str::to_string);
    let body: Value = req.json().await?;
    let plan = plan(&name_q, platform.as_deref(), &body)?;
    let (config, host, endpoints, opts) = (&plan.config, &plan.host, &plan.endpoints, &plan.opts);
    let image_name = plan.image.clone();
    // One create at a time: the name check and the record must not race.
    let _guard = api.create_lock.lock().await;
    let existing = api.containers().await?;
    let taken = |n: &str| existing.iter().any(|c| Meta::of(c).name == n);
    let name = match plan.name.clone() {
        None => generate_name(&taken),
        Some(name_q) => {
            if let Some(c) = existing.iter().find(|c| Meta::of(c).name == name_q) {
                return Err(ApiError::conflict(format!(
                    "Conflict. The container name \"/{name_q}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                    c.id
                )));
            }
            name_q
        }
    };
    let id = new_id();
    let mut flags = plan.net_flags(&name, &id[..12]);
    let (store, ctx) = (api.state.store().clone(), api.ctx());
    let (img, _) = {
        let (s, c, n) = (store.clone(), ctx.clone(), image_name.clone());
        blocking(move || images::find(&s, &c, &n)).await?
    };
    let image_cfg = img.config["config"].clone();
    let mut spec = plan.spec(&id, &image_cfg)?;
    if let Some(m) = flags.net.first().cloned() {
        if let Some(other) = m.strip_prefix("container:") {
            let c = api.find_container(other).await?;
            flags.net = vec![format!("container:{}", c.id)];
        }
    }
    let (mut labels, reqs) = plan.attach(&flags, &image_cfg, &mut spec)?;
    let user_labels: BTreeMap<String, String> = config["Labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
        .collect();
    // Path and Args are the command, as dockerd shows them, without the init before it.
    let args: Vec<String> = spec["process"]["args"]
        .as_array()
        .into_iter()
        .flatten()
        .skip(if opts.init { 2 } else { 0 })
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    // The Config inspect shows: the request over the image's.
    let mut shown = config.clone();
    for (k, from_image) in [
        ("Env", "Env"),
        ("WorkingDir", "WorkingDir"),
        ("User", "User"),
        ("ExposedPorts", "ExposedPorts"),
        ("Volumes", "Volumes"),
        ("StopSignal", "StopSignal"),
    ] {
        if is_zero(&shown[k]) && !is_zero(&image_cfg[from_image]) {
            shown[k] = image_cfg[from_image].clone();
        }
    }
    shown["Env"] = spec["process"]["env"].clone();
    if is_zero(&shown["Cmd"]) && opts.entrypoint.is_none() {
        shown["Cmd"] = image_cfg["Cmd"].clone();
    }
    if opts.entrypoint.is_none() {
        shown["Entrypoint"] = image_cfg["Entrypoint"].clone();
    }
    shown["Hostname"] = spec["hostname"].clone();
    let hc = super::health::merge(&config["Healthcheck"], &image_cfg["Healthcheck"]);
    if hc.is_null() {
        if let Some(o) = shown.as_object_mut() {
            o.remove("Healthcheck");
        }
    } else {
        shown["Healthcheck"] = hc;
    }
    let mut all_labels: BTreeMap<String, String> = image_cfg["Labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
        .collect();
    all_labels.extend(user_labels);
    shown["Labels"] = json!(all_labels);
    let mut meta = Meta {
        name: name.clone(),
        created: super::rfc3339(std::time::SystemTime::now()),
        config: shown,
        host_config: host.clone(),
        endpoints: endpoints.clone(),
        image_id: img.id.to_string(),
        path: args.first().cloned().unwrap_or_default(),
        args: args.iter().skip(1).cloned().collect(),
        ..Default::default()
    };
    if meta.host_config.is_null() {
        meta.host_config = json!({});
    }
    if is_zero(&meta.host_config["NetworkMode"]) {
        meta.host_config["NetworkMode"] = json!("default");
    }
    labels.extend(all_labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    labels.insert(NAME_LABEL.into(), name.clone());
    let diff_ids: Vec<berth_store::Digest> = img.config["rootfs"]["diff_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str().and_then(|s| s.parse().ok()))
        .collect();
    let image_ref = img
        .records
        .first()
        .map(|r| r.name.clone())
        .unwrap_or_else(|| image_name.clone());
    let id2 = id.clone();
    let record = blocking(move || {
        let mut made = Made {
            store: &store,
            ctx: &ctx,
            volumes: Vec::new(),
            snapshot: None,
            done: false,
        };
        // Volumes and binds, checked and made before the rootfs.
        let (mut names, mut copy) = (Vec::new(), Vec::new());
        for r in &reqs {
            let m = match r {
                MountReq::Bind {
                    src,
                    dst,
                    ro,
                    propagation,
                } => {
                    let p = std::path::Path::new(src);
                    if std::fs::symlink_metadata(p).is_err() {
                        // dockerd makes a missing -v source directory; so does berthd.
                        std::fs::create_dir_all(p).map_err(|e| {
                            ApiError::bad_request(format!(
                                "invalid mount config: bind source path {src:?}: {e}"
                            ))
                        })?;
                    }
                    let mut o = vec!["rbind", if *ro { "ro" } else { "rw" }];
                    o.extend(propagation.as_deref());
                    json!({"destination": dst, "type": "bind", "source": src, "options": o})
                }
                MountReq::Tmpfs { dst, options } => {
                    let mut o: Vec<String> = vec!["nosuid".into(), "nodev".into(), "noexec".into()];
                    o.extend(options.iter().cloned());
                    json!({"destination": dst, "type": "tmpfs", "source": "tmpfs", "options": o})
                }
                MountReq::Volume {
                    name: vname,
                    dst,
                    ro,
                    copy: wants_copy,
                    labels: vlabels,
                    opts,
                } => {
                    let anonymous = vname.is_none();
                    let vname = vname.clone().unwrap_or_else(new_id);
                    let v = match store.volume(&ctx, &vname) {
                        Ok(v) => v,
                        Err(e) if e.kind() == berth_store::ErrorKind::NotFound => {
                            let mut l = vlabels.clone();
                            if anonymous {
                                l.insert(LABEL_ANONYMOUS.into(), String::new());
                            }
                            let v = store.volume_create(&ctx, &vname, l, opts.clone())?;
                            made.volumes.push(vname.clone());
                            v
                        }
                        Err(e) => return Err(e.into()),
                    };
                    if *wants_copy && v.options.is_empty() {
                        copy.push(dst.clone());
                    }
                    names.push(vname);
                    volume_mount(&store, &ctx, &v, dst, *ro)?
                }
            };
            if let Some(list) = spec["mounts"].as_array_mut() {
                list.push(m);
            }
        }
        if !copy.is_empty() {
            if !spec["annotations"].is_object() {
                spec["annotations"] = json!({});
            }
            spec["annotations"][ANNOTATION_COPY_UP] = Value::String(copy.join(","));
        }
        if !names.is_empty() {
            labels.insert(LABEL_VOLUMES.to_string(), names.join(","));
        }
        meta.anonymous_volumes = made.volumes.clone();
        let parent = berth_store::oci::chain_ids(&diff_ids)
            .last()
            .map(|d| d.to_string());
        store
            .snapshotter()
            .prepare(&ctx, &id2, parent.as_deref(), Default::default())
            .map_err(|e| {
                ApiError::internal(format!(
                    "preparing the rootfs of {id2} from {image_ref}: {}",
                    crate::daemon::errors::message(&e)
                ))
            })?;
        made.snapshot = Some(id2.clone());
        let mut c = Container {
            id: id2.clone(),
            labels: labels.into_iter().collect(),
            image: image_ref,
            runtime_name: "io.containerd.runc.v2".into(),
            runtime_options: None,
            spec: Some(AnyValue {
                type_url: SPEC_TYPE.into(),
                value: serde_json::to_vec(&spec)
                    .map_err(|e| ApiError::internal(format!("encoding the spec: {e}")))?,
            }),
            snapshotter: store.snapshotter().name().into(),
            snapshot_key: id2.clone(),
            extensions: Default::default(),
            sandbox: String::new(),
            created_at: std::time::SystemTime::now(),
            updated_at: std::time::SystemTime::now(),
        };
        meta.put(&mut c);
        let c = store.container_create(&ctx, &c)?;
        made.done = true;
        Ok((c, made.volumes.clone()))
    })
    .await?;
    let (record, new_volumes) = record;
    for v in &new_volumes {
        api.events.volume(v, "create", &[]);
    }
    api.events
        .container(&record.id, &Meta::of(&record), "create", &[]);
    crate::daemon::services::events::publish(
        super::NAMESPACE,
        "/containers/create",
        crate::daemon::services::events::any(
            "ContainerCreate",
            &berth_proto::containerd::events::ContainerCreate {
                id: record.id.clone(),
                image: record.image.clone(),
                runtime: None,
            },
        ),
    );
    Ok(json_reply(
        StatusCode::CREATED,
        &json!({"Id": record.id, "Warnings": []}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_values_ask_for_nothing() {
        assert!(is_zero(&json!(null)));
        assert!(is_zero(&json!({"Name": "", "MaximumRetryCount": 0})));
        assert!(is_zero(&json!([])));
        assert!(!is_zero(&json!(["x"])));
        assert!(!is_zero(&json!(true)));
        let m = json!({"Binds": ["a:/b"], "Privileged": false, "Devices": []});
        assert!(only("HostConfig.", m.as_object().unwrap(), HOST_FIELDS).is_ok());
        let m = json!({"Devices": [{"PathOnHost": "/dev/loop0"}]});
        let e = only("HostConfig.", m.as_object().unwrap(), HOST_FIELDS).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("HostConfig.Devices"), "{}", e.message);
        assert!(flag(&json!("yes"), "HostConfig.Init")
            .unwrap_err()
            .message
            .contains("HostConfig.Init"));
    }

    #[test]
    fn names_follow_dockers_rule_and_generated_ones_are_free() {
        assert!(valid_name("web-1.a_b"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a"));
        assert!(!valid_name("a/b"));
        let n = generate_name(&|n| n.starts_with('a'));
        assert!(!n.starts_with('a') && n.contains('_'), "{n}");
    }

    #[test]
    fn a_plan_checks_the_query_and_body_before_any_lookup() {
        let bad = |name: &str, platform: Option<&str>, body: Value| {
            let e = plan(name, platform, &body).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{}", e.message);
            e.message
        };
        let ok = json!({"Image": "busybox"});
        assert!(bad("-x", None, ok.clone()).contains("Invalid container name (-x)"));
        assert!(bad("", Some("windows"), ok.clone()).contains("platform \"windows\""));
        assert!(bad("", None, json!([1])).contains("not a JSON object"));
        assert!(bad("", None, json!({"Image": ""})).contains("Config.Image is required"));
        assert!(bad("", None, json!({"Image": "x", "HostConfig": 1})).contains("HostConfig"));
        assert!(bad("", None, json!({"Image": "x", "Dns": ["x"]})).contains("Config.Dns"));
        let e = plan(
            "",
            None,
            &json!({"Image": "x", "HostConfig": {"AutoRemove": true, "RestartPolicy": {"Name": "always"}}}),
        )
        .unwrap_err();
        assert_eq!(e.status, StatusCode::CONFLICT);
        let p = plan(
            "/web",
            Some("linux/amd64"),
            &json!({"Image": "busybox", "Cmd": ["sh"], "Tty": true,
                    "HostConfig": {"Binds": ["data:/data"], "Memory": 67108864, "ConsoleSize": [40, 120]}}),
        )
        .unwrap();
        assert_eq!(p.name.as_deref(), Some("web"));
        assert_eq!(p.image, "busybox");
        assert_eq!(p.opts.memory, Some(67108864));
        let mut spec = p.spec("0123456789abcdef", &json!({})).unwrap();
        assert_eq!(spec["hostname"], "0123456789ab");
        assert_eq!(
            spec["process"]["consoleSize"],
            json!({"height": 40, "width": 120})
        );
        let (_, reqs) = p
            .attach(&p.net_flags("web", "0123456789ab"), &json!({}), &mut spec)
            .unwrap();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].dst(), "/data");
        // What runspec refuses is named with the Docker field.
        let p = plan("", None, &json!({"Image": "x", "Env": ["NOVALUE"]})).unwrap();
        let e = p.spec("c", &json!({"Cmd": ["x"]})).unwrap_err();
        assert!(e.message.contains("invalid Env"), "{}", e.message);
    }

    #[test]
    fn mounts_become_mount_flags() {
        let f = mount_flag(&json!({"Type": "volume", "Source": "vol", "Target": "/d", "ReadOnly": true, "VolumeOptions": {"NoCopy": true}})).unwrap();
        assert_eq!(f, "type=volume,source=vol,target=/d,readonly,volume-nocopy");
        runspec::mounts::parse_mount_flag(&f).unwrap();
        assert!(mount_flag(&json!({"Type": "bind", "Source": "/x"})).is_err());
    }

    #[test]
    fn port_bindings_and_endpoints_become_network_flags() {
        let host = json!({"NetworkMode": "app_default", "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}], "53/udp": [{"HostIp": "", "HostPort": ""}]}, "ExtraHosts": ["db:10.0.0.2"]});
        let eps = json!({"app_default": {"Aliases": ["web"]}});
        let body = json!({"Image": "web", "HostConfig": host, "NetworkingConfig": {"EndpointsConfig": eps}});
        let f = plan("app_web_1", None, &body)
            .unwrap()
            .net_flags("app_web_1", "0123456789ab");
        assert_eq!(f.net, vec!["app_default".to_string()]);
        assert!(
            f.publish.contains(&"127.0.0.1:8080:80/tcp".to_string()),
            "{:?}",
            f.publish
        );
        assert!(
            f.publish.contains(&":53/udp".to_string()),
            "{:?}",
            f.publish
        );
        assert_eq!(
            f.network_alias,
            vec![
                "app_web_1".to_string(),
                "0123456789ab".to_string(),
                "web".to_string()
            ]
        );
        assert_eq!(f.add_host, vec!["db:10.0.0.2".to_string()]);
        let f = plan("", None, &json!({"Image": "web"}))
            .unwrap()
            .net_flags("x", "0123456789ab");
        assert_eq!(f.net, vec!["bridge".to_string()]);
        assert!(f.network_alias.is_empty());
    }
}
