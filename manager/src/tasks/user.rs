//! The user a container runs as, resolved when its task is created, as dockerd resolves it at
//! start: the front (`runspec`, for `berth run` and the Docker API) puts what was asked
//! (`docker run -u app`, the image's `USER app:staff`, or nothing for root) in the spec's
//! [`ANNOTATION_USER`] and `--group-add` in [`ANNOTATION_GROUP_ADD`]; here, with the rootfs
//! mounted, they become the numeric `process.user` (uid, gid, additional gids) the OCI runtime
//! needs, read from the container's own /etc/passwd and /etc/group (confined to the rootfs:
//! `build::fsops::resolve_exec_user`), and HOME from the passwd entry when the environment has
//! none, as runc's init sets it. Every start resolves again, so the record keeps the name.

use std::path::Path;

use serde_json::{json, Value};

use super::TaskError;
use crate::build::fsops::{self, ExecUser};

/// The user as asked (`NAME`, `UID`, `NAME:GROUP`, ...; empty: root).
pub const ANNOTATION_USER: &str = "berth.io/user";
/// `--group-add`'s groups (names or gids), a JSON array of strings.
pub const ANNOTATION_GROUP_ADD: &str = "berth.io/group-add";

/// The groups of `spec`'s [`ANNOTATION_GROUP_ADD`] (none when it is missing or not a JSON
/// array of strings).
pub fn group_add(spec: &Value) -> Vec<String> {
    spec["annotations"][ANNOTATION_GROUP_ADD]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// Sets `process`'s user to `u`, and HOME to its home when the environment has no HOME.
pub fn set_user(process: &mut Value, u: &ExecUser) {
    process["user"] = json!({"uid": u.uid, "gid": u.gid, "additionalGids": u.additional_gids});
    let env = process["env"].as_array().cloned().unwrap_or_default();
    let has_home = env
        .iter()
        .any(|e| e.as_str().is_some_and(|e| e.starts_with("HOME=")));
    if !has_home {
        let mut env = env;
        env.push(Value::String(format!("HOME={}", u.home)));
        process["env"] = Value::Array(env);
    }
}

/// Whether a task error's message is [`apply`]'s unknown user or group.
pub fn is_unknown(msg: &str) -> bool {
    [
        "unable to find user ",
        "unable to find group ",
        "Unable to find group ",
    ]
    .iter()
    .any(|p| msg.starts_with(p))
}

/// Resolves the spec's [`ANNOTATION_USER`] (if any) against `rootfs` into its process. A user
/// or group the container's files do not have is an `InvalidArgument` with dockerd's words.
pub fn apply(spec: &mut Value, rootfs: &Path) -> Result<(), TaskError> {
    let Some(user) = spec["annotations"][ANNOTATION_USER]
        .as_str()
        .map(str::to_string)
    else {
        return Ok(());
    };
    let u = fsops::resolve_exec_user(rootfs, &user, &group_add(spec))
        .map_err(TaskError::InvalidArgument)?;
    if !spec["process"].is_object() {
        return Err(TaskError::InvalidArgument(
            "the spec names a user but has no process".into(),
        ));
    }
    set_user(&mut spec["process"], &u);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "app:x:1000:\nwheel:x:10:app\n").unwrap();
        d
    }

    #[test]
    fn the_named_user_becomes_numeric_with_home() {
        let d = rootfs();
        let mut spec = json!({
            "process": {"user": {"uid": 65534, "gid": 65534}, "env": ["PATH=/bin"]},
            "annotations": {ANNOTATION_USER: "app", ANNOTATION_GROUP_ADD: r#"["5","wheel"]"#}
        });
        apply(&mut spec, d.path()).unwrap();
        assert_eq!(
            spec["process"]["user"],
            json!({"uid": 1000, "gid": 1000, "additionalGids": [5, 10]})
        );
        assert_eq!(
            spec["process"]["env"],
            json!(["PATH=/bin", "HOME=/home/app"])
        );
        // The image's HOME stays.
        let mut spec = json!({
            "process": {"env": ["HOME=/x"]},
            "annotations": {ANNOTATION_USER: ""}
        });
        apply(&mut spec, d.path()).unwrap();
        assert_eq!(spec["process"]["env"], json!(["HOME=/x"]));
        assert_eq!(spec["process"]["user"]["uid"], 0);
        // No annotation: the spec is left as it is.
        let mut spec = json!({"process": {"user": {"uid": 3, "gid": 4}}});
        apply(&mut spec, d.path()).unwrap();
        assert_eq!(spec["process"]["user"], json!({"uid": 3, "gid": 4}));
    }

    #[test]
    fn a_missing_user_or_process_is_an_invalid_argument() {
        let d = rootfs();
        let mut spec = json!({"process": {}, "annotations": {ANNOTATION_USER: "bob"}});
        let e = apply(&mut spec, d.path()).unwrap_err();
        assert!(
            matches!(&e, TaskError::InvalidArgument(m)
            if m == "unable to find user bob: no matching entries in passwd file"),
            "{e}"
        );
        let mut spec = json!({"annotations": {ANNOTATION_USER: "app"}});
        let e = apply(&mut spec, d.path()).unwrap_err();
        assert!(e.to_string().contains("no process"), "{e}");
    }
}
