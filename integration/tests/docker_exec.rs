//! `docker exec` and `docker cp` through the Docker Engine API, driven by Debian's unmodified
//! docker CLI 20.10: output, exit codes, stderr apart, stdin with its end of file, -e -w -u,
//! -t under script(1), exec in a stopped container; cp both ways, from a stopped container,
//! and symlinks in the container that must never lead a copy onto the host; bad input.
//!
//! berthd runs in a network namespace of the test's own; every test has its own daemon, temp
//! dirs and container names.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_integration::manager::image;
use berth_integration::manager::{wait_timeout, Berthd};

const IMAGE: &str = "berth/exec-test:v1";
/// What the container's /etc/shadow holds (the host's must never be read instead).
const SHADOW: &[u8] = b"root:container-shadow:0:0:99999:7:::\n";

fn daemon() -> Berthd {
    Berthd::start_in_netns(&[]).unwrap()
}

/// Loads a busybox image with a few applets, a user 1000, and two hostile symlinks:
/// `/evil -> /` and `/etc/x -> /../../..`.
fn load(d: &Berthd, dir: &Path) {
    let img = image::busybox_applets(
        &format!("docker.io/{IMAGE}"),
        &[
            "bin/sleep",
            "bin/echo",
            "bin/id",
            "bin/pwd",
            "bin/stat",
            "bin/tty",
            "bin/mkdir",
        ],
        vec![
            image::Entry::Dir("etc", 0o755),
            image::Entry::File(
                "etc/passwd",
                0o644,
                b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n".to_vec(),
            ),
            image::Entry::File("etc/shadow", 0o640, SHADOW.to_vec()),
            image::Entry::Symlink("etc/x", "/../../.."),
            image::Entry::Symlink("evil", "/"),
            image::Entry::Dir("data", 0o755),
            image::Entry::File("data/a.txt", 0o600, b"aaa\n".to_vec()),
            image::Entry::Dir("data/sub", 0o750),
            image::Entry::File("data/sub/b.txt", 0o644, b"bbb\n".to_vec()),
        ],
    )
    .unwrap();
    let tar = dir.join("image.tar");
    img.write_docker_archive(&tar).unwrap();
    d.docker(&["load", "-i", tar.to_str().unwrap()]).ok();
}

/// A running container `name` (sleeping), removed with the daemon.
fn run(d: &Berthd, name: &str) {
    d.docker(&["run", "-d", "--name", name, IMAGE, "sleep", "1000"])
        .ok();
}

#[test]
fn exec_output_exit_codes_stdin_env_user_tty() {
    let d = daemon();
    let dir = tempfile::tempdir().unwrap();
    load(&d, dir.path());
    run(&d, "ex1");
    // Output and exit codes.
    let out = d.docker(&["exec", "ex1", "echo", "hi"]);
    assert_eq!(out.ok(), "hi\n");
    let out = d.docker(&["exec", "ex1", "sh", "-c", "exit 5"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    // stderr stays apart.
    let out = d.docker(&["exec", "ex1", "sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");
    // stdin: piped input reaches the process, and so does its end.
    let (code, stdout, stderr) = d.docker_stdin(&["exec", "-i", "ex1", "cat"], b"data\nmore");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "data\nmore");
    let big = vec![b'x'; 300_000];
    let (code, stdout, stderr) =
        d.docker_stdin(&["exec", "-i", "ex1", "sh", "-c", "cat | wc -c"], &big);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "300000");
    // -e -w -u
    let out = d.docker(&[
        "exec",
        "-e",
        "K=V",
        "-w",
        "/tmp",
        "-u",
        "1000",
        "ex1",
        "sh",
        "-c",
        "echo $K; pwd; id -u",
    ]);
    assert_eq!(out.ok(), "V\n/tmp\n1000\n");
    let out = d.docker(&["exec", "-u", "user", "ex1", "id", "-u"]);
    assert_eq!(out.ok(), "1000\n");
    let out = d.docker(&["exec", "-u", "nobody-here", "ex1", "id", "-u"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stdout.contains("nobody-here") || out.stderr.contains("nobody-here"),
        "{} {}",
        out.stdout,
        out.stderr
    );
    // -t under script(1): a terminal, and the output comes back.
    let (code, stdout, stderr) = d.docker_on_tty("exec -t ex1 sh -c 'tty; echo tty-ok'");
    assert_eq!(code, 0, "{stdout} {stderr}");
    assert!(stdout.contains("tty-ok"), "{stdout}");
    assert!(stdout.contains("/dev/pts/"), "{stdout}");
    // -it under script(1): typed input reaches the process through its terminal.
    let (code, stdout, stderr) =
        d.docker_typed("exec -it ex1 sh -c 'read x; echo got-$x'", "typed\\r");
    assert_eq!(code, 0, "{stdout} {stderr}");
    assert!(stdout.contains("got-typed"), "{stdout}");
    // Detached: runs, and the exec's inspect shows its end.
    d.docker(&["exec", "-d", "ex1", "sh", "-c", "echo bg > /tmp/bg"])
        .ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if d.docker(&["exec", "ex1", "cat", "/tmp/bg"]).stdout == "bg\n" {
            break;
        }
        assert!(Instant::now() < deadline, "the detached exec did not run");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing of the execs is left behind in berthd's state dir (the detached one's runner
    // may still be finishing).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = std::fs::read_dir(d.state().join("docker-exec"))
            .map(|r| r.count())
            .unwrap_or(0);
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} exec FIFO dirs left behind"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A stopped container: Docker's message.
    d.docker(&["stop", "-t", "1", "ex1"]).ok();
    let out = d.docker(&["exec", "ex1", "echo", "hi"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("is not running"), "{}", out.stderr);
    d.docker(&["rm", "-f", "ex1"]).ok();
}

#[test]
fn a_client_that_goes_away_mid_exec_leaves_nothing() {
    let d = daemon();
    let dir = tempfile::tempdir().unwrap();
    load(&d, dir.path());
    run(&d, "ex2");
    // An interactive exec whose client is killed: the process gets the end of its input
    // (cat ends), and its FIFOs go.
    let child = Command::new("/usr/bin/docker")
        .env("DOCKER_CONFIG", d.dir().join("docker-config"))
        .arg("-H")
        .arg(format!("unix://{}", d.docker_socket().display()))
        .args([
            "exec",
            "-i",
            "ex2",
            "sh",
            "-c",
            "cat; echo ended > /tmp/ended",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(d.state().join("docker-exec"))
        .map(|r| r.count())
        .unwrap_or(0)
        == 0
    {
        assert!(Instant::now() < deadline, "the exec did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = wait_timeout(child, Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ended = d.docker(&["exec", "ex2", "cat", "/tmp/ended"]).stdout == "ended\n";
        let left = std::fs::read_dir(d.state().join("docker-exec"))
            .map(|r| r.count())
            .unwrap_or(0);
        if ended && left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the client went away: ended={ended}, {left} FIFO dirs left"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // berthd still answers.
    assert_eq!(d.docker(&["exec", "ex2", "echo", "ok"]).ok(), "ok\n");
    d.docker(&["rm", "-f", "ex2"]).ok();
}

/// A raw request on the Docker socket; the status code and the whole answer.
fn raw(d: &Berthd, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let (code, head, body) = d.docker_http(method, path, "application/x-tar", body);
    (code, format!("{head}\r\n\r\n{body}"))
}

#[test]
fn exec_bad_input() {
    let d = daemon();
    let dir = tempfile::tempdir().unwrap();
    load(&d, dir.path());
    run(&d, "ex3");
    let (code, text) = raw(&d, "GET", "/v1.41/exec/nope/json", b"");
    assert_eq!(code, 404, "{text}");
    assert!(text.contains("No such exec instance: nope"), "{text}");
    let (code, text) = raw(&d, "POST", "/v1.41/exec/nope/start", b"{}");
    assert_eq!(code, 404, "{text}");
    let (code, text) = raw(&d, "POST", "/v1.41/exec/nope/resize?h=10&w=20", b"");
    assert_eq!(code, 404, "{text}");
    // Privileged is served (docker_privileged_init.rs) but must be a boolean; detach keys
    // must be keys.
    let (code, text) = raw(
        &d,
        "POST",
        "/v1.41/containers/ex3/exec",
        br#"{"Cmd":["true"],"Privileged":"yes"}"#,
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("expected a boolean"), "{text}");
    let (code, text) = raw(
        &d,
        "POST",
        "/v1.41/containers/ex3/exec",
        br#"{"Cmd":["true"],"DetachKeys":"ctrl-p,ctrl-"}"#,
    );
    assert_eq!(code, 400, "{text}");
    assert!(
        text.contains("Invalid escape keys (ctrl-p,ctrl-) provided"),
        "{text}"
    );
    let (code, text) = raw(&d, "POST", "/v1.41/containers/ex3/exec", br#"{"Cmd":[]}"#);
    assert_eq!(code, 400, "{text}");
    let (code, text) = raw(
        &d,
        "POST",
        "/v1.41/containers/nope/exec",
        br#"{"Cmd":["true"]}"#,
    );
    assert_eq!(code, 404, "{text}");
    assert!(text.contains("No such container: nope"), "{text}");
    // A missing executable: the error in the stream, exit code 126 as dockerd.
    let out = d.docker(&["exec", "ex3", "/no/such/binary"]);
    assert_eq!(out.code, 126, "{} {}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("/no/such/binary") || out.stderr.contains("/no/such/binary"),
        "{} {}",
        out.stdout,
        out.stderr
    );
    d.docker(&["rm", "-f", "ex3"]).ok();
}

/// Removes host paths a failed confinement could have created, whatever the test's outcome.
struct HostPaths(Vec<std::path::PathBuf>);

impl Drop for HostPaths {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn cp_both_ways_stopped_and_symlinks_never_reach_the_host() {
    let d = daemon();
    let dir = tempfile::tempdir().unwrap();
    load(&d, dir.path());
    run(&d, "cp1");
    let t = dir.path();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    // A file into the container: content, mode and (as the tar has it) owner kept.
    let f = t.join("f.txt");
    std::fs::write(&f, b"hello\n").unwrap();
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&f, Some(1234), Some(1234)).unwrap();
    d.docker(&["cp", &s(&f), "cp1:/tmp/f.txt"]).ok();
    let out = d.docker(&["exec", "cp1", "stat", "-c", "%u:%g %a", "/tmp/f.txt"]);
    assert_eq!(out.ok(), "1234:1234 640\n");
    assert_eq!(
        d.docker(&["exec", "cp1", "cat", "/tmp/f.txt"]).ok(),
        "hello\n"
    );
    // -a: owned by the container's user (root here), not the file's.
    d.docker(&["cp", "-a", &s(&f), "cp1:/tmp/owned.txt"]).ok();
    let out = d.docker(&["exec", "cp1", "stat", "-c", "%u:%g %a", "/tmp/owned.txt"]);
    assert_eq!(out.ok(), "0:0 640\n");
    // A directory into the container.
    std::fs::create_dir_all(t.join("d/sub")).unwrap();
    std::fs::write(t.join("d/x.txt"), b"x\n").unwrap();
    std::fs::write(t.join("d/sub/y.txt"), b"y\n").unwrap();
    d.docker(&["cp", &s(&t.join("d")), "cp1:/tmp/d"]).ok();
    assert_eq!(
        d.docker(&["exec", "cp1", "cat", "/tmp/d/x.txt", "/tmp/d/sub/y.txt"])
            .ok(),
        "x\ny\n"
    );
    // A file and a directory out of it, modes kept.
    d.docker(&["cp", "cp1:/data/a.txt", &s(&t.join("a.txt"))])
        .ok();
    assert_eq!(std::fs::read(t.join("a.txt")).unwrap(), b"aaa\n");
    assert_eq!(mode_of(&t.join("a.txt")), 0o600);
    d.docker(&["cp", "cp1:/data", &s(&t.join("out"))]).ok();
    assert_eq!(std::fs::read(t.join("out/sub/b.txt")).unwrap(), b"bbb\n");
    assert_eq!(mode_of(&t.join("out/sub")), 0o750);
    // The contents of a directory (`/.`) into an existing one.
    std::fs::create_dir(t.join("into")).unwrap();
    d.docker(&["cp", "cp1:/data/.", &s(&t.join("into"))]).ok();
    assert_eq!(std::fs::read(t.join("into/a.txt")).unwrap(), b"aaa\n");
    // Symlinks in the container leading "out" (/evil -> /, /etc/x -> /../../..) stay in it.
    let tag = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let host = HostPaths(vec![
        Path::new("/tmp").join(format!("pwned-{tag}")),
        Path::new("/tmp").join(format!("pwned2-{tag}")),
    ]);
    d.docker(&["cp", &s(&f), &format!("cp1:/evil/tmp/pwned-{tag}")])
        .ok();
    d.docker(&["cp", &s(&f), &format!("cp1:/etc/x/tmp/pwned2-{tag}")])
        .ok();
    for p in &host.0 {
        assert!(!p.exists(), "{} was written on the host", p.display());
    }
    let inside = d.docker(&[
        "exec",
        "cp1",
        "cat",
        &format!("/tmp/pwned-{tag}"),
        &format!("/tmp/pwned2-{tag}"),
    ]);
    assert_eq!(inside.ok(), "hello\nhello\n");
    for (i, p) in ["cp1:/evil/etc/shadow", "cp1:/etc/x/etc/shadow"]
        .iter()
        .enumerate()
    {
        let dst = t.join(format!("shadow{i}"));
        d.docker(&["cp", p, &s(&dst)]).ok();
        assert_eq!(std::fs::read(&dst).unwrap(), SHADOW, "{p}");
    }
    // The link itself comes out as a link.
    d.docker(&["cp", "cp1:/evil", &s(&t.join("evil"))]).ok();
    assert_eq!(std::fs::read_link(t.join("evil")).unwrap(), Path::new("/"));
    // A stopped container: both ways through its snapshot.
    d.docker(&["stop", "-t", "1", "cp1"]).ok();
    d.docker(&["cp", "cp1:/tmp/f.txt", &s(&t.join("after.txt"))])
        .ok();
    assert_eq!(std::fs::read(t.join("after.txt")).unwrap(), b"hello\n");
    d.docker(&["cp", &s(&f), "cp1:/tmp/g.txt"]).ok();
    d.docker(&["start", "cp1"]).ok();
    assert_eq!(
        d.docker(&["exec", "cp1", "cat", "/tmp/g.txt"]).ok(),
        "hello\n"
    );
    // Bad input: a missing path (the CLI's words and the daemon's), a body that is no tar.
    let out = d.docker(&["cp", "cp1:/nope", &s(&t.join("nope"))]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("No such container:path"),
        "{}",
        out.stderr
    );
    let (code, text) = raw(&d, "GET", "/v1.41/containers/cp1/archive?path=/nope", b"");
    assert_eq!(code, 404, "{text}");
    assert!(
        text.contains("Could not find the file /nope in container cp1"),
        "{text}"
    );
    let (code, text) = raw(&d, "HEAD", "/v1.41/containers/cp1/archive?path=/nope", b"");
    assert_eq!(code, 404, "{text}");
    let (code, text) = raw(&d, "HEAD", "/v1.41/containers/cp1/archive?path=/data", b"");
    assert_eq!(code, 200, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("x-docker-container-path-stat:"),
        "{text}"
    );
    let junk = vec![b'j'; 2048];
    let (code, text) = raw(&d, "PUT", "/v1.41/containers/cp1/archive?path=/tmp", &junk);
    assert_eq!(code, 400, "{text}");
    let (code, text) = raw(
        &d,
        "PUT",
        "/v1.41/containers/cp1/archive?path=/tmp",
        b"short",
    );
    assert_eq!(code, 400, "{text}");
    let (code, text) = raw(&d, "PUT", "/v1.41/containers/cp1/archive?path=/nope", b"");
    assert_eq!(code, 404, "{text}");
    // A directory is not replaced by a file.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    b.append_data(&mut h, "data", &b"z"[..]).unwrap();
    let tarball = b.into_inner().unwrap();
    let (code, text) = raw(
        &d,
        "PUT",
        "/v1.41/containers/cp1/archive?path=/&noOverwriteDirNonDir=true",
        &tarball,
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("cannot overwrite directory"), "{text}");
    d.docker(&["rm", "-f", "cp1"]).ok();
    // No temporary mount or spooled body is left.
    for sub in ["tmpmounts", "docker-cp"] {
        let left = std::fs::read_dir(d.state().join(sub))
            .map(|r| r.count())
            .unwrap_or(0);
        assert_eq!(left, 0, "{sub} left behind");
    }
}
