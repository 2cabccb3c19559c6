//! Real cgroup v2 tests on this hybrid host's /sys/fs/cgroup/unified mount (no controllers but
//! hugetlb there, yet cgroup.procs, cgroup.freeze and device eBPF programs work on any cgroup2
//! directory). Each test works below a top directory of its own so the host's root
//! cgroup.subtree_control is never touched.

mod common;

use std::fs;
use std::path::PathBuf;

use berth_cgroups::{attached_device_programs, Cgroup, CgroupVersion, Layout};
use common::*;
use oci_spec::runtime::LinuxResources;
use serde_json::json;

const UNIFIED: &str = "/sys/fs/cgroup/unified";

fn resources(v: serde_json::Value) -> LinuxResources {
    serde_json::from_value(v).expect("valid LinuxResources JSON")
}

/// A top directory for the test (removed by the guard) and a created cgroup "c" below it.
fn setup() -> (Guard, Cgroup, String) {
    let name = unique_name();
    let top = PathBuf::from(UNIFIED).join(&name);
    fs::create_dir(&top).unwrap_or_else(|e| panic!("{}: {e}", top.display()));
    let mut g = Guard::new();
    g.dirs.push(top.clone());
    let layout = Layout::v2(top, &format!("/{name}"), &format!("/{name}"));
    let mut cg = Cgroup::resolve_in(&layout, Some("c"), "x").unwrap();
    cg.create().unwrap();
    g.cgroups.push(cg.clone());
    (g, cg, name)
}

#[test]
fn own_unified_path_is_read() {
    let own = Layout::own_unified_path().unwrap().expect("a 0:: line");
    assert!(own.starts_with('/'), "{own}");
}

#[test]
fn create_join_freeze_thaw_destroy() {
    let (mut g, cg, name) = setup();
    assert_eq!(cg.version(), CgroupVersion::V2);
    let dir = cg.path_of("").unwrap();
    assert_eq!(dir, PathBuf::from(format!("{UNIFIED}/{name}/c")));
    assert_eq!(cg.created(), std::slice::from_ref(&dir));

    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("ticks");
    let mut sh = spawn_waiting(&format!(
        "while :; do echo x >> {}; sleep 0.01; done",
        file.display()
    ));
    let pid = sh.id();
    cg.add_process(pid as i32).unwrap();
    go(&mut sh);
    g.children.push(sh);
    assert_eq!(proc_cgroup_of(pid, ""), Some(format!("/{name}/c")));
    // The v1 hierarchies are untouched by a v2 cgroup.
    assert_eq!(
        proc_cgroup_of(pid, "pids"),
        proc_cgroup_of(std::process::id(), "pids")
    );
    let size = || fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    wait_until("the child to write", || size() > 0);
    assert!(cg.pids().unwrap().contains(&(pid as i32)));

    cg.freeze().unwrap();
    assert!(cg.is_frozen().unwrap());
    assert!(read(dir.join("cgroup.events")).contains("frozen 1"));
    let at = size();
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(size(), at, "a frozen process made progress");
    cg.thaw().unwrap();
    assert!(!cg.is_frozen().unwrap());
    wait_until("the thawed child to write again", || size() > at);

    let s = cg.stats().unwrap();
    assert!(
        s.cpu
            .as_ref()
            .expect("cpu.stat exists on every cgroup2 dir")
            .usage_total
            > 0
    );
    assert!(s.memory.is_none() && s.pids.is_none(), "{s:?}");

    // Busy while the child lives; gone once it is killed.
    let err = cg.destroy().unwrap_err().to_string();
    assert!(
        err.contains("still has processes") && err.contains(&pid.to_string()),
        "{err}"
    );
    for c in &mut g.children {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    wait_until("the cgroup to empty", || cg.pids().unwrap().is_empty());
    cg.destroy().unwrap();
    assert!(!dir.exists());
}

#[test]
fn device_rules_become_an_ebpf_program() {
    let (mut g, cg, _name) = setup();
    let dir = cg.path_of("devices").unwrap();
    cg.set(&resources(json!({"devices": [
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "r"}
    ]})))
    .unwrap();
    assert_eq!(attached_device_programs(&dir).unwrap().len(), 1);

    let script = "echo hi > /dev/null && echo null-ok; \
         head -c1 /dev/zero > /dev/null && echo zero-read-ok; \
         echo x > /dev/zero || echo zero-write-denied; \
         head -c1 /dev/urandom > /dev/null && echo urandom-ok || echo urandom-denied";
    let mut sh = spawn_waiting(script);
    cg.add_process(sh.id() as i32).unwrap();
    go(&mut sh);
    let (_code, out, err) = finish(&mut sh);
    for want in [
        "null-ok",
        "zero-read-ok",
        "zero-write-denied",
        "urandom-denied",
    ] {
        assert!(
            out.contains(want),
            "missing {want}: out {out:?} err {err:?}"
        );
    }
    assert!(err.contains("Operation not permitted"), "{err}");

    // An update replaces the program instead of adding one that would also have to allow.
    cg.set(&resources(
        json!({"devices": [{"allow": true, "access": "rwm"}]}),
    ))
    .unwrap();
    assert_eq!(attached_device_programs(&dir).unwrap().len(), 1);
    let mut sh = spawn_waiting(script);
    cg.add_process(sh.id() as i32).unwrap();
    go(&mut sh);
    let (_code, out, err) = finish(&mut sh);
    assert!(
        out.contains("urandom-ok") && out.contains("zero-read-ok"),
        "{out} {err}"
    );
    assert!(!out.contains("zero-write-denied"), "{out}");
    g.children.clear();
}

#[test]
fn device_rules_on_a_non_cgroup_dir_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::v2(tmp.path().to_path_buf(), "/", "/");
    let cg = Cgroup::resolve_in(&layout, Some("/fake"), "x").unwrap();
    fs::create_dir(tmp.path().join("fake")).unwrap();
    let err = cg
        .set(&resources(
            json!({"devices": [{"allow": false, "access": "rwm"}]}),
        ))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("device rules") && err.contains("BPF_PROG_") && err.contains("fake"),
        "{err}"
    );
}
