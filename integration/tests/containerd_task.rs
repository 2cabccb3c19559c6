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
