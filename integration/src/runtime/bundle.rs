//! OCI bundles whose rootfs is Debian's busybox-static, with a config.json equivalent to the one
//! `runc spec` writes (but `terminal: false`), and helpers to change it per test.
//!
//! By default bundles share one rootfs, built once per test binary and kept in the temp dir
//! keyed by the busybox binary it copies; `root.path` then points at it absolutely and
//! `root.readonly` stays true. A test that writes to its root asks for [`Bundle::with_own_rootfs`].

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use tempfile::TempDir;

use super::unique_name;

/// The busybox binary copied into every rootfs.
pub const BUSYBOX: &str = "/bin/busybox";

/// The capability set `runc spec` puts in every set it writes.
pub const DEFAULT_CAPS: &[&str] = &["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

/// Directories every rootfs has (mount points and a few that tests use).
const ROOTFS_DIRS: &[&str] = &[
    "bin", "dev", "etc", "home", "mnt", "proc", "root", "run", "sys", "tmp", "var",
];

/// An OCI bundle in a temp dir; removed on drop.
pub struct Bundle {
    dir: TempDir,
    rootfs: PathBuf,
    cgroup_path: String,
    config: Value,
    raw_config: bool,
}

impl Bundle {
    /// A bundle on the shared, read-only busybox rootfs with runc's default config.
    pub fn new() -> Result<Bundle> {
        let rootfs = shared_rootfs()?;
        Bundle::build(rootfs, true)
    }

    /// A bundle with its own copy of the busybox rootfs (inside the bundle, `root.path` =
    /// "rootfs"), for tests that write to the root; `root.readonly` is still true until
    /// [`Bundle::readonly`] says otherwise.
    pub fn with_own_rootfs() -> Result<Bundle> {
        let dir = tempfile::Builder::new()
            .prefix("berth-it-bundle-")
            .tempdir()
            .context("creating the bundle dir")?;
        let rootfs = dir.path().join("rootfs");
        populate_rootfs(&rootfs)?;
        let mut bundle = Bundle::build_in(dir, rootfs, false)?;
        bundle.config["root"]["path"] = json!("rootfs");
        Ok(bundle)
    }

    fn build(rootfs: PathBuf, shared: bool) -> Result<Bundle> {
        let dir = tempfile::Builder::new()
            .prefix("berth-it-bundle-")
            .tempdir()
            .context("creating the bundle dir")?;
        Bundle::build_in(dir, rootfs, shared)
    }

    fn build_in(dir: TempDir, rootfs: PathBuf, shared: bool) -> Result<Bundle> {
        let cgroup_path = format!("/{}", unique_name("berth-it"));
        let root_path = if shared {
            rootfs.display().to_string()
        } else {
            "rootfs".to_string()
        };
        let config = default_config(&root_path, &cgroup_path);
        let bundle = Bundle {
            dir,
            rootfs,
            cgroup_path,
            config,
            raw_config: false,
        };
        bundle.save()?;
        Ok(bundle)
    }

    /// The bundle directory (what `--bundle` gets).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The rootfs on the host.
    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    /// The unique absolute `linux.cgroupsPath` of this bundle, e.g. `/berth-it-4242-7`.
    pub fn cgroup_path(&self) -> &str {
        &self.cgroup_path
    }

    /// The config as JSON, to change what no helper covers.
    pub fn config_mut(&mut self) -> &mut Value {
        &mut self.config
    }

    /// The config as JSON.
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// Writes config.json (the helpers of the driver call this before create and run).
    /// Does nothing once [`Bundle::write_raw_config`] or [`Bundle::remove_config`] was used.
    pub fn save(&self) -> Result<()> {
        if self.raw_config {
            return Ok(());
        }
        let text = serde_json::to_vec_pretty(&self.config).context("serialising config.json")?;
        let path = self.path().join("config.json");
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Replaces config.json by these bytes, verbatim; later changes are not written.
    pub fn write_raw_config(&mut self, bytes: &[u8]) -> Result<()> {
        self.raw_config = true;
        let path = self.path().join("config.json");
        fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    }

    /// Removes config.json; later changes are not written.
    pub fn remove_config(&mut self) -> Result<()> {
        self.raw_config = true;
        let path = self.path().join("config.json");
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
    }

    /// Sets `process.args`.
    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.config["process"]["args"] = json!(args);
        self
    }

    /// Sets `process.args` to `sh -c SCRIPT`.
    pub fn sh(&mut self, script: &str) -> &mut Self {
        self.args(&["sh", "-c", script])
    }

    /// Appends `KEY=VALUE` to `process.env`.
    pub fn env(&mut self, entry: &str) -> &mut Self {
        push(&mut self.config["process"]["env"], json!(entry));
        self
    }

    /// Sets `process.cwd`.
    pub fn cwd(&mut self, cwd: &str) -> &mut Self {
        self.config["process"]["cwd"] = json!(cwd);
        self
    }

    /// Sets `process.terminal`.
    pub fn terminal(&mut self, on: bool) -> &mut Self {
        self.config["process"]["terminal"] = json!(on);
        self
    }

    /// Sets `process.user`: uid, gid, additionalGids, and umask when given.
    pub fn user(
        &mut self,
        uid: u32,
        gid: u32,
        additional: &[u32],
        umask: Option<u32>,
    ) -> &mut Self {
        let mut user = json!({ "uid": uid, "gid": gid });
        if !additional.is_empty() {
            user["additionalGids"] = json!(additional);
        }
        if let Some(umask) = umask {
            user["umask"] = json!(umask);
        }
        self.config["process"]["user"] = user;
        self
    }

    /// Sets `process.noNewPrivileges`.
    pub fn no_new_privileges(&mut self, on: bool) -> &mut Self {
        self.config["process"]["noNewPrivileges"] = json!(on);
        self
    }

    /// Sets every capability set (bounding, effective, permitted, inheritable, ambient) to `caps`.
    pub fn capabilities(&mut self, caps: &[&str]) -> &mut Self {
        self.config["process"]["capabilities"] = json!({
            "bounding": caps,
            "effective": caps,
            "permitted": caps,
            "inheritable": caps,
            "ambient": caps,
        });
        self
    }

    /// Replaces `process.rlimits` entry `kind` (e.g. "RLIMIT_NOFILE"), or adds it.
    pub fn rlimit(&mut self, kind: &str, soft: u64, hard: u64) -> &mut Self {
        let entry = json!({ "type": kind, "soft": soft, "hard": hard });
        let list = &mut self.config["process"]["rlimits"];
        if let Some(items) = list.as_array_mut() {
            items.retain(|r| r["type"] != json!(kind));
        }
        push(list, entry);
        self
    }

    /// Sets `hostname`.
    pub fn hostname(&mut self, name: &str) -> &mut Self {
        self.config["hostname"] = json!(name);
        self
    }

    /// Sets `root.readonly`.
    pub fn readonly(&mut self, on: bool) -> &mut Self {
        self.config["root"]["readonly"] = json!(on);
        self
    }

    /// Adds a namespace of `kind` ("user", "cgroup", ...) unless the config has it.
    pub fn add_namespace(&mut self, kind: &str) -> &mut Self {
        let list = &mut self.config["linux"]["namespaces"];
        let present = list
            .as_array()
            .is_some_and(|items| items.iter().any(|n| n["type"] == json!(kind)));
        if !present {
            push(list, json!({ "type": kind }));
        }
        self
    }

    /// Removes the namespace of `kind`: the container then shares the host's.
    pub fn remove_namespace(&mut self, kind: &str) -> &mut Self {
        if let Some(items) = self.config["linux"]["namespaces"].as_array_mut() {
            items.retain(|n| n["type"] != json!(kind));
        }
        self
    }

    /// Adds a user namespace mapping container ids 0.. to host ids `host..host+size`.
    pub fn user_namespace(&mut self, host: u32, size: u32) -> &mut Self {
        self.add_namespace("user");
        let map = json!([{ "containerID": 0, "hostID": host, "size": size }]);
        self.config["linux"]["uidMappings"] = map.clone();
        self.config["linux"]["gidMappings"] = map;
        self
    }

    /// Appends a mount.
    pub fn mount(
        &mut self,
        destination: &str,
        kind: &str,
        source: &str,
        options: &[&str],
    ) -> &mut Self {
        push(
            &mut self.config["mounts"],
            json!({ "destination": destination, "type": kind, "source": source, "options": options }),
        );
        self
    }

    /// Bind-mounts a host path at `destination` (read-write unless `readonly`).
    pub fn bind(&mut self, host: &Path, destination: &str, readonly: bool) -> &mut Self {
        let mode = if readonly { "ro" } else { "rw" };
        let source = host.display().to_string();
        self.mount(destination, "bind", &source, &["rbind", mode])
    }

    /// Merges `resources` (an OCI `LinuxResources` object) into `linux.resources`, key by key.
    pub fn resources(&mut self, resources: Value) -> &mut Self {
        let target = &mut self.config["linux"]["resources"];
        if let (Some(target), Some(source)) = (target.as_object_mut(), resources.as_object()) {
            for (key, value) in source {
                target.insert(key.clone(), value.clone());
            }
        }
        self
    }

    /// Removes `linux.cgroupsPath` (the runtime then picks a path of its own; the guard can no
    /// longer clean it up, so tests only do this when they check the runtime's choice).
    pub fn clear_cgroup_path(&mut self) -> &mut Self {
        if let Some(linux) = self.config["linux"].as_object_mut() {
            linux.remove("cgroupsPath");
        }
        self
    }
}

fn push(list: &mut Value, item: Value) {
    match list.as_array_mut() {
        Some(items) => items.push(item),
        None => *list = json!([item]),
    }
}

/// The config `runc spec` writes (runc 1.1.5), with `terminal: false`, the given root path and
/// cgroups path.
fn default_config(root_path: &str, cgroup_path: &str) -> Value {
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": DEFAULT_CAPS,
                "effective": DEFAULT_CAPS,
                "permitted": DEFAULT_CAPS,
                "ambient": DEFAULT_CAPS
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        },
        "root": { "path": root_path, "readonly": true },
        "hostname": "runc",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
        ],
        "linux": {
            "cgroupsPath": cgroup_path,
            "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
            "namespaces": [
                { "type": "pid" },
                { "type": "network" },
                { "type": "ipc" },
                { "type": "uts" },
                { "type": "mount" }
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// The rootfs shared by the bundles of this test binary, built on first use. It lives in the
/// temp dir under a name derived from the busybox binary (size and mtime), so reruns reuse it
/// and a busybox upgrade builds a fresh one; it is built elsewhere and renamed into place, so
/// concurrent test binaries never see half of it.
pub fn shared_rootfs() -> Result<PathBuf> {
    static ROOTFS: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    ROOTFS
        .get_or_init(|| build_shared_rootfs().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!("building the shared busybox rootfs: {e}"))
}

fn build_shared_rootfs() -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        fs::metadata(BUSYBOX).with_context(|| format!("{BUSYBOX} (install busybox-static)"))?;
    let tmp = std::env::temp_dir();
    let name = format!("berth-it-rootfs-v1-{}-{}", meta.size(), meta.mtime());
    let final_dir = tmp.join(&name);
    if final_dir.join(".complete").exists() {
        return Ok(final_dir);
    }
    let staging = tmp.join(format!("{name}.{}", std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }
    populate_rootfs(&staging)?;
    fs::write(staging.join(".complete"), b"").context("marking the rootfs complete")?;
    if let Err(err) = fs::rename(&staging, &final_dir) {
        // Another test binary won the race: use its rootfs.
        let _ = fs::remove_dir_all(&staging);
        if !final_dir.join(".complete").exists() {
            return Err(err).with_context(|| format!("renaming into {}", final_dir.display()));
        }
    }
    // The rootfs is searched by the container's users, which can be unmapped ids.
    fs::set_permissions(&final_dir, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", final_dir.display()))?;
    Ok(final_dir)
}

/// Fills `rootfs` with busybox, a symlink per applet, /etc/passwd and /etc/group and empty
/// mount points.
pub fn populate_rootfs(rootfs: &Path) -> Result<()> {
    for dir in ROOTFS_DIRS {
        fs::create_dir_all(rootfs.join(dir))
            .with_context(|| format!("creating {}/{dir}", rootfs.display()))?;
    }
    fs::set_permissions(rootfs, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", rootfs.display()))?;
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))
        .with_context(|| format!("chmod {}/tmp", rootfs.display()))?;
    let busybox = rootfs.join("bin/busybox");
    fs::copy(BUSYBOX, &busybox).with_context(|| format!("copying {BUSYBOX}"))?;
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .with_context(|| format!("running {BUSYBOX} --list"))?;
    ensure!(
        list.status.success(),
        "{BUSYBOX} --list failed: {}",
        list.status
    );
    let applets = String::from_utf8(list.stdout).context("busybox --list is not UTF-8")?;
    let mut count = 0;
    for applet in applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        if applet.contains('/') {
            bail!("unexpected applet name {applet:?}");
        }
        symlink("busybox", rootfs.join("bin").join(applet))
            .with_context(|| format!("linking applet {applet}"))?;
        count += 1;
    }
    ensure!(count > 100, "busybox lists only {count} applets");
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .context("writing /etc/passwd")?;
    fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
    )
    .context("writing /etc/group")?;
    Ok(())
}
