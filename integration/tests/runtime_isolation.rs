//! Each namespace of the config is really a new one, seen from inside the container and from
//! the host. Every test also passes against runc (`BERTH_RUNC=/usr/bin/runc`).

use std::fs;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use berth_integration::runtime::{kernel, unique_name, wait_for, Bundle, Output, Runtime};

const WAIT: Duration = Duration::from_secs(10);

/// Runs the bundle in the foreground and returns its output, asserting exit 0 and cleanup.
fn run_ok(rt: &Runtime, bundle: &Bundle, name: &str) -> Result<Output> {
    let id = unique_name(name);
    let guard = rt.guard(&id, bundle);
    let out = rt.run(&id, bundle)?.ok();
    guard.assert_no_leftovers();
    Ok(out)
}

/// Creates and starts the bundle; returns the create output (whose stdout file the container
/// writes to) and the init pid once `ready` shows up in that output.
fn start_and_wait_ready(rt: &Runtime, id: &str, bundle: &Bundle) -> Result<(Output, i32)> {
    let out = rt.create(id, bundle)?.ok();
    let pid = rt.pid(id)?;
    rt.start(id)?.ok();
    ensure!(
        wait_for(WAIT, || out.reread_stdout().contains("ready")),
        "container never printed ready; stdout {:?} stderr {:?}",
        out.reread_stdout(),
        out.reread_stderr()
    );
    Ok((out, pid))
}

#[test]
fn hostname_comes_from_the_config() -> Result<()> {
    let rt = Runtime::new()?;
    let host_before = fs::read_to_string("/proc/sys/kernel/hostname")?;
    let mut bundle = Bundle::new()?;
    bundle
        .hostname("berth-box")
        .sh("hostname; cat /proc/sys/kernel/hostname");
    let out = run_ok(&rt, &bundle, "hostname")?;
    assert_eq!(out.stdout, "berth-box\nberth-box\n");
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/hostname")?,
        host_before
    );
    Ok(())
}

#[test]
fn pid_namespace_makes_the_command_pid_1_and_hides_host_processes() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    // `read` is a builtin: waiting for the sleep's exec forks nothing.
    bundle.sh(
        "sleep 100 & while read c < /proc/$!/comm; [ \"$c\" != sleep ]; do :; done; \
         echo pid=$$; ps -o pid,args; kill $!",
    );
    let out = run_ok(&rt, &bundle, "pidns")?;
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("pid=1"), "{}", out.stdout);
    let header = lines.next().unwrap_or_default();
    assert!(header.contains("PID"), "ps header: {}", out.stdout);
    let procs: Vec<(u32, String)> = lines
        .filter_map(|l| {
            let (pid, args) = l.trim().split_once(' ')?;
            Some((pid.parse().ok()?, args.trim().to_string()))
        })
        .collect();
    // sh, the sleep and ps itself; nothing of the host (whose pids are far above 1).
    assert_eq!(procs.len(), 3, "ps inside shows {procs:?}");
    assert!(
        procs
            .iter()
            .any(|(pid, args)| *pid == 1 && args.starts_with("sh -c")),
        "{procs:?}"
    );
    assert!(
        procs.iter().any(|(_, args)| args == "sleep 100"),
        "{procs:?}"
    );
    Ok(())
}

#[test]
fn mount_namespace_keeps_container_mounts_off_the_host() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    let mut caps = berth_integration::runtime::DEFAULT_CAPS.to_vec();
    caps.push("CAP_SYS_ADMIN");
    let tag = unique_name("berthtmp");
    bundle.capabilities(&caps).sh(&format!(
        "mount -t tmpfs -o size=1m {tag} /tmp && echo ready; exec sleep 100"
    ));
    let id = unique_name("mntns");
    let guard = rt.guard(&id, &bundle);
    let (_, pid) = start_and_wait_ready(&rt, &id, &bundle)?;
    guard.track_pid(pid);
    let inside = fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    assert!(
        inside
            .lines()
            .any(|l| l.contains(&tag) && l.contains(" /tmp ")),
        "the container's mount table lacks its tmpfs: {inside}"
    );
    let host = fs::read_to_string("/proc/self/mountinfo")?;
    assert!(
        !host.contains(&tag),
        "the container's tmpfs shows on the host"
    );
    assert_ne!(
        kernel::namespace(&pid.to_string(), "mnt")?,
        kernel::namespace("self", "mnt")?
    );
    // The container's root is its rootfs, not the host's.
    let inside_root = kernel::parse_mountinfo(&inside)
        .into_iter()
        .find(|m| m.mount_point == "/")
        .context("no / in the container's mountinfo")?;
    assert!(
        inside_root.options.iter().any(|o| o == "ro"),
        "root not ro: {inside_root:?}"
    );
    rt.delete_force(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn network_namespace_has_only_loopback() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.sh("ls /sys/class/net; echo --; tail -n +3 /proc/net/dev | cut -d: -f1");
    let out = run_ok(&rt, &bundle, "netns")?;
    let (sys, proc_net) = out
        .stdout
        .split_once("--\n")
        .context("no separator in the output")?;
    assert_eq!(sys.split_whitespace().collect::<Vec<_>>(), vec!["lo"]);
    assert_eq!(proc_net.split_whitespace().collect::<Vec<_>>(), vec!["lo"]);
    Ok(())
}

#[test]
fn without_a_network_namespace_the_host_interfaces_show() -> Result<()> {
    let rt = Runtime::new()?;
    let mut host: Vec<String> = fs::read_dir("/sys/class/net")?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    host.sort();
    let mut bundle = Bundle::new()?;
    // sysfs can only be mounted in a network namespace the mounter owns: bind the host's.
    bundle.remove_namespace("network");
    if let Some(mounts) = bundle.config_mut()["mounts"].as_array_mut() {
        for m in mounts.iter_mut().filter(|m| m["destination"] == "/sys") {
            *m = serde_json::json!({"destination": "/sys", "type": "bind", "source": "/sys",
                                    "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
        }
    }
    bundle.sh("tail -n +3 /proc/net/dev | cut -d: -f1");
    let out = run_ok(&rt, &bundle, "hostnet")?;
    let mut inside: Vec<&str> = out.stdout.split_whitespace().collect();
    inside.sort();
    assert_eq!(inside, host, "interfaces inside vs on the host");
    Ok(())
}

#[test]
fn configured_namespaces_are_new_and_the_others_shared() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.remove_namespace("ipc").args(&["sleep", "100"]);
    let id = unique_name("nsids");
    let guard = rt.guard(&id, &bundle);
    rt.create(&id, &bundle)?.ok();
    let pid = rt.pid(&id)?;
    guard.track_pid(pid);
    let pid_s = pid.to_string();
    // Checked right after create: the init is already in its namespaces.
    for kind in ["pid", "net", "uts", "mnt"] {
        assert_ne!(
            kernel::namespace(&pid_s, kind)?,
            kernel::namespace("self", kind)?,
            "{kind} namespace is the host's"
        );
    }
    for kind in ["ipc", "user", "cgroup"] {
        assert_eq!(
            kernel::namespace(&pid_s, kind)?,
            kernel::namespace("self", kind)?,
            "{kind} namespace is not the host's though the config has none"
        );
    }
    rt.delete_force(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

/// A SysV shared memory segment made on the host, removed on drop.
struct ShmSegment(i32);

impl ShmSegment {
    fn new(key: i32) -> Result<ShmSegment> {
        // SAFETY: plain syscall wrapper, no pointers.
        let id = unsafe { libc::shmget(key, 4096, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
        ensure!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
        Ok(ShmSegment(id))
    }
}

impl Drop for ShmSegment {
    fn drop(&mut self) {
        // SAFETY: IPC_RMID takes no buffer.
        unsafe { libc::shmctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

#[test]
fn ipc_namespace_hides_host_sysv_objects() -> Result<()> {
    let rt = Runtime::new()?;
    let key = 0x4245_0000 | (std::process::id() as i32 & 0xffff);
    let segment = ShmSegment::new(key)?;
    let script = "cat /proc/sysvipc/shm";
    let key_text = key.to_string();
    let has_key = |text: &str| {
        text.lines()
            .skip(1)
            .any(|l| l.split_whitespace().next() == Some(key_text.as_str()))
    };

    let mut bundle = Bundle::new()?;
    bundle.sh(script);
    let out = run_ok(&rt, &bundle, "ipcns")?;
    assert!(
        !has_key(&out.stdout),
        "host shm key {key} visible in a new ipc ns: {}",
        out.stdout
    );

    let mut shared = Bundle::new()?;
    shared.remove_namespace("ipc").sh(script);
    let out = run_ok(&rt, &shared, "hostipc")?;
    assert!(
        has_key(&out.stdout),
        "host shm key {key} missing without an ipc ns: {}",
        out.stdout
    );
    drop(segment);
    Ok(())
}

#[test]
fn user_namespace_maps_root_to_the_configured_host_ids() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle
        .user_namespace(100_000, 65_536)
        .args(&["sleep", "100"]);
    let id = unique_name("userns");
    let guard = rt.guard(&id, &bundle);
    rt.create(&id, &bundle)?.ok();
    let pid = rt.pid(&id)?;
    guard.track_pid(pid);
    for map in ["uid_map", "gid_map"] {
        let text = fs::read_to_string(format!("/proc/{pid}/{map}"))?;
        let fields: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(
            fields,
            vec!["0", "100000", "65536"],
            "{map} of a created container"
        );
    }
    assert_ne!(
        kernel::namespace(&pid.to_string(), "user")?,
        kernel::namespace("self", "user")?
    );
    rt.start(&id)?.ok();
    ensure!(
        wait_for(WAIT, || kernel::cmdline(pid)
            .is_ok_and(|c| c == "sleep 100")),
        "the container did not reach its sleep"
    );
    // From the host, the container's root is uid 100000.
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let uid = kernel::status_field(&status, "Uid").unwrap_or_default();
    assert_eq!(
        uid.split_whitespace().next(),
        Some("100000"),
        "host view: Uid {uid}"
    );
    let gid = kernel::status_field(&status, "Gid").unwrap_or_default();
    assert_eq!(
        gid.split_whitespace().next(),
        Some("100000"),
        "host view: Gid {gid}"
    );
    rt.delete_force(&id)?.ok();
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn user_namespace_process_sees_itself_as_root() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle
        .user_namespace(100_000, 65_536)
        .sh("echo uid=$(id -u) gid=$(id -g); cat /proc/self/uid_map");
    let out = run_ok(&rt, &bundle, "userns-id")?;
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("uid=0 gid=0"), "{}", out.stdout);
    let map: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(map, vec!["0", "100000", "65536"], "{}", out.stdout);
    Ok(())
}

#[test]
fn cgroup_namespace_shows_root_paths_inside() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.add_namespace("cgroup").sh("cat /proc/self/cgroup");
    let out = run_ok(&rt, &bundle, "cgroupns")?;
    let entries = kernel::parse_proc_cgroup(&out.stdout);
    ensure!(
        !entries.is_empty(),
        "no /proc/self/cgroup lines: {}",
        out.stdout
    );
    for (controllers, path) in &entries {
        assert_eq!(
            path, "/",
            "controller {controllers:?} inside a cgroup ns: {}",
            out.stdout
        );
    }

    // Without the namespace the same file shows the configured path.
    let mut plain = Bundle::new()?;
    plain.sh("cat /proc/self/cgroup");
    let out = run_ok(&rt, &plain, "nocgroupns")?;
    let entries = kernel::parse_proc_cgroup(&out.stdout);
    let pids = entries
        .iter()
        .find(|(c, _)| c.split(',').any(|c| c == "pids"))
        .with_context(|| format!("no pids line: {}", out.stdout))?;
    assert_eq!(pids.1, plain.cgroup_path(), "{}", out.stdout);
    Ok(())
}
