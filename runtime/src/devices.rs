//! /dev inside the container: the default devices runc creates (null, zero, full, random,
//! urandom, tty), linux.devices, the /dev/fd and /dev/std* links and /dev/ptmx; and the device
//! cgroup rules that let the container use them.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknodat, Mode, SFlag};
use nix::unistd::{fchownat, Gid, Uid};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use crate::sys::{fd_path, mkdir_all_in_root, relative, touch_in_root};

/// A device node to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    pub path: PathBuf,
    pub kind: LinuxDeviceType,
    pub major: i64,
    pub minor: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The devices every container gets.
pub fn default_devices() -> Vec<DeviceNode> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(name, major, minor)| DeviceNode {
        path: PathBuf::from("/dev").join(name),
        kind: LinuxDeviceType::C,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

/// The nodes to create: defaults (when /dev is ours to populate) then linux.devices, a config
/// entry replacing a default of the same path.
pub fn nodes(config_devices: &[LinuxDevice], with_defaults: bool) -> Vec<DeviceNode> {
    let mut out: Vec<DeviceNode> = if with_defaults {
        default_devices()
    } else {
        Vec::new()
    };
    for d in config_devices {
        let node = DeviceNode {
            path: d.path().clone(),
            kind: d.typ(),
            major: d.major(),
            minor: d.minor(),
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        };
        out.retain(|n| n.path != node.path);
        out.push(node);
    }
    out
}

/// Create a node under the rootfs. In a user namespace mknod is not allowed: the host's device
/// of the same path is bind-mounted instead (as runc does).
pub fn create_node(root: &impl AsFd, node: &DeviceNode, in_userns: bool) -> Result<(), String> {
    let ctx = |e: &dyn std::fmt::Display| format!("creating device {}: {e}", node.path.display());
    let rel = relative(&node.path);
    let parent = rel.parent().unwrap_or(Path::new(""));
    let name = rel.file_name().ok_or_else(|| ctx(&"no file name"))?;
    let dir = mkdir_all_in_root(root, parent, 0o755).map_err(|e| ctx(&e))?;
    if in_userns {
        let target = touch_in_root(root, &node.path).map_err(|e| ctx(&e))?;
        return mount(
            Some(&node.path),
            &fd_path(&target),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| ctx(&e));
    }
    let kind = match node.kind {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => return Err(ctx(&"type \"a\" is not a device node")),
    };
    // The O_PATH dir fd cannot take mknodat; go through its magic link, which names it exactly.
    let dir_path = fd_path(&dir);
    let full = dir_path.join(name);
    let _ = std::fs::remove_file(&full);
    let dev = makedev(node.major as u64, node.minor as u64);
    mknodat(
        nix::fcntl::AT_FDCWD,
        &full,
        kind,
        Mode::from_bits_truncate(node.mode),
        dev,
    )
    .map_err(|e| ctx(&e))?;
    // mknod is subject to the umask; set the mode exactly.
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        &full,
        Mode::from_bits_truncate(node.mode),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| ctx(&e))?;
    fchownat(
        nix::fcntl::AT_FDCWD,
        &full,
        Some(Uid::from_raw(node.uid)),
        Some(Gid::from_raw(node.gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| ctx(&e))?;
    Ok(())
}

/// The /dev links runc makes: fd, stdin, stdout, stderr, ptmx (and core when /proc/kcore exists).
pub fn create_links(rootfs: &Path) -> Result<(), String> {
    let mut links = vec![
        ("/proc/self/fd", "dev/fd"),
        ("/proc/self/fd/0", "dev/stdin"),
        ("/proc/self/fd/1", "dev/stdout"),
        ("/proc/self/fd/2", "dev/stderr"),
        ("pts/ptmx", "dev/ptmx"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "dev/core"));
    }
    for (target, link) in links {
        let path = rootfs.join(link);
        // /dev is the tmpfs we just mounted, inside the rootfs: no symlink can be in the way.
        if path.symlink_metadata().is_ok() {
            if link == "dev/ptmx" {
                let _ = std::fs::remove_file(&path);
            } else {
                continue;
            }
        }
        std::os::unix::fs::symlink(target, &path)
            .map_err(|e| format!("creating link /{link}: {e}"))?;
    }
    Ok(())
}

fn rule(
    kind: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(true);
    r.set_typ(Some(kind));
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(Some(access.to_string()));
    r
}

/// The device cgroup rules: the config's first (usually "deny all"), then what every container
/// may use (runc's allow list): mknod of anything, the default devices, /dev/console, ptmx and
/// the ptys, and the nodes of linux.devices.
pub fn cgroup_rules(
    config_rules: &[LinuxDeviceCgroup],
    devices: &[LinuxDevice],
) -> Vec<LinuxDeviceCgroup> {
    let mut rules = config_rules.to_vec();
    rules.push(rule(LinuxDeviceType::C, None, None, "m"));
    rules.push(rule(LinuxDeviceType::B, None, None, "m"));
    for n in default_devices() {
        rules.push(rule(
            LinuxDeviceType::C,
            Some(n.major),
            Some(n.minor),
            "rwm",
        ));
    }
    rules.push(rule(LinuxDeviceType::C, Some(5), Some(1), "rwm")); // /dev/console
    rules.push(rule(LinuxDeviceType::C, Some(5), Some(2), "rwm")); // /dev/ptmx
    rules.push(rule(LinuxDeviceType::C, Some(136), None, "rwm")); // /dev/pts/*
    for d in devices {
        if matches!(
            d.typ(),
            LinuxDeviceType::C | LinuxDeviceType::B | LinuxDeviceType::U
        ) {
            let kind = if d.typ() == LinuxDeviceType::B {
                LinuxDeviceType::B
            } else {
                LinuxDeviceType::C
            };
            rules.push(rule(kind, Some(d.major()), Some(d.minor()), "rwm"));
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_devices_replace_defaults() {
        let d: LinuxDevice = serde_json::from_str(
            r#"{"path":"/dev/null","type":"c","major":1,"minor":3,"fileMode":384}"#,
        )
        .unwrap();
        let fuse: LinuxDevice =
            serde_json::from_str(r#"{"path":"/dev/fuse","type":"c","major":10,"minor":229}"#)
                .unwrap();
        let n = nodes(&[d, fuse], true);
        assert_eq!(n.len(), 7);
        assert_eq!(
            n.iter()
                .find(|x| x.path == Path::new("/dev/null"))
                .unwrap()
                .mode,
            0o600
        );
        assert!(nodes(&[], false).is_empty());
    }

    #[test]
    fn rules_follow_the_config_rules() {
        let deny: LinuxDeviceCgroup =
            serde_json::from_str(r#"{"allow":false,"access":"rwm"}"#).unwrap();
        let rules = cgroup_rules(std::slice::from_ref(&deny), &[]);
        assert_eq!(rules[0], deny);
        assert!(rules
            .iter()
            .any(|r| r.major() == Some(1) && r.minor() == Some(3) && r.allow()));
    }
}
