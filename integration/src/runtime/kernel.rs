//! What the host kernel reports about processes, cgroups and mounts, read from /proc and
//! /sys/fs/cgroup: the values tests compare against the config.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Where the cgroup hierarchies are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The directories of cgroup `path` (an absolute cgroupsPath) that exist in any hierarchy
/// (v1 controllers, name=systemd, and the v2 `unified` one).
pub fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return Vec::new();
    }
    let Ok(entries) = fs::read_dir(CGROUP_ROOT) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(rel))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Reads `/sys/fs/cgroup/<controller>/<path>/<file>`, trimmed.
pub fn cgroup_file(controller: &str, path: &str, file: &str) -> Result<String> {
    let full = Path::new(CGROUP_ROOT)
        .join(controller)
        .join(path.trim_start_matches('/'))
        .join(file);
    let text = fs::read_to_string(&full).with_context(|| format!("reading {}", full.display()))?;
    Ok(text.trim().to_string())
}

/// The pids in `cgroup.procs` of a cgroup directory.
pub fn cgroup_procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// `/proc/<pid>/cgroup` as (hierarchy controllers, path) pairs.
pub fn proc_cgroups(pid: i32) -> Result<Vec<(String, String)>> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("reading /proc/{pid}/cgroup"))?;
    Ok(parse_proc_cgroup(&text))
}

/// Parses the text of a `/proc/<pid>/cgroup` file into (controllers, path) pairs.
pub fn parse_proc_cgroup(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?.to_string();
            let path = parts.next()?.to_string();
            Some((controllers, path))
        })
        .collect()
}

/// True while `/proc/<pid>` exists and the process is not a zombie.
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_field(&stat, 3).is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The start time (field 22 of /proc/<pid>/stat): with the pid, it names one process for good.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_field(&stat, 22)?.parse().ok()
}

/// Field `n` (1-based, as in proc(5)) of a /proc/<pid>/stat line; the comm field may hold
/// spaces and parentheses, so counting starts after its last ')'.
fn stat_field(stat: &str, n: usize) -> Option<String> {
    if n < 3 {
        return None;
    }
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n - 3).map(str::to_string)
}

/// The command line of a process, arguments joined by spaces.
pub fn cmdline(pid: i32) -> Result<String> {
    let raw =
        fs::read(format!("/proc/{pid}/cmdline")).with_context(|| format!("/proc/{pid}/cmdline"))?;
    Ok(raw
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect::<Vec<_>>()
        .join(" "))
}

/// A field of a `/proc/<pid>/status`-style text, e.g. `CapEff` → "00000000a80425fb".
pub fn status_field(status: &str, field: &str) -> Option<String> {
    status.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == field).then(|| value.trim().to_string())
    })
}

/// The link target of `/proc/<pid>/ns/<kind>`, e.g. "net:[4026531840]".
pub fn namespace(pid: &str, kind: &str) -> Result<String> {
    let link = fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .with_context(|| format!("readlink /proc/{pid}/ns/{kind}"))?;
    Ok(link.display().to_string())
}

/// One line of /proc/<pid>/mountinfo.
#[derive(Debug, Clone)]
pub struct Mount {
    /// Where it is mounted.
    pub mount_point: String,
    /// Per-mount options (ro, nosuid, ...).
    pub options: Vec<String>,
    /// The filesystem type.
    pub fs_type: String,
}

/// Parses a mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(Mount {
                mount_point: unescape_octal(fields.get(4)?),
                options: fields.get(5)?.split(',').map(str::to_string).collect(),
                fs_type: fields.get(sep + 1)?.to_string(),
            })
        })
        .collect()
}

/// The mounts of this (the test's) mount namespace.
pub fn host_mounts() -> Result<Vec<Mount>> {
    let text =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text))
}

/// Host mounts at or under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    host_mounts()
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Linux capability numbers by name (capability.h), up to CAP_CHECKPOINT_RESTORE.
pub const CAPABILITIES: &[&str] = &[
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

/// The bit mask of a set of capability names, as /proc/<pid>/status prints it.
pub fn cap_mask(names: &[&str]) -> Result<u64> {
    let mut mask = 0u64;
    for name in names {
        match CAPABILITIES.iter().position(|c| c == name) {
            Some(bit) => mask |= 1 << bit,
            None => bail!("unknown capability {name}"),
        }
    }
    Ok(mask)
}

/// Parses a hex capability mask as printed in /proc/<pid>/status.
pub fn parse_cap_hex(text: &str) -> Result<u64> {
    u64::from_str_radix(text.trim(), 16).with_context(|| format!("bad capability mask {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_match_the_kernel_numbering() {
        assert_eq!(cap_mask(&["CAP_CHOWN", "CAP_KILL"]).unwrap(), 0x21);
        // runc spec's default set: AUDIT_WRITE (29), KILL (5), NET_BIND_SERVICE (10).
        assert_eq!(
            cap_mask(&["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]).unwrap(),
            0x2000_0420
        );
        assert!(cap_mask(&["CAP_NOPE"]).is_err());
    }

    #[test]
    fn stat_fields_skip_the_command_name() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 777 0";
        assert_eq!(stat_field(stat, 3).as_deref(), Some("S"));
        assert_eq!(stat_field(stat, 22).as_deref(), Some("777"));
    }

    #[test]
    fn mountinfo_is_parsed_and_unescaped() {
        let text = "36 25 0:32 / /tmp/a\\040b rw,nosuid - tmpfs tmpfs rw\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].mount_point, "/tmp/a b");
        assert_eq!(mounts[0].options, vec!["rw", "nosuid"]);
        assert_eq!(mounts[0].fs_type, "tmpfs");
    }

    #[test]
    fn proc_cgroup_lines_split_in_three() {
        let parsed = parse_proc_cgroup("4:memory:/a/b\n0::/\n");
        assert_eq!(parsed[0], ("memory".to_string(), "/a/b".to_string()));
        assert_eq!(parsed[1], (String::new(), "/".to_string()));
    }
}
