//! Bad input, one test each: the runtime exits non-zero, names the problem in stderr and in the
//! last `{"level":"error"}` line of its --log file (what containerd's shim shows), and leaves
//! nothing behind (no state, no cgroup, no mount). Where runc's wording differs from Berth's
//! contract, the accepted phrases list both. Every test also passes against runc
//! (`BERTH_RUNC=/usr/bin/runc`).

use std::fs;
use std::time::Duration;

use anyhow::Result;
use berth_integration::runtime::{assert_error, kernel, unique_name, Bundle, Output, Runtime};

const WAIT: Duration = Duration::from_secs(10);

/// `create` must fail naming one of `needles`, leaving nothing.
fn create_fails(rt: &Runtime, bundle: &Bundle, name: &str, needles: &[&str]) -> Result<Output> {
    let id = unique_name(name);
    let guard = rt.guard(&id, bundle);
    rt.clear_log()?;
    let out = rt.create(&id, bundle)?;
    assert_error(rt, &out, needles);
    guard.assert_no_leftovers();
    assert_root_empty(rt);
    Ok(out)
}

/// No container of any name is left in the runtime's root.
#[track_caller]
fn assert_root_empty(rt: &Runtime) {
    let out = rt.list(&["-q"]).map(|o| o.stdout).unwrap_or_default();
    assert_eq!(out.trim(), "", "containers left in the root");
}

/// Creates and starts `sleep 100`.
fn running(rt: &Runtime, id: &str, bundle: &Bundle) -> Result<i32> {
    rt.create(id, bundle)?.ok();
    rt.start(id)?.ok();
    rt.wait_status(id, "running", WAIT)?;
    rt.pid(id)
}

fn sleeper() -> Result<Bundle> {
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "100"]);
    Ok(bundle)
}

#[test]
fn missing_config_json() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.remove_config()?;
    create_fails(&rt, &bundle, "no-config", &["config.json"])?;
    Ok(())
}

#[test]
fn invalid_json() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.write_raw_config(b"{\"ociVersion\": \"1.0.2\", \"process\": {")?;
    // runc 1.1.5 says only "unexpected EOF".
    create_fails(
        &rt,
        &bundle,
        "bad-json",
        &["json", "config", "unexpected EOF"],
    )?;
    Ok(())
}

#[test]
fn invalid_json_with_run_leaves_nothing_either() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.write_raw_config(b"not json at all")?;
    let id = unique_name("bad-json-run");
    let guard = rt.guard(&id, &bundle);
    let out = rt.run(&id, &bundle)?;
    // runc 1.1.5 says "invalid character 'o' in literal null (expecting 'u')".
    assert_error(&rt, &out, &["json", "config", "invalid character"]);
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn wrong_typed_field_is_named() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    let mut config = bundle.config().clone();
    config["process"]["user"]["uid"] = "zero".into();
    bundle.write_raw_config(&serde_json::to_vec(&config)?)?;
    create_fails(&rt, &bundle, "bad-uid", &["uid"])?;

    let mut bundle = Bundle::new()?;
    let mut config = bundle.config().clone();
    config["process"]["args"] = "sh".into();
    bundle.write_raw_config(&serde_json::to_vec(&config)?)?;
    create_fails(&rt, &bundle, "bad-args", &["args"])?;
    Ok(())
}

#[test]
fn missing_rootfs() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.config_mut()["root"]["path"] = "rootfs-that-is-not-there".into();
    create_fails(&rt, &bundle, "no-rootfs", &["rootfs-that-is-not-there"])?;
    Ok(())
}

#[test]
fn missing_bundle_dir() -> Result<()> {
    let rt = Runtime::new()?;
    let id = unique_name("no-bundle");
    let missing = rt.scratch().join("no-such-bundle").display().to_string();
    let out = rt.exec(&["create", "--bundle", &missing, &id])?;
    assert_error(&rt, &out, &["no-such-bundle"]);
    assert_root_empty(&rt);
    Ok(())
}

#[test]
fn empty_args() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.args(&[]);
    create_fails(&rt, &bundle, "no-args", &["args"])?;
    Ok(())
}

#[test]
fn missing_executable() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.args(&["/bin/no-such-program"]);
    create_fails(&rt, &bundle, "no-exe", &["/bin/no-such-program"])?;
    Ok(())
}

#[test]
fn bind_mount_source_missing() -> Result<()> {
    let rt = Runtime::new()?;
    let missing = rt.scratch().join("no-such-source");
    let mut bundle = Bundle::new()?;
    bundle.bind(&missing, "/mnt", false).args(&["true"]);
    create_fails(&rt, &bundle, "no-src", &["no-such-source"])?;
    Ok(())
}

#[test]
fn hostname_without_uts_namespace() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.remove_namespace("uts").args(&["true"]);
    create_fails(&rt, &bundle, "no-uts", &["hostname", "uts"])?;
    Ok(())
}

#[test]
fn rlimit_above_the_callers_hard_limit() -> Result<()> {
    let rt = Runtime::new()?;
    // Root here lacks CAP_SYS_RESOURCE, so no runtime can raise a hard limit.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the valid struct.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    anyhow::ensure!(rc == 0, "getrlimit: {}", std::io::Error::last_os_error());
    let hard = limit.rlim_max;
    let mut bundle = Bundle::new()?;
    bundle.rlimit("RLIMIT_NOFILE", hard + 1, hard + 1);
    create_fails(&rt, &bundle, "rlimit-high", &["rlimit"])?;
    Ok(())
}

#[test]
fn capability_the_caller_lacks() -> Result<()> {
    let rt = Runtime::new()?;
    let status = fs::read_to_string("/proc/self/status")?;
    let bounding =
        kernel::parse_cap_hex(&kernel::status_field(&status, "CapBnd").unwrap_or_default())?;
    let Some(lacking) = kernel::CAPABILITIES
        .iter()
        .enumerate()
        .find(|(bit, _)| bounding & (1 << bit) == 0)
        .map(|(_, name)| *name)
    else {
        eprintln!("this process holds every capability; nothing to test");
        return Ok(());
    };
    let mut bundle = Bundle::new()?;
    bundle.capabilities(&[lacking]).args(&["true"]);
    // runc: "unable to apply caps: operation not permitted".
    create_fails(&rt, &bundle, "cap-lacking", &[lacking, "cap"])?;
    Ok(())
}

#[test]
fn unknown_capability_is_named() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    let mut caps = berth_integration::runtime::DEFAULT_CAPS.to_vec();
    caps.push("CAP_NO_SUCH_THING");
    bundle.capabilities(&caps).args(&["true"]);
    let id = unique_name("cap-unknown");
    let guard = rt.guard(&id, &bundle);
    rt.clear_log()?;
    let out = rt.create(&id, &bundle)?;
    if out.success() {
        // runc 1.1.5 accepts it with a warning in the log; the name must be there.
        let log = rt.log_text();
        assert!(
            log.lines()
                .any(|l| l.contains("\"warning\"") && l.contains("CAP_NO_SUCH_THING")),
            "unknown capability accepted silently; log: {log}"
        );
        rt.delete_force(&id)?.ok();
    } else {
        assert_error(&rt, &out, &["CAP_NO_SUCH_THING"]);
    }
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn duplicate_id() -> Result<()> {
    let rt = Runtime::new()?;
    let bundle = sleeper()?;
    let id = unique_name("dup");
    let guard = rt.guard(&id, &bundle);
    rt.create(&id, &bundle)?.ok();
    let pid = rt.pid(&id)?;
    guard.track_pid(pid);
    let other = sleeper()?;
    rt.clear_log()?;
    let out = rt.create(&id, &other)?;
    assert_error(&rt, &out, &["already exists"]);
    // The first container is untouched, and the second bundle's cgroup was never made.
    let state = rt.state(&id)?;
    assert_eq!(state["status"], "created", "{state}");
    assert_eq!(state["pid"].as_i64(), Some(pid as i64));
    assert!(
        kernel::cgroup_dirs(other.cgroup_path()).is_empty(),
        "the duplicate made a cgroup"
    );
    rt.delete_force(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn ids_with_slash_or_dot_dot() -> Result<()> {
    let rt = Runtime::new()?;
    let bundle = sleeper()?;
    let escape = unique_name("escape");
    let ids = [
        "a/b".to_string(),
        "..".to_string(),
        ".".to_string(),
        format!("../{escape}"),
        format!("{escape}/../x"),
    ];
    for id in &ids {
        let guard = rt.guard(id, &bundle);
        rt.clear_log()?;
        let out = rt.create(id, &bundle)?;
        // runc: "invalid container ID format"; naming the id itself is as clear.
        assert_error(&rt, &out, &["container id", "invalid id", id]);
        assert!(
            kernel::cgroup_dirs(bundle.cgroup_path()).is_empty(),
            "{id}: cgroup made"
        );
        assert_root_empty(&rt);
        drop(guard);
    }
    let parent = rt.root().parent().map(|p| p.join(&escape));
    assert!(
        parent.is_some_and(|p| !p.exists()),
        "an id escaped the root"
    );
    Ok(())
}

#[test]
fn unknown_container() -> Result<()> {
    let rt = Runtime::new()?;
    let id = unique_name("ghost");
    for args in [
        vec!["state", id.as_str()],
        vec!["start", id.as_str()],
        vec!["kill", id.as_str(), "KILL"],
        vec!["delete", id.as_str()],
    ] {
        rt.clear_log()?;
        let out = rt.exec(&args)?;
        assert_error(&rt, &out, &["does not exist"]);
    }
    assert_root_empty(&rt);
    Ok(())
}

#[test]
fn unknown_signal() -> Result<()> {
    let rt = Runtime::new()?;
    let bundle = sleeper()?;
    let id = unique_name("badsig");
    let guard = rt.guard(&id, &bundle);
    guard.track_pid(running(&rt, &id, &bundle)?);
    for signal in ["FOO", "SIGFOO"] {
        rt.clear_log()?;
        let out = rt.kill(&id, signal)?;
        assert_error(&rt, &out, &[signal]);
        assert_eq!(rt.status(&id)?, "running", "after kill {signal}");
    }
    rt.delete_force(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn delete_of_a_running_container_needs_force() -> Result<()> {
    let rt = Runtime::new()?;
    let bundle = sleeper()?;
    let id = unique_name("del-running");
    let guard = rt.guard(&id, &bundle);
    let pid = running(&rt, &id, &bundle)?;
    guard.track_pid(pid);
    rt.clear_log()?;
    let out = rt.delete(&id)?;
    // runc: "cannot delete container X that is not stopped: running".
    assert_error(&rt, &out, &["running"]);
    assert_eq!(rt.status(&id)?, "running");
    assert!(kernel::alive(pid));
    assert!(
        !kernel::cgroup_dirs(bundle.cgroup_path()).is_empty(),
        "delete removed the cgroup"
    );
    rt.delete_force(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn start_of_a_running_container() -> Result<()> {
    let rt = Runtime::new()?;
    let bundle = sleeper()?;
    let id = unique_name("start-running");
    let guard = rt.guard(&id, &bundle);
    let pid = running(&rt, &id, &bundle)?;
    guard.track_pid(pid);
    rt.clear_log()?;
    let out = rt.start(&id)?;
    // runc: "cannot start an already running container".
    assert_error(&rt, &out, &["running", "not created"]);
    assert_eq!(rt.status(&id)?, "running");
    assert_eq!(rt.pid(&id)?, pid);
    rt.delete_force(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn start_and_kill_of_a_stopped_container() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.args(&["true"]);
    let id = unique_name("start-stopped");
    let guard = rt.guard(&id, &bundle);
    rt.create(&id, &bundle)?.ok();
    rt.start(&id)?.ok();
    rt.wait_status(&id, "stopped", WAIT)?;
    rt.clear_log()?;
    let out = rt.start(&id)?;
    // runc: "cannot start a container that has stopped".
    assert_error(&rt, &out, &["stopped", "not created"]);
    rt.clear_log()?;
    let out = rt.kill(&id, "KILL")?;
    // The wordings containerd's shim treats as "already dead".
    assert_error(
        &rt,
        &out,
        &[
            "container not running",
            "no such process",
            "process already finished",
        ],
    );
    rt.delete(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}
