//! The container lifecycle through the runc command line: run, create/start/state/kill/delete,
//! list, pid files, signals. Every test also passes against runc (`BERTH_RUNC=/usr/bin/runc`).

use std::fs;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use berth_integration::runtime::driver::wait_with_timeout;
use berth_integration::runtime::{assert_error, kernel, unique_name, wait_for, Bundle, Runtime};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn run_prints_the_output_and_returns_the_exit_code() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.sh("echo hi; echo oops >&2; exit 3");
    let id = unique_name("run-exit");
    let guard = rt.guard(&id, &bundle);
    let out = rt.run(&id, &bundle)?;
    assert_eq!(out.code(), Some(3), "{}", out.describe());
    assert_eq!(out.stdout, "hi\n");
    assert!(out.stderr.contains("oops"), "{}", out.describe());
    // `run` without --detach deletes the container when it exits.
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn run_exit_code_zero_and_stdin_passes_through() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.sh("read line; echo \"got $line\"");
    let input = rt.scratch().join("stdin");
    fs::write(&input, "hello\n")?;
    let id = unique_name("run-stdin");
    let guard = rt.guard(&id, &bundle);
    bundle.save()?;
    let path = bundle.path().display().to_string();
    let out = rt.exec_with(
        &["run", "--bundle", &path, &id],
        berth_integration::runtime::driver::Io {
            stdin: Some(input),
            ..Default::default()
        },
    )?;
    let out = out.ok();
    assert_eq!(out.stdout, "got hello\n");
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn run_reports_death_by_signal_as_128_plus_the_signal() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "100"]);
    bundle.save()?;
    let id = unique_name("run-sig");
    let guard = rt.guard(&id, &bundle);
    let path = bundle.path().display().to_string();
    let (out_path, err_path) = rt.output_files();
    let mut cmd = rt.command(&["run", "--bundle", &path, &id]);
    cmd.stdin(std::process::Stdio::null())
        .stdout(fs::File::create(&out_path)?)
        .stderr(fs::File::create(&err_path)?);
    let killer = std::thread::scope(|s| -> Result<std::process::ExitStatus> {
        let handle = s.spawn(|| wait_with_timeout(&mut cmd, "run sleep 100", WAIT * 2));
        ensure!(
            wait_for(WAIT, || rt.status(&id).is_ok_and(|st| st == "running")),
            "the container never showed as running"
        );
        rt.kill(&id, "KILL")?.ok();
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("waiter panicked"))?
    })?;
    assert_eq!(
        killer.code(),
        Some(128 + 9),
        "run of a SIGKILLed container; stderr: {}",
        fs::read_to_string(&err_path).unwrap_or_default()
    );
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn run_forwards_signals_to_the_container() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    // As pid 1 of its namespace, sh only sees signals it has a handler for.
    bundle.sh("trap 'echo got-term; exit 7' TERM; echo ready; sleep 100 & wait");
    bundle.save()?;
    let id = unique_name("run-fwd");
    let guard = rt.guard(&id, &bundle);
    let path = bundle.path().display().to_string();
    let (out_path, err_path) = rt.output_files();
    let mut cmd = rt.command(&["run", "--bundle", &path, &id]);
    cmd.stdin(std::process::Stdio::null())
        .stdout(fs::File::create(&out_path)?)
        .stderr(fs::File::create(&err_path)?);
    let mut child = cmd.spawn().context("spawning run")?;
    let ready = wait_for(WAIT, || {
        fs::read_to_string(&out_path).is_ok_and(|t| t.contains("ready"))
    });
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        anyhow::bail!("the container never printed ready");
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
    let status = wait_child(&mut child, WAIT)?;
    let stdout = fs::read_to_string(&out_path)?;
    assert!(stdout.contains("got-term"), "stdout: {stdout}");
    assert_eq!(status.code(), Some(7), "stdout: {stdout}");
    guard.assert_no_leftovers();
    Ok(())
}

fn wait_child(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Result<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("the runtime did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn run_detach_leaves_the_container_running() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.sh("echo detached; exec sleep 100");
    let id = unique_name("run-detach");
    let guard = rt.guard(&id, &bundle);
    let out = rt.run_with(&id, &bundle, &["--detach"])?.ok();
    let state = rt.state(&id)?;
    assert_eq!(state["status"], "running", "{state}");
    let pid = state["pid"].as_i64().unwrap_or(0) as i32;
    guard.track_pid(pid);
    assert!(
        pid > 0 && kernel::alive(pid),
        "state pid {pid} is not alive"
    );
    assert!(
        wait_for(WAIT, || out.reread_stdout().contains("detached")),
        "the container's stdout is the runtime's: {:?}",
        out.reread_stdout()
    );
    assert!(
        wait_for(WAIT, || kernel::cmdline(pid)
            .is_ok_and(|c| c == "sleep 100")),
        "pid {pid} of state is not the container's command"
    );
    rt.kill(&id, "KILL")?.ok();
    rt.wait_status(&id, "stopped", WAIT)?;
    rt.delete(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

/// The whole lifecycle, with a command that writes into a bind-mounted host dir, so the test
/// can see that it has not run before `start`.
#[test]
fn create_start_kill_delete() -> Result<()> {
    let rt = Runtime::new()?;
    let host = tempfile::tempdir()?;
    let marker = host.path().join("started");
    let mut bundle = Bundle::new()?;
    bundle
        .bind(host.path(), "/mnt", false)
        .sh("echo yes > /mnt/started; exec sleep 100");
    let id = unique_name("lifecycle");
    let guard = rt.guard(&id, &bundle);

    rt.create(&id, &bundle)?.ok();
    let state = rt.state(&id)?;
    assert_eq!(state["status"], "created", "{state}");
    assert_eq!(state["id"], id.as_str(), "{state}");
    assert!(state["ociVersion"].is_string(), "no ociVersion: {state}");
    let bundle_path = fs::canonicalize(bundle.path())?;
    assert_eq!(
        state["bundle"].as_str().map(std::path::PathBuf::from),
        Some(bundle_path),
        "{state}"
    );
    let created = state["created"].as_str().unwrap_or_default();
    chrono::DateTime::parse_from_rfc3339(created)
        .with_context(|| format!("created {created:?} is not RFC 3339"))?;
    let pid = state["pid"].as_i64().unwrap_or(0) as i32;
    guard.track_pid(pid);
    assert!(pid > 0, "created container has pid {pid}");
    assert!(
        kernel::alive(pid),
        "init {pid} of a created container is not alive"
    );
    // The init waits for start: the command has not run.
    std::thread::sleep(Duration::from_millis(100));
    assert!(!marker.exists(), "the command ran before start");
    assert_ne!(
        kernel::cmdline(pid)?,
        "sleep 100",
        "the command runs before start"
    );

    rt.start(&id)?.ok();
    // The shell creates the file before it writes to it: wait for the whole line.
    assert!(
        wait_for(WAIT, || fs::read_to_string(&marker)
            .is_ok_and(|t| t == "yes\n")),
        "the command did not run after start: {:?}",
        fs::read_to_string(&marker)
    );
    let state = rt.state(&id)?;
    assert_eq!(state["status"], "running", "{state}");
    assert_eq!(
        state["pid"].as_i64(),
        Some(pid as i64),
        "start changed the pid: {state}"
    );
    assert!(wait_for(WAIT, || kernel::cmdline(pid)
        .is_ok_and(|c| c == "sleep 100")));

    rt.kill(&id, "KILL")?.ok();
    rt.wait_status(&id, "stopped", WAIT)?;
    assert!(
        wait_for(WAIT, || !kernel::alive(pid)),
        "init survived SIGKILL"
    );
    let state = rt.state(&id)?;
    assert_eq!(
        state["pid"].as_i64(),
        Some(0),
        "a stopped container reports pid 0: {state}"
    );

    rt.delete(&id)?.ok();
    let out = rt.exec(&["state", &id])?;
    assert_error(&rt, &out, &["does not exist"]);
    guard.assert_no_leftovers();
    Ok(())
}

/// Creates and starts `sleep 100`, returning its pid.
fn start_sleeper(rt: &Runtime, id: &str, bundle: &Bundle) -> Result<i32> {
    rt.create(id, bundle)?.ok();
    rt.start(id)?.ok();
    rt.wait_status(id, "running", WAIT)?;
    rt.pid(id)
}

#[test]
fn kill_takes_signal_names_with_and_without_sig_and_numbers() -> Result<()> {
    let rt = Runtime::new()?;
    for signal in ["KILL", "SIGKILL", "9"] {
        let mut bundle = Bundle::new()?;
        bundle.args(&["sleep", "100"]);
        let id = unique_name("kill-form");
        let guard = rt.guard(&id, &bundle);
        let pid = start_sleeper(&rt, &id, &bundle)?;
        guard.track_pid(pid);
        rt.kill(&id, signal)?.ok();
        rt.wait_status(&id, "stopped", WAIT)
            .with_context(|| format!("after kill {signal}"))?;
        assert!(!kernel::alive(pid), "kill {signal} left {pid} alive");
        rt.delete(&id)?.ok();
        guard.assert_no_leftovers();
    }
    Ok(())
}

#[test]
fn kill_term_reaches_the_handler_and_is_the_default_signal() -> Result<()> {
    let rt = Runtime::new()?;
    for args in [&["TERM"][..], &["SIGTERM"], &["15"], &[]] {
        let mut bundle = Bundle::new()?;
        bundle.sh("trap 'echo got-term; exit 0' TERM; echo ready; sleep 100 & wait");
        let id = unique_name("kill-term");
        let guard = rt.guard(&id, &bundle);
        let created = rt.create(&id, &bundle)?.ok();
        rt.start(&id)?.ok();
        assert!(wait_for(WAIT, || created.reread_stdout().contains("ready")));
        let mut kill_args = vec!["kill", &id];
        kill_args.extend_from_slice(args);
        rt.exec(&kill_args)?.ok();
        rt.wait_status(&id, "stopped", WAIT)
            .with_context(|| format!("after kill {args:?}"))?;
        assert!(
            created.reread_stdout().contains("got-term"),
            "kill {args:?}: stdout {:?}",
            created.reread_stdout()
        );
        rt.delete(&id)?.ok();
        guard.assert_no_leftovers();
    }
    Ok(())
}

#[test]
fn kill_all_signals_every_process_of_the_container() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    // Init (sh) has no TERM handler, so only its children die of TERM; then `wait` returns.
    bundle.sh("sleep 100 & sleep 100 & echo ready; wait; echo waited");
    let id = unique_name("kill-all");
    let guard = rt.guard(&id, &bundle);
    let created = rt.create(&id, &bundle)?.ok();
    rt.start(&id)?.ok();
    assert!(wait_for(WAIT, || created.reread_stdout().contains("ready")));
    let cgroup = format!("/sys/fs/cgroup/pids{}", bundle.cgroup_path());
    assert!(
        wait_for(WAIT, || kernel::cgroup_procs(std::path::Path::new(&cgroup))
            .len()
            == 3),
        "expected sh and two sleeps in {cgroup}"
    );
    // Without --all only init gets TERM, which it ignores.
    rt.kill(&id, "TERM")?.ok();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        rt.status(&id)?,
        "running",
        "init without a handler ignored TERM"
    );
    rt.exec(&["kill", "--all", &id, "TERM"])?.ok();
    rt.wait_status(&id, "stopped", WAIT)?;
    assert!(created.reread_stdout().contains("waited"));
    rt.delete(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn pid_file_holds_the_pid_without_a_newline() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "100"]);
    let id = unique_name("pidfile");
    let guard = rt.guard(&id, &bundle);
    let pid_file = rt.scratch().join("init.pid");
    let pid_arg = pid_file.display().to_string();
    rt.create_with(&id, &bundle, &["--pid-file", &pid_arg])?
        .ok();
    let text = fs::read_to_string(&pid_file)?;
    assert!(
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()),
        "pid file holds {text:?}, not just digits"
    );
    let pid: i32 = text.parse()?;
    guard.track_pid(pid);
    assert_eq!(rt.pid(&id)?, pid, "pid file and state disagree");
    assert!(kernel::alive(pid));
    rt.delete_force(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn list_shows_the_container_as_table_ids_and_json() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "100"]);
    let id = unique_name("list");
    let guard = rt.guard(&id, &bundle);
    rt.create(&id, &bundle)?.ok();
    let pid = rt.pid(&id)?;
    guard.track_pid(pid);

    let table = rt.list(&[])?.ok().stdout;
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header.first(), Some(&"ID"), "table: {table}");
    assert!(
        header.contains(&"STATUS") && header.contains(&"PID"),
        "table: {table}"
    );
    let row: Vec<&str> = lines
        .find(|l| l.split_whitespace().next() == Some(id.as_str()))
        .with_context(|| format!("no row for {id}: {table}"))?
        .split_whitespace()
        .collect();
    assert!(row.contains(&pid.to_string().as_str()), "row {row:?}");
    assert!(row.contains(&"created"), "row {row:?}");

    let quiet = rt.list(&["-q"])?.ok().stdout;
    assert_eq!(quiet.trim(), id, "list -q");

    let json: Value = serde_json::from_str(&rt.list(&["--format", "json"])?.ok().stdout)?;
    let items = json
        .as_array()
        .context("list --format json is not an array")?;
    assert_eq!(items.len(), 1, "{json}");
    assert_eq!(items[0]["id"], id.as_str());
    assert_eq!(items[0]["status"], "created");
    assert_eq!(items[0]["pid"].as_i64(), Some(pid as i64));

    rt.delete_force(&id)?.ok();
    let quiet = rt.list(&["-q"])?.ok().stdout;
    assert_eq!(quiet.trim(), "", "list -q after delete");
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn delete_force_kills_a_running_container() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "100"]);
    let id = unique_name("del-force");
    let guard = rt.guard(&id, &bundle);
    let pid = start_sleeper(&rt, &id, &bundle)?;
    guard.track_pid(pid);
    rt.delete_force(&id)?.ok();
    assert!(
        wait_for(WAIT, || !kernel::alive(pid)),
        "delete --force left {pid} alive"
    );
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn a_container_that_exits_by_itself_is_stopped_and_deletable() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.args(&["true"]);
    let id = unique_name("exits");
    let guard = rt.guard(&id, &bundle);
    rt.create(&id, &bundle)?.ok();
    rt.start(&id)?.ok();
    rt.wait_status(&id, "stopped", WAIT)?;
    rt.delete(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}
