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

use std::process::Command;
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
struct Ipt<'a> {
    network: &'a str,
}

fn words(args: &[&str]) -> Vec<String> {
    args.iter().map(|x| x.to_string()).collect()
}

impl Ipt<'_> {
    fn err(&self, args: &[String], reason: String) -> FirewallError {
        FirewallError {
            network: self.network.to_string(),
            args: args.join(" "),
            reason,
        }
    }

    /// Runs `iptables -w -t TABLE ARGS`; Ok(false) when it exits 1 (a -C that did not match,
    /// a -S of a missing chain).
    fn run(&self, table: &str, args: &[String]) -> Result<(bool, String), FirewallError> {
        let out = Command::new("iptables")
            .args(["-w", "-t", table])
            .args(args)
            .output()
            .map_err(|e| self.err(args, e.to_string()))?;
        match out.status.code() {
            Some(0) => Ok((true, String::from_utf8_lossy(&out.stdout).into_owned())),
            Some(1) => Ok((false, String::from_utf8_lossy(&out.stderr).into_owned())),
            _ => Err(self.err(
                args,
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            )),
        }
    }

    fn must(&self, table: &str, args: &[String]) -> Result<String, FirewallError> {
        match self.run(table, args)? {
            (true, out) => Ok(out),
            (false, stderr) => Err(self.err(args, stderr.trim().to_string())),
        }
    }

    fn chain_exists(&self, table: &str, chain: &str) -> Result<bool, FirewallError> {
        Ok(self.run(table, &words(&["-S", chain]))?.0)
    }

    fn ensure_chain(&self, table: &str, chain: &str) -> Result<(), FirewallError> {
        if !self.chain_exists(table, chain)? {
            self.must(table, &words(&["-N", chain]))?;
        }
        Ok(())
    }

    fn exists(&self, table: &str, chain: &str, rule: &[String]) -> Result<bool, FirewallError> {
        // iptables -C fails (status 2, not 1) for a jump to a chain that does not exist: such
        // a rule cannot exist either (a network removed before its rules were ever installed).
        if let Some(target) = rule
            .windows(2)
            .find(|w| w[0] == "-j" && w[1].starts_with("BERTH-"))
            .map(|w| &w[1])
        {
            if !self.chain_exists(table, target)? {
                return Ok(false);
            }
        }
        let mut args = words(&["-C", chain]);
        args.extend_from_slice(rule);
        Ok(self.run(table, &args)?.0)
    }

    /// Appends `rule` to `chain` (inserts it first when `first`) unless it is there.
    fn ensure(
        &self,
        table: &str,
        chain: &str,
        rule: &[String],
        first: bool,
    ) -> Result<(), FirewallError> {
        if self.exists(table, chain, rule)? {
            return Ok(());
        }
        let mut args = if first {
            words(&["-I", chain, "1"])
        } else {
            words(&["-A", chain])
        };
        args.extend_from_slice(rule);
        self.must(table, &args).map(drop)
    }

    fn delete_all(&self, table: &str, chain: &str, rule: &[String]) -> Result<(), FirewallError> {
        if !self.chain_exists(table, chain)? {
            return Ok(());
        }
        while self.exists(table, chain, rule)? {
            let mut args = words(&["-D", chain]);
            args.extend_from_slice(rule);
            self.must(table, &args)?;
        }
        Ok(())
    }

    /// The number of rules in `chain` (0 when it does not exist).
    fn rule_count(&self, table: &str, chain: &str) -> Result<usize, FirewallError> {
        if !self.chain_exists(table, chain)? {
            return Ok(0);
        }
        let out = self.must(table, &words(&["-S", chain]))?;
        Ok(out.lines().filter(|l| l.starts_with("-A ")).count())
    }
}

/// Installs network `net`'s rules (and the shared chains and jumps if missing). Idempotent.
pub fn install(net: &Network) -> Result<(), FirewallError> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let ipt = Ipt { network: &net.name };
    for chain in [CHAIN1, CHAIN2, FORWARD_CHAIN] {
        ipt.ensure_chain("filter", chain)?;
    }
    ipt.ensure("filter", FORWARD_CHAIN, &words(&["-j", CHAIN1]), true)?;
    for (table, chain, rule) in rules(net) {
        ipt.ensure(table, chain, &rule, false)?;
    }
    ipt.ensure("filter", "FORWARD", &words(&["-j", FORWARD_CHAIN]), true)?;
    Ok(())
}

/// Removes network `net`'s rules (whether it was installed as internal or not); when no
/// berth network is left, the jump and berth's chains too. Idempotent.
pub fn remove(net: &Network) -> Result<(), FirewallError> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let ipt = Ipt { network: &net.name };
    for internal in [false, true] {
        let kind = Network {
            internal,
            ..net.clone()
        };
        for (table, chain, rule) in rules(&kind) {
            ipt.delete_all(table, chain, &rule)?;
        }
    }
    let others = ipt.rule_count("filter", CHAIN1)?
        + ipt.rule_count("filter", CHAIN2)?
        + ipt.rule_count("filter", FORWARD_CHAIN)?.saturating_sub(1);
    if others == 0 {
        ipt.delete_all("filter", "FORWARD", &words(&["-j", FORWARD_CHAIN]))?;
        for chain in [FORWARD_CHAIN, CHAIN1, CHAIN2] {
            if ipt.chain_exists("filter", chain)? {
                ipt.must("filter", &words(&["-F", chain]))?;
                ipt.must("filter", &words(&["-X", chain]))?;
            }
        }
    }
    Ok(())
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
