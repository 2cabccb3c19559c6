//! Conformance cases that other runtimes pass on this host and that tools rely on (issue 10):
//! proc/sysfs on a symlink, a caller reading create's output to EOF, seccomp notify at create,
//! runc's error lines, a shared mount namespace, the environment of in-container hooks, exec
//! into paused containers and sub-cgroups, recursive atime, missing cgroup controllers, exec
//! into a time namespace, exec CPU affinity, root propagation and failing poststop hooks.
//!
//! Each test runs against runc too (`BERTH_RUNC=/usr/bin/runc`) where runc 1.1.5 is the
//! reference; the few runc lacks say so and return early under it.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_integration::runtime::console::ConsoleSocket;
use berth_integration::runtime::kernel::{self, parse_mountinfo};
use berth_integration::runtime::{assert_error, unique_name, wait_for, Bundle, Runtime};
use serde_json::json;

/// Runs `cmd` with stdout and stderr on pipes and reads both to EOF, as `$(...)` or Go's
/// `cmd.Output()` do. Fails (and kills the command) if EOF does not come within `timeout`:
/// some process kept the pipes.
fn output_through_pipes(cmd: &mut Command, timeout: Duration) -> Result<(i32, String, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning the runtime")?;
    let mut out = child.stdout.take().context("stdout pipe")?;
    let mut err = child.stderr.take().context("stderr pipe")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        let _ = tx.send((true, s));
    });
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        let _ = tx2.send((false, s));
    });
    let deadline = Instant::now() + timeout;
    let (mut stdout, mut stderr) = (None, None);
    while stdout.is_none() || stderr.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((true, s)) => stdout = Some(s),
            Ok((false, s)) => stderr = Some(s),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the command's output did not reach EOF within {timeout:?}: a process kept its pipes");
            }
        }
    }
    let status = child.wait().context("waiting for the runtime")?;
    Ok((
        status.code().unwrap_or(-1),
        stdout.unwrap_or_default(),
        stderr.unwrap_or_default(),
    ))
}

/// A bundle whose own rootfs has `/proc` or `/sys` replaced by a symlink to an absolute path
/// that resolves back inside the rootfs.
fn bundle_with_symlinked(dir: &str) -> Result<Bundle> {
    let mut bundle = Bundle::with_own_rootfs()?;
    let rootfs = bundle.rootfs().to_path_buf();
    std::fs::remove_dir(rootfs.join(dir))?;
    std::fs::create_dir(rootfs.join("elsewhere"))?;
    std::os::unix::fs::symlink("/elsewhere", rootfs.join(dir))?;
    bundle.args(&["sleep", "30"]);
    bundle.save()?;
    Ok(bundle)
}

#[test]
fn proc_or_sysfs_on_a_symlink_is_refused_and_leaves_nothing() -> Result<()> {
    let rt = Runtime::new()?;
    for dir in ["proc", "sys"] {
        let bundle = bundle_with_symlinked(dir)?;
        let id = unique_name("symlinked");
        let guard = rt.guard(&id, &bundle);
        let out = rt.create(&id, &bundle)?;
        assert_error(&rt, &out, &["ordinary directory"]);
        assert!(
            out.stderr.contains(&format!("/{dir}")),
            "{}",
            out.describe()
        );
        guard.assert_no_leftovers();
        assert!(
            std::fs::read_dir(bundle.rootfs().join("elsewhere"))?
                .next()
                .is_none(),
            "something was mounted or made through the symlink"
        );
    }
    Ok(())
}

#[test]
fn a_caller_reading_creates_output_to_eof_never_blocks() -> Result<()> {
    let rt = Runtime::new()?;
    // A create that fails: nothing may be left holding its pipes.
    let bundle = bundle_with_symlinked("proc")?;
    let id = unique_name("eof-fail");
    let guard = rt.guard(&id, &bundle);
    let bpath = bundle.path().display().to_string();
    let mut cmd = rt.command(&["create", "--bundle", &bpath, &id]);
    let (code, _, stderr) = output_through_pipes(&mut cmd, Duration::from_secs(10))?;
    assert_eq!(code, 1, "{stderr}");
    guard.assert_no_leftovers();
    drop(guard);

    // A container with a terminal: its process talks to the pty, so once create (or run -d, or
    // exec -d) has returned nothing of the container holds the caller's stdout and stderr.
    let mut bundle = Bundle::new()?;
    bundle.terminal(true).args(&["sleep", "30"]);
    bundle.save()?;
    let bpath = bundle.path().display().to_string();
    for verb in ["create", "run"] {
        let id = unique_name("eof-tty");
        let guard = rt.guard(&id, &bundle);
        let console = ConsoleSocket::new()?;
        let sock = console.path().display().to_string();
        let mut args = vec![verb, "--bundle", &bpath, "--console-socket", &sock];
        if verb == "run" {
            args.push("-d");
        }
        args.push(&id);
        let mut cmd = rt.command(&args);
        let receiver = std::thread::spawn(move || console.receive(Duration::from_secs(10)));
        let (code, _, stderr) = output_through_pipes(&mut cmd, Duration::from_secs(10))?;
        assert_eq!(code, 0, "{verb}: {stderr}");
        let _pty = receiver
            .join()
            .map_err(|_| anyhow::anyhow!("console receiver panicked"))??;
        if verb == "create" {
            rt.start(&id)?.ok();
        }
        assert_eq!(rt.status(&id)?, "running");
        // exec -d with a terminal, likewise.
        let console = ConsoleSocket::new()?;
        let sock = console.path().display().to_string();
        let mut cmd = rt.command(&[
            "exec",
            "-d",
            "-t",
            "--console-socket",
            &sock,
            &id,
            "sleep",
            "30",
        ]);
        let receiver = std::thread::spawn(move || console.receive(Duration::from_secs(10)));
        let (code, _, stderr) = output_through_pipes(&mut cmd, Duration::from_secs(10))?;
        assert_eq!(code, 0, "exec -d: {stderr}");
        let _pty = receiver
            .join()
            .map_err(|_| anyhow::anyhow!("console receiver panicked"))??;
        rt.exec(&["delete", "--force", &id])?.ok();
        guard.assert_no_leftovers();
    }
    Ok(())
}

#[test]
fn seccomp_notify_reaches_the_agent_during_create() -> Result<()> {
    let rt = Runtime::new()?;
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock)?;
    listener.set_nonblocking(true)?;
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "30"]);
    bundle.config_mut()["annotations"] = json!({"org.example.test": "notify"});
    bundle.config_mut()["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock.display().to_string(),
        "listenerMetadata": "at-create",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    let id = unique_name("notify-create");
    let guard = rt.guard(&id, &bundle);
    // The agent accepts in the background: create must not wait for anything else.
    let agent = std::thread::spawn(move || -> Result<(std::os::fd::OwnedFd, String)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        bail!("the runtime never connected to the agent");
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e.into()),
            }
        };
        stream.set_nonblocking(false)?;
        berth_integration::runtime::receive_seccomp_listener(&stream)
    });
    rt.create(&id, &bundle)?.ok();
    // create has returned and the container was never started: the agent has it all already.
    assert!(
        agent.is_finished() || wait_for(Duration::from_secs(2), || agent.is_finished()),
        "the agent got nothing during create"
    );
    let (_listener_fd, body) = agent
        .join()
        .map_err(|_| anyhow::anyhow!("agent panicked"))??;
    let state: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(state["state"]["status"], "creating", "{body}");
    assert_eq!(state["state"]["id"], id.as_str(), "{body}");
    assert_eq!(
        state["state"]["annotations"]["org.example.test"], "notify",
        "{body}"
    );
    assert_eq!(state["metadata"], "at-create", "{body}");
    assert_eq!(state["pid"].as_i64(), Some(rt.pid(&id)? as i64), "{body}");
    assert_eq!(rt.status(&id)?, "created");
    rt.exec(&["delete", "--force", &id])?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn failing_commands_print_runcs_error_level_on_stderr() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "30"]);
    let id = unique_name("wording");
    let guard = rt.guard(&id, &bundle);
    rt.create(&id, &bundle)?.ok();
    rt.start(&id)?.ok();
    let root = rt.root().display().to_string();
    let bpath = bundle.path().display().to_string();
    // Without --log the way tools call runc: the error line on stderr has runc's level.
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["state", "nosuch"], "does not exist"),
        (vec!["delete", &id], "cannot delete container"),
        (vec!["create", "--bundle", &bpath, ""], "empty"),
        (vec!["kill", "nosuch", "KILL"], "does not exist"),
    ];
    for (args, msg) in cases {
        let out = Command::new(rt.binary())
            .arg("--root")
            .arg(&root)
            .args(&args)
            .stdin(Stdio::null())
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains("level=error"))
            .unwrap_or_else(|| panic!("{args:?}: no level=error line on stderr: {stderr}"));
        assert!(
            line.contains("msg=") && line.contains(msg),
            "{args:?}: {line}"
        );
    }
    // With --log in json, the same text is the log's last error (what containerd's shim
    // shows). (runc then prints the bare message on stderr; berth-runc keeps the level.)
    let has_level = |out: &berth_integration::runtime::Output| {
        rt.is_runc() || out.stderr.contains("level=error")
    };
    let out = rt.exec(&["state", "nosuch"])?;
    assert_error(&rt, &out, &["does not exist"]);
    assert!(has_level(&out), "{}", out.describe());
    rt.exec(&["kill", &id, "KILL"])?.ok();
    rt.wait_status(&id, "stopped", Duration::from_secs(5))?;
    let out = rt.exec(&["kill", &id, "KILL"])?;
    assert_error(&rt, &out, &["container not running"]);
    assert!(has_level(&out), "{}", out.describe());
    rt.exec(&["delete", &id])?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

/// A config in no namespace of its own (the caller's are inherited), as the runtime-spec
/// allows: nothing may be masked or named then.
fn bundle_without_namespaces() -> Result<Bundle> {
    let mut bundle = Bundle::with_own_rootfs()?;
    bundle.args(&["sleep", "30"]);
    let cfg = bundle.config_mut();
    cfg["linux"]["namespaces"] = json!([]);
    cfg["linux"]["maskedPaths"] = json!([]);
    cfg["linux"]["readonlyPaths"] = json!([]);
    cfg.as_object_mut().map(|o| o.remove("hostname"));
    Ok(bundle)
}

#[test]
fn without_namespaces_the_callers_are_inherited() -> Result<()> {
    let rt = Runtime::new()?;
    let bundle = bundle_without_namespaces()?;
    let id = unique_name("no-ns");
    let guard = rt.guard(&id, &bundle);
    let host_propagation = root_propagation_of("self")?;
    rt.create(&id, &bundle)?.ok();
    let pid = rt.pid(&id)?.to_string();
    for ns in ["mnt", "pid", "net", "ipc", "uts", "cgroup", "user"] {
        assert_eq!(
            kernel::namespace(&pid, ns)?,
            kernel::namespace("self", ns)?,
            "{ns} namespace"
        );
    }
    rt.start(&id)?.ok();
    if !rt.is_runc() {
        // The container's own root is its rootfs. (runc 1.1.5 cannot exec into it.)
        let out = rt.exec(&["exec", &id, "ls", "/"])?.ok();
        assert!(
            out.stdout.contains("bin") && out.stdout.contains("proc"),
            "{}",
            out.describe()
        );
    }
    // The caller's own root mount kept its propagation.
    assert_eq!(root_propagation_of("self")?, host_propagation);
    rt.exec(&["kill", &id, "KILL"])?.ok();
    rt.wait_status(&id, "stopped", Duration::from_secs(5))?;
    rt.exec(&["delete", &id])?.ok();
    if !rt.is_runc() {
        // runc leaves the rootfs bind (and everything under it) in the caller's namespace;
        // berth-runc takes away what the container mounted there.
        guard.assert_no_leftovers();
    }
    Ok(())
}

/// The optional fields (shared:N, master:N, unbindable) of the "/" line of a process's
/// mountinfo.
fn root_propagation_of(pid: &str) -> Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    propagation_of_root(&text).context("no / line in mountinfo")
}

fn propagation_of_root(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        if fields.get(4) != Some(&"/") {
            return None;
        }
        let end = fields.iter().position(|f| *f == "-")?;
        Some(fields[6..end].join(" "))
    })
}

#[test]
fn without_a_mount_namespace_masked_paths_are_refused() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = bundle_without_namespaces()?;
    bundle.config_mut()["linux"]["maskedPaths"] = json!(["/proc/kcore"]);
    let id = unique_name("no-mntns");
    let guard = rt.guard(&id, &bundle);
    let out = rt.create(&id, &bundle)?;
    // runc: "unable to restrict sys entries without a private MNT namespace".
    assert_error(
        &rt,
        &out,
        &["maskedPaths", "without a private MNT namespace"],
    );
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn hooks_inside_the_container_get_the_process_environment() -> Result<()> {
    let rt = Runtime::new()?;
    let logs = tempfile::tempdir()?;
    let mut bundle = Bundle::new()?;
    bundle
        .bind(logs.path(), "/hooklogs", false)
        .env("FROM_PROCESS=yes")
        .args(&["true"]);
    bundle.config_mut()["hooks"] = json!({
        "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "env > /hooklogs/start.env"]}],
    });
    let id = unique_name("hook-env");
    let guard = rt.guard(&id, &bundle);
    bundle.save()?;
    let bpath = bundle.path().display().to_string();
    let status = rt
        .command(&["create", "--bundle", &bpath, &id])
        .env("FROM_CALLER", "leaked")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()?;
    assert!(status.success(), "create: {status}");
    rt.start(&id)?.ok();
    // The hook runs in the init between start and the process's exec.
    rt.wait_status(&id, "stopped", Duration::from_secs(5))?;
    let env = std::fs::read_to_string(logs.path().join("start.env"))?;
    assert!(env.lines().any(|l| l == "FROM_PROCESS=yes"), "{env}");
    assert!(
        !env.contains("FROM_CALLER"),
        "the caller's environment leaked: {env}"
    );
    rt.exec(&["delete", &id])?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn exec_into_a_paused_container_needs_ignore_paused() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "30"]);
    let id = unique_name("paused");
    let guard = rt.guard(&id, &bundle);
    rt.create(&id, &bundle)?.ok();
    rt.start(&id)?.ok();
    rt.exec(&["pause", &id])?.ok();
    let out = rt.exec(&["exec", &id, "echo", "nope"])?;
    assert_error(&rt, &out, &["paused"]);
    // With the flag the process waits, frozen, until the container is resumed.
    let mut exec = rt.command(&["exec", "--ignore-paused", &id, "echo", "thawed"]);
    let waiter =
        std::thread::spawn(move || output_through_pipes(&mut exec, Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !waiter.is_finished(),
        "exec finished while the container was paused"
    );
    rt.exec(&["resume", &id])?.ok();
    let (code, stdout, stderr) = waiter
        .join()
        .map_err(|_| anyhow::anyhow!("exec thread panicked"))??;
    assert_eq!((code, stdout.as_str()), (0, "thawed\n"), "{stderr}");
    rt.exec(&["delete", "--force", &id])?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn exec_into_a_sub_cgroup() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "30"]);
    let id = unique_name("subcg");
    let guard = rt.guard(&id, &bundle);
    rt.create(&id, &bundle)?.ok();
    rt.start(&id)?.ok();
    // A sub-cgroup in the memory and pids hierarchies (made by the container's owner).
    let mut made = Vec::new();
    for dir in kernel::cgroup_dirs(bundle.cgroup_path()) {
        let sub = dir.join("sub");
        std::fs::create_dir(&sub)?;
        // A v1 cpuset cgroup takes no process until it has CPUs and memory nodes.
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if dir.join(file).exists() {
                std::fs::write(sub.join(file), std::fs::read(dir.join(file))?)?;
            }
        }
        made.push(sub);
    }
    let memory_line = |text: &str| -> String {
        text.lines()
            .find(|l| {
                l.split(':')
                    .nth(1)
                    .is_some_and(|c| c.split(',').any(|c| c == "memory"))
            })
            .map(|l| l.split(':').nth(2).unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    let cg = bundle.cgroup_path();
    let out = rt
        .exec(&["exec", "--cgroup", "sub", &id, "cat", "/proc/self/cgroup"])?
        .ok();
    assert_eq!(
        memory_line(&out.stdout),
        format!("{cg}/sub"),
        "{}",
        out.describe()
    );
    let out = rt
        .exec(&[
            "exec",
            "--cgroup",
            "memory:sub",
            &id,
            "cat",
            "/proc/self/cgroup",
        ])?
        .ok();
    assert_eq!(
        memory_line(&out.stdout),
        format!("{cg}/sub"),
        "{}",
        out.describe()
    );
    let out = rt
        .exec(&["exec", "--cgroup=/", &id, "cat", "/proc/self/cgroup"])?
        .ok();
    assert_eq!(memory_line(&out.stdout), cg, "{}", out.describe());
    for (bad, needle) in [
        ("..", ".."),
        ("nosuch", "nosuch"),
        ("memory:nosuch", "nosuch"),
        ("waaaat:/", "waaaat"),
    ] {
        let out = rt.exec(&["exec", "--cgroup", bad, &id, "true"])?;
        assert_error(&rt, &out, &[needle]);
    }
    rt.exec(&["delete", "--force", &id])?.ok();
    for sub in made.iter().rev() {
        let _ = std::fs::remove_dir(sub);
    }
    guard.assert_no_leftovers();
    Ok(())
}

/// A tmpfs at a fresh host dir with another tmpfs mounted at its `sub`, both with `options`.
struct NestedTmpfs {
    dir: tempfile::TempDir,
}

impl NestedTmpfs {
    fn new(options: &str) -> Result<NestedTmpfs> {
        let dir = tempfile::tempdir()?;
        let flags = |o: &str| match o {
            "noatime" => nix::mount::MsFlags::MS_NOATIME,
            _ => nix::mount::MsFlags::empty(),
        };
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            flags(options),
            None::<&str>,
        )?;
        let t = NestedTmpfs { dir };
        std::fs::create_dir(t.dir.path().join("sub"))?;
        nix::mount::mount(
            Some("tmpfs"),
            &t.dir.path().join("sub"),
            Some("tmpfs"),
            flags(options),
            None::<&str>,
        )?;
        Ok(t)
    }
}

impl Drop for NestedTmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(
            &self.dir.path().join("sub"),
            nix::mount::MntFlags::MNT_DETACH,
        );
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The atime mode in the mount options of `point` and `point/sub` inside the container.
fn atime_modes(rt: &Runtime, source: &Path, options: &[&str]) -> Result<(String, String)> {
    let mut bundle = Bundle::new()?;
    bundle.sh("cat /proc/self/mountinfo");
    bundle.mount("/m", "bind", &source.display().to_string(), options);
    let id = unique_name("atime");
    let guard = rt.guard(&id, &bundle);
    let out = rt.run(&id, &bundle)?.ok();
    guard.assert_no_leftovers();
    let mounts = parse_mountinfo(&out.stdout);
    let mode = |point: &str| -> String {
        mounts
            .iter()
            .find(|m| m.mount_point == point)
            .map(|m| {
                // mountinfo shows noatime or relatime; strictatime is the absence of both.
                ["noatime", "relatime"]
                    .into_iter()
                    .find(|a| m.options.iter().any(|o| o == a))
                    .unwrap_or("strictatime")
                    .to_string()
            })
            .unwrap_or_else(|| format!("{point} not mounted"))
    };
    Ok((mode("/m"), mode("/m/sub")))
}

#[test]
fn recursive_atime_attributes_follow_the_kernel_meaning() -> Result<()> {
    let rt = Runtime::new()?;
    // rnorelatime clears relatime, which is the kernel's default mode: both stay relatime.
    let relatime = NestedTmpfs::new("relatime")?;
    let modes = atime_modes(&rt, relatime.dir.path(), &["rbind", "rnorelatime"])?;
    assert_eq!(modes, ("relatime".into(), "relatime".into()));
    if rt.is_runc() {
        // runc 1.1.5 fails ratime (it clears noatime without the whole atime field).
        return Ok(());
    }
    // ratime clears noatime: back to the default (relatime) on the whole tree.
    let noatime = NestedTmpfs::new("noatime")?;
    let modes = atime_modes(&rt, noatime.dir.path(), &["rbind", "ratime"])?;
    assert_eq!(modes, ("relatime".into(), "relatime".into()));
    Ok(())
}

#[test]
fn limits_for_a_controller_the_host_lacks_are_refused() -> Result<()> {
    let rt = Runtime::new()?;
    for (controller, resources) in [
        ("net_cls", json!({"network": {"classID": 1048577}})),
        (
            "net_prio",
            json!({"network": {"priorities": [{"name": "lo", "priority": 1}]}}),
        ),
    ] {
        if Path::new("/sys/fs/cgroup").join(controller).exists() {
            eprintln!("this host has {controller}: nothing to refuse");
            continue;
        }
        let mut bundle = Bundle::new()?;
        bundle.args(&["true"]).resources(resources);
        let id = unique_name("nocontroller");
        let guard = rt.guard(&id, &bundle);
        let out = rt.create(&id, &bundle)?;
        // runc: "cannot set net_cls limit: container could not join or create cgroup".
        assert_error(&rt, &out, &[controller]);
        guard.assert_no_leftovers();
    }
    Ok(())
}

#[test]
fn exec_sees_the_time_namespace_offsets() -> Result<()> {
    let rt = Runtime::new()?;
    if rt.is_runc() {
        return Ok(()); // runc 1.1.5 has no time namespaces.
    }
    for with_userns in [false, true] {
        let mut bundle = Bundle::new()?;
        bundle.args(&["sleep", "30"]).add_namespace("time");
        if with_userns {
            bundle.user_namespace(100000, 65536);
        }
        bundle.config_mut()["linux"]["timeOffsets"] =
            json!({"boottime": {"secs": 864000, "nanosecs": 0}});
        let id = unique_name("timens");
        let guard = rt.guard(&id, &bundle);
        rt.create(&id, &bundle)?.ok();
        rt.start(&id)?.ok();
        let host_uptime: f64 = std::fs::read_to_string("/proc/uptime")?
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .parse()?;
        let out = rt.exec(&["exec", &id, "cat", "/proc/uptime"])?.ok();
        let uptime: f64 = out
            .stdout
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .parse()?;
        assert!(
            uptime > host_uptime + 863_000.0,
            "userns {with_userns}: exec saw uptime {uptime}, host {host_uptime}"
        );
        let pid = rt.pid(&id)?.to_string();
        let out = rt
            .exec(&["exec", &id, "readlink", "/proc/self/ns/time"])?
            .ok();
        assert_eq!(out.stdout.trim(), kernel::namespace(&pid, "time")?);
        rt.exec(&["delete", "--force", &id])?.ok();
        guard.assert_no_leftovers();
    }
    Ok(())
}

#[test]
fn exec_cpu_affinity_initial_then_final() -> Result<()> {
    let rt = Runtime::new()?;
    if rt.is_runc() {
        return Ok(()); // runc 1.1.5 has no execCPUAffinity.
    }
    let cpus = std::thread::available_parallelism()?.get();
    if cpus < 2 {
        eprintln!("one CPU: nothing to choose between");
        return Ok(());
    }
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "30"]);
    bundle.config_mut()["process"]["execCPUAffinity"] = json!({"initial": "0", "final": "1"});
    let id = unique_name("affinity");
    let guard = rt.guard(&id, &bundle);
    rt.create(&id, &bundle)?.ok();
    rt.start(&id)?.ok();
    let allowed = |text: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    // The init keeps the caller's affinity: the field is for exec.
    let init = std::fs::read_to_string(format!("/proc/{}/status", rt.pid(&id)?))?;
    let ours = std::fs::read_to_string("/proc/self/status")?;
    assert_eq!(allowed(&init), allowed(&ours));
    // From config.json: initial (logged in debug as runc's nsexec does), then final.
    let root = rt.root().display().to_string();
    let out = Command::new(rt.binary())
        .args([
            "--root",
            &root,
            "--debug",
            "exec",
            &id,
            "grep",
            "Cpus_allowed_list",
            "/proc/self/status",
        ])
        .output()?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert_eq!(allowed(&stdout), "1", "{stdout}");
    assert!(stderr.contains("affinity: 0x1"), "{stderr}");
    // From exec --process: its own lists.
    let process = bundle.path().join("process.json");
    std::fs::write(
        &process,
        json!({
            "cwd": "/", "user": {"uid": 0, "gid": 0},
            "args": ["grep", "Cpus_allowed_list", "/proc/self/status"],
            "env": ["PATH=/bin"],
            "execCPUAffinity": {"initial": "1", "final": "0"}
        })
        .to_string(),
    )?;
    let out = rt
        .exec(&["exec", "--process", &process.display().to_string(), &id])?
        .ok();
    assert_eq!(allowed(&out.stdout), "0", "{}", out.describe());
    rt.exec(&["delete", "--force", &id])?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn root_propagation_shared_and_unbindable() -> Result<()> {
    let rt = Runtime::new()?;
    if rt.is_runc() {
        return Ok(()); // runc 1.1.5 leaves the new root private whatever it is asked.
    }
    for (propagation, want) in [("shared", "shared:"), ("unbindable", "unbindable")] {
        let mut bundle = Bundle::new()?;
        bundle.args(&["cat", "/proc/self/mountinfo"]);
        bundle.config_mut()["linux"]["rootfsPropagation"] = json!(propagation);
        let id = unique_name("rootprop");
        let guard = rt.guard(&id, &bundle);
        let out = rt.run(&id, &bundle)?.ok();
        let root = propagation_of_root(&out.stdout).unwrap_or_default();
        assert!(root.contains(want), "{propagation}: / has {root:?}");
        guard.assert_no_leftovers();
    }
    Ok(())
}

#[test]
fn a_failing_poststop_hook_fails_delete_after_the_container_is_gone() -> Result<()> {
    let rt = Runtime::new()?;
    let logs = tempfile::tempdir()?;
    let log = logs.path().join("poststop.log");
    let mut bundle = Bundle::new()?;
    bundle.args(&["true"]);
    let hook = |n: u32, code: u32| {
        json!({"path": "/bin/sh", "args": ["sh", "-c",
            format!("echo hook_{n} >> {}; exit {code}", log.display())]})
    };
    bundle.config_mut()["hooks"] = json!({"poststop": [hook(1, 0), hook(2, 3), hook(3, 0)]});
    let id = unique_name("poststop-fail");
    let guard = rt.guard(&id, &bundle);
    rt.create(&id, &bundle)?.ok();
    rt.start(&id)?.ok();
    rt.wait_status(&id, "stopped", Duration::from_secs(5))?;
    // As runc: the delete completes (exit 0) and the failure is logged as an error.
    let out = rt.exec(&["delete", &id])?.ok();
    let logged = rt.last_log_error().unwrap_or_default();
    assert!(
        logged.contains("exit status 3") || logged.contains("exited with status 3"),
        "log: {logged:?}"
    );
    assert!(out.stderr.is_empty(), "{}", out.describe());
    // The hooks ran in order up to the failing one.
    assert_eq!(std::fs::read_to_string(&log)?, "hook_1\nhook_2\n");
    let out = rt.exec(&["state", &id])?;
    assert_error(&rt, &out, &["does not exist"]);
    guard.assert_no_leftovers();
    Ok(())
}
