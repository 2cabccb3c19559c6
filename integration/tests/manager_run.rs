//! `berth run` against berthd: output and exit code passed through, the image config's
//! command and environment, limits read back from the kernel, and bad input cleaned up.

use berth_integration::manager::image::{self, Entry, Image, Layer};
use berth_integration::manager::{mounts_under, unique, Berthd};

const IMAGE: &str = "docker.io/berth/berth-run:v1";

/// berthd for one test's namespace, cleaned up on drop.
use berth_integration::manager::tasks::NsDaemon as Daemon;

fn daemon(ns: &str) -> Daemon {
    let d = Berthd::start().unwrap();
    let mut entries = vec![Entry::Dir("bin", 0o755)];
    for a in ["bin/echo", "bin/sleep", "bin/true", "bin/env"] {
        entries.push(Entry::Symlink(a, "busybox"));
    }
    entries.push(Entry::Dir("etc", 0o755));
    entries.push(Entry::File(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n".to_vec(),
    ));
    let img = Image::new(
        IMAGE,
        vec![
            image::base_layer().unwrap(),
            Layer::build(&entries).unwrap(),
        ],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("i.tar");
    img.write_oci_archive(&tar).unwrap();
    d.ctr(ns, &["images", "import", tar.to_str().unwrap()]).ok();
    Daemon {
        d,
        ns: ns.to_string(),
    }
}

/// SIGKILLs a detached container's task (its exit code must be 137), then removes task and
/// container.
#[track_caller]
fn kill_and_remove(d: &Berthd, ns: &str, id: &str) {
    d.berth(ns, &["tasks", "kill", "-s", "KILL", id]).ok();
    assert_eq!(d.berth(ns, &["tasks", "wait", id]).code, 137);
    d.berth(ns, &["tasks", "rm", id]).ok();
    d.berth(ns, &["containers", "rm", id]).ok();
}

/// Nothing left of namespace `ns`: no task bundle, no mount, no container, no snapshot but the
/// image's.
#[track_caller]
fn assert_clean(d: &Berthd, ns: &str) {
    let tasks = d.state().join("tasks").join(ns);
    let left: Vec<_> = std::fs::read_dir(&tasks)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "bundles left: {left:?}");
    assert!(mounts_under(&d.state().join("tasks")).is_empty());
    assert_eq!(d.ctr(ns, &["containers", "ls", "-q"]).ok(), "");
    let snaps = d.ctr(ns, &["snapshots", "ls"]).ok().to_string();
    assert!(!snaps.contains("Active"), "{snaps}");
}

#[test]
fn berth_run_rm_prints_output_and_returns_the_exit_code() {
    let ns = unique("brun");
    let d = daemon(&ns);
    let out = d.berth(&ns, &["run", "--rm", IMAGE, &unique("c"), "echo", "hi"]);
    assert_eq!(out.ok(), "hi\n");
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            IMAGE,
            &unique("c"),
            "sh",
            "-c",
            "echo oops >&2; exit 42",
        ],
    );
    assert_eq!(out.code, 42, "{out:?}");
    assert_eq!(out.stderr, "oops\n");
    // The image's Env plus --env; the image's Cmd when none is given is /bin/sh (reads nothing).
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "--env",
            "GREETING=hello",
            IMAGE,
            &unique("c"),
            "env",
        ],
    );
    let env = out.ok();
    assert!(env.contains("PATH=/bin\n"), "{env}");
    assert!(env.contains("GREETING=hello\n"), "{env}");
    // --rm: the writable layer is a volatile overlay (no sync of the host's disk at unmount);
    // a container that is kept has a durable one.
    let root_mount = "busybox grep ' / / ' /proc/self/mountinfo";
    let out = d.berth(
        &ns,
        &["run", "--rm", IMAGE, &unique("c"), "sh", "-c", root_mount],
    );
    assert!(
        out.ok().contains("overlay") && out.ok().contains("volatile"),
        "{out:?}"
    );
    let kept = unique("c");
    let out = d.berth(&ns, &["run", IMAGE, &kept, "sh", "-c", root_mount]);
    assert!(
        out.ok().contains("overlay") && !out.ok().contains("volatile"),
        "{out:?}"
    );
    d.berth(&ns, &["containers", "rm", &kept]).ok();
    // --user NAME: berthd resolves it in the container's /etc/passwd (HOME too).
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "--user",
            "app",
            IMAGE,
            &unique("c"),
            "sh",
            "-c",
            "busybox id -u; busybox id -g; echo $HOME",
        ],
    );
    assert_eq!(out.ok(), "1000\n1000\n/home/app\n");
    assert_clean(&d, &ns);
}

#[test]
fn berth_run_applies_docker_default_seccomp_profile_unless_unconfined() {
    let ns = unique("bsec");
    let d = daemon(&ns);
    // An unprivileged user namespace needs no capability, so only the profile refuses it.
    let script = "busybox grep Seccomp: /proc/self/status; \
                  busybox unshare -U true 2>/dev/null && echo allowed || echo refused";
    let out = d.berth(
        &ns,
        &["run", "--rm", IMAGE, &unique("c"), "sh", "-c", script],
    );
    assert_eq!(out.ok(), "Seccomp:\t2\nrefused\n");
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "--security-opt",
            "seccomp=unconfined",
            IMAGE,
            &unique("c"),
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(out.ok(), "Seccomp:\t0\nallowed\n");
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "--security-opt",
            "apparmor=x",
            IMAGE,
            &unique("c"),
            "true",
        ],
    );
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("--security-opt \"apparmor=x\""),
        "{out:?}"
    );
    assert_clean(&d, &ns);
}

#[test]
fn berth_run_init_and_privileged() {
    let ns = unique("binit");
    let d = daemon(&ns);
    // --init: PID 1 is berth-init with the command after it; the command is its child and
    // its exit code comes back through it.
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "--init",
            IMAGE,
            &unique("c"),
            "sh",
            "-c",
            "echo $$ $PPID; cat /proc/1/cmdline; exit 3",
        ],
    );
    assert_eq!(out.code, 3, "{out:?}");
    let mut lines = out.stdout.splitn(2, '\n');
    let ids: Vec<&str> = lines.next().unwrap().split(' ').collect();
    assert_ne!(ids[0], "1", "{}", out.stdout);
    assert_eq!(ids[1], "1", "{}", out.stdout);
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("/sbin/docker-init\0--\0sh\0-c\0"),
        "{:?}",
        out.stdout
    );
    // --privileged: every capability berthd holds (its bounding set, as this test's).
    let bounding = berth_integration::cap_bounding();
    let caps = |extra: &[&str]| {
        let c = unique("c");
        let mut args = vec!["run", "--rm"];
        args.extend(extra);
        args.extend([IMAGE, c.as_str(), "sh", "-c", "cat /proc/self/status"]);
        let out = d.berth(&ns, &args);
        out.ok()
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(caps(&["--privileged"]), bounding);
    assert_eq!(caps(&[]), "00000000a80425fb");
    assert_clean(&d, &ns);
}

#[test]
fn berth_run_limits_are_read_back_from_the_kernel() {
    let ns = unique("blim");
    let d = daemon(&ns);
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "--memory",
            "50331648",
            "--pids-limit",
            "33",
            IMAGE,
            &unique("c"),
            "sh",
            "-c",
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max",
        ],
    );
    assert_eq!(out.ok(), "50331648\n33\n");
    assert_clean(&d, &ns);
}

#[test]
fn berth_run_bad_input_is_refused_and_cleaned() {
    let ns = unique("bbad");
    let d = daemon(&ns);
    let out = d.berth(&ns, &["run", "--rm", IMAGE, &unique("c"), "no-such-cmd"]);
    assert_eq!(out.code, 127, "{out:?}");
    assert!(out.stderr.contains("executable file not found"), "{out:?}");
    assert_clean(&d, &ns);
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "docker.io/berth/absent:v1",
            &unique("c"),
            "true",
        ],
    );
    assert!(out.err().contains("not found"), "{out:?}");
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "--user",
            "nobody",
            IMAGE,
            &unique("c"),
            "true",
        ],
    );
    assert!(
        out.err()
            .contains("unable to find user nobody: no matching entries in passwd file"),
        "{out:?}"
    );
    assert_clean(&d, &ns);
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "--runtime",
            "/bin/false",
            IMAGE,
            &unique("c"),
            "true",
        ],
    );
    assert_ne!(out.code, 0, "{out:?}");
    assert_clean(&d, &ns);
}

#[test]
fn berth_detached_then_tasks_and_containers_commands() {
    let ns = unique("bdet");
    let d = daemon(&ns);
    let id = unique("c");
    let out = d.berth(&ns, &["run", "-d", IMAGE, &id, "sleep", "1000"]);
    assert_eq!(out.ok().trim(), id);
    let guard = Kill {
        d: &d,
        ns: &ns,
        id: &id,
    };
    let ls = d.berth(&ns, &["--format", "json", "tasks", "ls"]).json();
    assert_eq!(ls[0]["id"], id.as_str());
    assert_eq!(ls[0]["status"], "RUNNING");
    let pid = ls[0]["pid"].as_u64().unwrap();
    let ps = d.berth(&ns, &["tasks", "ps", &id]).ok().to_string();
    assert!(ps.lines().any(|l| l.trim() == pid.to_string()), "{ps}");
    d.berth(&ns, &["tasks", "pause", &id]).ok();
    let ls = d.berth(&ns, &["--format", "json", "tasks", "ls"]).json();
    assert_eq!(ls[0]["status"], "PAUSED");
    d.berth(&ns, &["tasks", "resume", &id]).ok();
    let info = d.berth(&ns, &["containers", "info", &id]).json();
    assert_eq!(info["image"], IMAGE);
    assert_eq!(info["spec"]["process"]["args"][0], "sleep");
    // rm of a running task is refused with the reason.
    let err = d.berth(&ns, &["tasks", "rm", &id]).err().to_string();
    assert!(err.contains("must be stopped"), "{err}");
    d.berth(&ns, &["tasks", "kill", "-s", "KILL", &id]).ok();
    let out = d.berth(&ns, &["tasks", "wait", &id]);
    assert_eq!(out.code, 137, "{out:?}");
    let out = d.berth(&ns, &["tasks", "rm", &id]);
    assert!(out.ok().contains("exit status 137"), "{out:?}");
    d.berth(&ns, &["containers", "rm", &id]).ok();
    drop(guard);
    assert_clean(&d, &ns);
    // A task command on a container without a task.
    let err = d.berth(&ns, &["tasks", "kill", &id]).err().to_string();
    assert!(err.contains("not found"), "{err}");
}

/// Kills and removes a test's container even when the test fails.
struct Kill<'a> {
    d: &'a Berthd,
    ns: &'a str,
    id: &'a str,
}

impl Drop for Kill<'_> {
    fn drop(&mut self) {
        let _ = self.d.ctr(self.ns, &["task", "kill", "-s", "9", self.id]);
        let _ = self.d.ctr(self.ns, &["task", "rm", "-f", self.id]);
        let _ = self.d.ctr(self.ns, &["containers", "rm", self.id]);
    }
}

#[test]
fn berth_events_shows_a_runs_events() {
    let ns = unique("bev");
    let d = daemon(&ns);
    let filter = format!("namespace=={ns}");
    let mut ev = d
        .berth_command(None, &["events", &filter])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let id = unique("c");
    d.berth(&ns, &["run", "--rm", IMAGE, &id, "true"]).ok();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = ev.kill();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut ev.stdout.take().unwrap(), &mut text).unwrap();
    let _ = ev.wait();
    for topic in [
        "/containers/create",
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
        "/containers/delete",
    ] {
        assert!(
            text.lines().any(|l| l.contains(&format!(" {ns} {topic} "))),
            "{topic} missing:\n{text}"
        );
    }
}

#[test]
fn berth_tasks_exec_and_metrics_on_a_detached_container() {
    let ns = unique("bexec");
    let d = daemon(&ns);
    let id = unique("c");
    d.berth(
        &ns,
        &[
            "run",
            "-d",
            "--memory",
            "64m",
            "--pids-limit",
            "20",
            IMAGE,
            &id,
            "sleep",
            "100",
        ],
    )
    .ok();
    // Output on both streams and the exit code pass through.
    let out = d.berth(
        &ns,
        &[
            "tasks",
            "exec",
            &id,
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");
    // A background child that keeps the output open does not keep berth waiting.
    let t0 = std::time::Instant::now();
    let out = d.berth(
        &ns,
        &[
            "tasks",
            "exec",
            &id,
            "sh",
            "-c",
            "sleep 30 & echo bg; exit 4",
        ],
    );
    assert_eq!((out.code, out.stdout.as_str()), (4, "bg\n"), "{out:?}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        t0.elapsed()
    );
    // The flags shape the process.
    let out = d.berth(
        &ns,
        &[
            "tasks",
            "exec",
            "--user",
            "1000:1000",
            "--cwd",
            "/tmp",
            "--env",
            "A=b",
            &id,
            "sh",
            "-c",
            "id -u; pwd; echo $A",
        ],
    );
    assert_eq!(out.ok(), "1000\n/tmp\nb\n");
    // A command the image lacks: Docker's 127 and a clear message.
    let out = d.berth(&ns, &["tasks", "exec", &id, "no-such-command"]);
    assert_eq!(out.code, 127, "{out:?}");
    assert!(out.stderr.contains("no-such-command"), "{out:?}");
    // Metrics read back the limits from the kernel.
    let m = d
        .berth(&ns, &["--format", "json", "tasks", "metrics", &id])
        .json();
    assert_eq!(m["memory"]["limit"], 64 << 20, "{m}");
    assert_eq!(m["pids"]["limit"], 20, "{m}");
    assert!(m["memory"]["usage"].as_u64().unwrap_or(0) > 0, "{m}");
    assert!(m["pids"]["current"].as_u64().unwrap_or(0) >= 1, "{m}");
    // Starting a task that runs already is refused.
    let e = d.berth(&ns, &["tasks", "start", &id]).err().to_string();
    assert!(e.contains(&id), "{e}");
    kill_and_remove(&d, &ns, &id);
    let e = d.berth(&ns, &["tasks", "metrics", &id]).err().to_string();
    assert!(e.contains("no metrics"), "{e}");
    assert_clean(&d, &ns);
}

#[test]
fn berth_logs_of_a_detached_container_are_kept_bounded_and_removed_with_it() {
    let ns = unique("blogs");
    // A small bound so that rotation happens: 4 KiB per file.
    let d = Berthd::start_with_config("log_max_size = 4096\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("i.tar");
    image::busybox_single(IMAGE)
        .unwrap()
        .write_oci_archive(&tar)
        .unwrap();
    d.berth(&ns, &["images", "import", tar.to_str().unwrap()])
        .ok();
    let id = unique("c");
    // 300 numbered lines (~50 bytes each as records: over 4 KiB), stderr too, then a pause
    // so that `logs -f` starts while the container still runs.
    let script = "echo start; echo to-stderr >&2; sleep 1; \
                  i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); done; echo end";
    d.berth(&ns, &["run", "-d", IMAGE, &id, "sh", "-c", script])
        .ok();
    let out = d.berth(&ns, &["logs", "-f", &id]);
    let text = out.ok().to_string();
    // Followed to the end, in order; stderr on stderr.
    assert!(text.ends_with("line-299\nend\n"), "{text}");
    assert!(out.stderr.contains("to-stderr"), "{out:?}");
    // The files are bounded: the current one and one rotated copy, each under the bound.
    let logs = d.state().join("logs").join(&ns);
    for f in [format!("{id}.log"), format!("{id}.log.1")] {
        let len = std::fs::metadata(logs.join(&f)).unwrap().len();
        assert!(len <= 4096, "{f}: {len} bytes");
    }
    // --tail after the task is gone.
    d.berth(&ns, &["tasks", "rm", &id]).ok();
    assert_eq!(
        d.berth(&ns, &["logs", "--tail", "2", &id]).ok(),
        "line-299\nend\n"
    );
    // Removing the container removes its log.
    d.berth(&ns, &["containers", "rm", &id]).ok();
    assert!(!logs.join(format!("{id}.log")).exists());
    assert!(!logs.join(format!("{id}.log.1")).exists());
    let e = d.berth(&ns, &["logs", &id]).err().to_string();
    assert!(e.contains("not found"), "{e}");
    // A container run in the foreground has no log, and says so.
    let id2 = unique("c");
    d.berth(&ns, &["run", IMAGE, &id2, "sh", "-c", "exit 0"])
        .ok();
    let e = d.berth(&ns, &["logs", &id2]).err().to_string();
    assert!(e.contains("has no log"), "{e}");
}

/// Runs `berth ... ARGS` inside `script`, so that berth's stdin and stdout are a terminal of
/// 91 columns and 27 rows; `input` is typed into it. Returns what the terminal showed and the
/// exit code.
fn berth_on_a_terminal(d: &Berthd, ns: &str, args: &str, input: &str) -> (String, i32) {
    let cmd = format!(
        "stty cols 91 rows 27; exec {} --address {} -n {ns} {args}",
        berth_integration::bins::berth().display(),
        d.socket().display()
    );
    let mut child = std::process::Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        // script ends its input with the terminal's end-of-file character when ours ends;
        // keep ours open until the command is done instead.
        std::mem::forget(stdin);
    }
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).replace('\r', ""),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn berth_run_t_gives_a_terminal_of_the_callers_size_and_its_exit_code() {
    let ns = unique("btty");
    let d = daemon(&ns);
    let id = unique("c");
    let (out, code) = berth_on_a_terminal(
        &d,
        &ns,
        &format!(
            "run --rm -t {IMAGE} {id} sh -c 'busybox tty; busybox stty size; echo TERM=$TERM; \
             echo to-stderr >&2; exit 3'"
        ),
        "",
    );
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("/dev/pts/0\n"), "{out}");
    assert!(out.contains("27 91\n"), "{out}");
    assert!(out.contains("TERM=xterm\n"), "{out}");
    // A terminal has one output stream: stderr arrives on it too.
    assert!(out.contains("to-stderr\n"), "{out}");
    assert_clean(&d, &ns);
}

#[test]
fn berth_run_it_passes_keystrokes_to_the_shell() {
    let ns = unique("bit");
    let d = daemon(&ns);
    let id = unique("c");
    let (out, code) = berth_on_a_terminal(
        &d,
        &ns,
        &format!("run --rm -it {IMAGE} {id} sh"),
        "echo $((6*7))\nexit 4\n",
    );
    assert_eq!(code, 4, "{out}");
    assert!(out.lines().any(|l| l == "42"), "{out}");
    assert_clean(&d, &ns);
}

#[test]
fn berth_tasks_exec_t_and_resize_of_a_detached_terminal_container() {
    let ns = unique("bext");
    let d = daemon(&ns);
    // Docker-style 64-hex ids: the bundle path alone is near a unix socket path's limit.
    let id = format!("{:0>64}", unique("c").replace('-', ""));
    let _g = berth_integration::manager::tasks::Cleanup::new(&d, &ns);
    // -d -t: the shell's terminal output goes to the log; the shell waits on its terminal.
    d.berth(&ns, &["run", "-d", "-t", IMAGE, &id, "sh"]).ok();
    let (out, code) = berth_on_a_terminal(
        &d,
        &ns,
        &format!(
            "tasks exec -t --exec-id exec-{id} {id} sh -c 'busybox tty; busybox stty size; exit 5'"
        ),
        "",
    );
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("/dev/pts/1\n"), "{out}");
    assert!(out.contains("27 91\n"), "{out}");
    let (out, code) = berth_on_a_terminal(
        &d,
        &ns,
        &format!("tasks exec -it {id} sh"),
        "echo $((7*8))\nexit 6\n",
    );
    assert_eq!(code, 6, "{out}");
    assert!(out.lines().any(|l| l == "56"), "{out}");
    // The init is still there, waiting on its terminal.
    let ls = d.berth(&ns, &["--format", "json", "tasks", "ls"]).json();
    assert_eq!(ls[0]["status"], "RUNNING", "{ls}");
    kill_and_remove(&d, &ns, &id);
    assert_clean(&d, &ns);
}

#[test]
fn berth_run_i_passes_stdin_and_its_end() {
    let ns = unique("bin");
    let d = daemon(&ns);
    let mut child = d
        .berth_command(
            Some(&ns),
            &["run", "--rm", "-i", IMAGE, &unique("c"), "sh", "-c"],
        )
        .arg("while read l; do echo \"got $l\"; done; echo eof")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"one\ntwo\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "got one\ngot two\neof\n"
    );
    assert_eq!(out.status.code(), Some(0));
    let e = d
        .berth(&ns, &["run", "-d", "-i", IMAGE, &unique("c"), "true"])
        .err()
        .to_string();
    assert!(e.contains("-i cannot be used with -d"), "{e}");
    let e = d
        .berth(&ns, &["run", "-d", "--rm", IMAGE, &unique("c"), "true"])
        .err()
        .to_string();
    assert!(e.contains("--rm cannot be used with -d"), "{e}");
    // -i -t from a pipe (here /dev/null): Docker's refusal, not a container waiting forever.
    let e = d
        .berth(&ns, &["run", "--rm", "-it", IMAGE, &unique("c"), "sh"])
        .err()
        .to_string();
    assert!(e.contains("not a TTY"), "{e}");
    assert_clean(&d, &ns);
}

#[test]
fn berth_run_passes_signals_to_the_container() {
    let ns = unique("bsig");
    let d = daemon(&ns);
    let mut child = d
        .berth_command(Some(&ns), &["run", "--rm", IMAGE, &unique("c"), "sh", "-c"])
        .arg("trap 'echo got-term; exit 9' TERM; echo ready; while :; do sleep 0.1; done")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "got-term\n");
    assert_eq!(child.wait().unwrap().code(), Some(9));
    assert_clean(&d, &ns);
}

#[test]
fn berth_events_report_the_oom_killer() {
    let ns = unique("boom");
    let d = daemon(&ns);
    let _g = berth_integration::manager::tasks::Cleanup::new(&d, &ns);
    let mut ev = d
        .berth_command(None, &["events", &format!("namespace=={ns}")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (hog, child, calm) = (unique("hog"), unique("child"), unique("calm"));
    // dd's 64 MiB block is more than the 16 MiB limit (the host has no swap): the kernel kills
    // it, as the init (hog) or as a child of the init, which lives on (child).
    for (id, script) in [
        (&hog, "busybox dd if=/dev/zero of=/dev/null bs=64M count=1"),
        (
            &child,
            "busybox dd if=/dev/zero of=/dev/null bs=64M count=1; echo rc=$?; sleep 0.3",
        ),
        (&calm, "busybox dd if=/dev/zero of=/dev/null bs=1M count=1"),
    ] {
        d.berth(
            &ns,
            &[
                "run", "-d", "--memory", "16m", IMAGE, id, "sh", "-c", script,
            ],
        )
        .ok();
    }
    assert_eq!(d.berth(&ns, &["tasks", "wait", &hog]).code, 137);
    assert_eq!(d.berth(&ns, &["tasks", "wait", &child]).code, 0);
    assert!(d.berth(&ns, &["logs", &child]).ok().contains("rc=137"));
    assert_eq!(d.berth(&ns, &["tasks", "wait", &calm]).code, 0);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = ev.kill();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut ev.stdout.take().unwrap(), &mut text).unwrap();
    let _ = ev.wait();
    let ooms: Vec<&str> = text.lines().filter(|l| l.contains("/tasks/oom")).collect();
    for id in [&hog, &child] {
        assert!(
            ooms.iter().any(|l| l.contains(id.as_str())),
            "{id}:\n{text}"
        );
    }
    assert!(!ooms.iter().any(|l| l.contains(calm.as_str())), "{text}");
    for id in [&hog, &child, &calm] {
        d.berth(&ns, &["tasks", "rm", id]).ok();
        d.berth(&ns, &["containers", "rm", id]).ok();
    }
    assert_clean(&d, &ns);
}

#[test]
fn resize_pty_and_close_io_refuse_what_they_cannot_do() {
    use berth_proto::containerd::services::tasks::v1 as pb;
    use berth_proto::containerd::services::tasks::v1::tasks_client::TasksClient;
    let ns = unique("bres");
    let d = daemon(&ns);
    let (plain, tty) = (unique("c"), unique("c"));
    d.berth(&ns, &["run", "-d", IMAGE, &plain, "sleep", "100"])
        .ok();
    d.berth(&ns, &["run", "-d", "-t", IMAGE, &tty, "sh"]).ok();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ch = berth_manager::client::connect(d.socket()).await.unwrap();
        let ic = berth_manager::client::NamespaceInterceptor::new(&ns, None).unwrap();
        let mut c = TasksClient::with_interceptor(ch, ic);
        let resize = |id: &str, width, height| pb::ResizePtyRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
            width,
            height,
        };
        // A task without a terminal: nothing to resize, and it says so.
        let e = c.resize_pty(resize(&plain, 80, 24)).await.unwrap_err();
        assert_eq!(
            e.code(),
            berth_proto::tonic::Code::FailedPrecondition,
            "{e:?}"
        );
        assert!(e.message().contains("no terminal"), "{e:?}");
        // A size no terminal has.
        let e = c.resize_pty(resize(&tty, 70_000, 24)).await.unwrap_err();
        assert_eq!(e.code(), berth_proto::tonic::Code::InvalidArgument, "{e:?}");
        // An unknown container.
        let e = c.resize_pty(resize("nosuch", 80, 24)).await.unwrap_err();
        assert_eq!(e.code(), berth_proto::tonic::Code::NotFound, "{e:?}");
        let e = c
            .close_io(pb::CloseIoRequest {
                container_id: "nosuch".into(),
                exec_id: String::new(),
                stdin: true,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), berth_proto::tonic::Code::NotFound, "{e:?}");
        // The real thing works.
        c.resize_pty(resize(&tty, 100, 30)).await.unwrap();
    });
    let (out, code) = berth_on_a_terminal(
        &d,
        &ns,
        &format!("tasks exec {tty} busybox stty -F /dev/pts/0 size"),
        "",
    );
    assert_eq!((code, out.as_str()), (0, "30 100\n"), "{out}");
    for id in [&plain, &tty] {
        kill_and_remove(&d, &ns, id);
    }
    assert_clean(&d, &ns);
}
