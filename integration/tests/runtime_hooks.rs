//! OCI hooks at each point of the lifecycle, with the container's state on stdin; a failing
//! hook fails its step (poststop only warns), and a failed create leaves nothing behind.

use std::fs;
use std::path::Path;

use anyhow::Result;
use berth_integration::runtime::{assert_error, unique_name, Bundle, Runtime};
use serde_json::{json, Value};

/// A hook that appends "<tag> <status> <id>" from its stdin's state to `log`.
fn logging_hook(tag: &str, log: &Path) -> Value {
    json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!(
            "s=$(cat); st=$(echo \"$s\" | sed 's/.*\"status\":\"\\([a-z]*\\)\".*/\\1/'); \
             id=$(echo \"$s\" | sed 's/.*\"id\":\"\\([^\"]*\\)\".*/\\1/'); echo \"{tag} $st $id\" >> {}",
            log.display()
        )]
    })
}

#[test]
fn hooks_run_in_order_with_the_state_on_stdin() -> Result<()> {
    let rt = Runtime::new()?;
    let logs = tempfile::tempdir()?;
    let host_log = logs.path().join("host.log");
    let mut bundle = Bundle::new()?;
    bundle
        .bind(logs.path(), "/hooklogs", false)
        .args(&["sleep", "30"]);
    bundle.config_mut()["hooks"] = json!({
        "createRuntime": [logging_hook("createRuntime", &host_log)],
        "createContainer": [logging_hook("createContainer", &host_log)],
        // Runs after pivot_root: paths are the container's.
        "startContainer": [logging_hook("startContainer", Path::new("/hooklogs/host.log"))],
        "poststart": [logging_hook("poststart", &host_log)],
        "poststop": [logging_hook("poststop", &host_log)],
    });
    let id = unique_name("hooks");
    let guard = rt.guard(&id, &bundle);
    rt.create(&id, &bundle)?.ok();
    rt.start(&id)?.ok();
    rt.exec(&["kill", &id, "KILL"])?.ok();
    rt.wait_status(&id, "stopped", std::time::Duration::from_secs(5))?;
    rt.exec(&["delete", &id])?.ok();
    guard.assert_no_leftovers();
    let log = fs::read_to_string(&host_log)?;
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines,
        vec![
            format!("createRuntime creating {id}"),
            format!("createContainer created {id}"),
            format!("startContainer created {id}"),
            format!("poststart running {id}"),
            format!("poststop stopped {id}"),
        ],
        "{log}"
    );
    Ok(())
}

#[test]
fn a_failing_create_runtime_hook_fails_create_and_leaves_nothing() -> Result<()> {
    let rt = Runtime::new()?;
    for (hook, needle) in [
        (
            json!({"path": "/bin/sh", "args": ["sh", "-c", "echo broken >&2; exit 3"]}),
            "broken",
        ),
        (json!({"path": "/nonexistent/hook"}), "/nonexistent/hook"),
    ] {
        let mut bundle = Bundle::new()?;
        bundle.args(&["true"]);
        bundle.config_mut()["hooks"] = json!({ "createRuntime": [hook] });
        let id = unique_name("hook-fail");
        let guard = rt.guard(&id, &bundle);
        let out = rt.create(&id, &bundle)?;
        assert_error(&rt, &out, &[needle]);
        assert!(out.stderr.contains("createRuntime"), "{}", out.describe());
        guard.assert_no_leftovers();
    }
    Ok(())
}

#[test]
fn a_failing_poststop_hook_only_warns() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.sh("echo ran");
    bundle.config_mut()["hooks"] = json!({ "poststop": [{"path": "/bin/false"}] });
    let id = unique_name("poststop");
    let guard = rt.guard(&id, &bundle);
    let out = rt.run(&id, &bundle)?.ok();
    assert_eq!(out.stdout, "ran\n");
    guard.assert_no_leftovers();
    Ok(())
}
