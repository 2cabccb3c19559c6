//! A container's data and resources through the Docker Engine API, driven by Debian's
//! unmodified docker CLI 20.10: `docker stats` (one-shot and streamed), `docker update`
//! (limits read back from the kernel, kept in inspect and across a restart), `docker diff`,
//! `docker export` and `docker commit` (with -c changes, -m, -a), and bad input with Docker's
//! codes and messages.
//!
//! berthd runs in a network namespace of the test's own; every test has its own daemon, temp
//! dirs and container names.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use berth_integration::manager::image;
use berth_integration::manager::tasks::NsDaemon;
use berth_integration::manager::{until, Berthd};

const IMAGE: &str = "berth/data-test:v1";

fn daemon() -> NsDaemon {
    NsDaemon::docker_with_busybox(
        IMAGE,
        &["bin/sleep", "bin/echo", "bin/rm", "bin/mkdir", "bin/touch"],
        vec![image::Entry::File("hello", 0o644, b"hi\n".to_vec())],
    )
}

fn inspect(d: &Berthd, name: &str, format: &str) -> String {
    d.docker(&["inspect", "--format", format, name])
        .ok()
        .trim()
        .to_string()
}

/// A file of the cgroup of `pid` for `controller`, as the kernel has it (v1: that
/// controller's hierarchy; v2: the unified one).
fn cgroup_file(pid: &str, controller: &str, file: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for l in text.lines() {
        let mut it = l.splitn(3, ':');
        let (_, ctrls, path) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        if ctrls.split(',').any(|c| c == controller) {
            let p = format!("/sys/fs/cgroup/{ctrls}{path}/{file}");
            return std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
        }
    }
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("no cgroup v1 controller and no v2 line");
    let p = format!("/sys/fs/cgroup{path}/{file}");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn v2() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The stats JSON of one sample (`stream=false`).
fn stats_once(d: &Berthd, name: &str) -> serde_json::Value {
    let (code, _, body) = d.docker_http(
        "GET",
        &format!("/v1.41/containers/{name}/stats?stream=false"),
        "application/json",
        b"",
    );
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The first `n` samples of a streamed stats answer (the connection is closed after them).
fn stats_stream(d: &Berthd, name: &str, n: usize) -> Vec<serde_json::Value> {
    let mut s = UnixStream::connect(d.docker_socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /v1.41/containers/{name}/stats HTTP/1.1\r\nHost: docker\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut out = Vec::new();
    let mut line = String::new();
    while out.len() < n {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "the stream ended");
        // Chunk sizes and the head are not JSON; each sample is one JSON line.
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim()) {
            if v.is_object() {
                out.push(v);
            }
        }
    }
    out
}

#[test]
fn stats_show_limits_cpu_memory_pids_and_network() {
    let d = daemon();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "busy",
        "-m",
        "32m",
        "--pids-limit",
        "20",
        IMAGE,
        "sh",
        "-c",
        "while :; do :; done",
    ])
    .ok();
    // The CLI's one-shot table: the limit set with -m, and CPU in use.
    let out = d.docker(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}}|{{.MemUsage}}|{{.CPUPerc}}|{{.PIDs}}",
        "busy",
    ]);
    let line = out.ok().trim().to_string();
    let f: Vec<&str> = line.split('|').collect();
    assert_eq!(f[0], "busy", "{line}");
    assert!(f[1].ends_with("/ 32MiB"), "{line}");
    let cpu: f64 = f[2].trim_end_matches('%').parse().unwrap();
    assert!(cpu > 10.0, "a busy loop shows CPU use: {line}");
    assert_eq!(f[3], "1", "{line}");
    // The API's shape, as dockerd's.
    let s = stats_once(&d, "busy");
    assert_eq!(s["name"], "/busy");
    assert_eq!(s["id"].as_str().unwrap().len(), 64);
    assert_eq!(s["memory_stats"]["limit"], 32 * 1024 * 1024);
    assert!(s["memory_stats"]["usage"].as_u64().unwrap() > 0, "{s}");
    assert!(s["memory_stats"]["stats"].is_object(), "{s}");
    let total = s["cpu_stats"]["cpu_usage"]["total_usage"].as_u64().unwrap();
    let pre = s["precpu_stats"]["cpu_usage"]["total_usage"]
        .as_u64()
        .unwrap();
    assert!(total > pre && pre > 0, "{s}");
    assert!(s["cpu_stats"]["system_cpu_usage"].as_u64().unwrap() > 0);
    assert!(s["cpu_stats"]["online_cpus"].as_u64().unwrap() >= 1);
    if !v2() {
        let per = s["cpu_stats"]["cpu_usage"]["percpu_usage"]
            .as_array()
            .unwrap();
        assert!(!per.is_empty(), "{s}");
    }
    assert_eq!(s["pids_stats"]["current"], 1, "{s}");
    assert_eq!(s["pids_stats"]["limit"], 20, "{s}");
    assert!(
        s["blkio_stats"]["io_service_bytes_recursive"].is_array(),
        "{s}"
    );
    assert!(s["networks"]["eth0"]["rx_bytes"].is_u64(), "{s}");
    assert!(s["networks"].get("lo").is_none(), "{s}");
    assert_ne!(s["preread"], "0001-01-01T00:00:00Z");
    // Streamed: a sample a second, each with the previous one's CPU figures.
    let v = stats_stream(&d, "busy", 2);
    assert_eq!(v[0]["precpu_stats"]["cpu_usage"]["total_usage"], 0);
    assert_eq!(
        v[1]["precpu_stats"]["cpu_usage"]["total_usage"],
        v[0]["cpu_stats"]["cpu_usage"]["total_usage"]
    );
    assert_eq!(v[1]["preread"], v[0]["read"]);
    // The CLI's streaming table refreshes until it is stopped.
    let mut cli = d
        .docker_command(&["stats", "--format", "{{.Name}} {{.MemUsage}}", "busy"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = cli.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut seen = 0;
    while seen < 3 {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) if l.contains("busy") && l.contains("/ 32MiB") => seen += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = cli.kill();
    let _ = cli.wait();
    let _ = reader.join();
    assert_eq!(seen, 3, "docker stats stopped refreshing");
    // A stopped container gives zeros, as dockerd does.
    d.docker(&["kill", "busy"]).ok();
    d.docker(&["wait", "busy"]).ok();
    let s = stats_once(&d, "busy");
    assert_eq!(s["cpu_stats"]["cpu_usage"]["total_usage"], 0, "{s}");
    assert_eq!(s["memory_stats"], serde_json::json!({}), "{s}");
    assert_eq!(s["name"], "/busy");
    let out = d.docker(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.MemUsage}}|{{.CPUPerc}}",
        "busy",
    ]);
    assert_eq!(out.ok().trim(), "0B / 0B|0.00%");
    d.docker(&["rm", "busy"]).ok();
}

#[test]
fn cpu_time_of_finished_work_is_counted() {
    let d = daemon();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "worker",
        IMAGE,
        "sh",
        "-c",
        "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; touch /done; sleep 1000",
    ])
    .ok();
    until("the work to end", 120, || {
        d.docker(&["exec", "worker", "cat", "/done"]).code == 0
    });
    let s = stats_once(&d, "worker");
    let total = s["cpu_stats"]["cpu_usage"]["total_usage"].as_u64().unwrap();
    // 300000 shell loop iterations take far more than 20 ms of CPU; an idle sleep far less.
    assert!(total > 20_000_000, "{s}");
    d.docker(&["rm", "-f", "worker"]).ok();
}

#[test]
fn update_changes_the_kernels_limits_inspect_and_survives_a_restart() {
    let d = daemon();
    d.docker(&[
        "run", "-d", "--name", "upd", "-m", "32m", IMAGE, "sleep", "1000",
    ])
    .ok();
    let pid = inspect(&d, "upd", "{{.State.Pid}}");
    let limit = if v2() {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    assert_eq!(cgroup_file(&pid, "memory", limit).trim(), "33554432");
    let out = d.docker(&[
        "update",
        "-m",
        "24m",
        "--pids-limit",
        "30",
        "--cpus",
        "0.5",
        "--cpu-shares",
        "512",
        "--restart",
        "on-failure:3",
        "upd",
    ]);
    assert_eq!(out.ok().trim(), "upd");
    assert_eq!(cgroup_file(&pid, "memory", limit).trim(), "25165824");
    assert_eq!(cgroup_file(&pid, "pids", "pids.max").trim(), "30");
    if v2() {
        assert_eq!(cgroup_file(&pid, "cpu", "cpu.max").trim(), "50000 100000");
    } else {
        assert_eq!(cgroup_file(&pid, "cpu", "cpu.cfs_quota_us").trim(), "50000");
        assert_eq!(cgroup_file(&pid, "cpu", "cpu.shares").trim(), "512");
    }
    assert_eq!(
        inspect(
            &d,
            "upd",
            "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}} {{.HostConfig.NanoCpus}} {{.HostConfig.CpuShares}} {{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}"
        ),
        "25165824 30 500000000 512 on-failure:3"
    );
    // stats see the new limit too.
    assert_eq!(stats_once(&d, "upd")["memory_stats"]["limit"], 25165824);
    // A restart keeps them: the new task's cgroup gets them from the stored spec.
    d.docker(&["restart", "-t", "1", "upd"]).ok();
    let pid2 = inspect(&d, "upd", "{{.State.Pid}}");
    assert_ne!(pid, pid2);
    assert_eq!(cgroup_file(&pid2, "memory", limit).trim(), "25165824");
    assert_eq!(cgroup_file(&pid2, "pids", "pids.max").trim(), "30");
    // An update of a stopped container is kept for its next start.
    d.docker(&["stop", "-t", "1", "upd"]).ok();
    d.docker(&["update", "-m", "40m", "upd"]).ok();
    d.docker(&["start", "upd"]).ok();
    let pid3 = inspect(&d, "upd", "{{.State.Pid}}");
    assert_eq!(cgroup_file(&pid3, "memory", limit).trim(), "41943040");
    assert_eq!(inspect(&d, "upd", "{{.HostConfig.Memory}}"), "41943040");
    d.docker(&["rm", "-f", "upd"]).ok();
}

#[test]
fn diff_export_and_commit_of_a_containers_changes() {
    let d = daemon();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "chg",
        IMAGE,
        "sh",
        "-c",
        "echo x > /x; echo changed > /hello; rm /etc/group; mkdir -p /newdir/sub; touch /newdir/sub/f; sleep 1000",
    ])
    .ok();
    until("the changes", 20, || {
        d.docker(&["exec", "chg", "cat", "/newdir/sub/f"]).code == 0
    });
    let diff = d.docker(&["diff", "chg"]);
    let lines: Vec<&str> = diff.ok().lines().collect();
    for want in [
        "A /x",
        "C /hello",
        "C /etc",
        "D /etc/group",
        "A /newdir",
        "A /newdir/sub",
        "A /newdir/sub/f",
    ] {
        assert!(lines.contains(&want), "{want} missing in:\n{}", diff.stdout);
    }
    // Only what the process did: not the mount points the runtime made, nothing unchanged.
    assert_eq!(lines.len(), 7, "{}", diff.stdout);
    // export: the whole filesystem, the new file included, read back by tar.
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("chg.tar");
    d.docker(&["export", "-o", tar.to_str().unwrap(), "chg"])
        .ok();
    let list = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .unwrap();
    assert!(list.status.success());
    let names = String::from_utf8_lossy(&list.stdout).into_owned();
    let names: Vec<&str> = names.lines().collect();
    for want in ["x", "hello", "bin/busybox", "newdir/sub/f"] {
        assert!(names.contains(&want), "{want} missing in {names:?}");
    }
    assert!(!names.contains(&"etc/group"), "{names:?}");
    let x = std::process::Command::new("tar")
        .arg("-xOf")
        .arg(&tar)
        .arg("x")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&x.stdout), "x\n");
    // commit with changes, a message and an author; the new image runs with them.
    let id = d.docker(&[
        "commit",
        "-c",
        r#"CMD ["cat","/x"]"#,
        "-c",
        "ENV COMMITTED=yes",
        "-m",
        "added x",
        "-a",
        "tester",
        "chg",
        "berth/committed:v1",
    ]);
    let id = id.ok().trim().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    // The container was paused for the commit, and runs again.
    assert_eq!(inspect(&d, "chg", "{{.State.Status}}"), "running");
    let run = d.docker(&["run", "--rm", "berth/committed:v1"]);
    assert_eq!(run.ok(), "x\n");
    let run = d.docker(&[
        "run",
        "--rm",
        "berth/committed:v1",
        "sh",
        "-c",
        "echo $COMMITTED; cat /hello; ls /etc/group || echo no-group",
    ]);
    let out = run.stdout.clone();
    assert_eq!(out, "yes\nchanged\nno-group\n", "{}", run.stderr);
    assert_eq!(
        d.docker(&["images", "-q", "--no-trunc", "berth/committed:v1"])
            .ok()
            .trim(),
        id
    );
    let hist = d.docker(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.Comment}}|{{.CreatedBy}}",
        "berth/committed:v1",
    ]);
    let first = hist.ok().lines().next().unwrap_or("").to_string();
    assert!(first.starts_with("added x|sh -c echo x"), "{}", hist.stdout);
    assert_eq!(inspect(&d, "berth/committed:v1", "{{.Author}}"), "tester");
    // Without a name: an untagged image; with pause=false the container keeps running.
    let id2 = d
        .docker(&["commit", "--pause=false", "chg"])
        .ok()
        .trim()
        .to_string();
    assert!(id2.starts_with("sha256:"), "{id2}");
    assert_eq!(inspect(&d, "chg", "{{.State.Status}}"), "running");
    // A stopped container commits from its snapshot, and exports through a temporary mount.
    d.docker(&["stop", "-t", "1", "chg"]).ok();
    d.docker(&["commit", "chg", "berth/committed:v2"]).ok();
    let run = d.docker(&[
        "run",
        "--rm",
        "berth/committed:v2",
        "cat",
        "/newdir/sub/f",
        "/x",
    ]);
    assert_eq!(run.ok(), "x\n");
    let tar2 = dir.path().join("stopped.tar");
    d.docker(&["export", "-o", tar2.to_str().unwrap(), "chg"])
        .ok();
    let list = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&tar2)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&list.stdout)
        .lines()
        .any(|l| l == "x"));
    d.docker(&["rm", "chg"]).ok();
    d.docker(&["rmi", "berth/committed:v1", "berth/committed:v2", &id2])
        .ok();
}

#[test]
fn bad_input_gets_dockers_codes_and_messages() {
    let d = daemon();
    let dir = tempfile::tempdir().unwrap();
    let out_tar = dir.path().join("out.tar");
    for args in [
        vec!["stats", "--no-stream", "nope"],
        vec!["diff", "nope"],
        vec!["export", "-o", out_tar.to_str().unwrap(), "nope"],
        vec!["update", "-m", "10m", "nope"],
        vec!["commit", "nope"],
    ] {
        let out = d.docker(&args);
        assert_ne!(out.code, 0, "{args:?}");
        assert!(
            out.stderr.contains("No such container: nope"),
            "{args:?}: {}",
            out.stderr
        );
    }
    for path in [
        "/v1.41/containers/nope/stats?stream=false",
        "/v1.41/containers/nope/changes",
        "/v1.41/containers/nope/export",
    ] {
        let (code, _, body) = d.docker_http("GET", path, "application/json", b"");
        assert_eq!(code, 404, "{path}: {body}");
    }
    d.docker(&["run", "-d", "--name", "bad", IMAGE, "sleep", "1000"])
        .ok();
    // An update of a field berthd does not apply: 400 naming it, and nothing changed.
    let out = d.docker(&["update", "--blkio-weight", "300", "bad"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("BlkioWeight"), "{}", out.stderr);
    assert!(out.stderr.contains("not supported"), "{}", out.stderr);
    let (code, _, body) = d.docker_http(
        "POST",
        "/v1.41/containers/bad/update",
        "application/json",
        br#"{"KernelMemory": 1048576}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("KernelMemory"), "{body}");
    let out = d.docker(&["update", "-m", "1k", "bad"]);
    assert!(
        out.stderr.contains("Minimum memory limit"),
        "{}",
        out.stderr
    );
    // Under 0.01 CPU the quota would be 0 (no limit at all) or under the kernel's 1 ms, and
    // under 6 MB of memory the container is killed as it starts: refused by create and update
    // alike, as dockerd does (found by the docker_create fuzz target), and nothing is made.
    let before = d.docker(&["ps", "-aq"]).ok().to_string();
    for (args, says) in [
        (
            vec!["update", "--cpus", "0.001", "bad"],
            "Range of CPUs is from 0.01",
        ),
        (
            vec!["create", "--cpus", "0.001", IMAGE],
            "Range of CPUs is from 0.01",
        ),
        (
            vec!["create", "-m", "1k", IMAGE],
            "Minimum memory limit allowed is 6MB",
        ),
    ] {
        let out = d.docker(&args);
        assert_ne!(out.code, 0, "{args:?}");
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
    assert_eq!(d.docker(&["ps", "-aq"]).ok().to_string(), before);
    let out = d.docker(&["update", "--restart", "sometimes", "bad"]);
    assert_ne!(out.code, 0);
    let (code, _, body) = d.docker_http(
        "POST",
        "/v1.41/containers/bad/update",
        "application/json",
        b"{nope",
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(inspect(&d, "bad", "{{.HostConfig.Memory}}"), "0");
    // A bad change line: 400 naming it; no image is made.
    let before = d.docker(&["images", "-aq"]).ok().to_string();
    let out = d.docker(&["commit", "-c", "RUN rm -rf /", "bad", "berth/nope:v1"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("RUN is not a valid change command"),
        "{}",
        out.stderr
    );
    let out = d.docker(&["commit", "-c", "FROBNICATE x", "bad"]);
    assert!(out.stderr.contains("FROBNICATE"), "{}", out.stderr);
    // An invalid repository name (the CLI checks names itself, so raw HTTP): 400.
    for q in ["repo=Bad%20Name", "repo=UPPER", "repo=ok&tag=a:b"] {
        let (code, _, body) = d.docker_http(
            "POST",
            &format!("/v1.41/commit?container=bad&{q}"),
            "application/json",
            b"",
        );
        assert_eq!(code, 400, "{q}: {body}");
        assert!(body.contains("invalid"), "{q}: {body}");
    }
    let (code, _, body) = d.docker_http(
        "GET",
        "/v1.41/containers/bad/stats?stream=true&one-shot=true",
        "application/json",
        b"",
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(d.docker(&["images", "-aq"]).ok().to_string(), before);
    assert_eq!(inspect(&d, "bad", "{{.State.Status}}"), "running");
    d.docker(&["rm", "-f", "bad"]).ok();
}
