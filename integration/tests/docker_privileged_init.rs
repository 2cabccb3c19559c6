//! `docker run --privileged` and `--init` through the Docker Engine API, driven by Debian's
//! docker CLI: a privileged container can make links and mount filesystems, has every
//! capability and the host's devices, while the same commands fail in a default container;
//! `--init` runs berth-init as PID 1 with the command as its child, which reaps orphans and
//! passes `docker stop`'s SIGTERM on; a missing init is named.
//!
//! berthd runs in a network namespace of the test's own, as in docker_containers.rs.

use std::path::Path;

use berth_integration::manager::image;
use berth_integration::manager::tasks::NsDaemon;
use berth_integration::manager::{until, Berthd};

const NS: &str = "moby";
const IMAGE: &str = "berth/priv-init-test:v1";

fn daemon(env: &[(&str, &str)]) -> NsDaemon {
    NsDaemon {
        d: Berthd::start_in_netns(env).unwrap(),
        ns: NS.to_string(),
    }
}

/// Loads a busybox image with the applets these tests run.
fn load(d: &Berthd, dir: &Path) {
    let img = image::busybox_applets(
        &format!("docker.io/{IMAGE}"),
        &[
            "bin/sleep",
            "bin/echo",
            "bin/ip",
            "bin/mount",
            "bin/grep",
            "bin/ps",
            "bin/mkdir",
        ],
        vec![],
    )
    .unwrap();
    let tar = dir.join("image.tar");
    img.write_docker_archive(&tar).unwrap();
    d.docker(&["load", "-i", tar.to_str().unwrap()]).ok();
}

/// The CapEff a privileged container gets: every capability berthd (root, as this test) may
/// hand on, its bounding set.
fn full_caps() -> String {
    let bnd = berth_integration::cap_bounding();
    assert!(bnd.len() == 16 && bnd != "0000000000000000", "{bnd}");
    bnd
}

#[test]
fn privileged_lifts_the_confinement_and_default_keeps_it() {
    let d = daemon(&[]);
    let dir = tempfile::tempdir().unwrap();
    load(&d, dir.path());
    // A host device outside the runtime's default set.
    let dev = ["/dev/loop-control", "/dev/kmsg"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("the host has /dev/loop-control or /dev/kmsg");
    let script = format!(
        "grep CapEff /proc/self/status; \
         ip link add bv0 type veth peer name bv1 && echo link-made; \
         mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && echo mounted; \
         test -c {dev} && echo has-device; \
         grep ' /sys sysfs ' /proc/mounts"
    );
    let run = |privileged: bool| {
        let mut args = vec!["run", "--rm"];
        if privileged {
            args.push("--privileged");
        }
        args.extend([IMAGE, "sh", "-c", &script]);
        let out = d.docker(&args);
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        out.stdout
    };
    let out = run(true);
    assert!(
        out.contains(&format!("CapEff:\t{}", full_caps())),
        "privileged: {out}"
    );
    for what in ["link-made", "mounted", "has-device", "sysfs rw,"] {
        assert!(out.contains(what), "privileged, no {what:?}: {out}");
    }
    let out = run(false);
    assert!(out.contains("CapEff:\t00000000a80425fb"), "default: {out}");
    for what in ["link-made", "mounted", "has-device", "sysfs rw,"] {
        assert!(!out.contains(what), "default, {what:?}: {out}");
    }
    assert!(out.contains("sysfs ro,"), "default: {out}");
    // inspect shows what was asked for.
    let id = d
        .docker(&["create", "--privileged", IMAGE, "true"])
        .ok()
        .trim()
        .to_string();
    let i = d.docker(&["inspect", "--format", "{{.HostConfig.Privileged}}", &id]);
    assert_eq!(i.ok().trim(), "true");
    d.docker(&["rm", &id]).ok();
}

#[test]
fn init_is_pid_1_reaps_orphans_and_forwards_signals() {
    let d = daemon(&[]);
    let dir = tempfile::tempdir().unwrap();
    load(&d, dir.path());
    // PID 1 is the init, the command its child.
    let out = d.docker(&["run", "--rm", "--init", IMAGE, "ps", "-o", "pid,ppid,args"]);
    let text = out.ok().to_string();
    let lines: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l[0] == "1"
                && l[2..] == ["/sbin/docker-init", "--", "ps", "-o", "pid,ppid,args"]),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l[0] != "1" && l[1] == "1" && l[2] == "ps"),
        "{text}"
    );
    // An orphan that exits is reaped by the init; without it, PID 1 (a sleep) leaves a zombie.
    let orphan = "sh -c 'sleep 2 &'; exec sleep 1000";
    d.docker(&[
        "run", "-d", "--init", "--name", "reaped", IMAGE, "sh", "-c", orphan,
    ])
    .ok();
    d.docker(&["run", "-d", "--name", "zombie", IMAGE, "sh", "-c", orphan])
        .ok();
    let ps = |name: &str| {
        d.docker(&["exec", name, "ps", "-o", "stat,comm"])
            .ok()
            .to_string()
    };
    let zombies = |t: &str| t.lines().filter(|l| l.starts_with('Z')).count();
    let sleeps = |t: &str| t.lines().filter(|l| l.ends_with("sleep")).count();
    until("the orphan's zombie without an init", 20, || {
        zombies(&ps("zombie")) == 1
    });
    // The orphan has exited by now (it started first); with the init it is gone altogether.
    until("the orphan reaped by the init", 20, || {
        let t = ps("reaped");
        zombies(&t) == 0 && sleeps(&t) == 1
    });
    // docker stop's SIGTERM reaches the command (sleep, which does not ignore it as PID 1
    // would): it dies of it, 128+15, rather than being killed at the timeout (137).
    d.docker(&[
        "run", "-d", "--init", "--name", "stopped", IMAGE, "sleep", "1000",
    ])
    .ok();
    d.docker(&["stop", "-t", "30", "stopped"]).ok();
    let i = d.docker(&[
        "inspect",
        "--format",
        "{{.State.ExitCode}} {{.HostConfig.Init}} {{.Path}} {{.Args}}",
        "stopped",
    ]);
    assert_eq!(i.ok().trim(), "143 true sleep [1000]");
    // Without the init, sleep as PID 1 ignores SIGTERM and is killed at the timeout.
    d.docker(&["run", "-d", "--name", "plain", IMAGE, "sleep", "1000"])
        .ok();
    d.docker(&["stop", "-t", "1", "plain"]).ok();
    let i = d.docker(&["inspect", "--format", "{{.State.ExitCode}}", "plain"]);
    assert_eq!(i.ok().trim(), "137");
    d.docker(&["rm", "-f", "reaped", "zombie", "stopped", "plain"])
        .ok();
}

#[test]
fn a_missing_init_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-init");
    let d = daemon(&[("BERTH_INIT", missing.to_str().unwrap())]);
    load(&d, dir.path());
    let out = d.docker(&["run", "--rm", "--init", IMAGE, "true"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains(missing.to_str().unwrap()),
        "{}",
        out.stderr
    );
    // HostConfig.Init must be a boolean.
    let body = format!(r#"{{"Image":"{IMAGE}","Cmd":["true"],"HostConfig":{{"Init":"yes"}}}}"#);
    let (code, _, text) = d.docker_http(
        "POST",
        "/v1.41/containers/create",
        "application/json",
        body.as_bytes(),
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("HostConfig.Init"), "{text}");
}

#[test]
fn exec_privileged_gets_every_capability() {
    let d = daemon(&[]);
    let dir = tempfile::tempdir().unwrap();
    load(&d, dir.path());
    d.docker(&["run", "-d", "--name", "ep", IMAGE, "sleep", "1000"])
        .ok();
    let exec = |privileged: bool, cmd: &[&str]| {
        let mut args = vec!["exec"];
        if privileged {
            args.push("--privileged");
        }
        args.push("ep");
        args.extend_from_slice(cmd);
        d.docker(&args)
    };
    let caps = ["grep", "CapEff", "/proc/self/status"];
    let out = exec(true, &caps);
    assert_eq!(out.ok().trim(), format!("CapEff:\t{}", full_caps()));
    let out = exec(false, &caps);
    assert_eq!(out.ok().trim(), "CapEff:\t00000000a80425fb");
    // What the capabilities allow (CAP_NET_ADMIN, in the container's own network namespace):
    // the privileged exec may, the plain one may not.
    let link = [
        "ip", "link", "add", "pv0", "type", "veth", "peer", "name", "pv1",
    ];
    let out = exec(false, &link);
    assert_ne!(out.code, 0, "{}", out.stdout);
    exec(true, &link).ok();
    let out = exec(false, &["ip", "link", "show", "pv0"]);
    assert!(out.ok().contains("pv0"), "{}", out.stdout);
    d.docker(&["rm", "-f", "ep"]).ok();
}

#[test]
fn compose_init_and_privileged() {
    let d = daemon(&[]);
    let dir = tempfile::tempdir().unwrap();
    load(&d, dir.path());
    std::fs::write(
        dir.path().join("docker-compose.yml"),
        format!(
            "version: \"2.4\"\nservices:\n  \
             boxed:\n    image: {IMAGE}\n    command: sleep 1000\n    init: true\n    \
             privileged: true\n  \
             plain:\n    image: {IMAGE}\n    command: sleep 1000\n"
        ),
    )
    .unwrap();
    let compose = |args: &[&str]| d.compose(dir.path(), "privinit", args);
    let up = compose(&["up", "-d"]);
    assert_eq!(up.code, 0, "{}\n{}", up.stdout, up.stderr);
    // init: true runs berth-init as PID 1, the command its child.
    let pid1 = compose(&["exec", "-T", "boxed", "cat", "/proc/1/cmdline"]);
    assert_eq!(pid1.ok(), "/sbin/docker-init\0--\0sleep\x001000\0");
    let pid1 = compose(&["exec", "-T", "plain", "cat", "/proc/1/cmdline"]);
    assert_eq!(pid1.ok(), "sleep\x001000\0");
    // privileged: true gives the service every capability (its execs too); compose's own
    // exec --privileged gives them to one process of the plain service.
    let caps = |svc: &str, privileged: bool| {
        let mut a = vec!["exec", "-T"];
        if privileged {
            a.push("--privileged");
        }
        a.extend([svc, "grep", "CapEff", "/proc/self/status"]);
        compose(&a).ok().trim().to_string()
    };
    let full = format!("CapEff:\t{}", full_caps());
    assert_eq!(caps("boxed", false), full);
    assert_eq!(caps("plain", false), "CapEff:\t00000000a80425fb");
    assert_eq!(caps("plain", true), full);
    let i = d.docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.Init}} {{.HostConfig.Privileged}}",
        "privinit_boxed_1",
    ]);
    assert_eq!(i.ok().trim(), "true true");
    let down = compose(&["down", "-t", "0"]);
    assert_eq!(down.code, 0, "{}\n{}", down.stdout, down.stderr);
}
