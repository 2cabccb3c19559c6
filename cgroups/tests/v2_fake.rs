//! cgroup v2 logic against a fake tree of pre-created files in a tempdir (this host has no
//! real v2 controllers). The files stand in for what the kernel would create.

use std::fs;
use std::path::{Path, PathBuf};

use berth_cgroups::{Cgroup, CgroupVersion, Layout};
use oci_spec::runtime::LinuxResources;
use serde_json::json;

fn resources(v: serde_json::Value) -> LinuxResources {
    serde_json::from_value(v).expect("valid LinuxResources JSON")
}

fn put(dir: &Path, file: &str, content: &str) {
    fs::write(dir.join(file), content).unwrap();
}

fn get(dir: &Path, file: &str) -> String {
    fs::read_to_string(dir.join(file)).unwrap()
}

/// A fake v2 root with the files the kernel has at a root cgroup.
fn fake_root() -> (tempfile::TempDir, Layout) {
    let tmp = tempfile::tempdir().unwrap();
    put(
        tmp.path(),
        "cgroup.controllers",
        "cpuset cpu io memory pids\n",
    );
    put(tmp.path(), "cgroup.subtree_control", "");
    let layout = Layout::v2(tmp.path().to_path_buf(), "/", "/");
    (tmp, layout)
}

/// Creates `path` on the fake root and then fills in the leaf's files as the kernel would.
fn created(layout: &Layout, path: &str) -> Cgroup {
    let mut cg = Cgroup::resolve_in(layout, Some(path), "x").unwrap();
    cg.create().unwrap();
    let dir = cg.path_of("").unwrap();
    for f in [
        "memory.max",
        "memory.swap.max",
        "memory.low",
        "memory.high",
        "cpu.weight",
        "cpu.idle",
        "cpu.max.burst",
        "pids.max",
        "cpuset.cpus",
        "cpuset.mems",
        "io.weight",
        "io.max",
        "cgroup.freeze",
        "cgroup.procs",
    ] {
        put(&dir, f, "");
    }
    put(&dir, "cpu.max", "max 100000\n");
    cg
}

#[test]
fn resolve_and_create_enable_controllers_in_ancestors() {
    let (tmp, layout) = fake_root();
    let cg = created(&layout, "/ctr");
    assert_eq!(cg.version(), CgroupVersion::V2);
    assert_eq!(cg.paths(), vec![tmp.path().join("ctr").as_path()]);
    assert_eq!(cg.created(), [tmp.path().join("ctr")]);
    assert_eq!(cg.path_of("memory"), Some(tmp.path().join("ctr")));
    assert_eq!(
        get(tmp.path(), "cgroup.subtree_control"),
        "+cpuset +cpu +io +memory +pids"
    );
}

#[test]
fn only_missing_controllers_are_enabled() {
    let (tmp, layout) = fake_root();
    put(tmp.path(), "cgroup.subtree_control", "cpu memory\n");
    created(&layout, "/ctr");
    assert_eq!(
        get(tmp.path(), "cgroup.subtree_control"),
        "+cpuset +io +pids"
    );
}

#[test]
fn intermediate_levels_are_enabled_too() {
    let (tmp, layout) = fake_root();
    // A pre-existing intermediate level with the kernel's files.
    let mid = tmp.path().join("mid");
    fs::create_dir(&mid).unwrap();
    put(&mid, "cgroup.controllers", "memory pids\n");
    put(&mid, "cgroup.subtree_control", "");
    let cg = created(&layout, "/mid/ctr");
    assert_eq!(get(&mid, "cgroup.subtree_control"), "+memory +pids");
    assert_eq!(cg.created(), [mid.join("ctr")]);
}

#[test]
fn failed_create_leaves_nothing_behind() {
    let (tmp, layout) = fake_root();
    // "a" is made by create, but has no cgroup.controllers (no kernel): enabling fails.
    let mut cg = Cgroup::resolve_in(&layout, Some("/a/b"), "x").unwrap();
    let err = cg.create().unwrap_err().to_string();
    assert!(err.contains("cgroup.controllers"), "{err}");
    assert!(!tmp.path().join("a").exists(), "create did not clean up");
    assert!(cg.created().is_empty());
}

#[test]
fn relative_paths_follow_the_own_cgroup() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::v2(tmp.path().to_path_buf(), "/", "/system.slice/shim");
    let cg = Cgroup::resolve_in(&layout, None, "abc").unwrap();
    assert_eq!(
        cg.path_of("pids"),
        Some(tmp.path().join("system.slice/shim/abc"))
    );
    let cg = Cgroup::resolve_in(&layout, Some("/kubepods/p1/c1"), "abc").unwrap();
    assert_eq!(cg.path_of("pids"), Some(tmp.path().join("kubepods/p1/c1")));
    assert!(Cgroup::resolve_in(&layout, Some("a/../../b"), "x").is_err());
}

#[test]
fn set_writes_v2_files() {
    let (_tmp, layout) = fake_root();
    let cg = created(&layout, "/ctr");
    let dir = cg.path_of("").unwrap();
    cg.set(&resources(json!({
        "memory": {"limit": 1073741824, "swap": 1610612736, "reservation": 536870912},
        "cpu": {"shares": 1024, "quota": 50000, "period": 200000, "cpus": "0-1", "mems": "0",
                "idle": 1, "burst": 1000},
        "pids": {"limit": 10},
        "blockIO": {"weight": 500,
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}]},
        "unified": {"memory.high": "900000000"}
    })))
    .unwrap();
    assert_eq!(get(&dir, "memory.max"), "1073741824");
    assert_eq!(get(&dir, "memory.swap.max"), "536870912");
    assert_eq!(get(&dir, "memory.low"), "536870912");
    assert_eq!(get(&dir, "cpu.weight"), "39");
    assert_eq!(get(&dir, "cpu.max"), "50000 200000");
    assert_eq!(get(&dir, "cpu.idle"), "1");
    assert_eq!(get(&dir, "cpu.max.burst"), "1000");
    assert_eq!(get(&dir, "cpuset.cpus"), "0-1");
    assert_eq!(get(&dir, "cpuset.mems"), "0");
    assert_eq!(get(&dir, "pids.max"), "10");
    assert_eq!(get(&dir, "io.weight"), "4950");
    assert_eq!(get(&dir, "io.max"), "8:0 rbps=1048576");
    assert_eq!(get(&dir, "memory.high"), "900000000");
}

#[test]
fn unlimited_values_are_max() {
    let (_tmp, layout) = fake_root();
    let cg = created(&layout, "/ctr");
    let dir = cg.path_of("").unwrap();
    cg.set(&resources(
        json!({"memory": {"limit": -1}, "pids": {"limit": -1}, "cpu": {"quota": -1}}),
    ))
    .unwrap();
    assert_eq!(get(&dir, "memory.max"), "max");
    assert_eq!(get(&dir, "memory.swap.max"), "max");
    assert_eq!(get(&dir, "pids.max"), "max");
    assert_eq!(get(&dir, "cpu.max"), "max");
}

#[test]
fn period_alone_keeps_the_quota() {
    let (_tmp, layout) = fake_root();
    let cg = created(&layout, "/ctr");
    let dir = cg.path_of("").unwrap();
    put(&dir, "cpu.max", "30000 100000\n");
    cg.set(&resources(json!({"cpu": {"period": 250000}})))
        .unwrap();
    assert_eq!(get(&dir, "cpu.max"), "30000 250000");
}

#[test]
fn bfq_weight_is_preferred_and_unconverted() {
    let (_tmp, layout) = fake_root();
    let cg = created(&layout, "/ctr");
    let dir = cg.path_of("").unwrap();
    put(&dir, "io.bfq.weight", "");
    cg.set(&resources(json!({"blockIO": {"weight": 300}})))
        .unwrap();
    assert_eq!(get(&dir, "io.bfq.weight"), "300");
    assert_eq!(get(&dir, "io.weight"), "");
}

#[test]
fn bad_v2_values_are_clear_errors() {
    let (_tmp, layout) = fake_root();
    let cg = created(&layout, "/ctr");
    let dir = cg.path_of("").unwrap();
    let cases = [
        (json!({"memory": {"swap": 1000}}), "needs a memory limit"),
        (
            json!({"memory": {"limit": 2000, "swap": 1000}}),
            "below the memory limit",
        ),
        (json!({"unified": {"../x": "1"}}), "\"../x\""),
        (
            json!({"unified": {"memory.oom.group": "1"}}),
            "memory.oom.group does not exist",
        ),
        (json!({"memory": {"limit": -3}}), "-3"),
    ];
    for (r, want) in cases {
        let err = cg.set(&resources(r.clone())).unwrap_err().to_string();
        assert!(err.contains(want), "{r}: {err}");
    }
    // A file the kernel does not have (controller not enabled) is named with its value.
    fs::remove_file(dir.join("pids.max")).unwrap();
    let err = cg
        .set(&resources(json!({"pids": {"limit": 7}})))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pids.max")
            && err.contains(" 7")
            && err.contains("controller is not available"),
        "{err}"
    );
    // Nothing was written by the rejected memory settings.
    assert_eq!(get(&dir, "memory.max"), "");
}

#[test]
fn freeze_writes_cgroup_freeze_and_waits_for_events() {
    let (_tmp, layout) = fake_root();
    let cg = created(&layout, "/ctr");
    let dir = cg.path_of("").unwrap();
    put(&dir, "cgroup.events", "populated 1\nfrozen 1\n");
    cg.freeze().unwrap();
    assert_eq!(get(&dir, "cgroup.freeze"), "1");
    assert!(cg.is_frozen().unwrap());
    put(&dir, "cgroup.events", "populated 1\nfrozen 0\n");
    cg.thaw().unwrap();
    assert_eq!(get(&dir, "cgroup.freeze"), "0");
    assert!(!cg.is_frozen().unwrap());
}

#[test]
fn stats_from_v2_files() {
    let (_tmp, layout) = fake_root();
    let cg = created(&layout, "/ctr");
    let dir = cg.path_of("").unwrap();
    put(
        &dir,
        "cpu.stat",
        "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 7\nnr_throttled 2\nthrottled_usec 30\n",
    );
    put(&dir, "memory.current", "4096\n");
    put(&dir, "memory.max", "max\n");
    put(&dir, "memory.peak", "8192\n");
    put(&dir, "memory.stat", "anon 1024\nfile 2048\nkernel 12\n");
    put(
        &dir,
        "memory.events",
        "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
    );
    put(&dir, "memory.swap.current", "0\n");
    put(&dir, "pids.current", "2\n");
    put(&dir, "pids.max", "64\n");
    let s = cg.stats().unwrap();
    let cpu = s.cpu.unwrap();
    assert_eq!(
        (cpu.usage_total, cpu.usage_user, cpu.usage_kernel),
        (1_500_000, 1_000_000, 500_000)
    );
    assert_eq!(
        (
            cpu.throttling_periods,
            cpu.throttled_periods,
            cpu.throttled_time
        ),
        (7, 2, 30_000)
    );
    let mem = s.memory.unwrap();
    assert_eq!(mem.usage, 4096);
    assert_eq!(mem.limit, None);
    assert_eq!(mem.max_usage, Some(8192));
    assert_eq!((mem.rss, mem.cache), (1024, 2048));
    assert_eq!((mem.failcnt, mem.oom_kill), (3, Some(1)));
    assert_eq!(mem.raw.get("kernel"), Some(&12));
    let pids = s.pids.unwrap();
    assert_eq!((pids.current, pids.limit), (2, Some(64)));

    put(&dir, "memory.current", "not a number\n");
    let err = cg.stats().unwrap_err().to_string();
    assert!(
        err.contains("memory.current") && err.contains("not a number"),
        "{err}"
    );
}

#[test]
fn pids_walks_child_cgroups() {
    let (_tmp, layout) = fake_root();
    let cg = created(&layout, "/ctr");
    let dir = cg.path_of("").unwrap();
    put(&dir, "cgroup.procs", "34\n12\n");
    let sub: PathBuf = dir.join("sub");
    fs::create_dir(&sub).unwrap();
    put(&sub, "cgroup.procs", "56\n12\n");
    assert_eq!(cg.pids().unwrap(), vec![12, 34, 56]);
    put(&sub, "cgroup.procs", "x\n");
    let err = cg.pids().unwrap_err().to_string();
    assert!(err.contains("sub/cgroup.procs"), "{err}");
}

#[test]
fn add_process_writes_cgroup_procs() {
    let (_tmp, layout) = fake_root();
    let cg = created(&layout, "/ctr");
    cg.add_process(4242).unwrap();
    assert_eq!(get(&cg.path_of("").unwrap(), "cgroup.procs"), "4242");
}

#[test]
fn destroy_removes_only_created_dirs() {
    let (tmp, layout) = fake_root();
    let mid = tmp.path().join("mid");
    fs::create_dir(&mid).unwrap();
    put(&mid, "cgroup.controllers", "");
    put(&mid, "cgroup.subtree_control", "");
    let mut cg = Cgroup::resolve_in(&layout, Some("/mid/ctr"), "x").unwrap();
    cg.create().unwrap();
    assert!(mid.join("ctr").is_dir());
    cg.destroy().unwrap();
    assert!(!mid.join("ctr").exists());
    assert!(mid.is_dir());
}

#[test]
fn planned_names_every_directory_create_would_make_and_no_existing_one() {
    let (tmp, layout) = fake_root();
    fs::create_dir(tmp.path().join("a")).unwrap();
    let cg = Cgroup::resolve_in(&layout, Some("/a/b/c"), "x").unwrap();
    let planned = cg.planned();
    assert_eq!(
        planned.created(),
        &[tmp.path().join("a/b"), tmp.path().join("a/b/c")],
        "the missing ones, parents first; /a existed"
    );
    assert!(cg.created().is_empty(), "planning changes nothing");
    assert!(!tmp.path().join("a/b").exists(), "and makes nothing");
    // A process killed right after making the directories: the planned record removes
    // exactly them (what a runtime's `delete` does with it), /a stays.
    fs::create_dir_all(tmp.path().join("a/b/c")).unwrap();
    planned.destroy().unwrap();
    assert!(!tmp.path().join("a/b").exists());
    assert!(tmp.path().join("a").is_dir());
    // An existing leaf is never planned (it is its maker's).
    fs::create_dir_all(tmp.path().join("a/b/c")).unwrap();
    assert!(Cgroup::resolve_in(&layout, Some("/a/b/c"), "x")
        .unwrap()
        .planned()
        .created()
        .is_empty());
}
