//! `/networks/*`: list, inspect, create, remove, prune in Docker's shapes, over the engine's
//! networks ([`crate::networks::Networks`]) of the `moby` namespace. `host` and `none` are
//! listed as dockerd lists them (pre-defined, not removable); `bridge` is the engine's default
//! network.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::errors::ApiError;
use super::server::{self, empty, Reply, Req};
use super::{blocking, Api};
use crate::networks::{NetworkRecord, Networks, DEFAULT_NETWORK};

/// The pre-defined networks that are not records: (name, driver).
const PREDEFINED: [(&str, &str); 2] = [("host", "host"), ("none", "null")];

/// A stable ID for a pre-defined network.
fn predefined_id(name: &str) -> String {
    berth_store::Digest::of(format!("berth pre-defined network {name}").as_bytes())
        .hex()
        .to_string()
}

/// A network found by name or ID.
enum Found {
    Record(NetworkRecord),
    Predefined(&'static str, &'static str),
}

impl Found {
    fn name(&self) -> &str {
        match self {
            Found::Record(r) => &r.name,
            Found::Predefined(n, _) => n,
        }
    }

    /// The ID docker shows.
    fn id(&self) -> String {
        match self {
            Found::Record(r) => r.id.clone(),
            Found::Predefined(n, _) => predefined_id(n),
        }
    }
}

fn predefined_shape(name: &str, driver: &str) -> Value {
    json!({
        "Name": name,
        "Id": predefined_id(name),
        "Created": "0001-01-01T00:00:00Z",
        "Scope": "local",
        "Driver": driver,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": []},
        "Internal": false,
        "Attachable": true,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": {},
        "Options": {},
        "Labels": {},
    })
}

/// Docker's `NetworkResource` of a record, with the containers attached now.
fn shape(nets: &Networks, ctx: &berth_store::Ctx, r: &NetworkRecord) -> Result<Value, ApiError> {
    let prefix = r.subnet.split_once('/').map(|(_, p)| p).unwrap_or("32");
    let mut containers = serde_json::Map::new();
    for (a, j) in nets.endpoints(ctx, &r.name)? {
        containers.insert(
            a.container_id.clone(),
            json!({
                "Name": a.container_id,
                "EndpointID": "",
                "MacAddress": "",
                "IPv4Address": format!("{}/{prefix}", j.ip),
                "IPv6Address": "",
            }),
        );
    }
    // Options are what the network was created with, as dockerd reports them (none: berthd
    // takes no driver options); docker-compose recreates a network whose options differ.
    // The bridge's name is in the labels-free `berth network inspect`.
    let options: BTreeMap<&str, String> = BTreeMap::new();
    Ok(json!({
        "Name": r.name,
        "Id": r.id,
        "Created": "0001-01-01T00:00:00Z",
        "Scope": "local",
        "Driver": "bridge",
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": null,
            "Config": [{"Subnet": r.subnet, "Gateway": r.gateway}],
        },
        "Internal": r.internal,
        "Attachable": true,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": options,
        "Labels": r.labels,
    }))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("network {id} not found"))
}

/// Finds a network as dockerd does: full ID, then name, then a unique ID prefix.
fn find(nets: &Networks, ctx: &berth_store::Ctx, id: &str) -> Result<Found, ApiError> {
    for (n, d) in PREDEFINED {
        if id == n || id == predefined_id(n) {
            return Ok(Found::Predefined(n, d));
        }
    }
    let all = nets.list(ctx)?;
    if let Some(r) = all.iter().find(|r| r.id == id || r.name == id) {
        return Ok(Found::Record(r.clone()));
    }
    let hits: Vec<&NetworkRecord> = all.iter().filter(|r| r.id.starts_with(id)).collect();
    let pre: Vec<(&str, &str)> = PREDEFINED
        .iter()
        .copied()
        .filter(|(n, _)| predefined_id(n).starts_with(id))
        .collect();
    match (hits.len() + pre.len(), hits.first(), pre.first()) {
        (1, Some(r), _) => Ok(Found::Record((*r).clone())),
        (1, None, Some((n, d))) => Ok(Found::Predefined(n, d)),
        (0, _, _) => Err(not_found(id)),
        _ => Err(ApiError::bad_request(format!(
            "network {id} is ambiguous ({} matches found based on ID prefix)",
            hits.len() + pre.len()
        ))),
    }
}

fn nets(api: &Api) -> Arc<Networks> {
    api.state.networks().clone()
}

/// `GET /networks?filters=`.
pub async fn list(api: &Api, req: Req) -> Reply {
    let f = req.filters()?;
    f.only(&["name", "id", "label", "driver", "type", "scope", "dangling"])?;
    let dangling = f.bool("dangling")?;
    for t in f.get("type") {
        if t != "builtin" && t != "custom" {
            return Err(ApiError::bad_request(format!(
                "invalid filter: 'type'='{t}'"
            )));
        }
    }
    let (nets, ctx) = (nets(api), api.ctx());
    let v = blocking(move || {
        let mut out = Vec::new();
        let mut all: Vec<(Value, bool)> = PREDEFINED
            .iter()
            .map(|(n, d)| (predefined_shape(n, d), true))
            .collect();
        for r in nets.list(&ctx)? {
            let builtin = r.name == DEFAULT_NETWORK;
            all.push((shape(&nets, &ctx, &r)?, builtin));
        }
        for (v, builtin) in all {
            let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
            let labels: BTreeMap<String, String> =
                serde_json::from_value(v["Labels"].clone()).unwrap_or_default();
            let in_use = v["Containers"].as_object().is_some_and(|c| !c.is_empty());
            let keep = (f.get("name").is_empty()
                || f.get("name").iter().any(|n| s("Name").contains(n.as_str())))
                && (f.get("id").is_empty()
                    || f.get("id").iter().any(|i| s("Id").starts_with(i.as_str())))
                && (f.get("driver").is_empty()
                    || f.get("driver").iter().any(|d| *d == s("Driver")))
                && (f.get("scope").is_empty() || f.get("scope").iter().any(|d| d == "local"))
                && (f.get("type").is_empty()
                    || f.get("type").iter().any(|t| (t == "builtin") == builtin))
                && f.labels_match(&labels)
                && dangling.is_none_or(|d| d == (!builtin && !in_use));
            if keep {
                out.push(v);
            }
        }
        Ok(out)
    })
    .await?;
    Ok(server::json(StatusCode::OK, &v))
}

/// `GET /networks/{id}`.
pub async fn inspect(api: &Api, req: Req, id: &str) -> Reply {
    if req.q_bool("verbose")? {
        return Err(ApiError::unsupported("network inspect --verbose"));
    }
    if req
        .q("scope")
        .is_some_and(|s| !s.is_empty() && s != "local")
    {
        return Err(ApiError::unsupported(format!(
            "network scope {:?}",
            req.q("scope").unwrap_or("")
        )));
    }
    let (nets, ctx, id) = (nets(api), api.ctx(), id.to_string());
    let v = blocking(move || match find(&nets, &ctx, &id)? {
        Found::Record(r) => shape(&nets, &ctx, &r),
        Found::Predefined(n, d) => Ok(predefined_shape(n, d)),
    })
    .await?;
    Ok(server::json(StatusCode::OK, &v))
}

/// IPAM of `POST /networks/create`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Ipam {
    #[serde(rename = "Driver")]
    driver: String,
    #[serde(rename = "Config")]
    config: Option<Vec<IpamConfig>>,
    #[serde(rename = "Options")]
    options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct IpamConfig {
    #[serde(rename = "Subnet")]
    subnet: String,
    #[serde(rename = "IPRange")]
    ip_range: String,
    #[serde(rename = "Gateway")]
    gateway: String,
    #[serde(rename = "AuxiliaryAddresses")]
    aux: Option<BTreeMap<String, String>>,
}

/// The body of `POST /networks/create`; [`CreateRequest::check`] says what berthd makes of it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateRequest {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "CheckDuplicate")]
    _check_duplicate: bool,
    #[serde(rename = "Driver")]
    driver: String,
    #[serde(rename = "Scope")]
    scope: String,
    #[serde(rename = "Internal")]
    internal: bool,
    #[serde(rename = "Attachable")]
    attachable: bool,
    #[serde(rename = "Ingress")]
    ingress: bool,
    #[serde(rename = "ConfigOnly")]
    config_only: bool,
    #[serde(rename = "ConfigFrom")]
    config_from: Option<Value>,
    #[serde(rename = "IPAM")]
    ipam: Option<Ipam>,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: bool,
    #[serde(rename = "Options")]
    options: Option<BTreeMap<String, String>>,
    #[serde(rename = "Labels")]
    labels: Option<BTreeMap<String, String>>,
}

impl CreateRequest {
    /// Refuses, naming it, every option berthd's networks do not implement; returns the
    /// subnet and gateway asked for.
    pub fn check(&self) -> Result<(String, String), ApiError> {
        if self.name.is_empty() {
            return Err(ApiError::bad_request("a network needs a name (Name)"));
        }
        if !(self.driver.is_empty() || self.driver == "bridge") {
            return Err(ApiError::unsupported(format!(
                "network driver {:?} (only \"bridge\")",
                self.driver
            )));
        }
        if !(self.scope.is_empty() || self.scope == "local") {
            return Err(ApiError::unsupported(format!(
                "network scope {:?}",
                self.scope
            )));
        }
        // Attachable (docker-compose sets it) asks that standalone containers may join: every
        // local bridge network of berthd's lets them, so it asks for nothing more.
        for (on, what) in [
            (self.ingress, "Ingress"),
            (self.config_only, "ConfigOnly"),
            (self.enable_ipv6, "EnableIPv6 (IPv6 networks)"),
        ] {
            if on {
                return Err(ApiError::unsupported(format!("network option {what}")));
            }
        }
        if self
            .config_from
            .as_ref()
            .is_some_and(|c| !c.is_null() && c["Network"].as_str().is_some_and(|n| !n.is_empty()))
        {
            return Err(ApiError::unsupported("network option ConfigFrom"));
        }
        if let Some(k) = self.options.iter().flatten().map(|(k, _)| k).next() {
            return Err(ApiError::unsupported(format!(
                "network driver option {k:?}"
            )));
        }
        let Some(ipam) = &self.ipam else {
            return Ok((String::new(), String::new()));
        };
        if !(ipam.driver.is_empty() || ipam.driver == "default") {
            return Err(ApiError::unsupported(format!(
                "IPAM driver {:?} (only \"default\")",
                ipam.driver
            )));
        }
        if let Some(k) = ipam.options.iter().flatten().map(|(k, _)| k).next() {
            return Err(ApiError::unsupported(format!("IPAM option {k:?}")));
        }
        let configs = ipam.config.as_deref().unwrap_or(&[]);
        if configs.len() > 1 {
            return Err(ApiError::unsupported(
                "more than one IPAM config (subnet) per network",
            ));
        }
        match configs.first() {
            None => Ok((String::new(), String::new())),
            Some(c) => {
                if !c.ip_range.is_empty() {
                    return Err(ApiError::unsupported("IPAM option IPRange (--ip-range)"));
                }
                if c.aux.as_ref().is_some_and(|a| !a.is_empty()) {
                    return Err(ApiError::unsupported(
                        "IPAM option AuxiliaryAddresses (--aux-address)",
                    ));
                }
                if c.subnet.is_empty() && !c.gateway.is_empty() {
                    return Err(ApiError::bad_request("a gateway needs a subnet"));
                }
                Ok((c.subnet.clone(), c.gateway.clone()))
            }
        }
    }
}

/// `POST /networks/create` (201 `{"Id", "Warning"}`); an existing name is a 409.
pub async fn create(api: &Api, req: Req) -> Reply {
    let r: CreateRequest = req.json().await?;
    let (subnet, gateway) = r.check()?;
    let (nets, ctx) = (nets(api), api.ctx());
    let rec = blocking(move || {
        if PREDEFINED.iter().any(|(n, _)| *n == r.name) {
            return Err(ApiError::conflict(format!(
                "network with name {} already exists",
                r.name
            )));
        }
        Ok(nets.create(
            &ctx,
            &r.name,
            &subnet,
            &gateway,
            r.internal,
            r.labels.unwrap_or_default(),
        )?)
    })
    .await?;
    api.events.network(&rec.id, &rec.name, "create", &[]);
    Ok(server::json(
        StatusCode::CREATED,
        &json!({"Id": rec.id, "Warning": ""}),
    ))
}

/// `DELETE /networks/{id}` (204); pre-defined or in use: 403.
pub async fn remove(api: &Api, _req: Req, id: &str) -> Reply {
    let (nets, ctx, id) = (nets(api), api.ctx(), id.to_string());
    let (nid, name) = blocking(move || match find(&nets, &ctx, &id)? {
        Found::Predefined(n, _) => Err(ApiError::forbidden(format!(
            "{n} is a pre-defined network and cannot be removed"
        ))),
        f => {
            nets.remove(&ctx, f.name())?;
            Ok((f.id(), f.name().to_string()))
        }
    })
    .await?;
    api.events.network(&nid, &name, "destroy", &[]);
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /networks/{id}/connect` (`{"Container", "EndpointConfig": {"Aliases", "IPAMConfig"}}`):
/// recorded on the container, and joined at once when it runs.
pub async fn connect(api: &Api, req: Req, id: &str) -> Reply {
    let body: Value = req.json().await?;
    let who = body["Container"].as_str().unwrap_or("").to_string();
    if who.is_empty() {
        return Err(ApiError::bad_request("Container is required"));
    }
    let ep = &body["EndpointConfig"];
    for k in ["Links", "DriverOpts", "MacAddress"] {
        if ep[k].as_array().is_some_and(|a| !a.is_empty())
            || ep[k].as_object().is_some_and(|o| !o.is_empty())
            || ep[k].as_str().is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::unsupported(format!("EndpointConfig.{k}")));
        }
    }
    if ep["IPAMConfig"]["IPv6Address"]
        .as_str()
        .is_some_and(|s| !s.is_empty())
    {
        return Err(ApiError::unsupported(
            "EndpointConfig.IPAMConfig.IPv6Address",
        ));
    }
    let ip = ep["IPAMConfig"]["IPv4Address"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let c = api.find_container(&who).await?;
    let meta = super::lifecycle::Meta::of(&c);
    let mut aliases: Vec<String> = ep["Aliases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let (nets, ctx, id) = (nets(api), api.ctx(), id.to_string());
    let cid = c.id.clone();
    let (nid, nname) = blocking(move || {
        let f = find(&nets, &ctx, &id)?;
        let name = f.name().to_string();
        let nid = f.id();
        if matches!(name.as_str(), "host" | "none") {
            return Err(ApiError::forbidden(format!(
                "container cannot be disconnected from host network or connected to {name} network"
            )));
        }
        if name != "bridge" {
            // Its name and short ID answer on a user-defined network, as with dockerd.
            for a in [c.id[..12].to_string(), meta.name.clone()] {
                if !aliases.contains(&a) {
                    aliases.insert(0, a);
                }
            }
        }
        let joined = name.clone();
        nets.connect(&ctx, &c.id, &crate::networks::Join { name, aliases, ip })
            .map_err(|e| match e {
                crate::networks::NetworkError::AlreadyExists(m) => ApiError::forbidden(m),
                e => e.into(),
            })?;
        Ok((nid, joined))
    })
    .await?;
    api.events
        .network(&nid, &nname, "connect", &[("container", cid)]);
    Ok(empty(StatusCode::OK))
}

/// `POST /networks/{id}/disconnect` (`{"Container", "Force"}`).
pub async fn disconnect(api: &Api, req: Req, id: &str) -> Reply {
    let body: Value = req.json().await?;
    let who = body["Container"].as_str().unwrap_or("").to_string();
    if who.is_empty() {
        return Err(ApiError::bad_request("Container is required"));
    }
    let c = api.find_container(&who).await?;
    let (nets, ctx, id) = (nets(api), api.ctx(), id.to_string());
    let cid = c.id.clone();
    let (nid, name) = blocking(move || {
        let f = find(&nets, &ctx, &id)?;
        nets.disconnect(&ctx, &c.id, f.name())?;
        Ok((f.id(), f.name().to_string()))
    })
    .await?;
    api.events
        .network(&nid, &name, "disconnect", &[("container", cid)]);
    Ok(empty(StatusCode::OK))
}

/// `POST /networks/prune`: every network of the namespace no container uses (not `bridge`).
pub async fn prune(api: &Api, req: Req) -> Reply {
    let f = req.filters()?;
    if !f.get("until").is_empty() {
        return Err(ApiError::unsupported("the until filter of network prune"));
    }
    f.only(&["label"])?;
    let (nets, ctx) = (nets(api), api.ctx());
    let deleted = blocking(move || {
        let mut gone = Vec::new();
        for r in nets.list(&ctx)? {
            if r.name == DEFAULT_NETWORK
                || !f.labels_match(&r.labels)
                || !nets.endpoints(&ctx, &r.name)?.is_empty()
            {
                continue;
            }
            match nets.remove(&ctx, &r.name) {
                Ok(()) => gone.push(r.name),
                // Joined meanwhile: not unused any more.
                Err(crate::networks::NetworkError::FailedPrecondition(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(gone)
    })
    .await?;
    Ok(server::json(
        StatusCode::OK,
        &json!({ "NetworksDeleted": deleted }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> CreateRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_docker_clis_create_body_passes() {
        let r = req(json!({
            "Name": "app", "CheckDuplicate": true, "Driver": "bridge", "Scope": "",
            "EnableIPv6": false, "IPAM": {"Driver": "default", "Options": {}, "Config":
            [{"Subnet": "10.99.0.0/24", "Gateway": "10.99.0.1"}]}, "Internal": false,
            "Attachable": false, "Ingress": false, "ConfigOnly": false, "ConfigFrom": null,
            "Options": {}, "Labels": {"a": "b"}
        }));
        assert_eq!(
            r.check().unwrap(),
            ("10.99.0.0/24".to_string(), "10.99.0.1".to_string())
        );
    }

    #[test]
    fn options_berthd_lacks_are_refused_by_name() {
        for (body, word) in [
            (json!({"Name": "a", "Driver": "overlay"}), "overlay"),
            (json!({"Name": "a", "EnableIPv6": true}), "EnableIPv6"),
            (
                json!({"Name": "a", "Options": {"com.docker.network.bridge.name": "x"}}),
                "com.docker.network.bridge.name",
            ),
            (
                json!({"Name": "a", "IPAM": {"Config": [{"Subnet": "10.1.0.0/16", "IPRange": "10.1.1.0/24"}]}}),
                "IPRange",
            ),
            (json!({"Name": "a", "Ingress": true}), "Ingress"),
        ] {
            let e = req(body).check().unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains(word), "{}", e.message);
        }
    }
}
