//! berthd against a real registry (Debian's docker-registry on 127.0.0.1): push a locally built
//! multi-layer image, remove it, pull it back to the same digests and files; skip what is
//! there; cross-repository mount; basic auth; ctr pulling into berthd.

use berth_integration::manager::registry::Registry;
use berth_integration::manager::{files_under, image, unique, Berthd, MountGuard};

fn import(d: &Berthd, ns: &str, img: &image::Image) {
    let work = tempfile::tempdir().unwrap();
    let p = work.path().join("img.tar");
    img.write_oci_archive(&p).unwrap();
    d.berth(ns, &["images", "import", p.to_str().unwrap()]).ok();
}

fn view_files(d: &Berthd, ns: &str, chain_id: &str) -> Vec<String> {
    let view = unique("view");
    let mounts = d
        .berth(
            ns,
            &["--format", "json", "snapshots", "view", &view, chain_id],
        )
        .json();
    let mut files: Vec<String> = {
        let m = MountGuard::mount_json(&mounts).unwrap();
        assert_eq!(
            std::fs::read_to_string(m.path().join("etc/passwd")).unwrap(),
            "root:x:0:0:layer3:/root:/bin/sh\n"
        );
        files_under(m.path())
            .iter()
            .map(|p| p.display().to_string())
            .collect()
    };
    d.berth(ns, &["snapshots", "rm", &view]).ok();
    files.sort();
    files
}

#[test]
fn push_remove_pull_same_digests_and_files() {
    let reg = Registry::start().unwrap();
    let d = Berthd::start().unwrap();
    let ns = unique("reg");
    let name = format!("{}/berth/multi:v1", reg.addr());
    let img = image::busybox_multi(&name).unwrap();
    import(&d, &ns, &img);
    let files_before = view_files(&d, &ns, &img.chain_id());

    // Push: config + 3 layers uploaded, then the manifest under the tag.
    let out = d
        .berth(
            &ns,
            &["--format", "json", "images", "push", "--plain-http", &name],
        )
        .json();
    assert_eq!(out["digest"], img.manifest_digest(), "{out}");
    assert_eq!(out["uploaded"], 4, "{out}");
    assert_eq!(out["present"], 0, "{out}");
    // Again: the registry has every blob; nothing is uploaded.
    let out = d
        .berth(
            &ns,
            &["--format", "json", "images", "push", "--plain-http", &name],
        )
        .json();
    assert_eq!(
        (out["uploaded"].clone(), out["present"].clone()),
        (0.into(), 4.into()),
        "{out}"
    );

    // Remove locally (GC frees blobs and snapshots), pull back.
    d.berth(&ns, &["images", "rm", &name]).ok();
    let content = d.berth(&ns, &["--format", "json", "content", "ls"]).json();
    assert_eq!(content.as_array().map(|a| a.len()), Some(0), "{content}");
    let out = d
        .berth(
            &ns,
            &["--format", "json", "images", "pull", "--plain-http", &name],
        )
        .json();
    assert_eq!(out["name"], name.as_str(), "{out}");
    assert_eq!(out["digest"], img.manifest_digest(), "{out}");
    assert_eq!(out["layers_fetched"], 3, "{out}");
    assert_eq!(out["chain_id"], img.chain_id(), "{out}");
    let ls = d.berth(&ns, &["--format", "json", "images", "ls"]).json();
    assert_eq!(ls[0]["target"]["digest"], img.manifest_digest(), "{ls}");
    let check = d
        .berth(&ns, &["--format", "json", "images", "check"])
        .json();
    assert_eq!(check[0]["complete"], true, "{check}");
    assert_eq!(check[0]["unpacked"], true, "{check}");
    assert_eq!(view_files(&d, &ns, &img.chain_id()), files_before);
    // The pulled image runs, its layers applied in order (layer 2 deleted /etc/removeme,
    // layer 3 rewrote /etc/passwd).
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            &name,
            &unique("c"),
            "sh",
            "-c",
            "cat /etc/passwd; [ -e /etc/removeme ] || echo removed",
        ],
    );
    assert_eq!(out.ok(), "root:x:0:0:layer3:/root:/bin/sh\nremoved\n");

    // Pull again: every layer is there already.
    let out = d
        .berth(
            &ns,
            &["--format", "json", "images", "pull", "--plain-http", &name],
        )
        .json();
    assert_eq!(out["layers_fetched"], 0, "{out}");
    assert_eq!(out["layers_present"], 3, "{out}");

    // Tag into another repository of the same registry and push: blobs are mounted.
    let other = format!("{}/berth/other:v2", reg.addr());
    d.berth(&ns, &["images", "tag", &name, &other]).ok();
    let out = d
        .berth(
            &ns,
            &["--format", "json", "images", "push", "--plain-http", &other],
        )
        .json();
    assert_eq!(out["mounted"], 4, "{out}");
    assert_eq!(out["uploaded"], 0, "{out}");
    // Tagging onto an existing name needs --force.
    let e = d
        .berth(&ns, &["images", "tag", &name, &other])
        .err()
        .to_string();
    assert!(e.contains("exists already"), "{e}");
    d.berth(&ns, &["images", "tag", "--force", &name, &other])
        .ok();
}

#[test]
fn basic_auth_wrong_password_refused_right_one_works() {
    let reg = Registry::start_with_auth("alice", "s3cret").unwrap();
    let d = Berthd::start().unwrap();
    let ns = unique("auth");
    let name = format!("{}/berth/private:v1", reg.addr());
    let img = image::busybox_single(&name).unwrap();
    import(&d, &ns, &img);
    let home = tempfile::tempdir().unwrap();
    let empty_cfg = home.path().join("none.json");

    let e = d
        .berth(
            &ns,
            &[
                "images",
                "push",
                "--plain-http",
                "--config",
                empty_cfg.to_str().unwrap(),
                &name,
            ],
        )
        .err()
        .to_string();
    assert!(
        e.contains("unauthorized") && e.contains("requires credentials"),
        "{e}"
    );
    let e = d
        .berth(
            &ns,
            &["images", "push", "--plain-http", "-u", "alice:wrong", &name],
        )
        .err()
        .to_string();
    assert!(
        e.contains("unauthorized") && e.contains("credentials refused"),
        "{e}"
    );
    d.berth(
        &ns,
        &[
            "images",
            "push",
            "--plain-http",
            "-u",
            "alice:s3cret",
            &name,
        ],
    )
    .ok();

    // Pull back with credentials from a Docker config.json.
    d.berth(&ns, &["images", "rm", &name]).ok();
    let cfg = home.path().join("config.json");
    // base64("alice:s3cret")
    std::fs::write(
        &cfg,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6czNjcmV0"}}}}}}"#,
            reg.addr()
        ),
    )
    .unwrap();
    let e = d
        .berth(
            &ns,
            &["images", "pull", "--plain-http", "-u", "alice:nope", &name],
        )
        .err()
        .to_string();
    assert!(e.contains("credentials refused"), "{e}");
    let out = d
        .berth(
            &ns,
            &[
                "--format",
                "json",
                "images",
                "pull",
                "--plain-http",
                "--config",
                cfg.to_str().unwrap(),
                &name,
            ],
        )
        .json();
    assert_eq!(out["digest"], img.manifest_digest(), "{out}");
    assert_eq!(out["chain_id"], img.chain_id(), "{out}");
}

#[test]
fn ctr_pulls_from_the_registry_into_berthd() {
    let reg = Registry::start().unwrap();
    let d = Berthd::start().unwrap();
    let ns = unique("ctrpull");
    let name = format!("{}/berth/multi:ctr", reg.addr());
    let img = image::busybox_multi(&name).unwrap();
    import(&d, &ns, &img);
    d.berth(&ns, &["images", "push", "--plain-http", &name])
        .ok();
    d.berth(&ns, &["images", "rm", &name]).ok();

    d.ctr(&ns, &["images", "pull", "--plain-http", &name]).ok();
    let ls = d.berth(&ns, &["--format", "json", "images", "ls"]).json();
    assert_eq!(ls[0]["name"], name.as_str(), "{ls}");
    assert_eq!(ls[0]["target"]["digest"], img.manifest_digest(), "{ls}");
    let check = d
        .berth(&ns, &["--format", "json", "images", "check"])
        .json();
    assert_eq!(check[0]["complete"], true, "{check}");
    assert_eq!(check[0]["unpacked"], true, "{check}");
}
