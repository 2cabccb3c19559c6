//! `berth run`'s network flags: `--net none|host|bridge|NAME|container:ID` (several networks
//! by repeating it), `-p`, `-P`, `--ip`, `--network-alias`, `--hostname`, `--dns`,
//! `--add-host`. They become the container's labels that berthd reads when it creates the
//! task (see `crate::networks`), and the spec's namespaces.

use std::collections::HashMap;

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::networks::{
    Join, DNS_LABEL, EXTRA_HOSTS_LABEL, HOSTNAME_LABEL, NETNS_OF_LABEL, NETWORKS_LABEL, PORTS_LABEL,
};

/// The flags, as clap parsed them.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct NetFlags {
    /// Network: none (only lo, the default), host, bridge (berth's default network), a
    /// network's name, or container:ID; repeat it to join several networks.
    #[arg(long = "net", visible_alias = "network")]
    pub net: Vec<String>,
    /// Publish a port: [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp], ranges allowed.
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish every port the image exposes on a free host port.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// The container's address on its (first) network.
    #[arg(long)]
    pub ip: Option<String>,
    /// Extra names the container has on its networks.
    #[arg(long = "network-alias")]
    pub network_alias: Vec<String>,
    /// The container's host name (default: the first 12 characters of its id).
    #[arg(long)]
    pub hostname: Option<String>,
    /// A name server for /etc/resolv.conf instead of the host's.
    #[arg(long)]
    pub dns: Vec<String>,
    /// An extra /etc/hosts line, NAME:IP.
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
}

/// What the flags ask for: `spec` is changed (namespaces, hostname, host-mode files) and the
/// labels for the container record are returned.
pub fn apply(
    flags: &NetFlags,
    image_config: &Value,
    spec: &mut Value,
) -> Result<HashMap<String, String>> {
    let mut labels = HashMap::new();
    let modes: Vec<&str> = flags.net.iter().map(String::as_str).collect();
    let special = modes
        .iter()
        .find(|m| matches!(**m, "none" | "host") || m.starts_with("container:"));
    if let Some(m) = special {
        if modes.len() > 1 {
            bail!("--net {m} cannot be combined with other networks");
        }
    }
    let wants_ports = !flags.publish.is_empty() || flags.publish_all;
    let mut ports: Vec<String> = flags.publish.clone();
    if flags.publish_all {
        if let Some(exposed) = image_config["ExposedPorts"].as_object() {
            ports.extend(exposed.keys().cloned());
        }
    }
    for p in &ports {
        p.parse::<berth_network::ports::PortSpec>()
            .map_err(|e| anyhow::anyhow!("--publish: {e}"))?;
    }
    let needs_network = |what: &str| -> Result<()> {
        bail!("{what} needs a network: use --net bridge or --net NAME")
    };
    if let Some(h) = &flags.hostname {
        crate::identifiers::validate(h).map_err(|e| anyhow::anyhow!("--hostname: {e}"))?;
        spec["hostname"] = json!(h);
    }
    match modes.as_slice() {
        [] | ["none"] => {
            if wants_ports {
                needs_network("-p")?;
            }
            if flags.ip.is_some() || !flags.network_alias.is_empty() {
                needs_network("--ip/--network-alias")?;
            }
            return Ok(labels);
        }
        ["host"] => {
            if wants_ports {
                bail!("-p cannot be used with --net host: the container's ports are the host's");
            }
            if let Some(list) = spec["linux"]["namespaces"].as_array_mut() {
                list.retain(|n| n["type"] != "network");
            }
            // The host's resolver and hosts, read-only, as Docker gives a host-network container.
            for f in ["/etc/resolv.conf", "/etc/hosts"] {
                if std::path::Path::new(f).exists() {
                    if let Some(m) = spec["mounts"].as_array_mut() {
                        m.push(json!({"destination": f, "type": "bind", "source": f,
                                      "options": ["rbind", "ro"]}));
                    }
                }
            }
            return Ok(labels);
        }
        [m] if m.starts_with("container:") => {
            let other = &m["container:".len()..];
            crate::identifiers::validate(other).map_err(|e| anyhow::anyhow!("--net {m}: {e}"))?;
            if wants_ports || flags.ip.is_some() {
                bail!("--net {m}: ports and addresses are the other container's");
            }
            labels.insert(NETNS_OF_LABEL.to_string(), other.to_string());
            return Ok(labels);
        }
        _ => {}
    }
    let mut joins = Vec::new();
    for (i, name) in modes.iter().enumerate() {
        if joins.iter().any(|j: &Join| j.name == *name) {
            bail!("--net {name} given twice");
        }
        joins.push(Join {
            name: name.to_string(),
            aliases: flags.network_alias.clone(),
            ip: if i == 0 {
                flags.ip.clone().unwrap_or_default()
            } else {
                String::new()
            },
        });
    }
    labels.insert(NETWORKS_LABEL.into(), serde_json::to_string(&joins)?);
    if !ports.is_empty() {
        labels.insert(PORTS_LABEL.into(), serde_json::to_string(&ports)?);
    }
    if let Some(h) = &flags.hostname {
        labels.insert(HOSTNAME_LABEL.into(), h.clone());
    }
    if !flags.dns.is_empty() {
        for d in &flags.dns {
            d.parse::<std::net::IpAddr>()
                .map_err(|_| anyhow::anyhow!("--dns {d:?} is not an IP address"))?;
        }
        labels.insert(DNS_LABEL.into(), flags.dns.join(","));
    }
    if !flags.add_host.is_empty() {
        for h in &flags.add_host {
            berth_network::files::HostEntry::parse_extra(h)
                .map_err(|e| anyhow::anyhow!("--add-host: {e}"))?;
        }
        labels.insert(
            EXTRA_HOSTS_LABEL.into(),
            serde_json::to_string(&flags.add_host)?,
        );
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Value {
        json!({"linux": {"namespaces": [{"type": "pid"}, {"type": "network"}]}, "mounts": []})
    }

    #[test]
    fn none_is_the_default_and_keeps_only_lo() {
        let mut s = spec();
        let l = apply(&NetFlags::default(), &json!({}), &mut s).unwrap();
        assert!(l.is_empty());
        assert_eq!(s["linux"]["namespaces"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn host_drops_the_network_namespace_and_refuses_ports() {
        let mut s = spec();
        let f = NetFlags {
            net: vec!["host".into()],
            ..Default::default()
        };
        apply(&f, &json!({}), &mut s).unwrap();
        assert!(!s["linux"]["namespaces"].to_string().contains("network"));
        let f = NetFlags {
            net: vec!["host".into()],
            publish: vec!["80".into()],
            ..Default::default()
        };
        assert!(apply(&f, &json!({}), &mut spec()).is_err());
    }

    #[test]
    fn networks_become_labels() {
        let f = NetFlags {
            net: vec!["bridge".into(), "web".into()],
            publish: vec!["127.0.0.1:8080:80".into()],
            publish_all: true,
            network_alias: vec!["db".into()],
            dns: vec!["10.0.0.2".into()],
            add_host: vec!["x:10.0.0.3".into()],
            ..Default::default()
        };
        let cfg = json!({"ExposedPorts": {"443/tcp": {}}});
        let l = apply(&f, &cfg, &mut spec()).unwrap();
        let joins: Vec<Join> = serde_json::from_str(&l[NETWORKS_LABEL]).unwrap();
        assert_eq!(joins.len(), 2);
        assert_eq!(joins[1].aliases, vec!["db".to_string()]);
        assert_eq!(l[PORTS_LABEL], r#"["127.0.0.1:8080:80","443/tcp"]"#);
        assert_eq!(l[DNS_LABEL], "10.0.0.2");
    }

    #[test]
    fn bad_flags_are_named() {
        for (f, needle) in [
            (
                NetFlags {
                    publish: vec!["80".into()],
                    ..Default::default()
                },
                "needs a network",
            ),
            (
                NetFlags {
                    net: vec!["bridge".into()],
                    publish: vec!["x:80".into()],
                    ..Default::default()
                },
                "--publish",
            ),
            (
                NetFlags {
                    net: vec!["none".into(), "bridge".into()],
                    ..Default::default()
                },
                "cannot be combined",
            ),
            (
                NetFlags {
                    net: vec!["bridge".into()],
                    dns: vec!["nope".into()],
                    ..Default::default()
                },
                "--dns",
            ),
        ] {
            let e = apply(&f, &json!({}), &mut spec()).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
