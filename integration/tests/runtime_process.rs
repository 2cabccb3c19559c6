//! The container process as configured: rlimits, user and groups, cwd, env (and HOME from the
//! container's passwd, as runc sets it), umask, and the
//! file descriptors it inherits. Every test also passes against runc
//! (`BERTH_RUNC=/usr/bin/runc`).

use std::collections::BTreeSet;
use std::fs;
use std::os::fd::AsRawFd;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use berth_integration::runtime::driver::Io;
use berth_integration::runtime::{kernel, unique_name, wait_for, Bundle, Output, Runtime};

const WAIT: Duration = Duration::from_secs(10);

fn run(rt: &Runtime, bundle: &Bundle, name: &str) -> Result<Output> {
    let id = unique_name(name);
    let guard = rt.guard(&id, bundle);
    let out = rt.run(&id, bundle)?;
    guard.assert_no_leftovers();
    Ok(out)
}

/// The soft and hard values of one row of a /proc/<pid>/limits text.
fn limit_row(limits: &str, row: &str) -> Option<(String, String)> {
    let line = limits.lines().find(|l| l.starts_with(row))?;
    let mut fields = line[row.len()..].split_whitespace();
    Some((fields.next()?.to_string(), fields.next()?.to_string()))
}

#[test]
fn rlimit_nofile_of_the_default_spec() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.sh("ulimit -n; ulimit -Hn");
    let out = run(&rt, &bundle, "nofile")?.ok();
    assert_eq!(out.stdout, "1024\n1024\n");
    Ok(())
}

#[test]
fn rlimits_soft_below_hard() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle
        .rlimit("RLIMIT_NOFILE", 256, 512)
        .rlimit("RLIMIT_NPROC", 300, 400)
        .rlimit("RLIMIT_CORE", 0, 8192)
        .sh("ulimit -n; ulimit -Hn; cat /proc/self/limits");
    let out = run(&rt, &bundle, "rlimits")?.ok();
    assert!(out.stdout.starts_with("256\n512\n"), "{}", out.stdout);
    let pairs = |s: &str, h: &str| Some((s.to_string(), h.to_string()));
    assert_eq!(
        limit_row(&out.stdout, "Max open files"),
        pairs("256", "512")
    );
    assert_eq!(limit_row(&out.stdout, "Max processes"), pairs("300", "400"));
    assert_eq!(
        limit_row(&out.stdout, "Max core file size"),
        pairs("0", "8192")
    );
    Ok(())
}

#[test]
fn user_group_and_additional_groups() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle
        .user(1000, 1001, &[10, 20], None)
        .sh("id -u; id -g; grep -E '^(Uid|Gid|Groups):' /proc/self/status");
    let out = run(&rt, &bundle, "user")?.ok();
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("1000"), "{}", out.stdout);
    assert_eq!(lines.next(), Some("1001"), "{}", out.stdout);
    let uid_line = kernel::status_field(&out.stdout, "Uid").unwrap_or_default();
    let uids: Vec<&str> = uid_line.split_whitespace().collect();
    assert_eq!(uids, vec!["1000"; 4], "real/effective/saved/fs uid");
    let gid_line = kernel::status_field(&out.stdout, "Gid").unwrap_or_default();
    let gids: Vec<&str> = gid_line.split_whitespace().collect();
    assert_eq!(gids, vec!["1001"; 4], "real/effective/saved/fs gid");
    let groups: BTreeSet<String> = kernel::status_field(&out.stdout, "Groups")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let want: BTreeSet<String> = ["10", "20"].iter().map(|s| s.to_string()).collect();
    assert_eq!(groups, want, "supplementary groups");
    Ok(())
}

#[test]
fn root_user_has_no_supplementary_groups_by_default() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.sh("grep -E '^(Uid|Gid|Groups):' /proc/self/status");
    let out = run(&rt, &bundle, "root-groups")?.ok();
    let groups = kernel::status_field(&out.stdout, "Groups").unwrap_or_default();
    assert_eq!(groups, "", "root's supplementary groups: {}", out.stdout);
    let uid_line = kernel::status_field(&out.stdout, "Uid").unwrap_or_default();
    let uids: Vec<&str> = uid_line.split_whitespace().collect();
    assert_eq!(uids, vec!["0"; 4], "uids");
    Ok(())
}

#[test]
fn cwd_is_the_configured_dir() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.cwd("/tmp").sh("pwd");
    let out = run(&rt, &bundle, "cwd")?.ok();
    assert_eq!(out.stdout, "/tmp\n");
    Ok(())
}

#[test]
fn env_is_the_configured_list() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle
        .env("FOO=bar")
        .env("WITH_SPACE=a b  c")
        .env("EMPTY=")
        .sh("echo \"$FOO|$WITH_SPACE|${EMPTY-unset}|$PATH|$TERM\"; env");
    let out = run(&rt, &bundle, "env")?.ok();
    let first = out.stdout.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        "bar|a b  c||/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|xterm"
    );
    // Nothing of the test's own environment leaks in.
    let leaked: Vec<&str> = out
        .stdout
        .lines()
        .skip(1)
        .filter(|l| l.starts_with("CARGO") || l.starts_with("RUST") || l.starts_with("BERTH"))
        .collect();
    assert!(leaked.is_empty(), "host environment leaked: {leaked:?}");
    Ok(())
}

/// As runc: a process whose environment has no HOME gets its uid's home from the container's
/// own /etc/passwd, `/` for a uid it does not list; a configured HOME is kept.
#[test]
fn home_comes_from_the_containers_passwd_unless_configured() -> Result<()> {
    let rt = Runtime::new()?;
    for (uid, env, want) in [
        (0, None, "/root"),
        (1000, None, "/home/app"),
        (4321, None, "/"),
        (1000, Some("HOME=/here"), "/here"),
    ] {
        let mut bundle = Bundle::with_own_rootfs()?;
        fs::write(
            bundle.rootfs().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )?;
        bundle.user(uid, uid, &[], None).sh("echo \"$HOME\"");
        if let Some(e) = env {
            bundle.env(e);
        }
        let out = run(&rt, &bundle, "home")?.ok();
        assert_eq!(out.stdout, format!("{want}\n"), "uid {uid}, env {env:?}");
    }
    Ok(())
}

#[test]
fn umask_is_the_configured_one_and_0022_by_default() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.user(0, 0, &[], Some(0o027)).sh("umask");
    let out = run(&rt, &bundle, "umask")?.ok();
    assert_eq!(out.stdout, "0027\n");

    // runc's default when the config has none.
    let mut plain = Bundle::new()?;
    plain.sh("umask");
    let out = run(&rt, &plain, "umask-default")?.ok();
    assert_eq!(out.stdout, "0022\n");
    Ok(())
}

fn fd_set(text: &str) -> BTreeSet<u32> {
    text.split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect()
}

#[test]
fn only_stdio_is_inherited() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.sh("ls /proc/self/fd");
    let out = run(&rt, &bundle, "fds")?.ok();
    // 3 is the directory ls itself opened.
    assert_eq!(
        fd_set(&out.stdout),
        BTreeSet::from([0, 1, 2, 3]),
        "{}",
        out.stdout
    );
    Ok(())
}

#[test]
fn preserve_fds_passes_extra_fds() -> Result<()> {
    let rt = Runtime::new()?;
    let dir = tempfile::tempdir()?;
    fs::write(dir.path().join("a"), "from fd 3\n")?;
    fs::write(dir.path().join("b"), "from fd 4\n")?;
    let a = fs::File::open(dir.path().join("a"))?;
    let b = fs::File::open(dir.path().join("b"))?;
    let mut bundle = Bundle::new()?;
    bundle.sh("ls /proc/self/fd; cat <&3; cat <&4");
    bundle.save()?;
    let id = unique_name("preserve");
    let guard = rt.guard(&id, &bundle);
    let path = bundle.path().display().to_string();
    let out = rt
        .exec_with(
            &["run", "--preserve-fds", "2", "--bundle", &path, &id],
            Io {
                extra_fds: vec![a.as_raw_fd(), b.as_raw_fd()],
                ..Default::default()
            },
        )?
        .ok();
    let (listing, rest) = out.stdout.split_once("from").context("no file content")?;
    assert_eq!(
        fd_set(listing),
        BTreeSet::from([0, 1, 2, 3, 4, 5]),
        "{}",
        out.stdout
    );
    assert_eq!(format!("from{rest}"), "from fd 3\nfrom fd 4\n");
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn extra_fds_without_preserve_fds_are_not_passed() -> Result<()> {
    let rt = Runtime::new()?;
    let dir = tempfile::tempdir()?;
    fs::write(dir.path().join("a"), "x")?;
    let a = fs::File::open(dir.path().join("a"))?;
    let mut bundle = Bundle::new()?;
    bundle.sh("ls /proc/self/fd");
    bundle.save()?;
    let id = unique_name("nopreserve");
    let guard = rt.guard(&id, &bundle);
    let path = bundle.path().display().to_string();
    let out = rt
        .exec_with(
            &["run", "--bundle", &path, &id],
            Io {
                extra_fds: vec![a.as_raw_fd()],
                ..Default::default()
            },
        )?
        .ok();
    assert_eq!(
        fd_set(&out.stdout),
        BTreeSet::from([0, 1, 2, 3]),
        "{}",
        out.stdout
    );
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn stdio_of_create_passes_straight_to_the_process() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "100"]);
    let id = unique_name("stdio");
    let guard = rt.guard(&id, &bundle);
    let out = rt.create(&id, &bundle)?.ok();
    let pid = rt.pid(&id)?;
    guard.track_pid(pid);
    rt.start(&id)?.ok();
    ensure!(
        wait_for(WAIT, || kernel::cmdline(pid)
            .is_ok_and(|c| c == "sleep 100")),
        "the container did not reach its command"
    );
    let link =
        |fd: u32| fs::read_link(format!("/proc/{pid}/fd/{fd}")).map(|p| p.display().to_string());
    assert_eq!(link(0)?, "/dev/null");
    assert_eq!(link(1)?, out.stdout_path.display().to_string());
    assert_eq!(link(2)?, out.stderr_path.display().to_string());
    let fds: BTreeSet<u32> = fs::read_dir(format!("/proc/{pid}/fd"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    assert_eq!(fds, BTreeSet::from([0, 1, 2]), "fds of the running command");
    rt.delete_force(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}
