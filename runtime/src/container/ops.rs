//! Commands on a living container's cgroup: `ps`, `pause`, `resume`, `update`, `events`.

use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use berth_cgroups::Cgroup;
use oci_spec::runtime::LinuxResources;
use serde_json::json;

use super::Settings;
use crate::state::{self, ContainerState, StateDir, Status};

fn cgroup_of(st: &ContainerState) -> Result<&Cgroup> {
    st.cgroup
        .as_ref()
        .ok_or_else(|| anyhow!("container {} has no cgroup", st.id))
}

/// `ps`: the container's pids as JSON, or `ps` output (default `-ef`) cut to its processes.
pub fn ps(ctx: &Settings, id: &str, json_format: bool, ps_args: &[String]) -> Result<()> {
    let st = state::read(&ctx.root, id)?;
    let pids = if st.status(&ctx.root.join(id)) == Status::Stopped {
        Vec::new()
    } else {
        cgroup_of(&st)?
            .pids()
            .context("listing the container's processes")?
    };
    let mut out = std::io::stdout().lock();
    if json_format {
        writeln!(out, "{}", serde_json::to_string(&pids)?)?;
        return Ok(());
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let output = std::process::Command::new("ps")
        .args(&args)
        .output()
        .context("running ps")?;
    if !output.status.success() {
        bail!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let pid_col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| anyhow!("ps output has no PID column"))?;
    writeln!(out, "{header}")?;
    for line in lines {
        let pid: Option<i32> = line
            .split_whitespace()
            .nth(pid_col)
            .and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

/// `pause`: freeze every process of the container.
pub fn pause(ctx: &Settings, id: &str) -> Result<()> {
    let dir = StateDir::open(&ctx.root, id)?;
    let st = dir.load()?;
    match st.status(&dir.path) {
        Status::Running | Status::Created => {}
        Status::Paused => bail!("container {id} is already paused"),
        _ => bail!("container not running"),
    }
    cgroup_of(&st)?.freeze().context("freezing the container")?;
    Ok(())
}

/// `resume`: thaw a paused container.
pub fn resume(ctx: &Settings, id: &str) -> Result<()> {
    let dir = StateDir::open(&ctx.root, id)?;
    let st = dir.load()?;
    if st.status(&dir.path) != Status::Paused {
        bail!("container not paused");
    }
    cgroup_of(&st)?.thaw().context("thawing the container")?;
    Ok(())
}

/// The runc flags of `update`; each set value overrides the resources JSON.
#[derive(Debug, Default, Clone)]
pub struct UpdateFlags {
    pub memory: Option<String>,
    pub memory_reservation: Option<String>,
    pub memory_swap: Option<String>,
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpu_rt_period: Option<u64>,
    pub cpu_rt_runtime: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub pids_limit: Option<i64>,
    pub blkio_weight: Option<u16>,
}

/// A size with an optional unit, as runc takes it: `1024`, `64k`, `64m`, `1g`, `-1`.
pub fn parse_size(text: &str) -> Result<i64> {
    let t = text.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num.parse().map_err(|_| anyhow!("invalid size {text:?}"))?;
    if n < 0.0 {
        bail!("invalid size {text:?}");
    }
    Ok((n * mult as f64) as i64)
}

/// Merge the resources JSON (if any) with the flags.
pub fn update_resources(json_text: Option<&[u8]>, flags: &UpdateFlags) -> Result<LinuxResources> {
    let mut r: LinuxResources = match json_text {
        Some(text) => {
            let de = &mut serde_json::Deserializer::from_slice(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                if e.path().to_string() == "." {
                    anyhow!("invalid resources JSON: {}", e.inner())
                } else {
                    anyhow!("invalid resources JSON: field {}: {}", e.path(), e.inner())
                }
            })?
        }
        None => LinuxResources::default(),
    };
    let mut mem = (*r.memory()).unwrap_or_default();
    let mut mem_set = r.memory().is_some();
    if let Some(v) = &flags.memory {
        mem.set_limit(Some(parse_size(v)?));
        mem_set = true;
    }
    if let Some(v) = &flags.memory_reservation {
        mem.set_reservation(Some(parse_size(v)?));
        mem_set = true;
    }
    if let Some(v) = &flags.memory_swap {
        mem.set_swap(Some(parse_size(v)?));
        mem_set = true;
    }
    if mem_set {
        r.set_memory(Some(mem));
    }
    let mut cpu = r.cpu().clone().unwrap_or_default();
    let mut cpu_set = r.cpu().is_some();
    if let Some(v) = flags.cpu_shares {
        cpu.set_shares(Some(v));
        cpu_set = true;
    }
    if let Some(v) = flags.cpu_quota {
        cpu.set_quota(Some(v));
        cpu_set = true;
    }
    if let Some(v) = flags.cpu_period {
        cpu.set_period(Some(v));
        cpu_set = true;
    }
    if let Some(v) = flags.cpu_rt_period {
        cpu.set_realtime_period(Some(v));
        cpu_set = true;
    }
    if let Some(v) = flags.cpu_rt_runtime {
        cpu.set_realtime_runtime(Some(v));
        cpu_set = true;
    }
    if let Some(v) = &flags.cpuset_cpus {
        cpu.set_cpus(Some(v.clone()));
        cpu_set = true;
    }
    if let Some(v) = &flags.cpuset_mems {
        cpu.set_mems(Some(v.clone()));
        cpu_set = true;
    }
    if cpu_set {
        r.set_cpu(Some(cpu));
    }
    if let Some(v) = flags.pids_limit {
        let mut p = oci_spec::runtime::LinuxPids::default();
        p.set_limit(v);
        r.set_pids(Some(p));
    }
    if let Some(v) = flags.blkio_weight {
        let mut b = r.block_io().clone().unwrap_or_default();
        b.set_weight(Some(v));
        r.set_block_io(Some(b));
    }
    Ok(r)
}

/// `update`: change the limits of a container's cgroup.
pub fn update(ctx: &Settings, id: &str, resources: &LinuxResources) -> Result<()> {
    let dir = StateDir::open(&ctx.root, id)?;
    let st = dir.load()?;
    if st.status(&dir.path) == Status::Stopped {
        bail!("container not running");
    }
    cgroup_of(&st)?
        .set(resources)
        .context("updating cgroup limits")?;
    Ok(())
}

/// The runc-shaped stats object of `events --stats`.
pub fn stats_json(cg: &Cgroup) -> Result<serde_json::Value> {
    let s = cg.stats().context("reading cgroup statistics")?;
    let mut data = json!({});
    if let Some(c) = &s.cpu {
        data["cpu"] = json!({
            "usage": {"total": c.usage_total, "percpu": c.usage_percpu, "kernel": c.usage_kernel, "user": c.usage_user},
            "throttling": {"periods": c.throttling_periods, "throttledPeriods": c.throttled_periods, "throttledTime": c.throttled_time}
        });
    }
    if let Some(m) = &s.memory {
        data["memory"] = json!({
            "usage": {"usage": m.usage, "limit": m.limit.unwrap_or(u64::MAX), "max": m.max_usage.unwrap_or(0), "failcnt": m.failcnt},
            "swap": {"usage": m.swap_usage.unwrap_or(0)},
            "cache": m.cache,
            "raw": m.raw,
        });
    }
    if let Some(p) = &s.pids {
        data["pids"] = json!({"current": p.current, "limit": p.limit.unwrap_or(0)});
    }
    Ok(data)
}

/// `events`: one stats event with `stats_only`, else a stream every `interval` (stats, and
/// "oom" when the OOM kill count grows) until the container stops.
pub fn events(ctx: &Settings, id: &str, stats_only: bool, interval: Duration) -> Result<()> {
    let st = state::read(&ctx.root, id)?;
    if st.status(&ctx.root.join(id)) == Status::Stopped {
        bail!("container not running");
    }
    let cg = cgroup_of(&st)?;
    let mut out = std::io::stdout().lock();
    let emit =
        |out: &mut std::io::StdoutLock<'_>, kind: &str, data: serde_json::Value| -> Result<()> {
            writeln!(out, "{}", json!({"type": kind, "id": id, "data": data}))?;
            out.flush()?;
            Ok(())
        };
    if stats_only {
        return emit(&mut out, "stats", stats_json(cg)?);
    }
    let mut ooms = cg
        .stats()
        .ok()
        .and_then(|s| s.memory)
        .and_then(|m| m.oom_kill)
        .unwrap_or(0);
    loop {
        if st.status(&ctx.root.join(id)) == Status::Stopped {
            return Ok(());
        }
        let stats = match stats_json(cg) {
            Ok(s) => s,
            // The cgroup went away with the container.
            Err(_) if !st.init_alive() => return Ok(()),
            Err(e) => return Err(e),
        };
        let now = cg
            .stats()
            .ok()
            .and_then(|s| s.memory)
            .and_then(|m| m.oom_kill)
            .unwrap_or(ooms);
        if now > ooms {
            emit(&mut out, "oom", json!(null))?;
            ooms = now;
        }
        emit(&mut out, "stats", stats)?;
        std::thread::sleep(interval);
    }
}

/// Parse `5s`, `500ms`, `1m` (Go duration style, as runc takes `--interval`).
pub fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    let (num, unit) = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| t.split_at(i))
        .unwrap_or((t, "s"));
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow!("invalid duration {text:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("invalid duration {text:?}"),
    };
    if secs <= 0.0 {
        bail!("invalid duration {text:?}: must be positive");
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("-1").unwrap(), -1);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn flags_override_the_json() {
        let flags = UpdateFlags {
            memory: Some("32m".into()),
            pids_limit: Some(10),
            ..Default::default()
        };
        let r = update_resources(
            Some(br#"{"memory":{"limit":1000},"cpu":{"shares":512}}"#),
            &flags,
        )
        .unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(32 << 20));
        assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(512));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 10);
        let err = update_resources(Some(b"{nope"), &UpdateFlags::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid resources JSON"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5x").is_err());
    }
}
