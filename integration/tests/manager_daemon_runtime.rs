//! berthd's default runtime: `runtime = "runc"` in its config (or `--runtime`) makes containers
//! that name none run under runc; a runtime that does not exist is a clear error that leaves
//! nothing behind.

use berth_integration::manager::tasks::Cleanup;
use berth_integration::manager::{image, mounts_under, unique, Berthd};

const IMAGE: &str = "docker.io/berth/runtime-choice:v1";

fn import(d: &Berthd, ns: &str) {
    let work = tempfile::tempdir().unwrap();
    let p = work.path().join("img.tar");
    image::busybox_single(IMAGE)
        .unwrap()
        .write_oci_archive(&p)
        .unwrap();
    d.berth(ns, &["images", "import", p.to_str().unwrap()]).ok();
}

#[test]
fn the_configured_default_runtime_runs_the_containers() {
    let d = Berthd::start_with_config("runtime = \"runc\"\n").unwrap();
    let ns = unique("rtc");
    let _g = Cleanup::new(&d, &ns);
    import(&d, &ns);
    let id = unique("c");
    d.berth(&ns, &["run", "-d", IMAGE, &id, "sh", "-c", "sleep 100"])
        .ok();
    // runc keeps its own state under berthd's runtime root: it knows the container.
    let root = d.state().join("runtime").join(&ns);
    let out = std::process::Command::new("runc")
        .arg("--root")
        .arg(&root)
        .args(["state", &id])
        .output()
        .unwrap();
    let state = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "runc state: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(state.contains("\"status\": \"running\""), "{state}");
    // runc's own state file (berth-runc's has no init_process_pid).
    let raw = std::fs::read_to_string(root.join(&id).join("state.json")).unwrap();
    assert!(raw.contains("init_process_pid"), "{raw}");
    d.berth(&ns, &["tasks", "kill", "-s", "KILL", &id]).ok();
    d.berth(&ns, &["tasks", "wait", &id]);
    d.berth(&ns, &["tasks", "rm", &id]).ok();
    d.berth(&ns, &["containers", "rm", &id]).ok();
}

#[test]
fn a_missing_default_runtime_is_a_clear_error_and_leaves_nothing() {
    let d = Berthd::start_with_config("runtime = \"/nonexistent/berth-no-runtime\"\n").unwrap();
    let ns = unique("rtm");
    import(&d, &ns);
    let e = d
        .berth(&ns, &["run", "--rm", IMAGE, &unique("c"), "true"])
        .err()
        .to_string();
    assert!(e.contains("/nonexistent/berth-no-runtime"), "{e}");
    assert!(mounts_under(&d.state()).is_empty());
    let left: Vec<_> = std::fs::read_dir(d.state().join("tasks").join(&ns))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "bundles left: {left:?}");
}

#[test]
fn crun_runs_containers_named_per_container() {
    // crun 1.8 needs the host's unified cgroup hierarchy out of its sight (see the fixture).
    let d = Berthd::start_for_crun().unwrap();
    let ns = unique("crun");
    let _g = Cleanup::new(&d, &ns);
    import(&d, &ns);
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "--runtime",
            "crun",
            IMAGE,
            &unique("c"),
            "sh",
            "-c",
            "echo hi; exit 5",
        ],
    );
    assert_eq!((out.code, out.stdout.as_str()), (5, "hi\n"), "{out:?}");
    let id = unique("c");
    d.berth(
        &ns,
        &[
            "run",
            "-d",
            "--runtime",
            "crun",
            "--memory",
            "32m",
            IMAGE,
            &id,
            "sh",
            "-c",
            "sleep 100",
        ],
    )
    .ok();
    // crun's own state under berthd's runtime root: it is crun that runs the container.
    let st = d.state().join("runtime").join(&ns).join(&id).join("status");
    assert!(st.exists(), "no crun state at {}", st.display());
    let out = d.berth(
        &ns,
        &[
            "tasks",
            "exec",
            &id,
            "cat",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        ],
    );
    assert_eq!(out.ok(), "33554432\n");
    d.berth(&ns, &["tasks", "kill", "-s", "KILL", &id]).ok();
    assert_eq!(d.berth(&ns, &["tasks", "wait", &id]).code, 137);
    d.berth(&ns, &["tasks", "rm", &id]).ok();
    d.berth(&ns, &["containers", "rm", &id]).ok();
    let tasks = d.berth(&ns, &["--format", "json", "tasks", "ls"]).json();
    assert_eq!(tasks, serde_json::json!([]), "{tasks}");
}
