//! Building the container's root filesystem inside its mount namespace: propagation, the rootfs
//! bind, config.json's mounts in order, /dev, pivot_root (or MS_MOVE + chroot with
//! `--no-pivot`), then sysctls, read-only and masked paths and a read-only root.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chdir, chroot, fchdir, pivot_root};

use crate::config::Config;
use crate::devices;
use crate::mounts::{self, locked_flags, CgroupMountSource};
use crate::sys::{fd_path, open_in_root};

/// Everything before pivot_root. Runs in the child, in its new mount namespace, or with
/// `own_mount_ns` false in the caller's (the config lists no mount namespace): then the caller's
/// mounts keep their propagation and only the rootfs bind and what is mounted below it are made,
/// as runc makes them.
pub fn prepare(
    cfg: &Config,
    in_userns: bool,
    cgroup: Option<&CgroupMountSource>,
    idmapped: &crate::idmap::IdmappedMounts,
    own_mount_ns: bool,
) -> Result<(), String> {
    let linux = cfg.spec.linux().as_ref();
    if own_mount_ns {
        // First our copy of the host's mounts stops sending events back to the host (slave, or
        // private when asked). Shared and unbindable are for the new root and are set on it
        // after the pivot: a shared copy would propagate to the host, an unbindable one could
        // not even be bound as the rootfs.
        let first = match root_propagation(cfg)? {
            Some(p) if !p.intersects(MsFlags::MS_SHARED | MsFlags::MS_UNBINDABLE) => {
                p | MsFlags::MS_REC
            }
            _ => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        };
        mount(None::<&str>, "/", None::<&str>, first, None::<&str>)
            .map_err(|e| format!("setting propagation of /: {e}"))?;
    }

    let rootfs = &cfg.rootfs;
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("binding rootfs {}: {e}", rootfs.display()))?;
    // pivot_root refuses a new root whose mount is shared.
    mount(
        None::<&str>,
        rootfs,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making rootfs private: {e}"))?;

    let root = File::open(rootfs).map_err(|e| format!("opening rootfs: {e}"))?;
    let mut dev_is_ours = false;
    for (i, m) in cfg
        .spec
        .mounts()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        mounts::mount_entry(&root, m, &cfg.bundle, cgroup, idmapped.get(i))?;
        if m.destination() == Path::new("/dev") {
            let opts = mounts::parse_options(m.options().as_deref().unwrap_or(&[]));
            dev_is_ours = m.typ().as_deref() != Some("bind") && !opts.is_bind();
        }
    }

    let config_devices = linux.and_then(|l| l.devices().as_deref()).unwrap_or(&[]);
    for node in devices::nodes(config_devices, dev_is_ours) {
        devices::create_node(&root, &node, in_userns)?;
    }
    if dev_is_ours {
        devices::create_links(rootfs)?;
    }
    Ok(())
}

/// linux.rootfsPropagation as mount(2) flags, `None` when not set.
fn root_propagation(cfg: &Config) -> Result<Option<MsFlags>, String> {
    match cfg
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
    {
        None | Some("") => Ok(None),
        Some(p) => mounts::propagation_flag(p)
            .map(Some)
            .ok_or_else(|| format!("invalid linux.rootfsPropagation {p:?}")),
    }
}

/// Make the rootfs the process's root: pivot_root, or MS_MOVE + chroot with `no_pivot`, or a
/// plain chroot when the container shares the caller's mount namespace (pivot_root would move
/// the root of every process in it). Then the root gets linux.rootfsPropagation when that asks
/// for more than private (it has to be set on the new root, after the pivot, as runc does).
pub fn pivot(cfg: &Config, no_pivot: bool, own_mount_ns: bool) -> Result<(), String> {
    enter_root(&cfg.rootfs, no_pivot, own_mount_ns)?;
    if let Some(flags) = root_propagation(cfg)? {
        if !flags.contains(MsFlags::MS_PRIVATE) {
            mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
                .map_err(|e| format!("setting linux.rootfsPropagation of /: {e}"))?;
        }
    }
    Ok(())
}

fn enter_root(rootfs: &Path, no_pivot: bool, own_mount_ns: bool) -> Result<(), String> {
    if !own_mount_ns {
        chdir(rootfs).map_err(|e| format!("chdir to rootfs: {e}"))?;
        chroot(".").map_err(|e| format!("chroot: {e}"))?;
        chdir("/").map_err(|e| format!("chdir /: {e}"))?;
        return Ok(());
    }
    if no_pivot {
        chdir(rootfs).map_err(|e| format!("chdir to rootfs: {e}"))?;
        mount(
            Some(rootfs),
            "/",
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(|e| format!("moving rootfs to /: {e}"))?;
        chroot(".").map_err(|e| format!("chroot: {e}"))?;
        chdir("/").map_err(|e| format!("chdir /: {e}"))?;
        return Ok(());
    }
    let old_root = File::open("/").map_err(|e| format!("opening /: {e}"))?;
    let new_root = File::open(rootfs).map_err(|e| format!("opening rootfs: {e}"))?;
    fchdir(new_root.as_fd()).map_err(|e| format!("chdir to rootfs: {e}"))?;
    // pivot_root(".", ".") stacks the old root on top of the new one; unmount it from there.
    pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    fchdir(old_root.as_fd()).map_err(|e| format!("chdir to old root: {e}"))?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("making old root a slave: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("unmounting old root: {e}"))?;
    chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}

/// After pivot_root: sysctls, read-only paths, masked paths, read-only root.
pub fn finalize(cfg: &Config) -> Result<(), String> {
    let linux = cfg.spec.linux().as_ref();
    if let Some(sysctl) = linux.and_then(|l| l.sysctl().as_ref()) {
        let mut keys: Vec<_> = sysctl.keys().collect();
        keys.sort();
        for key in keys {
            let path = Path::new("/proc/sys").join(key.replace('.', "/"));
            std::fs::write(&path, sysctl[key].as_bytes())
                .map_err(|e| format!("setting sysctl {key}={}: {e}", sysctl[key]))?;
        }
    }
    let root = File::open("/").map_err(|e| format!("opening /: {e}"))?;
    for p in linux
        .and_then(|l| l.readonly_paths().as_deref())
        .unwrap_or(&[])
    {
        readonly_path(&root, Path::new(p))?;
    }
    for p in linux
        .and_then(|l| l.masked_paths().as_deref())
        .unwrap_or(&[])
    {
        mask_path(&root, Path::new(p))?;
    }
    let readonly = cfg
        .spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    if readonly {
        let flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | locked_flags(Path::new("/"));
        mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
            .map_err(|e| format!("remounting / read-only: {e}"))?;
    }
    Ok(())
}

/// Bind `path` onto itself read-only. A path that does not exist is skipped.
fn readonly_path(root: &impl AsFd, path: &Path) -> Result<(), String> {
    let fd = match open_in_root(root, path, OFlag::O_PATH) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(format!("read-only path {}: {e}", path.display())),
    };
    let target = fd_path(&fd);
    mount(
        Some(&target),
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("read-only path {}: {e}", path.display()))?;
    let fd = open_in_root(root, path, OFlag::O_PATH)
        .map_err(|e| format!("read-only path {}: {e}", path.display()))?;
    let target = fd_path(&fd);
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_REC
        | locked_flags(&target);
    mount(None::<&str>, &target, None::<&str>, flags, None::<&str>)
        .map_err(|e| format!("read-only path {}: {e}", path.display()))
}

/// Hide `path`: /dev/null over a file, an empty read-only tmpfs over a directory.
fn mask_path(root: &impl AsFd, path: &Path) -> Result<(), String> {
    let fd = match open_in_root(root, path, OFlag::O_PATH) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(format!("masked path {}: {e}", path.display())),
    };
    let target = fd_path(&fd);
    let is_dir = std::fs::metadata(&target)
        .map(|m| m.is_dir())
        .unwrap_or(false);
    let res = if is_dir {
        mount(
            Some("tmpfs"),
            &target,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
    } else {
        mount(
            Some("/dev/null"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    res.map_err(|e| format!("masking {}: {e}", path.display()))
}
