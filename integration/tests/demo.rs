//! `hack/demo.sh`, the README's main command, end to end: berth-runc alone, then berthd on temp
//! dirs with a local docker-registry, an image built from a Dockerfile, run, pushed, removed,
//! pulled back and run again. The script cleans up after itself (its own trap); this test
//! checks what it printed and that its temp dir and daemons are gone.

use std::process::Command;

use berth_integration::bins;

#[test]
fn demo_shows_build_run_push_pull() {
    let root = bins::workspace_root();
    let out = Command::new(root.join("hack/demo.sh"))
        .env("BERTHD", bins::berthd())
        .env("BERTH", bins::berth())
        .env("BERTH_RUNC", bins::berth_runc())
        .output()
        .expect("running hack/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let tmp = stdout
        .lines()
        .find_map(|l| l.strip_prefix("demo: working in "))
        .expect("the demo names its temp dir")
        .to_string();

    // berth-runc on its own.
    assert!(stdout.contains("hello from berth, I am pid 1"), "{stdout}");
    assert!(stdout.contains("interfaces: lo \n"), "{stdout}");
    assert!(stdout.contains("the root is read-only"), "{stdout}");
    assert!(stdout.contains("container exited with 7"), "{stdout}");

    // The build: each step reported, none from a cache (the daemon is new).
    assert!(
        stderr.contains("[stage-0 3/7] RUN echo \"built by $WHO\""),
        "{stderr}"
    );
    assert!(!stderr.contains("CACHED"), "{stderr}");
    assert!(stderr.contains("naming to 127.0.0.1:"), "{stderr}");

    // The image ran twice, once as built and once as pulled back.
    let ran = "built by berth\na file from the build context\nin /srv as uid 0\n";
    assert_eq!(stdout.matches(ran).count(), 2, "{stdout}");
    assert!(stdout.contains("pushed 127.0.0.1:"), "{stdout}");
    assert!(
        stdout.contains("images left: docker.io/library/busybox:latest \n"),
        "{stdout}"
    );
    // The pull really fetched the built layers (the local copies were collected).
    assert!(stdout.contains("pulled 127.0.0.1:"), "{stdout}");
    assert!(stdout.contains(": 2 layers fetched"), "{stdout}");
    assert!(stdout.contains("== done; cleaning up"), "{stdout}");

    // Cleaned up: no temp dir, no mount under it, no process naming it.
    assert!(!std::path::Path::new(&tmp).exists(), "{tmp} left behind");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(!mounts.contains(&tmp), "mounts left under {tmp}");
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            assert!(!cmd.contains(&tmp), "process left: {cmd}");
        }
    }
}
