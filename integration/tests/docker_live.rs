//! The interactive and live parts of the Docker Engine API, driven by Debian's unmodified
//! docker CLI 20.10 (and docker-compose 1.29): stdin for `run -i` (its end too), `run -it`
//! under script(1) with the exit code passed through, `attach` sending input (and a client
//! dropped mid-stream), terminal resize read back with `stty size`, health checks (from the
//! request and from the image, `--no-healthcheck`, probe timeouts) in inspect, `ps` and
//! events, compose's `service_healthy`, and `docker events` with since/until and filters;
//! bad input with Docker's codes.
//!
//! berthd runs in a network namespace of the test's own; every test has its own daemon, temp
//! dirs and container names.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_integration::manager::image::{self, Image, Layer};
use berth_integration::manager::tasks::NsDaemon;
use berth_integration::manager::{until, Berthd};
use serde_json::Value;

const IMAGE: &str = "berth/live-test:v1";
/// The same files, with a HEALTHCHECK in the image's config (as a Dockerfile's gives).
const HC_IMAGE: &str = "berth/live-hc:v1";

fn daemon() -> NsDaemon {
    NsDaemon {
        d: Berthd::start_in_netns(&[]).unwrap(),
        ns: "moby".to_string(),
    }
}

fn layers() -> Vec<Layer> {
    let mut entries = vec![image::Entry::Dir("bin", 0o755)];
    for tool in ["sleep", "echo", "tty", "stty", "true", "false", "touch"] {
        entries.push(image::Entry::Symlink(
            Box::leak(format!("bin/{tool}").into_boxed_str()),
            "busybox",
        ));
    }
    vec![
        image::base_layer().unwrap(),
        Layer::build(&entries).unwrap(),
    ]
}

/// Loads [`IMAGE`] and [`HC_IMAGE`] through `docker load`.
fn load(d: &Berthd, dir: &Path) {
    let plain = Image::new(&format!("docker.io/{IMAGE}"), layers()).unwrap();
    let hc = Image::with_config(
        &format!("docker.io/{HC_IMAGE}"),
        layers(),
        serde_json::json!({
            "Cmd": ["/bin/sh"],
            "Env": ["PATH=/bin"],
            "Healthcheck": {
                "Test": ["CMD-SHELL", "echo from-image"],
                "Interval": 1_000_000_000u64,
                "Retries": 1,
            },
        }),
    )
    .unwrap();
    for (i, img) in [plain, hc].iter().enumerate() {
        let tar = dir.join(format!("image{i}.tar"));
        img.write_docker_archive(&tar).unwrap();
        d.docker(&["load", "-i", tar.to_str().unwrap()]).ok();
    }
}

fn inspect(d: &Berthd, name: &str, format: &str) -> String {
    d.docker(&["inspect", "--format", format, name])
        .stdout
        .trim()
        .to_string()
}

/// A raw API request with curl on the Docker socket: status and body.
fn api(d: &Berthd, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
        .arg("--unix-socket")
        .arg(d.docker_socket())
        .arg(format!("http://localhost/v1.41{path}"));
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "-d", b]);
    }
    let o = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A docker CLI process with pipes, killed (by pid) when dropped.
struct Running(Option<Child>);

impl Running {
    fn spawn(d: &Berthd, args: &[&str]) -> Running {
        let child = d
            .docker_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Running(Some(child))
    }

    /// Lines of its stdout, through a channel (read by a thread of their own).
    fn lines(&mut self) -> mpsc::Receiver<String> {
        let out = self.0.as_mut().unwrap().stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { return };
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        rx
    }

    fn write(&mut self, data: &[u8]) {
        let stdin = self.0.as_mut().unwrap().stdin.as_mut().unwrap();
        stdin.write_all(data).unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn line_within(rx: &mpsc::Receiver<String>, what: &str) -> String {
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("no line for {what} within 20 s"))
}

#[test]
fn stdin_tty_attach_and_resize() {
    let d = daemon();
    let dir = tempfile::tempdir().unwrap();
    load(&d, dir.path());
    // run -i: the input reaches the process, and so does its end (cat exits 0).
    let (code, out, err) = d.docker_stdin(&["run", "-i", "--rm", IMAGE, "cat"], b"hi\n");
    assert_eq!((code, out.as_str()), (0, "hi\n"), "{err}");
    let big = vec![b'y'; 200_000];
    let (code, out, err) = d.docker_stdin(
        &[
            "run",
            "-i",
            "--rm",
            IMAGE,
            "sh",
            "-c",
            "cat | wc -c; exit 4",
        ],
        &big,
    );
    assert_eq!((code, out.trim()), (4, "200000"), "{err}");
    until("the --rm containers to go", 20, || {
        d.docker(&["ps", "-aq"]).ok().trim().is_empty()
    });

    // run -it under script(1): a terminal, raw output, the exit code passed through.
    let (code, out, err) = d.docker_on_tty(&format!(
        "run -it --rm {IMAGE} sh -c 'tty; echo tty-ok; exit 3'"
    ));
    assert_eq!(code, 3, "{out} {err}");
    assert!(out.contains("/dev/pts/") && out.contains("tty-ok"), "{out}");
    // Typed input reaches a -it process through its terminal.
    let (code, out, err) = d.docker_typed(
        &format!("run -it --rm {IMAGE} sh -c 'read x; echo got-$x'"),
        "typed\\r",
    );
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("got-typed"), "{out}");

    // Resize: the container's terminal takes the size, as its stty reads it back.
    d.docker(&["run", "-d", "-t", "--name", "rz", IMAGE, "sleep", "1000"])
        .ok();
    let (code, body) = api(&d, "POST", "/containers/rz/resize?h=33&w=101", None);
    assert_eq!(code, 200, "{body}");
    let size = d.docker(&["exec", "rz", "stty", "-F", "/proc/1/fd/0", "size"]);
    assert_eq!(size.ok().trim(), "33 101");
    // Bad input: a size that is not a number; a container without a terminal takes it
    // and nothing happens (as dockerd); one that does not run is a 409.
    let (code, body) = api(&d, "POST", "/containers/rz/resize?h=x&w=1", None);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("invalid value for h"), "{body}");
    d.docker(&["run", "-d", "--name", "notty", IMAGE, "sleep", "1000"])
        .ok();
    let (code, body) = api(&d, "POST", "/containers/notty/resize?h=10&w=10", None);
    assert_eq!(code, 200, "{body}");
    d.docker(&["create", "--name", "idle", "-t", IMAGE, "true"])
        .ok();
    let (code, body) = api(&d, "POST", "/containers/idle/resize?h=10&w=10", None);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("is not running"), "{body}");

    // attach: input to a `cat` started with -i comes back on the output.
    d.docker(&["run", "-d", "-i", "--name", "cat1", IMAGE, "cat"])
        .ok();
    let mut a = Running::spawn(&d, &["attach", "cat1"]);
    let rx = a.lines();
    // The attach is in place once berthd says so in its events; input sent before is kept
    // by the pipe anyway.
    a.write(b"hello\n");
    assert_eq!(line_within(&rx, "the echo of hello"), "hello");
    // The client goes away mid-stream: the container keeps running, berthd keeps serving,
    // and a new attach reaches the same input.
    drop(a);
    assert_eq!(inspect(&d, "cat1", "{{.State.Status}}"), "running");
    let mut b = Running::spawn(&d, &["attach", "cat1"]);
    let rx = b.lines();
    b.write(b"again\n");
    assert_eq!(line_within(&rx, "the echo of again"), "again");
    drop(b);
    assert_eq!(inspect(&d, "cat1", "{{.State.Status}}"), "running");
    d.docker(&["version"]).ok();
    d.docker(&["rm", "-f", "cat1", "rz", "notty", "idle"]).ok();
}

fn health(d: &Berthd, name: &str) -> Value {
    let s = inspect(d, name, "{{json .State.Health}}");
    serde_json::from_str(&s).unwrap_or(Value::Null)
}

fn now_unix() -> String {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}.{:09}", t.as_secs(), t.subsec_nanos())
}

fn events(d: &Berthd, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["events", "--format", "{{json .}}"];
    a.extend_from_slice(args);
    d.docker(&a)
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn health_checks_in_inspect_ps_and_events() {
    let d = daemon();
    let dir = tempfile::tempdir().unwrap();
    load(&d, dir.path());
    let t0 = now_unix();
    let run = |name: &str, extra: &[&str], image: &str| {
        let mut a = vec!["run", "-d", "--name", name];
        a.extend_from_slice(extra);
        a.extend_from_slice(&[image, "sleep", "1000"]);
        d.docker(&a).ok();
    };
    run(
        "good",
        &["--health-cmd", "true", "--health-interval", "1s"],
        IMAGE,
    );
    // Right after the start, before the first probe (an interval later), it is starting.
    let h = health(&d, "good");
    assert!(h["Status"] == "starting" || h["Status"] == "healthy", "{h}");
    run(
        "bad",
        &[
            "--health-cmd",
            "echo failing; exit 1",
            "--health-interval",
            "1s",
            "--health-retries",
            "2",
        ],
        IMAGE,
    );
    run(
        "slow",
        &[
            "--health-cmd",
            "sleep 30",
            "--health-interval",
            "1s",
            "--health-timeout",
            "1s",
            "--health-retries",
            "1",
        ],
        IMAGE,
    );
    run("fromimage", &[], HC_IMAGE);
    run("nocheck", &["--no-healthcheck"], HC_IMAGE);
    until("good to be healthy", 30, || {
        health(&d, "good")["Status"] == "healthy"
    });
    until("bad to be unhealthy", 30, || {
        health(&d, "bad")["Status"] == "unhealthy"
    });
    until("slow to be unhealthy", 30, || {
        health(&d, "slow")["Status"] == "unhealthy"
    });
    until("fromimage to be healthy", 30, || {
        health(&d, "fromimage")["Status"] == "healthy"
    });
    let h = health(&d, "good");
    assert_eq!(h["FailingStreak"], 0, "{h}");
    let last = h["Log"].as_array().unwrap().last().cloned().unwrap();
    assert_eq!(last["ExitCode"], 0, "{h}");
    assert!(last["Start"].as_str().unwrap() <= last["End"].as_str().unwrap());
    let h = health(&d, "bad");
    assert!(h["FailingStreak"].as_u64().unwrap() >= 2, "{h}");
    let last = h["Log"].as_array().unwrap().last().cloned().unwrap();
    assert_eq!(
        (&last["ExitCode"], &last["Output"]),
        (&Value::from(1), &Value::from("failing\n"))
    );
    // A probe over its timeout is killed and fails.
    let h = health(&d, "slow");
    let last = h["Log"].as_array().unwrap().last().cloned().unwrap();
    assert_eq!(last["ExitCode"], -1, "{h}");
    assert!(
        last["Output"]
            .as_str()
            .unwrap()
            .contains("exceeded timeout"),
        "{h}"
    );
    let h = health(&d, "fromimage");
    assert_eq!(h["Log"][0]["Output"], "from-image\n", "{h}");
    assert_eq!(health(&d, "nocheck"), Value::Null);
    // At most five results are kept.
    until("bad to have five results", 30, || {
        health(&d, "bad")["FailingStreak"].as_u64().unwrap_or(0) >= 6
    });
    assert_eq!(health(&d, "bad")["Log"].as_array().unwrap().len(), 5);
    // Timed-out probes were killed: they do not pile up (one a second, 30 s each).
    let top = d.docker(&["top", "slow"]);
    let sleeping = top.ok().lines().filter(|l| l.contains("sleep 30")).count();
    assert!(sleeping <= 2, "{}", top.stdout);

    // ps: the status and the health filter.
    let ps = d.docker(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    let good_line = ps
        .ok()
        .lines()
        .find(|l| l.starts_with("good "))
        .unwrap()
        .to_string();
    assert!(good_line.ends_with("(healthy)"), "{good_line}");
    let names = |f: &str| {
        let mut v: Vec<String> = d
            .docker(&["ps", "--filter", f, "--format", "{{.Names}}"])
            .ok()
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("health=healthy"), ["fromimage", "good"]);
    assert_eq!(names("health=unhealthy"), ["bad", "slow"]);
    assert_eq!(names("health=none"), ["nocheck"]);
    let bad = d.docker(&["ps", "--filter", "health=sickly"]);
    assert!(bad
        .err()
        .contains("Unrecognised filter value for health: sickly"));

    // Events: one health_status per change of status.
    let t1 = now_unix();
    let ev = events(
        &d,
        &[
            "--since",
            &t0,
            "--until",
            &t1,
            "--filter",
            "event=health_status",
        ],
    );
    let of = |name: &str| -> Vec<String> {
        ev.iter()
            .filter(|e| e["Actor"]["Attributes"]["name"] == name)
            .map(|e| e["Action"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(of("good"), ["health_status: healthy"]);
    assert_eq!(of("bad"), ["health_status: unhealthy"]);

    // Probes stop with the container.
    d.docker(&["stop", "-t", "1", "good"]).ok();
    let before = health(&d, "good")["Log"].clone();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(health(&d, "good")["Log"], before);

    // Bad input: Docker's checks on the durations (the CLI refuses negative ones itself).
    let (code, body) = api(
        &d,
        "POST",
        "/containers/create",
        Some(&format!(
            r#"{{"Image":"{IMAGE}","Healthcheck":{{"Test":["CMD","true"],"Interval":-1}}}}"#
        )),
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("Interval in Healthcheck cannot be less than 1ms"),
        "{body}"
    );
    let (code, body) = api(
        &d,
        "POST",
        "/containers/create",
        Some(&format!(
            r#"{{"Image":"{IMAGE}","Healthcheck":{{"Test":["PING","x"]}}}}"#
        )),
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("unknown type") && body.contains("PING"),
        "{body}"
    );
    d.docker(&["rm", "-f", "good", "bad", "slow", "fromimage", "nocheck"])
        .ok();
}

#[test]
fn compose_waits_for_a_healthy_service() {
    let d = daemon();
    let dir = tempfile::tempdir().unwrap();
    load(&d, dir.path());
    let app = dir.path().join("app");
    std::fs::create_dir(&app).unwrap();
    std::fs::write(
        app.join("docker-compose.yml"),
        format!(
            r#"version: "2.4"
services:
  db:
    image: {IMAGE}
    command: ["sleep", "1000"]
    healthcheck:
      test: ["CMD-SHELL", "test -e /tmp/ready"]
      interval: 1s
      retries: 30
  web:
    image: {IMAGE}
    command: ["sleep", "1000"]
    depends_on:
      db:
        condition: service_healthy
"#
        ),
    )
    .unwrap();
    // up waits for db to be healthy before it starts web: make it ready a little later.
    let d2 = &d;
    let up = std::thread::scope(|s| {
        let h = s.spawn(|| d2.compose(&app, "hc", &["up", "-d"]));
        until("db to run", 30, || {
            d2.docker(&["ps", "-q", "--filter", "name=hc_db_1"])
                .ok()
                .trim()
                .len()
                > 1
        });
        assert_eq!(
            inspect(d2, "hc_db_1", "{{.State.Health.Status}}"),
            "starting"
        );
        assert!(
            d2.docker(&["ps", "-aq", "--filter", "name=hc_web_1"])
                .stdout
                .trim()
                .is_empty()
                || inspect(d2, "hc_web_1", "{{.State.Status}}") == "created"
        );
        d2.docker(&["exec", "hc_db_1", "touch", "/tmp/ready"]).ok();
        h.join().unwrap()
    });
    up.ok();
    assert_eq!(
        inspect(&d, "hc_db_1", "{{.State.Health.Status}}"),
        "healthy"
    );
    assert_eq!(inspect(&d, "hc_web_1", "{{.State.Status}}"), "running");
    d.compose(&app, "hc", &["down", "-t", "0"]).ok();
}

#[test]
fn events_since_until_and_filters() {
    let d = daemon();
    let dir = tempfile::tempdir().unwrap();
    load(&d, dir.path());
    let t0 = now_unix();
    // A listener from t0 on: the past replayed, then live events.
    let mut live = Running::spawn(
        &d,
        &[
            "events",
            "--since",
            &t0,
            "--format",
            "{{json .}}",
            "--filter",
            "type=volume",
        ],
    );
    let live_rx = live.lines();
    d.docker(&[
        "run", "--rm", "--name", "ev1", "--label", "team=a", IMAGE, "sh", "-c", "exit 2",
    ]);
    d.docker(&["network", "create", "evnet"]).ok();
    d.docker(&["volume", "create", "evvol"]).ok();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "ev2",
        "-v",
        "evvol:/data",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    d.docker(&["network", "connect", "evnet", "ev2"]).ok();
    d.docker(&["network", "disconnect", "evnet", "ev2"]).ok();
    d.docker(&["pause", "ev2"]).ok();
    d.docker(&["unpause", "ev2"]).ok();
    d.docker(&["rename", "ev2", "ev3"]).ok();
    d.docker(&["exec", "ev3", "true"]).ok();
    d.docker(&["kill", "ev3"]).ok();
    d.docker(&["rm", "ev3"]).ok();
    d.docker(&["network", "rm", "evnet"]).ok();
    d.docker(&["volume", "rm", "evvol"]).ok();
    let t1 = now_unix();

    let next =
        || -> Value { serde_json::from_str(&line_within(&live_rx, "a volume event")).unwrap() };
    let first = next();
    assert_eq!(
        (&first["Type"], &first["Action"], &first["Actor"]["ID"]),
        (
            &Value::from("volume"),
            &Value::from("create"),
            &Value::from("evvol")
        )
    );
    for want in ["mount", "unmount", "destroy"] {
        assert_eq!(next()["Action"], want);
    }
    // It is listening now: what happens next reaches it.
    d.docker(&["volume", "create", "evlive"]).ok();
    let ev = next();
    assert_eq!(
        (&ev["Action"], &ev["Actor"]["ID"]),
        (&Value::from("create"), &Value::from("evlive"))
    );
    drop(live);
    d.docker(&["volume", "rm", "evlive"]).ok();

    // The run of ev1, replayed from the past.
    let ev = events(
        &d,
        &["--since", &t0, "--until", &t1, "--filter", "container=ev1"],
    );
    let actions: Vec<&str> = ev.iter().map(|e| e["Action"].as_str().unwrap()).collect();
    let pos = |a: &str| {
        actions
            .iter()
            .position(|x| *x == a)
            .unwrap_or_else(|| panic!("no {a} in {actions:?}"))
    };
    assert!(pos("create") < pos("start"), "{actions:?}");
    assert!(pos("attach") < pos("start"), "{actions:?}");
    assert!(
        pos("start") < pos("die") && pos("die") < pos("destroy"),
        "{actions:?}"
    );
    let die = &ev[pos("die")];
    assert_eq!(die["Type"], "container");
    assert_eq!(die["status"], "die");
    assert_eq!(die["from"], IMAGE);
    assert_eq!(die["id"], die["Actor"]["ID"]);
    assert_eq!(die["Actor"]["Attributes"]["exitCode"], "2");
    assert_eq!(die["Actor"]["Attributes"]["team"], "a");
    assert_eq!(die["Actor"]["Attributes"]["image"], IMAGE);
    assert_eq!(die["scope"], "local");
    let nano = die["timeNano"].as_i64().unwrap();
    assert_eq!(die["time"].as_i64().unwrap(), nano / 1_000_000_000);

    // The second container's life, by its first name or its second, and its kill's signal.
    let ev = events(
        &d,
        &[
            "--since",
            &t0,
            "--until",
            &t1,
            "--filter",
            "type=container",
            "--filter",
            "image=berth/live-test",
        ],
    );
    let acts: Vec<String> = ev
        .iter()
        .filter(|e| e["Actor"]["Attributes"]["name"] != "ev1")
        .map(|e| e["Action"].as_str().unwrap().to_string())
        .collect();
    for want in [
        "create",
        "start",
        "pause",
        "unpause",
        "rename",
        "exec_create: true",
        "exec_start: true",
        "exec_die",
        "kill",
        "die",
        "destroy",
    ] {
        assert!(acts.iter().any(|a| a == want), "no {want} in {acts:?}");
    }
    let kill = ev.iter().find(|e| e["Action"] == "kill").unwrap();
    assert_eq!(kill["Actor"]["Attributes"]["signal"], "9");
    let rename = ev.iter().find(|e| e["Action"] == "rename").unwrap();
    assert_eq!(rename["Actor"]["Attributes"]["oldName"], "/ev2");
    assert_eq!(rename["Actor"]["Attributes"]["name"], "ev3");
    // The label filter and the event filter.
    let ev = events(
        &d,
        &[
            "--since",
            &t0,
            "--until",
            &t1,
            "--filter",
            "label=team=a",
            "--filter",
            "event=die",
        ],
    );
    assert_eq!(ev.len(), 1, "{ev:?}");
    // Networks and volumes.
    let ev = events(
        &d,
        &["--since", &t0, "--until", &t1, "--filter", "network=evnet"],
    );
    let acts: Vec<&str> = ev.iter().map(|e| e["Action"].as_str().unwrap()).collect();
    assert_eq!(acts, ["create", "connect", "disconnect", "destroy"]);
    assert!(
        ev[1]["Actor"]["Attributes"]["container"]
            .as_str()
            .unwrap()
            .len()
            == 64
    );
    assert!(ev[0].get("status").is_none(), "{}", ev[0]);
    let ev = events(
        &d,
        &["--since", &t0, "--until", &t1, "--filter", "volume=evvol"],
    );
    let acts: Vec<&str> = ev.iter().map(|e| e["Action"].as_str().unwrap()).collect();
    assert_eq!(acts, ["create", "mount", "unmount", "destroy"]);

    // Bad input: an unknown filter, an unknown type, since after until.
    let bad = d.docker(&["events", "--until", &t1, "--filter", "colour=red"]);
    assert!(
        bad.err().contains("invalid filter 'colour'"),
        "{}",
        bad.stderr
    );
    let bad = d.docker(&["events", "--until", &t1, "--filter", "type=thing"]);
    assert!(bad.err().contains("type=thing"), "{}", bad.stderr);
    let (code, body) = api(&d, "GET", &format!("/events?since={t1}&until={t0}"), None);
    assert_eq!(code, 400, "{body}");
    let (code, body) = api(&d, "GET", "/events?since=yesterday", None);
    assert_eq!(code, 400, "{body}");
}

#[test]
fn start_and_exit_are_network_connect_and_disconnect_events() {
    let d = daemon();
    let dir = tempfile::tempdir().unwrap();
    load(&d, dir.path());
    d.docker(&["network", "create", "nev"]).ok();
    let t0 = now_unix();
    // One run on the default network, one on a network of ours that is also put on the
    // default one while it runs, then stopped.
    d.docker(&["run", "--rm", "--name", "nrun", IMAGE, "true"])
        .ok();
    let id = d
        .docker(&[
            "run",
            "-d",
            "--name",
            "nlong",
            "--network",
            "nev",
            IMAGE,
            "sleep",
            "1000",
        ])
        .ok()
        .trim()
        .to_string();
    d.docker(&["network", "connect", "bridge", "nlong"]).ok();
    d.docker(&["stop", "-t", "0", "nlong"]).ok();
    let t1 = now_unix();
    let net_id = |n: &str| {
        d.docker(&["network", "inspect", "--format", "{{.Id}}", n])
            .ok()
            .trim()
            .to_string()
    };
    let (bridge, nev) = (net_id("bridge"), net_id("nev"));

    let all = events(&d, &["--since", &t0, "--until", &t1]);
    let nets: Vec<&Value> = all.iter().filter(|e| e["Type"] == "network").collect();
    let brief = |e: &Value| {
        let a = &e["Actor"]["Attributes"];
        format!(
            "{} {} {} {}",
            e["Action"].as_str().unwrap(),
            a["name"].as_str().unwrap(),
            a["type"].as_str().unwrap(),
            if a["container"] == id.as_str() {
                "nlong"
            } else {
                "other"
            },
        )
    };
    let got: Vec<String> = nets.iter().map(|e| brief(e)).collect();
    assert_eq!(
        got,
        [
            "connect bridge bridge other",
            "disconnect bridge bridge other",
            "connect nev bridge nlong",
            "connect bridge bridge nlong",
            "disconnect nev bridge nlong",
            "disconnect bridge bridge nlong",
        ],
        "{nets:?}"
    );
    for e in &nets {
        let want = if e["Actor"]["Attributes"]["name"] == "nev" {
            &nev
        } else {
            &bridge
        };
        assert_eq!(e["Actor"]["ID"], want.as_str(), "{e}");
        assert_eq!(
            e["Actor"]["Attributes"]["container"]
                .as_str()
                .unwrap()
                .len(),
            64
        );
    }
    // Where they come in the container's life, as with dockerd: connect before start,
    // disconnect after die.
    let nrun = all
        .iter()
        .find(|e| e["Type"] == "container" && e["Actor"]["Attributes"]["name"] == "nrun")
        .unwrap()["Actor"]["ID"]
        .clone();
    let life: Vec<String> = all
        .iter()
        .filter(|e| e["Actor"]["ID"] == nrun || e["Actor"]["Attributes"]["container"] == nrun)
        .map(|e| {
            format!(
                "{} {}",
                e["Type"].as_str().unwrap(),
                e["Action"].as_str().unwrap()
            )
        })
        .collect();
    let pos = |a: &str| {
        life.iter()
            .position(|x| x == a)
            .unwrap_or_else(|| panic!("no {a}: {life:?}"))
    };
    assert!(pos("network connect") < pos("container start"), "{life:?}");
    assert!(pos("container die") < pos("network disconnect"), "{life:?}");
    assert!(
        pos("network disconnect") < pos("container destroy"),
        "{life:?}"
    );
    // The network filter sees them by name.
    let ev = events(
        &d,
        &[
            "--since",
            &t0,
            "--until",
            &t1,
            "--filter",
            "type=network",
            "--filter",
            "network=nev",
        ],
    );
    let acts: Vec<&str> = ev.iter().map(|e| e["Action"].as_str().unwrap()).collect();
    assert_eq!(acts, ["connect", "disconnect"]);
    d.docker(&["rm", "nlong"]).ok();
    d.docker(&["network", "rm", "nev"]).ok();
}
