//! IPv4 subnets: parsing with errors that say what is wrong, overlap checks against other
//! networks and the host's routes, and Docker's default choice of a free subnet.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// A bad or unusable subnet; names the CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubnetError {
    /// Not of the form a.b.c.d/n.
    #[error("invalid CIDR {cidr:?}: {reason}")]
    Invalid {
        /// The text given.
        cidr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The address has bits set beyond the prefix.
    #[error("invalid CIDR {cidr:?}: host bits are set; did you mean {suggest}?")]
    HostBits {
        /// The text given.
        cidr: String,
        /// The network that was probably meant.
        suggest: Subnet,
    },
    /// Overlaps a subnet already in use.
    #[error("subnet {subnet} overlaps {other} ({owner})")]
    Overlap {
        /// The subnet asked for.
        subnet: Subnet,
        /// The subnet in the way.
        other: Subnet,
        /// Whose it is: "network NAME" or "host route via IFACE".
        owner: String,
    },
    /// A gateway outside the subnet, or its network or broadcast address.
    #[error("gateway {gateway} is not a usable host address of subnet {subnet}")]
    BadGateway {
        /// The subnet.
        subnet: Subnet,
        /// The gateway given.
        gateway: Ipv4Addr,
    },
    /// Every candidate of the default pools is taken.
    #[error("no free subnet left in the default pools (172.17.0.0/16-172.31.0.0/16, 192.168.0.0/16 in /20s)")]
    Exhausted,
    /// The host's routing table could not be read.
    #[error("reading the host's routes from {path}: {reason}")]
    Routes {
        /// The file read.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// An IPv4 network: an address with its host bits clear, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnet {
    addr: Ipv4Addr,
    prefix: u8,
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl Subnet {
    /// The network `addr/prefix`; fails if `prefix` > 32 or host bits of `addr` are set.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Subnet, SubnetError> {
        format!("{addr}/{prefix}").parse()
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The netmask, e.g. 255.255.0.0 for a /16.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask(self.prefix))
    }

    /// The last address (broadcast for prefixes up to /30).
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !mask(self.prefix))
    }

    /// Whether `ip` is in the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// The `n`th address after the network address (1 is the usual gateway), if it is a
    /// usable host address (not the network or broadcast address).
    pub fn host(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix));
        if size < 4 || n == 0 || u64::from(n) >= size - 1 {
            return None;
        }
        Some(Ipv4Addr::from(u32::from(self.addr) + n))
    }

    /// Whether `ip` is a usable host address of the subnet.
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && ip != self.addr && ip != self.last() && self.prefix <= 30
    }

    /// Fails with [`SubnetError::BadGateway`] unless `gateway` is a usable host address.
    pub fn check_gateway(&self, gateway: Ipv4Addr) -> Result<(), SubnetError> {
        if self.is_host(gateway) {
            Ok(())
        } else {
            Err(SubnetError::BadGateway {
                subnet: *self,
                gateway,
            })
        }
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = SubnetError;

    fn from_str(s: &str) -> Result<Subnet, SubnetError> {
        let invalid = |reason: &str| SubnetError::Invalid {
            cidr: s.to_string(),
            reason: reason.to_string(),
        };
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| invalid("missing the /prefix length"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| invalid("not an IPv4 address before the '/'"))?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("the prefix length is not a number"));
        }
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| invalid("the prefix length must be 0-32"))?;
        if prefix > 32 {
            return Err(invalid("the prefix length must be 0-32"));
        }
        let net = Ipv4Addr::from(u32::from(addr) & mask(prefix));
        if net != addr {
            return Err(SubnetError::HostBits {
                cidr: s.to_string(),
                suggest: Subnet { addr: net, prefix },
            });
        }
        Ok(Subnet { addr, prefix })
    }
}

/// A route of the host's main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    /// The interface.
    pub iface: String,
    /// The destination.
    pub dst: Subnet,
}

/// Parses the text of /proc/net/route (addresses in host byte order, hex). The default route
/// is left out: every subnet "overlaps" it.
pub fn parse_proc_net_route(text: &str) -> Result<Vec<HostRoute>, SubnetError> {
    let bad = |reason: String| SubnetError::Routes {
        path: "/proc/net/route".into(),
        reason,
    };
    let mut routes = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        if fields.len() < 8 {
            return Err(bad(format!("line {}: too few fields", n + 1)));
        }
        let hex = |f: &str| {
            u32::from_str_radix(f, 16).map_err(|_| bad(format!("line {}: bad hex {f:?}", n + 1)))
        };
        // The kernel prints each network-order word as a native-endian integer: its native
        // bytes are the address's bytes.
        let dst = Ipv4Addr::from(hex(fields[1])?.to_ne_bytes());
        let netmask = u32::from(Ipv4Addr::from(hex(fields[7])?.to_ne_bytes()));
        if netmask.leading_ones() + netmask.trailing_zeros() != 32 {
            return Err(bad(format!("line {}: non-contiguous netmask", n + 1)));
        }
        let prefix = netmask.leading_ones() as u8;
        if prefix == 0 {
            continue;
        }
        let dst = Ipv4Addr::from(u32::from(dst) & mask(prefix));
        routes.push(HostRoute {
            iface: fields[0].to_string(),
            dst: Subnet { addr: dst, prefix },
        });
    }
    Ok(routes)
}

/// The host's IPv4 routes (main table, default route excluded) from /proc/net/route.
pub fn host_routes() -> Result<Vec<HostRoute>, SubnetError> {
    let text = std::fs::read_to_string("/proc/net/route").map_err(|e| SubnetError::Routes {
        path: "/proc/net/route".into(),
        reason: e.to_string(),
    })?;
    parse_proc_net_route(&text)
}

/// A subnet in use, and by whom, for overlap checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InUse {
    /// The subnet.
    pub subnet: Subnet,
    /// Who uses it, e.g. "network web" or "host route via eth0".
    pub owner: String,
}

impl InUse {
    /// The subnets of the host's routes.
    pub fn from_routes(routes: &[HostRoute]) -> Vec<InUse> {
        routes
            .iter()
            .map(|r| InUse {
                subnet: r.dst,
                owner: format!("host route via {}", r.iface),
            })
            .collect()
    }
}

/// Fails with [`SubnetError::Overlap`] naming the first subnet in `used` that `subnet` overlaps.
pub fn check_free(subnet: Subnet, used: &[InUse]) -> Result<(), SubnetError> {
    match used.iter().find(|u| u.subnet.overlaps(&subnet)) {
        Some(u) => Err(SubnetError::Overlap {
            subnet,
            other: u.subnet,
            owner: u.owner.clone(),
        }),
        None => Ok(()),
    }
}

/// Docker's default address pools in order: 172.17.0.0/16 to 172.31.0.0/16, then
/// 192.168.0.0/16 split into /20s.
pub fn default_candidates() -> impl Iterator<Item = Subnet> {
    let big = (17u8..=31).map(|b| Subnet {
        addr: Ipv4Addr::new(172, b, 0, 0),
        prefix: 16,
    });
    let small = (0u8..16).map(|i| Subnet {
        addr: Ipv4Addr::new(192, 168, i * 16, 0),
        prefix: 20,
    });
    big.chain(small)
}

/// The first default-pool subnet that overlaps nothing in `used` (other networks' subnets and
/// the host's routes).
pub fn pick_default(used: &[InUse]) -> Result<Subnet, SubnetError> {
    default_candidates()
        .find(|c| check_free(*c, used).is_ok())
        .ok_or(SubnetError::Exhausted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str) -> Subnet {
        t.parse().unwrap()
    }

    #[test]
    fn parse_and_errors() {
        assert_eq!(s("10.1.0.0/16").to_string(), "10.1.0.0/16");
        assert_eq!(s("0.0.0.0/0").prefix(), 0);
        let e = "10.1.2.3/16".parse::<Subnet>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid CIDR \"10.1.2.3/16\": host bits are set; did you mean 10.1.0.0/16?"
        );
        for (bad, why) in [
            ("10.1.0.0", "missing the /prefix"),
            ("10.1.0/16", "not an IPv4 address"),
            ("10.1.0.0/33", "must be 0-32"),
            ("10.1.0.0/x", "not a number"),
            ("10.1.0.0/", "not a number"),
            ("10.1.0.0/+8", "not a number"),
        ] {
            let e = bad.parse::<Subnet>().unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn hosts_and_gateways() {
        let n = s("10.0.0.0/24");
        assert_eq!(n.host(1), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(n.host(254), Some(Ipv4Addr::new(10, 0, 0, 254)));
        assert_eq!(n.host(255), None);
        assert_eq!(n.last(), Ipv4Addr::new(10, 0, 0, 255));
        assert_eq!(n.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert!(n.check_gateway(Ipv4Addr::new(10, 0, 0, 1)).is_ok());
        for bad in [[10, 0, 0, 0], [10, 0, 0, 255], [10, 0, 1, 1]] {
            let e = n.check_gateway(Ipv4Addr::from(bad)).unwrap_err();
            assert!(e.to_string().contains("10.0.0.0/24"));
        }
        assert_eq!(s("10.0.0.0/31").host(1), None);
    }

    #[test]
    fn overlaps() {
        assert!(s("10.0.0.0/8").overlaps(&s("10.1.0.0/16")));
        assert!(s("10.1.0.0/16").overlaps(&s("10.0.0.0/8")));
        assert!(!s("10.1.0.0/16").overlaps(&s("10.2.0.0/16")));
        let used = vec![InUse {
            subnet: s("172.17.0.0/16"),
            owner: "network bridge".into(),
        }];
        let e = check_free(s("172.17.5.0/24"), &used).unwrap_err();
        assert_eq!(
            e.to_string(),
            "subnet 172.17.5.0/24 overlaps 172.17.0.0/16 (network bridge)"
        );
    }

    #[test]
    fn proc_net_route() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let r = parse_proc_net_route(text).unwrap();
        assert_eq!(
            r,
            vec![
                HostRoute {
                    iface: "eth0".into(),
                    dst: s("192.0.2.0/24")
                },
                HostRoute {
                    iface: "docker0".into(),
                    dst: s("172.17.0.0/16")
                },
            ]
        );
        assert!(parse_proc_net_route("h\neth0 zz\n").is_err());
    }

    #[test]
    fn default_pick_skips_what_is_used() {
        assert_eq!(pick_default(&[]).unwrap(), s("172.17.0.0/16"));
        let used = InUse::from_routes(&[HostRoute {
            iface: "docker0".into(),
            dst: s("172.17.0.0/16"),
        }]);
        assert_eq!(pick_default(&used).unwrap(), s("172.18.0.0/16"));
        // Everything from 172.16.0.0/12 taken: the /20s of 192.168.0.0/16 follow.
        let used = vec![
            InUse {
                subnet: s("172.16.0.0/12"),
                owner: "x".into(),
            },
            InUse {
                subnet: s("192.168.0.0/24"),
                owner: "y".into(),
            },
        ];
        assert_eq!(pick_default(&used).unwrap(), s("192.168.16.0/20"));
        let all = vec![
            InUse {
                subnet: s("172.16.0.0/12"),
                owner: "x".into(),
            },
            InUse {
                subnet: s("192.168.0.0/16"),
                owner: "y".into(),
            },
        ];
        assert_eq!(pick_default(&all), Err(SubnetError::Exhausted));
    }
}
