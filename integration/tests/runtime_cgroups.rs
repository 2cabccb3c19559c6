//! Cgroup placement and limits, read back from /sys/fs/cgroup/<controller>/<cgroupsPath>/ (the
//! host is cgroup v1 hybrid) while the container exists, and enforced inside it. Every test also
//! passes against runc (`BERTH_RUNC=/usr/bin/runc`).

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};
use berth_integration::runtime::kernel::{self, cgroup_file};
use berth_integration::runtime::{unique_name, wait_for, Bundle, Runtime};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);
const MIB: u64 = 1024 * 1024;

/// The v1 controllers mounted on this host (each its own hierarchy under /sys/fs/cgroup).
fn v1_controllers() -> Vec<String> {
    let Ok(mounts) = kernel::host_mounts() else {
        return Vec::new();
    };
    mounts
        .into_iter()
        .filter(|m| m.fs_type == "cgroup")
        .filter_map(|m| {
            let name = m.mount_point.strip_prefix("/sys/fs/cgroup/")?.to_string();
            (!name.contains('/') && name != "systemd").then_some(name)
        })
        .collect()
}

#[test]
fn init_is_in_its_cgroup_when_create_returns() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "100"]);
    let id = unique_name("cg-place");
    let guard = rt.guard(&id, &bundle);
    rt.create(&id, &bundle)?.ok();
    let pid = rt.pid(&id)?;
    guard.track_pid(pid);
    let entries = kernel::proc_cgroups(pid)?;
    let controllers = v1_controllers();
    ensure!(
        controllers.len() >= 4,
        "few v1 controllers on this host: {controllers:?}"
    );
    for controller in &controllers {
        let path = entries
            .iter()
            .find(|(c, _)| c.split(',').any(|c| c == controller))
            .map(|(_, p)| p.as_str());
        assert_eq!(
            path,
            Some(bundle.cgroup_path()),
            "{controller} cgroup of init {pid} right after create: {entries:?}"
        );
        let dir = Path::new(kernel::CGROUP_ROOT)
            .join(controller)
            .join(bundle.cgroup_path().trim_start_matches('/'));
        assert!(
            kernel::cgroup_procs(&dir).contains(&pid),
            "{} does not list {pid}",
            dir.display()
        );
    }
    rt.delete_force(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn memory_and_pids_limits_are_written() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "100"]).resources(json!({
        "memory": { "limit": 64 * MIB, "reservation": 32 * MIB },
        "pids": { "limit": 42 }
    }));
    let id = unique_name("cg-mem");
    let guard = rt.guard(&id, &bundle);
    rt.create(&id, &bundle)?.ok();
    guard.track_pid(rt.pid(&id)?);
    let path = bundle.cgroup_path();
    assert_eq!(
        cgroup_file("memory", path, "memory.limit_in_bytes")?,
        (64 * MIB).to_string()
    );
    assert_eq!(
        cgroup_file("memory", path, "memory.soft_limit_in_bytes")?,
        (32 * MIB).to_string()
    );
    assert_eq!(cgroup_file("pids", path, "pids.max")?, "42");
    rt.delete_force(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn cpu_shares_quota_and_cpuset_are_written() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "100"]).resources(json!({
        "cpu": { "shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0" }
    }));
    let id = unique_name("cg-cpu");
    let guard = rt.guard(&id, &bundle);
    rt.create(&id, &bundle)?.ok();
    let pid = rt.pid(&id)?;
    guard.track_pid(pid);
    let path = bundle.cgroup_path();
    assert_eq!(cgroup_file("cpu", path, "cpu.shares")?, "512");
    assert_eq!(cgroup_file("cpu", path, "cpu.cfs_quota_us")?, "50000");
    assert_eq!(cgroup_file("cpu", path, "cpu.cfs_period_us")?, "100000");
    assert_eq!(cgroup_file("cpuset", path, "cpuset.cpus")?, "0");
    // The kernel applies the cpuset to the process.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    assert_eq!(
        kernel::status_field(&status, "Cpus_allowed_list").as_deref(),
        Some("0")
    );
    rt.delete_force(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn pids_limit_is_enforced() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.resources(json!({ "pids": { "limit": 5 } })).sh(
        "i=0; while [ $i -lt 20 ]; do sleep 30 & i=$((i+1)); echo forked $i; done; echo all forked",
    );
    let id = unique_name("cg-pids");
    let guard = rt.guard(&id, &bundle);
    let out = rt.create(&id, &bundle)?.ok();
    guard.track_pid(rt.pid(&id)?);
    rt.start(&id)?.ok();
    // busybox sh gives up at the first failed fork; its death ends the pid namespace.
    rt.wait_status(&id, "stopped", WAIT)?;
    let stdout = out.reread_stdout();
    let stderr = out.reread_stderr();
    assert!(
        !stdout.contains("all forked"),
        "20 sleeps under pids.limit 5: {stdout}"
    );
    let forked = stdout.lines().filter(|l| l.starts_with("forked")).count();
    assert!(forked <= 4, "{forked} sleeps besides sh under a limit of 5");
    assert!(
        stderr.contains("Resource temporarily unavailable"),
        "stderr: {stderr}"
    );
    let events = cgroup_file("pids", bundle.cgroup_path(), "pids.events")?;
    let refused: u64 = events
        .strip_prefix("max ")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(refused >= 1, "pids.events: {events}");
    rt.delete(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn memory_limit_is_enforced_by_the_oom_killer() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    // dd allocates its 64 MiB block and fills it: more than the 16 MiB limit (the host has
    // no swap, so the kernel must kill it).
    bundle
        .resources(json!({ "memory": { "limit": 16 * MIB } }))
        .sh("dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null; echo rc=$?");
    let id = unique_name("cg-oom");
    let guard = rt.guard(&id, &bundle);
    let out = rt.create(&id, &bundle)?.ok();
    rt.start(&id)?.ok();
    rt.wait_status(&id, "stopped", WAIT)?;
    assert_eq!(out.reread_stdout(), "rc=137\n", "dd was not SIGKILLed");
    let oom = cgroup_file("memory", bundle.cgroup_path(), "memory.oom_control")?;
    let kills = oom
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(kills >= 1, "memory.oom_control: {oom}");
    rt.delete(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

/// Reads one record of /dev/kmsg (char 1:11) through a node made inside the container, with
/// or without an allow rule for it; returns the container's stdout and stderr.
fn read_kmsg(rt: &Runtime, allow: bool) -> Result<(String, String)> {
    let mut bundle = Bundle::new()?;
    let mut caps = berth_integration::runtime::DEFAULT_CAPS.to_vec();
    caps.extend(["CAP_MKNOD", "CAP_SYSLOG"]);
    bundle.capabilities(&caps).sh(
        "for d in null zero full random urandom tty; do [ -c /dev/$d ] && echo dev $d; done; \
         head -c 4 /dev/zero | wc -c; echo x > /dev/null && echo null-ok; \
         mknod /dev/k c 1 11 && dd if=/dev/k of=/dev/null bs=8192 count=1 && echo read-kmsg; \
         echo ready; exec sleep 100",
    );
    if allow {
        if let Some(rules) = bundle.config_mut()["linux"]["resources"]["devices"].as_array_mut() {
            rules
                .push(json!({"allow": true, "type": "c", "major": 1, "minor": 11, "access": "rw"}));
        }
    }
    let id = unique_name("cg-dev");
    let guard = rt.guard(&id, &bundle);
    let out = rt.create(&id, &bundle)?.ok();
    guard.track_pid(rt.pid(&id)?);
    rt.start(&id)?.ok();
    ensure!(
        wait_for(WAIT, || out.reread_stdout().contains("ready")),
        "no ready: {} {}",
        out.reread_stdout(),
        out.reread_stderr()
    );
    let list = cgroup_file("devices", bundle.cgroup_path(), "devices.list")?;
    assert!(
        !list.lines().any(|l| l == "a *:* rwm"),
        "devices cgroup allows all: {list}"
    );
    let io = (out.reread_stdout(), out.reread_stderr());
    rt.delete_force(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(io)
}

#[test]
fn devices_are_denied_except_the_defaults_and_allowed_rules() -> Result<()> {
    let rt = Runtime::new()?;
    let (stdout, stderr) = read_kmsg(&rt, false)?;
    for dev in ["null", "zero", "full", "random", "urandom", "tty"] {
        assert!(
            stdout.contains(&format!("dev {dev}\n")),
            "/dev/{dev} missing: {stdout}"
        );
    }
    assert!(
        stdout.contains("\n4\n") && stdout.contains("null-ok"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("read-kmsg"),
        "a device outside the allow list was read"
    );
    assert!(
        stderr.contains("Operation not permitted"),
        "stderr: {stderr}"
    );

    let (stdout, stderr) = read_kmsg(&rt, true)?;
    assert!(
        stdout.contains("read-kmsg"),
        "an allowed device could not be read: {stderr}"
    );
    Ok(())
}
