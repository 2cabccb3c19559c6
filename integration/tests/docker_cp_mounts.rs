//! `docker cp` into and out of what is mounted in a container: named volumes, binds and
//! tmpfs, on a running container (its own view of its filesystem) and a stopped one (the
//! spec's binds and volumes mapped by path); read-only mounts and rootfs refused as dockerd
//! refuses them; and attacks that must never lead a copy out of a mount or onto the host:
//! symlinks inside a volume to `/` and `../../..`, `..` climbing out of a mount, a bind
//! source that is (or became) a symlink. Driven by Debian's unmodified docker CLI 20.10.
//!
//! berthd runs in a network namespace of the test's own; every test has its own daemon, temp
//! dirs and container names.

use std::path::{Path, PathBuf};

use berth_integration::manager::image;
use berth_integration::manager::tasks::NsDaemon;
use berth_integration::manager::Berthd;

const IMAGE: &str = "berth/cp-mounts:v1";
/// The container's /etc/shadow (the host's must never be read instead).
const SHADOW: &[u8] = b"root:container-shadow:0:0:99999:7:::\n";

/// berthd in its own netns with the test image loaded; its containers go on drop.
fn daemon() -> NsDaemon {
    NsDaemon::docker_with_busybox(
        IMAGE,
        &["bin/sleep", "bin/stat", "bin/ln", "bin/mkdir", "bin/echo"],
        vec![
            image::Entry::Dir("etc", 0o755),
            image::Entry::File(
                "etc/passwd",
                0o644,
                b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n".to_vec(),
            ),
            image::Entry::File("etc/shadow", 0o640, SHADOW.to_vec()),
            image::Entry::Dir("vol", 0o755),
            image::Entry::Dir("bind", 0o755),
        ],
    )
}

/// A unique tag for paths a failed confinement could create on the host.
fn tag() -> String {
    berth_integration::manager::unique("cpm")
}

/// Removes host paths a failed confinement could have created, whatever the test's outcome.
struct HostPaths(Vec<PathBuf>);

impl Drop for HostPaths {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl HostPaths {
    fn untouched(&self) {
        for p in &self.0 {
            assert!(!p.exists(), "{} was written on the host", p.display());
        }
    }
}

/// A temp dir with `host/` (files the test copies) and `bind/` (a bind's source) in it.
fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let (host, bind) = (t.path().join("host"), t.path().join("bind"));
    std::fs::create_dir(&host).unwrap();
    std::fs::create_dir(&bind).unwrap();
    (t, host, bind)
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// A host file with `content` in `dir`.
fn file(dir: &Path, name: &str, content: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    s(&p)
}

/// What `docker cp CONTAINER:PATH` gives (a file), read from a fresh host path.
fn cp_out(d: &Berthd, dir: &Path, src: &str) -> Vec<u8> {
    let dst = dir.join(format!("out-{}", tag()));
    d.docker(&["cp", src, &s(&dst)]).ok();
    std::fs::read(&dst).unwrap()
}

/// What another container using volume `vol` reads at `path` in it.
fn via_volume(d: &Berthd, vol: &str, path: &str) -> String {
    d.docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{vol}:/v"),
        IMAGE,
        "cat",
        &format!("/v/{path}"),
    ])
    .ok()
    .to_string()
}

#[test]
fn cp_reaches_volumes_binds_and_tmpfs_running_and_stopped() {
    let d = daemon();
    let (_t, host, bind) = dirs();
    d.docker(&["volume", "create", "data"]).ok();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "c1",
        "-v",
        "data:/vol",
        "-v",
        &format!("{}:/bind", s(&bind)),
        "-v",
        &format!("{}:/etc/fb", file(&host, "fb", b"file bind\n")),
        "--tmpfs",
        "/tmp/t",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    assert_eq!(cp_out(&d, &host, "c1:/etc/fb"), b"file bind\n");
    // Running: into the volume, seen in the container and by another container.
    let f1 = file(&host, "f1", b"one\n");
    d.docker(&["cp", &f1, "c1:/vol/f1"]).ok();
    assert_eq!(d.docker(&["exec", "c1", "cat", "/vol/f1"]).ok(), "one\n");
    assert_eq!(via_volume(&d, "data", "f1"), "one\n");
    // Into the bind: on the host.
    d.docker(&["cp", &f1, "c1:/bind/f1"]).ok();
    assert_eq!(std::fs::read(bind.join("f1")).unwrap(), b"one\n");
    // Out of both: what the container wrote there, not the image's directory under them.
    d.docker(&[
        "exec",
        "c1",
        "sh",
        "-c",
        "echo vol > /vol/w; echo bind > /bind/w",
    ])
    .ok();
    assert_eq!(cp_out(&d, &host, "c1:/vol/w"), b"vol\n");
    assert_eq!(cp_out(&d, &host, "c1:/bind/w"), b"bind\n");
    // A directory out of the volume.
    let out = host.join("voldir");
    d.docker(&["cp", "c1:/vol", &s(&out)]).ok();
    assert_eq!(std::fs::read(out.join("f1")).unwrap(), b"one\n");
    assert_eq!(std::fs::read(out.join("w")).unwrap(), b"vol\n");
    // The tmpfs of a running container, both ways.
    d.docker(&["cp", &f1, "c1:/tmp/t/f1"]).ok();
    assert_eq!(d.docker(&["exec", "c1", "cat", "/tmp/t/f1"]).ok(), "one\n");
    d.docker(&["exec", "c1", "sh", "-c", "echo tmp > /tmp/t/w"])
        .ok();
    assert_eq!(cp_out(&d, &host, "c1:/tmp/t/w"), b"tmp\n");
    // The container's /proc and /sys come out as their directories alone.
    for p in ["proc", "sys"] {
        let out = host.join(p);
        d.docker(&["cp", &format!("c1:/{p}"), &s(&out)]).ok();
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "/{p}");
    }
    // `cp -a` into the volume of a container running as user 1000: owned by it.
    d.docker(&[
        "run",
        "-d",
        "--name",
        "u1",
        "-u",
        "1000",
        "-v",
        "data:/vol",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    d.docker(&["cp", "-a", &f1, "u1:/vol/owned"]).ok();
    let out = d.docker(&["exec", "u1", "stat", "-c", "%u:%g", "/vol/owned"]);
    assert_eq!(out.ok(), "1000:1000\n");
    d.docker(&["rm", "-f", "u1"]).ok();

    // Stopped: the spec's volume and bind, mapped by path.
    d.docker(&["stop", "-t", "1", "c1"]).ok();
    let f2 = file(&host, "f2", b"two\n");
    d.docker(&["cp", &f2, "c1:/vol/f2"]).ok();
    d.docker(&["cp", &f2, "c1:/bind/f2"]).ok();
    assert_eq!(via_volume(&d, "data", "f2"), "two\n");
    assert_eq!(std::fs::read(bind.join("f2")).unwrap(), b"two\n");
    assert_eq!(cp_out(&d, &host, "c1:/vol/w"), b"vol\n");
    assert_eq!(cp_out(&d, &host, "c1:/bind/w"), b"bind\n");
    assert_eq!(cp_out(&d, &host, "c1:/etc/fb"), b"file bind\n");
    // The contents of the volume (`/.`) into a host directory.
    let into = host.join("into");
    std::fs::create_dir(&into).unwrap();
    d.docker(&["cp", "c1:/vol/.", &s(&into)]).ok();
    assert_eq!(std::fs::read(into.join("f2")).unwrap(), b"two\n");
    // A stopped container's tmpfs has no content: as with dockerd, the copy lands in the
    // rootfs under it, which the next start hides again.
    d.docker(&["cp", &f2, "c1:/tmp/t/f2"]).ok();
    assert_eq!(cp_out(&d, &host, "c1:/tmp/t/f2"), b"two\n");
    d.docker(&["start", "c1"]).ok();
    assert_eq!(d.docker(&["exec", "c1", "ls", "-A", "/tmp/t"]).ok(), "");
    assert_eq!(d.docker(&["exec", "c1", "cat", "/vol/f2"]).ok(), "two\n");
    assert_eq!(d.docker(&["exec", "c1", "cat", "/bind/f2"]).ok(), "two\n");
    d.docker(&["rm", "-f", "c1"]).ok();
}

#[test]
fn cp_refuses_read_only_mounts_and_rootfs() {
    let d = daemon();
    let (_t, host, bind) = dirs();
    std::fs::write(bind.join("kept"), b"kept\n").unwrap();
    d.docker(&["volume", "create", "rodata"]).ok();
    d.docker(&[
        "run",
        "--rm",
        "-v",
        "rodata:/v",
        IMAGE,
        "sh",
        "-c",
        "echo ro > /v/r",
    ])
    .ok();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "ro1",
        "--read-only",
        "-v",
        "rodata:/vol:ro",
        "-v",
        &format!("{}:/bind:ro", s(&bind)),
        "--tmpfs",
        "/tmp/t",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    let f = file(&host, "f", b"new\n");
    for state in ["running", "stopped"] {
        for dst in ["ro1:/vol/f", "ro1:/bind/f", "ro1:/bind/kept"] {
            let out = d.docker(&["cp", &f, dst]);
            assert_ne!(out.code, 0, "{state} {dst}");
            assert!(
                out.stderr.contains("mounted volume is marked read-only"),
                "{state} {dst}: {}",
                out.stderr
            );
        }
        let out = d.docker(&["cp", &f, "ro1:/etc/f"]);
        assert_ne!(out.code, 0, "{state}");
        assert!(
            out.stderr.contains("container rootfs is marked read-only"),
            "{state}: {}",
            out.stderr
        );
        // The status dockerd gives (a plain error: 500).
        let (code, _, body) = d.docker_http(
            "PUT",
            "/v1.41/containers/ro1/archive?path=/vol",
            "application/x-tar",
            &[0; 1024],
        );
        assert_eq!(code, 500, "{state}: {body}");
        assert!(
            body.contains("mounted volume is marked read-only"),
            "{body}"
        );
        // Reading them is fine.
        assert_eq!(cp_out(&d, &host, "ro1:/vol/r"), b"ro\n", "{state}");
        assert_eq!(cp_out(&d, &host, "ro1:/bind/kept"), b"kept\n", "{state}");
        d.docker(&["stop", "-t", "1", "ro1"]).ok();
    }
    assert_eq!(std::fs::read(bind.join("kept")).unwrap(), b"kept\n");
    assert!(!bind.join("f").exists());
    assert_eq!(
        d.docker(&["run", "--rm", "-v", "rodata:/v", IMAGE, "ls", "/v"])
            .ok(),
        "r\n"
    );
    // The tmpfs of a running read-only container takes a copy (it is not the rootfs).
    d.docker(&["start", "ro1"]).ok();
    d.docker(&["cp", &f, "ro1:/tmp/t/f"]).ok();
    assert_eq!(d.docker(&["exec", "ro1", "cat", "/tmp/t/f"]).ok(), "new\n");
    d.docker(&["rm", "-f", "ro1"]).ok();
}

#[test]
fn cp_symlinks_and_dotdot_never_leave_the_mount_or_the_container() {
    let d = daemon();
    let (t, host, bind) = dirs();
    let tag = tag();
    let guard = HostPaths(vec![
        Path::new("/tmp").join(format!("pwned-{tag}")),
        Path::new("/tmp").join(format!("pwned2-{tag}")),
        Path::new("/tmp").join(format!("pwned3-{tag}")),
        Path::new("/").join(format!("pwned-{tag}")),
        Path::new("/").join(format!("pwned2-{tag}")),
        t.path().join(format!("pwned-{tag}")),
    ]);
    d.docker(&["volume", "create", "evil"]).ok();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "a1",
        "-v",
        "evil:/vol",
        "-v",
        &format!("{}:/bind", s(&bind)),
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    // The container plants links in its volume and bind (CVE-2018-15664's set-up).
    d.docker(&[
        "exec",
        "a1",
        "sh",
        "-c",
        "ln -s / /vol/root && ln -s ../../.. /vol/up && mkdir -p /vol/etc && \
         echo volume-passwd > /vol/etc/passwd && ln -s / /bind/root && ln -s ../../.. /bind/up",
    ])
    .ok();
    let f = file(&host, "f", b"payload\n");
    let host_passwd = std::fs::read("/etc/passwd").unwrap();
    // Running: the links resolve in the container (its / is not the host's).
    d.docker(&["cp", &f, &format!("a1:/vol/root/tmp/pwned-{tag}")])
        .ok();
    d.docker(&["cp", &f, &format!("a1:/bind/up/tmp/pwned2-{tag}")])
        .ok();
    d.docker(&["cp", &f, &format!("a1:/vol/../../../tmp/pwned3-{tag}")])
        .ok();
    guard.untouched();
    let inside = d.docker(&[
        "exec",
        "a1",
        "cat",
        &format!("/tmp/pwned-{tag}"),
        &format!("/tmp/pwned2-{tag}"),
        &format!("/tmp/pwned3-{tag}"),
    ]);
    assert_eq!(inside.ok(), "payload\npayload\npayload\n");
    for p in [
        "a1:/vol/root/etc/shadow",
        "a1:/vol/up/etc/shadow",
        "a1:/bind/up/etc/shadow",
        "a1:/vol/../../etc/shadow",
    ] {
        assert_eq!(cp_out(&d, &host, p), SHADOW, "{p}");
    }
    // Stopped: the links resolve in the volume (or bind) itself, never on the host.
    d.docker(&["stop", "-t", "1", "a1"]).ok();
    d.docker(&["cp", &f, &format!("a1:/vol/root/pwned-{tag}")])
        .ok();
    d.docker(&["cp", &f, &format!("a1:/bind/up/pwned2-{tag}")])
        .ok();
    guard.untouched();
    assert_eq!(via_volume(&d, "evil", &format!("pwned-{tag}")), "payload\n");
    assert_eq!(
        std::fs::read(bind.join(format!("pwned2-{tag}"))).unwrap(),
        b"payload\n"
    );
    for p in ["a1:/vol/root/etc/passwd", "a1:/vol/up/etc/passwd"] {
        let got = cp_out(&d, &host, p);
        assert_ne!(got, host_passwd, "{p} read the host's /etc/passwd");
        assert_eq!(got, b"volume-passwd\n", "{p}");
    }
    let out = d.docker(&["cp", "a1:/bind/up/etc/passwd", &s(&host.join("x"))]);
    assert_ne!(out.code, 0, "the bind has no etc/passwd: {}", out.stdout);
    // `..` out of a mount lands in the container's rootfs, not the host's.
    assert_eq!(cp_out(&d, &host, "a1:/vol/../../../etc/shadow"), SHADOW);
    assert_eq!(cp_out(&d, &host, "a1:/bind/../etc/shadow"), SHADOW);
    d.docker(&["cp", &f, &format!("a1:/vol/../../tmp/pwned-{tag}")])
        .ok();
    guard.untouched();
    d.docker(&["rm", "-f", "a1"]).ok();
}

#[test]
fn cp_never_follows_a_bind_source_symlink_of_a_stopped_container() {
    let d = daemon();
    let t = tempfile::tempdir().unwrap();
    let host = t.path().join("host");
    std::fs::create_dir(&host).unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let real = t.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = t.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let tag = tag();
    let guard = HostPaths(vec![Path::new("/tmp").join(format!("pwned-{tag}"))]);
    // A bind whose source is a symlink: the runtime follows it at start, as dockerd's does.
    d.docker(&[
        "run",
        "-d",
        "--name",
        "l1",
        "-v",
        &format!("{}:/data", s(&link)),
        "-v",
        &format!("{}:/src", s(&src)),
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    let f = file(&host, "f", b"payload\n");
    d.docker(&["cp", &f, "l1:/data/f"]).ok();
    assert_eq!(std::fs::read(real.join("f")).unwrap(), b"payload\n");
    d.docker(&["stop", "-t", "1", "l1"]).ok();
    // Stopped: refused, naming the source.
    let out = d.docker(&["cp", &f, "l1:/data/g"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains(&format!("the source {} of the mount at /data", s(&link)))
            && out.stderr.contains("symlink"),
        "{}",
        out.stderr
    );
    let out = d.docker(&["cp", "l1:/data/f", &s(&host.join("g"))]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("symlink"), "{}", out.stderr);
    assert!(!real.join("g").exists());
    // The source of a stopped container's bind swapped for a link to `/` (as a container
    // with the parent directory bound could do): nothing reaches the host.
    std::fs::remove_dir(&src).unwrap();
    std::os::unix::fs::symlink("/", &src).unwrap();
    let out = d.docker(&["cp", &f, &format!("l1:/src/tmp/pwned-{tag}")]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("symlink"), "{}", out.stderr);
    guard.untouched();
    let out = d.docker(&["cp", "l1:/src/etc/passwd", &s(&host.join("p"))]);
    assert_ne!(out.code, 0);
    assert!(!host.join("p").exists());
    d.docker(&["rm", "-f", "l1"]).ok();
    std::fs::remove_file(&src).unwrap();
}
