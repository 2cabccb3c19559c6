//! Mounting a task's rootfs (the snapshot's mounts) on `<bundle>/rootfs`, and undoing it.

use std::path::Path;

use berth_store::snapshots::Mount;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Mounts `mounts` in order on `target`; on failure, what was mounted is undone.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<(), String> {
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = mount_one(m, target) {
            for _ in 0..i {
                let _ = umount2(target, MntFlags::MNT_DETACH);
            }
            return Err(e);
        }
    }
    Ok(())
}

fn mount_one(m: &Mount, target: &Path) -> Result<(), String> {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    let mut bind = m.kind == "bind";
    for o in &m.options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => {}
            "bind" => bind = true,
            "rbind" => {
                bind = true;
                flags |= MsFlags::MS_REC;
            }
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            other => data.push(other.to_string()),
        }
    }
    let err = |e: nix::Error| {
        format!(
            "mounting {} ({}) on {}: {e}",
            m.source,
            m.kind,
            target.display()
        )
    };
    if bind {
        mount(
            Some(m.source.as_str()),
            target,
            None::<&str>,
            (flags & MsFlags::MS_REC) | MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(err)?;
        if flags.contains(MsFlags::MS_RDONLY) {
            mount(
                None::<&str>,
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(err)?;
        }
    } else {
        let mount_with = |data: &[String]| {
            mount(
                Some(m.source.as_str()),
                target,
                Some(m.kind.as_str()),
                flags,
                Some(data.join(",").as_str()),
            )
        };
        match mount_with(&data) {
            // A kernel before 5.10 has no volatile overlays: the same mount without it.
            Err(nix::Error::EINVAL)
                if m.kind == "overlay" && data.iter().any(|o| o == VOLATILE) =>
            {
                data.retain(|o| o != VOLATILE);
                mount_with(&data).map_err(err)?;
            }
            r => r.map_err(err)?,
        }
    }
    Ok(())
}

/// The overlay option that skips syncing the upper dir: no fsync inside the container and, what
/// `berth run --rm` wants it for, no sync of the whole upper file system at unmount (5-8 ms
/// here). After a host crash such an upper dir cannot be mounted again, which a container
/// removed on exit never needs.
pub const VOLATILE: &str = "volatile";

/// Unmounts everything stacked on `target` (lazily if busy).
pub fn unmount_all(target: &Path) {
    for _ in 0..16 {
        match umount2(target, MntFlags::empty()) {
            Ok(()) => continue,
            Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => return,
            Err(nix::Error::EBUSY) => {
                let _ = umount2(target, MntFlags::MNT_DETACH);
            }
            Err(e) => {
                tracing::warn!(target = %target.display(), error = %e, "unmount failed");
                return;
            }
        }
    }
}
