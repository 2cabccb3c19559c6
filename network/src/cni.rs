//! Running CNI plugins (spec version 1.0.0) the way a container runtime does.
//!
//! A [`NetworkConfigList`] is a CNI "conflist": a network name, a spec version and a chain of
//! plugin configurations. [`Cni::add`] runs the chain in order, feeding each plugin the result
//! of the previous one (`prevResult`); [`Cni::del`] runs it in reverse order and keeps going
//! past a plugin that fails, so that one broken plugin does not leave the others' state behind;
//! [`Cni::check`] asks each plugin whether the attachment is still as ADD left it.
//!
//! The result of an ADD is cached in a directory the caller gives, keyed by network, container
//! and interface: DEL and CHECK hand it to the plugins as `prevResult`, which the firewall
//! plugin needs to find its rules again (without it, its DEL fails with "missing prevResult").
//!
//! Plugin runs are serialised within the process: the plugins create shared iptables chains
//! with a check-then-create that races between concurrent invocations.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The CNI spec version berth speaks to plugins.
pub const CNI_VERSION: &str = "1.0.0";

/// Where plugin binaries are looked for when the caller does not say: Debian's
/// containernetworking-plugins, then the upstream default.
pub const DEFAULT_PLUGIN_PATH: &str = "/usr/lib/cni:/opt/cni/bin";

/// The plugins' iptables setup is not safe against concurrent runs (see the module docs).
static PLUGIN_LOCK: Mutex<()> = Mutex::new(());

/// A CNI operation, as it appears in `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    /// Attach a container to a network.
    Add,
    /// Detach a container; must succeed when the attachment is already (partly) gone.
    Del,
    /// Verify an attachment made by ADD.
    Check,
}

impl fmt::Display for CniCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
        })
    }
}

/// Everything that can go wrong running a network's plugins. Each variant names the network
/// and, where one is to blame, the plugin.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// The conflist itself is unusable (no plugins, a plugin without `type`, a bad name).
    #[error("network {network:?}: invalid CNI configuration: {reason}")]
    InvalidConfig {
        /// The network's name.
        network: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A container id, netns path or interface name the plugins would reject or that would
    /// escape the cache directory.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidArgument {
        /// Which argument: "container id", "interface name", "netns path".
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// No executable of the plugin's name in any directory of the plugin path.
    #[error("network {network:?}: CNI plugin {plugin:?} not found in {searched}")]
    PluginNotFound {
        /// The network's name.
        network: String,
        /// The plugin's `type`.
        plugin: String,
        /// The plugin path searched, colon-separated.
        searched: String,
    },
    /// The plugin binary could not be started or talked to.
    #[error("network {network:?}: running CNI plugin {plugin:?} ({path}): {source}")]
    Exec {
        /// The network's name.
        network: String,
        /// The plugin's `type`.
        plugin: String,
        /// The binary.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The plugin failed and said why with a CNI Error object.
    #[error("network {network:?}: CNI plugin {plugin:?} {command} failed: {msg}{} (code {code})",
        if details.is_empty() { String::new() } else { format!(": {details}") })]
    Plugin {
        /// The network's name.
        network: String,
        /// The plugin's `type`.
        plugin: String,
        /// The operation.
        command: CniCommand,
        /// The spec's error code (1-99 reserved by the spec; 100+ plugin-specific).
        code: u32,
        /// The plugin's message.
        msg: String,
        /// The plugin's details, possibly empty.
        details: String,
    },
    /// The plugin exited non-zero without a parseable Error object.
    #[error("network {network:?}: CNI plugin {plugin:?} {command} exited with {status}: {output}")]
    PluginFailed {
        /// The network's name.
        network: String,
        /// The plugin's `type`.
        plugin: String,
        /// The operation.
        command: CniCommand,
        /// The exit status as text.
        status: String,
        /// Its stdout and stderr, trimmed and shortened.
        output: String,
    },
    /// The plugin succeeded but its stdout was not a CNI result.
    #[error(
        "network {network:?}: CNI plugin {plugin:?} {command} returned an invalid result: {reason}"
    )]
    BadResult {
        /// The network's name.
        network: String,
        /// The plugin's `type`.
        plugin: String,
        /// The operation.
        command: CniCommand,
        /// Why it could not be used.
        reason: String,
    },
    /// CHECK needs the result of the ADD, which is not in the cache.
    #[error("network {network:?}: no cached ADD result for container {container_id:?} interface {ifname:?}")]
    NoCachedResult {
        /// The network's name.
        network: String,
        /// The container.
        container_id: String,
        /// The interface.
        ifname: String,
    },
    /// Reading or writing the result cache.
    #[error("CNI result cache {path}: {source}")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// DEL ran every plugin; these failed (the first is the most useful).
    #[error("network {network:?}: DEL failed: {}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Del {
        /// The network's name.
        network: String,
        /// Each plugin's failure, in the order they ran.
        errors: Vec<CniError>,
    },
}

/// A CNI network configuration list ("conflist").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkConfigList {
    /// The spec version the configuration is written for.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// The network's name, unique on the host; plugins key their state by it.
    pub name: String,
    /// Whether the runtime should skip CHECK.
    #[serde(
        rename = "disableCheck",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub disable_check: bool,
    /// The plugin configurations, in ADD order. Each is a JSON object with at least `type`.
    pub plugins: Vec<Value>,
}

impl NetworkConfigList {
    /// Parses a conflist from JSON and validates it.
    pub fn from_json(json: &str) -> Result<Self, CniError> {
        let list: NetworkConfigList =
            serde_json::from_str(json).map_err(|e| CniError::InvalidConfig {
                network: String::from("?"),
                reason: e.to_string(),
            })?;
        list.validate()?;
        Ok(list)
    }

    /// The conflist as pretty JSON, as it would be written to a .conflist file.
    pub fn to_json(&self) -> String {
        // A struct of strings and JSON values always serialises.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks the name against the spec's pattern and that every plugin has a `type`.
    pub fn validate(&self) -> Result<(), CniError> {
        let invalid = |reason: String| CniError::InvalidConfig {
            network: self.name.clone(),
            reason,
        };
        if !valid_name(&self.name) {
            return Err(invalid(
                "the name must start with a letter or digit and contain only letters, digits, '_', '.' and '-'".into(),
            ));
        }
        if self.plugins.is_empty() {
            return Err(invalid("no plugins".into()));
        }
        for (i, p) in self.plugins.iter().enumerate() {
            match p.get("type").and_then(Value::as_str) {
                Some(t) if !t.is_empty() && !t.contains('/') && t != "." && t != ".." => {}
                _ => return Err(invalid(format!("plugin {i} has no valid \"type\""))),
            }
        }
        Ok(())
    }

    fn plugin_type(plugin: &Value) -> &str {
        plugin.get("type").and_then(Value::as_str).unwrap_or("")
    }
}

/// The per-container side of an invocation: which container, which netns, which interface,
/// and the capability arguments (`runtimeConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConf {
    /// The container's id (`CNI_CONTAINERID`).
    pub container_id: String,
    /// Path of the container's network namespace (`CNI_NETNS`).
    pub netns: PathBuf,
    /// The interface to create inside it (`CNI_IFNAME`), e.g. "eth0".
    pub ifname: String,
    /// Extra `CNI_ARGS` key=value pairs.
    pub args: Vec<(String, String)>,
    /// Capability arguments by capability name, e.g. "portMappings". A plugin receives in its
    /// `runtimeConfig` only those it declares in its `capabilities`.
    pub capability_args: BTreeMap<String, Value>,
}

impl RuntimeConf {
    /// A runtime configuration without args or capabilities.
    pub fn new(container_id: &str, netns: &Path, ifname: &str) -> Self {
        RuntimeConf {
            container_id: container_id.to_string(),
            netns: netns.to_path_buf(),
            ifname: ifname.to_string(),
            args: Vec::new(),
            capability_args: BTreeMap::new(),
        }
    }

    fn validate(&self) -> Result<(), CniError> {
        if !valid_name(&self.container_id) {
            return Err(CniError::InvalidArgument {
                what: "container id",
                value: self.container_id.clone(),
                reason: "must start with a letter or digit and contain only letters, digits, '_', '.' and '-'",
            });
        }
        if self.ifname.is_empty()
            || self.ifname.len() > 15
            || self.ifname == "."
            || self.ifname == ".."
            || self
                .ifname
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace())
        {
            return Err(CniError::InvalidArgument {
                what: "interface name",
                value: self.ifname.clone(),
                reason: "must be 1-15 characters without '/', ':' or whitespace",
            });
        }
        if !self.netns.is_absolute() {
            return Err(CniError::InvalidArgument {
                what: "netns path",
                value: self.netns.display().to_string(),
                reason: "must be absolute",
            });
        }
        for (k, v) in &self.args {
            if k.is_empty() || k.contains(['=', ';']) || v.contains(';') {
                return Err(CniError::InvalidArgument {
                    what: "CNI_ARGS entry",
                    value: format!("{k}={v}"),
                    reason: "keys must be non-empty without '=' or ';', values without ';'",
                });
            }
        }
        Ok(())
    }
}

/// The CNI spec's names: letters, digits, then also `_`, `.` and `-`.
pub(crate) fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// An interface in a CNI result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Hardware address, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The netns path the interface lives in; `None` for host-side interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address in a CNI result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address with prefix length, e.g. "10.88.0.5/16".
    pub address: String,
    /// Default gateway for this subnet, if the plugin set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`] of the interface holding the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

impl IpConfig {
    /// The address without its prefix length.
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.split('/').next()?.parse().ok()
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> Option<u8> {
        self.address.split_once('/')?.1.parse().ok()
    }
}

/// A route in a CNI result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination, e.g. "0.0.0.0/0".
    pub dst: String,
    /// Next hop; `None` means the interface's gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS settings in a CNI result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers, in order of preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A CNI 1.0.0 success result: what the chain configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    /// The spec version of the result.
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// Interfaces created or used, host side and container side.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// Routes added in the container.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// DNS information, if a plugin gave any.
    #[serde(default)]
    pub dns: Dns,
}

impl CniResult {
    /// The addresses on the interface named `ifname` inside the sandbox (e.g. "eth0"); all
    /// addresses when the plugins did not say which interface holds them.
    pub fn container_ips(&self, ifname: &str) -> Vec<IpAddr> {
        self.ips
            .iter()
            .filter(
                |ip| match ip.interface.and_then(|i| self.interfaces.get(i)) {
                    Some(iface) => iface.name == ifname && iface.sandbox.is_some(),
                    None => true,
                },
            )
            .filter_map(IpConfig::ip)
            .collect()
    }
}

/// The Error object a failing plugin prints on stdout.
#[derive(Debug, Deserialize)]
struct ErrorObject {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    kind: String,
    #[serde(rename = "containerId")]
    container_id: String,
    #[serde(rename = "ifName")]
    ifname: String,
    #[serde(rename = "networkName")]
    network: String,
    result: Value,
}

const CACHE_KIND: &str = "berthCniCacheV1";

/// Runs CNI plugins from a search path and caches ADD results under a directory.
#[derive(Debug, Clone)]
pub struct Cni {
    plugin_path: Vec<PathBuf>,
    cache_dir: PathBuf,
}

impl Cni {
    /// Plugins from [`DEFAULT_PLUGIN_PATH`]; ADD results cached under `cache_dir` (created on
    /// first use), e.g. `<state>/cni/results`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Cni {
            plugin_path: std::env::split_paths(DEFAULT_PLUGIN_PATH).collect(),
            cache_dir: cache_dir.into(),
        }
    }

    /// Replaces the plugin search path (also passed to plugins as `CNI_PATH`, for IPAM
    /// plugins they delegate to).
    pub fn with_plugin_path(mut self, dirs: Vec<PathBuf>) -> Self {
        self.plugin_path = dirs;
        self
    }

    /// The plugin search path.
    pub fn plugin_path(&self) -> &[PathBuf] {
        &self.plugin_path
    }

    fn cni_path(&self) -> String {
        std::env::join_paths(&self.plugin_path)
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Finds a plugin's binary on the search path.
    pub fn find_plugin(&self, network: &str, plugin: &str) -> Result<PathBuf, CniError> {
        use std::os::unix::fs::PermissionsExt;
        for dir in &self.plugin_path {
            let candidate = dir.join(plugin);
            if let Ok(meta) = std::fs::metadata(&candidate) {
                if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                    return Ok(candidate);
                }
            }
        }
        Err(CniError::PluginNotFound {
            network: network.to_string(),
            plugin: plugin.to_string(),
            searched: self.cni_path(),
        })
    }

    /// Attaches a container: runs every plugin's ADD in order, each given the previous
    /// result, caches the final result and returns it. If a plugin fails, the plugins run
    /// so far are undone with DEL (best effort) and the failure is returned.
    pub fn add(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<CniResult, CniError> {
        list.validate()?;
        rt.validate()?;
        // Resolve every binary first: a missing plugin then costs nothing to undo.
        for p in &list.plugins {
            self.find_plugin(&list.name, NetworkConfigList::plugin_type(p))?;
        }
        let _guard = PLUGIN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut prev: Option<Value> = None;
        for (i, plugin) in list.plugins.iter().enumerate() {
            match self.exec(list, plugin, rt, CniCommand::Add, prev.as_ref()) {
                Ok(out) => {
                    let value = out.ok_or_else(|| CniError::BadResult {
                        network: list.name.clone(),
                        plugin: NetworkConfigList::plugin_type(plugin).to_string(),
                        command: CniCommand::Add,
                        reason: "empty output".into(),
                    });
                    match value {
                        Ok(v) => prev = Some(v),
                        Err(e) => {
                            self.undo(list, &list.plugins[..=i], rt, prev.as_ref());
                            return Err(e);
                        }
                    }
                }
                Err(e) => {
                    // The failing plugin cleans up after itself per the spec, but DEL on it
                    // too is harmless and catches plugins that do not.
                    self.undo(list, &list.plugins[..=i], rt, prev.as_ref());
                    return Err(e);
                }
            }
        }
        let value = prev.unwrap_or(Value::Null);
        let result: CniResult =
            serde_json::from_value(value.clone()).map_err(|e| CniError::BadResult {
                network: list.name.clone(),
                plugin: list
                    .plugins
                    .last()
                    .map(NetworkConfigList::plugin_type)
                    .unwrap_or("")
                    .to_string(),
                command: CniCommand::Add,
                reason: e.to_string(),
            })?;
        if let Err(e) = self.write_cache(list, rt, &value) {
            self.undo(list, &list.plugins, rt, Some(&value));
            return Err(e);
        }
        Ok(result)
    }

    fn undo(
        &self,
        list: &NetworkConfigList,
        plugins: &[Value],
        rt: &RuntimeConf,
        prev: Option<&Value>,
    ) {
        for plugin in plugins.iter().rev() {
            if let Err(e) = self.exec(list, plugin, rt, CniCommand::Del, prev) {
                tracing::warn!("undoing a failed ADD: {e}");
            }
        }
    }

    /// Detaches a container: runs every plugin's DEL in reverse order with the cached ADD
    /// result (if there is one), continuing past failures, then drops the cache entry.
    /// Succeeds when the container was never attached or is already detached. A missing
    /// plugin binary is still an error: its state cannot be removed without it. (Debian's
    /// bridge plugin forgets its per-container masquerade rule on DEL when the interface is
    /// already gone: berth runs it with `ipMasq` off, see [`crate::firewall`].)
    pub fn del(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<(), CniError> {
        list.validate()?;
        rt.validate()?;
        let cache = self.cache_path(list, rt);
        let prev = self.read_cache(&cache)?;
        let _guard = PLUGIN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut errors = Vec::new();
        for plugin in list.plugins.iter().rev() {
            if let Err(e) = self.exec(list, plugin, rt, CniCommand::Del, prev.as_ref()) {
                errors.push(e);
            }
        }
        if !errors.is_empty() {
            return Err(CniError::Del {
                network: list.name.clone(),
                errors,
            });
        }
        match std::fs::remove_file(&cache) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CniError::Cache {
                path: cache,
                source,
            }),
        }
    }

    /// Verifies an attachment: runs every plugin's CHECK in order with the cached ADD result.
    pub fn check(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<(), CniError> {
        list.validate()?;
        rt.validate()?;
        if list.disable_check {
            return Ok(());
        }
        let prev = self
            .read_cache(&self.cache_path(list, rt))?
            .ok_or_else(|| CniError::NoCachedResult {
                network: list.name.clone(),
                container_id: rt.container_id.clone(),
                ifname: rt.ifname.clone(),
            })?;
        let _guard = PLUGIN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        for plugin in &list.plugins {
            self.exec(list, plugin, rt, CniCommand::Check, Some(&prev))?;
        }
        Ok(())
    }

    /// The cached ADD result of a container's attachment, if any.
    pub fn cached_result(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
    ) -> Result<Option<CniResult>, CniError> {
        let path = self.cache_path(list, rt);
        match self.read_cache(&path)? {
            None => Ok(None),
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| CniError::Cache {
                    path,
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                }),
        }
    }

    fn cache_path(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> PathBuf {
        // Names are validated against the CNI pattern, so none contains '/'.
        self.cache_dir
            .join(format!("{}-{}-{}", list.name, rt.container_id, rt.ifname))
    }

    fn read_cache(&self, path: &Path) -> Result<Option<Value>, CniError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CniError::Cache {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        match serde_json::from_str::<CacheEntry>(&text) {
            Ok(entry) if entry.kind == CACHE_KIND => Ok(Some(entry.result)),
            Ok(_) | Err(_) => {
                // A torn or foreign file must not block DEL: run without prevResult.
                tracing::warn!("ignoring unreadable CNI cache file {}", path.display());
                Ok(None)
            }
        }
    }

    fn write_cache(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
        result: &Value,
    ) -> Result<(), CniError> {
        let path = self.cache_path(list, rt);
        let err = |source| CniError::Cache {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.cache_dir).map_err(err)?;
        let entry = CacheEntry {
            kind: CACHE_KIND.into(),
            container_id: rt.container_id.clone(),
            ifname: rt.ifname.clone(),
            network: list.name.clone(),
            result: result.clone(),
        };
        let text = serde_json::to_vec(&entry).unwrap_or_default();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)
    }

    /// The JSON a plugin gets on stdin: its own configuration plus the list's name and
    /// version, the `runtimeConfig` for the capabilities it declares, and `prevResult`.
    pub fn plugin_stdin(
        list: &NetworkConfigList,
        plugin: &Value,
        rt: &RuntimeConf,
        prev: Option<&Value>,
    ) -> Value {
        let mut conf: Map<String, Value> = plugin.as_object().cloned().unwrap_or_default();
        conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
        conf.insert("name".into(), Value::String(list.name.clone()));
        let mut runtime = Map::new();
        if let Some(caps) = plugin.get("capabilities").and_then(Value::as_object) {
            for (cap, enabled) in caps {
                if enabled.as_bool() == Some(true) {
                    if let Some(arg) = rt.capability_args.get(cap) {
                        runtime.insert(cap.clone(), arg.clone());
                    }
                }
            }
        }
        if !runtime.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        match prev {
            Some(p) => {
                conf.insert("prevResult".into(), p.clone());
            }
            None => {
                conf.remove("prevResult");
            }
        }
        Value::Object(conf)
    }

    /// Runs one plugin; returns its parsed stdout (None when empty, as DEL and CHECK may be).
    fn exec(
        &self,
        list: &NetworkConfigList,
        plugin: &Value,
        rt: &RuntimeConf,
        command: CniCommand,
        prev: Option<&Value>,
    ) -> Result<Option<Value>, CniError> {
        let plugin_type = NetworkConfigList::plugin_type(plugin);
        let path = self.find_plugin(&list.name, plugin_type)?;
        let stdin = Self::plugin_stdin(list, plugin, rt, prev);
        let args = rt
            .args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";");
        let exec_err = |source| CniError::Exec {
            network: list.name.clone(),
            plugin: plugin_type.to_string(),
            path: path.clone(),
            source,
        };
        tracing::debug!(network = %list.name, plugin = plugin_type, %command, container = %rt.container_id, "running CNI plugin");
        // The plugins find iptables, ip6tables and modprobe on PATH; nothing else of ours
        // should leak into them.
        let search_path = std::env::var("PATH").unwrap_or_else(|_| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        let mut child = std::process::Command::new(&path)
            .env_clear()
            .env("PATH", search_path)
            .env("CNI_COMMAND", command.to_string())
            .env("CNI_CONTAINERID", &rt.container_id)
            .env("CNI_NETNS", &rt.netns)
            .env("CNI_IFNAME", &rt.ifname)
            .env("CNI_ARGS", args)
            .env("CNI_PATH", self.cni_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(exec_err)?;
        if let Some(mut input) = child.stdin.take() {
            let bytes = serde_json::to_vec(&stdin).unwrap_or_default();
            input.write_all(&bytes).map_err(exec_err)?;
        }
        let out = child.wait_with_output().map_err(exec_err)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            if let Ok(e) = serde_json::from_str::<ErrorObject>(stdout.trim()) {
                return Err(CniError::Plugin {
                    network: list.name.clone(),
                    plugin: plugin_type.to_string(),
                    command,
                    code: e.code,
                    msg: e.msg,
                    details: e.details,
                });
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            let mut output = format!("{} {}", stdout.trim(), stderr.trim())
                .trim()
                .to_string();
            if output.len() > 2000 {
                let mut cut = 2000;
                while !output.is_char_boundary(cut) {
                    cut -= 1;
                }
                output.truncate(cut);
            }
            return Err(CniError::PluginFailed {
                network: list.name.clone(),
                plugin: plugin_type.to_string(),
                command,
                status: out.status.to_string(),
                output,
            });
        }
        if stdout.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(stdout.trim())
            .map(Some)
            .map_err(|e| CniError::BadResult {
                network: list.name.clone(),
                plugin: plugin_type.to_string(),
                command,
                reason: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list() -> NetworkConfigList {
        NetworkConfigList {
            cni_version: CNI_VERSION.into(),
            name: "net1".into(),
            disable_check: false,
            plugins: vec![
                json!({"type": "bridge", "bridge": "br0"}),
                json!({"type": "portmap", "capabilities": {"portMappings": true}}),
                json!({"type": "firewall", "capabilities": {"other": false}}),
            ],
        }
    }

    #[test]
    fn stdin_carries_name_version_runtime_config_and_prev_result() {
        let l = list();
        let mut rt = RuntimeConf::new("c1", Path::new("/run/x"), "eth0");
        rt.capability_args
            .insert("portMappings".into(), json!([{"hostPort": 8080}]));
        rt.capability_args.insert("other".into(), json!(1));
        let prev = json!({"cniVersion": "1.0.0", "ips": []});

        let s = Cni::plugin_stdin(&l, &l.plugins[0], &rt, None);
        assert_eq!(s["name"], "net1");
        assert_eq!(s["cniVersion"], "1.0.0");
        assert!(s.get("runtimeConfig").is_none());
        assert!(s.get("prevResult").is_none());

        let s = Cni::plugin_stdin(&l, &l.plugins[1], &rt, Some(&prev));
        assert_eq!(s["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert_eq!(s["prevResult"], prev);

        // A capability declared false is not passed.
        let s = Cni::plugin_stdin(&l, &l.plugins[2], &rt, None);
        assert!(s.get("runtimeConfig").is_none());
    }

    #[test]
    fn validation_names_the_problem() {
        let mut l = list();
        l.name = "-bad".into();
        assert!(l.validate().unwrap_err().to_string().contains("\"-bad\""));
        let mut l = list();
        l.plugins.push(json!({"type": "../../bin/sh"}));
        assert!(l
            .validate()
            .unwrap_err()
            .to_string()
            .contains("plugin 3 has no valid"));
        let rt = RuntimeConf::new("c/1", Path::new("/run/x"), "eth0");
        assert!(rt
            .validate()
            .unwrap_err()
            .to_string()
            .contains("container id"));
        let rt = RuntimeConf::new("c1", Path::new("/run/x"), "eth0-too-long-name");
        assert!(rt
            .validate()
            .unwrap_err()
            .to_string()
            .contains("interface name"));
    }

    #[test]
    fn conflist_round_trips() {
        let l = list();
        let back = NetworkConfigList::from_json(&l.to_json()).unwrap();
        assert_eq!(back, l);
        assert!(NetworkConfigList::from_json("{\"name\": 1}").is_err());
    }

    #[test]
    fn result_parses_and_selects_container_addresses() {
        let r: CniResult = serde_json::from_value(json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "br0", "mac": "aa:bb:cc:dd:ee:ff"},
                {"name": "veth1", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "sandbox": "/run/netns/x"}
            ],
            "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 2}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        }))
        .unwrap();
        assert_eq!(
            r.container_ips("eth0"),
            vec!["10.1.0.5".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(r.ips[0].prefix_len(), Some(24));
        assert!(r.container_ips("eth1").is_empty());
    }

    #[test]
    fn missing_plugin_names_it_and_the_path() {
        let cni = Cni::new("/nonexistent/cache")
            .with_plugin_path(vec!["/nonexistent/a".into(), "/nonexistent/b".into()]);
        let e = cni.find_plugin("net1", "bridge").unwrap_err().to_string();
        assert!(e.contains("\"bridge\""), "{e}");
        assert!(e.contains("/nonexistent/a:/nonexistent/b"), "{e}");
    }

    #[test]
    fn plugin_error_object_becomes_a_typed_error() {
        // A fake plugin that prints a CNI Error object and fails.
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("fake");
        std::fs::write(
            &plugin,
            "#!/bin/sh\ncat >/dev/null\necho '{\"cniVersion\":\"1.0.0\",\"code\":7,\"msg\":\"bad config\",\"details\":\"no bridge\"}'\nexit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cni = Cni::new(dir.path().join("cache")).with_plugin_path(vec![dir.path().into()]);
        let l = NetworkConfigList {
            cni_version: CNI_VERSION.into(),
            name: "n".into(),
            disable_check: false,
            plugins: vec![json!({"type": "fake"})],
        };
        let rt = RuntimeConf::new("c1", Path::new("/run/x"), "eth0");
        let e = cni.add(&l, &rt).unwrap_err();
        match &e {
            CniError::Plugin {
                plugin,
                code,
                msg,
                details,
                command,
                ..
            } => {
                assert_eq!(plugin, "fake");
                assert_eq!(*code, 7);
                assert_eq!(msg, "bad config");
                assert_eq!(details, "no bridge");
                assert_eq!(*command, CniCommand::Add);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(e.to_string().contains("bad config: no bridge (code 7)"));
        // DEL without a cache entry still runs the plugin (and reports its failure).
        assert!(matches!(cni.del(&l, &rt), Err(CniError::Del { .. })));
    }
}
