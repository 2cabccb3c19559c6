//! runtime-spec 1.1/1.2 fields that runc 1.1 lacks, read back from inside the container:
//! recursive mount attributes, the time namespace's offsets, personality, scheduler, I/O
//! priority and exec CPU affinity. (runc 1.1.5 does not pass these: they are berth-runc's.)

use anyhow::Result;
use berth_integration::runtime::{unique_name, Bundle, Runtime};
use serde_json::json;

#[test]
fn recursive_read_only_bind_covers_submounts() -> Result<()> {
    let rt = Runtime::new()?;
    let host = tempfile::tempdir()?;
    let mut bundle = Bundle::new()?;
    bundle
        .mount(
            "/data",
            "bind",
            &host.path().display().to_string(),
            &["rbind", "rro"],
        )
        .sh("touch /data/x 2>&1; echo rc=$?");
    let id = unique_name("rro");
    let guard = rt.guard(&id, &bundle);
    let out = rt.run(&id, &bundle)?.ok();
    assert!(
        out.stdout.contains("Read-only file system"),
        "{}",
        out.describe()
    );
    assert!(!host.path().join("x").exists());
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn time_namespace_offsets_shift_the_boot_clock() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.add_namespace("time").sh("cut -d. -f1 /proc/uptime");
    bundle.config_mut()["linux"]["timeOffsets"] =
        json!({"boottime": {"secs": 10_000_000, "nanosecs": 0}, "monotonic": {"secs": 10_000_000}});
    let id = unique_name("timens");
    let guard = rt.guard(&id, &bundle);
    let out = rt.run(&id, &bundle)?.ok();
    let uptime: u64 = out.stdout.trim().parse()?;
    let host: u64 = std::fs::read_to_string("/proc/uptime")?
        .split('.')
        .next()
        .unwrap_or("0")
        .parse()?;
    assert!(
        uptime >= 10_000_000 + host - 5,
        "uptime {uptime} inside, {host} outside"
    );
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn personality_scheduler_io_priority_and_affinity() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.sh(
        "uname -m; grep Cpus_allowed_list /proc/self/status | tr -d '\\t'; \
         cut -d' ' -f41 /proc/self/stat; cat /proc/self/sched 2>/dev/null | grep -c policy",
    );
    let cfg = bundle.config_mut();
    cfg["linux"]["personality"] = json!({"domain": "LINUX32"});
    cfg["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 5});
    cfg["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 6});
    cfg["process"]["execCPUAffinity"] = json!({"final": "0"});
    let id = unique_name("sched");
    let guard = rt.guard(&id, &bundle);
    let out = rt.run(&id, &bundle)?.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first().copied(), Some("i686"), "{}", out.describe());
    assert_eq!(
        lines.get(1).copied(),
        Some("Cpus_allowed_list:0"),
        "{}",
        out.describe()
    );
    // Field 41 of /proc/PID/stat is the policy: 3 is SCHED_BATCH.
    assert_eq!(lines.get(2).copied(), Some("3"), "{}", out.describe());
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn a_bad_cpu_list_is_a_clear_error() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.args(&["true"]);
    bundle.config_mut()["process"]["execCPUAffinity"] = json!({"final": "7-2"});
    let id = unique_name("affinity");
    let guard = rt.guard(&id, &bundle);
    let out = rt.create(&id, &bundle)?.failed();
    assert!(out.stderr.contains("7-2"), "{}", out.describe());
    guard.assert_no_leftovers();
    Ok(())
}
