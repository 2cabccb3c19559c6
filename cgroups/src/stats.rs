//! Statistics read from a cgroup, shaped like runc's `events --stats` data (snake_case names).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Everything [`crate::Cgroup::stats`] reads. A section is `None` when its controller is not
/// available for this cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// CPU time and throttling.
    pub cpu: Option<CpuStats>,
    /// Memory usage and limits.
    pub memory: Option<MemoryStats>,
    /// Number of processes and their limit.
    pub pids: Option<PidsStats>,
    /// Block I/O per device (v1 blkio throttle counters, v2 io.stat).
    #[serde(default)]
    pub io: Option<IoStats>,
}

/// Block I/O done by the cgroup, per device and operation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoStats {
    /// Bytes transferred (ops "Read", "Write", and on v1 also "Sync", "Async", "Discard").
    pub service_bytes: Vec<IoEntry>,
    /// I/O operations, with the same ops.
    pub serviced: Vec<IoEntry>,
}

/// One device's counter for one operation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoEntry {
    /// Device major number.
    pub major: u64,
    /// Device minor number.
    pub minor: u64,
    /// The operation, as v1 names it ("Read", "Write", ...).
    pub op: String,
    /// The count.
    pub value: u64,
}

/// Parses a v1 blkio file ("8:0 Read 4096" lines; the "Total" lines are left out).
pub(crate) fn parse_blkio_v1(text: &str) -> Vec<IoEntry> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (dev, op, value) = (it.next()?, it.next()?, it.next()?);
            let (major, minor) = dev.split_once(':')?;
            Some(IoEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                op: op.to_string(),
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// Parses v2 io.stat ("8:0 rbytes=1 wbytes=2 rios=3 wios=4 ..." lines) into v1-style
/// entries: (bytes, operations).
pub(crate) fn parse_io_stat_v2(text: &str) -> (Vec<IoEntry>, Vec<IoEntry>) {
    let (mut bytes, mut ios) = (Vec::new(), Vec::new());
    for l in text.lines() {
        let mut it = l.split_whitespace();
        let Some((major, minor)) = it.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse::<u64>(), minor.parse::<u64>()) else {
            continue;
        };
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(value) = v.parse::<u64>() else {
                continue;
            };
            let (list, op) = match k {
                "rbytes" => (&mut bytes, "Read"),
                "wbytes" => (&mut bytes, "Write"),
                "rios" => (&mut ios, "Read"),
                "wios" => (&mut ios, "Write"),
                _ => continue,
            };
            list.push(IoEntry {
                major,
                minor,
                op: op.to_string(),
                value,
            });
        }
    }
    (bytes, ios)
}

/// CPU accounting, all times in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuStats {
    /// Total CPU time consumed.
    pub usage_total: u64,
    /// Time in user mode.
    pub usage_user: u64,
    /// Time in kernel mode.
    pub usage_kernel: u64,
    /// Total time per CPU (v1 only; empty on v2).
    pub usage_percpu: Vec<u64>,
    /// CFS periods elapsed with a quota in force.
    pub throttling_periods: u64,
    /// Periods in which the group was throttled.
    pub throttled_periods: u64,
    /// Total time throttled.
    pub throttled_time: u64,
}

/// Memory accounting, in bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStats {
    /// Current usage (v1 memory.usage_in_bytes, v2 memory.current).
    pub usage: u64,
    /// The limit; `u64::MAX`-like kernel values mean unlimited and are reported as `None`.
    pub limit: Option<u64>,
    /// Highest usage seen (v1 memory.max_usage_in_bytes, v2 memory.peak where present).
    pub max_usage: Option<u64>,
    /// Page cache (v1 "total_cache", v2 "file").
    pub cache: u64,
    /// Anonymous memory (v1 "total_rss", v2 "anon").
    pub rss: u64,
    /// Swap usage where accounted (v1 memsw usage minus usage; v2 memory.swap.current).
    pub swap_usage: Option<u64>,
    /// Times the limit was hit (v1 memory.failcnt; v2 memory.events "max").
    pub failcnt: u64,
    /// Processes killed by the OOM killer in this cgroup, where the kernel reports it.
    pub oom_kill: Option<u64>,
    /// Every numeric line of memory.stat.
    pub raw: BTreeMap<String, u64>,
}

/// Process counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidsStats {
    /// Processes (tasks) now in the cgroup.
    pub current: u64,
    /// pids.max, `None` when unlimited.
    pub limit: Option<u64>,
}

/// v1 reports "no limit" as a page-rounded i64::MAX; treat anything that large as unlimited.
pub(crate) fn limit_or_none(v: u64) -> Option<u64> {
    if v >= 0x7FFF_FFFF_FFFF_0000 {
        None
    } else {
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkio_v1_lines_without_the_total() {
        let e = parse_blkio_v1("8:0 Read 4096\n8:0 Write 512\nTotal 4608\n");
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].major, e[0].minor, e[0].op.as_str(), e[0].value),
            (8, 0, "Read", 4096)
        );
        assert_eq!(e[1].op, "Write");
    }

    #[test]
    fn io_stat_v2_becomes_read_and_write_entries() {
        let (b, n) = parse_io_stat_v2("259:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n");
        assert_eq!(b.iter().map(|e| e.value).collect::<Vec<_>>(), [10, 20]);
        assert_eq!(
            n.iter()
                .map(|e| (e.op.as_str(), e.value))
                .collect::<Vec<_>>(),
            [("Read", 1), ("Write", 2)]
        );
        assert_eq!((b[0].major, b[0].minor), (259, 0));
    }
}
