//! The listening unix sockets: created mode 0600 (the Docker API's 0660, root's group), or
//! 0660 owned by the group `--group` names, both; a stale file removed only when nothing
//! answers.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tokio::net::UnixListener;

/// Binds `path`, creating its parent directory (0711). A socket file left by a dead daemon is
/// removed; one that still accepts connections means another daemon runs, which is an error.
pub fn bind(path: &Path) -> Result<UnixListener> {
    bind_mode(path, 0o600, None)
}

/// [`bind`] with the socket's final mode (0660 for the Docker API's socket: root's group may
/// use it, as with dockerd's) and, if given, its group.
pub fn bind_mode(path: &Path, mode: u32, gid: Option<u32>) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating socket directory {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(md) => {
            use std::os::unix::fs::FileTypeExt;
            if !md.file_type().is_socket() {
                bail!(
                    "{} exists and is not a socket; refusing to remove it",
                    path.display()
                );
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "another daemon is listening on {}; stop it or pick another socket path",
                    path.display()
                );
            }
            tracing::info!(path = %path.display(), "removing stale socket");
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
    }
    // Create the socket with no permissions for group/other from the start (no window in which
    // another user could connect), then set 0600 explicitly.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = listener.with_context(|| format!("binding {}", path.display()))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("chgrp {gid} {}", path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))?;
    Ok(listener)
}

/// The gid of group `name` (a name from the group database, or a number).
pub fn group_id(name: &str) -> Result<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => bail!("group {name:?} (berthd --group) does not exist"),
        Err(e) => Err(e).with_context(|| format!("looking up group {name:?}")),
    }
}
