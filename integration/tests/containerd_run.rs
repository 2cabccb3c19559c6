//! Debian's containerd 1.6 and `ctr` running one-shot containers on the runtime under test
//! (`$BERTH_RUNC`, default the release berth-runc; `BERTH_RUNC=/usr/bin/runc` is the control):
//! output and exit codes, env/cwd, a terminal, a memory limit read back from the kernel, and a
//! missing executable that fails cleanly.

use berth_integration::containerd::Containerd;
use berth_integration::runtime::kernel;

/// The cgroupsPath containerd gives a container by default: `/<namespace>/<id>`.
fn default_cgroup(c: &Containerd, id: &str) -> String {
    format!("/{}/{id}", c.namespace())
}

#[test]
fn run_rm_prints_hello_and_exits_zero() {
    let c = Containerd::start().unwrap();
    let id = "hello";
    let out = c.run_expecting(&["--rm"], id, &["echo", "hello"], 0, "hello\n");
    let stdout = c.ok(&out, id);
    assert_eq!(stdout, "hello\n", "{}", c.diagnose(&out, id));
    let left = c.leftovers(id, &default_cgroup(&c, id));
    assert!(left.is_empty(), "after `ctr run --rm`: {left:#?}");
}

#[test]
fn run_rm_returns_the_exit_code() {
    let c = Containerd::start().unwrap();
    let id = "exit3";
    let out = c.run_expecting(
        &["--rm"],
        id,
        &["sh", "-c", "echo before; exit 3"],
        3,
        "before\n",
    );
    assert_eq!(out.code, 3, "{}", c.diagnose(&out, id));
    assert_eq!(out.stdout, "before\n", "{}", c.diagnose(&out, id));
    let left = c.leftovers(id, &default_cgroup(&c, id));
    assert!(left.is_empty(), "after a non-zero exit: {left:#?}");
}

#[test]
fn run_passes_env_cwd_and_args() {
    let c = Containerd::start().unwrap();
    let id = "envcwd";
    let out = c.run_expecting(
        &["--rm", "--env", "GREETING=hi there", "--cwd", "/tmp"],
        id,
        &[
            "sh",
            "-c",
            "echo \"$GREETING\"; pwd; id -u; echo \"$0|$1\"",
            "a b",
            "c",
        ],
        0,
        "hi there\n/tmp\n0\na b|c\n",
    );
    let stdout = c.ok(&out, id);
    assert_eq!(
        stdout,
        "hi there\n/tmp\n0\na b|c\n",
        "{}",
        c.diagnose(&out, id)
    );
}

#[test]
fn run_with_tty_gets_a_pts_and_its_exit_code() {
    let c = Containerd::start().unwrap();
    let id = "tty";
    // `ctr run -t` needs a terminal on its own side: `script` gives it one.
    let out = c.run_on_pty(
        &["--rm", "-t"],
        id,
        &["sh", "-c", "tty; test -t 0 && echo stdin-is-a-tty; exit 5"],
    );
    assert_eq!(out.code, 5, "{}", c.diagnose(&out, id));
    assert!(
        out.stdout.contains("/dev/pts/"),
        "tty did not print a /dev/pts name:\n{}",
        c.diagnose(&out, id)
    );
    assert!(
        out.stdout.contains("stdin-is-a-tty"),
        "stdin is not a terminal:\n{}",
        c.diagnose(&out, id)
    );
    let left = c.leftovers(id, &default_cgroup(&c, id));
    assert!(left.is_empty(), "after a tty run: {left:#?}");
}

#[test]
fn memory_limit_reaches_the_cgroup() {
    let c = Containerd::start().unwrap();
    let id = "memlimit";
    let limit = 64 * 1024 * 1024u64;
    let limit_s = limit.to_string();
    let out = c.run(&["-d", "--memory-limit", &limit_s], id, &["sleep", "300"]);
    c.ok(&out, id);
    let path = c.cgroups_path(id).unwrap();
    assert_eq!(
        path,
        default_cgroup(&c, id),
        "containerd's default cgroupsPath"
    );
    let config = c.oci_config(id).unwrap();
    assert_eq!(
        config["linux"]["resources"]["memory"]["limit"].as_u64(),
        Some(limit),
        "config.json: {}",
        config["linux"]["resources"]
    );
    let kernel_limit = kernel::cgroup_file("memory", &path, "memory.limit_in_bytes").unwrap();
    assert_eq!(kernel_limit, limit_s, "memory.limit_in_bytes of {path}");
    // containerd reads the cgroup itself for metrics: it must find the same limit there.
    let m = c.ctr(&["task", "metrics", "--format", "json", id]);
    let metrics: serde_json::Value = serde_json::from_str(&c.ok(&m, id))
        .unwrap_or_else(|e| panic!("metrics are not JSON ({e}): {}", m.describe()));
    assert_eq!(
        metrics["memory"]["usage"]["limit"].as_u64(),
        Some(limit),
        "metrics: {metrics}"
    );
    let k = c.ctr(&["task", "rm", "-f", id]);
    c.ok(&k, id);
    c.ok(&c.ctr(&["containers", "rm", id]), id);
    let left = c.leftovers(id, &path);
    assert!(left.is_empty(), "after task rm -f: {left:#?}");
}

#[test]
fn missing_executable_fails_and_leaves_nothing() {
    let c = Containerd::start().unwrap();
    let id = "nope";
    let out = c.run(&["--rm"], id, &["nope"]);
    assert_ne!(out.code, 0, "{}", c.diagnose(&out, id));
    assert!(
        out.stderr.contains("executable file not found"),
        "ctr's error does not say `executable file not found`:\n{}",
        c.diagnose(&out, id)
    );
    assert!(
        out.stderr.contains("nope"),
        "ctr's error does not name the executable:\n{}",
        c.diagnose(&out, id)
    );
    let left = c.leftovers(id, &default_cgroup(&c, id));
    assert!(left.is_empty(), "after a failed create: {left:#?}");
    // containerd itself still works: the same id can be reused for a good run.
    let again = c.run_expecting(&["--rm"], id, &["echo", "ok"], 0, "ok\n");
    assert_eq!(c.ok(&again, id), "ok\n");
}

#[test]
fn cwd_that_is_a_file_fails_with_the_runtimes_error() {
    let c = Containerd::start().unwrap();
    let id = "badcwd";
    let out = c.run(
        &["--rm", "--cwd", "/etc/passwd"],
        id,
        &["echo", "unreachable"],
    );
    assert_ne!(out.code, 0, "{}", c.diagnose(&out, id));
    assert!(
        !out.stdout.contains("unreachable"),
        "{}",
        c.diagnose(&out, id)
    );
    // The shim shows the runtime's last log.json error: it must say what was wrong (runc 1.1:
    // "... error during container init: mkdir /etc/passwd: not a directory").
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains("not a directory") && err.contains("/etc/passwd"),
        "ctr's error does not say the cwd is not a directory:\n{}",
        c.diagnose(&out, id)
    );
    let left = c.leftovers(id, &default_cgroup(&c, id));
    assert!(left.is_empty(), "after a failed create: {left:#?}");
}

#[test]
fn concurrent_runs_in_one_namespace() {
    let c = Containerd::start().unwrap();
    // Several `ctr run --rm` at once: the runtime's state root and the namespace's cgroup
    // parent are shared between them.
    let outs: Vec<(String, berth_integration::containerd::CtrOut)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let c = &c;
                s.spawn(move || {
                    let id = format!("par{i}");
                    let cmd = format!("echo run {i}");
                    let want = format!("run {i}\n");
                    let out = c.run_expecting(&["--rm"], &id, &["sh", "-c", &cmd], 0, &want);
                    (id, out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a run thread panicked"))
            .collect()
    });
    for (i, (id, out)) in outs.iter().enumerate() {
        assert_eq!(
            c.ok(out, id),
            format!("run {i}\n"),
            "{}",
            c.diagnose(out, id)
        );
    }
    for (id, _) in &outs {
        let left = c.leftovers(id, &default_cgroup(&c, id));
        assert!(left.is_empty(), "{id}: {left:#?}");
    }
    // And many in a row reuse nothing stale.
    for i in 0..8 {
        let id = format!("seq{i}");
        let out = c.run_expecting(&["--rm"], &id, &["echo", &id], 0, &format!("{id}\n"));
        assert_eq!(c.ok(&out, &id), format!("{id}\n"));
    }
}
