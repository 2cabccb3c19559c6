//! Networks, daemon side: the records of bridge networks (per namespace, in the metadata
//! store) and the attachment of a container to them when its task is created — a persistent
//! network namespace, CNI ADD on each network, published ports, `/etc/hosts`,
//! `/etc/resolv.conf` and `/etc/hostname` — undone when the task is deleted. The plumbing is
//! `berth-network`'s (Debian's CNI plugins); this module knows no gRPC.
//!
//! Where things live:
//! - `<root>/networks/ipam/`: host-local's leases (persistent: addresses survive restarts);
//! - `<state>/netns/<ns>--<id>`: a container's network namespace (a bind-mounted nsfs file);
//! - `<state>/networks/<ns>/<id>/`: its hosts, resolv.conf, hostname and `attachment.json`
//!   (what was set up, so that a restarted berthd can tear it down and report it);
//! - `<state>/networks/dns/`: aardvark-dns's file per user-defined network (names of its
//!   containers) and pid file: it serves names on the networks' gateways, port 53;
//! - `<state>/networks/cni-cache/`: the plugins' cached results (CNI's cache, which DEL and
//!   CHECK read as `prevResult`);
//! - `<state>/networks-releasing/<ns>--<id>/`: attachments of deleted tasks whose CNI DELs
//!   a worker thread is still to run (see [`release`]).

mod release;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_network::cni::{Cni, RuntimeConf};
use berth_network::config::{Network, DEFAULT_BRIDGE};
use berth_network::dns::{Aardvark, DnsEntry};
use berth_network::files::{self, DnsOptions, HostEntry};
use berth_network::firewall;
use berth_network::hostports;
use berth_network::netns::{self, Netns};
use berth_network::ports::{self, PortMapping, PortSpec};
use berth_network::subnet::{self, InUse, Subnet};
use berth_store::check::young;
use berth_store::{Ctx, Store};
use serde::{Deserialize, Serialize};

/// The record kind of networks in the metadata store.
pub const KIND: &str = "network";
/// The network containers join when they ask for none by name (`--net bridge`).
pub const DEFAULT_NETWORK: &str = "bridge";

/// Container label (set by `berth run`): the networks to join, JSON `[{"name", "aliases",
/// "ip"}]`. Without it the container keeps what its spec says (a fresh namespace with only
/// `lo`, or the host's).
pub const NETWORKS_LABEL: &str = "berth.io/networks";
/// Container label: the ports to publish, JSON `["[HOST_IP:][HOST_PORT:]PORT[/PROTO]", ...]`.
pub const PORTS_LABEL: &str = "berth.io/ports";
/// Container label: the hostname written to /etc/hostname and /etc/hosts.
pub const HOSTNAME_LABEL: &str = "berth.io/hostname";
/// Container label: name servers (`--dns`), comma-separated.
pub const DNS_LABEL: &str = "berth.io/dns";
/// Container label: extra /etc/hosts lines (`--add-host NAME:IP`), JSON list.
pub const EXTRA_HOSTS_LABEL: &str = "berth.io/extra-hosts";
/// Container label: join the network namespace of this other container (`--net container:ID`).
pub const NETNS_OF_LABEL: &str = "berth.io/netns-of";

/// What goes wrong, with the thing named.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Internal(String),
}

type Result<T, E = NetworkError> = std::result::Result<T, E>;

/// The gRPC status of a network error.
pub fn status(e: NetworkError) -> tonic::Status {
    match e {
        NetworkError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
        NetworkError::NotFound(m) => tonic::Status::not_found(m),
        NetworkError::AlreadyExists(m) => tonic::Status::already_exists(m),
        NetworkError::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
        NetworkError::Internal(m) => tonic::Status::internal(m),
    }
}

/// The bridge network `id` (its CNI name `b-<12 of id>`) on `subnet` (empty: the first default
/// candidate that no subnet in `used` overlaps) with `gateway` (empty: the subnet's first
/// address): what a create asks for, checked without touching anything.
pub fn plan_network(id: &str, subnet: &str, gateway: &str, used: &[InUse]) -> Result<Network> {
    let subnet: Subnet = if subnet.is_empty() {
        subnet::pick_default(used).map_err(internal)?
    } else {
        let s: Subnet = subnet
            .parse()
            .map_err(|e| NetworkError::InvalidArgument(format!("--subnet: {e}")))?;
        subnet::check_free(s, used)
            .map_err(|e| NetworkError::InvalidArgument(format!("--subnet: {e}")))?;
        s
    };
    let short: String = id.chars().take(12).collect();
    let mut net = Network::new(&format!("b-{short}"), id, subnet)
        .map_err(|e| NetworkError::InvalidArgument(e.to_string()))?;
    if !gateway.is_empty() {
        net.gateway = gateway.parse().map_err(|_| {
            NetworkError::InvalidArgument(format!("--gateway {gateway:?} is not an IPv4 address"))
        })?;
        net.validate()
            .map_err(|e| NetworkError::InvalidArgument(format!("--gateway: {e}")))?;
    }
    Ok(net)
}

fn internal(e: impl std::fmt::Display) -> NetworkError {
    NetworkError::Internal(e.to_string())
}

fn store_err(e: berth_store::StoreError) -> NetworkError {
    if e.is_not_found() {
        NetworkError::NotFound(e.to_string())
    } else if e.is_already_exists() {
        NetworkError::AlreadyExists(e.to_string())
    } else {
        NetworkError::Internal(e.to_string())
    }
}

/// A network as berthd records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub name: String,
    pub id: String,
    pub subnet: String,
    pub gateway: String,
    pub bridge: String,
    pub internal: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The name the CNI plugins know it by (keys host-local's leases and their iptables
    /// chains): unique on the host, unlike the record's name, which is per namespace.
    pub cni_name: String,
}

impl NetworkRecord {
    /// The `berth-network` definition.
    fn network(&self) -> Result<Network> {
        let subnet: Subnet = self.subnet.parse().map_err(internal)?;
        let gateway: Ipv4Addr = self.gateway.parse().map_err(internal)?;
        Ok(Network {
            name: self.cni_name.clone(),
            id: self.id.clone(),
            bridge: self.bridge.clone(),
            subnet,
            gateway,
            internal: self.internal,
            labels: self.labels.clone(),
        })
    }
}

/// One network a container asks to join.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// A fixed address (`--ip`); empty: host-local picks one.
    #[serde(default)]
    pub ip: String,
}

/// What a container's task was given; kept in `attachment.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attachment {
    pub namespace: String,
    pub container_id: String,
    pub netns: PathBuf,
    pub joined: Vec<Joined>,
    pub ports: Vec<PortMapping>,
    /// The container's host name (first name of its own /etc/hosts lines).
    #[serde(default)]
    pub hostname: String,
    /// `--add-host` lines, `NAME:IP`.
    #[serde(default)]
    pub extra_hosts: Vec<String>,
    /// `--dns` name servers (empty: the first user-defined network's resolver).
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    /// The build whose RUN step this is (no container record owns it): it belongs to that
    /// build while its work dir `<state>/builds/<id>` is there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// Its published ports are berth's own nat rules ([`hostports`]); false for an
    /// attachment an older berthd made through the portmap plugin (its DEL runs portmap).
    #[serde(default)]
    pub own_ports: bool,
}

/// One network joined.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Joined {
    /// The record as it was when joined (a DEL needs its plugins' config even if the record
    /// changed since).
    pub network: NetworkRecord,
    pub ifname: String,
    pub ip: String,
    pub aliases: Vec<String>,
    /// Whether the container's published ports go through this network.
    #[serde(default)]
    pub publishes: bool,
}

/// How a container's task joins networks, from its labels; `None`: as its spec says.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub joins: Vec<Join>,
    pub ports: Vec<PortSpec>,
    pub hostname: String,
    pub dns: Vec<IpAddr>,
    pub extra_hosts: Vec<HostEntry>,
    /// `--net container:ID`: that container's namespace instead of one of our own.
    pub netns_of: Option<String>,
    /// A build's RUN step (the build's id), not a container.
    pub build: Option<String>,
}

impl Plan {
    /// Reads the labels `berth run` sets; `Ok(None)` when there are none.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Result<Option<Plan>> {
        let bad = |label: &str, e: &dyn std::fmt::Display| {
            NetworkError::InvalidArgument(format!("container label {label}: {e}"))
        };
        let netns_of = labels.get(NETNS_OF_LABEL).cloned();
        let joins: Vec<Join> = match labels.get(NETWORKS_LABEL) {
            Some(v) => serde_json::from_str(v).map_err(|e| bad(NETWORKS_LABEL, &e))?,
            None => Vec::new(),
        };
        if joins.is_empty() && netns_of.is_none() {
            return Ok(None);
        }
        let ports: Vec<String> = match labels.get(PORTS_LABEL) {
            Some(v) => serde_json::from_str(v).map_err(|e| bad(PORTS_LABEL, &e))?,
            None => Vec::new(),
        };
        let ports = ports
            .iter()
            .map(|p| p.parse::<PortSpec>().map_err(|e| bad(PORTS_LABEL, &e)))
            .collect::<Result<Vec<_>>>()?;
        let dns = match labels.get(DNS_LABEL) {
            Some(v) => v
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<IpAddr>()
                        .map_err(|_| bad(DNS_LABEL, &format!("{s:?} is not an IP address")))
                })
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        let extra: Vec<String> = match labels.get(EXTRA_HOSTS_LABEL) {
            Some(v) => serde_json::from_str(v).map_err(|e| bad(EXTRA_HOSTS_LABEL, &e))?,
            None => Vec::new(),
        };
        let extra_hosts = extra
            .iter()
            .map(|h| HostEntry::parse_extra(h).map_err(|e| bad(EXTRA_HOSTS_LABEL, &e)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Plan {
            joins,
            ports,
            hostname: labels.get(HOSTNAME_LABEL).cloned().unwrap_or_default(),
            dns,
            extra_hosts,
            netns_of,
            build: None,
        }))
    }
}

/// berthd's networks: records, attachments, the plugins.
pub struct Networks {
    store: Store,
    ipam_dir: PathBuf,
    netns_dir: PathBuf,
    dir: PathBuf,
    /// The builds' work dirs (`<state>/builds`): a build's attachment is owned while its
    /// build's dir is there.
    builds_dir: PathBuf,
    cni: Cni,
    dns: Aardvark,
    /// One attach or detach at a time: ports and addresses are chosen against what exists.
    lock: Mutex<()>,
    /// Detached attachments whose teardown is queued.
    releaser: Arc<release::Releaser>,
    /// Networks (by id) whose host rules this berthd has installed since it started:
    /// checked once per network, not on every attach (each check is several iptables runs).
    installed: Mutex<std::collections::HashSet<String>>,
}

impl Networks {
    /// Networks under berthd's `root` (persistent) and `state` (per boot) directories.
    pub fn new(store: Store, root: &Path, state: &Path) -> Networks {
        let dir = state.join("networks");
        let mut cni = Cni::new(dir.join("cni-cache"));
        if let Some(path) = std::env::var_os("BERTH_CNI_PATH") {
            cni = cni.with_plugin_path(std::env::split_paths(&path).collect());
        }
        let ipam_dir = root.join("networks").join("ipam");
        let releaser = release::Releaser::new(
            cni.clone(),
            ipam_dir.clone(),
            state.join("networks-releasing"),
        );
        Networks {
            store,
            releaser,
            ipam_dir,
            netns_dir: state.join("netns"),
            builds_dir: state.join("builds"),
            dns: Aardvark::new(&dir.join("dns"), 53),
            dir,
            cni,
            lock: Mutex::new(()),
            installed: Mutex::new(Default::default()),
        }
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every network of every namespace (subnets and bridges are the host's, whoever owns
    /// the record).
    fn all_records(&self) -> Result<Vec<(String, NetworkRecord)>> {
        let mut out = Vec::new();
        for ns in self.store.namespaces().map_err(store_err)? {
            let ns = ns.name;
            let ctx = Ctx {
                namespace: ns.clone(),
                lease: None,
            };
            for (_, r) in self
                .store
                .records::<NetworkRecord>(&ctx, KIND)
                .map_err(store_err)?
            {
                out.push((ns.clone(), r));
            }
        }
        Ok(out)
    }

    fn subnets_in_use(&self, except_default: bool) -> Result<Vec<InUse>> {
        let routes = subnet::host_routes().map_err(internal)?;
        // A bridge's own route is its network's, not a conflict with it.
        let records = self.all_records()?;
        let bridges: Vec<&str> = records.iter().map(|(_, r)| r.bridge.as_str()).collect();
        let mut used: Vec<InUse> = InUse::from_routes(
            &routes
                .into_iter()
                .filter(|r| !bridges.contains(&r.iface.as_str()))
                .collect::<Vec<_>>(),
        );
        for (ns, r) in &records {
            if except_default && r.bridge == DEFAULT_BRIDGE {
                continue;
            }
            if let Ok(s) = r.subnet.parse() {
                used.push(InUse {
                    subnet: s,
                    owner: format!("network {} of namespace {ns}", r.name),
                });
            }
        }
        Ok(used)
    }

    /// Creates a network. `subnet` empty: the next free /16 of Docker's pools; `gateway`
    /// empty: the subnet's first address.
    pub fn create(
        &self,
        ctx: &Ctx,
        name: &str,
        subnet: &str,
        gateway: &str,
        is_internal: bool,
        labels: BTreeMap<String, String>,
    ) -> Result<NetworkRecord> {
        let _g = self.guard();
        if name == DEFAULT_NETWORK || name == "host" || name == "none" {
            return Err(NetworkError::AlreadyExists(format!(
                "network {name:?}: the name is reserved for berth's own modes"
            )));
        }
        if self
            .store
            .record::<NetworkRecord>(ctx, KIND, name)
            .map_err(store_err)?
            .is_some()
        {
            return Err(NetworkError::AlreadyExists(format!(
                "network with name {name} already exists"
            )));
        }
        crate::identifiers::validate(name)
            .map_err(|e| NetworkError::InvalidArgument(format!("network name: {e}")))?;
        let used = self.subnets_in_use(false)?;
        let id = new_id();
        let mut net = plan_network(&id, subnet, gateway, &used)?;
        net.internal = is_internal;
        let rec = NetworkRecord {
            name: name.to_string(),
            id,
            subnet: net.subnet.to_string(),
            gateway: net.gateway.to_string(),
            bridge: net.bridge.clone(),
            internal: is_internal,
            labels,
            cni_name: net.name.clone(),
        };
        self.store
            .record_create(ctx, KIND, name, &rec)
            .map_err(store_err)?;
        Ok(rec)
    }

    /// The default network of the namespace, made on first use: bridge `berth0`, 172.17.0.0/16
    /// unless that collides with a host route or another network (then the next free /16).
    /// Every namespace's `bridge` is the same bridge and subnet.
    pub fn ensure_default(&self, ctx: &Ctx) -> Result<NetworkRecord> {
        if let Some(r) = self
            .store
            .record::<NetworkRecord>(ctx, KIND, DEFAULT_NETWORK)
            .map_err(store_err)?
        {
            return Ok(r);
        }
        let existing = self
            .all_records()?
            .into_iter()
            .map(|(_, r)| r)
            .find(|r| r.bridge == DEFAULT_BRIDGE);
        let rec = match existing {
            Some(mut r) => {
                r.labels.clear();
                r
            }
            None => {
                let used = self.subnets_in_use(true)?;
                let subnet = subnet::pick_default(&used).map_err(internal)?;
                let id = new_id();
                let mut net = Network::new(DEFAULT_NETWORK, &id, subnet).map_err(internal)?;
                net.bridge = DEFAULT_BRIDGE.to_string();
                NetworkRecord {
                    name: DEFAULT_NETWORK.into(),
                    id,
                    subnet: net.subnet.to_string(),
                    gateway: net.gateway.to_string(),
                    bridge: net.bridge,
                    internal: false,
                    labels: BTreeMap::new(),
                    cni_name: DEFAULT_NETWORK.into(),
                }
            }
        };
        match self.store.record_create(ctx, KIND, DEFAULT_NETWORK, &rec) {
            Ok(()) => Ok(rec),
            // Made by a concurrent caller meanwhile.
            Err(e) if e.is_already_exists() => self.get(ctx, DEFAULT_NETWORK),
            Err(e) => Err(store_err(e)),
        }
    }

    /// One network; `bridge` is made on first use.
    pub fn get(&self, ctx: &Ctx, name: &str) -> Result<NetworkRecord> {
        if name == DEFAULT_NETWORK {
            return self.ensure_default(ctx);
        }
        self.store
            .record::<NetworkRecord>(ctx, KIND, name)
            .map_err(store_err)?
            .ok_or_else(|| NetworkError::NotFound(format!("network {name} not found")))
    }

    /// Every network of the namespace (`bridge` included).
    pub fn list(&self, ctx: &Ctx) -> Result<Vec<NetworkRecord>> {
        self.ensure_default(ctx)?;
        Ok(self
            .store
            .records::<NetworkRecord>(ctx, KIND)
            .map_err(store_err)?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// The containers attached to `network` of the namespace now, with what they got.
    pub fn endpoints(&self, ctx: &Ctx, network: &str) -> Result<Vec<(Attachment, Joined)>> {
        let mut out = Vec::new();
        for a in self.attachments(&ctx.namespace)? {
            for j in &a.joined {
                if j.network.name == network {
                    out.push((a.clone(), j.clone()));
                }
            }
        }
        Ok(out)
    }

    /// Removes a network that no container uses; the default one cannot be removed.
    pub fn remove(&self, ctx: &Ctx, name: &str) -> Result<()> {
        let _g = self.guard();
        if name == DEFAULT_NETWORK {
            return Err(NetworkError::FailedPrecondition(format!(
                "{name} is a pre-defined network and cannot be removed"
            )));
        }
        let rec = self.get(ctx, name)?;
        let users: Vec<String> = self
            .endpoints(ctx, name)?
            .into_iter()
            .map(|(a, _)| a.container_id)
            .collect();
        if !users.is_empty() {
            return Err(NetworkError::FailedPrecondition(format!(
                "network {name} has active endpoints: {}",
                users.join(", ")
            )));
        }
        // Queued teardowns on it go first: their DELs use its plugins' state.
        self.releaser
            .drain(|_, a| a.joined.iter().any(|j| j.network.id == rec.id));
        firewall::remove(&rec.network()?).map_err(internal)?;
        self.dns
            .remove(&rec.cni_name)
            .map_err(|e| NetworkError::Internal(e.to_string()))?;
        self.installed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&rec.id);
        delete_bridge(&rec.bridge);
        self.store
            .record_delete(ctx, KIND, name)
            .map_err(store_err)?;
        let _ = std::fs::remove_dir_all(self.ipam_dir.join(&rec.cni_name));
        Ok(())
    }

    /// Installs a network's host rules (isolation, masquerade, forward accepts), once per
    /// network and berthd run.
    fn install_rules(&self, rec: &NetworkRecord) -> Result<()> {
        let mut done = self.installed.lock().unwrap_or_else(|e| e.into_inner());
        if !done.contains(&rec.id) {
            firewall::install(&rec.network()?).map_err(internal)?;
            done.insert(rec.id.clone());
        }
        Ok(())
    }

    fn container_dir(&self, ns: &str, id: &str) -> PathBuf {
        self.dir.join(ns).join(id)
    }

    fn netns_name(ns: &str, id: &str) -> String {
        // "--" cannot be confused: namespaces and ids are validated identifiers, but a
        // namespace ending in '-' followed by an id starting with '-' is impossible.
        format!("{ns}--{id}")
    }

    /// The attachments of namespace `ns` (every container of it that joined a network).
    pub fn attachments(&self, ns: &str) -> Result<Vec<Attachment>> {
        let dir = self.dir.join(ns);
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(out);
        };
        for e in entries.flatten() {
            if let Ok(text) = std::fs::read(e.path().join("attachment.json")) {
                match serde_json::from_slice::<Attachment>(&text) {
                    Ok(a) => out.push(a),
                    Err(err) => {
                        tracing::warn!(path = %e.path().display(), "unreadable attachment: {err}")
                    }
                }
            }
        }
        Ok(out)
    }

    /// The attachment of one container, if it has one.
    pub fn attachment(&self, ns: &str, id: &str) -> Option<Attachment> {
        let text = std::fs::read(self.container_dir(ns, id).join("attachment.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Every published port of every container on the host, for conflict checks.
    fn ports_taken(&self) -> Vec<PortMapping> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name() != "cni-cache")
            .filter_map(|e| self.attachments(&e.file_name().to_string_lossy()).ok())
            .flatten()
            .flat_map(|a| a.ports)
            .collect()
    }

    /// Sets up the container's networks for its task, changing `spec` to use them: the
    /// network namespace path, bind mounts of /etc/hosts, /etc/resolv.conf and /etc/hostname.
    /// On failure nothing is left behind.
    pub fn attach(
        &self,
        ctx: &Ctx,
        id: &str,
        plan: &Plan,
        spec: &mut serde_json::Value,
    ) -> Result<Option<Attachment>> {
        let _g = self.guard();
        if let Some(other) = &plan.netns_of {
            let path = self.netns_of(ctx, other)?;
            set_spec_netns(spec, &path);
            return Ok(None);
        }
        let mut records = Vec::new();
        for j in &plan.joins {
            records.push((j.clone(), self.get(ctx, &j.name)?));
        }
        if !plan.ports.is_empty() && records.iter().all(|(_, r)| r.internal) {
            return Err(NetworkError::InvalidArgument(
                "ports cannot be published from a container only on internal networks".into(),
            ));
        }
        // A queued teardown of this container (a restart) or one holding ports goes first.
        let key = Self::netns_name(&ctx.namespace, id);
        let publishing = !plan.ports.is_empty();
        self.releaser
            .drain(|k, a| k == key || (publishing && !a.ports.is_empty()));
        let ports = ports::resolve(&plan.ports, &self.ports_taken())
            .map_err(|e| NetworkError::InvalidArgument(e.to_string()))?;
        let cdir = self.container_dir(&ctx.namespace, id);
        std::fs::create_dir_all(&cdir).map_err(internal)?;
        let mut undo = Undo {
            cni: &self.cni,
            dir: cdir.clone(),
            netns: None,
            added: Vec::new(),
            published: (!ports.is_empty()).then(|| id.to_string()),
            armed: true,
        };
        let ns = Netns::create(&self.netns_dir, &key).map_err(internal)?;
        undo.netns = Some(ns.clone());
        let mut joined = Vec::new();
        let publishing = records.iter().position(|(_, r)| !r.internal);
        for (i, (join, rec)) in records.iter().enumerate() {
            // Ports are published on the first network that can carry them.
            let publish = (publishing == Some(i)).then_some(ports.as_slice());
            let (j, added) =
                self.join_one(id, ns.path(), &format!("eth{i}"), join, rec, publish)?;
            undo.added.push(added);
            joined.push(j);
        }
        let hostname = if plan.hostname.is_empty() {
            id.get(..12).unwrap_or(id).to_string()
        } else {
            plan.hostname.clone()
        };
        let attachment = Attachment {
            namespace: ctx.namespace.clone(),
            container_id: id.to_string(),
            netns: ns.path().to_path_buf(),
            joined,
            ports,
            hostname: hostname.clone(),
            extra_hosts: plan
                .extra_hosts
                .iter()
                .map(|h| format!("{}:{}", h.names.join(" "), h.ip))
                .collect(),
            dns: plan.dns.clone(),
            build: plan.build.clone(),
            own_ports: true,
        };
        write_file(&cdir.join("hostname"), &format!("{hostname}\n"))?;
        let (hosts, resolv) = container_files(&attachment);
        write_file(&cdir.join("hosts"), &hosts)?;
        write_file(&cdir.join("resolv.conf"), &resolv)?;
        self.save(&cdir, &attachment)?;
        let networks: Vec<&NetworkRecord> = attachment.joined.iter().map(|j| &j.network).collect();
        if let Err(e) = self.refresh_dns(&ctx.namespace, &networks) {
            // Undo drops the attachment; the other containers' names stay served.
            let _ = std::fs::remove_file(cdir.join("attachment.json"));
            let _ = self.refresh_dns(&ctx.namespace, &networks);
            return Err(e);
        }
        set_spec_netns(spec, ns.path());
        spec["hostname"] = serde_json::Value::String(hostname);
        for (file, dest) in [
            ("hosts", "/etc/hosts"),
            ("resolv.conf", "/etc/resolv.conf"),
            ("hostname", "/etc/hostname"),
        ] {
            add_bind(spec, &cdir.join(file), dest);
        }
        undo.armed = false;
        Ok(Some(attachment))
    }

    /// Joins the container's netns `netns` to network `rec` as interface `ifname` (CNI ADD,
    /// after the network's host rules), publishing `ports` through it if given. Returns what
    /// was joined and what undoes it.
    fn join_one(
        &self,
        id: &str,
        netns: &Path,
        ifname: &str,
        join: &Join,
        rec: &NetworkRecord,
        ports: Option<&[PortMapping]>,
    ) -> Result<(Joined, Added)> {
        let net = rec.network()?;
        self.install_rules(rec)?;
        let mut rt = RuntimeConf::new(id, netns, ifname);
        if !join.ip.is_empty() {
            let ip: Ipv4Addr = join.ip.parse().map_err(|_| {
                NetworkError::InvalidArgument(format!("--ip {:?} is not an IPv4 address", join.ip))
            })?;
            if !net.subnet.contains(ip) {
                return Err(NetworkError::InvalidArgument(format!(
                    "--ip {ip} is not in network {}'s subnet {}",
                    rec.name, rec.subnet
                )));
            }
            // Plugins that do not know IP must not fail on it.
            rt.args.push(("IgnoreUnknown".into(), "1".into()));
            rt.args.push(("IP".into(), ip.to_string()));
        }
        let publishes = ports.is_some();
        let list = net.conflist(&self.ipam_dir, false).map_err(internal)?;
        let result = self
            .cni
            .add(&list, &rt)
            .map_err(|e| NetworkError::FailedPrecondition(format!("network {}: {e}", rec.name)))?;
        let ip = result
            .container_ips(ifname)
            .first()
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        if let Some(ports) = ports.filter(|p| !p.is_empty()) {
            let published = match ip.parse::<Ipv4Addr>() {
                Ok(v4) => hostports::publish(id, &net.bridge, v4, ports)
                    .map_err(|e| NetworkError::FailedPrecondition(e.to_string())),
                Err(_) => Err(NetworkError::FailedPrecondition(format!(
                    "network {}: no IPv4 address to publish ports to",
                    rec.name
                ))),
            };
            if let Err(e) = published {
                let _ = hostports::unpublish(id);
                if let Err(d) = self.cni.del(&list, &rt) {
                    tracing::warn!("undoing a failed attach: {d}");
                }
                return Err(e);
            }
        }
        let joined = Joined {
            network: rec.clone(),
            ifname: ifname.to_string(),
            ip,
            aliases: join.aliases.clone(),
            publishes,
        };
        Ok((joined, (list, rt)))
    }

    /// Writes `attachment.json` (temp file, then rename).
    fn save(&self, cdir: &Path, a: &Attachment) -> Result<()> {
        let data = serde_json::to_vec_pretty(a).map_err(internal)?;
        let tmp = cdir.join("attachment.json.tmp");
        std::fs::write(&tmp, data)
            .and_then(|()| std::fs::rename(&tmp, cdir.join("attachment.json")))
            .map_err(internal)
    }

    /// The joins recorded in container `id`'s labels, with the container.
    fn recorded_joins(
        &self,
        ctx: &Ctx,
        id: &str,
    ) -> Result<(berth_store::metadata::Container, Vec<Join>)> {
        let c = self.store.container(ctx, id).map_err(store_err)?;
        if let Some(other) = c.labels.get(NETNS_OF_LABEL) {
            return Err(NetworkError::FailedPrecondition(format!(
                "container {id} shares the network namespace of container {other}: it cannot be connected to or disconnected from networks"
            )));
        }
        let joins: Vec<Join> = match c.labels.get(NETWORKS_LABEL) {
            Some(v) => serde_json::from_str(v).map_err(|e| {
                NetworkError::InvalidArgument(format!("container label {NETWORKS_LABEL}: {e}"))
            })?,
            None => Vec::new(),
        };
        if joins.is_empty() {
            return Err(NetworkError::FailedPrecondition(format!(
                "container {id} is not on a bridge network (--net none or host): it cannot be connected to or disconnected from networks"
            )));
        }
        Ok((c, joins))
    }

    fn record_joins(
        &self,
        ctx: &Ctx,
        mut c: berth_store::metadata::Container,
        joins: &[Join],
    ) -> Result<()> {
        let text = serde_json::to_string(joins).map_err(internal)?;
        c.labels.insert(NETWORKS_LABEL.to_string(), text);
        self.store.container_update(ctx, &c).map_err(store_err)?;
        Ok(())
    }

    /// Rewrites a running container's hosts and resolv.conf in place (they are bind-mounted,
    /// so their inodes must stay) and its attachment, then the names of `networks`.
    fn update_attachment(&self, a: &Attachment, networks: &[&NetworkRecord]) -> Result<()> {
        let cdir = self.container_dir(&a.namespace, &a.container_id);
        self.save(&cdir, a)?;
        let (hosts, resolv) = container_files(a);
        rewrite_in_place(&cdir.join("hosts"), &hosts)?;
        rewrite_in_place(&cdir.join("resolv.conf"), &resolv)?;
        self.refresh_dns(&a.namespace, networks)
    }

    /// Connects container `id` to network `join.name`, as `docker network connect` does:
    /// recorded in the container's labels (its next task joins it too) and, when its task
    /// runs on berth's networks, joined now as the next `ethN`, with its names served.
    pub fn connect(&self, ctx: &Ctx, id: &str, join: &Join) -> Result<()> {
        let _g = self.guard();
        let rec = self.get(ctx, &join.name)?;
        let (c, mut joins) = self.recorded_joins(ctx, id)?;
        if joins.iter().any(|j| j.name == join.name) {
            return Err(NetworkError::AlreadyExists(format!(
                "container {id} is already connected to network {}",
                join.name
            )));
        }
        let live = self.attachment(&ctx.namespace, id);
        let mut undo = None;
        if let Some(mut a) = live {
            let ifname = (0..)
                .map(|i| format!("eth{i}"))
                .find(|n| a.joined.iter().all(|j| &j.ifname != n))
                .unwrap_or_default();
            let (joined, added) = self.join_one(id, &a.netns.clone(), &ifname, join, &rec, None)?;
            a.joined.push(joined);
            let networks: Vec<&NetworkRecord> = a.joined.iter().map(|j| &j.network).collect();
            if let Err(e) = self.update_attachment(&a, &networks) {
                self.undo_join(&added);
                return Err(e);
            }
            undo = Some(added);
        }
        joins.push(join.clone());
        if let Err(e) = self.record_joins(ctx, c, &joins) {
            if let Some(added) = undo {
                self.undo_join(&added);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Disconnects container `id` from network `name` (labels, and the running task's
    /// interface on it with its address and names).
    pub fn disconnect(&self, ctx: &Ctx, id: &str, name: &str) -> Result<()> {
        let _g = self.guard();
        let (c, mut joins) = self.recorded_joins(ctx, id)?;
        let Some(pos) = joins.iter().position(|j| j.name == name) else {
            return Err(NetworkError::FailedPrecondition(format!(
                "container {id} is not connected to network {name}"
            )));
        };
        if let Some(mut a) = self.attachment(&ctx.namespace, id) {
            if let Some(k) = a.joined.iter().position(|j| j.network.name == name) {
                let j = a.joined.remove(k);
                release::del_join(&self.cni, &self.ipam_dir, &a, &j)?;
                let mut networks: Vec<&NetworkRecord> =
                    a.joined.iter().map(|j| &j.network).collect();
                networks.push(&j.network);
                self.update_attachment(&a, &networks)?;
            }
        }
        joins.remove(pos);
        self.record_joins(ctx, c, &joins)
    }

    fn undo_join(&self, (list, rt): &Added) {
        if let Err(e) = self.cni.del(list, rt) {
            tracing::warn!("undoing a failed connect: {e}");
        }
    }

    /// Tells aardvark-dns the names of every container of namespace `ns` on each of
    /// `networks` (user-defined ones; the default network has no names, as Docker's): its
    /// id, host name and aliases, at its address there. A container started later is thus
    /// found by the ones already running.
    fn refresh_dns(&self, ns: &str, networks: &[&NetworkRecord]) -> Result<()> {
        let all = self.attachments(ns)?;
        for rec in networks.iter().filter(|r| r.name != DEFAULT_NETWORK) {
            let gateway: Ipv4Addr = rec.gateway.parse().map_err(internal)?;
            let mut entries = Vec::new();
            for a in &all {
                for j in a.joined.iter().filter(|j| j.network.id == rec.id) {
                    let Ok(ipv4) = j.ip.parse::<Ipv4Addr>() else {
                        continue;
                    };
                    let mut names = vec![a.container_id.clone()];
                    if !a.hostname.is_empty() && a.hostname != a.container_id {
                        names.push(a.hostname.clone());
                    }
                    names.extend(j.aliases.iter().cloned());
                    entries.push(DnsEntry {
                        id: a.container_id.clone(),
                        ipv4,
                        names,
                    });
                }
            }
            self.dns
                .update(&rec.cni_name, gateway, &entries)
                .map_err(|e| NetworkError::FailedPrecondition(e.to_string()))?;
        }
        Ok(())
    }

    /// The network namespace of another container of the namespace (`--net container:ID`):
    /// its attachment's, else its running init's.
    fn netns_of(&self, ctx: &Ctx, other: &str) -> Result<PathBuf> {
        if let Some(a) = self.attachment(&ctx.namespace, other) {
            return Ok(a.netns);
        }
        Err(NetworkError::FailedPrecondition(format!(
            "container {other} has no network namespace of berthd's to join (it must run on a network)"
        )))
    }

    /// Tears down what [`Networks::attach`] set up for container `id` (idempotent): its names
    /// leave the resolver now; the CNI DELs and the namespace's removal are queued for
    /// [`release`]'s worker (done here if the queue cannot take them).
    pub fn detach(&self, ns: &str, id: &str) -> Result<()> {
        let _g = self.guard();
        let cdir = self.container_dir(ns, id);
        let Some(a) = self.attachment(ns, id) else {
            let _ = std::fs::remove_dir_all(&cdir);
            return Ok(());
        };
        let queued = self.releaser.queue(&cdir, &Self::netns_name(ns, id));
        let result = match queued {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::debug!("container {id}: releasing its networks now: {e}");
                let r = release::teardown(&self.cni, &self.ipam_dir, &a);
                match std::fs::remove_dir_all(&cdir) {
                    Err(e) if r.is_ok() => Err(internal(e)),
                    _ => r,
                }
            }
        };
        let networks: Vec<&NetworkRecord> = a.joined.iter().map(|j| &j.network).collect();
        if let Err(e) = self.refresh_dns(ns, &networks) {
            tracing::warn!("container {id}: {e}");
        }
        result
    }
}

impl Networks {
    /// [`Networks::detach`], and the release done before it returns (berthd's start and
    /// `berth check --repair`, whose callers look at what is left right after).
    fn detach_now(&self, ns: &str, id: &str) -> Result<()> {
        self.detach(ns, id)?;
        let key = Self::netns_name(ns, id);
        self.releaser.drain(|k, _| k == key);
        Ok(())
    }
}

/// A CNI ADD done: the list and runtime config its DEL needs.
type Added = (berth_network::cni::NetworkConfigList, RuntimeConf);

/// A container's /etc/hosts (its own names and `--add-host` lines; others' names are
/// aardvark-dns's) and /etc/resolv.conf (the first user-defined network's resolver on its
/// gateway unless `--dns` names servers; the host's search and options).
fn container_files(a: &Attachment) -> (String, String) {
    let own: Vec<IpAddr> = a.joined.iter().filter_map(|j| j.ip.parse().ok()).collect();
    let aliases: Vec<String> = a.joined.iter().flat_map(|j| j.aliases.clone()).collect();
    let extra: Vec<HostEntry> = a
        .extra_hosts
        .iter()
        .filter_map(|h| HostEntry::parse_extra(h).ok())
        .collect();
    let hosts = files::hosts(&own, &a.hostname, &aliases, &extra);
    let mut nameservers = a.dns.clone();
    if nameservers.is_empty() {
        nameservers.extend(
            a.joined
                .iter()
                .find(|j| j.network.name != DEFAULT_NETWORK)
                .and_then(|j| j.network.gateway.parse::<IpAddr>().ok()),
        );
    }
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolved = std::fs::read_to_string("/run/systemd/resolve/resolv.conf").ok();
    let base = files::choose_host_resolv_conf(&host_resolv, resolved.as_deref());
    let resolv = files::resolv_conf(
        base,
        &DnsOptions {
            nameservers,
            ..DnsOptions::default()
        },
    );
    (hosts, resolv)
}

/// Replaces a file's content keeping its inode (it is bind-mounted into a container).
fn rewrite_in_place(path: &Path, text: &str) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
        .map_err(|e| internal(format!("rewriting {}: {e}", path.display())))
}

/// Undoes a half-made attachment.
struct Undo<'a> {
    cni: &'a Cni,
    dir: PathBuf,
    netns: Option<Netns>,
    added: Vec<Added>,
    /// The owner of published ports to unpublish.
    published: Option<String>,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(owner) = &self.published {
            if let Err(e) = hostports::unpublish(owner) {
                tracing::warn!("undoing a failed attach: {e}");
            }
        }
        for (list, rt) in self.added.iter().rev() {
            if let Err(e) = self.cni.del(list, rt) {
                tracing::warn!("undoing a failed attach: {e}");
            }
        }
        if let Some(ns) = &self.netns {
            let _ = ns.remove();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| internal(format!("writing {}: {e}", path.display())))
}

/// Points the spec's network namespace at `path` (adding the entry if missing).
fn set_spec_netns(spec: &mut serde_json::Value, path: &Path) {
    let entry = serde_json::json!({"type": "network", "path": path});
    match spec["linux"]["namespaces"].as_array_mut() {
        Some(list) => {
            list.retain(|n| n["type"] != "network");
            list.push(entry);
        }
        None => spec["linux"]["namespaces"] = serde_json::json!([entry]),
    }
}

/// Adds a read-write bind of `source` at `dest`, replacing any mount already there.
fn add_bind(spec: &mut serde_json::Value, source: &Path, dest: &str) {
    let m = serde_json::json!({
        "destination": dest, "type": "bind", "source": source,
        "options": ["rbind", "rprivate"]
    });
    match spec["mounts"].as_array_mut() {
        Some(list) => {
            list.retain(|x| x["destination"] != dest);
            list.push(m);
        }
        None => spec["mounts"] = serde_json::json!([m]),
    }
}

/// Removes a bridge device (a network's, once the network is gone); a missing one is fine.
fn delete_bridge(bridge: &str) {
    let out = std::process::Command::new("ip")
        .args(["link", "delete", bridge, "type", "bridge"])
        .output();
    if let Ok(o) = out {
        if !o.status.success() {
            tracing::debug!(
                "ip link delete {bridge}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
    }
}

/// A new 64-hex-digit id.
fn new_id() -> String {
    let mut bytes = [0u8; 32];
    for b in bytes.iter_mut() {
        *b = fastrand::u8(..);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Networks {
    /// The namespaces that have attachments (directories under `<state>/networks`).
    fn namespaces_attached(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .map(|r| {
                r.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != "cni-cache" && n != "dns")
                    .collect()
            })
            .unwrap_or_default()
    }

    /// At berthd's start no build runs: releases what the RUN steps of builds a crash
    /// interrupted still hold (addresses, veths, network namespaces), and what the teardown
    /// queue holds (a crash leaves it as it was).
    pub fn release_builds(&self) {
        self.releaser.drain(|_, _| true);
        for ns in self.namespaces_attached() {
            for a in self.attachments(&ns).unwrap_or_default() {
                if a.build.is_none() {
                    continue;
                }
                match self.detach_now(&ns, &a.container_id) {
                    Ok(()) => tracing::info!(
                        id = a.container_id,
                        "released the network of an interrupted build step"
                    ),
                    Err(e) => tracing::warn!(
                        id = a.container_id,
                        error = %e,
                        "releasing the network of an interrupted build step"
                    ),
                }
            }
        }
    }
}

/// What `berth check` finds in berthd's network state: namespaces, attachments and address
/// leases that belong to no container, as `(kind, what, detail, repaired)`.
impl Networks {
    /// Checks (and with `repair` removes) network pieces no container record owns: netns
    /// files under `<state>/netns`, attachments of removed containers, host-local leases no
    /// attachment holds.
    pub fn check(
        &self,
        repair: bool,
        grace: std::time::Duration,
    ) -> Vec<(&'static str, String, String, bool)> {
        let mut out = Vec::new();
        let mut netns_used = std::collections::HashSet::new();
        let mut leases_used = std::collections::HashSet::new();
        for (_, a) in self.releaser.pending() {
            netns_used.insert(a.netns.clone());
            for j in &a.joined {
                leases_used.insert((j.network.cni_name.clone(), j.ip.clone()));
            }
        }
        for ns in self.namespaces_attached() {
            let ctx = Ctx::new(ns.clone());
            for a in self.attachments(&ns).unwrap_or_default() {
                let what = format!("{ns}/{}", a.container_id);
                let owned = match &a.build {
                    Some(b) => self.builds_dir.join(b).is_dir(),
                    None => self.store.container(&ctx, &a.container_id).is_ok(),
                };
                if !owned {
                    let repaired = repair && self.detach_now(&ns, &a.container_id).is_ok();
                    let detail = match &a.build {
                        Some(b) => format!("network attachment of build {b}, which is over"),
                        None => "network attachment of a container that no longer exists".into(),
                    };
                    out.push(("orphan-attachment", what, detail, repaired));
                    continue;
                }
                if !a.netns.exists() {
                    out.push((
                        "broken-attachment",
                        what.clone(),
                        format!("its network namespace {} is gone", a.netns.display()),
                        false,
                    ));
                }
                netns_used.insert(a.netns.clone());
                for j in &a.joined {
                    leases_used.insert((j.network.cni_name.clone(), j.ip.clone()));
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(&self.netns_dir) {
            for e in entries.flatten() {
                let p = e.path();
                if netns_used.contains(&p) || young(&p, grace) {
                    continue;
                }
                let repaired = repair && netns::remove_path(&p).is_ok();
                out.push((
                    "orphan-netns",
                    p.display().to_string(),
                    "no container's attachment names it".into(),
                    repaired,
                ));
            }
        }
        // Published ports: every owner of a port rule must be an attachment (running or
        // queued for release). Under the attach lock: an attach publishes before it saves.
        {
            let _g = self.guard();
            let mut owners: std::collections::HashSet<String> = self
                .releaser
                .pending()
                .into_iter()
                .map(|(_, a)| a.container_id)
                .collect();
            for ns in self.namespaces_attached() {
                for a in self.attachments(&ns).unwrap_or_default() {
                    owners.insert(a.container_id);
                }
            }
            match hostports::owners() {
                Ok(found) => {
                    for owner in found.into_iter().filter(|o| !owners.contains(o)) {
                        let repaired = repair && hostports::unpublish(&owner).is_ok();
                        out.push((
                            "orphan-port-rule",
                            owner,
                            "published-port rules of a container no attachment holds".into(),
                            repaired,
                        ));
                    }
                }
                Err(e) => tracing::warn!("berth check: reading the published ports: {e}"),
            }
        }
        if let Ok(nets) = std::fs::read_dir(&self.ipam_dir) {
            for net in nets.flatten() {
                let name = net.file_name().to_string_lossy().into_owned();
                let Ok(files) = std::fs::read_dir(net.path()) else {
                    continue;
                };
                for f in files.flatten() {
                    let ip = f.file_name().to_string_lossy().into_owned();
                    if ip.parse::<IpAddr>().is_err()
                        || leases_used.contains(&(name.clone(), ip.clone()))
                        || young(&f.path(), grace)
                    {
                        continue;
                    }
                    let repaired = repair && std::fs::remove_file(f.path()).is_ok();
                    out.push((
                        "orphan-address-lease",
                        format!("{name}/{ip}"),
                        format!("{} is held by no container", f.path().display()),
                        repaired,
                    ));
                }
            }
        }
        out
    }
}
