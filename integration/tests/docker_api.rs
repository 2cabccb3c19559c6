//! The Docker Engine API on berthd's second socket, driven by Debian's unmodified docker CLI
//! (`/usr/bin/docker`, 20.10) and by raw HTTP where the CLI cannot say it (malformed JSON,
//! unknown routes, versions): version negotiation, info, images (load, tag, inspect, history,
//! save, rmi, prune, pull and push against a local registry), networks and volumes, and bad
//! input with Docker's status codes and messages.
//!
//! berthd runs in a network namespace of the test's own (the registry too, on its loopback):
//! nothing leaves 127.0.0.0/8 of that namespace, and a name that would mean Docker Hub cannot
//! reach it.

use std::os::unix::net::UnixStream;
use std::path::Path;

use berth_integration::manager::image::{self, Image, Layer};
use berth_integration::manager::registry::Registry;
use berth_integration::manager::tasks::NsDaemon;
use berth_integration::manager::Berthd;

const NS: &str = "moby";

fn daemon() -> NsDaemon {
    NsDaemon {
        d: Berthd::start_in_netns(&[]).unwrap(),
        ns: NS.to_string(),
    }
}

/// A small busybox image, as a `docker save` archive in `dir`.
fn image_archive(dir: &Path, name: &str) -> (Image, String) {
    let img = Image::new(
        name,
        vec![
            image::base_layer().unwrap(),
            Layer::build(&[image::Entry::File("hello", 0o644, b"hi\n".to_vec())]).unwrap(),
        ],
    )
    .unwrap();
    let path = dir.join("image.tar");
    img.write_docker_archive(&path).unwrap();
    (img, path.to_str().unwrap().to_string())
}

/// A registry on the loopback of berthd's network namespace (started from a thread that
/// joined it; the registry process stays there).
fn registry_in(d: &Berthd) -> Registry {
    registry_in_with(d, Registry::start)
}

fn registry_in_with<T: Send + 'static>(
    d: &Berthd,
    start: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> T {
    let ns = d.netns().expect("berthd has a netns").to_path_buf();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&ns).unwrap();
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        start()
    })
    .join()
    .unwrap()
    .unwrap()
}

/// One raw HTTP/1.1 request on the Docker socket: (status, head, body).
fn http(d: &Berthd, method: &str, path: &str, body: &[u8]) -> (u16, String, String) {
    d.docker_http(method, path, "application/json", body)
}

fn message(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["message"].as_str().unwrap_or_default().to_string()
}

#[test]
fn ping_version_and_info_negotiate_as_dockerd() {
    let d = daemon();
    // The socket is root's and root's group's, as dockerd's.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = std::fs::metadata(d.docker_socket()).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o660);
    assert_eq!((md.uid(), md.gid()), (0, 0));
    let (code, head, body) = http(&d, "GET", "/_ping", b"");
    assert_eq!(code, 200, "{head}");
    assert_eq!(body, "OK");
    let h = head.to_ascii_lowercase();
    for want in [
        "api-version: 1.41",
        "ostype: linux",
        "docker-experimental: false",
        "builder-version:",
    ] {
        assert!(h.contains(want), "{want} missing from:\n{head}");
    }
    let (code, head, body) = http(&d, "HEAD", "/v1.24/_ping", b"");
    assert_eq!(code, 200, "{head}");
    assert!(body.is_empty());
    assert!(head.to_ascii_lowercase().contains("api-version: 1.41"));

    // Versions outside 1.12..=1.41 are refused as dockerd refuses them.
    let (code, _, body) = http(&d, "GET", "/v1.42/version", b"");
    assert_eq!(code, 400);
    assert!(
        message(&body).contains("client version 1.42 is too new"),
        "{body}"
    );
    let (code, _, body) = http(&d, "GET", "/v1.11/version", b"");
    assert_eq!(code, 400);
    assert!(message(&body).contains("too old"), "{body}");

    let out = d.docker(&[
        "version",
        "--format",
        "{{.Server.APIVersion}} {{.Server.Os}}",
    ]);
    assert_eq!(out.ok().trim(), "1.41 linux");
    let out = d.docker(&[
        "info",
        "--format",
        "{{.ServerVersion}} {{.OSType}} {{.Images}}",
    ]);
    let s = out.ok().trim().to_string();
    assert!(s.ends_with(" linux 0"), "{s}");
    // The whole human-readable info renders.
    let out = d.docker(&["info"]);
    assert!(out.ok().contains("Server Version:"), "{}", out.stdout);
    d.docker(&["system", "df"]).ok();
}

#[test]
fn unknown_routes_malformed_json_and_big_bodies_are_refused() {
    let d = daemon();
    let (code, _, body) = http(&d, "GET", "/v1.41/nope", b"");
    assert_eq!(code, 404);
    assert_eq!(message(&body), "page not found");
    let (code, _, body) = http(&d, "POST", "/v1.41/networks/create", b"{\"Name\": ");
    assert_eq!(code, 400);
    assert!(message(&body).contains("malformed JSON"), "{body}");
    let (code, _, body) = http(&d, "POST", "/v1.41/volumes/create", b"[1,2]");
    assert_eq!(code, 400, "{body}");
    let big = vec![b' '; 2 << 20];
    let (code, _, body) = http(&d, "POST", "/v1.41/volumes/create", &big);
    assert_eq!(code, 413, "{body}");
    // Nothing was made by any of them.
    assert_eq!(d.docker(&["volume", "ls", "-q"]).ok().trim(), "");
    let nets = d.docker(&["network", "ls", "--format", "{{.Name}}"]);
    let mut names: Vec<&str> = nets.ok().lines().collect();
    names.sort();
    assert_eq!(names, ["bridge", "host", "none"]);
}

#[test]
fn load_tag_inspect_history_save_and_rmi() {
    let d = daemon();
    let dir = tempfile::tempdir().unwrap();
    let (img, tar) = image_archive(dir.path(), "docker.io/berth/docker-api:v1");
    let id = img.config_digest();

    let out = d.docker(&["load", "-i", &tar]);
    assert!(
        out.ok().contains("Loaded image: berth/docker-api:v1"),
        "{}",
        out.stdout
    );
    let out = d.docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}} {{.Os}} {{.Architecture}} {{json .RepoTags}} {{len .RootFS.Layers}}",
        "berth/docker-api:v1",
    ]);
    assert_eq!(
        out.ok().trim(),
        format!(
            "{id} linux {} [\"berth/docker-api:v1\"] 2",
            image::host_arch()
        )
    );
    // By short ID too.
    let short = &image::hex(&id)[..12];
    let out = d.docker(&["image", "inspect", "--format", "{{.Id}}", short]);
    assert_eq!(out.ok().trim(), id);

    d.docker(&["tag", "berth/docker-api:v1", "other:t2"]).ok();
    let out = d.docker(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    let mut lines: Vec<&str> = out.ok().lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            format!("berth/docker-api:v1 {short}"),
            format!("other:t2 {short}")
        ]
    );
    let out = d.docker(&[
        "images",
        "--filter",
        "reference=other",
        "--format",
        "{{.Repository}}",
    ]);
    assert_eq!(out.ok().trim(), "other");
    let out = d.docker(&["images", "-q", "--filter", "dangling=true"]);
    assert_eq!(out.ok().trim(), "");
    let out = d.docker(&["history", "--format", "{{.CreatedBy}}", "other:t2"]);
    assert_eq!(out.ok().lines().count(), 2, "{}", out.stdout);

    let saved = dir.path().join("saved.tar");
    d.docker(&["save", "-o", saved.to_str().unwrap(), "other:t2"])
        .ok();
    assert!(std::fs::metadata(&saved).unwrap().len() > 1024);

    // Two names: rmi of one only untags it.
    let out = d.docker(&["rmi", "other:t2"]);
    assert_eq!(out.ok().trim(), "Untagged: other:t2");
    // An ID with one name left goes whole.
    let out = d.docker(&["rmi", "berth/docker-api:v1"]);
    let s = out.ok();
    assert!(s.contains("Untagged: berth/docker-api:v1"), "{s}");
    assert!(s.contains(&format!("Deleted: {id}")), "{s}");
    assert_eq!(d.docker(&["images", "-q"]).ok().trim(), "");
    // What berth sees in namespace moby is what docker sees.
    let out = d.berth(NS, &["images", "ls", "-q"]);
    assert_eq!(out.ok().trim(), "");

    // docker load of docker save's archive.
    let out = d.docker(&["load", "-i", saved.to_str().unwrap()]);
    assert!(
        out.ok().contains("Loaded image: other:t2"),
        "{}",
        out.stdout
    );
    let out = d.docker(&["image", "inspect", "--format", "{{.Id}}", "other:t2"]);
    assert_eq!(out.ok().trim(), id);

    // Missing images: Docker's words and exit code.
    let out = d.docker(&["rmi", "missing"]);
    assert_eq!(out.code, 1);
    assert!(
        out.err().contains("No such image: missing"),
        "{}",
        out.stderr
    );
    let out = d.docker(&["image", "inspect", "missing:v9"]);
    assert_eq!(out.code, 1);
    assert!(
        out.err().contains("No such image: missing:v9"),
        "{}",
        out.stderr
    );
    let (code, _, body) = http(&d, "DELETE", "/v1.41/images/missing", b"");
    assert_eq!(code, 404);
    assert_eq!(message(&body), "No such image: missing:latest");
    let (code, _, body) = http(&d, "GET", "/v1.41/images/Bad%20Name/json", b"");
    assert_eq!(code, 400, "{body}");

    // Two repositories on one ID: rmi by ID is a conflict unless forced.
    d.docker(&["tag", "other:t2", "third:t3"]).ok();
    let out = d.docker(&["rmi", short]);
    assert_eq!(out.code, 1);
    assert!(
        out.err()
            .contains("image is referenced in multiple repositories"),
        "{}",
        out.stderr
    );
    d.docker(&["rmi", "-f", short]).ok();
    assert_eq!(d.docker(&["images", "-q"]).ok().trim(), "");

    // A broken archive: 400, nothing loaded.
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, b"not a tar at all").unwrap();
    let out = d.docker(&["load", "-i", junk.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let (code, _, _) = http(&d, "POST", "/v1.41/images/load", b"not a tar at all");
    assert_eq!(code, 400);
    assert_eq!(d.docker(&["images", "-q"]).ok().trim(), "");

    // Prune -a takes unused images; nothing is left.
    d.docker(&["load", "-i", &tar]).ok();
    let out = d.docker(&["image", "prune", "-a", "-f"]);
    assert!(
        out.ok().contains(&format!("deleted: {id}")),
        "{}",
        out.stdout
    );
    assert_eq!(d.docker(&["images", "-q"]).ok().trim(), "");
}

#[test]
fn push_and_pull_against_a_local_registry() {
    let d = daemon();
    let reg = registry_in(&d);
    let dir = tempfile::tempdir().unwrap();
    let (img, tar) = image_archive(dir.path(), "docker.io/berth/docker-push:v1");
    let id = img.config_digest();
    d.docker(&["load", "-i", &tar]).ok();
    let remote = format!("{}/berth/pushed:v1", reg.addr());
    d.docker(&["tag", "berth/docker-push:v1", &remote]).ok();
    let out = d.docker(&["push", &remote]);
    let s = out.ok();
    assert!(
        s.contains(&format!(
            "The push refers to repository [{}/berth/pushed]",
            reg.addr()
        )),
        "{s}"
    );
    assert!(s.contains("v1: digest: sha256:"), "{s}");
    let digest = s
        .split("digest: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();

    d.docker(&["rmi", &remote, "berth/docker-push:v1"]).ok();
    assert_eq!(d.docker(&["images", "-q"]).ok().trim(), "");

    let out = d.docker(&["pull", &remote]);
    let s = out.ok();
    assert!(s.contains(&format!("Digest: {digest}")), "{s}");
    assert!(
        s.contains(&format!("Status: Downloaded newer image for {remote}")),
        "{s}"
    );
    let out = d.docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}} {{json .RepoDigests}}",
        &remote,
    ]);
    assert_eq!(
        out.ok().trim(),
        format!("{id} [\"{}/berth/pushed@{digest}\"]", reg.addr())
    );
    // Again: up to date.
    let out = d.docker(&["pull", &remote]);
    assert!(
        out.ok().contains("Status: Image is up to date"),
        "{}",
        out.stdout
    );

    // A missing tag: Docker's 404 and message, and nothing new in the store.
    let missing = format!("{}/berth/pushed:nope", reg.addr());
    let out = d.docker(&["pull", &missing]);
    assert_eq!(out.code, 1);
    assert!(
        out.err()
            .contains(&format!("manifest for {missing} not found")),
        "{}",
        out.stderr
    );
    let out = d.docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(out.ok().trim(), remote);
    let (code, _, body) = http(
        &d,
        "POST",
        &format!(
            "/v1.41/images/create?fromImage={}/berth/pushed&tag=nope",
            reg.addr()
        ),
        b"",
    );
    assert_eq!(code, 404, "{body}");

    // Push of a name that is not there.
    let out = d.docker(&["push", &format!("{}/berth/absent:v1", reg.addr())]);
    assert_eq!(out.code, 1);
    assert!(
        out.err()
            .contains("An image does not exist locally with the tag"),
        "{}",
        out.stderr
    );
    // Options berthd lacks are refused by name.
    let out = d.docker(&[
        "pull",
        "--all-tags",
        &format!("{}/berth/pushed", reg.addr()),
    ]);
    assert_eq!(out.code, 1);
    assert!(out.err().contains("--all-tags"), "{}", out.stderr);
}

#[test]
fn registry_credentials_come_from_x_registry_auth() {
    let d = daemon();
    let reg = registry_in_with(&d, || Registry::start_with_auth("berth", "s3cret"));
    let dir = tempfile::tempdir().unwrap();
    let (_, tar) = image_archive(dir.path(), "docker.io/berth/docker-auth:v1");
    d.docker(&["load", "-i", &tar]).ok();
    let remote = format!("{}/berth/private:v1", reg.addr());
    d.docker(&["tag", "berth/docker-auth:v1", &remote]).ok();
    // No credentials: the registry refuses, docker fails.
    let out = d.docker(&["push", &remote]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    // The CLI sends config.json's credentials for the registry as X-Registry-Auth.
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode("berth:s3cret");
    let cfg = d.dir().join("docker-config");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(
        cfg.join("config.json"),
        serde_json::to_vec(&serde_json::json!({"auths": {reg.addr(): {"auth": auth}}})).unwrap(),
    )
    .unwrap();
    let out = d.docker(&["push", &remote]);
    assert!(out.ok().contains("v1: digest: sha256:"), "{}", out.stdout);
    d.docker(&["rmi", &remote]).ok();
    let out = d.docker(&["pull", &remote]);
    assert!(
        out.ok().contains("Downloaded newer image"),
        "{}",
        out.stdout
    );
    // Wrong credentials: refused before any progress.
    let bad = base64::engine::general_purpose::STANDARD.encode("berth:wrong");
    std::fs::write(
        cfg.join("config.json"),
        serde_json::to_vec(&serde_json::json!({"auths": {reg.addr(): {"auth": bad}}})).unwrap(),
    )
    .unwrap();
    let out = d.docker(&["pull", &format!("{}/berth/private:v1", reg.addr())]);
    assert_ne!(out.code, 0, "{}", out.stdout);
}

#[test]
fn docker_login_checks_credentials_with_the_registry() {
    let d = daemon();
    let reg = registry_in_with(&d, || Registry::start_with_auth("berth", "s3cret"));
    // Wrong password: the registry refuses, docker says so and stores nothing.
    let out = d.docker(&["login", "-u", "berth", "-p", "wrong", &reg.addr()]);
    let e = out.err().to_lowercase();
    assert!(e.contains("unauthorized"), "{e}");
    let cfg = d.dir().join("docker-config/config.json");
    let saved = std::fs::read_to_string(&cfg).unwrap_or_default();
    assert!(!saved.contains(&reg.addr()), "{saved}");
    // The right one: "Login Succeeded", the CLI keeps it, and a push then uses it.
    let out = d.docker(&["login", "-u", "berth", "-p", "s3cret", &reg.addr()]);
    assert!(out.ok().contains("Login Succeeded"), "{}", out.stdout);
    let saved = std::fs::read_to_string(&cfg).unwrap();
    assert!(saved.contains(&reg.addr()), "{saved}");
    let dir = tempfile::tempdir().unwrap();
    let (_, tar) = image_archive(dir.path(), "docker.io/berth/docker-login:v1");
    d.docker(&["load", "-i", &tar]).ok();
    let remote = format!("{}/berth/logged-in:v1", reg.addr());
    d.docker(&["tag", "berth/docker-login:v1", &remote]).ok();
    assert!(d
        .docker(&["push", &remote])
        .ok()
        .contains("v1: digest: sha256:"));

    // Bad bodies: unknown fields, no credentials, a server address that is no host.
    let (code, _, body) = http(
        &d,
        "POST",
        "/v1.41/auth",
        br#"{"username":"a","pasword":"b"}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(message(&body).contains("pasword"), "{body}");
    let (code, _, body) = http(
        &d,
        "POST",
        "/v1.41/auth",
        format!(r#"{{"serveraddress":"{}"}}"#, reg.addr()).as_bytes(),
    );
    assert_eq!(code, 400, "{body}");
    assert!(message(&body).contains("username"), "{body}");
    let (code, _, body) = http(
        &d,
        "POST",
        "/v1.41/auth",
        br#"{"username":"a","password":"b","serveraddress":"https://a b/"}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        message(&body).contains("invalid registry address"),
        "{body}"
    );
}

#[test]
fn docker_login_through_a_token_server() {
    use berth_integration::manager::token::TokenServer;
    let d = daemon();
    let (reg, _tokens) = registry_in_with(&d, || {
        let tokens = TokenServer::start("dave", "t0ken")?;
        Ok((Registry::start_with_tokens(&tokens)?, tokens))
    });
    let out = d.docker(&["login", "-u", "dave", "-p", "nope", &reg.addr()]);
    assert!(
        out.err().to_lowercase().contains("unauthorized"),
        "{}",
        out.stderr
    );
    let out = d.docker(&["login", "-u", "dave", "-p", "t0ken", &reg.addr()]);
    assert!(out.ok().contains("Login Succeeded"), "{}", out.stdout);
}

#[test]
fn docker_search_lists_a_registrys_repositories_through_its_catalog() {
    let d = daemon();
    let reg = registry_in(&d);
    let dir = tempfile::tempdir().unwrap();
    let (_, tar) = image_archive(dir.path(), "docker.io/berth/docker-search:v1");
    d.docker(&["load", "-i", &tar]).ok();
    for repo in ["berth/webapp", "berth/webcache", "other/db"] {
        let remote = format!("{}/{repo}:v1", reg.addr());
        d.docker(&["tag", "berth/docker-search:v1", &remote]).ok();
        d.docker(&["push", &remote]).ok();
    }
    let out = d.docker(&[
        "search",
        "--format",
        "{{.Name}}",
        &format!("{}/web", reg.addr()),
    ]);
    let mut names: Vec<&str> = out.ok().lines().collect();
    names.sort();
    assert_eq!(
        names,
        [
            format!("{}/berth/webapp", reg.addr()),
            format!("{}/berth/webcache", reg.addr())
        ],
        "{}",
        out.stdout
    );
    let out = d.docker(&[
        "search",
        "--limit",
        "1",
        "--format",
        "{{.Name}}",
        &format!("{}/berth", reg.addr()),
    ]);
    assert_eq!(out.ok().lines().count(), 1, "{}", out.stdout);
    // Catalog entries have no stars and are not official: the filters drop them.
    let out = d.docker(&[
        "search",
        "--filter",
        "is-official=true",
        &format!("{}/web", reg.addr()),
    ]);
    assert!(!out.ok().contains("webapp"), "{}", out.stdout);
    let out = d.docker(&[
        "search",
        "--filter",
        "stars=1",
        &format!("{}/web", reg.addr()),
    ]);
    assert!(!out.ok().contains("webapp"), "{}", out.stdout);
    let out = d.docker(&["search", &format!("{}/nothing-like-it", reg.addr())]);
    assert_eq!(
        out.ok().lines().count(),
        1,
        "only the header: {}",
        out.stdout
    );

    // Bad input: Docker's messages.
    let out = d.docker(&["search", "--limit", "101", &format!("{}/web", reg.addr())]);
    assert!(
        out.err()
            .contains("Limit 101 is outside the range of [1, 100]"),
        "{}",
        out.stderr
    );
    let out = d.docker(&[
        "search",
        "--filter",
        "stars=many",
        &format!("{}/web", reg.addr()),
    ]);
    assert!(
        out.err().contains("invalid filter 'stars=many'"),
        "{}",
        out.stderr
    );
    let out = d.docker(&[
        "search",
        "--filter",
        "colour=red",
        &format!("{}/web", reg.addr()),
    ]);
    assert!(out.err().contains("colour"), "{}", out.stderr);
    let (code, _, body) = http(&d, "GET", "/v1.41/images/search", b"");
    assert_eq!(code, 400, "{body}");
    // A registry nobody listens on: an error naming it, not a hang.
    let out = d.docker(&["search", "127.0.0.1:1/web"]);
    assert!(out.err().contains("127.0.0.1:1"), "{}", out.stderr);
}

#[test]
fn events_stream_image_events() {
    let d = daemon();
    let dir = tempfile::tempdir().unwrap();
    let (_, tar) = image_archive(dir.path(), "docker.io/berth/docker-events:v1");
    d.docker(&["load", "-i", &tar]).ok();
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3;
    let until = until.to_string();
    let out = std::thread::scope(|s| {
        let events = s.spawn(|| {
            d.docker(&[
                "events",
                "--until",
                &until,
                "--filter",
                "type=image",
                "--format",
                "{{.Type}} {{.Action}} {{.Actor.ID}}",
            ])
        });
        std::thread::sleep(std::time::Duration::from_millis(800));
        d.docker(&["tag", "berth/docker-events:v1", "evt:t9"]).ok();
        d.docker(&["rmi", "evt:t9"]).ok();
        events.join().unwrap()
    });
    let s = out.ok();
    assert!(s.contains("image tag evt:t9"), "{s}");
    assert!(s.contains("image untag evt:t9"), "{s}");
    // A past --since replays them (up to --until, then the stream ends).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (code, _, body) = http(
        &d,
        "GET",
        &format!("/v1.41/events?since=1&until={now}"),
        b"",
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains(r#""Action":"untag""#) && body.contains("evt:t9"),
        "{body}"
    );
}

#[test]
fn networks_in_dockers_shapes() {
    let d = daemon();
    let out = d.docker(&[
        "network",
        "create",
        "--subnet",
        "10.123.0.0/24",
        "--label",
        "a=b",
        "app",
    ]);
    let id = out.ok().trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    let out = d.docker(&[
        "network",
        "ls",
        "--format",
        "{{.Name}} {{.Driver}} {{.Scope}}",
    ]);
    let mut lines: Vec<&str> = out.ok().lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "app bridge local",
            "bridge bridge local",
            "host host local",
            "none null local"
        ]
    );
    let out = d.docker(&[
        "network",
        "inspect",
        "--format",
        "{{.Id}} {{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}} {{.Labels.a}} {{.Internal}}",
        "app",
    ]);
    assert_eq!(
        out.ok().trim(),
        format!("{id} 10.123.0.0/24 10.123.0.1 b false")
    );
    // By ID prefix too.
    let out = d.docker(&["network", "inspect", "--format", "{{.Name}}", &id[..10]]);
    assert_eq!(out.ok().trim(), "app");
    let out = d.docker(&["network", "ls", "-q", "--filter", "label=a=b"]);
    assert_eq!(out.ok().trim(), &id[..12]);

    // Name conflict: 409 with Docker's message, nothing changed.
    let out = d.docker(&["network", "create", "app"]);
    assert_eq!(out.code, 1);
    assert!(
        out.err().contains("network with name app already exists"),
        "{}",
        out.stderr
    );
    let (code, _, body) = http(&d, "POST", "/v1.41/networks/create", br#"{"Name":"app"}"#);
    assert_eq!(code, 409, "{body}");

    // Options berthd lacks: 400 naming them, nothing made.
    let out = d.docker(&["network", "create", "--ipv6", "v6"]);
    assert_eq!(out.code, 1);
    assert!(out.err().contains("EnableIPv6"), "{}", out.stderr);
    let out = d.docker(&["network", "create", "-d", "overlay", "ov"]);
    assert!(out.err().contains("overlay"), "{}", out.stderr);
    let out = d.docker(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.name=x",
        "opt",
    ]);
    assert!(
        out.err().contains("com.docker.network.bridge.name"),
        "{}",
        out.stderr
    );
    let out = d.docker(&["network", "ls", "-q", "--filter", "type=custom"]);
    assert_eq!(out.ok().trim(), &id[..12]);

    // Pre-defined ones stay.
    let out = d.docker(&["network", "rm", "host"]);
    assert!(out.err().contains("pre-defined network"), "{}", out.stderr);
    let out = d.docker(&["network", "rm", "bridge"]);
    assert!(out.err().contains("pre-defined network"), "{}", out.stderr);

    d.docker(&["network", "rm", "app"]).ok();
    let out = d.docker(&["network", "inspect", "app"]);
    assert_eq!(out.code, 1);
    assert!(out.err().contains("No such network: app"), "{}", out.stderr);
    let (code, _, body) = http(&d, "DELETE", "/v1.41/networks/app", b"");
    assert_eq!(code, 404);
    assert_eq!(message(&body), "network app not found");

    d.docker(&["network", "create", "p1"]).ok();
    let out = d.docker(&["network", "prune", "-f"]);
    assert!(out.ok().contains("p1"), "{}", out.stdout);
    let out = d.docker(&["network", "ls", "-q", "--filter", "type=custom"]);
    assert_eq!(out.ok().trim(), "");
    // The engine's own CLI sees the same networks in namespace moby.
    let out = d.berth(NS, &["network", "ls"]);
    assert!(!out.ok().contains("p1"), "{}", out.stdout);
}

#[test]
fn volumes_in_dockers_shapes() {
    let d = daemon();
    let out = d.docker(&["volume", "create", "--label", "k=v", "data"]);
    assert_eq!(out.ok().trim(), "data");
    // Creating it again with the same options is no error (dockerd's idempotence).
    d.docker(&["volume", "create", "data"]).ok();
    let out = d.docker(&["volume", "ls", "--format", "{{.Driver}} {{.Name}}"]);
    assert_eq!(out.ok().trim(), "local data");
    let out = d.docker(&[
        "volume",
        "inspect",
        "--format",
        "{{.Mountpoint}} {{.Labels.k}} {{.Scope}}",
        "data",
    ]);
    let s = out.ok().trim().to_string();
    let (mp, rest) = s.split_once(' ').unwrap();
    assert_eq!(rest, "v local");
    assert!(Path::new(mp).is_dir(), "{mp}");
    assert!(mp.starts_with(d.root().to_str().unwrap()), "{mp}");
    let out = d.berth(NS, &["volume", "ls"]);
    assert!(out.ok().contains("data"), "{}", out.stdout);

    let out = d.docker(&["volume", "create", "-d", "nfs", "x"]);
    assert_eq!(out.code, 1);
    assert!(out.err().contains("nfs"), "{}", out.stderr);

    // An anonymous volume gets a random name.
    let anon = d.docker(&["volume", "create"]).ok().trim().to_string();
    assert_eq!(anon.len(), 64, "{anon}");

    d.docker(&["volume", "rm", "data"]).ok();
    assert!(!Path::new(mp).exists());
    let out = d.docker(&["volume", "rm", "data"]);
    assert_eq!(out.code, 1);
    assert!(
        out.err().to_lowercase().contains("no such volume"),
        "{}",
        out.stderr
    );
    let (code, _, body) = http(&d, "DELETE", "/v1.41/volumes/data", b"");
    assert_eq!(code, 404);
    assert_eq!(message(&body), "get data: no such volume");
    let out = d.docker(&["volume", "inspect", "data"]);
    assert!(out.err().contains("No such volume: data"), "{}", out.stderr);
    let out = d.docker(&["volume", "prune", "-f"]);
    assert!(out.ok().contains(&anon), "{}", out.stdout);
    assert_eq!(d.docker(&["volume", "ls", "-q"]).ok().trim(), "");
}

#[test]
fn an_empty_docker_address_turns_the_docker_api_off() {
    let dir = tempfile::Builder::new()
        .prefix("berthd-it-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let sock = dir.path().join("berthd.sock");
    let mut child = std::process::Command::new(berth_integration::bins::berthd())
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--address")
        .arg(&sock)
        .arg("--docker-address")
        .arg("")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = self.0.wait();
        }
    }
    let guard = Kill(&mut child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while UnixStream::connect(&sock).is_err() {
        assert!(std::time::Instant::now() < deadline, "berthd did not start");
        assert!(guard.0.try_wait().unwrap().is_none(), "berthd exited");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["berthd.sock", "root", "state"]);
    drop(guard);
}
