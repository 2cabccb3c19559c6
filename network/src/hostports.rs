//! Published ports as berth's own nat rules, one `iptables-save` and one `iptables-restore`
//! a container, as Docker publishes them, instead of the CNI portmap plugin.
//!
//! portmap makes and checks its chains and rules with about 15-20 separate `iptables` runs on
//! each ADD and DEL: 60-200 ms a container that publishes ports on this machine, most of a
//! `docker-compose up` of a web service. The rules it makes are few; these are the same
//! (the `hostPort` semantics of portmap with `snat`), per container, in the nat table:
//!
//! ```text
//! PREROUTING -m addrtype --dst-type LOCAL -j BERTH-HOSTPORTS      (shared, made once)
//! OUTPUT     -m addrtype --dst-type LOCAL -j BERTH-HOSTPORTS      (shared, made once)
//! BERTH-HOSTPORTS [-d HOST_IP/32] -p P -m P --dport HOST_PORT -j DNAT --to-destination IP:PORT
//! POSTROUTING -s 127.0.0.0/8 -d IP/32 -p P -m P --dport PORT -j MASQUERADE   (from localhost)
//! POSTROUTING -s IP/32 -d IP/32 -p P -m P --dport PORT -j MASQUERADE         (hairpin)
//! ```
//!
//! each carrying the comment `berth ports OWNER` (the container's id), by which they go. The
//! bridge gets `route_localnet` so that traffic to 127.0.0.1 can be routed to it, as portmap
//! sets it. Forwarding of the translated traffic is the network's own rule (`--ctstate DNAT`,
//! see [`crate::firewall`]). IPv4 only.

use std::net::{IpAddr, Ipv4Addr};

use crate::firewall::{apply, Batch, FirewallError, Saved};
use crate::ports::PortMapping;

/// The nat chain PREROUTING and OUTPUT jump to for local destinations.
pub const CHAIN: &str = "BERTH-HOSTPORTS";

/// The jump into [`CHAIN`] from PREROUTING and OUTPUT, as `iptables-save` prints it.
const JUMP: &str = "-m addrtype --dst-type LOCAL -j BERTH-HOSTPORTS";

/// The comment of `owner`'s rules, as `iptables-save` prints it.
fn tag(owner: &str) -> String {
    format!("--comment \"berth ports {owner}\"")
}

/// The rules publishing `mappings` of the container at `ip` (chain, spec in save format).
fn rules(owner: &str, ip: Ipv4Addr, mappings: &[PortMapping]) -> Vec<(&'static str, String)> {
    let tag = tag(owner);
    let mut out = Vec::new();
    for m in mappings {
        let p = m.protocol;
        let dest = match m.host_ip {
            Some(h) if !h.is_unspecified() => format!("-d {h}/32 "),
            _ => String::new(),
        };
        out.push((
            CHAIN,
            format!(
                "{dest}-p {p} -m {p} --dport {} -m comment {tag} -j DNAT --to-destination {ip}:{}",
                m.host_port, m.container_port
            ),
        ));
        for src in ["127.0.0.0/8".to_string(), format!("{ip}/32")] {
            let rule = format!(
                "-s {src} -d {ip}/32 -p {p} -m {p} --dport {} -m comment {tag} -j MASQUERADE",
                m.container_port
            );
            if !out.iter().any(|(_, r)| *r == rule) {
                out.push(("POSTROUTING", rule));
            }
        }
    }
    out
}

fn publish_plan(owner: &str, ip: Ipv4Addr, mappings: &[PortMapping], saved: &Saved) -> Batch {
    let mut b = Batch::default();
    if !saved.has_chain("nat", CHAIN) {
        b.push("nat", format!(":{CHAIN} - [0:0]"));
    }
    let wanted = rules(owner, ip, mappings);
    let tag = tag(owner);
    // Rules of an earlier publication of the same owner that are not wanted now go.
    for (t, c, spec) in &saved.rules {
        if t == "nat" && spec.contains(&tag) && !wanted.iter().any(|(wc, ws)| wc == c && ws == spec)
        {
            b.push("nat", format!("-D {c} {spec}"));
        }
    }
    for (chain, spec) in &wanted {
        if !saved.has_rule("nat", chain, spec) {
            b.push("nat", format!("-A {chain} {spec}"));
        }
    }
    for chain in ["PREROUTING", "OUTPUT"] {
        if !saved.has_rule("nat", chain, JUMP) {
            b.push("nat", format!("-A {chain} {JUMP}"));
        }
    }
    b
}

fn unpublish_plan(owner: &str, saved: &Saved) -> Batch {
    let mut b = Batch::default();
    let tag = tag(owner);
    for (t, c, spec) in saved.rules.iter().filter(|(_, _, s)| s.contains(&tag)) {
        b.push(t, format!("-D {c} {spec}"));
    }
    b
}

/// Publishes `mappings` of container `owner`, whose address behind `bridge` is `ip`. An
/// IPv6 host address is refused (berth's networks are IPv4). Idempotent: what `owner` had
/// published before and is not in `mappings` goes.
pub fn publish(
    owner: &str,
    bridge: &str,
    ip: Ipv4Addr,
    mappings: &[PortMapping],
) -> Result<(), FirewallError> {
    if let Some(m) = mappings
        .iter()
        .find(|m| matches!(m.host_ip, Some(IpAddr::V6(_))))
    {
        return Err(FirewallError {
            network: bridge.to_string(),
            args: format!(
                "publishing {}:{}",
                m.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                m.host_port
            ),
            reason: "IPv6 host addresses are not supported".into(),
        });
    }
    // 127.0.0.1 traffic must be routable to the bridge for the DNAT of a local connection.
    let knob = format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet");
    if let Err(e) = std::fs::write(&knob, "1") {
        return Err(FirewallError {
            network: bridge.to_string(),
            args: knob,
            reason: e.to_string(),
        });
    }
    apply(bridge, |saved| publish_plan(owner, ip, mappings, saved))
}

/// Removes every rule `owner`'s publication made (found by their comment). Idempotent.
pub fn unpublish(owner: &str) -> Result<(), FirewallError> {
    apply(owner, |saved| unpublish_plan(owner, saved))
}

/// The owners of the published ports on the host (from one `iptables-save`), for `berth
/// check` to find rules no container holds.
pub fn owners() -> Result<Vec<String>, FirewallError> {
    let saved = crate::firewall::save("(published ports)")?;
    Ok(owners_in(&saved))
}

fn owners_in(saved: &Saved) -> Vec<String> {
    let mut out: Vec<String> = saved
        .rules
        .iter()
        .filter(|(t, _, _)| t == "nat")
        .filter_map(|(_, _, spec)| {
            let rest = spec.split("--comment \"berth ports ").nth(1)?;
            Some(rest.split('"').next()?.to_string())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::Protocol;

    fn mapping(host_ip: Option<&str>, host: u16, port: u16, protocol: Protocol) -> PortMapping {
        PortMapping {
            host_port: host,
            container_port: port,
            protocol,
            host_ip: host_ip.map(|h| h.parse().unwrap()),
        }
    }

    #[test]
    fn a_publication_is_one_batch_of_dnat_and_masquerade_rules() {
        let ip: Ipv4Addr = "10.5.0.7".parse().unwrap();
        let maps = [
            mapping(Some("127.0.0.1"), 8080, 80, Protocol::Tcp),
            mapping(None, 5353, 53, Protocol::Udp),
        ];
        let empty = Saved::parse("*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n");
        let text = publish_plan("c1", ip, &maps, &empty).text();
        let c = "-m comment --comment \"berth ports c1\"";
        assert_eq!(
            text,
            format!(
                "*nat\n:BERTH-HOSTPORTS - [0:0]\n\
                 -A BERTH-HOSTPORTS -d 127.0.0.1/32 -p tcp -m tcp --dport 8080 {c} -j DNAT --to-destination 10.5.0.7:80\n\
                 -A POSTROUTING -s 127.0.0.0/8 -d 10.5.0.7/32 -p tcp -m tcp --dport 80 {c} -j MASQUERADE\n\
                 -A POSTROUTING -s 10.5.0.7/32 -d 10.5.0.7/32 -p tcp -m tcp --dport 80 {c} -j MASQUERADE\n\
                 -A BERTH-HOSTPORTS -p udp -m udp --dport 5353 {c} -j DNAT --to-destination 10.5.0.7:53\n\
                 -A POSTROUTING -s 127.0.0.0/8 -d 10.5.0.7/32 -p udp -m udp --dport 53 {c} -j MASQUERADE\n\
                 -A POSTROUTING -s 10.5.0.7/32 -d 10.5.0.7/32 -p udp -m udp --dport 53 {c} -j MASQUERADE\n\
                 -A PREROUTING {JUMP}\n-A OUTPUT {JUMP}\nCOMMIT\n"
            )
        );
        // Published already: nothing to do. Another owner's rules are not touched.
        let mut saved = String::from("*nat\n:BERTH-HOSTPORTS - [0:0]\n");
        for l in text.lines().filter(|l| l.starts_with("-A ")) {
            saved.push_str(l);
            saved.push('\n');
        }
        saved.push_str("-A BERTH-HOSTPORTS -p tcp -m tcp --dport 9 -m comment --comment \"berth ports c10\" -j DNAT --to-destination 10.5.0.8:9\nCOMMIT\n");
        let saved = Saved::parse(&saved);
        assert!(publish_plan("c1", ip, &maps, &saved).is_empty());
        assert_eq!(owners_in(&saved), vec!["c1".to_string(), "c10".to_string()]);
        let gone = unpublish_plan("c1", &saved).text();
        assert_eq!(gone.matches("-D ").count(), 6, "{gone}");
        assert!(!gone.contains("c10"), "{gone}");
    }

    #[test]
    fn an_ipv6_host_address_is_refused_before_anything_is_touched() {
        let m = [mapping(Some("::1"), 8080, 80, Protocol::Tcp)];
        let e = publish("c1", "no-such-bridge", "10.5.0.7".parse().unwrap(), &m).unwrap_err();
        assert!(e.to_string().contains("IPv6"), "{e}");
    }
}
