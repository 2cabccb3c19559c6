//! Containers through the Docker Engine API, driven by Debian's unmodified docker CLI 20.10:
//! `run -d --name -p -e --restart`, `run --rm` attached (output, exit code, removal), ps with
//! filters, logs, inspect with --format, stop, start, restart, kill, wait, pause, unpause,
//! rename, top, rm -f; the same containers seen by `berth -n moby` and ctr; restart policies,
//! also across a berthd crash (SIGKILL); bad input with Docker's codes and messages.
//!
//! berthd runs in a network namespace of the test's own: published ports live on its
//! loopback, reached with nsenter; nothing leaves it.

use std::path::Path;
use std::time::Duration;

use berth_integration::manager::image;
use berth_integration::manager::tasks::NsDaemon;
use berth_integration::manager::{until, Berthd};

const NS: &str = "moby";
const IMAGE: &str = "berth/ctr-test:v1";

fn daemon() -> NsDaemon {
    NsDaemon {
        d: Berthd::start_in_netns(&[]).unwrap(),
        ns: NS.to_string(),
    }
}

/// Loads a busybox image (with `sh`, `sleep`, `echo`, `nc`) through `docker load`.
fn load(d: &Berthd, dir: &Path) {
    let img = image::busybox_applets(
        &format!("docker.io/{IMAGE}"),
        &["bin/sleep", "bin/echo", "bin/nc"],
        vec![image::Entry::File("hello", 0o644, b"hi\n".to_vec())],
    )
    .unwrap();
    let tar = dir.join("image.tar");
    img.write_docker_archive(&tar).unwrap();
    d.docker(&["load", "-i", tar.to_str().unwrap()]).ok();
}

fn state(d: &Berthd, name: &str) -> String {
    d.docker(&["inspect", "--format", "{{.State.Status}}", name])
        .stdout
        .trim()
        .to_string()
}

#[test]
fn run_detached_ps_logs_stop_start_restart_rename_rm() {
    let d = daemon();
    let dir = tempfile::tempdir().unwrap();
    load(&d, dir.path());
    let out = d.docker(&[
        "run",
        "-d",
        "--name",
        "web",
        "-e",
        "GREETING=pong",
        "-p",
        "127.0.0.1:18480:80",
        "--label",
        "tier=front",
        IMAGE,
        "sh",
        "-c",
        "echo started; echo warning >&2; while true; do echo $GREETING | nc -l -p 80; done",
    ]);
    let id = out.ok().trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    until("the server", 10, || {
        d.in_netns(&["busybox", "nc", "127.0.0.1", "18480"])
            .stdout
            .contains("pong")
    });
    // ps: running, with the name, port and label filters of the CLI.
    let ps = d.docker(&["ps", "--format", "{{.Names}}|{{.Status}}|{{.Ports}}"]);
    let line = ps.ok().trim().to_string();
    assert!(line.starts_with("web|Up "), "{line}");
    assert!(line.contains("127.0.0.1:18480->80/tcp"), "{line}");
    let f = d.docker(&["ps", "-q", "--no-trunc", "--filter", "label=tier=front"]);
    assert_eq!(f.ok().trim(), id);
    let f = d.docker(&["ps", "-q", "--filter", "name=nope"]);
    assert_eq!(f.ok().trim(), "");
    // The same container from berth's and ctr's side.
    let ls = d.berth(NS, &["containers", "ls"]);
    assert!(ls.ok().contains(&id), "{}", ls.stdout);
    // Logs on their streams.
    let logs = d.docker(&["logs", "web"]);
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    assert!(logs.stdout.contains("started"), "{}", logs.stdout);
    assert!(logs.stderr.contains("warning"), "{}", logs.stderr);
    // The last record is the stderr one; -t puts its time first.
    let tail = d.docker(&["logs", "--tail", "1", "-t", "web"]);
    assert_eq!(tail.ok(), "");
    assert!(tail.stderr.starts_with("20"), "{}", tail.stderr);
    assert!(
        tail.stderr.trim_end().ends_with(" warning"),
        "{}",
        tail.stderr
    );
    // inspect --format
    let i = d.docker(&[
        "inspect",
        "--format",
        "{{.Name}} {{.State.Running}} {{.Config.Image}} {{index .Config.Labels \"tier\"}} {{(index (index .NetworkSettings.Ports \"80/tcp\") 0).HostPort}}",
        "web",
    ]);
    assert_eq!(i.ok().trim(), format!("/web true {IMAGE} front 18480"));
    let env = d.docker(&["inspect", "--format", "{{json .Config.Env}}", "web"]);
    assert!(env.ok().contains("GREETING=pong"), "{}", env.stdout);
    // top lists the shell.
    let top = d.docker(&["top", "web"]);
    assert!(top.ok().contains("sh -c"), "{}", top.stdout);
    // pause / unpause
    d.docker(&["pause", "web"]).ok();
    assert_eq!(state(&d, "web"), "paused");
    d.docker(&["unpause", "web"]).ok();
    assert_eq!(state(&d, "web"), "running");
    // stop: SIGTERM is ignored by the loop's sh? No: sh dies on TERM; wait returns its code.
    d.docker(&["stop", "-t", "2", "web"]).ok();
    assert_eq!(state(&d, "web"), "exited");
    let ps = d.docker(&["ps", "-a", "--format", "{{.Names}}|{{.Status}}"]);
    assert!(ps.ok().contains("web|Exited ("), "{}", ps.stdout);
    assert_eq!(d.docker(&["ps", "-q"]).ok().trim(), "");
    assert_eq!(
        d.docker(&["ps", "-aq", "--filter", "status=exited"])
            .ok()
            .trim(),
        &id[..12]
    );
    // The port is closed while it is stopped.
    assert!(!d
        .in_netns(&["busybox", "nc", "127.0.0.1", "18480"])
        .stdout
        .contains("pong"));
    // start again, restart, and the server answers each time.
    d.docker(&["start", "web"]).ok();
    assert_eq!(state(&d, "web"), "running");
    d.docker(&["restart", "-t", "1", "web"]).ok();
    assert_eq!(state(&d, "web"), "running");
    until("the server after restart", 10, || {
        d.in_netns(&["busybox", "nc", "127.0.0.1", "18480"])
            .stdout
            .contains("pong")
    });
    // kill and wait: the exit code is the signal's.
    d.docker(&["kill", "web"]).ok();
    let w = d.docker(&["wait", "web"]);
    assert_eq!(w.ok().trim(), "137");
    // rename, then rm -f by the new name; a running one needs -f.
    d.docker(&["rename", "web", "web2"]).ok();
    d.docker(&["start", "web2"]).ok();
    let rm = d.docker(&["rm", "web2"]);
    assert_ne!(rm.code, 0);
    assert!(
        rm.stderr.contains("You cannot remove a running container"),
        "{}",
        rm.stderr
    );
    d.docker(&["rm", "-f", "web2"]).ok();
    assert_eq!(d.docker(&["ps", "-aq"]).ok().trim(), "");
    assert!(!d.berth(NS, &["containers", "ls"]).ok().contains(&id));
    let snaps = d.ctr(NS, &["snapshots", "ls"]);
    assert!(!snaps.ok().contains(&id), "{}", snaps.stdout);
}

#[test]
fn run_attached_streams_output_and_exit_code_and_rm_removes() {
    let d = daemon();
    let dir = tempfile::tempdir().unwrap();
    load(&d, dir.path());
    let out = d.docker(&[
        "run",
        "--rm",
        "--name",
        "once",
        IMAGE,
        "sh",
        "-c",
        "echo to-out; echo to-err >&2; cat /hello; exit 3",
    ]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(out.stdout, "to-out\nhi\n");
    assert_eq!(out.stderr.trim(), "to-err");
    until("the removal", 10, || {
        d.docker(&["ps", "-aq"]).stdout.trim().is_empty()
    });
    // Without --rm the container stays, exited with its code.
    let out = d.docker(&["run", "--name", "kept", IMAGE, "echo", "done"]);
    assert_eq!(out.ok(), "done\n");
    let i = d.docker(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        "kept",
    ]);
    assert_eq!(i.ok().trim(), "exited 0");
    // A missing executable: docker's 127-style failure, and a clear message.
    let out = d.docker(&["run", "--rm", IMAGE, "/no/such/binary"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("/no/such/binary"), "{}", out.stderr);
    d.docker(&["rm", "kept"]).ok();
    d.docker(&["container", "prune", "-f"]).ok();
    assert_eq!(d.docker(&["ps", "-aq"]).ok().trim(), "");
}

#[test]
fn restart_policies_and_a_berthd_crash() {
    let mut d = daemon();
    let dir = tempfile::tempdir().unwrap();
    load(&d, dir.path());
    // on-failure:2 gives up after two restarts.
    d.docker(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        IMAGE,
        "sh",
        "-c",
        "exit 4",
    ])
    .ok();
    until("two restarts", 20, || {
        d.docker(&[
            "inspect",
            "--format",
            "{{.RestartCount}} {{.State.Status}}",
            "flaky",
        ])
        .stdout
        .trim()
            == "2 exited"
    });
    // always: a container whose process dies comes back.
    d.docker(&[
        "run",
        "-d",
        "--name",
        "svc",
        "--restart",
        "always",
        "-p",
        "127.0.0.1:18481:80",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    d.docker(&["run", "-d", "--name", "plain", IMAGE, "sleep", "1000"])
        .ok();
    let pid = d
        .docker(&["inspect", "--format", "{{.State.Pid}}", "svc"])
        .ok()
        .trim()
        .parse::<i32>()
        .unwrap();
    // berthd crashes; while it is down the restart-always container's process dies.
    d.d.crash();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    d.d.restart().unwrap();
    until("svc running again", 20, || state(&d, "svc") == "running");
    let pid2 = d
        .docker(&["inspect", "--format", "{{.State.Pid}}", "svc"])
        .ok()
        .trim()
        .parse::<i32>()
        .unwrap();
    assert_ne!(pid, pid2);
    // Names, ports and policies are kept; the plain container kept running all along.
    let i = d.docker(&[
        "inspect",
        "--format",
        "{{.Name}} {{.HostConfig.RestartPolicy.Name}} {{(index (index .NetworkSettings.Ports \"80/tcp\") 0).HostPort}}",
        "svc",
    ]);
    assert_eq!(i.ok().trim(), "/svc always 18481");
    assert_eq!(state(&d, "plain"), "running");
    // stop keeps an always container down.
    d.docker(&["stop", "-t", "1", "svc"]).ok();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(state(&d, "svc"), "exited");
    d.docker(&["rm", "-f", "svc", "plain", "flaky"]).ok();
}

#[test]
fn bad_input_gets_dockers_codes_and_messages() {
    let d = daemon();
    let dir = tempfile::tempdir().unwrap();
    load(&d, dir.path());
    let out = d.docker(&["inspect", "--type", "container", "nope"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("No such container: nope"),
        "{}",
        out.stderr
    );
    let out = d.docker(&["stop", "nope"]);
    assert!(
        out.stderr.contains("No such container: nope"),
        "{}",
        out.stderr
    );
    d.docker(&["create", "--name", "taken", IMAGE, "true"]).ok();
    let out = d.docker(&["create", "--name", "taken", IMAGE, "true"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("is already in use by container"),
        "{}",
        out.stderr
    );
    // Options berthd does not do are refused by name, and leave nothing behind.
    for (flag, field) in [
        (vec!["--pid", "host"], "PidMode"),
        (vec!["--device", "/dev/null"], "Devices"),
        (vec!["--log-driver", "syslog"], "syslog"),
    ] {
        let mut args = vec!["create"];
        args.extend(flag.iter().copied());
        args.extend([IMAGE, "true"]);
        let out = d.docker(&args);
        assert_ne!(out.code, 0, "{flag:?}");
        assert!(out.stderr.contains(field), "{flag:?}: {}", out.stderr);
        assert!(out.stderr.contains("not supported"), "{}", out.stderr);
    }
    // A user name is taken at create and resolved at start, as by dockerd (docker_user.rs).
    d.docker(&[
        "create", "--name", "named", "--user", "nobody", IMAGE, "true",
    ])
    .ok();
    let out = d.docker(&["start", "named"]);
    assert!(
        out.stderr.contains("unable to find user nobody"),
        "{}",
        out.stderr
    );
    d.docker(&["rm", "named"]).ok();
    let out = d.docker(&["create", "--name", "-bad", IMAGE, "true"]);
    assert!(
        out.stderr.contains("Invalid container name"),
        "{}",
        out.stderr
    );
    // As with dockerd, a missing network is found at start (a 404 naming it).
    d.docker(&[
        "create",
        "--name",
        "lost",
        "--network",
        "nonet",
        IMAGE,
        "true",
    ])
    .ok();
    let out = d.docker(&["start", "lost"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("nonet"), "{}", out.stderr);
    d.docker(&["rm", "lost"]).ok();
    let out = d.docker(&["create", "berth/missing:v9", "true"]);
    assert_ne!(out.code, 0);
    let out = d.docker(&["kill", "taken"]);
    assert!(out.stderr.contains("is not running"), "{}", out.stderr);
    // Only the one good container exists; no volumes or snapshots were left by the failures.
    assert_eq!(d.docker(&["ps", "-aq"]).ok().lines().count(), 1);
    assert_eq!(d.docker(&["volume", "ls", "-q"]).ok().trim(), "");
    d.docker(&["rm", "taken"]).ok();
    let snaps = d.ctr(NS, &["snapshots", "ls"]);
    assert!(
        !snaps.ok().contains("Active"),
        "a snapshot was left: {}",
        snaps.stdout
    );
}

#[test]
fn a_container_whose_supervisor_died_is_still_seen_to_exit() {
    let d = daemon();
    let dir = tempfile::tempdir().unwrap();
    load(&d, dir.path());
    d.docker(&["run", "-d", "--name", "lone", IMAGE, "sleep", "1000"])
        .ok();
    let pid: i32 = d
        .docker(&["inspect", "--format", "{{.State.Pid}}", "lone"])
        .ok()
        .trim()
        .parse()
        .unwrap();
    let shims =
        berth_integration::manager::tasks::supervisors_under(&d.state().join("tasks").join(NS));
    assert_eq!(shims.len(), 1, "{shims:?}");
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    kill(Pid::from_raw(shims[0]), Signal::SIGKILL).unwrap();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    // berthd's wait falls back to the runtime's view; the exit code is unknown (255).
    until("the exit without a supervisor", 20, || {
        state(&d, "lone") == "exited"
    });
    // The runtime's "stopped" can show a moment before the monitor's poll records the exit
    // code: wait for that record, then it must be 255 (and stay so).
    let code = || {
        d.docker(&["inspect", "--format", "{{.State.ExitCode}}", "lone"])
            .ok()
            .trim()
            .to_string()
    };
    until("the exit code recorded", 10, || code() != "0");
    assert_eq!(code(), "255");
    d.docker(&["rm", "lone"]).ok();
}
