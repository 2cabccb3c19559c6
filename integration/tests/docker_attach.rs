//! Attaching to containers and execs through the Docker Engine API, driven by Debian's
//! docker CLI 20.10 under script(1) and by raw API requests: the detach keys (ctrl-p ctrl-q,
//! `--detach-keys`, the CLI config's `detachKeys`) leave the container or exec running and
//! its terminal usable by the next attach; berthd itself watches for them on a terminal's
//! input (for clients that do not, like docker-py); bad keys are refused naming them.
//! Attach with `logs=1` replays the log before following it (`stream=0`: only replays).
//!
//! berthd runs in a network namespace of the test's own; every test has its own daemon.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use berth_integration::manager::tasks::NsDaemon;
use berth_integration::manager::{until, Berthd};
use serde_json::Value;

const IMAGE: &str = "berth/attach-test:v1";

fn daemon() -> NsDaemon {
    NsDaemon::docker_with_busybox(IMAGE, &["bin/sleep", "bin/echo"], vec![])
}

fn running(d: &Berthd, name: &str) -> String {
    d.docker(&["inspect", "--format", "{{.State.Running}}", name])
        .ok()
        .trim()
        .to_string()
}

/// Reads from `s` until `want` has come (or fails the test after 20 s); what was read.
fn read_until(s: &mut UnixStream, want: &str) -> String {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while start.elapsed() < Duration::from_secs(20) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading the attach: {e}"),
        }
        if String::from_utf8_lossy(&got).contains(want) {
            return String::from_utf8_lossy(&got).into_owned();
        }
    }
    panic!(
        "no {want:?} within 20 s: {:?}",
        String::from_utf8_lossy(&got)
    );
}

/// Whether the server closes `s` within 20 s (what it sends until then is dropped).
fn closed_by_server(s: &mut UnixStream) -> bool {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while start.elapsed() < Duration::from_secs(20) {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// A request whose connection berthd takes over (`Upgrade: tcp`), as docker-py makes them:
/// the stream after the 101's head.
fn hijack(d: &Berthd, path: &str, body: &str) -> UnixStream {
    let mut s = UnixStream::connect(d.docker_socket()).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let head = read_until(&mut s, "\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

fn events(d: &Berthd, since: &str, filter: &str) -> Vec<Value> {
    let until = format!("{}", now() + 1);
    d.docker(&[
        "events",
        "--since",
        since,
        "--until",
        &until,
        "--filter",
        filter,
        "--format",
        "{{json .}}",
    ])
    .ok()
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn detach_keys_leave_the_container_running() {
    let d = daemon();
    // docker run -it, then ctrl-p ctrl-q: the client leaves, the shell keeps running.
    let (code, out, err) = d.docker_typed_steps(
        &format!("run -it --name dk1 {IMAGE} sh"),
        &["echo one-$((1+1))\\r", "\\020\\021"],
    );
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("one-2"), "{out}");
    assert_eq!(running(&d, "dk1"), "true");
    // docker attach reaches the same shell (its input was left open), and detaches again.
    let (_, out, err) = d.docker_typed_steps("attach dk1", &["echo two-$((2+2))\\r", "\\020\\021"]);
    assert!(out.contains("two-4"), "{out} {err}");
    assert_eq!(running(&d, "dk1"), "true");
    // --detach-keys: the default keys are just input then, the named ones detach.
    let (code, out, err) = d.docker_typed_steps(
        &format!("run -it --detach-keys ctrl-a,x --name dk2 {IMAGE} sh"),
        &["echo three-$((1+2))\\r", "\\001x"],
    );
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("three-3"), "{out}");
    assert_eq!(running(&d, "dk2"), "true");
    // The CLI config's detachKeys.
    let cfg = d.dir().join("docker-config");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(cfg.join("config.json"), r#"{"detachKeys": "ctrl-e,e"}"#).unwrap();
    let (_, out, err) = d.docker_typed_steps("attach dk2", &["echo four-$((2*2))\\r", "\\005e"]);
    assert!(out.contains("four-4"), "{out} {err}");
    assert_eq!(running(&d, "dk2"), "true");
    std::fs::remove_file(cfg.join("config.json")).unwrap();
    // docker exec -it: the exec leaves, its shell and the container keep running (the CLI
    // says "read escape sequence" and exits 1 here, as it does with dockerd).
    let (_, out, err) =
        d.docker_typed_steps("exec -it dk1 sh", &["echo five-$((2+3))\\r", "\\020\\021"]);
    assert!(out.contains("five-5"), "{out} {err}");
    let ps = d.docker(&["top", "dk1"]).ok().to_string();
    assert_eq!(ps.lines().filter(|l| l.ends_with(" sh")).count(), 2, "{ps}");
    // An exit typed after all that still ends the container, as a shell's would.
    let (code, out, err) = d.docker_typed("attach dk1", "exit 7\\r");
    assert_eq!(code, 7, "{out} {err}");
    until("dk1 to exit", 20, || running(&d, "dk1") == "false");
    let code = d.docker(&["inspect", "--format", "{{.State.ExitCode}}", "dk1"]);
    assert_eq!(code.ok().trim(), "7");

    // Bad keys are refused (the CLI shows only the status of a refused attach, as with
    // dockerd; the raw request in the next test reads the message).
    let bad = d.docker(&[
        "attach",
        "--no-stdin",
        "--detach-keys",
        "ctrl-p,bogus",
        "dk2",
    ]);
    assert!(bad.err().contains("received 400"), "{}", bad.stderr);
    let bad = d.docker(&["exec", "--detach-keys", "ctrl-9", "dk2", "true"]);
    assert!(
        bad.err().contains("Invalid escape keys (ctrl-9) provided"),
        "{}",
        bad.stderr
    );
    d.docker(&["rm", "-f", "dk1", "dk2"]).ok();
}

#[test]
fn berthd_watches_a_terminals_input_for_the_detach_keys() {
    let d = daemon();
    let since = format!("{}", now().saturating_sub(1));
    d.docker(&["run", "-dit", "--name", "raw", IMAGE, "sh"])
        .ok();
    // A client that sends the keys as typed (docker-py does): berthd ends the attachment.
    let mut s = hijack(
        &d,
        "/v1.41/containers/raw/attach?stream=1&stdin=1&stdout=1&stderr=1&detachKeys=ctrl-x,x",
        "",
    );
    s.write_all(b"echo raw-$((3+3))\r").unwrap();
    read_until(&mut s, "raw-6");
    s.write_all(b"\x18x").unwrap();
    assert!(closed_by_server(&mut s), "the attachment did not end");
    assert_eq!(running(&d, "raw"), "true");
    let ev = events(&d, &since, "event=detach");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["Actor"]["Attributes"]["name"], "raw");
    // An exec with a terminal: the default keys, the exec's shell keeps running.
    let (code, _, body) = d.docker_http(
        "POST",
        "/v1.41/containers/raw/exec",
        "application/json",
        br#"{"AttachStdin":true,"AttachStdout":true,"AttachStderr":true,"Tty":true,"Cmd":["sh"]}"#,
    );
    assert_eq!(code, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut s = hijack(
        &d,
        &format!("/v1.41/exec/{id}/start"),
        r#"{"Detach":false,"Tty":true}"#,
    );
    s.write_all(b"echo ex-$((4+4))\r").unwrap();
    read_until(&mut s, "ex-8");
    s.write_all(b"\x10\x11").unwrap();
    assert!(
        closed_by_server(&mut s),
        "the exec's attachment did not end"
    );
    let (code, _, body) = d.docker_http("GET", &format!("/v1.41/exec/{id}/json"), "", b"");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["Running"],
        true,
        "{body}"
    );
    let ev = events(&d, &since, "event=exec_detach");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["Actor"]["Attributes"]["execID"], id.as_str());
    // Without a terminal the keys are data, as with dockerd: cat echoes them back.
    d.docker(&["run", "-di", "--name", "plain", IMAGE, "cat"])
        .ok();
    let mut s = hijack(
        &d,
        "/v1.41/containers/plain/attach?stream=1&stdin=1&stdout=1",
        "",
    );
    s.write_all(b"a\x10\x11b\n").unwrap();
    read_until(&mut s, "a\x10\x11b");
    drop(s);
    assert_eq!(running(&d, "plain"), "true");
    // Bad keys on a raw attach: 400, naming them.
    let (code, _, body) = d.docker_http(
        "POST",
        "/v1.41/containers/raw/attach?stream=1&stdout=1&detachKeys=ctrl-",
        "",
        b"",
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("Invalid detach keys (ctrl-) provided"),
        "{body}"
    );
    assert!(body.contains("Unknown character: 'ctrl-'"), "{body}");
    d.docker(&["rm", "-f", "raw", "plain"]).ok();
}

/// The frames of a multiplexed stream: (stream, text).
fn frames(body: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    let mut rest = body;
    while rest.len() >= 8 {
        let len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let end = (8 + len).min(rest.len());
        out.push((rest[0], String::from_utf8_lossy(&rest[8..end]).into_owned()));
        rest = &rest[end..];
    }
    out
}

/// A plain (not hijacked) attach request: its status and body, read to the end.
fn attach(d: &Berthd, name: &str, query: &str) -> (u16, Vec<u8>) {
    let mut s = UnixStream::connect(d.docker_socket()).unwrap();
    write!(
        s,
        "POST /v1.41/containers/{name}/attach?{query} HTTP/1.1\r\nHost: docker\r\n\
         Connection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let at = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an answer's head");
    let head = String::from_utf8_lossy(&all[..at]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut body = all[at + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(at) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&b[..at]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[at + 2..at + 2 + n]);
        b = &b[at + 2 + n + 2..];
    }
    out
}

#[test]
fn attach_with_logs_replays_the_log_first() {
    let d = daemon();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "lg",
        IMAGE,
        "sh",
        "-c",
        "echo first; echo oops >&2; sleep 3; echo second",
    ])
    .ok();
    until("lg's first lines", 20, || {
        d.docker(&["logs", "lg"]).stderr.contains("oops")
    });
    // logs=1 with stream=1 on a running container: the log so far, then what comes after,
    // each record once, until it exits.
    let (code, body) = attach(&d, "lg", "logs=1&stream=1&stdout=1&stderr=1");
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        frames(&body),
        [
            (1, "first\n".to_string()),
            (2, "oops\n".to_string()),
            (1, "second\n".to_string())
        ]
    );
    assert_eq!(running(&d, "lg"), "false");
    // On the exited container: stream=0 (or nothing left to follow) gives the log and ends;
    // the streams asked for only.
    let (code, body) = attach(&d, "lg", "logs=1&stream=0&stdout=1");
    assert_eq!(code, 200);
    assert_eq!(
        frames(&body),
        [(1, "first\n".to_string()), (1, "second\n".to_string())]
    );
    let (code, body) = attach(&d, "lg", "logs=1&stream=1&stderr=1");
    assert_eq!(code, 200);
    assert_eq!(frames(&body), [(2, "oops\n".to_string())]);
    // stream=0 without logs: nothing, at once, on a running container too.
    d.docker(&[
        "run",
        "-d",
        "-t",
        "--name",
        "lt",
        IMAGE,
        "sh",
        "-c",
        "echo on-tty; sleep 1000",
    ])
    .ok();
    until("lt's line", 20, || {
        d.docker(&["logs", "lt"]).stdout.contains("on-tty")
    });
    let (code, body) = attach(&d, "lt", "stream=0&stdout=1");
    assert_eq!((code, body.len()), (200, 0), "{body:?}");
    // A terminal's log is raw, not framed.
    let (code, body) = attach(&d, "lt", "logs=1&stream=0&stdout=1");
    assert_eq!(code, 200);
    assert_eq!(String::from_utf8_lossy(&body).trim_end(), "on-tty");
    assert_eq!(running(&d, "lt"), "true");
    // Bad input: logs must be a boolean.
    let (code, body) = attach(&d, "lt", "logs=maybe&stream=0&stdout=1");
    let text = String::from_utf8_lossy(&body);
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("invalid boolean value for logs"), "{text}");
    d.docker(&["rm", "-f", "lg", "lt"]).ok();
}
