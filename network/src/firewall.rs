//! The host's iptables rules for berth networks, kept per network as Docker keeps them, so
//! that a container's start runs no iptables at all unless it publishes ports.
//!
//! The CNI chain stays short (bridge + host-local, portmap only when publishing): the bridge
//! plugin's per-container masquerade (`ipMasq`) and the firewall plugin's per-container accept
//! rules cost about 35 `iptables` runs per container; these rules, installed once per network,
//! do the same job. In the filter table:
//!
//! ```text
//! FORWARD        -j BERTH-FORWARD                             (inserted first)
//! BERTH-FORWARD  -j BERTH-ISOLATION-1                         (always its first rule)
//!                -i B1 -j ACCEPT                              per routed network: out, and within
//!                -o B1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT     replies
//!                -o B1 -m conntrack --ctstate DNAT -j ACCEPT  published ports (portmap's DNAT)
//!                -i B3 -o B3 -j ACCEPT                        per internal network: within only
//! BERTH-ISOLATION-1  -i B1 ! -o B1 -j BERTH-ISOLATION-2       per routed network
//!                    -i B3 ! -o B3 -j DROP                    per internal network
//!                    -o B3 ! -i B3 -j DROP                    per internal network
//! BERTH-ISOLATION-2  -o B1 -j DROP                            per routed network
//! ```
//!
//! and in the nat table, per routed network, `POSTROUTING -s SUBNET ! -o B1 -j MASQUERADE`.
//!
//! Isolation is Docker's two-stage scheme: traffic leaving B1 for another berth bridge meets
//! that bridge's DROP in stage 2; traffic for anywhere else returns and is accepted. Every
//! rule carries the comment `berth network NAME` and goes with its network; the chains and
//! the jump go with the last network. Host-to-container traffic (OUTPUT, not FORWARD) is
//! untouched. IPv4 only, like berth's networks for now.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::config::Network;

/// The chain FORWARD jumps to.
pub const FORWARD_CHAIN: &str = "BERTH-FORWARD";
/// The first isolation stage.
pub const CHAIN1: &str = "BERTH-ISOLATION-1";
/// The second isolation stage.
pub const CHAIN2: &str = "BERTH-ISOLATION-2";

static LOCK: Mutex<()> = Mutex::new(());

/// An iptables command failed; names the network and the command.
#[derive(Debug, thiserror::Error)]
#[error("network {network:?}: iptables {args}: {reason}")]
pub struct FirewallError {
    /// The network being set up or torn down.
    pub network: String,
    /// The iptables arguments.
    pub args: String,
    /// Its stderr or the exec error.
    pub reason: String,
}

/// One rule: table, chain, match and target arguments.
type Rule = (&'static str, &'static str, Vec<String>);

/// The rules network `net` adds, in the order they are appended.
fn rules(net: &Network) -> Vec<Rule> {
    let c = format!("berth network {}", net.name);
    let br = net.bridge.as_str();
    let r = |table, chain, args: &[&str]| -> Rule {
        let mut v: Vec<String> = args.iter().map(|x| x.to_string()).collect();
        let at = v.len() - 2;
        for (i, x) in ["-m", "comment", "--comment", &c].iter().enumerate() {
            v.insert(at + i, x.to_string());
        }
        (table, chain, v)
    };
    if net.internal {
        return vec![
            r("filter", CHAIN1, &["-i", br, "!", "-o", br, "-j", "DROP"]),
            r("filter", CHAIN1, &["-o", br, "!", "-i", br, "-j", "DROP"]),
            r(
                "filter",
                FORWARD_CHAIN,
                &["-i", br, "-o", br, "-j", "ACCEPT"],
            ),
        ];
    }
    let subnet = net.subnet.to_string();
    vec![
        r("filter", CHAIN1, &["-i", br, "!", "-o", br, "-j", CHAIN2]),
        r("filter", CHAIN2, &["-o", br, "-j", "DROP"]),
        r("filter", FORWARD_CHAIN, &["-i", br, "-j", "ACCEPT"]),
        r(
            "filter",
            FORWARD_CHAIN,
            &[
                "-o",
                br,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-j",
                "ACCEPT",
            ],
        ),
        r(
            "filter",
            FORWARD_CHAIN,
            &[
                "-o",
                br,
                "-m",
                "conntrack",
                "--ctstate",
                "DNAT",
                "-j",
                "ACCEPT",
            ],
        ),
        r(
            "nat",
            "POSTROUTING",
            &["-s", &subnet, "!", "-o", br, "-j", "MASQUERADE"],
        ),
    ]
}

/// Runs iptables for one network's rules.
/// The filter and nat tables as `iptables-save` prints them: chains and rules in order.
#[derive(Debug, Default)]
pub(crate) struct Saved {
    /// (table, chain) for every chain of those tables.
    pub(crate) chains: HashSet<(String, String)>,
    /// (table, chain, rule spec as printed after `-A CHAIN `).
    pub(crate) rules: Vec<(String, String, String)>,
}

impl Saved {
    pub(crate) fn parse(text: &str) -> Saved {
        let mut saved = Saved::default();
        let mut table = String::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t.trim().to_string();
            } else if let Some(rest) = line.strip_prefix(':') {
                if let Some(chain) = rest.split_whitespace().next() {
                    saved.chains.insert((table.clone(), chain.to_string()));
                }
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
                saved
                    .rules
                    .push((table.clone(), chain.to_string(), spec.trim().to_string()));
            }
        }
        saved
    }

    pub(crate) fn has_chain(&self, table: &str, chain: &str) -> bool {
        self.chains
            .contains(&(table.to_string(), chain.to_string()))
    }

    pub(crate) fn has_rule(&self, table: &str, chain: &str, spec: &str) -> bool {
        self.rules
            .iter()
            .any(|(t, c, s)| t == table && c == chain && s == spec)
    }
}

/// Rule arguments as `iptables-save` prints them (the comment quoted).
fn render(args: &[String]) -> String {
    let mut out = Vec::with_capacity(args.len());
    for (i, a) in args.iter().enumerate() {
        if i > 0 && args[i - 1] == "--comment" {
            out.push(format!("\"{a}\""));
        } else {
            out.push(a.clone());
        }
    }
    out.join(" ")
}

/// The comment every rule of network `name` carries, as `iptables-save` prints it.
fn tag(name: &str) -> String {
    format!("--comment \"berth network {name}\"")
}

/// One `iptables-restore --noflush` input: command lines per table, applied atomically per
/// table.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    tables: BTreeMap<String, Vec<String>>,
}

impl Batch {
    pub(crate) fn push(&mut self, table: &str, line: String) {
        self.tables.entry(table.to_string()).or_default().push(line);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        for (table, lines) in &self.tables {
            out.push_str(&format!("*{table}\n"));
            for l in lines {
                out.push_str(l);
                out.push('\n');
            }
            out.push_str("COMMIT\n");
        }
        out
    }
}

fn err(network: &str, args: &str, reason: String) -> FirewallError {
    FirewallError {
        network: network.to_string(),
        args: args.to_string(),
        reason,
    }
}

/// The host's filter and nat tables (one `iptables-save`).
pub(crate) fn save(network: &str) -> Result<Saved, FirewallError> {
    let out = Command::new("iptables-save")
        .output()
        .map_err(|e| err(network, "(iptables-save)", e.to_string()))?;
    if !out.status.success() {
        return Err(err(
            network,
            "(iptables-save)",
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(Saved::parse(&String::from_utf8_lossy(&out.stdout)))
}

/// Applies `batch` with one `iptables-restore --noflush` (nothing when it is empty).
fn restore(network: &str, batch: &Batch) -> Result<(), FirewallError> {
    if batch.is_empty() {
        return Ok(());
    }
    let text = batch.text();
    let mut child = Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(network, "(iptables-restore)", e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| err(network, "(iptables-restore)", e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err(network, "(iptables-restore)", e.to_string()))?;
    if out.status.success() {
        return Ok(());
    }
    Err(err(
        network,
        &format!("(iptables-restore of:\n{})", text.trim_end()),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    ))
}

/// Runs `plan` against a fresh save and applies its batch; once more from a new save if
/// the restore fails (another program changed the tables in between).
pub(crate) fn apply(network: &str, plan: impl Fn(&Saved) -> Batch) -> Result<(), FirewallError> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let first = restore(network, &plan(&save(network)?));
    match first {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::debug!("retrying after a failed iptables-restore: {e}");
            restore(network, &plan(&save(network)?))
        }
    }
}

/// Installs network `net`'s rules (and the shared chains and jumps if missing): one
/// `iptables-save` and, when something is missing, one `iptables-restore`. A rule of the
/// network that differs from what it should be is replaced. Idempotent.
pub fn install(net: &Network) -> Result<(), FirewallError> {
    apply(&net.name, |saved| install_plan(net, saved))
}

fn install_plan(net: &Network, saved: &Saved) -> Batch {
    let mut b = Batch::default();
    for chain in [CHAIN1, CHAIN2, FORWARD_CHAIN] {
        if !saved.has_chain("filter", chain) {
            b.push("filter", format!(":{chain} - [0:0]"));
        }
    }
    let to_chain1 = format!("-j {CHAIN1}");
    if !saved.has_rule("filter", FORWARD_CHAIN, &to_chain1) {
        b.push("filter", format!("-I {FORWARD_CHAIN} 1 {to_chain1}"));
    }
    let wanted: Vec<(&str, &str, String)> = rules(net)
        .into_iter()
        .map(|(t, c, args)| (t, c, render(&args)))
        .collect();
    let tag = tag(&net.name);
    for (t, c, spec) in &saved.rules {
        let ours = spec.contains(&tag);
        if ours
            && !wanted
                .iter()
                .any(|(wt, wc, ws)| wt == t && wc == c && ws == spec)
        {
            b.push(t, format!("-D {c} {spec}"));
        }
    }
    for (t, c, spec) in &wanted {
        if !saved.has_rule(t, c, spec) {
            b.push(t, format!("-A {c} {spec}"));
        }
    }
    let to_forward = format!("-j {FORWARD_CHAIN}");
    if !saved.has_rule("filter", "FORWARD", &to_forward) {
        b.push("filter", format!("-I FORWARD 1 {to_forward}"));
    }
    b
}

/// Removes network `net`'s rules (whatever they were: found by their comment); when no
/// berth network is left, the jump and berth's chains too (unless something else jumps to
/// them). One `iptables-save` and one `iptables-restore`. Idempotent.
pub fn remove(net: &Network) -> Result<(), FirewallError> {
    apply(&net.name, |saved| remove_plan(net, saved))
}

fn remove_plan(net: &Network, saved: &Saved) -> Batch {
    let mut b = Batch::default();
    let tag = tag(&net.name);
    for (t, c, spec) in saved.rules.iter().filter(|(_, _, s)| s.contains(&tag)) {
        b.push(t, format!("-D {c} {spec}"));
    }
    let ours = [CHAIN1, CHAIN2, FORWARD_CHAIN];
    let to_chain1 = format!("-j {CHAIN1}");
    let others = saved.rules.iter().any(|(t, c, s)| {
        t == "filter"
            && ours.contains(&c.as_str())
            && !s.contains(&tag)
            && !(c == FORWARD_CHAIN && *s == to_chain1)
    });
    let to_forward = format!("-j {FORWARD_CHAIN}");
    let jumps_in = saved.rules.iter().any(|(t, c, s)| {
        t == "filter"
            && !ours.contains(&c.as_str())
            && ours.iter().any(|o| s.split_whitespace().any(|w| w == *o))
            && !(c == "FORWARD" && *s == to_forward)
    });
    if !others && !jumps_in {
        for _ in saved
            .rules
            .iter()
            .filter(|(t, c, s)| t == "filter" && c == "FORWARD" && *s == to_forward)
        {
            b.push("filter", format!("-D FORWARD {to_forward}"));
        }
        let present: Vec<&str> = ours
            .iter()
            .copied()
            .filter(|c| saved.has_chain("filter", c))
            .collect();
        for c in &present {
            b.push("filter", format!("-F {c}"));
        }
        for c in &present {
            b.push("filter", format!("-X {c}"));
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn text(r: &[Rule]) -> Vec<String> {
        r.iter()
            .map(|(t, c, a)| format!("{t} {c} {}", a.join(" ")))
            .collect()
    }

    #[test]
    fn routed_network_rules() {
        let net = Network::new("web", ID, "10.5.0.0/24".parse().unwrap()).unwrap();
        let br = &net.bridge;
        let m = "-m comment --comment berth network web";
        assert_eq!(
            text(&rules(&net)),
            vec![
                format!("filter BERTH-ISOLATION-1 -i {br} ! -o {br} {m} -j BERTH-ISOLATION-2"),
                format!("filter BERTH-ISOLATION-2 -o {br} {m} -j DROP"),
                format!("filter BERTH-FORWARD -i {br} {m} -j ACCEPT"),
                format!(
                    "filter BERTH-FORWARD -o {br} -m conntrack --ctstate RELATED,ESTABLISHED {m} -j ACCEPT"
                ),
                format!("filter BERTH-FORWARD -o {br} -m conntrack --ctstate DNAT {m} -j ACCEPT"),
                format!("nat POSTROUTING -s 10.5.0.0/24 ! -o {br} {m} -j MASQUERADE"),
            ]
        );
    }

    /// What `iptables-save` prints with network `net`'s rules installed, plus `extra` lines
    /// in the filter table.
    fn saved_with(net: &Network, extra: &[&str]) -> String {
        let mut filter = vec![
            ":INPUT ACCEPT [0:0]".to_string(),
            ":FORWARD ACCEPT [0:0]".into(),
            format!(":{CHAIN1} - [0:0]"),
            format!(":{CHAIN2} - [0:0]"),
            format!(":{FORWARD_CHAIN} - [0:0]"),
            format!("-A FORWARD -j {FORWARD_CHAIN}"),
            format!("-A {FORWARD_CHAIN} -j {CHAIN1}"),
        ];
        let mut nat = vec![":POSTROUTING ACCEPT [0:0]".to_string()];
        for (t, c, a) in rules(net) {
            let line = format!("-A {c} {}", render(&a));
            if t == "nat" {
                nat.push(line)
            } else {
                filter.push(line)
            }
        }
        filter.extend(extra.iter().map(|l| l.to_string()));
        format!(
            "# Generated by iptables-save\n*filter\n{}\nCOMMIT\n*nat\n{}\nCOMMIT\n",
            filter.join("\n"),
            nat.join("\n")
        )
    }

    #[test]
    fn install_on_empty_tables_makes_chains_jumps_and_rules_in_one_batch() {
        let net = Network::new("web", ID, "10.5.0.0/24".parse().unwrap()).unwrap();
        let b = install_plan(
            &net,
            &Saved::parse("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n"),
        );
        let text = b.text();
        assert!(
            text.starts_with("*filter\n:BERTH-ISOLATION-1 - [0:0]\n"),
            "{text}"
        );
        assert!(text.contains("-I BERTH-FORWARD 1 -j BERTH-ISOLATION-1\n"));
        assert!(text.contains(&format!(
            "-A BERTH-FORWARD -i {} -m comment --comment \"berth network web\" -j ACCEPT\n",
            net.bridge
        )));
        assert!(text.ends_with(
            "-I FORWARD 1 -j BERTH-FORWARD\nCOMMIT\n*nat\n-A POSTROUTING -s 10.5.0.0/24 ! -o br-0123456789ab -m comment --comment \"berth network web\" -j MASQUERADE\nCOMMIT\n"
        ), "{text}");
    }

    #[test]
    fn install_when_installed_does_nothing_and_replaces_a_stale_rule() {
        let net = Network::new("web", ID, "10.5.0.0/24".parse().unwrap()).unwrap();
        assert!(install_plan(&net, &Saved::parse(&saved_with(&net, &[]))).is_empty());
        let stale =
            "-A BERTH-FORWARD -i br-old -m comment --comment \"berth network web\" -j ACCEPT";
        let other =
            "-A BERTH-FORWARD -i br-x -m comment --comment \"berth network web2\" -j ACCEPT";
        let b = install_plan(&net, &Saved::parse(&saved_with(&net, &[stale, other])));
        assert_eq!(
            b.text(),
            "*filter\n-D BERTH-FORWARD -i br-old -m comment --comment \"berth network web\" -j ACCEPT\nCOMMIT\n"
        );
    }

    #[test]
    fn remove_deletes_the_networks_rules_and_the_chains_with_the_last() {
        let net = Network::new("web", ID, "10.5.0.0/24".parse().unwrap()).unwrap();
        let b = remove_plan(&net, &Saved::parse(&saved_with(&net, &[])));
        let text = b.text();
        assert_eq!(text.matches("-D ").count(), 6 + 1, "{text}");
        assert!(text.contains("-D FORWARD -j BERTH-FORWARD\n-F BERTH-ISOLATION-1\n"));
        assert!(text.contains("-X BERTH-FORWARD\nCOMMIT\n*nat\n-D POSTROUTING -s 10.5.0.0/24"));
        // Another network's rule keeps the chains and the jump.
        let other =
            "-A BERTH-FORWARD -i br-x -m comment --comment \"berth network web2\" -j ACCEPT";
        let text = remove_plan(&net, &Saved::parse(&saved_with(&net, &[other]))).text();
        assert_eq!(text.matches("-D ").count(), 6, "{text}");
        assert!(!text.contains("-X") && !text.contains("web2"), "{text}");
        // So does a jump into them from a chain that is not berth's.
        let jump = "-A INPUT -j BERTH-FORWARD";
        let text = remove_plan(&net, &Saved::parse(&saved_with(&net, &[jump]))).text();
        assert!(!text.contains("-X"), "{text}");
        // Nothing of the network's there: nothing to do but the empty chains.
        let none = remove_plan(
            &net,
            &Saved::parse("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n"),
        );
        assert!(none.is_empty());
    }

    #[test]
    fn internal_network_rules_drop_and_never_masquerade() {
        let mut net = Network::new("db", ID, "10.6.0.0/24".parse().unwrap()).unwrap();
        net.internal = true;
        let r = rules(&net);
        assert!(r.iter().all(|(t, _, _)| *t == "filter"), "no nat rule");
        let drops: Vec<_> = r.iter().filter(|(_, c, _)| *c == CHAIN1).collect();
        assert_eq!(drops.len(), 2);
        assert!(drops
            .iter()
            .all(|(_, _, a)| a.ends_with(&["DROP".to_string()])));
        assert_eq!(
            text(&r)[2],
            format!(
                "filter BERTH-FORWARD -i {0} -o {0} -m comment --comment berth network db -j ACCEPT",
                net.bridge
            )
        );
    }
}
