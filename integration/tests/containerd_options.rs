//! `ctr run` options that reach the runtime under test through the OCI config containerd writes
//! (`$BERTH_RUNC`, default the release berth-runc; `BERTH_RUNC=/usr/bin/runc` is the control):
//! stdin, seccomp (default and custom profiles), a read-only rootfs, bind mounts, capabilities
//! (default, privileged, added/dropped), CPU limits, the host network namespace and a user
//! namespace — each checked from inside the container or read back from the kernel.

use berth_integration::containerd::Containerd;
use berth_integration::runtime::kernel;

/// Runs `cmd` detached as `id`, returning the init pid (the caller's Containerd cleans up).
fn run_detached(c: &Containerd, flags: &[&str], id: &str, cmd: &[&str]) -> i32 {
    let mut all = vec!["-d"];
    all.extend_from_slice(flags);
    c.ok(&c.run(&all, id, cmd), id);
    let (pid, status) = c
        .task(id)
        .unwrap_or_else(|| panic!("task {id} not listed\n{}", c.log_tail(20)));
    assert_eq!(status, "RUNNING");
    pid
}

/// Removes a detached task and its container, asserting nothing is left.
fn remove(c: &Containerd, id: &str) {
    let path = c.cgroups_path(id).unwrap_or_default();
    c.ok(&c.ctr(&["task", "rm", "-f", id]), id);
    c.ok(&c.ctr(&["containers", "rm", id]), id);
    let left = c.leftovers(id, &path);
    assert!(left.is_empty(), "{left:#?}");
}

/// Asserts the init's effective, permitted and bounding sets are exactly the config's.
fn assert_caps_applied(c: &Containerd, id: &str, pid: i32) -> u64 {
    let config = c.oci_config(id).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mut effective = 0;
    for (set, field) in [
        ("effective", "CapEff"),
        ("permitted", "CapPrm"),
        ("bounding", "CapBnd"),
    ] {
        let names: Vec<&str> = config["process"]["capabilities"][set]
            .as_array()
            .unwrap_or_else(|| panic!("config.json has no {set} capabilities"))
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let want = kernel::cap_mask(&names).unwrap();
        let got = kernel::parse_cap_hex(&kernel::status_field(&status, field).unwrap()).unwrap();
        assert_eq!(
            got, want,
            "{field} of {id}: {got:#x}, config.json's {set}: {want:#x} ({names:?})"
        );
        if set == "effective" {
            effective = got;
        }
    }
    effective
}

#[test]
fn stdin_reaches_the_container() {
    let c = Containerd::start().unwrap();
    let id = "stdin";
    let input = c.dir().join("stdin.txt");
    std::fs::write(&input, "line one\nline two\n").unwrap();
    // ctr never closes the container's stdin at EOF: read one line and stop.
    let out = c.run_with_stdin(&["--rm"], id, &["head", "-n", "1"], &input);
    assert_eq!(c.ok(&out, id), "line one\n", "{}", c.diagnose(&out, id));
}

#[test]
fn default_seccomp_profile_is_loaded_only_when_asked() {
    let c = Containerd::start().unwrap();
    let on = c.run_expecting(
        &["--rm", "--seccomp"],
        "seccomp-on",
        &["grep", "^Seccomp:", "/proc/self/status"],
        0,
        "Seccomp:\t2\n",
    );
    assert_eq!(
        c.ok(&on, "seccomp-on")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["Seccomp:", "2"],
        "with --seccomp the process must run in filter mode"
    );
    let off = c.run_expecting(
        &["--rm"],
        "seccomp-off",
        &["grep", "^Seccomp:", "/proc/self/status"],
        0,
        "Seccomp:\t0\n",
    );
    assert_eq!(
        c.ok(&off, "seccomp-off")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["Seccomp:", "0"],
        "without --seccomp no filter"
    );
}

#[test]
fn custom_seccomp_profile_denies_with_its_errno() {
    let c = Containerd::start().unwrap();
    let id = "seccomp-custom";
    let arch = match std::env::consts::ARCH {
        "x86_64" => "SCMP_ARCH_X86_64",
        "aarch64" => "SCMP_ARCH_AARCH64",
        other => panic!("no seccomp arch name for {other}"),
    };
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": [arch],
        "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13 }],
    });
    let path = c.dir().join("seccomp.json");
    std::fs::write(&path, profile.to_string()).unwrap();
    let path = path.to_string_lossy().into_owned();
    let out = c.run(
        &["--rm", "--seccomp", "--seccomp-profile", &path],
        id,
        &[
            "sh",
            "-c",
            "mkdir /tmp/d 2>&1; echo mkdir=$?; touch /tmp/f && echo touch=ok",
        ],
    );
    let stdout = c.ok(&out, id);
    // errnoRet 13 is EACCES: the runtime must return the profile's errno, not EPERM.
    assert!(
        stdout.contains("Permission denied") && stdout.contains("mkdir=1"),
        "mkdir was not denied with EACCES:\n{}",
        c.diagnose(&out, id)
    );
    assert!(stdout.contains("touch=ok"), "{}", c.diagnose(&out, id));
}

#[test]
fn read_only_rootfs_refuses_writes() {
    let c = Containerd::start().unwrap();
    let id = "readonly";
    let out = c.run(
        &["--rm", "--read-only"],
        id,
        &["sh", "-c", "touch /x 2>&1; echo touch=$?"],
    );
    let stdout = c.ok(&out, id);
    assert!(
        stdout.contains("Read-only file system") && stdout.contains("touch=1"),
        "{}",
        c.diagnose(&out, id)
    );
}

#[test]
fn bind_mounts_read_only_and_read_write() {
    let c = Containerd::start().unwrap();
    let ro = c.dir().join("ro");
    let rw = c.dir().join("rw");
    std::fs::create_dir(&ro).unwrap();
    std::fs::create_dir(&rw).unwrap();
    std::fs::write(ro.join("f"), "from the host\n").unwrap();
    let ro_mount = format!("type=bind,src={},dst=/ro,options=rbind:ro", ro.display());
    let rw_mount = format!("type=bind,src={},dst=/rw,options=rbind:rw", rw.display());
    let id = "binds";
    let out = c.run(
        &["--rm", "--mount", &ro_mount, "--mount", &rw_mount],
        id,
        &[
            "sh",
            "-c",
            "cat /ro/f; touch /ro/new 2>&1; echo ro=$?; echo from the container > /rw/g; echo rw=$?",
        ],
    );
    let stdout = c.ok(&out, id);
    assert!(stdout.contains("from the host"), "{}", c.diagnose(&out, id));
    assert!(
        stdout.contains("Read-only file system") && stdout.contains("ro=1"),
        "{}",
        c.diagnose(&out, id)
    );
    assert!(stdout.contains("rw=0"), "{}", c.diagnose(&out, id));
    assert!(!ro.join("new").exists());
    assert_eq!(
        std::fs::read_to_string(rw.join("g")).unwrap(),
        "from the container\n"
    );
}

#[test]
fn capabilities_default_privileged_and_added_dropped() {
    let c = Containerd::start().unwrap();
    let pid = run_detached(&c, &[], "caps-default", &["sleep", "300"]);
    let default = assert_caps_applied(&c, "caps-default", pid);
    assert_eq!(
        default & kernel::cap_mask(&["CAP_SYS_ADMIN"]).unwrap(),
        0,
        "a default container must not have CAP_SYS_ADMIN"
    );
    remove(&c, "caps-default");

    let pid = run_detached(
        &c,
        &["--cap-add", "CAP_SYS_ADMIN", "--cap-drop", "CAP_CHOWN"],
        "caps-changed",
        &["sleep", "300"],
    );
    let changed = assert_caps_applied(&c, "caps-changed", pid);
    assert_eq!(
        changed,
        (default | kernel::cap_mask(&["CAP_SYS_ADMIN"]).unwrap())
            & !kernel::cap_mask(&["CAP_CHOWN"]).unwrap()
    );
    remove(&c, "caps-changed");

    // Privileged: every capability this (root) test process has.
    let pid = run_detached(&c, &["--privileged"], "caps-privileged", &["sleep", "300"]);
    let privileged = assert_caps_applied(&c, "caps-privileged", pid);
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let own = kernel::parse_cap_hex(&kernel::status_field(&own, "CapEff").unwrap()).unwrap();
    assert_eq!(
        privileged, own,
        "privileged CapEff {privileged:#x} vs ours {own:#x}"
    );
    remove(&c, "caps-privileged");
}

#[test]
fn cpu_limits_reach_the_cgroup() {
    let c = Containerd::start().unwrap();
    let id = "cpu";
    run_detached(
        &c,
        &["--cpus", "0.5", "--cpu-shares", "512"],
        id,
        &["sleep", "300"],
    );
    let path = c.cgroups_path(id).unwrap();
    let cpu = c.oci_config(id).unwrap()["linux"]["resources"]["cpu"].clone();
    assert_eq!(cpu["quota"].as_i64(), Some(50_000), "config: {cpu}");
    assert_eq!(cpu["period"].as_u64(), Some(100_000), "config: {cpu}");
    assert_eq!(cpu["shares"].as_u64(), Some(512), "config: {cpu}");
    let read = |f: &str| kernel::cgroup_file("cpu", &path, f).unwrap();
    assert_eq!(read("cpu.cfs_quota_us"), "50000");
    assert_eq!(read("cpu.cfs_period_us"), "100000");
    assert_eq!(read("cpu.shares"), "512");
    remove(&c, id);
}

#[test]
fn net_host_shares_the_host_network_namespace() {
    let c = Containerd::start().unwrap();
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    let host = host.to_string_lossy();
    let shared = c.run_expecting(
        &["--rm", "--net-host"],
        "net-host",
        &["readlink", "/proc/self/ns/net"],
        0,
        &format!("{host}\n"),
    );
    assert_eq!(c.ok(&shared, "net-host").trim(), host, "--net-host");
    let own = c.run(&["--rm"], "net-own", &["readlink", "/proc/self/ns/net"]);
    let own = c.ok(&own, "net-own");
    assert!(own.starts_with("net:["), "{own}");
    assert_ne!(
        own.trim(),
        host,
        "a default container must get its own network namespace"
    );
}

#[test]
fn user_namespace_maps_root_to_an_unprivileged_range() {
    let c = Containerd::start().unwrap();
    let id = "userns";
    let pid = run_detached(
        &c,
        &["--uidmap", "0:100000:65536", "--gidmap", "0:200000:65536"],
        id,
        &["sleep", "300"],
    );
    // ctr 1.6 sends task options {io_uid, io_gid} for --uidmap, which replace the runtime
    // options: the shim then runs `runc` from its PATH, which the fixture points at the runtime
    // under test. Check that is what happened.
    let options = c.shim_options(id).unwrap();
    assert_eq!(options["binary_name"], serde_json::Value::Null, "{options}");
    let shim = c
        .shims()
        .into_iter()
        .find(|s| s.id == id)
        .expect("a shim for the container");
    let environ = std::fs::read(format!("/proc/{}/environ", shim.pid)).unwrap();
    let path = environ
        .split(|b| *b == 0)
        .find_map(|v| v.strip_prefix(b"PATH="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .expect("the shim has a PATH");
    let runc_dir = path
        .split(':')
        .map(std::path::Path::new)
        .find(|d| d.join("runc").exists());
    assert_eq!(
        runc_dir,
        Some(c.bin_dir().as_path()),
        "the shim's PATH {path} must find `runc` in {} first",
        c.bin_dir().display()
    );

    // Seen from the host: the init runs as uid 100000, in a user namespace of its own.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids = kernel::status_field(&status, "Uid").unwrap();
    assert_eq!(
        uids.split_whitespace().next(),
        Some("100000"),
        "Uid: {uids}"
    );
    let gids = kernel::status_field(&status, "Gid").unwrap();
    assert_eq!(
        gids.split_whitespace().next(),
        Some("200000"),
        "Gid: {gids}"
    );
    let host_userns = std::fs::read_link("/proc/self/ns/user").unwrap();
    let container_userns = std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
    assert_ne!(container_userns, host_userns);

    // Seen from inside, through exec (which must join that user namespace): root, the maps,
    // and a rootfs containerd chowned for the mapping.
    let out = c.exec(
        &[],
        id,
        "inside",
        &[
            "sh",
            "-c",
            "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; readlink /proc/self/ns/user; stat -c %u /bin/busybox",
        ],
    );
    let stdout = c.ok(&out, id);
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let userns = container_userns.to_string_lossy();
    assert_eq!(
        lines,
        vec![
            vec!["0"],
            vec!["0"],
            vec!["0", "100000", "65536"],
            vec!["0", "200000", "65536"],
            vec![userns.as_ref()],
            vec!["0"],
        ],
        "{}",
        c.diagnose(&out, id)
    );
    remove(&c, id);
}
