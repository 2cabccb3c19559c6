//! berthd's per-registry settings against real registries on 127.0.0.1: HTTPS with a private
//! CA given in berthd's config (and refused without it), a pull mirror, and credentials from a
//! Docker credential helper.

use berth_integration::manager::registry::Registry;
use berth_integration::manager::{image, unique, Berthd};

fn import(d: &Berthd, ns: &str, img: &image::Image) {
    let work = tempfile::tempdir().unwrap();
    let p = work.path().join("img.tar");
    img.write_oci_archive(&p).unwrap();
    d.berth(ns, &["images", "import", p.to_str().unwrap()]).ok();
}

#[test]
fn https_with_the_registrys_ca_from_the_config_pushes_and_pulls() {
    let reg = Registry::start_tls().unwrap();
    let ca = reg.ca().unwrap().display().to_string();
    let d = Berthd::start_with_config(&format!(
        "[registries.\"{}\"]\nca_file = \"{ca}\"\n",
        reg.addr()
    ))
    .unwrap();
    let ns = unique("tls");
    let name = format!("{}/berth/secure:v1", reg.addr());
    let img = image::busybox_multi(&name).unwrap();
    import(&d, &ns, &img);
    let out = d
        .berth(&ns, &["--format", "json", "images", "push", &name])
        .json();
    assert_eq!(out["digest"], img.manifest_digest(), "{out}");
    d.berth(&ns, &["images", "rm", &name]).ok();
    let out = d
        .berth(&ns, &["--format", "json", "images", "pull", &name])
        .json();
    assert_eq!(out["digest"], img.manifest_digest(), "{out}");
    assert_eq!(out["chain_id"], img.chain_id(), "{out}");

    // A berthd that does not trust the test CA refuses the registry's certificate.
    let plain = Berthd::start().unwrap();
    let e = plain
        .berth(&ns, &["images", "pull", &name])
        .err()
        .to_lowercase();
    assert!(
        e.contains("certificate") || e.contains("unknownissuer"),
        "{e}"
    );
    let ls = plain
        .berth(&ns, &["--format", "json", "images", "ls"])
        .json();
    assert_eq!(ls.as_array().map(|a| a.len()), Some(0), "{ls}");
}

#[test]
fn a_configured_mirror_serves_the_pull() {
    let upstream = Registry::start().unwrap();
    let mirror = Registry::start().unwrap();
    // The image exists only on the mirror, under the upstream's repository path.
    let on_mirror = format!("{}/berth/mirrored:v1", mirror.addr());
    let wanted = format!("{}/berth/mirrored:v1", upstream.addr());
    let feeder = Berthd::start().unwrap();
    let ns = unique("mirror");
    let img = image::busybox_single(&on_mirror).unwrap();
    import(&feeder, &ns, &img);
    feeder
        .berth(&ns, &["images", "push", "--plain-http", &on_mirror])
        .ok();

    let d = Berthd::start_with_config(&format!(
        "[registries.\"{}\"]\nplain_http = true\nmirrors = [\"http://{}\"]\n",
        upstream.addr(),
        mirror.addr()
    ))
    .unwrap();
    let out = d
        .berth(&ns, &["--format", "json", "images", "pull", &wanted])
        .json();
    assert_eq!(out["name"], wanted.as_str(), "{out}");
    assert_eq!(out["digest"], img.manifest_digest(), "{out}");
    assert!(
        mirror.log().contains("/v2/berth/mirrored/manifests/v1"),
        "the mirror was not asked:\n{}",
        mirror.log()
    );
    assert!(
        !upstream.log().contains("/v2/berth/mirrored/"),
        "the upstream was asked although the mirror had it:\n{}",
        upstream.log()
    );

    // A mirror without the image is skipped: the upstream serves it.
    let other = format!("{}/berth/only-upstream:v1", upstream.addr());
    let img2 = image::busybox_single(&other).unwrap();
    import(&feeder, &ns, &img2);
    feeder
        .berth(&ns, &["images", "push", "--plain-http", &other])
        .ok();
    let out = d
        .berth(&ns, &["--format", "json", "images", "pull", &other])
        .json();
    assert_eq!(out["digest"], img2.manifest_digest(), "{out}");
}

#[test]
fn a_docker_credential_helper_supplies_the_password() {
    let reg = Registry::start_with_auth("carol", "h3lper").unwrap();
    let d = Berthd::start().unwrap();
    let ns = unique("credhelper");
    let name = format!("{}/berth/helped:v1", reg.addr());
    let img = image::busybox_single(&name).unwrap();
    import(&d, &ns, &img);

    let home = tempfile::tempdir().unwrap();
    let bin = home.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let helper = |name: &str, password: &str| {
        use std::os::unix::fs::PermissionsExt;
        let p = bin.join(format!("docker-credential-{name}"));
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\nread server\n[ \"$1\" = get ] || exit 2\n\
                 printf '{{\"ServerURL\":\"%s\",\"Username\":\"carol\",\"Secret\":\"{password}\"}}' \"$server\"\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    helper("good", "h3lper");
    helper("bad", "wrong");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let config = |helper: &str| {
        let p = home.path().join(format!("{helper}.json"));
        std::fs::write(
            &p,
            format!("{{\"credHelpers\": {{\"{}\": \"{helper}\"}}}}", reg.addr()),
        )
        .unwrap();
        p.display().to_string()
    };
    let (good, bad, missing) = (config("good"), config("bad"), config("absent"));
    let env = [("PATH", path.as_str())];

    let push = |cfg: &str| {
        d.berth_env(
            &ns,
            &["images", "push", "--plain-http", "--config", cfg, &name],
            &env,
        )
    };
    let e = push(&bad).err().to_lowercase();
    assert!(e.contains("unauthorized"), "{e}");
    let e = push(&missing).err().to_string();
    assert!(e.contains("docker-credential-absent"), "{e}");
    push(&good).ok();
    d.berth(&ns, &["images", "rm", &name]).ok();
    let out = d.berth_env(
        &ns,
        &[
            "--format",
            "json",
            "images",
            "pull",
            "--plain-http",
            "--config",
            &good,
            &name,
        ],
        &env,
    );
    assert_eq!(out.json()["digest"], img.manifest_digest());
}

#[test]
fn bearer_tokens_from_the_registrys_token_server() {
    use berth_integration::manager::token::TokenServer;
    let tokens = TokenServer::start("dave", "t0ken").unwrap();
    let reg = Registry::start_with_tokens(&tokens).unwrap();
    let d = Berthd::start().unwrap();
    let ns = unique("bearer");
    let name = format!("{}/berth/tokened:v1", reg.addr());
    let img = image::busybox_multi(&name).unwrap();
    import(&d, &ns, &img);

    // Anonymous: the token server refuses, and the error says so.
    let e = d
        .berth(&ns, &["images", "push", "--plain-http", &name])
        .err()
        .to_lowercase();
    assert!(
        e.contains("unauthorized") || e.contains("credentials"),
        "{e}"
    );
    let e = d
        .berth(
            &ns,
            &["images", "push", "--plain-http", "-u", "dave:wrong", &name],
        )
        .err()
        .to_lowercase();
    assert!(e.contains("unauthorized"), "{e}");

    let out = d
        .berth(
            &ns,
            &[
                "--format",
                "json",
                "images",
                "push",
                "--plain-http",
                "-u",
                "dave:t0ken",
                &name,
            ],
        )
        .json();
    assert_eq!(out["digest"], img.manifest_digest(), "{out}");
    d.berth(&ns, &["images", "rm", &name]).ok();
    let out = d
        .berth(
            &ns,
            &[
                "--format",
                "json",
                "images",
                "pull",
                "--plain-http",
                "-u",
                "dave:t0ken",
                &name,
            ],
        )
        .json();
    assert_eq!(out["digest"], img.manifest_digest(), "{out}");
    assert_eq!(out["chain_id"], img.chain_id(), "{out}");
    // The registry accepted only what the token server signed.
    assert!(tokens.issued() >= 2, "issued {}", tokens.issued());
}
