//! berthd + berth, end to end: import (OCI and docker-save), list, unpack, inspect the unpacked
//! files through a mounted view, export and re-import to the same digests, remove and see GC
//! free blobs and snapshots.

use std::os::unix::fs::MetadataExt;

use berth_integration::manager::{files_under, image, unique, Berthd, MountGuard};

fn names_and_digests(d: &Berthd, ns: &str) -> Vec<(String, String)> {
    let v = d.berth(ns, &["--format", "json", "images", "ls"]).json();
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["target"]["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn import_unpack_inspect_export_reimport_and_gc() {
    let d = Berthd::start().unwrap();
    let ns = unique("imgs");
    let work = tempfile::tempdir().unwrap();
    let multi = image::busybox_multi("docker.io/berth/multi:v1").unwrap();
    let single = image::busybox_single("docker.io/berth/single:v1").unwrap();
    let multi_oci = work.path().join("multi-oci.tar");
    let single_docker = work.path().join("single-docker.tar");
    multi.write_oci_archive(&multi_oci).unwrap();
    single.write_docker_archive(&single_docker).unwrap();

    // Import both; the CLI reports the chain id it unpacked to.
    let out = d
        .berth(
            &ns,
            &[
                "--format",
                "json",
                "images",
                "import",
                multi_oci.to_str().unwrap(),
            ],
        )
        .json();
    assert_eq!(out[0]["name"], "docker.io/berth/multi:v1");
    assert_eq!(out[0]["digest"], multi.manifest_digest());
    assert_eq!(out[0]["chain_id"], multi.chain_id());
    let out = d
        .berth(
            &ns,
            &[
                "--format",
                "json",
                "images",
                "import",
                single_docker.to_str().unwrap(),
            ],
        )
        .json();
    assert_eq!(out[0]["name"], "docker.io/berth/single:v1");
    assert_eq!(out[0]["chain_id"], single.chain_id());

    // List.
    let listed = names_and_digests(&d, &ns);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(
        listed[0],
        ("docker.io/berth/multi:v1".into(), multi.manifest_digest())
    );
    assert_eq!(listed[1].0, "docker.io/berth/single:v1");
    let table = d.berth(&ns, &["images", "ls"]).ok().to_string();
    assert!(table.starts_with("REF"), "{table}");
    assert!(table.contains("linux/"), "{table}");

    // Check: every blob present, unpacked.
    let check = d
        .berth(&ns, &["--format", "json", "images", "check"])
        .json();
    for c in check.as_array().unwrap() {
        assert_eq!(c["complete"], true, "{c}");
        assert_eq!(c["unpacked"], true, "{c}");
    }

    // Snapshots: one committed snapshot per layer chain, parent links as the chain ids say.
    let snaps = d
        .berth(&ns, &["--format", "json", "snapshots", "ls"])
        .json();
    let keys: Vec<&str> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert!(keys.contains(&multi.chain_id().as_str()), "{keys:?}");
    assert!(keys.contains(&single.chain_id().as_str()), "{keys:?}");
    // The single image's layer is the multi image's base layer: shared, so 3 snapshots in all.
    assert_eq!(keys.len(), 3, "{keys:?}");

    // Inspect the unpacked multi-layer image through a read-only view.
    let view = unique("view");
    let mounts = d
        .berth(
            &ns,
            &[
                "--format",
                "json",
                "snapshots",
                "view",
                &view,
                &multi.chain_id(),
            ],
        )
        .json();
    {
        let m = MountGuard::mount_json(&mounts).unwrap();
        let root = m.path();
        let bb = std::fs::metadata(root.join("bin/busybox")).unwrap();
        assert_eq!(bb.len(), std::fs::metadata(image::BUSYBOX).unwrap().len());
        assert_eq!(bb.mode() & 0o7777, 0o755);
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).unwrap().to_str(),
            Some("busybox")
        );
        assert_eq!(
            std::fs::read_link(root.join("bin/ls")).unwrap().to_str(),
            Some("/bin/busybox")
        );
        assert_eq!(
            std::fs::metadata(root.join("bin/cat")).unwrap().ino(),
            bb.ino(),
            "hardlink"
        );
        assert!(
            !root.join("etc/removeme").exists(),
            "whiteout must hide etc/removeme"
        );
        assert!(
            !root.join("opt/old/a.txt").exists(),
            "opaque dir must hide a.txt"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("opt/old/b.txt")).unwrap(),
            "layer 2\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("etc/passwd")).unwrap(),
            "root:x:0:0:layer3:/root:/bin/sh\n"
        );
        assert_eq!(
            std::fs::metadata(root.join("etc/passwd")).unwrap().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(root.join("tmp")).unwrap().mode() & 0o7777,
            0o1777
        );
        let mut files: Vec<String> = files_under(root)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                "bin/busybox",
                "bin/cat",
                "etc/group",
                "etc/hostname",
                "etc/passwd",
                "opt/old/b.txt",
                "srv/data"
            ]
        );
    }
    d.berth(&ns, &["snapshots", "rm", &view]).ok();

    // Export, remove, re-import: same digests.
    let exported = work.path().join("export.tar");
    d.berth(
        &ns,
        &[
            "images",
            "export",
            exported.to_str().unwrap(),
            "docker.io/berth/multi:v1",
            "docker.io/berth/single:v1",
        ],
    )
    .ok();
    let before = names_and_digests(&d, &ns);
    d.berth(
        &ns,
        &[
            "images",
            "rm",
            "docker.io/berth/multi:v1",
            "docker.io/berth/single:v1",
        ],
    )
    .ok();
    assert!(names_and_digests(&d, &ns).is_empty());
    d.berth(&ns, &["images", "import", exported.to_str().unwrap()])
        .ok();
    assert_eq!(names_and_digests(&d, &ns), before);

    // Remove everything: GC frees the blobs and the snapshots, on disk too.
    d.berth(
        &ns,
        &[
            "images",
            "rm",
            "docker.io/berth/multi:v1",
            "docker.io/berth/single:v1",
        ],
    )
    .ok();
    let content = d.berth(&ns, &["--format", "json", "content", "ls"]).json();
    assert_eq!(content, serde_json::json!([]), "blobs left after rm");
    let snaps = d
        .berth(&ns, &["--format", "json", "snapshots", "ls"])
        .json();
    assert_eq!(snaps, serde_json::json!([]), "snapshots left after rm");
    let blobs = d
        .root()
        .join("io.containerd.content.v1.content/blobs/sha256");
    let left: Vec<_> = std::fs::read_dir(&blobs)
        .map(|r| r.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "blob files left on disk: {left:?}");
}

#[test]
fn namespaces_are_listed_created_and_removed() {
    let d = Berthd::start().unwrap();
    let ns = unique("nsx");
    d.berth(
        "default",
        &["namespaces", "create", &ns, "--label", "team=berth"],
    )
    .ok();
    let v = d
        .berth("default", &["--format", "json", "namespaces", "ls"])
        .json();
    let found = v
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == ns.as_str())
        .cloned();
    assert_eq!(found.unwrap()["labels"]["team"], "berth");
    let err = d
        .berth("default", &["namespaces", "create", &ns])
        .err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");
    d.berth("default", &["namespaces", "rm", &ns]).ok();
    let v = d
        .berth("default", &["--format", "json", "namespaces", "ls"])
        .json();
    assert!(!v
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["name"] == ns.as_str()));
}

#[test]
fn a_namespace_holding_images_cannot_be_removed() {
    let d = Berthd::start().unwrap();
    let ns = unique("busy");
    let work = tempfile::tempdir().unwrap();
    let img = image::busybox_single("docker.io/berth/held:v1").unwrap();
    let p = work.path().join("a.tar");
    img.write_oci_archive(&p).unwrap();
    d.berth(
        &ns,
        &["images", "import", "--no-unpack", p.to_str().unwrap()],
    )
    .ok();
    let err = d
        .berth("default", &["namespaces", "rm", &ns])
        .err()
        .to_string();
    assert!(
        err.contains(&ns) && err.contains("FailedPrecondition"),
        "{err}"
    );
}

#[test]
fn content_get_returns_the_blob_bytes() {
    let d = Berthd::start().unwrap();
    let ns = unique("get");
    let work = tempfile::tempdir().unwrap();
    let img = image::busybox_single("docker.io/berth/get:v1").unwrap();
    let p = work.path().join("a.tar");
    img.write_oci_archive(&p).unwrap();
    d.berth(
        &ns,
        &["images", "import", "--no-unpack", p.to_str().unwrap()],
    )
    .ok();
    let o = std::process::Command::new(berth_integration::bins::berth())
        .args([
            "--address",
            d.socket().to_str().unwrap(),
            "-n",
            &ns,
            "content",
            "get",
            &img.config_digest(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(o.stdout, img.config);
    // A layer of 1+ MiB comes back in several Read messages, in order.
    let o = std::process::Command::new(berth_integration::bins::berth())
        .args([
            "--address",
            d.socket().to_str().unwrap(),
            "-n",
            &ns,
            "content",
            "get",
            &img.layers[0].digest,
        ])
        .output()
        .unwrap();
    assert_eq!(image::sha256(&o.stdout), img.layers[0].digest);
}

#[test]
fn image_events_are_published() {
    let d = Berthd::start().unwrap();
    let ns = unique("imgev");
    let filter = format!("namespace=={ns}");
    let mut ev = std::process::Command::new(berth_integration::bins::berth())
        .arg("--address")
        .arg(d.socket())
        .args(["events", &filter])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let name = "docker.io/berth/events:v1";
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("i.tar");
    image::busybox_single(name)
        .unwrap()
        .write_oci_archive(&tar)
        .unwrap();
    let tar = tar.to_str().unwrap();
    d.berth(&ns, &["images", "import", tar]).ok();
    // The same name again (through ctr and the images service): an update.
    d.ctr(&ns, &["images", "import", tar]).ok();
    d.berth(&ns, &["images", "rm", name]).ok();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = ev.kill();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut ev.stdout.take().unwrap(), &mut text).unwrap();
    let _ = ev.wait();
    for topic in ["/images/create", "/images/update", "/images/delete"] {
        assert!(
            text.lines().any(|l| l.contains(&format!(" {ns} {topic} "))),
            "{topic} missing:\n{text}"
        );
    }
}
