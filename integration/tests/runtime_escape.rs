//! The classic runc escapes, each tried for real against the runtime under test:
//! - CVE-2019-5736: a process in the container opens the runtime's own binary through
//!   /proc/PID/exe of a runtime process that sits in the container (the init before start, an
//!   exec'd process before its execve) and writes to it;
//! - CVE-2024-21626: process.cwd through a leaked runtime fd (/proc/self/fd/N) lands outside
//!   the rootfs;
//! - a mount whose destination is a symlink pointing out of the rootfs;
//! - fds of the runtime leaking into the container.
//!
//! The binary under attack is a private copy, so a failing test cannot break the real one.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use berth_integration::runtime::{unique_name, Bundle, Runtime};
use sha2::{Digest, Sha256};

fn sha256(path: &Path) -> Result<String> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex(&Sha256::digest(&data)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A private copy of the runtime under test, in its own temp dir.
fn private_runtime() -> Result<(tempfile::TempDir, PathBuf, Runtime)> {
    let original = berth_integration::bins::berth_runc();
    let dir = tempfile::tempdir()?;
    let copy = dir.path().join("runtime-under-attack");
    fs::copy(&original, &copy).with_context(|| format!("copying {}", original.display()))?;
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755))?;
    let rt = Runtime::with_binary(copy.clone())?;
    Ok((dir, copy, rt))
}

#[test]
fn the_runtime_binary_cannot_be_read_or_overwritten_through_proc_exe() -> Result<()> {
    let (_dir, binary, rt) = private_runtime()?;
    let before = sha256(&binary)?;
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "30"]);
    let id = unique_name("exe");
    let guard = rt.guard(&id, &bundle);
    rt.create(&id, &bundle)?.ok();
    // The init is pid 1 of the container and still the runtime's binary until start.
    let attack = "ls -l /proc/1/exe 2>&1; \
                  if cat /proc/1/exe > /tmp/copy 2>/dev/null; then echo READ-OK; fi; \
                  if echo pwned >> /proc/1/exe 2>/dev/null; then echo WRITE-OK; fi; \
                  echo done";
    let out = rt.exec(&["exec", &id, "sh", "-c", attack])?;
    assert!(out.stdout.contains("done"), "{}", out.describe());
    assert!(
        !out.stdout.contains("READ-OK"),
        "the container read the runtime's binary: {}",
        out.describe()
    );
    assert!(
        !out.stdout.contains("WRITE-OK"),
        "the container wrote the runtime's binary: {}",
        out.describe()
    );
    assert!(
        out.stdout.contains("Permission denied"),
        "/proc/1/exe should be off limits: {}",
        out.describe()
    );
    rt.start(&id)?.ok();
    rt.exec(&["delete", "--force", &id])?.ok();
    guard.assert_no_leftovers();
    assert_eq!(sha256(&binary)?, before, "the runtime's binary changed");
    Ok(())
}

/// The attack for a container granted CAP_SYS_PTRACE, which non-dumpable does not stop: a
/// process in the container opens the waiting init's /proc/1/exe, keeps the fd, and once the
/// init has exec'd (the binary is no longer busy) reopens it for writing.
#[test]
fn a_container_with_cap_sys_ptrace_cannot_overwrite_the_runtime() -> Result<()> {
    let (_dir, binary, rt) = private_runtime()?;
    let before = sha256(&binary)?;
    let mut caps = berth_integration::runtime::DEFAULT_CAPS.to_vec();
    caps.push("CAP_SYS_PTRACE");
    let mut bundle = Bundle::new()?;
    bundle.capabilities(&caps).args(&["sleep", "30"]);
    let id = unique_name("exe-ptrace");
    let guard = rt.guard(&id, &bundle);
    rt.create(&id, &bundle)?.ok();
    let attack = "exec 3</proc/1/exe || { echo OPEN-FAILED > /dev/shm/result; exit 0; }; \
                  echo HELD > /dev/shm/held; \
                  for i in $(seq 100); do \
                    if echo pwned >> /proc/self/fd/3; then echo WROTE > /dev/shm/result; exit 0; fi; \
                    sleep 0.05; \
                  done 2>/dev/null; echo GAVE-UP > /dev/shm/result";
    rt.exec(&["exec", "--detach", &id, "sh", "-c", attack])?
        .ok();
    let read = |path: &str| -> Result<String> {
        Ok(rt
            .exec(&["exec", &id, "cat", path])?
            .stdout
            .trim()
            .to_string())
    };
    // The attacker holds the fd before the init moves on.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while read("/dev/shm/held")? != "HELD" && read("/dev/shm/result")?.is_empty() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the attacker never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    rt.start(&id)?.ok();
    let result = loop {
        let r = read("/dev/shm/result")?;
        if !r.is_empty() {
            break r;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline + std::time::Duration::from_secs(10),
            "the attacker never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    rt.exec(&["delete", "--force", &id])?.ok();
    guard.assert_no_leftovers();
    assert_eq!(
        sha256(&binary)?,
        before,
        "the runtime's binary changed ({result})"
    );
    // With CAP_SYS_PTRACE the open succeeds (of a sealed copy): the write is what must fail.
    assert_eq!(result, "GAVE-UP", "attack outcome");
    Ok(())
}

/// The sealed re-exec keeps what the caller gave: `exec --process -` reads standard input once.
#[test]
fn exec_with_the_process_on_stdin_works_from_the_sealed_copy() -> Result<()> {
    let rt = Runtime::new()?;
    let mut caps = berth_integration::runtime::DEFAULT_CAPS.to_vec();
    caps.push("CAP_SYS_PTRACE");
    let mut bundle = Bundle::new()?;
    bundle.capabilities(&caps).args(&["sleep", "30"]);
    let id = unique_name("ptrace-stdin");
    let guard = rt.guard(&id, &bundle);
    rt.create(&id, &bundle)?.ok();
    rt.start(&id)?.ok();
    let dir = tempfile::tempdir()?;
    let process = dir.path().join("process.json");
    let mut p = bundle.config()["process"].clone();
    p["args"] = serde_json::json!(["sh", "-c", "echo from-stdin; readlink /proc/self/exe"]);
    fs::write(&process, serde_json::to_vec(&p)?)?;
    let io = berth_integration::runtime::Io {
        stdin: Some(process),
        ..Default::default()
    };
    let out = rt.exec_with(&["exec", "--process", "-", &id], io)?.ok();
    assert!(out.stdout.contains("from-stdin"), "{}", out.describe());
    rt.exec(&["delete", "--force", &id])?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn cwd_through_a_leaked_fd_is_refused() -> Result<()> {
    let rt = Runtime::new()?;
    // Markers that only exist on the host side, where a leaked directory fd would lead.
    fs::create_dir_all(rt.root())?;
    fs::write(rt.root().join("HOST-MARKER-ROOT"), "x")?;
    for fd in 3..12 {
        let mut bundle = Bundle::new()?;
        fs::write(bundle.path().join("HOST-MARKER-BUNDLE"), "x")?;
        let cwd = format!("/proc/self/fd/{fd}");
        bundle.cwd(&cwd).sh("pwd; ls -a . ..; ls -a ../../../..");
        let id = unique_name("cwd");
        let guard = rt.guard(&id, &bundle);
        let out = rt.run(&id, &bundle)?;
        assert!(
            !out.stdout.contains("HOST-MARKER"),
            "cwd {cwd} reached the host: {}",
            out.describe()
        );
        if !out.success() {
            assert!(
                out.stderr.contains("cwd") || out.stderr.contains("working directory"),
                "a refused cwd must say why: {}",
                out.describe()
            );
        }
        guard.assert_no_leftovers();
    }
    Ok(())
}

#[test]
fn a_symlinked_mount_destination_lands_inside_the_rootfs() -> Result<()> {
    let rt = Runtime::new()?;
    let outside = tempfile::tempdir()?;
    let mut bundle = Bundle::with_own_rootfs()?;
    std::os::unix::fs::symlink(outside.path(), bundle.rootfs().join("evil"))?;
    std::os::unix::fs::symlink("../../../../../..", bundle.rootfs().join("up"))?;
    bundle
        .mount("/evil/sub", "tmpfs", "tmpfs", &["size=1m"])
        .mount("/up/tmp/escape", "tmpfs", "tmpfs", &["size=1m"])
        .args(&["sleep", "30"]);
    let id = unique_name("symlink-mount");
    let guard = rt.guard(&id, &bundle);
    rt.create(&id, &bundle)?.ok();
    let mounts = fs::read_to_string("/proc/self/mountinfo")?;
    let outside_sub = outside.path().join("sub");
    assert!(
        !mounts.contains(&format!(" {} ", outside_sub.display())),
        "a mount landed on the host at {}",
        outside_sub.display()
    );
    assert!(
        !outside_sub.exists(),
        "the runtime created {} on the host",
        outside_sub.display()
    );
    assert!(
        !Path::new("/tmp/escape").exists(),
        "the runtime created /tmp/escape on the host"
    );
    // Inside, the mounts are where the symlinks lead when the rootfs is /.
    let out = rt
        .exec(&[
            "exec",
            &id,
            "sh",
            "-c",
            "grep -c tmpfs /proc/self/mountinfo; stat -f -c %T /evil/sub /up/tmp/escape",
        ])?
        .ok();
    assert!(out.stdout.contains("tmpfs\ntmpfs"), "{}", out.describe());
    let inside = bundle
        .rootfs()
        .join(outside.path().strip_prefix("/")?)
        .join("sub");
    assert!(
        inside.is_dir(),
        "{} was not created inside the rootfs",
        inside.display()
    );
    rt.exec(&["delete", "--force", &id])?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn no_runtime_fd_reaches_the_container() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    // Each open fd with what it points to; ls itself holds one for the directory.
    bundle.sh("for f in /proc/self/fd/*; do echo \"$f -> $(readlink $f)\"; done");
    let id = unique_name("fds");
    let guard = rt.guard(&id, &bundle);
    let out = rt.run(&id, &bundle)?.ok();
    let fds: Vec<&str> = out.stdout.lines().collect();
    for line in &fds {
        let n: u32 = line
            .trim_start_matches("/proc/self/fd/")
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(99);
        // 0-2 are stdio; 3 is the shell's own glob/readlink work at most.
        assert!(
            n <= 3,
            "fd leaked into the container: {line}\n{}",
            out.describe()
        );
        assert!(
            !line.contains(&rt.root().display().to_string()),
            "state dir leaked: {line}"
        );
    }
    guard.assert_no_leftovers();
    Ok(())
}
