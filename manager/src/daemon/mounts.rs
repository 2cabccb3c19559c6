//! Mounting a snapshot's mount list on a temp dir under the state dir, and undoing it.

use std::path::{Path, PathBuf};

use berth_store::snapshots::Mount;
use nix::mount::{umount2, MntFlags};

/// A temp dir with the mounts on it; unmounted and removed on drop.
pub struct TempMount {
    dir: PathBuf,
    mounted: usize,
}

impl TempMount {
    /// Mounts `mounts` in order on a fresh directory under `<state>/tmpmounts/`. An empty list
    /// gives an empty directory (a tree with nothing in it).
    pub fn new(state: &Path, mounts: &[Mount]) -> std::io::Result<TempMount> {
        let base = state.join("tmpmounts");
        std::fs::create_dir_all(&base)?;
        let dir = base.join(format!("m-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir(&dir)?;
        let mut tm = TempMount { dir, mounted: 0 };
        // The same mount code as a task's rootfs; it undoes what it mounted when one fails.
        crate::tasks::mounts::mount_all(mounts, &tm.dir).map_err(std::io::Error::other)?;
        tm.mounted = mounts.len();
        Ok(tm)
    }

    /// Where the tree is.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// Unmounts and removes what a berthd that is gone left under `<state>/tmpmounts/` (killed
/// while it had a tree mounted). Called at start, under the root lock, before any of this
/// berthd's own: everything there is a predecessor's. A directory is only ever removed empty
/// (never recursively: if an unmount failed, what is under it is a snapshot's files).
pub fn clear_stale(state: &Path) {
    let Ok(entries) = std::fs::read_dir(state.join("tmpmounts")) else {
        return;
    };
    for dir in entries.flatten().map(|e| e.path()) {
        // Stacked mounts come off one at a time; EINVAL once nothing is mounted there.
        let mut unmounted = 0;
        while unmounted < 64 && umount2(&dir, MntFlags::MNT_DETACH).is_ok() {
            unmounted += 1;
        }
        match std::fs::remove_dir(&dir) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), unmounted, "removed a temporary mount left by a berthd that is gone")
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a temporary mount dir left by a berthd that is gone")
            }
        }
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        for _ in 0..self.mounted {
            if let Err(e) = umount2(&self.dir, MntFlags::empty()) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "unmount failed; detaching");
                let _ = umount2(&self.dir, MntFlags::MNT_DETACH);
            }
        }
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "removing temp mount dir");
        }
    }
}

/// Checks that every path a mount list names lies under `root` (berthd's snapshots): the diff
/// service mounts and writes what clients pass, and must not be pointed at the host's files.
pub fn check_confined(mounts: &[Mount], root: &Path) -> Result<(), String> {
    let inside = |p: &str| {
        let p = Path::new(p);
        p.is_absolute()
            && !p
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            && p.starts_with(root)
    };
    for m in mounts {
        let bind = m.kind == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind");
        if bind && !inside(&m.source) {
            return Err(format!(
                "mount source {:?} is not a berthd snapshot",
                m.source
            ));
        }
        for o in &m.options {
            for key in ["lowerdir=", "upperdir=", "workdir="] {
                if let Some(v) = o.strip_prefix(key) {
                    for p in v.split(':') {
                        if !inside(p) {
                            return Err(format!(
                                "mount option {key}{p:?} is not a berthd snapshot"
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
