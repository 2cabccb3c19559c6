//! Rootless: an unprivileged caller (uid 65534, by setpriv) runs a container from
//! `spec --rootless`, in a user namespace that maps its own uid to root; without a delegated
//! cgroup it runs without one, and a config that asks for limits is refused clearly.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use berth_integration::runtime::bundle::populate_rootfs;
use berth_integration::runtime::unique_name;
use serde_json::Value;

const NOBODY: &str = "65534";

fn as_nobody(bin: &Path, args: &[&str]) -> Result<std::process::Output> {
    Command::new("setpriv")
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"])
        .arg(bin)
        .args(args)
        .output()
        .context("running setpriv")
}

/// A bundle and a state root that uid 65534 can use, with the rootless spec of the runtime.
fn rootless_bundle(dir: &Path, edit: impl FnOnce(&mut Value)) -> Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    populate_rootfs(&dir.join("rootfs"))?;
    let bin = berth_integration::bins::berth_runc();
    let out = Command::new(&bin)
        .args(["spec", "--rootless", "--bundle"])
        .arg(dir)
        .output()?;
    assert!(
        out.status.success(),
        "spec --rootless: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join("config.json");
    let mut cfg: Value = serde_json::from_slice(&fs::read(&path)?)?;
    cfg["process"]["terminal"] = Value::Bool(false);
    cfg["process"]["args"] = serde_json::json!(["sh", "-c", "id -u; cat /proc/self/uid_map"]);
    for key in ["uidMappings", "gidMappings"] {
        cfg["linux"][key] = serde_json::json!([{"containerID": 0, "hostID": 65534, "size": 1}]);
    }
    edit(&mut cfg);
    fs::write(&path, serde_json::to_vec_pretty(&cfg)?)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

#[test]
fn an_unprivileged_caller_runs_a_container_as_root_of_its_user_namespace() -> Result<()> {
    let dir = tempfile::tempdir()?;
    rootless_bundle(dir.path(), |_| {})?;
    let state = dir.path().join("state");
    fs::create_dir(&state)?;
    nix::unistd::chown(&state, Some(nix::unistd::Uid::from_raw(65534)), None)?;
    let bin = berth_integration::bins::berth_runc();
    let id = unique_name("rootless");
    let bundle = dir.path().display().to_string();
    let root = state.display().to_string();
    let out = as_nobody(&bin, &["--root", &root, "run", "--bundle", &bundle, &id])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("0"), "{stdout}");
    let map: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(map, ["0", "65534", "1"], "{stdout}");
    assert!(fs::read_dir(&state)?
        .filter_map(|e| e.ok())
        .all(|e| e.file_name() == "seccomp-cache"));
    Ok(())
}

#[test]
fn rootless_limits_without_a_cgroup_are_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    rootless_bundle(dir.path(), |cfg| {
        cfg["linux"]["resources"] = serde_json::json!({"memory": {"limit": 67108864}});
    })?;
    let state = dir.path().join("state");
    fs::create_dir(&state)?;
    nix::unistd::chown(&state, Some(nix::unistd::Uid::from_raw(65534)), None)?;
    let bin = berth_integration::bins::berth_runc();
    let id = unique_name("rootless-limits");
    let bundle = dir.path().display().to_string();
    let root = state.display().to_string();
    let out = as_nobody(&bin, &["--root", &root, "run", "--bundle", &bundle, &id])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("rootless") && stderr.contains("cgroup"),
        "{stderr}"
    );
    assert!(!state.join(&id).exists(), "state left behind");
    Ok(())
}
