//! Published ports: Docker's `-p` syntax, free host ports, and portmap's `portMappings`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::cni::RuntimeConf;

/// A bad `-p` value or an unusable host port; names the spec or the port.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// The `-p` value does not parse.
    #[error("invalid port specification {spec:?}: {reason}")]
    Invalid {
        /// The value given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Something on the host already holds the port.
    #[error("host port {port}/{protocol} on {ip} is already in use: {reason}")]
    InUse {
        /// The host address.
        ip: IpAddr,
        /// The port.
        port: u16,
        /// The protocol.
        protocol: Protocol,
        /// Who holds it ("another container" or the bind error).
        reason: String,
    },
    /// No port of a host range is free.
    #[error("no free host port in {first}-{last}/{protocol} on {ip}")]
    RangeExhausted {
        /// The host address.
        ip: IpAddr,
        /// First port of the range.
        first: u16,
        /// Last port of the range.
        last: u16,
        /// The protocol.
        protocol: Protocol,
    },
}

/// A transport protocol portmap can forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Protocol, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            other => Err(format!("unknown protocol {other:?} (tcp, udp or sctp)")),
        }
    }
}

/// One entry of portmap's `runtimeConfig.portMappings`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortMapping {
    /// The port on the host.
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    /// The port in the container.
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    /// The protocol.
    pub protocol: Protocol,
    /// The host address to publish on; `None` for all of them.
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

/// A parsed `-p` value: host ports still to be checked or chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// The host address, if given.
    pub host_ip: Option<IpAddr>,
    /// The host port range, if given (a single port is a range of one).
    pub host_ports: Option<(u16, u16)>,
    /// The container port range.
    pub container_ports: (u16, u16),
    /// The protocol.
    pub protocol: Protocol,
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("{p:?} is not a port (1-65535)")),
            Ok(n) => Ok(n),
        }
    };
    match s.split_once('-') {
        None => {
            let p = port(s)?;
            Ok((p, p))
        }
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if a > b {
                return Err(format!("range {s:?} ends before it starts"));
            }
            Ok((a, b))
        }
    }
}

impl FromStr for PortSpec {
    type Err = PortError;

    /// `[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]`, ports or ranges (`8000-8001:80-81`);
    /// an IPv6 host address goes in brackets (`[::1]:8080:80`).
    fn from_str(spec: &str) -> Result<PortSpec, PortError> {
        let invalid = |reason: String| PortError::Invalid {
            spec: spec.to_string(),
            reason,
        };
        let (rest, protocol) = match spec.rsplit_once('/') {
            Some((r, p)) => (r, p.parse::<Protocol>().map_err(invalid)?),
            None => (spec, Protocol::Tcp),
        };
        // Split off a bracketed IPv6 address first; the rest is colon-separated.
        let (host_ip, rest) = if let Some(after) = rest.strip_prefix('[') {
            let (ip, tail) = after
                .split_once(']')
                .ok_or_else(|| invalid("unclosed '[' around the host address".into()))?;
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| invalid(format!("{ip:?} is not an IP address")))?;
            let tail = tail
                .strip_prefix(':')
                .ok_or_else(|| invalid("expected ':' after the host address".into()))?;
            (Some(ip), tail.to_string())
        } else {
            (None, rest.to_string())
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let (ip_part, host_part, container_part) = match (host_ip, parts.as_slice()) {
            (None, [c]) => (None, None, *c),
            (None, [h, c]) => (None, Some(*h), *c),
            (None, [ip, h, c]) => (Some(*ip), Some(*h), *c),
            (Some(_), [h, c]) => (None, Some(*h), *c),
            _ => {
                return Err(invalid(
                    "expected [HOST_IP:][HOST_PORT:]CONTAINER_PORT".into(),
                ))
            }
        };
        let host_ip = match ip_part {
            Some("") => None,
            Some(ip) => Some(
                ip.parse::<IpAddr>()
                    .map_err(|_| invalid(format!("{ip:?} is not an IP address")))?,
            ),
            None => host_ip,
        };
        if container_part.is_empty() {
            return Err(invalid("no container port".into()));
        }
        let container_ports = parse_range(container_part).map_err(invalid)?;
        let host_ports = match host_part {
            None | Some("") => None,
            Some(h) => Some(parse_range(h).map_err(invalid)?),
        };
        if let Some((a, b)) = host_ports {
            let (c, d) = container_ports;
            // Equal lengths map one to one; one container port takes any port of the range.
            if b - a != d - c && c != d {
                return Err(invalid(format!(
                    "host range {a}-{b} and container range {c}-{d} differ in length"
                )));
            }
        }
        Ok(PortSpec {
            host_ip,
            host_ports,
            container_ports,
            protocol,
        })
    }
}

/// A mapping's host address, with `None` meaning every address.
fn host_addr(ip: Option<IpAddr>) -> IpAddr {
    ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn same_socket(a: &PortMapping, ip: Option<IpAddr>, port: u16, protocol: Protocol) -> bool {
    a.host_port == port
        && a.protocol == protocol
        && (a.host_ip.is_none() || ip.is_none() || a.host_ip == ip)
}

/// Fails with [`PortError::InUse`] if a mapping in `taken` (other containers' published
/// ports, which hold no socket) or a socket on the host holds `ip:port`.
pub fn check_free(
    ip: Option<IpAddr>,
    port: u16,
    protocol: Protocol,
    taken: &[PortMapping],
) -> Result<(), PortError> {
    let addr = host_addr(ip);
    if taken.iter().any(|t| same_socket(t, ip, port, protocol)) {
        return Err(PortError::InUse {
            ip: addr,
            port,
            protocol,
            reason: "published by another container".into(),
        });
    }
    let sock = SocketAddr::new(addr, port);
    let bound = match protocol {
        Protocol::Tcp => TcpListener::bind(sock).map(drop),
        Protocol::Udp => UdpSocket::bind(sock).map(drop),
        // std has no SCTP; portmap's DNAT does not need a free socket anyway.
        Protocol::Sctp => Ok(()),
    };
    bound.map_err(|e| PortError::InUse {
        ip: addr,
        port,
        protocol,
        reason: e.to_string(),
    })
}

/// A host port the kernel considers free (its ephemeral range), not in `taken`.
pub fn pick_free(
    ip: Option<IpAddr>,
    protocol: Protocol,
    taken: &[PortMapping],
) -> Result<u16, PortError> {
    let addr = host_addr(ip);
    for _ in 0..64 {
        let sock = SocketAddr::new(addr, 0);
        let port = match protocol {
            Protocol::Tcp | Protocol::Sctp => TcpListener::bind(sock).and_then(|l| l.local_addr()),
            Protocol::Udp => UdpSocket::bind(sock).and_then(|s| s.local_addr()),
        }
        .map_err(|e| PortError::InUse {
            ip: addr,
            port: 0,
            protocol,
            reason: e.to_string(),
        })?
        .port();
        if !taken.iter().any(|t| same_socket(t, ip, port, protocol)) {
            return Ok(port);
        }
    }
    Err(PortError::RangeExhausted {
        ip: addr,
        first: 1,
        last: 65535,
        protocol,
    })
}

/// Turns parsed `-p` values into port mappings: given host ports are checked free, missing
/// ones picked, a host range with a single container port gives the first free port of the
/// range. `taken` holds other containers' mappings.
pub fn resolve(specs: &[PortSpec], taken: &[PortMapping]) -> Result<Vec<PortMapping>, PortError> {
    let mut out: Vec<PortMapping> = Vec::new();
    for spec in specs {
        let (c0, c1) = spec.container_ports;
        for (i, container_port) in (c0..=c1).enumerate() {
            let busy: Vec<PortMapping> = taken.iter().chain(out.iter()).cloned().collect();
            let host_port = match spec.host_ports {
                None => pick_free(spec.host_ip, spec.protocol, &busy)?,
                Some((h0, h1)) if c0 == c1 && h0 != h1 => (h0..=h1)
                    .find(|p| check_free(spec.host_ip, *p, spec.protocol, &busy).is_ok())
                    .ok_or(PortError::RangeExhausted {
                        ip: host_addr(spec.host_ip),
                        first: h0,
                        last: h1,
                        protocol: spec.protocol,
                    })?,
                Some((h0, _)) => {
                    // Lengths were checked equal when parsing; i fits.
                    let p = h0.saturating_add(i as u16);
                    check_free(spec.host_ip, p, spec.protocol, &busy)?;
                    p
                }
            };
            out.push(PortMapping {
                host_port,
                container_port,
                protocol: spec.protocol,
                host_ip: spec.host_ip,
            });
        }
    }
    Ok(out)
}

/// `-P`: a free host port for each exposed container port, on `host_ip` (all addresses when
/// `None`).
pub fn publish_all(
    exposed: &[(u16, Protocol)],
    host_ip: Option<IpAddr>,
    taken: &[PortMapping],
) -> Result<Vec<PortMapping>, PortError> {
    let specs: Vec<PortSpec> = exposed
        .iter()
        .map(|&(port, protocol)| PortSpec {
            host_ip,
            host_ports: None,
            container_ports: (port, port),
            protocol,
        })
        .collect();
    resolve(&specs, taken)
}

impl RuntimeConf {
    /// Sets the `portMappings` capability argument portmap reads.
    pub fn with_port_mappings(mut self, mappings: &[PortMapping]) -> Self {
        let value = serde_json::to_value(mappings).unwrap_or_default();
        self.capability_args.insert("portMappings".into(), value);
        self
    }
}

/// Mappings grouped by container port, as `docker port` shows them.
pub fn by_container_port(mappings: &[PortMapping]) -> BTreeMap<(u16, Protocol), Vec<PortMapping>> {
    let mut map: BTreeMap<(u16, Protocol), Vec<PortMapping>> = BTreeMap::new();
    for m in mappings {
        map.entry((m.container_port, m.protocol))
            .or_default()
            .push(m.clone());
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PortSpec {
        s.parse().unwrap()
    }

    #[test]
    fn parses_docker_forms() {
        assert_eq!(
            p("80"),
            PortSpec {
                host_ip: None,
                host_ports: None,
                container_ports: (80, 80),
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(p("8080:80").host_ports, Some((8080, 8080)));
        let s = p("127.0.0.1:8080:80/udp");
        assert_eq!(s.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(s.protocol, Protocol::Udp);
        let s = p("127.0.0.1::80");
        assert_eq!(s.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(s.host_ports, None);
        let s = p("8000-8001:80-81");
        assert_eq!(s.host_ports, Some((8000, 8001)));
        assert_eq!(s.container_ports, (80, 81));
        assert_eq!(p("8000-8010:80").container_ports, (80, 80));
        let s = p("[::1]:8080:80/tcp");
        assert_eq!(s.host_ip, Some("::1".parse().unwrap()));
        assert_eq!(p("80-81").container_ports, (80, 81));
    }

    #[test]
    fn errors_name_the_spec() {
        for (bad, why) in [
            ("", "no container port"),
            ("0", "not a port"),
            ("70000", "not a port"),
            ("80/icmp", "unknown protocol"),
            ("1.2.3:80:80", "not an IP address"),
            ("81-80", "ends before"),
            ("8000-8002:80-81", "differ in length"),
            ("a:b:c:d", "expected"),
            ("[::1:80:80", "unclosed"),
        ] {
            let e = bad.parse::<PortSpec>().unwrap_err().to_string();
            assert!(
                e.contains(why) && e.contains(&format!("{bad:?}")),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn mappings_serialise_for_portmap() {
        let m = PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: Protocol::Tcp,
            host_ip: Some("127.0.0.1".parse().unwrap()),
        };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"})
        );
    }

    #[test]
    fn busy_ports_are_refused_and_free_ones_picked() {
        let lo = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let holder = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = holder.local_addr().unwrap().port();
        let e = check_free(lo, port, Protocol::Tcp, &[]).unwrap_err();
        assert!(e
            .to_string()
            .contains(&format!("host port {port}/tcp on 127.0.0.1")));

        let spec: PortSpec = format!("127.0.0.1:{port}:80").parse().unwrap();
        assert!(resolve(&[spec], &[]).is_err());

        let taken = vec![PortMapping {
            host_port: 40000,
            container_port: 80,
            protocol: Protocol::Tcp,
            host_ip: None,
        }];
        let e = check_free(lo, 40000, Protocol::Tcp, &taken).unwrap_err();
        assert!(e.to_string().contains("another container"));

        let all = publish_all(&[(80, Protocol::Tcp), (53, Protocol::Udp)], lo, &[]).unwrap();
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|m| m.host_port != 0));
        assert_eq!(all[1].protocol, Protocol::Udp);
    }

    #[test]
    fn ranges_resolve_one_to_one() {
        // Find two adjacent free ports on loopback to map a range onto.
        let lo = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let base = (20000..60000)
            .step_by(7)
            .find(|p| {
                check_free(lo, *p, Protocol::Tcp, &[]).is_ok()
                    && check_free(lo, p + 1, Protocol::Tcp, &[]).is_ok()
            })
            .unwrap();
        let spec: PortSpec = format!("127.0.0.1:{base}-{}:80-81", base + 1)
            .parse()
            .unwrap();
        let m = resolve(&[spec], &[]).unwrap();
        assert_eq!(
            m.iter()
                .map(|m| (m.host_port, m.container_port))
                .collect::<Vec<_>>(),
            vec![(base, 80), (base + 1, 81)]
        );
    }
}
