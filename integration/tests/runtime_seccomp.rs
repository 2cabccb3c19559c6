//! seccomp as config.json asks for it, seen from inside the container: a denied syscall fails
//! with the configured errno for the init and for exec'd processes, with and without
//! no_new_privs; a broken profile is refused before anything is created.

use anyhow::Result;
use berth_integration::runtime::{assert_error, unique_name, Bundle, Runtime};
use serde_json::json;

fn deny_mkdir(errno: u32) -> serde_json::Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno}]
    })
}

#[test]
fn a_denied_syscall_fails_with_the_configured_errno() -> Result<()> {
    let rt = Runtime::new()?;
    for nnp in [true, false] {
        let mut bundle = Bundle::new()?;
        bundle
            .no_new_privileges(nnp)
            .sh("mkdir /dev/shm/x; echo rc=$?; touch /dev/shm/y && echo touched");
        bundle.config_mut()["linux"]["seccomp"] = deny_mkdir(13);
        let id = unique_name("seccomp");
        let guard = rt.guard(&id, &bundle);
        let out = rt.run(&id, &bundle)?.ok();
        assert!(out.stdout.contains("rc=1"), "nnp={nnp}: {}", out.describe());
        assert!(
            out.stderr.contains("Permission denied"),
            "errno 13 is EACCES: {}",
            out.describe()
        );
        assert!(
            out.stdout.contains("touched"),
            "other syscalls pass: {}",
            out.describe()
        );
        guard.assert_no_leftovers();
    }
    Ok(())
}

#[test]
fn exec_runs_under_the_containers_filter() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "30"]);
    bundle.config_mut()["linux"]["seccomp"] = deny_mkdir(1);
    let id = unique_name("seccomp-exec");
    let guard = rt.guard(&id, &bundle);
    rt.create(&id, &bundle)?.ok();
    rt.start(&id)?.ok();
    let out = rt
        .exec(&["exec", &id, "sh", "-c", "mkdir /tmp/x; echo rc=$?"])?
        .ok();
    assert!(out.stdout.contains("rc=1"), "{}", out.describe());
    assert!(
        out.stderr.contains("Operation not permitted"),
        "{}",
        out.describe()
    );
    rt.exec(&["delete", "--force", &id])?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn a_broken_profile_is_refused_and_leaves_nothing() -> Result<()> {
    let rt = Runtime::new()?;
    for (profile, needle) in [
        (
            json!({"defaultAction": "SCMP_ACT_SOMETIMES"}),
            "SCMP_ACT_SOMETIMES",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_KILL", "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
            "index",
        ),
    ] {
        let mut bundle = Bundle::new()?;
        bundle.args(&["true"]);
        bundle.config_mut()["linux"]["seccomp"] = profile;
        let id = unique_name("seccomp-bad");
        let guard = rt.guard(&id, &bundle);
        let out = rt.create(&id, &bundle)?.failed();
        assert_error(&rt, &out, &[needle]);
        assert!(
            out.stderr.contains("seccomp"),
            "the error names the profile: {}",
            out.describe()
        );
        guard.assert_no_leftovers();
    }
    Ok(())
}

/// Receive one listener fd and the state on an accepted connection; the fd is closed at once
/// (the kernel then fails the notified syscalls with ENOSYS).
fn receive_listener(stream: &std::os::unix::net::UnixStream) -> Result<String> {
    berth_integration::runtime::receive_seccomp_listener(stream).map(|(_fd, body)| body)
}

/// A one-shot seccomp agent on a unix socket at `path`.
fn one_shot_agent(path: &std::path::Path) -> Result<std::thread::JoinHandle<Result<String>>> {
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    Ok(std::thread::spawn(move || -> Result<String> {
        let (stream, _) = listener.accept()?;
        receive_listener(&stream)
    }))
}

#[test]
fn notify_hands_the_listener_to_the_agent() -> Result<()> {
    let rt = Runtime::new()?;
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("agent.sock");
    let agent = one_shot_agent(&sock)?;
    let mut bundle = Bundle::new()?;
    bundle.sh("mkdir /dev/shm/x; echo rc=$?");
    bundle.config_mut()["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock.display().to_string(),
        "listenerMetadata": "berth-test",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    let id = unique_name("notify");
    let guard = rt.guard(&id, &bundle);
    let out = rt.run(&id, &bundle)?.ok();
    // The agent closed the fd without answering: the kernel fails mkdir.
    assert!(out.stdout.contains("rc=1"), "{}", out.describe());
    let body = agent
        .join()
        .map_err(|_| anyhow::anyhow!("agent panicked"))??;
    let state: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(state["fds"], json!(["seccompFd"]), "{body}");
    assert_eq!(state["metadata"], "berth-test", "{body}");
    assert_eq!(state["state"]["id"], id.as_str(), "{body}");
    assert!(state["pid"].as_i64().unwrap_or(0) > 0, "{body}");
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn exec_hands_its_own_listener_to_the_agent() -> Result<()> {
    let rt = Runtime::new()?;
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("agent.sock");
    // One connection for the init, one for the exec'd process.
    let listener = std::os::unix::net::UnixListener::bind(&sock)?;
    let agent = std::thread::spawn(move || -> Result<Vec<String>> {
        let mut bodies = Vec::new();
        for _ in 0..2 {
            let (stream, _) = listener.accept()?;
            bodies.push(receive_listener(&stream)?);
        }
        Ok(bodies)
    });
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "30"]);
    bundle.config_mut()["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock.display().to_string(),
        "listenerMetadata": "exec-test",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    let id = unique_name("notify-exec");
    let guard = rt.guard(&id, &bundle);
    rt.create(&id, &bundle)?.ok();
    rt.start(&id)?.ok();
    let pid_file = dir.path().join("exec.pid");
    let out = rt
        .exec(&[
            "exec",
            "--pid-file",
            &pid_file.display().to_string(),
            &id,
            "sh",
            "-c",
            "mkdir /dev/shm/y; echo rc=$?",
        ])?
        .ok();
    // The agent closed the exec's listener without answering: the kernel fails mkdir.
    assert!(out.stdout.contains("rc=1"), "{}", out.describe());
    let bodies = agent
        .join()
        .map_err(|_| anyhow::anyhow!("agent panicked"))??;
    let exec_pid: i64 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
    let state: serde_json::Value = serde_json::from_str(&bodies[1])?;
    assert_eq!(state["pid"].as_i64(), Some(exec_pid), "{}", bodies[1]);
    assert_eq!(state["metadata"], "exec-test", "{}", bodies[1]);
    assert_eq!(state["state"]["id"], id.as_str(), "{}", bodies[1]);
    assert_eq!(state["state"]["status"], "running", "{}", bodies[1]);
    rt.exec(&["delete", "--force", &id])?.ok();
    guard.assert_no_leftovers();
    Ok(())
}
