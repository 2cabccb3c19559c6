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
