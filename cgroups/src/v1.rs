//! cgroup v1 (legacy and hybrid hosts): one directory per controller hierarchy.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

use crate::devices;
use crate::error::{Error, Result};
use crate::fsutil::{self, keyed, parse_flat_keyed, read, read_u64_opt, write};
use crate::layout::Dir;
use crate::stats::{limit_or_none, CpuStats, MemoryStats, PidsStats, Stats};

/// How long freeze/thaw waits for the kernel to reach the state.
pub(crate) const STATE_TIMEOUT: Duration = Duration::from_secs(5);

/// The directory of the hierarchy that has `controller`.
pub(crate) fn dir<'a>(dirs: &'a [Dir], controller: &str) -> Option<&'a Path> {
    dirs.iter()
        .find(|d| d.controllers.iter().any(|c| c == controller))
        .map(|d| d.path.as_path())
}

fn need<'a>(dirs: &'a [Dir], controller: &str, what: &str) -> Result<&'a Path> {
    dir(dirs, controller).ok_or_else(|| Error::MissingController {
        controller: controller.to_string(),
        what: what.to_string(),
    })
}

/// Work after the directories exist: a new cpuset cgroup has empty cpuset.cpus/cpuset.mems and
/// no task can join it until they are filled, so copy them down from the nearest ancestors.
pub(crate) fn after_create(dirs: &[Dir]) -> Result<()> {
    let Some(d) = dirs
        .iter()
        .find(|d| d.controllers.iter().any(|c| c == "cpuset"))
    else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if !read(&d.path, file)?.trim().is_empty() {
            continue;
        }
        // Walk from just below the mount point down to the leaf, filling empty levels.
        let Ok(rel) = d.path.strip_prefix(&d.mount) else {
            continue;
        };
        let mut parent = d.mount.clone();
        for comp in rel.components() {
            let cur = parent.join(comp);
            if read(&cur, file)?.trim().is_empty() {
                let value = read(&parent, file)?;
                write(&cur, file, value.trim())?;
            }
            parent = cur;
        }
    }
    Ok(())
}

/// Writes every resource of `r` to the hierarchies in `dirs`.
pub(crate) fn set(dirs: &[Dir], r: &LinuxResources) -> Result<()> {
    if let Some(m) = r.memory() {
        set_memory(dirs, m)?;
    }
    if let Some(c) = r.cpu() {
        set_cpu(dirs, c)?;
    }
    if let Some(p) = r.pids() {
        // As runc: 0 means "not set", a negative value means unlimited.
        match p.limit() {
            0 => {}
            l if l < 0 => write(need(dirs, "pids", "pids.limit")?, "pids.max", "max")?,
            l => write(
                need(dirs, "pids", "pids.limit")?,
                "pids.max",
                &l.to_string(),
            )?,
        }
    }
    if let Some(b) = r.block_io() {
        set_blkio(dirs, b)?;
    }
    if let Some(limits) = r.hugepage_limits() {
        if !limits.is_empty() {
            // A limit whose controller is missing would silently not hold: refuse it (runc does).
            let d = need(dirs, "hugetlb", "hugepageLimits")?;
            for l in limits {
                let file = format!("hugetlb.{}.limit_in_bytes", l.page_size());
                write(d, &file, &l.limit().to_string())?;
            }
        }
    }
    if let Some(n) = r.network() {
        if let Some(id) = n.class_id() {
            let d = need(dirs, "net_cls", "network.classID")?;
            write(d, "net_cls.classid", &id.to_string())?;
        }
        if let Some(prios) = n.priorities().as_ref().filter(|p| !p.is_empty()) {
            let d = need(dirs, "net_prio", "network.priorities")?;
            for p in prios {
                let v = format!("{} {}", p.name(), p.priority());
                write(d, "net_prio.ifpriomap", &v)?;
            }
        }
    }
    if r.rdma().as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(Error::Unsupported(
            "cannot set rdma limits: berth does not manage the rdma cgroup controller".into(),
        ));
    }
    if let Some(rules) = r.devices() {
        if !rules.is_empty() {
            let d = need(dirs, "devices", "devices")?;
            for rule in rules {
                let rule = devices::Rule::from_oci(rule)?;
                let file = if rule.allow {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                write(d, file, &rule.v1_string())?;
            }
        }
    }
    if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        return Err(Error::Unsupported(
            "linux.resources.unified needs cgroup v2, and this host uses cgroup v1".into(),
        ));
    }
    Ok(())
}

/// As runc, 0 means "not set" for limits (Go configs use 0 for absent values).
fn nonzero(v: Option<i64>) -> Option<i64> {
    v.filter(|v| *v != 0)
}

fn check_limit(what: &str, v: Option<i64>) -> Result<()> {
    match v {
        Some(v) if v < -1 => Err(Error::InvalidResource {
            what: what.into(),
            reason: format!("{v} is negative (only -1, meaning unlimited, is allowed)"),
        }),
        _ => Ok(()),
    }
}

fn set_memory(dirs: &[Dir], m: &LinuxMemory) -> Result<()> {
    if m.kernel().is_some() || m.kernel_tcp().is_some() {
        tracing::warn!("memory.kernel and memory.kernelTCP are ignored (deprecated by the kernel)");
    }
    let limit = nonzero(m.limit());
    let mut swap = nonzero(m.swap());
    let reservation = nonzero(m.reservation());
    check_limit("memory.limit", limit)?;
    check_limit("memory.swap", swap)?;
    check_limit("memory.reservation", reservation)?;
    if let Some(s) = m.swappiness() {
        if s > 100 {
            return Err(Error::InvalidResource {
                what: "memory.swappiness".into(),
                reason: format!("{s} is outside 0-100"),
            });
        }
    }
    if let (Some(l), Some(s)) = (limit, swap) {
        if l > 0 && s > 0 && s < l {
            return Err(Error::InvalidResource {
                what: "memory.swap".into(),
                reason: format!("memory+swap limit {s} is below the memory limit {l}"),
            });
        }
    }
    let wanted = limit.is_some()
        || swap.is_some()
        || reservation.is_some()
        || m.swappiness().is_some()
        || m.disable_oom_killer() == Some(true);
    if !wanted {
        return Ok(());
    }
    let d = need(dirs, "memory", "memory")?;
    const LIMIT: &str = "memory.limit_in_bytes";
    const MEMSW: &str = "memory.memsw.limit_in_bytes";
    // Unlimited memory with swap left unset means unlimited swap too (else memsw < limit).
    if limit == Some(-1) && swap.is_none() && d.join(MEMSW).exists() {
        swap = Some(-1);
    }
    match (limit, swap) {
        (Some(l), Some(s)) => {
            // The kernel keeps memsw >= limit at every step: raise memsw first when the new
            // memsw is at least the current limit, else lower the limit first.
            let current = fsutil::read_u64_or_max(d, LIMIT)?.unwrap_or(u64::MAX);
            if s == -1 || s as u64 >= current {
                write(d, MEMSW, &s.to_string())?;
                write(d, LIMIT, &l.to_string())?;
            } else {
                write(d, LIMIT, &l.to_string())?;
                write(d, MEMSW, &s.to_string())?;
            }
        }
        (Some(l), None) => write(d, LIMIT, &l.to_string())?,
        (None, Some(s)) => write(d, MEMSW, &s.to_string())?,
        (None, None) => {}
    }
    if let Some(r) = reservation {
        write(d, "memory.soft_limit_in_bytes", &r.to_string())?;
    }
    if let Some(s) = m.swappiness() {
        write(d, "memory.swappiness", &s.to_string())?;
    }
    if m.disable_oom_killer() == Some(true) {
        write(d, "memory.oom_control", "1")?;
    }
    Ok(())
}

fn set_cpu(dirs: &[Dir], c: &LinuxCpu) -> Result<()> {
    if c.realtime_runtime().is_some() || c.realtime_period().is_some() {
        tracing::warn!("cpu.realtimeRuntime and cpu.realtimePeriod are ignored");
    }
    let shares = c.shares().filter(|s| *s != 0);
    let quota = nonzero(c.quota());
    let period = c.period().filter(|p| *p != 0);
    if shares.is_some()
        || quota.is_some()
        || period.is_some()
        || c.burst().is_some()
        || c.idle().is_some()
    {
        let d = need(dirs, "cpu", "cpu")?;
        if let Some(s) = shares {
            write(d, "cpu.shares", &s.to_string())?;
        }
        const PERIOD: &str = "cpu.cfs_period_us";
        const QUOTA: &str = "cpu.cfs_quota_us";
        match (period, quota) {
            (Some(p), Some(q)) => {
                // The pair must stay valid at every step; if the period does not fit with the
                // current quota, set the quota first.
                if write(d, PERIOD, &p.to_string()).is_err() {
                    write(d, QUOTA, &q.to_string())?;
                    write(d, PERIOD, &p.to_string())?;
                } else {
                    write(d, QUOTA, &q.to_string())?;
                }
            }
            (Some(p), None) => write(d, PERIOD, &p.to_string())?,
            (None, Some(q)) => write(d, QUOTA, &q.to_string())?,
            (None, None) => {}
        }
        if let Some(b) = c.burst() {
            write(d, "cpu.cfs_burst_us", &b.to_string())?;
        }
        if let Some(i) = c.idle() {
            write(d, "cpu.idle", &i.to_string())?;
        }
    }
    if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
        write(need(dirs, "cpuset", "cpu.cpus")?, "cpuset.cpus", cpus)?;
    }
    if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
        write(need(dirs, "cpuset", "cpu.mems")?, "cpuset.mems", mems)?;
    }
    Ok(())
}

fn set_blkio(dirs: &[Dir], b: &LinuxBlockIo) -> Result<()> {
    let d = dir(dirs, "blkio");
    // Weights are best effort (they need CFQ/BFQ); pick whichever file this kernel has.
    let weight_file = |d: &Path, plain: &str, bfq: &str| -> Option<String> {
        [plain, bfq]
            .into_iter()
            .find(|f| d.join(f).exists())
            .map(str::to_string)
    };
    if let Some(w) = b.weight().filter(|w| *w != 0) {
        match d.and_then(|d| weight_file(d, "blkio.weight", "blkio.bfq.weight").map(|f| (d, f))) {
            Some((d, f)) => write(d, &f, &w.to_string())?,
            None => tracing::warn!(
                weight = w,
                "blockIO.weight ignored: neither blkio.weight nor blkio.bfq.weight exists"
            ),
        }
    }
    if let Some(w) = b.leaf_weight().filter(|w| *w != 0) {
        match d.filter(|d| d.join("blkio.leaf_weight").exists()) {
            Some(d) => write(d, "blkio.leaf_weight", &w.to_string())?,
            None => tracing::warn!("blockIO.leafWeight ignored: no blkio.leaf_weight file"),
        }
    }
    if let Some(devs) = b.weight_device() {
        for wd in devs {
            let dev = format!("{}:{}", wd.major(), wd.minor());
            if let Some(w) = wd.weight() {
                match d.and_then(|d| {
                    weight_file(d, "blkio.weight_device", "blkio.bfq.weight_device").map(|f| (d, f))
                }) {
                    Some((d, f)) => write(d, &f, &format!("{dev} {w}"))?,
                    None => {
                        tracing::warn!(%dev, "blockIO.weightDevice ignored: no weight_device file")
                    }
                }
            }
            if let Some(w) = wd.leaf_weight() {
                match d.filter(|d| d.join("blkio.leaf_weight_device").exists()) {
                    Some(d) => write(d, "blkio.leaf_weight_device", &format!("{dev} {w}"))?,
                    None => {
                        tracing::warn!(%dev, "blockIO leafWeight ignored: no leaf_weight_device file")
                    }
                }
            }
        }
    }
    let throttles = [
        (
            b.throttle_read_bps_device(),
            "blkio.throttle.read_bps_device",
        ),
        (
            b.throttle_write_bps_device(),
            "blkio.throttle.write_bps_device",
        ),
        (
            b.throttle_read_iops_device(),
            "blkio.throttle.read_iops_device",
        ),
        (
            b.throttle_write_iops_device(),
            "blkio.throttle.write_iops_device",
        ),
    ];
    for (devs, file) in throttles {
        let Some(devs) = devs.as_ref().filter(|v| !v.is_empty()) else {
            continue;
        };
        let d = need(dirs, "blkio", file)?;
        for t in devs {
            write(
                d,
                file,
                &format!("{}:{} {}", t.major(), t.minor(), t.rate()),
            )?;
        }
    }
    Ok(())
}

/// Freezes (`true`) or thaws the freezer cgroup and waits until the kernel reports that state.
pub(crate) fn set_frozen(dirs: &[Dir], frozen: bool) -> Result<()> {
    let d = need(dirs, "freezer", if frozen { "freeze" } else { "thaw" })?;
    let want = if frozen { "FROZEN" } else { "THAWED" };
    let start = Instant::now();
    let mut delay = Duration::from_micros(100);
    loop {
        // Writing again is harmless and retries tasks that were forking mid-freeze.
        write(d, "freezer.state", want)?;
        if read(d, "freezer.state")?.trim() == want {
            return Ok(());
        }
        if start.elapsed() > STATE_TIMEOUT {
            if frozen {
                // Do not leave the container half frozen.
                let _ = write(d, "freezer.state", "THAWED");
            }
            return Err(Error::StateTimeout {
                path: d.join("freezer.state"),
                state: want,
                waited: start.elapsed(),
            });
        }
        thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(10));
    }
}

pub(crate) fn is_frozen(dirs: &[Dir]) -> Result<bool> {
    let d = need(dirs, "freezer", "freezer state")?;
    Ok(read(d, "freezer.state")?.trim() == "FROZEN")
}

/// The hierarchy used to list processes: pids, else freezer, else memory, else the first.
pub(crate) fn procs_dir(dirs: &[Dir]) -> Option<&Path> {
    dir(dirs, "pids")
        .or_else(|| dir(dirs, "freezer"))
        .or_else(|| dir(dirs, "memory"))
        .or_else(|| dirs.first().map(|d| d.path.as_path()))
}

pub(crate) fn stats(dirs: &[Dir]) -> Result<Stats> {
    let mut s = Stats::default();
    if let Some(d) = dir(dirs, "cpuacct") {
        let mut cpu = CpuStats {
            usage_total: read_u64_opt(d, "cpuacct.usage")?.unwrap_or(0),
            ..CpuStats::default()
        };
        if let Some(per) = fsutil::read_opt(d, "cpuacct.usage_percpu")? {
            cpu.usage_percpu = per
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
        }
        match (
            read_u64_opt(d, "cpuacct.usage_user")?,
            read_u64_opt(d, "cpuacct.usage_sys")?,
        ) {
            (Some(u), Some(k)) => {
                cpu.usage_user = u;
                cpu.usage_kernel = k;
            }
            _ => {
                if let Some(st) = fsutil::read_opt(d, "cpuacct.stat")? {
                    // USER_HZ ticks.
                    // SAFETY: sysconf only reads a configuration value.
                    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
                    let ns_per_tick = if hz > 0 {
                        1_000_000_000 / hz as u64
                    } else {
                        10_000_000
                    };
                    let kv = parse_flat_keyed(&st);
                    cpu.usage_user = keyed(&kv, "user").unwrap_or(0) * ns_per_tick;
                    cpu.usage_kernel = keyed(&kv, "system").unwrap_or(0) * ns_per_tick;
                }
            }
        }
        s.cpu = Some(cpu);
    }
    if let Some(d) = dir(dirs, "cpu") {
        if let Some(st) = fsutil::read_opt(d, "cpu.stat")? {
            let kv = parse_flat_keyed(&st);
            let cpu = s.cpu.get_or_insert_with(CpuStats::default);
            cpu.throttling_periods = keyed(&kv, "nr_periods").unwrap_or(0);
            cpu.throttled_periods = keyed(&kv, "nr_throttled").unwrap_or(0);
            cpu.throttled_time = keyed(&kv, "throttled_time").unwrap_or(0);
        }
    }
    if let Some(d) = dir(dirs, "memory") {
        if let Some(usage) = read_u64_opt(d, "memory.usage_in_bytes")? {
            let stat = fsutil::read_opt(d, "memory.stat")?.unwrap_or_default();
            let kv = parse_flat_keyed(&stat);
            let memsw = read_u64_opt(d, "memory.memsw.usage_in_bytes")?;
            let oom = fsutil::read_opt(d, "memory.oom_control")?
                .and_then(|s| keyed(&parse_flat_keyed(&s), "oom_kill"));
            s.memory = Some(MemoryStats {
                usage,
                limit: read_u64_opt(d, "memory.limit_in_bytes")?.and_then(limit_or_none),
                max_usage: read_u64_opt(d, "memory.max_usage_in_bytes")?,
                cache: keyed(&kv, "total_cache")
                    .or_else(|| keyed(&kv, "cache"))
                    .unwrap_or(0),
                rss: keyed(&kv, "total_rss")
                    .or_else(|| keyed(&kv, "rss"))
                    .unwrap_or(0),
                swap_usage: memsw.map(|m| m.saturating_sub(usage)),
                failcnt: read_u64_opt(d, "memory.failcnt")?.unwrap_or(0),
                oom_kill: oom,
                raw: kv.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            });
        }
    }
    if let Some(d) = dir(dirs, "pids") {
        if let Some(current) = read_u64_opt(d, "pids.current")? {
            s.pids = Some(PidsStats {
                current,
                limit: fsutil::read_opt(d, "pids.max")?.and_then(|v| v.trim().parse::<u64>().ok()),
            });
        }
    }
    if let Some(d) = dir(dirs, "blkio") {
        // The recursive files where the kernel has them (they include child cgroups).
        let read = |names: [&str; 2]| -> Result<Vec<crate::stats::IoEntry>> {
            for n in names {
                if let Some(t) = fsutil::read_opt(d, n)? {
                    return Ok(crate::stats::parse_blkio_v1(&t));
                }
            }
            Ok(Vec::new())
        };
        s.io = Some(crate::stats::IoStats {
            service_bytes: read([
                "blkio.throttle.io_service_bytes_recursive",
                "blkio.throttle.io_service_bytes",
            ])?,
            serviced: read([
                "blkio.throttle.io_serviced_recursive",
                "blkio.throttle.io_serviced",
            ])?,
        });
    }
    Ok(s)
}
