//! What a run asks for, made into an OCI spec with Docker's defaults: the image config's
//! process (entrypoint, cmd, env, workdir, user) overridden by the request, Docker's default
//! capabilities, mounts, masked and read-only paths and seccomp profile, and resource limits.
//!
//! One place for `berth run`, the builder's RUN containers and the Docker API's container
//! create: a container made by any of them looks the same to the runtime. Errors name the
//! field that was wrong ([`Field`]); each front says it in its own words (`--memory` for the
//! CLI, `HostConfig.Memory` for the Docker API).

pub mod mounts;
pub mod net;
pub mod seccomp;

use serde_json::{json, Value};

use crate::tasks::user::{ANNOTATION_GROUP_ADD, ANNOTATION_USER};

/// Docker's default capabilities.
pub const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability the runtime knows (for `CapAdd: ALL` and for checking names), in the
/// kernel's order: a capability's index is its bit.
const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Where a `--init` container's init is mounted, as Docker mounts its docker-init.
pub const INIT_PATH: &str = "/sbin/docker-init";

/// The annotation that asks berthd, at task create, to bind-mount its init (berth-init) at
/// the annotation's value ([`INIT_PATH`]); `berth run` cannot know the host's path of it.
pub const ANNOTATION_INIT: &str = "berth.io/init";

/// Paths Docker masks in /proc and /sys.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

/// Paths Docker makes read-only.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The PATH a process gets when the image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default mounts: proc, a /dev tmpfs with pts, shm and mqueue, read-only sysfs,
/// and (with `cgroup`) a read-only cgroup tree.
pub fn default_mounts(cgroup: bool) -> Vec<Value> {
    let mut m = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    if cgroup {
        m.push(json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}));
    }
    m
}

/// The request field a [`SpecError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The command (entrypoint and cmd together).
    Command,
    /// An environment entry.
    Env,
    /// The memory limit.
    Memory,
    /// The memory+swap limit.
    MemorySwap,
    /// The CPU quota.
    Cpus,
    /// The CPU weight.
    CpuShares,
    /// The CPU set.
    CpusetCpus,
    /// The pids limit.
    PidsLimit,
    /// Security options.
    SecurityOpt,
    /// Added capabilities.
    CapAdd,
    /// Dropped capabilities.
    CapDrop,
    /// Resource limits.
    Ulimits,
}

impl Field {
    /// The `berth run` flag.
    pub fn flag(self) -> &'static str {
        match self {
            Field::Command => "command",
            Field::Env => "--env",
            Field::Memory => "--memory",
            Field::MemorySwap => "--memory-swap",
            Field::Cpus => "--cpus",
            Field::CpuShares => "--cpu-shares",
            Field::CpusetCpus => "--cpuset-cpus",
            Field::PidsLimit => "--pids-limit",
            Field::SecurityOpt => "--security-opt",
            Field::CapAdd => "--cap-add",
            Field::CapDrop => "--cap-drop",
            Field::Ulimits => "--ulimit",
        }
    }

    /// The Docker API's field.
    pub fn docker(self) -> &'static str {
        match self {
            Field::Command => "Cmd",
            Field::Env => "Env",
            Field::Memory => "HostConfig.Memory",
            Field::MemorySwap => "HostConfig.MemorySwap",
            Field::Cpus => "HostConfig.NanoCpus",
            Field::CpuShares => "HostConfig.CpuShares",
            Field::CpusetCpus => "HostConfig.CpusetCpus",
            Field::PidsLimit => "HostConfig.PidsLimit",
            Field::SecurityOpt => "HostConfig.SecurityOpt",
            Field::CapAdd => "HostConfig.CapAdd",
            Field::CapDrop => "HostConfig.CapDrop",
            Field::Ulimits => "HostConfig.Ulimits",
        }
    }
}

/// A request the spec cannot be made from.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    /// What was wrong.
    pub field: Field,
    /// Why (without the field's name: each front adds its own).
    pub message: String,
}

fn bad<T>(field: Field, message: impl Into<String>) -> Result<T, SpecError> {
    Err(SpecError {
        field,
        message: message.into(),
    })
}

/// A resource limit (`nofile`, `nproc`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    /// Docker's name, without `RLIMIT_`, lower case.
    pub name: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// What a run asks for, whichever front it came through.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Entrypoint instead of the image's (`Some(vec![])` clears it, as Docker's `--entrypoint ""`).
    pub entrypoint: Option<Vec<String>>,
    /// Command (replaces the image's Cmd when not empty).
    pub cmd: Vec<String>,
    /// Extra environment, KEY=VALUE (a bare KEY is refused).
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: Option<String>,
    /// `USER[:GROUP]`, names or ids, resolved against the container's own files when its
    /// task is made (`crate::tasks::user`); `None` or empty: the image's, else root.
    pub user: Option<String>,
    /// Docker's `--group-add`: more supplementary groups (names or gids).
    pub group_add: Vec<String>,
    /// A terminal.
    pub tty: bool,
    /// Memory limit, bytes.
    pub memory: Option<i64>,
    /// Memory + swap limit, bytes (-1: unlimited swap).
    pub memory_swap: Option<i64>,
    /// CPUs (0.5 = half a CPU).
    pub cpus: Option<f64>,
    /// CPU weight (Docker's 2..262144 shares).
    pub cpu_shares: Option<u64>,
    /// CPUs the container may use (`0-1`, `0,2`).
    pub cpuset_cpus: Option<String>,
    /// Most processes.
    pub pids_limit: Option<i64>,
    /// `seccomp=unconfined` and `no-new-privileges[:true|false]`.
    pub security_opt: Vec<String>,
    /// Capabilities to add (`NET_ADMIN` or `CAP_NET_ADMIN`, `ALL`).
    pub cap_add: Vec<String>,
    /// Capabilities to drop (`ALL` drops every one).
    pub cap_drop: Vec<String>,
    /// A read-only rootfs.
    pub readonly_rootfs: bool,
    /// Resource limits.
    pub ulimits: Vec<Ulimit>,
    /// Docker's `--privileged`: every capability, no seccomp profile, no masked or read-only
    /// paths, /sys and the cgroup tree writable, the host's devices.
    pub privileged: bool,
    /// Docker's `--init`: berth-init runs as PID 1 with the command as its child.
    pub init: bool,
}

/// The smallest memory limit dockerd accepts, in bytes.
pub const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// The CFS period a CPU limit is a quota of (100 ms, as Docker's `--cpus`).
pub const CPU_PERIOD: u64 = 100_000;

/// The CFS quota per [`CPU_PERIOD`] of `cpus` CPUs, within dockerd's range: at least 0.01
/// CPU (the kernel refuses a quota under 1 ms, and the runtime takes a quota of 0 for no
/// limit at all), at most the CPUs online (far above, the kernel refuses the quota).
pub fn cpu_quota(cpus: f64) -> std::result::Result<i64, String> {
    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus.is_nan() || !(0.01..=online as f64).contains(&cpus) {
        return Err(format!(
            "Range of CPUs is from 0.01 to {online}.00, as there are only {online} CPUs available"
        ));
    }
    Ok((cpus * CPU_PERIOD as f64) as i64)
}

/// `512`, `64m`, `1g`, `100k`: bytes with an optional 1024-based unit.
pub fn parse_size(s: &str) -> std::result::Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = match t.chars().last() {
        Some('b') => (&t[..t.len() - 1], 1),
        Some('k') => (&t[..t.len() - 1], 1 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t.as_str(), 1),
    };
    num.parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size (bytes, or a number with b, k, m or g)"))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn cap_name(field: Field, c: &str) -> Result<String, SpecError> {
    let up = c.trim().to_ascii_uppercase();
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    if !ALL_CAPS.contains(&full.as_str()) {
        return bad(field, format!("unknown capability {c:?}"));
    }
    Ok(full)
}

/// The capability set: Docker's defaults, minus `drop`, plus `add`.
fn capabilities(add: &[String], drop: &[String]) -> Result<Vec<String>, SpecError> {
    let is_all = |v: &[String]| v.iter().any(|c| c.eq_ignore_ascii_case("all"));
    let mut caps: Vec<String> = if is_all(drop) {
        Vec::new()
    } else {
        let dropped = drop
            .iter()
            .map(|c| cap_name(Field::CapDrop, c))
            .collect::<Result<Vec<_>, _>>()?;
        CAPS.iter()
            .map(|c| c.to_string())
            .filter(|c| !dropped.contains(c))
            .collect()
    };
    if is_all(add) {
        return Ok(ALL_CAPS.iter().map(|c| c.to_string()).collect());
    }
    for c in add {
        let c = cap_name(Field::CapAdd, c)?;
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    Ok(caps)
}

/// The ids a spec carries before berthd resolves the user at task create: `UID[:GID]` as
/// given (a uid alone: gid = uid), else nobody's 65534, never root, for whatever would run it
/// without resolving (the user as asked is in `tasks::user::ANNOTATION_USER`).
fn placeholder_ids(user: &str) -> (u32, u32) {
    const NOBODY: u32 = 65534;
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let uid = if u.is_empty() {
        Ok(0)
    } else {
        u.parse::<u32>()
    };
    match (uid, g.map(str::parse::<u32>)) {
        (Ok(uid), None) => (uid, uid),
        (Ok(uid), Some(Ok(gid))) => (uid, gid),
        _ => (NOBODY, NOBODY),
    }
}

/// The capabilities of a privileged container: as Docker's, every one the engine may hand
/// on, here those in the bounding set of the process making the spec (a sandbox may have
/// dropped some from root's; asking for them would fail the runtime's capset). Every one
/// when the set cannot be read.
pub(crate) fn privileged_caps() -> Vec<String> {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        });
    ALL_CAPS
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding.is_none_or(|b| (b >> bit) & 1 == 1))
        .map(|(_, c)| c.to_string())
        .collect()
}

/// What `--privileged` changes in a spec made with the defaults: no masked or read-only paths,
/// /sys and the cgroup tree writable, and the host's device nodes (see [`host_devices`]).
fn privileged(spec: &mut Value) {
    spec["linux"]["maskedPaths"] = json!([]);
    spec["linux"]["readonlyPaths"] = json!([]);
    for m in spec["mounts"].as_array_mut().into_iter().flatten() {
        if matches!(m["type"].as_str(), Some("sysfs" | "cgroup")) {
            if let Some(o) = m["options"].as_array_mut() {
                o.retain(|o| o != "ro");
            }
        }
    }
    spec["linux"]["devices"] = json!(host_devices(std::path::Path::new("/dev")));
}

/// The device nodes under `dir` (the host's /dev), as OCI `linux.devices` entries with their
/// type, numbers, mode and owner: what runc's `HostDevices` gives Docker for `--privileged`,
/// skipping the same entries (pts, shm, fd, mqueue and the lxc/udev dirs, which the container
/// has its own of, and the console). A dir that cannot be read is skipped, as by runc.
pub fn host_devices(dir: &std::path::Path) -> Vec<Value> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let name = e.file_name();
        let ft = md.file_type();
        if ft.is_dir() {
            if !matches!(
                name.to_str(),
                Some("pts" | "shm" | "fd" | "mqueue" | ".lxc" | ".lxd-mounts" | ".udev")
            ) {
                out.extend(host_devices(&path));
            }
            continue;
        }
        if name == "console" {
            continue;
        }
        let ty = if ft.is_char_device() {
            "c"
        } else if ft.is_block_device() {
            "b"
        } else {
            continue;
        };
        let rdev = md.rdev();
        out.push(json!({
            "path": path.to_string_lossy(),
            "type": ty,
            "major": nix::sys::stat::major(rdev),
            "minor": nix::sys::stat::minor(rdev),
            "fileMode": md.mode() & 0o7777,
            "uid": md.uid(),
            "gid": md.gid(),
        }));
    }
    out
}

/// The OCI spec of container `id` in namespace `ns`, for `image` (the image config's
/// `config` object) and `o`. Mounts beyond Docker's defaults and the network are added by the
/// caller ([`mounts`], [`net`]).
pub fn spec(ns: &str, id: &str, o: &RunOptions, image: &Value) -> Result<Value, SpecError> {
    // Docker's rule: a given entrypoint drops the image's cmd; given arguments replace Cmd and
    // follow the entrypoint.
    let (mut args, image_cmd) = match &o.entrypoint {
        Some(ep) => (ep.clone(), Vec::new()),
        None => (strs(&image["Entrypoint"]), strs(&image["Cmd"])),
    };
    if o.cmd.is_empty() {
        args.extend(image_cmd);
    } else {
        args.extend(o.cmd.iter().cloned());
    }
    if args.is_empty() {
        return bad(
            Field::Command,
            "no command: the image has no entrypoint or cmd and none was given",
        );
    }
    if o.init {
        args.splice(0..0, [INIT_PATH.to_string(), "--".to_string()]);
    }
    let mut env = strs(&image["Env"]);
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.into());
    }
    for e in &o.env {
        let Some((key, _)) = e.split_once('=') else {
            return bad(Field::Env, format!("{e:?}: expected KEY=VALUE"));
        };
        if key.is_empty() {
            return bad(Field::Env, format!("{e:?}: the name is empty"));
        }
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    if o.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_string());
    }
    let nonempty = |k: &str| {
        image[k]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let cwd = o
        .cwd
        .clone()
        .filter(|c| !c.is_empty())
        .or_else(|| nonempty("WorkingDir"))
        .unwrap_or_else(|| "/".into());
    let user = o
        .user
        .clone()
        .filter(|u| !u.is_empty())
        .or_else(|| nonempty("User"))
        .unwrap_or_default();
    let (uid, gid) = placeholder_ids(&user);
    // Every device is denied but those the runtime allows by default; privileged allows all.
    let mut resources = json!({"devices": [{"allow": o.privileged, "access": "rwm"}]});
    if let Some(m) = o.memory.filter(|m| *m != 0) {
        if m < 0 {
            return bad(
                Field::Memory,
                format!("{m}: must be a positive number of bytes"),
            );
        }
        // dockerd's least limit (`docker update` keeps to it too): under it the container is
        // OOM-killed as it starts.
        if m < MIN_MEMORY {
            return bad(
                Field::Memory,
                format!("{m}: Minimum memory limit allowed is 6MB"),
            );
        }
        resources["memory"] = json!({"limit": m});
    }
    if let Some(s) = o.memory_swap.filter(|s| *s != 0) {
        if o.memory.unwrap_or(0) <= 0 {
            return bad(Field::MemorySwap, "needs a memory limit as well");
        }
        if s != -1 && s < o.memory.unwrap_or(0) {
            return bad(
                Field::MemorySwap,
                format!("{s}: must be at least the memory limit (or -1)"),
            );
        }
        resources["memory"]["swap"] = json!(s);
    }
    if let Some(c) = o.cpus {
        if c.is_nan() || c <= 0.0 {
            return bad(Field::Cpus, format!("{c}: must be positive"));
        }
        let quota = cpu_quota(c).map_err(|e| SpecError {
            field: Field::Cpus,
            message: format!("{c}: {e}"),
        })?;
        resources["cpu"] = json!({"period": CPU_PERIOD, "quota": quota});
    }
    if let Some(s) = o.cpu_shares.filter(|s| *s != 0) {
        if !(2..=262_144).contains(&s) {
            return bad(Field::CpuShares, format!("{s}: must be 2 to 262144"));
        }
        if !resources["cpu"].is_object() {
            resources["cpu"] = json!({});
        }
        resources["cpu"]["shares"] = json!(s);
    }
    if let Some(set) = o.cpuset_cpus.as_deref().filter(|s| !s.is_empty()) {
        let ok = set.split(',').all(|part| {
            let mut ends = part.splitn(2, '-');
            ends.all(|n| n.parse::<u32>().is_ok())
        });
        if !ok {
            return bad(
                Field::CpusetCpus,
                format!("{set:?}: expected a list like 0-2,4"),
            );
        }
        if !resources["cpu"].is_object() {
            resources["cpu"] = json!({});
        }
        resources["cpu"]["cpus"] = json!(set);
    }
    if let Some(p) = o.pids_limit.filter(|p| *p != 0) {
        if p < -1 {
            return bad(Field::PidsLimit, format!("{p}: must be positive (or -1)"));
        }
        if p > 0 {
            resources["pids"] = json!({"limit": p});
        }
    }
    let mut seccomp = Some(seccomp::default_profile());
    let mut no_new_privs = true;
    for opt in &o.security_opt {
        match opt.replace(':', "=").as_str() {
            "seccomp=unconfined" => seccomp = None,
            "no-new-privileges" | "no-new-privileges=true" => no_new_privs = true,
            "no-new-privileges=false" => no_new_privs = false,
            "label=disable" | "apparmor=unconfined" => {}
            _ => {
                return bad(
                    Field::SecurityOpt,
                    format!(
                        "{opt:?} is not supported (only seccomp=unconfined, \
                         no-new-privileges and label=disable)"
                    ),
                )
            }
        }
    }
    let caps = capabilities(&o.cap_add, &o.cap_drop)?;
    // Docker's privileged: every capability whatever was added or dropped (names are checked
    // above all the same), and no seccomp profile whatever --security-opt says.
    let caps = if o.privileged {
        privileged_caps()
    } else {
        caps
    };
    if o.privileged {
        seccomp = None;
    }
    let mut rlimits = vec![json!({"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024})];
    for u in &o.ulimits {
        let ty = format!("RLIMIT_{}", u.name.to_ascii_uppercase());
        const KNOWN: &[&str] = &[
            "RLIMIT_AS",
            "RLIMIT_CORE",
            "RLIMIT_CPU",
            "RLIMIT_DATA",
            "RLIMIT_FSIZE",
            "RLIMIT_LOCKS",
            "RLIMIT_MEMLOCK",
            "RLIMIT_MSGQUEUE",
            "RLIMIT_NICE",
            "RLIMIT_NOFILE",
            "RLIMIT_NPROC",
            "RLIMIT_RSS",
            "RLIMIT_RTPRIO",
            "RLIMIT_RTTIME",
            "RLIMIT_SIGPENDING",
            "RLIMIT_STACK",
        ];
        if !KNOWN.contains(&ty.as_str()) {
            return bad(Field::Ulimits, format!("unknown limit {:?}", u.name));
        }
        if u.soft > u.hard {
            return bad(
                Field::Ulimits,
                format!(
                    "{}: soft limit {} above hard limit {}",
                    u.name, u.soft, u.hard
                ),
            );
        }
        rlimits.retain(|r| r["type"] != ty.as_str());
        rlimits.push(json!({"type": ty, "hard": u.hard, "soft": u.soft}));
    }
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": o.tty,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": rlimits,
            "noNewPrivileges": no_new_privs
        },
        "root": {"path": "rootfs", "readonly": o.readonly_rootfs},
        "hostname": id,
        "mounts": default_mounts(true),
        "linux": {
            "resources": resources,
            "cgroupsPath": format!("/{ns}/{id}"),
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}],
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS
        }
    });
    if let Some(p) = seccomp {
        spec["linux"]["seccomp"] = p;
    }
    spec["annotations"] = json!({ANNOTATION_USER: user});
    if !o.group_add.is_empty() {
        spec["annotations"][ANNOTATION_GROUP_ADD] = json!(json!(o.group_add).to_string());
    }
    if o.init {
        spec["annotations"][ANNOTATION_INIT] = json!(INIT_PATH);
    }
    if o.privileged {
        privileged(&mut spec);
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_config_and_options_make_the_process() {
        let cfg = json!({"Entrypoint": ["/bin/ep"], "Cmd": ["x"], "Env": ["PATH=/bin", "A=1"], "WorkingDir": "/w", "User": "5"});
        let o = RunOptions {
            env: vec!["A=2".into()],
            memory: Some(64 << 20),
            cmd: vec!["y".into(), "-z".into()],
            ..Default::default()
        };
        let s = spec("ns", "c1", &o, &cfg).unwrap();
        assert_eq!(s["process"]["args"], json!(["/bin/ep", "y", "-z"]));
        assert_eq!(s["process"]["env"], json!(["PATH=/bin", "A=2"]));
        assert_eq!(s["process"]["cwd"], "/w");
        assert_eq!(s["process"]["user"]["uid"], 5);
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(s["linux"]["cgroupsPath"], "/ns/c1");
        assert_eq!(s["hostname"], "c1");
        // A given entrypoint drops the image's cmd.
        let o = RunOptions {
            entrypoint: Some(vec!["/bin/other".into()]),
            ..Default::default()
        };
        let s = spec("ns", "c1", &o, &cfg).unwrap();
        assert_eq!(s["process"]["args"], json!(["/bin/other"]));
    }

    #[test]
    fn the_user_as_asked_goes_to_berthd_in_the_annotations() {
        let cfg = json!({"Cmd": ["id"], "User": "app"});
        let s = spec("ns", "c", &RunOptions::default(), &cfg).unwrap();
        assert_eq!(s["annotations"][ANNOTATION_USER], "app");
        // Never root before berthd resolves the name.
        assert_eq!(s["process"]["user"], json!({"uid": 65534, "gid": 65534}));
        let o = RunOptions {
            user: Some("7:staff".into()),
            group_add: vec!["audio".into(), "50".into()],
            ..Default::default()
        };
        let s = spec("ns", "c", &o, &cfg).unwrap();
        assert_eq!(s["annotations"][ANNOTATION_USER], "7:staff");
        assert_eq!(s["annotations"][ANNOTATION_GROUP_ADD], r#"["audio","50"]"#);
        let s = spec("ns", "c", &RunOptions::default(), &json!({"Cmd": ["id"]})).unwrap();
        assert_eq!(s["annotations"][ANNOTATION_USER], "");
        assert_eq!(s["process"]["user"], json!({"uid": 0, "gid": 0}));
        assert!(s["annotations"][ANNOTATION_GROUP_ADD].is_null());
    }

    #[test]
    fn privileged_lifts_the_confinement() {
        let cfg = json!({"Cmd": ["sh"]});
        let plain = spec("ns", "c", &RunOptions::default(), &cfg).unwrap();
        assert!(plain["linux"]["seccomp"].is_object());
        assert_eq!(plain["linux"]["resources"]["devices"][0]["allow"], false);
        let o = RunOptions {
            privileged: true,
            cap_drop: vec!["ALL".into()],
            ..Default::default()
        };
        let s = spec("ns", "c", &o, &cfg).unwrap();
        let caps = &s["process"]["capabilities"];
        for set in ["bounding", "effective", "permitted"] {
            assert_eq!(caps[set], json!(privileged_caps()), "{set}");
        }
        assert!(privileged_caps().contains(&"CAP_SYS_ADMIN".to_string()));
        // The list is in bit order.
        assert_eq!(ALL_CAPS[21], "CAP_SYS_ADMIN");
        assert_eq!(ALL_CAPS[40], "CAP_CHECKPOINT_RESTORE");
        assert!(s["linux"]["seccomp"].is_null());
        assert_eq!(s["linux"]["maskedPaths"], json!([]));
        assert_eq!(s["linux"]["readonlyPaths"], json!([]));
        assert_eq!(
            s["linux"]["resources"]["devices"],
            json!([{"allow": true, "access": "rwm"}])
        );
        for m in s["mounts"].as_array().unwrap() {
            if matches!(m["destination"].as_str(), Some("/sys" | "/sys/fs/cgroup")) {
                assert!(
                    !m["options"].as_array().unwrap().contains(&json!("ro")),
                    "{m}"
                );
            }
        }
        // The host's /dev/null is among the devices, with its numbers.
        let devs = s["linux"]["devices"].as_array().unwrap();
        let null = devs.iter().find(|d| d["path"] == "/dev/null").unwrap();
        assert_eq!(
            (
                null["type"].as_str(),
                null["major"].as_u64(),
                null["minor"].as_u64()
            ),
            (Some("c"), Some(1), Some(3))
        );
        assert!(devs
            .iter()
            .all(|d| !d["path"].as_str().unwrap().starts_with("/dev/pts/")));
    }

    #[test]
    fn host_devices_are_the_nodes_under_the_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), b"").unwrap();
        std::os::unix::fs::symlink("/dev/null", dir.path().join("link")).unwrap();
        assert_eq!(host_devices(dir.path()), Vec::<Value>::new());
        assert_eq!(
            host_devices(&dir.path().join("missing")),
            Vec::<Value>::new()
        );
    }

    #[test]
    fn init_runs_the_command_as_its_child() {
        let cfg = json!({"Entrypoint": ["/ep"], "Cmd": ["x"]});
        let o = RunOptions {
            init: true,
            ..Default::default()
        };
        let s = spec("ns", "c", &o, &cfg).unwrap();
        assert_eq!(s["process"]["args"], json!([INIT_PATH, "--", "/ep", "x"]));
        assert_eq!(s["annotations"][ANNOTATION_INIT], INIT_PATH);
        let plain = spec("ns", "c", &RunOptions::default(), &cfg).unwrap();
        assert!(plain["annotations"][ANNOTATION_INIT].is_null());
    }

    #[test]
    fn capabilities_add_and_drop_by_name() {
        let c = capabilities(&["net_admin".into()], &["CAP_CHOWN".into(), "kill".into()]).unwrap();
        assert!(c.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!c.contains(&"CAP_CHOWN".to_string()));
        assert!(!c.contains(&"CAP_KILL".to_string()));
        assert!(capabilities(&[], &["ALL".into()]).unwrap().is_empty());
        let e = capabilities(&["FLY".into()], &[]).unwrap_err();
        assert_eq!(e.field, Field::CapAdd);
        assert!(e.message.contains("FLY"), "{e}");
    }

    #[test]
    fn bad_options_name_their_field() {
        let cfg = json!({"Cmd": ["x"]});
        let with = |o: RunOptions| spec("ns", "c", &o, &cfg).unwrap_err().field;
        assert_eq!(
            with(RunOptions {
                env: vec!["NOVALUE".into()],
                ..Default::default()
            }),
            Field::Env
        );
        assert_eq!(
            with(RunOptions {
                memory_swap: Some(10),
                ..Default::default()
            }),
            Field::MemorySwap
        );
        assert_eq!(
            with(RunOptions {
                security_opt: vec!["apparmor=x".into()],
                ..Default::default()
            }),
            Field::SecurityOpt
        );
        assert_eq!(
            spec("ns", "c", &RunOptions::default(), &json!({}))
                .unwrap_err()
                .field,
            Field::Command
        );
    }

    #[test]
    fn cpus_and_memory_stay_in_the_range_the_kernel_takes() {
        // Found by the docker_create fuzz target: 1e-9 CPU made a quota of 0 (no limit at
        // all) and 0.005 CPU one of 500 us, which the kernel refuses when the task starts.
        for c in [1e-9, 0.005, 0.0099, 1e12, f64::INFINITY] {
            let o = RunOptions {
                cpus: Some(c),
                ..Default::default()
            };
            let e = spec("ns", "c", &o, &json!({"Cmd": ["x"]})).unwrap_err();
            assert_eq!(e.field, Field::Cpus, "{c}");
            assert!(e.message.contains("Range of CPUs is from 0.01"), "{c}: {e}");
        }
        // Found by the same target: a memory limit of 1 byte was taken (dockerd and berthd's
        // own update refuse under 6 MB).
        let o = RunOptions {
            memory: Some(1),
            ..Default::default()
        };
        let e = spec("ns", "c", &o, &json!({"Cmd": ["x"]})).unwrap_err();
        assert_eq!(e.field, Field::Memory);
        assert!(e.message.contains("6MB"), "{e}");
        let o = RunOptions {
            cpus: Some(0.01),
            ..Default::default()
        };
        let s = spec("ns", "c", &o, &json!({"Cmd": ["x"]})).unwrap();
        assert_eq!(s["linux"]["resources"]["cpu"]["quota"], 1000);
        assert_eq!(cpu_quota(0.5), Ok(50_000));
    }
}
