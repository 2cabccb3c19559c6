//! Debian's unmodified `ctr` 1.6 against berthd: version, namespaces, images import (which
//! drives content Write, images Create/Update, leases, snapshots Prepare/Commit and diff Apply),
//! images/content/snapshots ls — and the same answers from `berth`.

use berth_integration::manager::{image, unique, Berthd};

/// Column `col` of every line after the header.
fn column(table: &str, col: usize) -> Vec<String> {
    let mut v: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(col).map(str::to_string))
        .collect();
    v.sort();
    v
}

fn lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

#[test]
fn ctr_version_matches_berth() {
    let d = Berthd::start().unwrap();
    let ctr = d.ctr("default", &["version"]).ok().to_string();
    let berth = d.berth("default", &["--format", "json", "version"]).json();
    let server = ctr
        .split("Server:")
        .nth(1)
        .expect("ctr prints a Server section");
    assert!(
        server.contains(&format!(
            "Version:  {}",
            berth["server"]["version"].as_str().unwrap()
        )),
        "{ctr}"
    );
    assert!(
        server.contains(&format!(
            "UUID: {}",
            berth["server"]["uuid"].as_str().unwrap()
        )),
        "{ctr}"
    );
}

#[test]
fn ctr_imports_and_lists_the_same_as_berth() {
    let d = Berthd::start().unwrap();
    let ns = unique("ctr");
    let work = tempfile::tempdir().unwrap();
    let multi = image::busybox_multi("docker.io/berth/ctr-multi:v1").unwrap();
    let single = image::busybox_single("docker.io/berth/ctr-single:v1").unwrap();
    let a = work.path().join("multi-oci.tar");
    let b = work.path().join("single-docker.tar");
    multi.write_oci_archive(&a).unwrap();
    single.write_docker_archive(&b).unwrap();

    // ctr's client-side import, with unpack into overlayfs snapshots.
    let out = d
        .ctr(&ns, &["images", "import", a.to_str().unwrap()])
        .ok()
        .to_string();
    assert!(out.contains("docker.io/berth/ctr-multi:v1"), "{out}");
    assert!(out.contains("done"), "{out}");
    d.ctr(&ns, &["images", "import", b.to_str().unwrap()]).ok();

    // images ls: the same names and digests.
    let ctr_images = d.ctr(&ns, &["images", "ls"]).ok().to_string();
    let berth_images = d.berth(&ns, &["images", "ls"]).ok().to_string();
    assert_eq!(
        column(&ctr_images, 0),
        [
            "docker.io/berth/ctr-multi:v1",
            "docker.io/berth/ctr-single:v1"
        ]
    );
    assert_eq!(column(&ctr_images, 0), column(&berth_images, 0));
    assert_eq!(column(&ctr_images, 2), column(&berth_images, 2));
    assert!(column(&ctr_images, 2).contains(&multi.manifest_digest()));
    assert_eq!(
        lines(d.ctr(&ns, &["images", "ls", "-q"]).ok()),
        lines(d.berth(&ns, &["images", "ls", "-q"]).ok())
    );

    // content ls: the same digests.
    let ctr_content = lines(d.ctr(&ns, &["content", "ls", "-q"]).ok());
    let berth_content = lines(d.berth(&ns, &["content", "ls", "-q"]).ok());
    assert_eq!(ctr_content, berth_content);
    for l in &multi.layers {
        assert!(
            ctr_content.contains(&l.digest),
            "layer {} missing from {ctr_content:?}",
            l.digest
        );
    }

    // snapshots ls: the same keys, the chain ids of both images among them.
    let ctr_snaps = d.ctr(&ns, &["snapshots", "ls"]).ok().to_string();
    let berth_snaps = d.berth(&ns, &["snapshots", "ls"]).ok().to_string();
    assert_eq!(column(&ctr_snaps, 0), column(&berth_snaps, 0));
    assert!(
        column(&ctr_snaps, 0).contains(&multi.chain_id()),
        "{ctr_snaps}"
    );
    assert!(
        column(&ctr_snaps, 0).contains(&single.chain_id()),
        "{ctr_snaps}"
    );

    // berth check agrees that ctr's import is complete and unpacked.
    let check = d
        .berth(&ns, &["--format", "json", "images", "check"])
        .json();
    for c in check.as_array().unwrap() {
        assert_eq!(c["complete"], true, "{c}");
        assert_eq!(c["unpacked"], true, "{c}");
    }

    // namespaces ls.
    assert_eq!(
        lines(d.ctr("default", &["namespaces", "ls", "-q"]).ok()),
        lines(
            &d.berth("default", &["namespaces", "ls"])
                .ok()
                .lines()
                .skip(1)
                .map(|l| l.split_whitespace().next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n")
        )
    );
    assert!(d
        .ctr("default", &["namespaces", "ls", "-q"])
        .ok()
        .contains(&ns));

    // An image imported by berth is seen by ctr, and ctr exports it to an archive berth
    // re-imports to the same digest.
    let ns2 = unique("ctr2");
    d.berth(&ns2, &["images", "import", a.to_str().unwrap()])
        .ok();
    let ls = d.ctr(&ns2, &["images", "ls"]).ok().to_string();
    assert_eq!(column(&ls, 2), [multi.manifest_digest()]);
    let exported = work.path().join("ctr-export.tar");
    d.ctr(
        &ns2,
        &[
            "images",
            "export",
            exported.to_str().unwrap(),
            "docker.io/berth/ctr-multi:v1",
        ],
    )
    .ok();
    let ns3 = unique("ctr3");
    let out = d
        .berth(
            &ns3,
            &[
                "--format",
                "json",
                "images",
                "import",
                exported.to_str().unwrap(),
            ],
        )
        .json();
    assert_eq!(out[0]["digest"], multi.manifest_digest());

    // ctr images rm: GC frees the content.
    d.ctr(
        &ns2,
        &["images", "rm", "--sync", "docker.io/berth/ctr-multi:v1"],
    )
    .ok();
    assert!(d.ctr(&ns2, &["content", "ls", "-q"]).ok().trim().is_empty());
}

#[test]
fn an_image_built_by_umoci_and_skopeo_imports_and_unpacks() {
    // Independent producers: umoci builds the OCI layout, skopeo converts it to docker-save.
    let d = Berthd::start().unwrap();
    let ns = unique("umoci");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let run = |cmd: &mut std::process::Command| {
        let o = cmd.output().expect("spawn");
        assert!(
            o.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(std::process::Command::new("umoci")
        .args(["init", "--layout"])
        .arg(w.join("lay")));
    run(std::process::Command::new("umoci")
        .args(["new", "--image"])
        .arg(format!("{}:v1", w.join("lay").display())));
    run(std::process::Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:v1", w.join("lay").display()))
        .arg(w.join("bundle")));
    std::fs::create_dir_all(w.join("bundle/rootfs/bin")).unwrap();
    std::fs::copy(image::BUSYBOX, w.join("bundle/rootfs/bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", w.join("bundle/rootfs/bin/sh")).unwrap();
    run(std::process::Command::new("umoci")
        .args(["repack", "--image"])
        .arg(format!("{}:v1", w.join("lay").display()))
        .arg(w.join("bundle")));
    run(std::process::Command::new("tar")
        .arg("-C")
        .arg(w.join("lay"))
        .arg("-cf")
        .arg(w.join("umoci.tar"))
        .arg("."));
    run(std::process::Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:v1", w.join("lay").display()))
        .arg(format!(
            "docker-archive:{}:berth/skopeo:v1",
            w.join("skopeo.tar").display()
        )));

    let out = d
        .berth(
            &ns,
            &[
                "--format",
                "json",
                "images",
                "import",
                "--base-name",
                "docker.io/berth/umoci",
                w.join("umoci.tar").to_str().unwrap(),
            ],
        )
        .json();
    assert_eq!(out[0]["name"], "docker.io/berth/umoci:v1");
    let out2 = d
        .berth(
            &ns,
            &[
                "--format",
                "json",
                "images",
                "import",
                w.join("skopeo.tar").to_str().unwrap(),
            ],
        )
        .json();
    assert_eq!(out2[0]["name"], "docker.io/berth/skopeo:v1");
    // Same layer content, so the same chain id whichever tool packed it.
    assert_eq!(out[0]["chain_id"], out2[0]["chain_id"]);
    let check = d
        .berth(&ns, &["--format", "json", "images", "check"])
        .json();
    assert_eq!(check.as_array().unwrap().len(), 2);
    for c in check.as_array().unwrap() {
        assert_eq!(c["complete"], true, "{c}");
        assert_eq!(c["unpacked"], true, "{c}");
    }
}
