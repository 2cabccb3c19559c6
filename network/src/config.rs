//! A berth network's definition and the CNI conflist it becomes.
//!
//! The chain is short on purpose, as each plugin is a Go binary run per container: `bridge`
//! (with host-local IPAM) makes the veth, the address and the routes, and `portmap`, only for a
//! container that publishes ports, adds its DNAT rules. Masquerade and forward-accept rules are
//! per network, not per container (see [`crate::firewall`]), so the bridge plugin runs with
//! `ipMasq` off and the firewall plugin is not needed. The IPAM leases live under a directory
//! the caller gives (berthd's state dir), never /var/lib/cni; nothing is read from or written
//! to /etc/cni.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::json;

use crate::cni::{valid_name, NetworkConfigList, CNI_VERSION};
use crate::subnet::{Subnet, SubnetError};

/// The bridge of the default network, as docker0 is Docker's.
pub const DEFAULT_BRIDGE: &str = "berth0";

/// The longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// A network definition that cannot be used; names the network and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Bad network name.
    #[error("invalid network name {0:?}: must start with a letter or digit and contain only letters, digits, '_', '.' and '-'")]
    Name(String),
    /// Bad network id.
    #[error("network {name:?}: invalid id {id:?}: must be at least 12 lowercase hex digits")]
    Id {
        /// The network's name.
        name: String,
        /// The id given.
        id: String,
    },
    /// Bad bridge name.
    #[error("network {name:?}: invalid bridge name {bridge:?}: {reason}")]
    Bridge {
        /// The network's name.
        name: String,
        /// The bridge name given.
        bridge: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Bad subnet or gateway.
    #[error("network {name:?}: {source}")]
    Subnet {
        /// The network's name.
        name: String,
        /// What is wrong.
        #[source]
        source: SubnetError,
    },
    /// The IPAM data directory must be absolute (the plugin runs with another cwd).
    #[error("network {name:?}: IPAM data directory {dir:?} is not absolute")]
    IpamDir {
        /// The network's name.
        name: String,
        /// The directory given.
        dir: String,
    },
}

/// A user-defined (or the default) bridge network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The name users refer to it by; also the CNI network name (which keys IPAM state and
    /// the plugins' iptables chains).
    pub name: String,
    /// The network's id (64 hex digits, as Docker's; at least 12).
    pub id: String,
    /// The Linux bridge: [`DEFAULT_BRIDGE`] for the default network, else
    /// [`Network::bridge_for_id`].
    pub bridge: String,
    /// The subnet addresses are taken from.
    pub subnet: Subnet,
    /// The bridge's address and the containers' default gateway.
    pub gateway: Ipv4Addr,
    /// No route out: no default route in containers, no masquerade, no published ports, and
    /// traffic between the bridge and anything else is dropped (see [`crate::isolation`]).
    pub internal: bool,
    /// Free-form labels (`--label`).
    pub labels: BTreeMap<String, String>,
}

impl Network {
    /// A network on `subnet` with the bridge `br-<first 12 of id>` and the subnet's first host
    /// address as gateway, validated.
    pub fn new(name: &str, id: &str, subnet: Subnet) -> Result<Network, ConfigError> {
        let gateway = subnet.host(1).ok_or_else(|| ConfigError::Subnet {
            name: name.to_string(),
            source: SubnetError::Invalid {
                cidr: subnet.to_string(),
                reason: "too small for a gateway and a container".into(),
            },
        })?;
        let net = Network {
            name: name.to_string(),
            id: id.to_string(),
            bridge: Self::bridge_for_id(id),
            subnet,
            gateway,
            internal: false,
            labels: BTreeMap::new(),
        };
        net.validate()?;
        Ok(net)
    }

    /// The bridge name of a user-defined network: `br-` and the first 12 characters of its
    /// id, as Docker names its bridges.
    pub fn bridge_for_id(id: &str) -> String {
        format!("br-{}", id.get(..12).unwrap_or(id))
    }

    /// Checks name, id, bridge name, subnet and gateway.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !valid_name(&self.name) {
            return Err(ConfigError::Name(self.name.clone()));
        }
        if self.id.len() < 12
            || !self
                .id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ConfigError::Id {
                name: self.name.clone(),
                id: self.id.clone(),
            });
        }
        let bridge_err = |reason| ConfigError::Bridge {
            name: self.name.clone(),
            bridge: self.bridge.clone(),
            reason,
        };
        if self.bridge.is_empty() || self.bridge.len() > MAX_IFNAME {
            return Err(bridge_err("must be 1-15 characters"));
        }
        if self.bridge == "." || self.bridge == ".." {
            return Err(bridge_err("must not be '.' or '..'"));
        }
        if !self
            .bridge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(bridge_err(
                "may contain only letters, digits, '-', '_' and '.'",
            ));
        }
        if self.subnet.prefix() > 30 {
            return Err(ConfigError::Subnet {
                name: self.name.clone(),
                source: SubnetError::Invalid {
                    cidr: self.subnet.to_string(),
                    reason: "too small for a gateway and a container (at most /30)".into(),
                },
            });
        }
        self.subnet
            .check_gateway(self.gateway)
            .map_err(|source| ConfigError::Subnet {
                name: self.name.clone(),
                source,
            })
    }

    /// The CNI conflist for this network, with portmap when `publish` (a container that
    /// publishes ports on it; its DEL must use the same list). host-local keeps its leases
    /// under `<ipam_dir>/<name>/`.
    pub fn conflist(
        &self,
        ipam_dir: &Path,
        publish: bool,
    ) -> Result<NetworkConfigList, ConfigError> {
        self.validate()?;
        if !ipam_dir.is_absolute() {
            return Err(ConfigError::IpamDir {
                name: self.name.clone(),
                dir: ipam_dir.display().to_string(),
            });
        }
        let routes = if self.internal {
            json!([])
        } else {
            json!([{ "dst": "0.0.0.0/0" }])
        };
        let mut plugins = vec![json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{
                    "subnet": self.subnet.to_string(),
                    "gateway": self.gateway.to_string(),
                }]],
                "routes": routes,
                "dataDir": ipam_dir.display().to_string(),
            },
        })];
        if publish && !self.internal {
            plugins.push(json!({
                "type": "portmap",
                "capabilities": { "portMappings": true },
                "snat": true,
            }));
        }
        Ok(NetworkConfigList {
            cni_version: CNI_VERSION.into(),
            name: self.name.clone(),
            disable_check: false,
            plugins,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn net() -> Network {
        Network::new("web", ID, "10.5.0.0/24".parse().unwrap()).unwrap()
    }

    #[test]
    fn defaults() {
        let n = net();
        assert_eq!(n.bridge, "br-0123456789ab");
        assert_eq!(n.gateway, Ipv4Addr::new(10, 5, 0, 1));
    }

    #[test]
    fn conflist_for_a_routed_network() {
        let l = net()
            .conflist(Path::new("/var/lib/berth/ipam"), true)
            .unwrap();
        assert_eq!(l.name, "web");
        assert_eq!(l.cni_version, "1.0.0");
        let types: Vec<_> = l.plugins.iter().map(|p| p["type"].clone()).collect();
        assert_eq!(types, vec!["bridge", "portmap"]);
        let b = &l.plugins[0];
        assert_eq!(b["bridge"], "br-0123456789ab");
        assert_eq!(b["isGateway"], true);
        assert_eq!(b["ipMasq"], false, "masquerade is per network");
        assert_eq!(b["hairpinMode"], true);
        assert_eq!(b["ipam"]["type"], "host-local");
        assert_eq!(b["ipam"]["dataDir"], "/var/lib/berth/ipam");
        assert_eq!(b["ipam"]["ranges"][0][0]["subnet"], "10.5.0.0/24");
        assert_eq!(b["ipam"]["ranges"][0][0]["gateway"], "10.5.0.1");
        assert_eq!(b["ipam"]["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(l.plugins[1]["capabilities"]["portMappings"], true);
        assert_eq!(l.plugins[1]["snat"], true);
        l.validate().unwrap();
        let l = net().conflist(Path::new("/x"), false).unwrap();
        let types: Vec<_> = l.plugins.iter().map(|p| p["type"].clone()).collect();
        assert_eq!(types, vec!["bridge"], "no portmap without ports");
    }

    #[test]
    fn conflist_for_an_internal_network() {
        let mut n = net();
        n.internal = true;
        let l = n.conflist(Path::new("/x"), true).unwrap();
        let types: Vec<_> = l.plugins.iter().map(|p| p["type"].clone()).collect();
        assert_eq!(types, vec!["bridge"]);
        assert_eq!(l.plugins[0]["ipMasq"], false);
        assert_eq!(l.plugins[0]["ipam"]["routes"], json!([]));
    }

    #[test]
    fn errors_name_the_network_and_field() {
        let e = Network::new("-x", ID, "10.5.0.0/24".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("\"-x\""));
        let e = Network::new("web", "XYZ", "10.5.0.0/24".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("invalid id \"XYZ\""));
        let mut n = net();
        n.bridge = "a-very-long-bridge".into();
        assert!(n
            .validate()
            .unwrap_err()
            .to_string()
            .contains("invalid bridge name \"a-very-long-bridge\""));
        n.bridge = "br 0".into();
        assert!(n.validate().is_err());
        let mut n = net();
        n.gateway = Ipv4Addr::new(10, 6, 0, 1);
        assert_eq!(
            n.validate().unwrap_err().to_string(),
            "network \"web\": gateway 10.6.0.1 is not a usable host address of subnet 10.5.0.0/24"
        );
        assert!(Network::new("web", ID, "10.5.0.0/31".parse().unwrap()).is_err());
        assert!(net().conflist(Path::new("rel"), false).is_err());
    }
}
