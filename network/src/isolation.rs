//! Isolation between berth networks, which the CNI plugins do not provide: containers on
//! different berth bridges must not reach each other, and an internal network's bridge
//! exchanges nothing with the rest of the world.
//!
//! Docker's two-stage scheme, in the filter table:
//!
//! ```text
//! FORWARD   -j BERTH-ISOLATION-1            (inserted first)
//! CNI-ADMIN -j BERTH-ISOLATION-1            (see below)
//! BERTH-ISOLATION-1  -i B1 ! -o B1 -j BERTH-ISOLATION-2     per routed network
//!                    -i B3 ! -o B3 -j DROP                  per internal network
//!                    -o B3 ! -i B3 -j DROP                  per internal network
//! BERTH-ISOLATION-2  -o B1 -j DROP                          per routed network
//! ```
//!
//! Traffic leaving B1 for another berth bridge meets that bridge's DROP in stage 2; traffic
//! for anywhere else returns. Each network's rules carry the comment `berth network NAME`
//! and are removed with it; the chains and jumps go with the last network.
//!
//! The firewall plugin inserts its own `FORWARD -j CNI-FORWARD` at the top the first time it
//! runs, above ours, and CNI-FORWARD accepts everything from a container's address. Its
//! first rule jumps to CNI-ADMIN, "for administrator overrides": berth jumps from there too,
//! so isolation holds whichever jump ended up first. Host-to-container traffic (OUTPUT, not
//! FORWARD) is untouched. IPv4 only, like berth's networks for now.

use std::process::Command;
use std::sync::Mutex;

/// The first-stage chain.
pub const CHAIN1: &str = "BERTH-ISOLATION-1";
/// The second-stage chain.
pub const CHAIN2: &str = "BERTH-ISOLATION-2";
/// The firewall plugin's chain for administrator rules.
pub const CNI_ADMIN: &str = "CNI-ADMIN";

static LOCK: Mutex<()> = Mutex::new(());

/// An iptables command failed; names the network and the command.
#[derive(Debug, thiserror::Error)]
#[error("network {network:?}: iptables {args}: {reason}")]
pub struct IsolationError {
    /// The network being set up or torn down ("" for shared chains).
    pub network: String,
    /// The iptables arguments.
    pub args: String,
    /// Its stderr or the exec error.
    pub reason: String,
}

fn comment(network: &str) -> String {
    format!("berth network {network}")
}

/// The rules a network adds, as (chain, rule arguments).
fn rules(network: &str, bridge: &str, internal: bool) -> Vec<(&'static str, Vec<String>)> {
    let c = comment(network);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    if internal {
        vec![
            (
                CHAIN1,
                s(&[
                    "-i",
                    bridge,
                    "!",
                    "-o",
                    bridge,
                    "-m",
                    "comment",
                    "--comment",
                    &c,
                    "-j",
                    "DROP",
                ]),
            ),
            (
                CHAIN1,
                s(&[
                    "-o",
                    bridge,
                    "!",
                    "-i",
                    bridge,
                    "-m",
                    "comment",
                    "--comment",
                    &c,
                    "-j",
                    "DROP",
                ]),
            ),
        ]
    } else {
        vec![
            (
                CHAIN1,
                s(&[
                    "-i",
                    bridge,
                    "!",
                    "-o",
                    bridge,
                    "-m",
                    "comment",
                    "--comment",
                    &c,
                    "-j",
                    CHAIN2,
                ]),
            ),
            (
                CHAIN2,
                s(&["-o", bridge, "-m", "comment", "--comment", &c, "-j", "DROP"]),
            ),
        ]
    }
}

struct Ipt<'a> {
    network: &'a str,
    table: &'a str,
}

impl Ipt<'_> {
    /// Runs `iptables -w -t TABLE ARGS`; Ok(false) when it exits 1 (a -C that did not match,
    /// a -S of a missing chain).
    fn run(&self, args: &[String]) -> Result<(bool, String), IsolationError> {
        let err = |reason: String| IsolationError {
            network: self.network.to_string(),
            args: args.join(" "),
            reason,
        };
        let out = Command::new("iptables")
            .args(["-w", "-t", self.table])
            .args(args)
            .output()
            .map_err(|e| err(e.to_string()))?;
        match out.status.code() {
            Some(0) => Ok((true, String::from_utf8_lossy(&out.stdout).into_owned())),
            Some(1) => Ok((false, String::from_utf8_lossy(&out.stderr).into_owned())),
            _ => Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string())),
        }
    }

    fn must(&self, args: &[String]) -> Result<String, IsolationError> {
        match self.run(args)? {
            (true, out) => Ok(out),
            (false, stderr) => Err(IsolationError {
                network: self.network.to_string(),
                args: args.join(" "),
                reason: stderr.trim().to_string(),
            }),
        }
    }

    fn chain_exists(&self, chain: &str) -> Result<bool, IsolationError> {
        Ok(self.run(&["-S".into(), chain.into()])?.0)
    }

    fn ensure_chain(&self, chain: &str) -> Result<(), IsolationError> {
        if !self.chain_exists(chain)? {
            self.must(&["-N".into(), chain.into()])?;
        }
        Ok(())
    }

    fn exists(&self, chain: &str, rule: &[String]) -> Result<bool, IsolationError> {
        let mut args = vec!["-C".to_string(), chain.to_string()];
        args.extend_from_slice(rule);
        Ok(self.run(&args)?.0)
    }

    fn ensure(&self, chain: &str, rule: &[String], first: bool) -> Result<(), IsolationError> {
        if self.exists(chain, rule)? {
            return Ok(());
        }
        let mut args = if first {
            vec!["-I".to_string(), chain.to_string(), "1".to_string()]
        } else {
            vec!["-A".to_string(), chain.to_string()]
        };
        args.extend_from_slice(rule);
        self.must(&args).map(drop)
    }

    fn delete_all(&self, chain: &str, rule: &[String]) -> Result<(), IsolationError> {
        if !self.chain_exists(chain)? {
            return Ok(());
        }
        while self.exists(chain, rule)? {
            let mut args = vec!["-D".to_string(), chain.to_string()];
            args.extend_from_slice(rule);
            self.must(&args)?;
        }
        Ok(())
    }

    fn rule_count(&self, chain: &str) -> Result<usize, IsolationError> {
        let out = self.must(&["-S".into(), chain.into()])?;
        Ok(out.lines().filter(|l| l.starts_with("-A ")).count())
    }
}

fn jump() -> Vec<String> {
    vec!["-j".into(), CHAIN1.into()]
}

/// Installs a network's isolation rules (and the shared chains and jumps if missing).
/// Idempotent.
pub fn install(network: &str, bridge: &str, internal: bool) -> Result<(), IsolationError> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let ipt = Ipt {
        network,
        table: "filter",
    };
    ipt.ensure_chain(CHAIN1)?;
    ipt.ensure_chain(CHAIN2)?;
    for (chain, rule) in rules(network, bridge, internal) {
        ipt.ensure(chain, &rule, false)?;
    }
    ipt.ensure_chain(CNI_ADMIN)?;
    ipt.ensure(CNI_ADMIN, &jump(), false)?;
    ipt.ensure("FORWARD", &jump(), true)?;
    Ok(())
}

/// Removes a network's isolation rules (either kind); when no berth network is left, the
/// jumps and berth's chains too. Idempotent. CNI-ADMIN stays: it belongs to the firewall
/// plugin.
pub fn remove(network: &str, bridge: &str) -> Result<(), IsolationError> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let ipt = Ipt {
        network,
        table: "filter",
    };
    for internal in [false, true] {
        for (chain, rule) in rules(network, bridge, internal) {
            ipt.delete_all(chain, &rule)?;
        }
    }
    let left = |chain| -> Result<usize, IsolationError> {
        if ipt.chain_exists(chain)? {
            ipt.rule_count(chain)
        } else {
            Ok(0)
        }
    };
    if left(CHAIN1)? == 0 && left(CHAIN2)? == 0 {
        ipt.delete_all("FORWARD", &jump())?;
        ipt.delete_all(CNI_ADMIN, &jump())?;
        for chain in [CHAIN1, CHAIN2] {
            if ipt.chain_exists(chain)? {
                ipt.must(&["-X".into(), chain.into()])?;
            }
        }
    }
    Ok(())
}

/// Removes the bridge plugin's masquerade rule and chain of one container, if DEL left them.
/// Returns how many it removed.
///
/// The bridge plugin (1.1.1, Debian's) finds the addresses to un-masquerade on DEL by reading
/// them from the container's interface: when the interface or the netns is already gone (a
/// crashed container, a removed netns), its `POSTROUTING -s IP -j CNI-<hash>` rule and chain
/// stay forever. They carry the comment `name: "NETWORK" id: "CONTAINER"`, which finds them.
/// Call after [`crate::cni::Cni::del`].
pub fn remove_masquerade_leftovers(
    network: &str,
    container_id: &str,
) -> Result<usize, IsolationError> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let ipt = Ipt {
        network,
        table: "nat",
    };
    let comment = format!("name: \"{network}\" id: \"{container_id}\"");
    // How iptables -S prints that comment: quoted, inner quotes escaped.
    let printed = format!("--comment \"{}\"", comment.replace('"', "\\\""));
    let rules = ipt.must(&["-S".into(), "POSTROUTING".into()])?;
    let mut removed = 0;
    for line in rules
        .lines()
        .filter(|l| l.starts_with("-A POSTROUTING ") && l.contains(&printed))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |flag: &str| {
            words
                .windows(2)
                .rev()
                .find(|w| w[0] == flag)
                .map(|w| w[1].to_string())
        };
        let (Some(source), Some(target)) = (after("-s"), after("-j")) else {
            continue;
        };
        ipt.must(&[
            "-D".into(),
            "POSTROUTING".into(),
            "-s".into(),
            source,
            "-m".into(),
            "comment".into(),
            "--comment".into(),
            comment.clone(),
            "-j".into(),
            target.clone(),
        ])?;
        removed += 1;
        if target.starts_with("CNI-") && ipt.chain_exists(&target)? {
            ipt.must(&["-F".into(), target.clone()])?;
            ipt.must(&["-X".into(), target])?;
        }
    }
    if removed > 0 {
        tracing::info!(
            network,
            container_id,
            "removed masquerade rules the bridge plugin left behind"
        );
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_per_kind() {
        let r = rules("web", "br-1", false);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0, CHAIN1);
        assert_eq!(
            r[0].1.join(" "),
            "-i br-1 ! -o br-1 -m comment --comment berth network web -j BERTH-ISOLATION-2"
        );
        assert_eq!(
            r[1].1.join(" "),
            "-o br-1 -m comment --comment berth network web -j DROP"
        );
        let r = rules("db", "br-2", true);
        assert!(r
            .iter()
            .all(|(c, rule)| *c == CHAIN1 && rule.ends_with(&["DROP".to_string()])));
    }
}
