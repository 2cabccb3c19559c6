//! Hooks: real programs (/bin/sh, /bin/sleep, /bin/true) run with the state on stdin; checked by
//! the files they write, the errors `run` returns and the processes left (none) after a timeout.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_runtime::hooks::{self, HookKind};
use oci_spec::runtime::{Hook, Hooks};
use serde_json::json;

fn hook(path: &str, args: &[&str], env: Option<&[String]>, timeout: Option<i64>) -> Hook {
    let mut v = json!({"path": path, "args": args});
    if let Some(env) = env {
        v["env"] = json!(env);
    }
    if let Some(t) = timeout {
        v["timeout"] = json!(t);
    }
    serde_json::from_value(v).expect("hook parses")
}

/// A `/bin/sh -c SCRIPT` hook whose environment is exactly `env` plus PATH.
fn sh(script: &str, env: &[(&str, &Path)]) -> Hook {
    let mut e: Vec<String> = vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()];
    e.extend(env.iter().map(|(k, v)| format!("{k}={}", v.display())));
    hook("/bin/sh", &["sh", "-c", script], Some(&e), None)
}

fn hooks_of(kind: &str, list: Vec<Hook>) -> Hooks {
    serde_json::from_value(json!({ kind: list })).expect("hooks parse")
}

fn state(id: &str) -> Vec<u8> {
    json!({"ociVersion": "1.2.0", "id": id, "status": "creating", "pid": 4242,
           "bundle": "/run/bundle", "annotations": {"a": "b"}})
    .to_string()
    .into_bytes()
}

/// A pid written by a hook, killed when the test ends if it is still alive.
struct Reap(Option<i32>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            if alive(pid) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Running (not gone and not a zombie waiting for its reaper).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => false,
    }
}

fn read_pid(p: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(pid) = std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "{} never got a pid", p.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn state_json_arrives_intact_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stdin-copy");
    // Far larger than a pipe buffer, so the write has to be interleaved with the hook's reads.
    let big = "x".repeat(300 * 1024);
    let st = json!({"ociVersion": "1.2.0", "id": "stdin-test", "status": "created", "pid": 7,
                    "bundle": "/b", "annotations": {"big": big}})
    .to_string()
    .into_bytes();
    let hs = hooks_of(
        "createRuntime",
        vec![sh("cat > \"$OUT\"", &[("OUT", &out)])],
    );
    hooks::run(&hs, HookKind::CreateRuntime, &st).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), st);
}

#[test]
fn args_and_env_reach_the_hook() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("seen");
    let env = vec![
        "PATH=/usr/bin:/bin".to_string(),
        format!("OUT={}", out.display()),
        "GREETING=hello world".to_string(),
    ];
    let h = hook(
        "/bin/sh",
        &[
            "custom-argv0",
            "-c",
            "{ tr '\\0' ' ' < /proc/$$/cmdline; echo; env; } > \"$OUT\"",
            "first",
            "second arg",
        ],
        Some(&env),
        None,
    );
    hooks::run(
        &hooks_of("poststart", vec![h]),
        HookKind::Poststart,
        &state("args"),
    )
    .unwrap();
    let seen = std::fs::read_to_string(&out).unwrap();
    let mut lines = seen.lines();
    let cmdline = lines.next().unwrap();
    assert!(
        cmdline.starts_with("custom-argv0 -c ") && cmdline.ends_with(" first second arg "),
        "argv as the hook saw it: {cmdline:?}"
    );
    let env_lines: Vec<&str> = lines.collect();
    assert!(env_lines.contains(&"GREETING=hello world"), "{env_lines:?}");
    // env replaces the runtime's environment: nothing of the test process's leaks in.
    assert!(
        !env_lines.iter().any(|l| l.starts_with("CARGO_")),
        "{env_lines:?}"
    );
}

#[test]
fn without_env_the_hook_inherits_the_callers_environment() {
    let Ok(pkg) = std::env::var("CARGO_PKG_NAME") else {
        panic!("cargo test sets CARGO_PKG_NAME for the test process");
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env");
    let script = format!("env > '{}'", out.display());
    let h = hook("/bin/sh", &["sh", "-c", &script], None, None);
    hooks::run(
        &hooks_of("createRuntime", vec![h]),
        HookKind::CreateRuntime,
        &state("inherit"),
    )
    .unwrap();
    let env = std::fs::read_to_string(&out).unwrap();
    assert!(
        env.lines().any(|l| l == format!("CARGO_PKG_NAME={pkg}")),
        "{env}"
    );
}

#[test]
fn hooks_run_in_order_and_only_for_their_kind() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let step = |s: &str| sh(&format!("echo {s} >> \"$LOG\""), &[("LOG", &log)]);
    let hs: Hooks = serde_json::from_value(json!({
        "prestart": [step("prestart")],
        "createRuntime": [step("cr1"), step("cr2"), step("cr3")],
        "createContainer": [step("createContainer")],
        "startContainer": [step("startContainer")],
        "poststart": [step("poststart")],
        "poststop": [step("poststop")],
    }))
    .unwrap();
    hooks::run(&hs, HookKind::CreateRuntime, &state("order")).unwrap();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "cr1\ncr2\ncr3\n");
    for kind in HookKind::ALL {
        if kind == HookKind::CreateRuntime {
            continue;
        }
        std::fs::remove_file(&log).unwrap();
        hooks::run(&hs, kind, &state("order")).unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            format!("{}\n", kind.name()),
            "{kind}"
        );
    }
}

#[test]
fn failing_hook_names_kind_path_status_and_stderr_and_stops_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let later = dir.path().join("later-ran");
    let hs = hooks_of(
        "createContainer",
        vec![
            sh("echo 'detail of the failure' >&2; exit 3", &[]),
            sh("touch \"$F\"", &[("F", &later)]),
        ],
    );
    let err = hooks::run(&hs, HookKind::CreateContainer, &state("fail")).unwrap_err();
    for needle in [
        "createContainer",
        "/bin/sh",
        "status 3",
        "detail of the failure",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }
    assert!(!later.exists(), "hooks after a failing one must not run");
}

#[test]
fn long_stderr_is_cut_to_its_start() {
    let hs = hooks_of(
        "createRuntime",
        vec![sh(
            "printf 'START'; head -c 100000 /dev/zero | tr '\\0' 'e' >&2; exit 1",
            &[],
        )],
    );
    let err = hooks::run(&hs, HookKind::CreateRuntime, &state("long")).unwrap_err();
    assert!(err.contains("stderr: eeee"), "{err}");
    assert!(
        err.len() < 1000,
        "error should quote ~500 bytes, is {} long",
        err.len()
    );
}

#[test]
fn hook_killed_by_a_signal_is_reported() {
    let hs = hooks_of("startContainer", vec![sh("kill -KILL $$", &[])]);
    let err = hooks::run(&hs, HookKind::StartContainer, &state("sig")).unwrap_err();
    assert!(
        err.contains("startContainer") && err.contains("killed by signal SIGKILL"),
        "{err}"
    );
}

#[test]
fn timeout_kills_the_hook_and_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    // exec: the hook process itself becomes `sleep 10`.
    let mut h = sh("echo $$ > \"$P\"; exec sleep 10", &[("P", &pidfile)]);
    h.set_timeout(Some(1));
    let started = Instant::now();
    let err = hooks::run(
        &hooks_of("createRuntime", vec![h]),
        HookKind::CreateRuntime,
        &state("timeout"),
    )
    .unwrap_err();
    let took = started.elapsed();
    let pid = read_pid(&pidfile);
    let _reap = Reap(Some(pid));
    assert!(
        err.contains("createRuntime") && err.contains("timed out after 1s"),
        "{err}"
    );
    assert!(took < Duration::from_secs(5), "a 1 s timeout took {took:?}");
    assert!(!alive(pid), "the timed-out hook {pid} is still running");
}

#[test]
fn timeout_kills_the_hooks_children_too() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    // A wrapper shell whose child does the sleeping.
    let mut h = sh("sleep 10 & echo $! > \"$P\"; wait", &[("P", &pidfile)]);
    h.set_timeout(Some(1));
    let err = hooks::run(
        &hooks_of("poststart", vec![h]),
        HookKind::Poststart,
        &state("timeout-tree"),
    )
    .unwrap_err();
    assert!(err.contains("timed out"), "{err}");
    let pid = read_pid(&pidfile);
    let _reap = Reap(Some(pid));
    // The orphaned sleep is reparented and reaped by init; give that a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid), "the hook's child {pid} survived the timeout");
}

#[test]
fn hook_that_exits_leaving_a_background_child_holding_its_pipes_returns() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let hs = hooks_of(
        "createRuntime",
        vec![sh(
            "sleep 30 & echo $! > \"$P\"; exit 0",
            &[("P", &pidfile)],
        )],
    );
    let started = Instant::now();
    let result = hooks::run(&hs, HookKind::CreateRuntime, &state("daemon"));
    let took = started.elapsed();
    let pid = read_pid(&pidfile);
    let _reap = Reap(Some(pid));
    result.unwrap();
    assert!(
        took < Duration::from_secs(10),
        "run waited for the background child ({took:?})"
    );
    assert!(
        alive(pid),
        "a hook's intended background process must not be killed"
    );
}

#[test]
fn missing_hook_binary_is_a_clear_error() {
    let hs = hooks_of(
        "createRuntime",
        vec![hook("/nonexistent/berth-hook", &["berth-hook"], None, None)],
    );
    let err = hooks::run(&hs, HookKind::CreateRuntime, &state("missing")).unwrap_err();
    assert!(
        err.contains("createRuntime")
            && err.contains("/nonexistent/berth-hook")
            && err.contains("cannot be started")
            && err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn hook_that_does_not_read_stdin_still_passes() {
    let big = vec![b'{'; 4 * 1024 * 1024];
    for h in [
        hook("/bin/true", &["true"], None, Some(5)),
        // Closes stdin at once, then takes its time: writes hit EPIPE.
        sh("exec 0<&-; sleep 0.2", &[]),
    ] {
        hooks::run(&hooks_of("poststart", vec![h]), HookKind::Poststart, &big).unwrap();
    }
}

#[test]
fn bad_hook_definitions_are_rejected() {
    let cases = [
        (hook("relative/hook", &[], None, None), "absolute"),
        (
            hook("/bin/true", &["true"], None, Some(0)),
            "timeout must be greater than zero",
        ),
        (hook("/bin/true", &["true"], None, Some(-3)), "not -3"),
        (
            hook(
                "/bin/true",
                &["true"],
                Some(&["NOEQUALS".to_string()]),
                None,
            ),
            "\"NOEQUALS\" is not KEY=VALUE",
        ),
    ];
    for (h, needle) in cases {
        let path: PathBuf = h.path().clone();
        let err = hooks::run(
            &hooks_of("createRuntime", vec![h]),
            HookKind::CreateRuntime,
            &state("bad"),
        )
        .unwrap_err();
        assert!(
            err.contains(needle) && err.contains(&path.display().to_string()),
            "{needle:?} / path missing from: {err}"
        );
    }
}

#[test]
fn poststop_hooks_stop_at_the_first_failure_as_runc_does() {
    let dir = tempfile::tempdir().unwrap();
    let later = dir.path().join("second-ran");
    let hs = hooks_of(
        "poststop",
        vec![
            sh("echo cleanup-broke >&2; exit 7", &[]),
            sh("touch \"$F\"", &[("F", &later)]),
        ],
    );
    let err = hooks::run(&hs, HookKind::Poststop, &state("poststop")).unwrap_err();
    assert!(
        err.contains("poststop") && err.contains("status 7") && err.contains("cleanup-broke"),
        "{err}"
    );
    assert!(!later.exists(), "no poststop hook runs after a failing one");
}

#[test]
fn runs_from_a_forked_single_threaded_child() {
    // The init calls createContainer/startContainer hooks from a fresh child process.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("from-child");
    let hs = hooks_of(
        "startContainer",
        vec![sh("cat > \"$OUT\"", &[("OUT", &out)])],
    );
    let st = state("child");
    let pid = match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let code = match hooks::run(&hs, HookKind::StartContainer, &st) {
                Ok(()) => 0,
                Err(_) => 1,
            };
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    let status = nix::sys::wait::waitpid(pid, None).unwrap();
    assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pid, 0));
    assert_eq!(std::fs::read(&out).unwrap(), st);
}
