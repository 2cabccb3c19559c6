//! The resolver files of a container: /etc/hosts and /etc/resolv.conf, generated the way
//! Docker does. Pure functions; the caller reads the host's files and writes the results into
//! the container's bundle.

use std::net::IpAddr;

/// A bad `--add-host` value; names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid extra host {value:?}: {reason}")]
pub struct ExtraHostError {
    /// The value given.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// One line of /etc/hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// The address.
    pub ip: IpAddr,
    /// Its names, first the canonical one.
    pub names: Vec<String>,
}

impl HostEntry {
    /// Parses Docker's `--add-host NAME:IP` (the IP may be IPv6, optionally in brackets).
    pub fn parse_extra(value: &str) -> Result<HostEntry, ExtraHostError> {
        let err = |reason| ExtraHostError {
            value: value.to_string(),
            reason,
        };
        let (name, ip) = value
            .split_once(':')
            .ok_or_else(|| err("expected NAME:IP"))?;
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '#') {
            return Err(err("the name is empty or contains whitespace or '#'"));
        }
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = ip.parse().map_err(|_| err("not an IP address after ':'"))?;
        Ok(HostEntry {
            ip,
            names: vec![name.to_string()],
        })
    }
}

/// The localhost lines every container's /etc/hosts starts with (Docker's).
pub const LOCALHOST_LINES: &str = "127.0.0.1\tlocalhost\n\
::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\n\
ff00::0\tip6-mcastprefix\n\
ff02::1\tip6-allnodes\n\
ff02::2\tip6-allrouters\n";

/// A container's /etc/hosts: the localhost lines, the extra hosts in order, then the
/// container's own addresses with its hostname (and aliases, such as its name when it differs).
pub fn hosts(own: &[IpAddr], hostname: &str, aliases: &[String], extra: &[HostEntry]) -> String {
    let mut out = String::from(LOCALHOST_LINES);
    for e in extra {
        out.push_str(&format!("{}\t{}\n", e.ip, e.names.join(" ")));
    }
    let mut names = vec![hostname.to_string()];
    for a in aliases {
        if !a.is_empty() && !names.contains(a) {
            names.push(a.clone());
        }
    }
    for ip in own {
        out.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    out
}

/// Options for a container's resolv.conf, from `--dns`, `--dns-search` and `--dns-option`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsOptions {
    /// Name servers replacing the host's (`--dns`); empty keeps the host's.
    pub nameservers: Vec<IpAddr>,
    /// Search domains replacing the host's (`--dns-search`); `None` keeps the host's.
    pub search: Option<Vec<String>>,
    /// Options replacing the host's (`--dns-option`); `None` keeps the host's.
    pub options: Option<Vec<String>>,
    /// Whether the container has IPv6; without it the host's IPv6 name servers are dropped.
    pub ipv6: bool,
    /// Used when no name server is left after dropping loopback ones (Docker: 8.8.8.8 and
    /// 8.8.4.4).
    pub fallback: Vec<IpAddr>,
}

impl Default for DnsOptions {
    fn default() -> Self {
        DnsOptions {
            nameservers: Vec::new(),
            search: None,
            options: None,
            ipv6: false,
            fallback: vec![IpAddr::from([8, 8, 8, 8]), IpAddr::from([8, 8, 4, 4])],
        }
    }
}

fn nameserver_of(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    match words.next() {
        Some("nameserver") => words.next(),
        _ => None,
    }
}

fn keyword(line: &str) -> Option<&str> {
    line.split_whitespace().next()
}

/// The name servers of a resolv.conf text, parseable ones only (a zone suffix such as
/// `fe80::1%eth0` is kept in the text but not returned).
pub fn nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(nameserver_of)
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Which host file to start from: /etc/resolv.conf, unless its only name servers are
/// loopback ones (systemd-resolved's 127.0.0.53 stub) and systemd-resolved's list of the real
/// upstream servers (/run/systemd/resolve/resolv.conf) was read, as Docker does.
pub fn choose_host_resolv_conf<'a>(etc: &'a str, systemd_resolved: Option<&'a str>) -> &'a str {
    let servers = nameservers(etc);
    match systemd_resolved {
        Some(real) if !servers.is_empty() && servers.iter().all(IpAddr::is_loopback) => real,
        _ => etc,
    }
}

/// A container's resolv.conf from the host's: loopback name servers (unreachable from the
/// container's netns) and, without IPv6, IPv6 ones are dropped; if none is left, the fallback
/// is used. `--dns`/`--dns-search`/`--dns-option` replace the host's lines. Comments and other
/// lines are kept.
pub fn resolv_conf(host: &str, opts: &DnsOptions) -> String {
    let mut out = String::new();
    let mut kept = 0;
    for line in host.lines() {
        if let Some(ns) = nameserver_of(line) {
            if !opts.nameservers.is_empty() {
                continue;
            }
            let addr = ns.split('%').next().unwrap_or(ns).parse::<IpAddr>();
            match addr {
                Ok(ip) if ip.is_loopback() => continue,
                Ok(IpAddr::V6(_)) if !opts.ipv6 => continue,
                Err(_) => continue,
                Ok(_) => kept += 1,
            }
        } else {
            let replaced = match keyword(line) {
                Some("search") | Some("domain") => opts.search.is_some(),
                Some("options") => opts.options.is_some(),
                _ => false,
            };
            if replaced {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    let servers: Vec<&IpAddr> = if !opts.nameservers.is_empty() {
        opts.nameservers.iter().collect()
    } else if kept == 0 {
        opts.fallback
            .iter()
            .filter(|ip| opts.ipv6 || ip.is_ipv4())
            .collect()
    } else {
        Vec::new()
    };
    for ip in servers {
        out.push_str(&format!("nameserver {ip}\n"));
    }
    if let Some(search) = &opts.search {
        if !search.is_empty() {
            out.push_str(&format!("search {}\n", search.join(" ")));
        }
    }
    if let Some(options) = &opts.options {
        if !options.is_empty() {
            out.push_str(&format!("options {}\n", options.join(" ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn hosts_file() {
        let extra = vec![HostEntry::parse_extra("db:10.0.0.9").unwrap()];
        let h = hosts(
            &[ip("172.17.0.2")],
            "abc123def456",
            &["web".to_string()],
            &extra,
        );
        assert!(h.starts_with("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"));
        assert!(
            h.ends_with("10.0.0.9\tdb\n172.17.0.2\tabc123def456 web\n"),
            "{h}"
        );
        // No address (no network): localhost lines only.
        assert_eq!(hosts(&[], "x", &[], &[]), LOCALHOST_LINES);
        // An alias equal to the hostname is not repeated.
        assert!(hosts(&[ip("10.0.0.2")], "a", &["a".into()], &[]).ends_with("10.0.0.2\ta\n"));
    }

    #[test]
    fn extra_hosts_parse() {
        assert_eq!(HostEntry::parse_extra("v6:[::1]").unwrap().ip, ip("::1"));
        assert_eq!(
            HostEntry::parse_extra("v6:fe80::1").unwrap().ip,
            ip("fe80::1")
        );
        for bad in ["nohost", ":1.2.3.4", "a b:1.2.3.4", "x:notip"] {
            let e = HostEntry::parse_extra(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn resolv_conf_drops_loopback_and_falls_back() {
        let host =
            "# generated\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch corp.example\n";
        let r = resolv_conf(host, &DnsOptions::default());
        assert_eq!(
            r,
            "# generated\noptions edns0 trust-ad\nsearch corp.example\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        let opts = DnsOptions {
            fallback: vec![ip("192.0.2.53")],
            ..DnsOptions::default()
        };
        assert!(resolv_conf(host, &opts).ends_with("nameserver 192.0.2.53\n"));
    }

    #[test]
    fn resolv_conf_keeps_real_servers_and_filters_ipv6() {
        let host =
            "nameserver 192.0.2.1\nnameserver ::1\nnameserver 2001:db8::1\nnameserver 10.0.0.1\n";
        let r = resolv_conf(host, &DnsOptions::default());
        assert_eq!(r, "nameserver 192.0.2.1\nnameserver 10.0.0.1\n");
        let r = resolv_conf(
            host,
            &DnsOptions {
                ipv6: true,
                ..DnsOptions::default()
            },
        );
        assert_eq!(
            r,
            "nameserver 192.0.2.1\nnameserver 2001:db8::1\nnameserver 10.0.0.1\n"
        );
    }

    #[test]
    fn resolv_conf_overrides() {
        let host = "nameserver 192.0.2.1\nsearch a.example\ndomain a.example\noptions ndots:2\n";
        let opts = DnsOptions {
            nameservers: vec![ip("192.0.2.9")],
            search: Some(vec!["b.example".into()]),
            options: Some(vec!["ndots:1".into()]),
            ..DnsOptions::default()
        };
        assert_eq!(
            resolv_conf(host, &opts),
            "nameserver 192.0.2.9\nsearch b.example\noptions ndots:1\n"
        );
    }

    #[test]
    fn systemd_resolved_stub_is_looked_through() {
        let stub = "nameserver 127.0.0.53\n";
        let real = "nameserver 192.0.2.1\n";
        assert_eq!(choose_host_resolv_conf(stub, Some(real)), real);
        assert_eq!(choose_host_resolv_conf(stub, None), stub);
        assert_eq!(choose_host_resolv_conf(real, Some(stub)), real);
    }
}
