//! `berth check [--repair]`: berthd verifies its stores and state (the `Check` service) and the
//! CLI prints each problem on a line, then a summary.
//!
//! Exit codes: 0 when the store is clean; 1 when problems were found. With `--repair`, the
//! check repairs what it can, then (when it found anything) runs again without repairing:
//! 0 only if that re-check is clean, so a repair that fixed everything exits 0 after listing
//! what it fixed, and one that left something (a quarantined blob an image still needs)
//! exits 1. Failing to check at all (berthd unreachable, an error) exits 2.
//!
//! `berthd check --root … --state …` (berthd down) prints the same through [`print`].

use anyhow::Result;
use berth_proto::berth::services::check::v1 as pb;
use berth_proto::berth::services::check::v1::check_client::CheckClient;

use super::output::{self, Format};
use super::{rpc_error, Env};

/// Exit code: nothing wrong (left).
pub const CLEAN: i32 = 0;
/// Exit code: problems found (or left after a repair).
pub const PROBLEMS: i32 = 1;
/// Exit code: the check could not run.
pub const FAILED: i32 = 2;

/// `berth check`'s flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Remove orphans (blobs, snapshot dirs, task state, mounts, cgroups, supervisors nothing
    /// owns) and move corrupt blobs to quarantine; referenced content is never deleted. Then
    /// check again: the exit code is the re-check's.
    #[arg(long)]
    pub repair: bool,
}

/// Runs the check through berthd; returns the exit code.
pub async fn run(env: &Env, args: Args) -> Result<i32> {
    let mut client = CheckClient::new(env.channel.clone()).max_decoding_message_size(64 << 20);
    let first = client
        .run(pb::CheckRequest {
            repair: args.repair,
        })
        .await
        .map_err(rpc_error("check"))?
        .into_inner();
    let recheck = if args.repair && !first.findings.is_empty() {
        Some(
            client
                .run(pb::CheckRequest { repair: false })
                .await
                .map_err(rpc_error("check after repair"))?
                .into_inner(),
        )
    } else {
        None
    };
    print(&first, recheck.as_ref(), args.repair, env.format)
}

/// Prints a check (and the re-check after a repair); returns the exit code.
pub fn print(
    first: &pb::CheckResponse,
    recheck: Option<&pb::CheckResponse>,
    repair: bool,
    format: Format,
) -> Result<i32> {
    let last = recheck.unwrap_or(first);
    let code = if last.findings.is_empty() {
        CLEAN
    } else {
        PROBLEMS
    };
    match format {
        Format::Json => {
            output::json(&serde_json::json!({
                "clean": code == CLEAN,
                "repair": repair,
                "check": json(first),
                "recheck": recheck.map(json),
            }))?;
        }
        Format::Table => {
            for f in &first.findings {
                println!("{}", line(f, repair));
            }
            if let Some(r) = recheck {
                for f in &r.findings {
                    println!("left: {}", line(f, false));
                }
            }
            println!("{}", summary(first, recheck, repair));
        }
    }
    Ok(code)
}

/// One finding: `KIND WHAT: DETAIL`, and with `--repair` whether it was repaired.
pub fn line(f: &pb::Finding, repair: bool) -> String {
    let mut s = format!("{} {}: {}", f.kind, f.what, f.detail);
    if f.repaired {
        s.push_str(" [repaired]");
    } else if repair {
        s.push_str(" [not repaired]");
    }
    s
}

/// The summary line.
pub fn summary(
    first: &pb::CheckResponse,
    recheck: Option<&pb::CheckResponse>,
    repair: bool,
) -> String {
    let counts = format!(
        "{} blobs, {} images, {} snapshots, {} containers checked",
        first.blobs, first.images, first.snapshots, first.containers
    );
    let n = first.findings.len();
    if n == 0 {
        return format!("clean: {counts}");
    }
    let problems = plural(n, "problem");
    if !repair {
        return format!("{problems} found ({counts}); `berth check --repair` fixes what it can");
    }
    let fixed = first.findings.iter().filter(|f| f.repaired).count();
    let left = recheck.map(|r| r.findings.len()).unwrap_or(n - fixed);
    if left == 0 {
        format!("{problems} found, {fixed} repaired; re-check clean ({counts})")
    } else {
        format!(
            "{problems} found, {fixed} repaired; re-check: {} left ({counts})",
            plural(left, "problem")
        )
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn json(r: &pb::CheckResponse) -> serde_json::Value {
    serde_json::json!({
        "blobs": r.blobs,
        "images": r.images,
        "snapshots": r.snapshots,
        "containers": r.containers,
        "findings": r.findings.iter().map(|f| serde_json::json!({
            "kind": f.kind,
            "what": f.what,
            "detail": f.detail,
            "repaired": f.repaired,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(kind: &str, repaired: bool) -> pb::Finding {
        pb::Finding {
            kind: kind.into(),
            what: "sha256:ab".into(),
            detail: "d".into(),
            repaired,
        }
    }

    fn resp(findings: Vec<pb::Finding>) -> pb::CheckResponse {
        pb::CheckResponse {
            blobs: 3,
            images: 1,
            snapshots: 2,
            containers: 0,
            findings,
        }
    }

    #[test]
    fn a_clean_store_says_clean_and_exits_0() {
        let r = resp(vec![]);
        assert!(summary(&r, None, false).starts_with("clean: 3 blobs"));
        assert_eq!(print(&r, None, false, Format::Json).unwrap(), CLEAN);
    }

    #[test]
    fn problems_exit_1_and_a_repair_exits_by_its_recheck() {
        let r = resp(vec![finding("corrupt-blob", false)]);
        assert_eq!(print(&r, None, false, Format::Json).unwrap(), PROBLEMS);
        assert_eq!(line(&r.findings[0], false), "corrupt-blob sha256:ab: d");
        let fixed = resp(vec![finding("orphan-blob", true)]);
        let clean = resp(vec![]);
        assert_eq!(
            print(&fixed, Some(&clean), true, Format::Json).unwrap(),
            CLEAN
        );
        assert!(summary(&fixed, Some(&clean), true).contains("1 repaired; re-check clean"));
        let left = resp(vec![finding("missing-blob", false)]);
        assert_eq!(
            print(&fixed, Some(&left), true, Format::Json).unwrap(),
            PROBLEMS
        );
        assert!(summary(&fixed, Some(&left), true).contains("re-check: 1 problem left"));
        assert!(line(&left.findings[0], true).ends_with("[not repaired]"));
    }
}
