//! A task's cgroup statistics as containerd's `io.containerd.cgroups.v1.Metrics` (cgroup v1):
//! pids, cpu usage and memory. The cgroup is read from `/proc/<init pid>/cgroup`, so it is the
//! one the process is really in whatever the spec's `cgroupsPath` said.

use std::path::Path;

/// The type URL containerd's clients decode the metrics with.
pub const TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";

/// Protobuf encoding of the few messages needed (all fields are uint64 or nested messages).
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn u64(&mut self, field: u64, v: u64) -> &mut Self {
        if v != 0 {
            self.varint(field << 3);
            self.varint(v);
        }
        self
    }

    fn msg(&mut self, field: u64, m: &Msg) -> &mut Self {
        self.varint((field << 3) | 2);
        self.varint(m.0.len() as u64);
        self.0.extend_from_slice(&m.0);
        self
    }
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
    let dir = |ctrl: &str, mount: &str| {
        cgroup_of(pid, ctrl).map(|p| root.join(mount).join(p.trim_start_matches('/')))
    };
    let mut m = Msg::default();
    if let Some(d) = dir("pids", "pids") {
        let limit = std::fs::read_to_string(d.join("pids.max"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let mut p = Msg::default();
        p.u64(1, read_u64(&d.join("pids.current"))).u64(2, limit);
        m.msg(2, &p);
    }
    if let Some(d) = dir("cpuacct", "cpuacct") {
        // cpuacct.stat counts USER_HZ ticks (100 per second).
        let stat = stat_file(&d.join("cpuacct.stat"));
        let get = |k: &str| stat.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
        let mut usage = Msg::default();
        usage
            .u64(1, read_u64(&d.join("cpuacct.usage")))
            .u64(2, get("system") * 10_000_000)
            .u64(3, get("user") * 10_000_000);
        let mut cpu = Msg::default();
        cpu.msg(1, &usage);
        m.msg(3, &cpu);
    }
    if let Some(d) = dir("memory", "memory") {
        let stat = stat_file(&d.join("memory.stat"));
        let get = |k: &str| stat.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
        let mut usage = Msg::default();
        usage
            .u64(1, read_u64(&d.join("memory.limit_in_bytes")))
            .u64(2, read_u64(&d.join("memory.usage_in_bytes")))
            .u64(3, read_u64(&d.join("memory.max_usage_in_bytes")))
            .u64(4, read_u64(&d.join("memory.failcnt")));
        let mut mem = Msg::default();
        mem.u64(1, get("cache"))
            .u64(2, get("rss"))
            .u64(4, get("mapped_file"))
            .u64(16, get("hierarchical_memory_limit"))
            .u64(18, get("total_cache"))
            .u64(19, get("total_rss"))
            .msg(33, &usage);
        m.msg(4, &mem);
    }
    m.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_encode_as_protobuf() {
        let mut inner = Msg::default();
        inner.u64(1, 300).u64(2, 0);
        let mut outer = Msg::default();
        outer.msg(4, &inner);
        // field 4, length 3, then field 1 varint 300 (0xac 0x02); zero fields are omitted.
        assert_eq!(outer.0, vec![0x22, 3, 0x08, 0xac, 0x02]);
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
