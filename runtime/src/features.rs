//! `features`: what this runtime supports, as the OCI features document. It lists only what is
//! implemented.

use serde_json::{json, Value};

/// The mount options that berth-runc understands.
pub const MOUNT_OPTIONS: &[&str] = &[
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "nosymfollow",
    "private",
    "rbind",
    "relatime",
    "remount",
    "ro",
    "rprivate",
    "rshared",
    "rslave",
    "runbindable",
    "rw",
    "shared",
    "slave",
    "strictatime",
    "suid",
    "symfollow",
    "sync",
    "tmpcopyup",
    "unbindable",
    // Recursive attributes (mount_setattr with AT_RECURSIVE).
    "ratime",
    "rdev",
    "rdiratime",
    "rexec",
    "rnoatime",
    "rnodev",
    "rnodiratime",
    "rnoexec",
    "rnorelatime",
    "rnostrictatime",
    "rnosuid",
    "rnosymfollow",
    "rrelatime",
    "rro",
    "rrw",
    "rstrictatime",
    "rsuid",
    "rsymfollow",
];

/// Idmapped bind mounts, listed only where the kernel has mount_setattr.
const IDMAP_OPTIONS: &[&str] = &["idmap", "ridmap"];

fn mount_options() -> Vec<&'static str> {
    let mut v: Vec<&str> = MOUNT_OPTIONS.to_vec();
    if crate::idmap::supported() {
        v.extend_from_slice(IDMAP_OPTIONS);
    }
    v.sort_unstable();
    v
}

/// The features JSON.
pub fn features() -> Value {
    let caps: Vec<String> = (0..=crate::capabilities::last_cap().min(63))
        .filter_map(|n| caps::all().into_iter().find(|c| c.index() as u32 == n))
        .map(|c| c.to_string())
        .collect();
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": crate::OCI_VERSION,
        "hooks": crate::hooks::HookKind::ALL.map(|k| k.name()),
        "mountOptions": mount_options(),
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": crate::seccomp::features(),
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": crate::idmap::supported()}}
        },
        "annotations": {
            "io.github.berth.runtime.version": crate::VERSION
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_mount_option_is_understood() {
        for o in mount_options() {
            let parsed = crate::mounts::parse_options(&[o.to_string()]);
            assert!(
                parsed.data.is_empty(),
                "{o} is listed but would reach the filesystem as data"
            );
        }
        let listed = mount_options();
        for o in ["rro", "rnosymfollow", "ratime"] {
            assert!(listed.contains(&o), "{o} missing from features");
        }
    }
}
