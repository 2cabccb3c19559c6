//! `docker build` and docker-compose 1.29 against berthd's Docker API: a multi-stage build
//! with the classic builder's API, then a three-service app (a web server built from a
//! Dockerfile, a service with a named volume, a client that reaches the web server by service
//! name) brought up, scaled, restarted and taken down with nothing left behind.
//!
//! berthd runs in a network namespace of the test's own; the client reaches the web server
//! over the project's bridge inside it, and the published port is checked on its loopback.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_integration::manager::image;
use berth_integration::manager::tasks::NsDaemon;
use berth_integration::manager::{Berthd, Out};

const NS: &str = "moby";
const BASE: &str = "berth/compose-base:v1";

fn daemon() -> NsDaemon {
    NsDaemon {
        d: Berthd::start_in_netns(&[]).unwrap(),
        ns: NS.to_string(),
    }
}

fn load(d: &Berthd, dir: &Path) {
    let img = image::busybox_applets(
        &format!("docker.io/{BASE}"),
        &["bin/sleep", "bin/echo", "bin/cat", "bin/nc"],
        Vec::new(),
    )
    .unwrap();
    let tar = dir.join("base.tar");
    img.write_docker_archive(&tar).unwrap();
    d.docker(&["load", "-i", tar.to_str().unwrap()]).ok();
}

fn compose(d: &Berthd, dir: &Path, args: &[&str]) -> Out {
    d.compose(dir, "berthapp", args)
}

fn ok(o: Out, what: &str) -> String {
    assert_eq!(o.code, 0, "{what}: {}\n{}", o.stdout, o.stderr);
    o.stdout
}

fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn docker_build_of_a_multi_stage_dockerfile() {
    let d = daemon();
    let dir = tempfile::tempdir().unwrap();
    load(&d, dir.path());
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("msg.txt"), "from-context\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {BASE} AS gen\nARG WHO=nobody\nRUN echo \"made for $WHO\" > /made\n\
             FROM {BASE}\nCOPY --from=gen /made /made\nCOPY msg.txt /msg\nLABEL stage=final\n\
             CMD [\"cat\", \"/made\", \"/msg\"]\n"
        ),
    )
    .unwrap();
    let out = d.docker(&[
        "build",
        "-t",
        "berth/built:v1",
        "--build-arg",
        "WHO=berth",
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("Successfully built"), "{}", out.stdout);
    assert!(
        out.stdout.contains("Successfully tagged berth/built:v1"),
        "{}",
        out.stdout
    );
    let run = d.docker(&["run", "--rm", "berth/built:v1"]);
    assert_eq!(run.ok(), "made for berth\nfrom-context\n");
    let l = d.docker(&[
        "image",
        "inspect",
        "--format",
        "{{index .Config.Labels \"stage\"}}",
        "berth/built:v1",
    ]);
    assert_eq!(l.ok().trim(), "final");
    // -q prints only the ID; a second build is all cache.
    let q = d.docker(&["build", "-q", "-t", "berth/built:v1", ctx.to_str().unwrap()]);
    assert!(
        q.ok().trim().starts_with("sha256:"),
        "{:?} {:?}",
        q.stdout,
        q.stderr
    );
    // A failing RUN is a non-zero exit with the step's error.
    std::fs::write(ctx.join("Dockerfile"), format!("FROM {BASE}\nRUN exit 7\n")).unwrap();
    let bad = d.docker(&["build", ctx.to_str().unwrap()]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains('7'), "{}", bad.stderr);
    // RUN's network (networkmode): a missing one is named; none builds.
    let missing = d.docker(&["build", "--network", "nosuch-net", ctx.to_str().unwrap()]);
    assert_ne!(missing.code, 0);
    assert!(
        missing.stderr.contains("network nosuch-net not found"),
        "{}",
        missing.stderr
    );
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {BASE}\nRUN echo on-none\n"),
    )
    .unwrap();
    let none = d.docker(&["build", "--network", "none", ctx.to_str().unwrap()]);
    assert!(none.ok().contains("on-none"), "{}", none.stdout);
}

#[test]
fn compose_up_scale_restart_and_down_leave_nothing() {
    let d = daemon();
    let dir = tempfile::tempdir().unwrap();
    load(&d, dir.path());
    let app = dir.path();
    std::fs::create_dir_all(app.join("web")).unwrap();
    std::fs::write(
        app.join("web/Dockerfile"),
        format!(
            "FROM {BASE}\nRUN echo hello-from-web > /index\n\
             CMD [\"sh\", \"-c\", \"while true; do cat /index | nc -l -p 80; done\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        app.join("docker-compose.yml"),
        format!(
            r#"version: "3.8"
services:
  web:
    build: ./web
    image: berthapp-web:latest
    ports:
      - "127.0.0.1:18490:80"
  store:
    image: {BASE}
    user: root
    group_add:
      - "777"
    volumes:
      - data:/data
    command: sh -c "echo stored > /data/f; sleep 1000"
  client:
    image: {BASE}
    depends_on:
      - web
    environment:
      - TARGET=web
    command: sh -c "while true; do nc $$TARGET 80; sleep 1; done"
volumes:
  data:
"#
        ),
    )
    .unwrap();
    ok(compose(&d, app, &["build"]), "compose build");
    ok(compose(&d, app, &["up", "-d"]), "compose up");
    let ps = ok(compose(&d, app, &["ps"]), "compose ps");
    for svc in ["berthapp_web_1", "berthapp_store_1", "berthapp_client_1"] {
        assert!(ps.contains(svc), "{svc} missing:\n{ps}");
    }
    assert_eq!(ps.matches(" Up ").count(), 3, "{ps}");
    // The client reaches the web server by its service name.
    until("the client's answer", 30, || {
        compose(&d, app, &["logs", "client"])
            .stdout
            .contains("hello-from-web")
    });
    // The published port, on berthd's loopback.
    until("the published port", 10, || {
        d.in_netns(&["busybox", "nc", "127.0.0.1", "18490"])
            .stdout
            .contains("hello-from-web")
    });
    // The named volume holds what the store service wrote (read through compose exec).
    let v = d.docker(&["volume", "ls", "-q"]);
    assert!(v.ok().contains("berthapp_data"), "{}", v.stdout);
    // Several times: a quick process's output once came with the 101's head, where
    // docker-py never reads it (compose exec then printed nothing).
    for _ in 0..5 {
        let got = ok(
            compose(&d, app, &["exec", "-T", "store", "cat", "/data/f"]),
            "compose exec",
        );
        assert_eq!(got, "stored\n");
    }
    // The service's user (a name) and group_add, which its exec inherits.
    let ids = ok(
        compose(
            &d,
            app,
            &["exec", "-T", "store", "sh", "-c", "id -u; id -G"],
        ),
        "compose exec id",
    );
    assert_eq!(ids, "0\n0 777\n");
    // Scale the client, restart everything.
    ok(
        compose(&d, app, &["up", "-d", "--scale", "client=2"]),
        "compose scale",
    );
    let ps = d.docker(&["ps", "--format", "{{.Names}}"]);
    assert!(ps.ok().contains("berthapp_client_2"), "{}", ps.stdout);
    ok(compose(&d, app, &["restart", "-t", "1"]), "compose restart");
    let up = d.docker(&["ps", "-q"]);
    assert_eq!(up.ok().lines().count(), 4, "{}", up.stdout);
    // down -v: containers, the project network and the volume are gone.
    ok(compose(&d, app, &["down", "-v", "-t", "1"]), "compose down");
    assert_eq!(d.docker(&["ps", "-aq"]).ok().trim(), "");
    assert_eq!(d.docker(&["volume", "ls", "-q"]).ok().trim(), "");
    let nets = d.docker(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(!nets.ok().contains("berthapp"), "{}", nets.stdout);
    let snaps = d.ctr(NS, &["snapshots", "ls"]);
    assert!(!snaps.ok().contains("Active"), "{}", snaps.stdout);
}
