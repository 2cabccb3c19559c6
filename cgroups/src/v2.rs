//! cgroup v2 (unified): one directory; controllers must be enabled in every ancestor's
//! cgroup.subtree_control. Every function takes the cgroup's [`Dir`], whose `mount` is the root
//! of the tree, so tests can point it at a fake tree or at the hybrid /sys/fs/cgroup/unified.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

use crate::bpf;
use crate::devices;
use crate::error::{Error, Result};
use crate::fsutil::{keyed, parse_flat_keyed, read, read_opt, read_u64_opt, write};
use crate::layout::Dir;
use crate::stats::{CpuStats, MemoryStats, PidsStats, Stats};
use crate::v1::STATE_TIMEOUT;

/// Enables, in the root and every ancestor of the leaf, the controllers available there, so the
/// leaf gets their files. A controller that cannot be enabled (e.g. an ancestor with processes
/// of its own) is logged, not fatal: `set` then reports the missing file if it is needed.
pub(crate) fn after_create(d: &Dir) -> Result<()> {
    let Ok(rel) = d.path.strip_prefix(&d.mount) else {
        return Ok(());
    };
    // Every ancestor of the leaf, from the root down: root, root/a, root/a/b for root/a/b/leaf.
    let mut cur = d.mount.clone();
    for comp in rel.components() {
        enable_controllers(&cur)?;
        cur.push(comp);
    }
    Ok(())
}

fn enable_controllers(dir: &Path) -> Result<()> {
    let available = read(dir, "cgroup.controllers")?;
    let enabled = read(dir, "cgroup.subtree_control")?;
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    let missing: Vec<&str> = available
        .split_whitespace()
        .filter(|c| !enabled.contains(c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let all = missing
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    if write(dir, "cgroup.subtree_control", &all).is_ok() {
        return Ok(());
    }
    for c in missing {
        if let Err(e) = write(dir, "cgroup.subtree_control", &format!("+{c}")) {
            tracing::warn!(error = %e, "cgroup v2 controller not enabled");
        }
    }
    Ok(())
}

/// Writes every resource of `r` to the cgroup directory.
pub(crate) fn set(d: &Dir, r: &LinuxResources) -> Result<()> {
    let dir = d.path.as_path();
    if let Some(m) = r.memory() {
        set_memory(dir, m)?;
    }
    if let Some(c) = r.cpu() {
        set_cpu(dir, c)?;
    }
    if let Some(p) = r.pids() {
        match p.limit() {
            0 => {}
            l if l < 0 => write(dir, "pids.max", "max")?,
            l => write(dir, "pids.max", &l.to_string())?,
        }
    }
    if let Some(b) = r.block_io() {
        set_io(dir, b)?;
    }
    if let Some(limits) = r.hugepage_limits() {
        for l in limits {
            let file = format!("hugetlb.{}.max", l.page_size());
            let v = if l.limit() < 0 {
                "max".to_string()
            } else {
                l.limit().to_string()
            };
            write(dir, &file, &v)?;
        }
    }
    if let Some(n) = r.network() {
        // A limit that would silently not hold is refused (cgroup v2 has no such controller).
        if n.class_id().is_some() {
            return Err(Error::MissingController {
                controller: "net_cls".into(),
                what: "network.classID".into(),
            });
        }
        if n.priorities().as_ref().is_some_and(|p| !p.is_empty()) {
            return Err(Error::MissingController {
                controller: "net_prio".into(),
                what: "network.priorities".into(),
            });
        }
    }
    if r.rdma().as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(Error::Unsupported(
            "cannot set rdma limits: berth does not manage the rdma cgroup controller".into(),
        ));
    }
    if let Some(rules) = r.devices() {
        if !rules.is_empty() {
            let rules = rules
                .iter()
                .map(devices::Rule::from_oci)
                .collect::<Result<Vec<_>>>()?;
            bpf::replace_device_program(dir, &devices::program(&rules))?;
        }
    }
    if let Some(u) = r.unified() {
        let mut keys: Vec<&String> = u.keys().collect();
        keys.sort();
        for k in keys {
            if k.is_empty() || k.contains('/') || k.starts_with('.') || !k.contains('.') {
                return Err(Error::InvalidResource {
                    what: format!("unified key {k:?}"),
                    reason: "must be a cgroup file name like \"memory.high\"".into(),
                });
            }
            if !dir.join(k).exists() {
                return Err(Error::InvalidResource {
                    what: format!("unified key {k:?}"),
                    reason: format!(
                        "{} does not exist (is its controller enabled?)",
                        dir.join(k).display()
                    ),
                });
            }
            write(dir, k, &u[k])?;
        }
    }
    Ok(())
}

fn max_or(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// OCI's swap is memory+swap; v2's memory.swap.max is swap alone. `None`: leave it alone.
pub(crate) fn swap_max(limit: Option<i64>, swap: Option<i64>) -> Result<Option<String>> {
    let invalid = |reason: String| Error::InvalidResource {
        what: "memory.swap".into(),
        reason,
    };
    match (limit, swap) {
        // Unlimited memory with swap unset: unlimited swap too, as on v1.
        (Some(-1), None) => Ok(Some("max".into())),
        (_, None) => Ok(None),
        (_, Some(-1)) => Ok(Some("max".into())),
        (None | Some(-1), Some(s)) => Err(invalid(format!(
            "a memory+swap limit ({s}) needs a memory limit on cgroup v2"
        ))),
        (Some(l), Some(s)) if s < l => Err(invalid(format!(
            "memory+swap limit {s} is below the memory limit {l}"
        ))),
        (Some(l), Some(s)) => Ok(Some((s - l).to_string())),
    }
}

fn set_memory(dir: &Path, m: &LinuxMemory) -> Result<()> {
    let nz = |v: Option<i64>| v.filter(|v| *v != 0);
    let (limit, swap, reservation) = (nz(m.limit()), nz(m.swap()), nz(m.reservation()));
    for (what, v) in [
        ("memory.limit", limit),
        ("memory.swap", swap),
        ("memory.reservation", reservation),
    ] {
        if let Some(v) = v.filter(|v| *v < -1) {
            return Err(Error::InvalidResource {
                what: what.into(),
                reason: format!("{v} is negative (only -1, meaning unlimited, is allowed)"),
            });
        }
    }
    if m.kernel().is_some() || m.kernel_tcp().is_some() {
        tracing::warn!("memory.kernel and memory.kernelTCP are ignored on cgroup v2");
    }
    if m.swappiness().is_some() {
        tracing::warn!("memory.swappiness is ignored: cgroup v2 has no per-cgroup swappiness");
    }
    if m.disable_oom_killer() == Some(true) {
        tracing::warn!(
            "memory.disableOOMKiller is ignored: cgroup v2 cannot disable the OOM killer"
        );
    }
    let swap_value = swap_max(limit, swap)?;
    if let Some(l) = limit {
        write(dir, "memory.max", &max_or(l))?;
    }
    if let Some(s) = swap_value {
        write(dir, "memory.swap.max", &s)?;
    }
    if let Some(r) = reservation {
        write(dir, "memory.low", &max_or(r))?;
    }
    Ok(())
}

/// cpu.shares (2..262144, default 1024) to cpu.weight (1..10000, default 100).
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// blkio weight (10..1000) to io.weight (1..10000).
pub(crate) fn blkio_to_io_weight(w: u16) -> u64 {
    let w = u64::from(w.clamp(10, 1000));
    1 + ((w - 10) * 9999) / 990
}

fn set_cpu(dir: &Path, c: &LinuxCpu) -> Result<()> {
    if c.realtime_runtime().is_some() || c.realtime_period().is_some() {
        tracing::warn!("cpu.realtimeRuntime and cpu.realtimePeriod are ignored");
    }
    if let Some(s) = c.shares().filter(|s| *s != 0) {
        write(dir, "cpu.weight", &shares_to_weight(s).to_string())?;
    }
    let quota = c.quota().filter(|q| *q != 0);
    let period = c.period().filter(|p| *p != 0);
    match (quota, period) {
        (None, None) => {}
        (Some(q), None) => write(dir, "cpu.max", &max_or(q))?,
        (q, Some(p)) => {
            let q = match q {
                Some(q) => max_or(q),
                // Keep the current quota.
                None => read(dir, "cpu.max")?
                    .split_whitespace()
                    .next()
                    .unwrap_or("max")
                    .to_string(),
            };
            write(dir, "cpu.max", &format!("{q} {p}"))?;
        }
    }
    if let Some(b) = c.burst() {
        write(dir, "cpu.max.burst", &b.to_string())?;
    }
    if let Some(i) = c.idle() {
        write(dir, "cpu.idle", &i.to_string())?;
    }
    if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
        write(dir, "cpuset.cpus", cpus)?;
    }
    if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
        write(dir, "cpuset.mems", mems)?;
    }
    Ok(())
}

fn set_io(dir: &Path, b: &LinuxBlockIo) -> Result<()> {
    let bfq = dir.join("io.bfq.weight").exists();
    let plain = dir.join("io.weight").exists();
    if let Some(w) = b.weight().filter(|w| *w != 0) {
        if bfq {
            write(dir, "io.bfq.weight", &w.to_string())?;
        } else if plain {
            write(dir, "io.weight", &blkio_to_io_weight(w).to_string())?;
        } else {
            tracing::warn!(
                weight = w,
                "blockIO.weight ignored: neither io.bfq.weight nor io.weight exists"
            );
        }
    }
    if b.leaf_weight().is_some() {
        tracing::warn!("blockIO.leafWeight is ignored on cgroup v2");
    }
    if let Some(devs) = b.weight_device() {
        for wd in devs {
            let Some(w) = wd.weight() else { continue };
            let dev = format!("{}:{}", wd.major(), wd.minor());
            if bfq {
                write(dir, "io.bfq.weight", &format!("{dev} {w}"))?;
            } else if plain {
                write(
                    dir,
                    "io.weight",
                    &format!("{dev} {}", blkio_to_io_weight(w)),
                )?;
            } else {
                tracing::warn!(%dev, "blockIO.weightDevice ignored: no io weight file");
            }
        }
    }
    let throttles = [
        (b.throttle_read_bps_device(), "rbps"),
        (b.throttle_write_bps_device(), "wbps"),
        (b.throttle_read_iops_device(), "riops"),
        (b.throttle_write_iops_device(), "wiops"),
    ];
    for (devs, key) in throttles {
        for t in devs.iter().flatten() {
            let v = format!("{}:{} {key}={}", t.major(), t.minor(), t.rate());
            write(dir, "io.max", &v)?;
        }
    }
    Ok(())
}

/// Writes cgroup.freeze and waits for cgroup.events to report the state.
pub(crate) fn set_frozen(d: &Dir, frozen: bool) -> Result<()> {
    let dir = d.path.as_path();
    write(dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
    let start = Instant::now();
    let mut delay = Duration::from_micros(100);
    loop {
        if is_frozen(d)? == frozen {
            return Ok(());
        }
        if start.elapsed() > STATE_TIMEOUT {
            if frozen {
                let _ = write(dir, "cgroup.freeze", "0");
            }
            return Err(Error::StateTimeout {
                path: dir.join("cgroup.events"),
                state: if frozen { "frozen 1" } else { "frozen 0" },
                waited: start.elapsed(),
            });
        }
        thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(10));
    }
}

pub(crate) fn is_frozen(d: &Dir) -> Result<bool> {
    let events = read(&d.path, "cgroup.events")?;
    Ok(keyed(&parse_flat_keyed(&events), "frozen") == Some(1))
}

pub(crate) fn stats(d: &Dir) -> Result<Stats> {
    let dir = d.path.as_path();
    let mut s = Stats::default();
    if let Some(st) = read_opt(dir, "cpu.stat")? {
        let kv = parse_flat_keyed(&st);
        let us = |k: &str| keyed(&kv, k).unwrap_or(0) * 1000;
        s.cpu = Some(CpuStats {
            usage_total: us("usage_usec"),
            usage_user: us("user_usec"),
            usage_kernel: us("system_usec"),
            usage_percpu: Vec::new(),
            throttling_periods: keyed(&kv, "nr_periods").unwrap_or(0),
            throttled_periods: keyed(&kv, "nr_throttled").unwrap_or(0),
            throttled_time: us("throttled_usec"),
        });
    }
    if let Some(usage) = read_u64_opt(dir, "memory.current")? {
        let stat = read_opt(dir, "memory.stat")?.unwrap_or_default();
        let kv = parse_flat_keyed(&stat);
        let events = read_opt(dir, "memory.events")?.unwrap_or_default();
        let ev = parse_flat_keyed(&events);
        s.memory = Some(MemoryStats {
            usage,
            limit: read_u64_opt(dir, "memory.max")?.filter(|v| *v != u64::MAX),
            max_usage: read_u64_opt(dir, "memory.peak")?,
            cache: keyed(&kv, "file").unwrap_or(0),
            rss: keyed(&kv, "anon").unwrap_or(0),
            swap_usage: read_u64_opt(dir, "memory.swap.current")?,
            failcnt: keyed(&ev, "max").unwrap_or(0),
            oom_kill: keyed(&ev, "oom_kill"),
            raw: kv.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        });
    }
    if let Some(current) = read_u64_opt(dir, "pids.current")? {
        s.pids = Some(PidsStats {
            current,
            limit: read_u64_opt(dir, "pids.max")?.filter(|v| *v != u64::MAX),
        });
    }
    if let Some(io) = read_opt(dir, "io.stat")? {
        let (service_bytes, serviced) = crate::stats::parse_io_stat_v2(&io);
        s.io = Some(crate::stats::IoStats {
            service_bytes,
            serviced,
        });
    }
    Ok(s)
}
