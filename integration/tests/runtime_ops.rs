//! Operations on a running container that containerd's shim uses: exec (with a process file,
//! detached with a pid file), ps, pause/resume, update, events --stats. Every test also passes
//! against runc (`BERTH_RUNC=/usr/bin/runc`).

use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

use anyhow::{Context, Result};
use berth_integration::runtime::kernel::{self, cgroup_file};
use berth_integration::runtime::{assert_error, unique_name, wait_for, Bundle, Runtime};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

/// Creates and starts `sleep 100`; returns its pid once it runs the sleep.
fn running(rt: &Runtime, id: &str, bundle: &Bundle) -> Result<i32> {
    rt.create(id, bundle)?.ok();
    rt.start(id)?.ok();
    let pid = rt.pid(id)?;
    anyhow::ensure!(
        wait_for(WAIT, || kernel::cmdline(pid)
            .is_ok_and(|c| c == "sleep 100")),
        "the container never ran its sleep"
    );
    Ok(pid)
}

fn sleeper() -> Result<Bundle> {
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "100"]).hostname("berth-ops");
    Ok(bundle)
}

/// Writes an OCI `process` object to a file in the runtime's scratch dir.
fn process_file(rt: &Runtime, name: &str, process: &Value) -> Result<String> {
    let path = rt.scratch().join(format!("{name}.json"));
    fs::write(&path, serde_json::to_vec(process)?)?;
    Ok(path.display().to_string())
}

fn process(args: &[&str]) -> Value {
    json!({
        "terminal": false,
        "user": { "uid": 0, "gid": 0 },
        "args": args,
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "cwd": "/",
        "capabilities": {
            "bounding": berth_integration::runtime::DEFAULT_CAPS,
            "effective": berth_integration::runtime::DEFAULT_CAPS,
            "permitted": berth_integration::runtime::DEFAULT_CAPS
        },
        "noNewPrivileges": true
    })
}

#[test]
fn exec_runs_a_process_file_inside_the_container() -> Result<()> {
    let rt = Runtime::new()?;
    let bundle = sleeper()?;
    let id = unique_name("exec");
    let guard = rt.guard(&id, &bundle);
    guard.track_pid(running(&rt, &id, &bundle)?);
    let mut spec = process(&[
        "sh",
        "-c",
        "hostname; echo pid=$$; tr '\\0' ' ' < /proc/1/cmdline; echo; id -u; pwd; echo $FOO; echo $HOME; exit 4",
    ]);
    spec["user"] = json!({ "uid": 1000, "gid": 1000 });
    spec["cwd"] = json!("/tmp");
    spec["env"] = json!(["PATH=/bin", "FOO=from-process-file"]);
    let file = process_file(&rt, "exec", &spec)?;
    let out = rt.exec(&["exec", "--process", &file, &id])?;
    assert_eq!(
        out.code(),
        Some(4),
        "exit code of the exec'd process: {}",
        out.describe()
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"berth-ops"), "uts ns: {}", out.stdout);
    let pid_line = lines.get(1).copied().unwrap_or_default();
    assert!(
        pid_line.starts_with("pid=") && pid_line != "pid=1",
        "pid ns: {pid_line}"
    );
    assert_eq!(
        lines.get(2).map(|l| l.trim()),
        Some("sleep 100"),
        "pid 1 inside: {}",
        out.stdout
    );
    assert_eq!(
        &lines[3..],
        // HOME: uid 1000 has no passwd entry, so `/`, as runc sets it.
        ["1000", "/tmp", "from-process-file", "/"],
        "{}",
        out.stdout
    );
    assert_eq!(rt.status(&id)?, "running");
    rt.delete_force(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn exec_with_args_on_the_command_line() -> Result<()> {
    let rt = Runtime::new()?;
    let bundle = sleeper()?;
    let id = unique_name("exec-args");
    let guard = rt.guard(&id, &bundle);
    guard.track_pid(running(&rt, &id, &bundle)?);
    let out = rt.exec(&["exec", &id, "sh", "-c", "echo inside $(hostname); exit 5"])?;
    assert_eq!(out.code(), Some(5), "{}", out.describe());
    assert_eq!(out.stdout, "inside berth-ops\n");
    rt.delete_force(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn exec_detach_writes_the_pid_file_and_joins_the_container() -> Result<()> {
    let rt = Runtime::new()?;
    let bundle = sleeper()?;
    let id = unique_name("exec-detach");
    let guard = rt.guard(&id, &bundle);
    let init = running(&rt, &id, &bundle)?;
    guard.track_pid(init);
    let file = process_file(&rt, "detach", &process(&["sleep", "50"]))?;
    let pid_file = rt.scratch().join("exec.pid");
    let pid_arg = pid_file.display().to_string();
    rt.exec(&[
        "exec",
        "--process",
        &file,
        "--detach",
        "--pid-file",
        &pid_arg,
        &id,
    ])?
    .ok();
    let text = fs::read_to_string(&pid_file)?;
    assert!(
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()),
        "pid file holds {text:?}"
    );
    let pid: i32 = text.parse()?;
    guard.track_pid(pid);
    assert!(kernel::alive(pid), "exec'd process {pid} is not alive");
    assert!(wait_for(WAIT, || kernel::cmdline(pid).is_ok_and(|c| c == "sleep 50")));
    for kind in ["pid", "net", "ipc", "uts", "mnt"] {
        assert_eq!(
            kernel::namespace(&pid.to_string(), kind)?,
            kernel::namespace(&init.to_string(), kind)?,
            "the exec'd process is not in the container's {kind} namespace"
        );
    }
    let cgroups = kernel::proc_cgroups(pid)?;
    let pids = cgroups
        .iter()
        .find(|(c, _)| c.split(',').any(|c| c == "pids"))
        .context("no pids cgroup")?;
    assert_eq!(pids.1, bundle.cgroup_path(), "cgroup of the exec'd process");

    let listed: Value =
        serde_json::from_str(&rt.exec(&["ps", "--format", "json", &id])?.ok().stdout)?;
    let listed: BTreeSet<i64> = listed
        .as_array()
        .context("ps --format json is not an array")?
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from([init as i64, pid as i64]),
        "ps --format json"
    );
    rt.delete_force(&id)?.ok();
    assert!(
        wait_for(WAIT, || !kernel::alive(pid)),
        "delete --force left the exec'd process"
    );
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn exec_into_a_stopped_container_fails() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.args(&["true"]);
    let id = unique_name("exec-stopped");
    let guard = rt.guard(&id, &bundle);
    rt.create(&id, &bundle)?.ok();
    rt.start(&id)?.ok();
    rt.wait_status(&id, "stopped", WAIT)?;
    rt.clear_log()?;
    let out = rt.exec(&["exec", &id, "true"])?;
    // runc: "cannot exec in a stopped container".
    assert_error(&rt, &out, &["stopped", "not running"]);
    rt.delete(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn pause_freezes_and_resume_thaws() -> Result<()> {
    let rt = Runtime::new()?;
    let bundle = sleeper()?;
    let id = unique_name("pause");
    let guard = rt.guard(&id, &bundle);
    guard.track_pid(running(&rt, &id, &bundle)?);
    rt.exec(&["pause", &id])?.ok();
    assert_eq!(rt.status(&id)?, "paused");
    assert_eq!(
        cgroup_file("freezer", bundle.cgroup_path(), "freezer.state")?,
        "FROZEN"
    );
    rt.exec(&["resume", &id])?.ok();
    assert_eq!(rt.status(&id)?, "running");
    assert_eq!(
        cgroup_file("freezer", bundle.cgroup_path(), "freezer.state")?,
        "THAWED"
    );
    rt.delete_force(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn delete_force_of_a_paused_container() -> Result<()> {
    let rt = Runtime::new()?;
    let bundle = sleeper()?;
    let id = unique_name("pause-del");
    let guard = rt.guard(&id, &bundle);
    let pid = running(&rt, &id, &bundle)?;
    guard.track_pid(pid);
    rt.exec(&["pause", &id])?.ok();
    rt.delete_force(&id)?.ok();
    assert!(
        wait_for(WAIT, || !kernel::alive(pid)),
        "a frozen init survived delete --force"
    );
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn update_changes_the_cgroup_limits() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = sleeper()?;
    bundle.resources(json!({ "memory": { "limit": 64u64 << 20 }, "pids": { "limit": 50 } }));
    let id = unique_name("update");
    let guard = rt.guard(&id, &bundle);
    guard.track_pid(running(&rt, &id, &bundle)?);
    let input = rt.scratch().join("resources.json");
    fs::write(
        &input,
        serde_json::to_vec(
            &json!({ "memory": { "limit": 32u64 << 20 }, "pids": { "limit": 77 } }),
        )?,
    )?;
    rt.exec_with(
        &["update", "--resources", "-", &id],
        berth_integration::runtime::driver::Io {
            stdin: Some(input),
            ..Default::default()
        },
    )?
    .ok();
    let path = bundle.cgroup_path();
    assert_eq!(
        cgroup_file("memory", path, "memory.limit_in_bytes")?,
        (32u64 << 20).to_string()
    );
    assert_eq!(cgroup_file("pids", path, "pids.max")?, "77");
    rt.delete_force(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn events_stats_prints_one_stats_object() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = sleeper()?;
    bundle.resources(json!({ "pids": { "limit": 33 } }));
    let id = unique_name("stats");
    let guard = rt.guard(&id, &bundle);
    guard.track_pid(running(&rt, &id, &bundle)?);
    let out = rt.exec(&["events", "--stats", &id])?.ok();
    let stats: Value =
        serde_json::from_str(out.stdout.trim()).context("events --stats is not one JSON object")?;
    assert_eq!(stats["type"], "stats", "{stats}");
    assert_eq!(stats["id"], id.as_str(), "{stats}");
    let data = &stats["data"];
    assert_eq!(
        data["pids"]["current"].as_u64(),
        Some(1),
        "one process: {data}"
    );
    assert_eq!(data["pids"]["limit"].as_u64(), Some(33), "{data}");
    let usage = data["memory"]["usage"]["usage"].as_u64().unwrap_or(0);
    let cgroup_usage: u64 =
        cgroup_file("memory", bundle.cgroup_path(), "memory.usage_in_bytes")?.parse()?;
    assert!(
        usage > 0 && usage <= cgroup_usage * 2,
        "memory usage {usage} vs cgroup {cgroup_usage}"
    );
    rt.delete_force(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}
