//! A long-running task under Debian's containerd 1.6 on the runtime under test (`$BERTH_RUNC`,
//! default the release berth-runc; `BERTH_RUNC=/usr/bin/runc` is the control): listed, exec'd
//! into, listed by `ctr task ps`, paused and resumed (the freezer read back from the kernel),
//! measured by `ctr task metrics`, killed and removed with nothing left behind.

use std::time::Duration;

use berth_integration::containerd::Containerd;
use berth_integration::runtime::kernel;

const WAIT: Duration = Duration::from_secs(10);

/// Pids in the first column of `ctr task ps` (header `PID INFO`).
fn ps_pids(table: &str) -> Vec<i32> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The memory-hierarchy cgroup of a host pid.
fn memory_cgroup(pid: i32) -> Option<String> {
    kernel::proc_cgroups(pid)
        .ok()?
        .into_iter()
        .find(|(ctrls, _)| ctrls.split(',').any(|c| c == "memory"))
        .map(|(_, path)| path)
}

#[test]
fn long_running_task_lifecycle() {
    let c = Containerd::start().unwrap();
    let id = "sleeper";
    c.ok(&c.run(&["-d"], id, &["sleep", "300"]), id);

    // Listed as RUNNING with the pid of a live `sleep` in the cgroup containerd chose.
    let (pid, status) = c
        .task(id)
        .unwrap_or_else(|| panic!("task not listed\n{}", c.log_tail(20)));
    assert_eq!(status, "RUNNING");
    assert!(pid > 0 && kernel::alive(pid), "init pid {pid} is not alive");
    assert_eq!(kernel::cmdline(pid).unwrap(), "sleep 300");
    let path = c.cgroups_path(id).unwrap();
    assert_eq!(path, format!("/{}/{id}", c.namespace()));
    assert_eq!(memory_cgroup(pid).as_deref(), Some(path.as_str()));
    // The shim drives the runtime under test, and that runtime keeps its state in our root.
    let options = c.shim_options(id).unwrap();
    assert_eq!(
        options["binary_name"].as_str().map(std::path::Path::new),
        Some(c.runtime()),
        "options.json: {options}"
    );
    assert!(
        c.runtime_state_dir(id).is_dir(),
        "no runtime state at {}",
        c.runtime_state_dir(id).display()
    );
    assert!(
        c.shims()
            .iter()
            .any(|s| s.id == id && s.namespace == c.namespace()),
        "no shim found for {id}"
    );

    // exec: output, exit code, and a detached process in the same cgroup and pid namespace.
    let hi = c.exec(&[], id, "hi", &["echo", "hi"]);
    assert_eq!(c.ok(&hi, id), "hi\n", "{}", c.diagnose(&hi, id));
    let four = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "four",
        id,
        "sh",
        "-c",
        "exit 4",
    ]);
    assert_eq!(four.code, 4, "{}", c.diagnose(&four, id));
    let bg = c.exec(&["-d"], id, "bg", &["sleep", "200"]);
    c.ok(&bg, id);

    // exec on a terminal: a pts of its own, stdin a tty, the exit code back through ctr.
    let tty = c.exec_on_pty(
        id,
        "tty",
        &["sh", "-c", "tty; test -t 0 && echo stdin-is-a-tty; exit 6"],
    );
    assert_eq!(tty.code, 6, "{}", c.diagnose(&tty, id));
    assert!(
        tty.stdout.contains("/dev/pts/") && tty.stdout.contains("stdin-is-a-tty"),
        "exec -t output lacks a pts name or a tty stdin:\n{}",
        c.diagnose(&tty, id)
    );

    // ps: the init and the detached exec.
    let ps = c.ctr(&["task", "ps", id]);
    let pids = ps_pids(&c.ok(&ps, id));
    assert!(pids.contains(&pid), "ps lacks init {pid}:\n{}", ps.stdout);
    let others: Vec<i32> = pids.iter().copied().filter(|p| *p != pid).collect();
    assert_eq!(
        others.len(),
        1,
        "ps should list init + 1 exec:\n{}",
        ps.stdout
    );
    let exec_pid = others[0];
    assert_eq!(kernel::cmdline(exec_pid).unwrap(), "sleep 200");
    assert_eq!(memory_cgroup(exec_pid).as_deref(), Some(path.as_str()));
    assert_eq!(
        kernel::namespace(&exec_pid.to_string(), "pid").unwrap(),
        kernel::namespace(&pid.to_string(), "pid").unwrap(),
        "the exec'd process is not in the container's pid namespace"
    );

    // pause / resume: ctr's status and the kernel's freezer agree.
    c.ok(&c.ctr(&["task", "pause", id]), id);
    assert!(c.wait_status(id, "PAUSED", WAIT), "{:?}", c.task(id));
    assert_eq!(
        kernel::cgroup_file("freezer", &path, "freezer.state").unwrap(),
        "FROZEN"
    );
    c.ok(&c.ctr(&["task", "resume", id]), id);
    assert!(c.wait_status(id, "RUNNING", WAIT), "{:?}", c.task(id));
    assert_eq!(
        kernel::cgroup_file("freezer", &path, "freezer.state").unwrap(),
        "THAWED"
    );

    // metrics: containerd reads the cgroup; compare with what the kernel says now.
    let m = c.ctr(&["task", "metrics", "--format", "json", id]);
    let metrics: serde_json::Value = serde_json::from_str(&c.ok(&m, id))
        .unwrap_or_else(|e| panic!("metrics are not JSON ({e}): {}", m.describe()));
    let kernel_pids: u64 = kernel::cgroup_file("pids", &path, "pids.current")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(kernel_pids, 2, "init + exec");
    assert_eq!(
        metrics["pids"]["current"].as_u64(),
        Some(kernel_pids),
        "{metrics}"
    );
    assert!(
        metrics["memory"]["usage"]["usage"].as_u64().unwrap_or(0) > 0,
        "no memory usage: {metrics}"
    );
    assert!(
        metrics["cpu"]["usage"]["total"].as_u64().unwrap_or(0) > 0,
        "no cpu usage: {metrics}"
    );
    let table = c.ctr(&["task", "metrics", id]);
    assert!(
        c.ok(&table, id).contains("memory.usage_in_bytes"),
        "{}",
        table.stdout
    );

    // kill: STOPPED, and the whole pid namespace dies with its init.
    c.ok(&c.ctr(&["task", "kill", "-s", "SIGKILL", id]), id);
    assert!(c.wait_status(id, "STOPPED", WAIT), "{:?}", c.task(id));
    assert!(
        berth_integration::runtime::wait_for(WAIT, || !kernel::alive(exec_pid)),
        "exec'd pid {exec_pid} outlived the container's init"
    );

    // rm: nothing left — no task, container, cgroup, runtime state, bundle or shim.
    c.ok(&c.ctr(&["task", "rm", id]), id);
    c.ok(&c.ctr(&["containers", "rm", id]), id);
    let left = c.leftovers(id, &path);
    assert!(left.is_empty(), "after task rm + c rm: {left:#?}");
}

#[test]
fn exec_and_pause_errors_on_a_stopped_task() {
    let c = Containerd::start().unwrap();
    let id = "stopped";
    c.ok(&c.run(&["-d"], id, &["sh", "-c", "exit 7"]), id);
    assert!(c.wait_status(id, "STOPPED", WAIT), "{:?}", c.task(id));
    let exec = c.exec(&[], id, "late", &["echo", "hi"]);
    assert_ne!(
        exec.code,
        0,
        "exec into a stopped task: {}",
        exec.describe()
    );
    assert!(!exec.stdout.contains("hi"), "{}", exec.describe());
    let pause = c.ctr(&["task", "pause", id]);
    assert_ne!(
        pause.code,
        0,
        "pause of a stopped task: {}",
        pause.describe()
    );
    // `ctr task rm` reports the exit code containerd recorded: the process's.
    let rm = c.ctr(&["task", "rm", id]);
    c.ok(&rm, id);
    assert!(rm.stderr.contains("exit code 7"), "{}", rm.describe());
    let path = format!("/{}/{id}", c.namespace());
    c.ok(&c.ctr(&["containers", "rm", id]), id);
    let left = c.leftovers(id, &path);
    assert!(left.is_empty(), "{left:#?}");
}

#[test]
fn exec_user_and_cwd_and_no_exec_while_paused() {
    let c = Containerd::start().unwrap();
    let id = "execopts";
    c.ok(&c.run(&["-d"], id, &["sleep", "300"]), id);
    let who = c.exec(
        &["--user", "65534", "--cwd", "/tmp"],
        id,
        "who",
        &["sh", "-c", "id -u; pwd"],
    );
    assert_eq!(c.ok(&who, id), "65534\n/tmp\n", "{}", c.diagnose(&who, id));
    c.ok(&c.ctr(&["task", "pause", id]), id);
    assert!(c.wait_status(id, "PAUSED", WAIT), "{:?}", c.task(id));
    let paused = c.exec(&[], id, "paused", &["echo", "hi"]);
    assert_ne!(
        paused.code,
        0,
        "exec into a paused task: {}",
        paused.describe()
    );
    assert!(!paused.stdout.contains("hi"), "{}", paused.describe());
    c.ok(&c.ctr(&["task", "resume", id]), id);
    assert!(c.wait_status(id, "RUNNING", WAIT), "{:?}", c.task(id));
    let after = c.exec(&[], id, "after", &["echo", "hi"]);
    assert_eq!(c.ok(&after, id), "hi\n", "{}", c.diagnose(&after, id));
}

#[test]
fn sigterm_reaches_a_trapping_init_and_its_exit_code_is_kept() {
    let c = Containerd::start().unwrap();
    let id = "trap";
    let script = "trap 'exit 9' TERM; echo ready > /tmp/ready; while true; do sleep 1; done";
    c.ok(&c.run(&["-d"], id, &["sh", "-c", script]), id);
    // Wait until the trap is installed (the shell writes the file after `trap`).
    let ready = berth_integration::runtime::wait_for(WAIT, || {
        c.exec(
            &[],
            id,
            &format!("probe-{}", rand_suffix()),
            &["test", "-e", "/tmp/ready"],
        )
        .code
            == 0
    });
    assert!(ready, "the shell never became ready\n{}", c.log_tail(20));
    // `ctr task kill` sends SIGTERM by default.
    c.ok(&c.ctr(&["task", "kill", id]), id);
    assert!(c.wait_status(id, "STOPPED", WAIT), "{:?}", c.task(id));
    let rm = c.ctr(&["task", "rm", id]);
    c.ok(&rm, id);
    assert!(rm.stderr.contains("exit code 9"), "{}", rm.describe());
}

#[test]
fn kill_all_signals_every_process_of_the_task() {
    let c = Containerd::start().unwrap();
    let id = "killall";
    // `sleep` as pid 1 of its namespace ignores SIGTERM (no handler); the exec'd one does not.
    c.ok(&c.run(&["-d"], id, &["sleep", "300"]), id);
    let (init, _) = c.task(id).expect("task listed");
    c.ok(&c.exec(&["-d"], id, "bg", &["sleep", "301"]), id);
    let ps = c.ctr(&["task", "ps", id]);
    let pids = ps_pids(&c.ok(&ps, id));
    let exec_pid = pids
        .iter()
        .copied()
        .find(|p| *p != init)
        .unwrap_or_else(|| panic!("no exec'd pid in ps:\n{}", ps.stdout));
    // Without --all only the init is signalled: the exec'd sleep survives.
    c.ok(&c.ctr(&["task", "kill", "-s", "SIGTERM", id]), id);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        kernel::alive(exec_pid),
        "SIGTERM without --all reached {exec_pid}"
    );
    assert!(kernel::alive(init));
    // With --all every process gets it: the exec'd sleep dies, the init stays.
    c.ok(&c.ctr(&["task", "kill", "--all", "-s", "SIGTERM", id]), id);
    assert!(
        berth_integration::runtime::wait_for(WAIT, || !kernel::alive(exec_pid)),
        "kill --all did not reach the exec'd pid {exec_pid}"
    );
    assert_eq!(c.task(id).map(|t| t.1).as_deref(), Some("RUNNING"));
    c.ok(&c.ctr(&["task", "kill", "--all", "-s", "SIGKILL", id]), id);
    assert!(c.wait_status(id, "STOPPED", WAIT), "{:?}", c.task(id));
}

/// A distinct suffix for exec ids within one test.
fn rand_suffix() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn task_survives_a_containerd_restart() {
    let mut c = Containerd::start().unwrap();
    let id = "survivor";
    c.ok(&c.run(&["-d"], id, &["sleep", "300"]), id);
    let (pid, _) = c.task(id).expect("task listed");
    c.restart().unwrap();
    // The shim kept the container; containerd finds it again.
    assert_eq!(
        c.task(id),
        Some((pid, "RUNNING".to_string())),
        "{}",
        c.log_tail(20)
    );
    assert!(kernel::alive(pid));
    let hi = c.exec(&[], id, "after-restart", &["echo", "hi"]);
    assert_eq!(c.ok(&hi, id), "hi\n", "{}", c.diagnose(&hi, id));
    c.ok(&c.ctr(&["task", "pause", id]), id);
    assert!(c.wait_status(id, "PAUSED", WAIT), "{:?}", c.task(id));
    c.ok(&c.ctr(&["task", "resume", id]), id);
    c.ok(&c.ctr(&["task", "kill", "-s", "SIGKILL", id]), id);
    assert!(c.wait_status(id, "STOPPED", WAIT), "{:?}", c.task(id));
    let path = c.cgroups_path(id).unwrap();
    c.ok(&c.ctr(&["task", "rm", id]), id);
    c.ok(&c.ctr(&["containers", "rm", id]), id);
    let left = c.leftovers(id, &path);
    assert!(left.is_empty(), "{left:#?}");
}
