//! `--init` at task create: a spec carrying the [`ANNOTATION_INIT`] annotation (made by
//! `runspec` for `berth run --init` and Docker's `HostConfig.Init`, whose command already starts
//! with the init's path) gets berthd's init bind-mounted, read-only, at that path.
//!
//! The init is `berth-init`, a static executable berthd carries (`berth_init::BINARY`) and
//! writes to `<root>/berth-init` at start ([`install`]), or the one `$BERTH_INIT` names.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

pub use crate::runspec::ANNOTATION_INIT;

use super::{Result, TaskError};

/// The init berthd mounts: `$BERTH_INIT`, else `<root>/berth-init`.
pub fn binary(root: &Path) -> PathBuf {
    match std::env::var_os("BERTH_INIT") {
        Some(p) => PathBuf::from(p),
        None => root.join("berth-init"),
    }
}

/// Writes the carried init to `<root>/berth-init` (a temp file renamed into place, so a
/// container that has the old one mounted keeps it) unless it is there already; skipped when
/// `$BERTH_INIT` names another. Returns the path.
pub fn install(root: &Path) -> std::io::Result<PathBuf> {
    let path = binary(root);
    if std::env::var_os("BERTH_INIT").is_some() {
        return Ok(path);
    }
    if std::fs::read(&path).is_ok_and(|b| b == berth_init::BINARY) {
        return Ok(path);
    }
    let tmp = root.join(format!("berth-init.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(berth_init::BINARY)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o755))?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(path)
}

/// Adds the init's bind mount to a spec that asks for it; an init that is missing or not a
/// file is an error naming its path.
pub fn apply(spec: &mut Value, init: &Path) -> Result<()> {
    let Some(dest) = spec["annotations"][ANNOTATION_INIT].as_str() else {
        return Ok(());
    };
    if !dest.starts_with('/') {
        return Err(TaskError::InvalidArgument(format!(
            "annotation {ANNOTATION_INIT}: {dest:?} is not an absolute path"
        )));
    }
    match std::fs::metadata(init) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(TaskError::FailedPrecondition(format!(
                "the init for --init, {}, is not a file",
                init.display()
            )))
        }
        Err(e) => {
            return Err(TaskError::FailedPrecondition(format!(
                "the init for --init, {}, is missing ({e}); berthd writes it there at start, \
                 or $BERTH_INIT names another",
                init.display()
            )))
        }
    }
    let mount = json!({
        "destination": dest,
        "type": "bind",
        "source": init,
        "options": ["bind", "ro", "nosuid", "nodev"],
    });
    if !spec["mounts"].is_array() {
        spec["mounts"] = json!([]);
    }
    if let Some(list) = spec["mounts"].as_array_mut() {
        list.push(mount);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_is_mounted_where_the_annotation_says() {
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("berth-init");
        std::fs::write(&init, b"x").unwrap();
        let mut spec = json!({"mounts": [], "annotations": {ANNOTATION_INIT: "/sbin/docker-init"}});
        apply(&mut spec, &init).unwrap();
        assert_eq!(spec["mounts"][0]["destination"], "/sbin/docker-init");
        assert_eq!(spec["mounts"][0]["source"], init.to_str().unwrap());
        // No annotation, no mount.
        let mut plain = json!({"mounts": []});
        apply(&mut plain, &init).unwrap();
        assert_eq!(plain["mounts"], json!([]));
    }

    #[test]
    fn a_missing_init_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("gone");
        let mut spec = json!({"annotations": {ANNOTATION_INIT: "/sbin/docker-init"}});
        let e = apply(&mut spec, &init).unwrap_err();
        assert!(e.to_string().contains(init.to_str().unwrap()), "{e}");
        let mut spec = json!({"annotations": {ANNOTATION_INIT: "sbin/init"}});
        let e = apply(&mut spec, dir.path()).unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
    }
}
