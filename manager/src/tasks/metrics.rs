//! A task's cgroup statistics as containerd's `io.containerd.cgroups.v1.Metrics` (cgroup v1):
//! pids, cpu usage and memory. The cgroup is read from `/proc/<init pid>/cgroup`, so it is the
//! one the process is really in whatever the spec's `cgroupsPath` said.

use std::path::Path;

/// The type URL containerd's clients decode the metrics with.
pub const TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";

/// The part of containerd's cgroups v1 `Metrics` message berthd fills (field numbers as in
/// containerd's `stats/v1/metrics.proto`); `berth tasks metrics` decodes the same types.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metrics {
    /// Process counts.
    #[prost(message, optional, tag = "2")]
    pub pids: Option<PidsStat>,
    /// CPU time.
    #[prost(message, optional, tag = "3")]
    pub cpu: Option<CpuStat>,
    /// Memory.
    #[prost(message, optional, tag = "4")]
    pub memory: Option<MemoryStat>,
}

/// `PidsStat`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PidsStat {
    /// Processes now.
    #[prost(uint64, tag = "1")]
    pub current: u64,
    /// pids.max (0: none).
    #[prost(uint64, tag = "2")]
    pub limit: u64,
}

/// `CPUStat`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CpuStat {
    /// Usage.
    #[prost(message, optional, tag = "1")]
    pub usage: Option<CpuUsage>,
}

/// `CPUUsage`, in nanoseconds.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CpuUsage {
    /// Total.
    #[prost(uint64, tag = "1")]
    pub total: u64,
    /// In the kernel.
    #[prost(uint64, tag = "2")]
    pub kernel: u64,
    /// In user space.
    #[prost(uint64, tag = "3")]
    pub user: u64,
}

/// `MemoryStat` (a few of its fields).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemoryStat {
    /// Page cache.
    #[prost(uint64, tag = "1")]
    pub cache: u64,
    /// Anonymous memory.
    #[prost(uint64, tag = "2")]
    pub rss: u64,
    /// Mapped files.
    #[prost(uint64, tag = "4")]
    pub mapped_file: u64,
    /// The hierarchy's limit.
    #[prost(uint64, tag = "16")]
    pub hierarchical_memory_limit: u64,
    /// Page cache, hierarchy.
    #[prost(uint64, tag = "18")]
    pub total_cache: u64,
    /// Anonymous memory, hierarchy.
    #[prost(uint64, tag = "19")]
    pub total_rss: u64,
    /// Usage against the limit.
    #[prost(message, optional, tag = "33")]
    pub usage: Option<MemoryEntry>,
}

/// `MemoryEntry`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemoryEntry {
    /// limit_in_bytes.
    #[prost(uint64, tag = "1")]
    pub limit: u64,
    /// usage_in_bytes.
    #[prost(uint64, tag = "2")]
    pub usage: u64,
    /// max_usage_in_bytes.
    #[prost(uint64, tag = "3")]
    pub max: u64,
    /// failcnt.
    #[prost(uint64, tag = "4")]
    pub failcnt: u64,
}

fn read_u64(p: &Path) -> u64 {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn stat_file(p: &Path) -> Vec<(String, u64)> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// The cgroup v1 path of `pid` for `controller`.
fn cgroup_of(pid: u32, controller: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
        ctrls
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    })
}

/// Encoded `Metrics` of the cgroups `pid` is in, under `root` (normally `/sys/fs/cgroup`).
pub fn collect(root: &Path, pid: u32) -> Vec<u8> {
    prost::Message::encode_to_vec(&read(root, pid))
}

/// The `Metrics` of the cgroups `pid` is in.
pub fn read(root: &Path, pid: u32) -> Metrics {
    let dir = |ctrl: &str, mount: &str| {
        cgroup_of(pid, ctrl).map(|p| root.join(mount).join(p.trim_start_matches('/')))
    };
    let pids = dir("pids", "pids").map(|d| PidsStat {
        current: read_u64(&d.join("pids.current")),
        limit: std::fs::read_to_string(d.join("pids.max"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0),
    });
    let cpu = dir("cpuacct", "cpuacct").map(|d| {
        // cpuacct.stat counts USER_HZ ticks (100 per second).
        let stat = stat_file(&d.join("cpuacct.stat"));
        let get = |k: &str| stat.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
        CpuStat {
            usage: Some(CpuUsage {
                total: read_u64(&d.join("cpuacct.usage")),
                kernel: get("system") * 10_000_000,
                user: get("user") * 10_000_000,
            }),
        }
    });
    let memory = dir("memory", "memory").map(|d| {
        let stat = stat_file(&d.join("memory.stat"));
        let get = |k: &str| stat.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
        MemoryStat {
            cache: get("cache"),
            rss: get("rss"),
            mapped_file: get("mapped_file"),
            hierarchical_memory_limit: get("hierarchical_memory_limit"),
            total_cache: get("total_cache"),
            total_rss: get("total_rss"),
            usage: Some(MemoryEntry {
                limit: read_u64(&d.join("memory.limit_in_bytes")),
                usage: read_u64(&d.join("memory.usage_in_bytes")),
                max: read_u64(&d.join("memory.max_usage_in_bytes")),
                failcnt: read_u64(&d.join("memory.failcnt")),
            }),
        }
    });
    Metrics { pids, cpu, memory }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_encode_as_containerds_field_numbers() {
        let m = Metrics {
            memory: Some(MemoryStat {
                cache: 300,
                ..Default::default()
            }),
            ..Default::default()
        };
        // field 4, length 3, then field 1 varint 300 (0xac 0x02); zero fields are omitted.
        assert_eq!(
            prost::Message::encode_to_vec(&m),
            vec![0x22, 3, 0x08, 0xac, 0x02]
        );
    }

    #[test]
    fn own_process_has_memory_metrics_when_cgroup_v1_memory_exists() {
        let root = Path::new("/sys/fs/cgroup");
        if !root.join("memory").exists() {
            return;
        }
        let m = collect(root, std::process::id());
        // Metrics.memory (field 4, length-delimited) is present.
        assert!(m.contains(&0x22), "{m:?}");
    }
}
