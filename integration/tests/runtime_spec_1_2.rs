//! runtime-spec 1.1/1.2 fields that runc 1.1 lacks, read back from inside the container:
//! recursive mount attributes, idmapped mounts, the time namespace's offsets, personality,
//! scheduler, I/O priority and exec CPU affinity. (runc 1.1.5 does not pass these: they are
//! berth-runc's.)

use std::os::unix::fs::MetadataExt;

use anyhow::Result;
use berth_integration::runtime::{assert_error, unique_name, Bundle, Runtime};
use serde_json::json;

/// A host directory (mode 0755) holding `root-file`, owned by 0:0, and `user-file`, 1000:1000.
fn owned_files() -> Result<tempfile::TempDir> {
    let host = tempfile::tempdir()?;
    std::fs::set_permissions(
        host.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    std::fs::write(host.path().join("root-file"), "r")?;
    std::fs::write(host.path().join("user-file"), "u")?;
    std::os::unix::fs::chown(host.path().join("user-file"), Some(1000), Some(1000))?;
    Ok(host)
}

#[test]
fn an_idmapped_bind_shows_files_under_the_mapped_owners() -> Result<()> {
    let rt = Runtime::new()?;
    let host = owned_files()?;
    let mut bundle = Bundle::new()?;
    bundle.sh("stat -c '%n %u:%g' /plain/root-file /mapped/root-file /mapped/user-file");
    let source = host.path().display().to_string();
    bundle.mount("/plain", "bind", &source, &["rbind"]);
    let maps = json!([{"containerID": 0, "hostID": 5000, "size": 1},
                      {"containerID": 1000, "hostID": 7000, "size": 1}]);
    let mounts = bundle.config_mut()["mounts"]
        .as_array_mut()
        .ok_or_else(|| anyhow::anyhow!("no mounts"))?;
    mounts.push(json!({
        "destination": "/mapped", "type": "bind", "source": source,
        "options": ["rbind", "idmap"], "uidMappings": maps, "gidMappings": maps
    }));
    let id = unique_name("idmap");
    let guard = rt.guard(&id, &bundle);
    let out = rt.run(&id, &bundle)?.ok();
    for line in [
        "/plain/root-file 0:0",
        "/mapped/root-file 5000:5000",
        "/mapped/user-file 7000:7000",
    ] {
        assert!(out.stdout.contains(line), "{line}: {}", out.describe());
    }
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn idmap_without_mappings_uses_the_containers_user_namespace() -> Result<()> {
    let rt = Runtime::new()?;
    let host = owned_files()?;
    let source = host.path().display().to_string();
    let mut bundle = Bundle::new()?;
    bundle
        .user_namespace(100_000, 65_536)
        .mount("/plain", "bind", &source, &["rbind"])
        .mount("/mapped", "bind", &source, &["rbind", "idmap"])
        .sh(
            "stat -c '%n %u' /plain/root-file /mapped/root-file /mapped/user-file; \
             echo hi > /mapped/new && echo wrote",
        );
    let id = unique_name("idmap-userns");
    let guard = rt.guard(&id, &bundle);
    let out = rt.run(&id, &bundle)?.ok();
    // Unmapped host root shows as the overflow id; through the idmapped mount it is the
    // container's root, and what the container's root writes is the host's root's on disk.
    for line in [
        "/plain/root-file 65534",
        "/mapped/root-file 0",
        "/mapped/user-file 1000",
        "wrote",
    ] {
        assert!(out.stdout.contains(line), "{line}: {}", out.describe());
    }
    let meta = std::fs::metadata(host.path().join("new"))?;
    assert_eq!(
        (meta.uid(), meta.gid()),
        (0, 0),
        "owner of the new file on disk"
    );
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn bad_idmapped_mounts_are_refused_before_anything_starts() -> Result<()> {
    let rt = Runtime::new()?;
    let host = tempfile::tempdir()?;
    let source = host.path().display().to_string();
    let maps = json!([{"containerID": 0, "hostID": 5000, "size": 1}]);
    let cases: [(serde_json::Value, &[&str]); 3] = [
        (
            json!({"destination": "/m", "type": "bind", "source": source,
                   "options": ["rbind"], "uidMappings": maps}),
            &["uidMappings and gidMappings must be given together"],
        ),
        (
            json!({"destination": "/m", "type": "tmpfs", "source": "tmpfs",
                   "options": ["idmap"], "uidMappings": maps, "gidMappings": maps}),
            &["idmapped mounts must be bind mounts"],
        ),
        (
            json!({"destination": "/m", "type": "bind", "source": source,
                   "options": ["rbind", "idmap"]}),
            &["needs the container's linux.uidMappings"],
        ),
    ];
    for (mount, needles) in cases {
        let mut bundle = Bundle::new()?;
        bundle.args(&["true"]);
        bundle.config_mut()["mounts"]
            .as_array_mut()
            .ok_or_else(|| anyhow::anyhow!("no mounts"))?
            .push(mount);
        let id = unique_name("idmap-bad");
        let guard = rt.guard(&id, &bundle);
        let out = rt.run(&id, &bundle)?;
        assert_error(&rt, &out, needles);
        guard.assert_no_leftovers();
    }
    Ok(())
}

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
fn personality_scheduler_and_io_priority() -> Result<()> {
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
    // The init keeps the caller's CPU affinity: execCPUAffinity is for exec (see
    // runtime_conformance.rs).
    cfg["process"]["execCPUAffinity"] = json!({"final": "0"});
    let id = unique_name("sched");
    let guard = rt.guard(&id, &bundle);
    let out = rt.run(&id, &bundle)?.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first().copied(), Some("i686"), "{}", out.describe());
    let ours = std::fs::read_to_string("/proc/self/status")?;
    let ours = ours
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list"))
        .map(|l| l.replace('\t', ""));
    assert_eq!(
        lines.get(1).map(|l| l.to_string()),
        ours,
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
