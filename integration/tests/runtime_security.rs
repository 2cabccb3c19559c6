//! The container's protections: read-only root, masked and read-only paths, capability sets,
//! no_new_privs. Values are read back from inside (/proc/self/status, the filesystem) and
//! compared with the config. Every test also passes against runc (`BERTH_RUNC=/usr/bin/runc`).

use std::fs;

use anyhow::Result;
use berth_integration::runtime::{kernel, unique_name, Bundle, Output, Runtime, DEFAULT_CAPS};

fn run(rt: &Runtime, bundle: &Bundle, name: &str) -> Result<Output> {
    let id = unique_name(name);
    let guard = rt.guard(&id, bundle);
    let out = rt.run(&id, bundle)?;
    guard.assert_no_leftovers();
    Ok(out)
}

#[test]
fn readonly_root_refuses_writes() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.sh("touch /x && echo wrote; touch /bin/y && echo wrote");
    let out = run(&rt, &bundle, "ro-root")?;
    assert!(!out.stdout.contains("wrote"), "{}", out.describe());
    assert!(
        out.stderr.contains("Read-only file system"),
        "{}",
        out.describe()
    );
    assert!(!bundle.rootfs().join("x").exists());
    Ok(())
}

#[test]
fn writable_root_when_readonly_is_false() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::with_own_rootfs()?;
    bundle.readonly(false).sh("echo data > /x && cat /x");
    let out = run(&rt, &bundle, "rw-root")?.ok();
    assert_eq!(out.stdout, "data\n");
    assert_eq!(fs::read_to_string(bundle.rootfs().join("x"))?, "data\n");
    Ok(())
}

#[test]
fn masked_paths_read_empty() -> Result<()> {
    let rt = Runtime::new()?;
    // Only meaningful where the host has content there.
    assert!(fs::metadata("/proc/timer_list")?.is_file());
    assert!(
        fs::read_dir("/sys/firmware")?.next().is_some(),
        "host /sys/firmware is empty"
    );
    let mut bundle = Bundle::new()?;
    bundle.sh(
        "echo kcore=$(head -c 16 /proc/kcore | wc -c); echo timer_list=$(wc -c < /proc/timer_list); \
         echo firmware=$(ls -A /sys/firmware | wc -l)",
    );
    let out = run(&rt, &bundle, "masked")?.ok();
    assert_eq!(out.stdout, "kcore=0\ntimer_list=0\nfirmware=0\n");
    Ok(())
}

#[test]
fn a_masked_dir_hides_its_content_and_stays_read_only() -> Result<()> {
    let rt = Runtime::new()?;
    let host = tempfile::tempdir()?;
    fs::write(host.path().join("secret"), "s3cret")?;
    let mut bundle = Bundle::new()?;
    bundle.bind(host.path(), "/mnt", false);
    if let Some(masked) = bundle.config_mut()["linux"]["maskedPaths"].as_array_mut() {
        masked.push("/mnt".into());
    }
    bundle.sh("echo entries=$(ls -A /mnt | wc -l); cat /mnt/secret; touch /mnt/new && echo wrote");
    let out = run(&rt, &bundle, "masked-dir")?;
    assert!(out.stdout.starts_with("entries=0\n"), "{}", out.describe());
    assert!(
        !out.stdout.contains("s3cret") && !out.stdout.contains("wrote"),
        "{}",
        out.describe()
    );
    assert!(!host.path().join("new").exists());
    Ok(())
}

#[test]
fn readonly_paths_are_mounted_read_only() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    bundle.sh("echo 1 > /proc/sys/kernel/ns_last_pid && echo wrote; \
         echo h > /proc/sysrq-trigger && echo wrote; cat /proc/self/mountinfo");
    let out = run(&rt, &bundle, "ro-paths")?;
    assert!(!out.stdout.contains("wrote"), "{}", out.describe());
    assert!(
        out.stderr.contains("Read-only file system"),
        "{}",
        out.describe()
    );
    let mounts = kernel::parse_mountinfo(&out.stdout);
    for path in [
        "/proc/sys",
        "/proc/sysrq-trigger",
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
    ] {
        let Some(m) = mounts.iter().rev().find(|m| m.mount_point == path) else {
            // A path the host kernel lacks cannot be mounted over.
            assert!(
                !std::path::Path::new(path).exists(),
                "{path} not remounted: {}",
                out.stdout
            );
            continue;
        };
        assert!(
            m.options.iter().any(|o| o == "ro"),
            "{path} is not ro: {m:?}"
        );
    }
    Ok(())
}

/// Reads the five capability sets from /proc/self/status inside the container.
fn capability_sets(rt: &Runtime, bundle: &mut Bundle) -> Result<[(String, u64); 5]> {
    bundle.sh("grep ^Cap /proc/self/status");
    let out = run(rt, bundle, "caps")?.ok();
    let read = |field: &str| -> Result<(String, u64)> {
        let hex = kernel::status_field(&out.stdout, field)
            .ok_or_else(|| anyhow::anyhow!("no {field} in {}", out.stdout))?;
        Ok((field.to_string(), kernel::parse_cap_hex(&hex)?))
    };
    Ok([
        read("CapInh")?,
        read("CapPrm")?,
        read("CapEff")?,
        read("CapBnd")?,
        read("CapAmb")?,
    ])
}

#[test]
fn capabilities_chown_and_kill_only() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    let caps = ["CAP_CHOWN", "CAP_KILL"];
    bundle.capabilities(&caps);
    let want = kernel::cap_mask(&caps)?;
    for (field, got) in capability_sets(&rt, &mut bundle)? {
        assert_eq!(got, want, "{field}: {got:#x}, configured {want:#x}");
    }
    Ok(())
}

#[test]
fn capabilities_of_the_default_spec() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::new()?;
    // runc spec's sets: bounding, effective, permitted and ambient; no inheritable. An ambient
    // capability must also be permitted and inheritable, so none is raised.
    let caps = kernel::cap_mask(DEFAULT_CAPS)?;
    let sets = capability_sets(&rt, &mut bundle)?;
    let want = [0, caps, caps, caps, 0];
    for ((field, got), want) in sets.into_iter().zip(want) {
        assert_eq!(got, want, "{field}: {got:#x}, expected {want:#x}");
    }
    Ok(())
}

#[test]
fn capabilities_all_that_the_caller_holds() -> Result<()> {
    let rt = Runtime::new()?;
    // Every capability this (root) test process has in its bounding set.
    let status = fs::read_to_string("/proc/self/status")?;
    let host = kernel::parse_cap_hex(&kernel::status_field(&status, "CapBnd").unwrap_or_default())?;
    let names: Vec<&str> = kernel::CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| host & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect();
    let mut bundle = Bundle::new()?;
    bundle.capabilities(&names);
    let want = kernel::cap_mask(&names)?;
    for (field, got) in capability_sets(&rt, &mut bundle)? {
        assert_eq!(got, want, "{field}: {got:#x}, configured {want:#x}");
    }
    Ok(())
}

#[test]
fn without_cap_chown_chown_fails() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundle = Bundle::with_own_rootfs()?;
    bundle
        .readonly(false)
        .capabilities(&["CAP_KILL"])
        .sh("touch /f; chown 1:1 /f && echo chowned");
    let out = run(&rt, &bundle, "nochown")?;
    assert!(!out.stdout.contains("chowned"), "{}", out.describe());
    assert!(
        out.stderr.contains("Operation not permitted"),
        "{}",
        out.describe()
    );
    Ok(())
}

#[test]
fn no_new_privileges_follows_the_config() -> Result<()> {
    let rt = Runtime::new()?;
    for on in [true, false] {
        let mut bundle = Bundle::new()?;
        bundle
            .no_new_privileges(on)
            .sh("grep ^NoNewPrivs /proc/self/status");
        let out = run(&rt, &bundle, "nnp")?.ok();
        let got = kernel::status_field(&out.stdout, "NoNewPrivs");
        assert_eq!(
            got.as_deref(),
            Some(if on { "1" } else { "0" }),
            "noNewPrivileges {on}"
        );
    }
    Ok(())
}
