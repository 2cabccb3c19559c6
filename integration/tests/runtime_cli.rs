//! The informational commands: `spec`, `features`, `--version`. Every test also passes against
//! runc (`BERTH_RUNC=/usr/bin/runc`).

use std::fs;

use anyhow::{Context, Result};
use berth_integration::runtime::bundle::shared_rootfs;
use berth_integration::runtime::{assert_error, unique_name, Bundle, Runtime};
use serde_json::Value;

#[test]
fn spec_writes_a_config_that_run_accepts() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.remove_config()?;
    let dir = bundle.path().display().to_string();
    rt.exec(&["spec", "--bundle", &dir])?.ok();
    let path = bundle.path().join("config.json");
    let text = fs::read_to_string(&path).context("spec wrote no config.json")?;
    let mut config: Value = serde_json::from_str(&text).context("spec wrote invalid JSON")?;
    assert!(
        config["ociVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "{config}"
    );
    assert_eq!(config["root"]["path"], "rootfs");
    assert!(config["process"]["args"].is_array(), "{config}");
    let namespaces: Vec<&str> = config["linux"]["namespaces"]
        .as_array()
        .map(|ns| ns.iter().filter_map(|n| n["type"].as_str()).collect())
        .unwrap_or_default();
    for kind in ["pid", "network", "ipc", "uts", "mount"] {
        assert!(
            namespaces.contains(&kind),
            "spec lacks a {kind} namespace: {namespaces:?}"
        );
    }

    // Run it as written, except what a foreground test run needs: no terminal, a command, the
    // shared rootfs and a cgroup path the guard can clean up.
    config["process"]["terminal"] = false.into();
    config["process"]["args"] = serde_json::json!(["sh", "-c", "echo spec-ok"]);
    config["root"]["path"] = shared_rootfs()?.display().to_string().into();
    config["linux"]["cgroupsPath"] = bundle.cgroup_path().into();
    bundle.write_raw_config(&serde_json::to_vec_pretty(&config)?)?;
    let id = unique_name("spec");
    let guard = rt.guard(&id, &bundle);
    let out = rt.run(&id, &bundle)?.ok();
    assert_eq!(out.stdout, "spec-ok\n");
    guard.assert_no_leftovers();
    Ok(())
}

#[test]
fn spec_refuses_to_overwrite_a_config() -> Result<()> {
    let rt = Runtime::new()?;
    let bundle = Bundle::new()?;
    let path = bundle.path().join("config.json");
    let before = fs::read(&path)?;
    let dir = bundle.path().display().to_string();
    let out = rt.exec(&["spec", "--bundle", &dir])?;
    // runc: "File config.json exists. Remove it first".
    assert_error(&rt, &out, &["exists"]);
    assert_eq!(
        fs::read(&path)?,
        before,
        "spec changed the existing config.json"
    );
    Ok(())
}

/// "1.0.2-dev" → (1, 0, 2).
fn version_triple(v: &str) -> Option<(u32, u32, u32)> {
    let core = v.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

#[test]
fn features_prints_the_oci_features_json() -> Result<()> {
    let rt = Runtime::new()?;
    let out = rt.exec(&["features"])?.ok();
    let features: Value = serde_json::from_str(&out.stdout).context("features is not JSON")?;
    let min = features["ociVersionMin"]
        .as_str()
        .context("no ociVersionMin")?;
    let max = features["ociVersionMax"]
        .as_str()
        .context("no ociVersionMax")?;
    let (min_v, max_v) = (
        version_triple(min).with_context(|| format!("ociVersionMin {min:?}"))?,
        version_triple(max).with_context(|| format!("ociVersionMax {max:?}"))?,
    );
    assert!(
        min_v.0 == 1 && min_v <= max_v,
        "ociVersionMin {min} > ociVersionMax {max}"
    );
    let namespaces: Vec<&str> = features["linux"]["namespaces"]
        .as_array()
        .map(|ns| ns.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for kind in ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"] {
        assert!(
            namespaces.contains(&kind),
            "features lacks namespace {kind}: {namespaces:?}"
        );
    }
    let caps: Vec<&str> = features["linux"]["capabilities"]
        .as_array()
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        caps.contains(&"CAP_CHOWN") && caps.contains(&"CAP_SYS_ADMIN"),
        "{caps:?}"
    );
    assert_eq!(
        features["linux"]["cgroup"]["v1"], true,
        "{}",
        features["linux"]["cgroup"]
    );
    Ok(())
}

#[test]
fn version_first_line_starts_with_runc_version() -> Result<()> {
    let rt = Runtime::new()?;
    let out = rt.exec(&["--version"])?.ok();
    let mut lines = out.stdout.lines();
    let first = lines.next().unwrap_or_default();
    // Tools (go-runc, containerd) parse this prefix; berth-runc must print it too.
    assert!(first.starts_with("runc version "), "first line: {first:?}");
    assert!(
        first.len() > "runc version ".len(),
        "no version after the prefix"
    );
    assert!(
        out.stdout.lines().any(|l| l.starts_with("spec: 1.")),
        "no `spec: 1.x` line: {}",
        out.stdout
    );
    Ok(())
}
