//! berthd pulling from a misbehaving registry: a small HTTP server in the test answers each
//! request from a table (404, 401, 500, garbage JSON, wrong digest, short blob, unsupported
//! media type, missing platform), and berth must fail with a clear error and register nothing.
//! The same server cuts a layer mid-way to check that a second pull resumes it with an HTTP
//! Range request from where the first stopped. (Faults within one pull, and its retries, are
//! in `manager_faults.rs`.)

use berth_integration::manager::fake_registry::{
    assert_others_fetched_at_most_once, biggest_layer, range_reply, serving, Fake, Reply,
    OCI_INDEX, OCI_MANIFEST,
};
use berth_integration::manager::{image, unique, Berthd};

/// berthd retrying a failed blob download after 50 ms instead of Docker's 5 s.
const FAST_RETRIES: &[(&str, &str)] = &[("BERTH_PULL_RETRY_DELAY", "0.05")];

/// Pulls `reference` expecting failure; returns stderr. Checks nothing was registered.
fn pull_fails(d: &Berthd, ns: &str, reference: &str, extra: &[&str]) -> String {
    let mut args = vec!["images", "pull", "--plain-http"];
    args.extend_from_slice(extra);
    args.push(reference);
    let e = d.berth(ns, &args).err().to_string();
    let ls = d.berth(ns, &["images", "ls", "-q"]).ok().to_string();
    assert!(
        ls.trim().is_empty(),
        "an image was registered after a failed pull: {ls}"
    );
    e
}

#[test]
fn bad_registry_answers_give_clear_errors_and_store_no_image() {
    let d = Berthd::start_with_env(FAST_RETRIES).unwrap();
    let ns = unique("badreg");
    let img = image::busybox_single("x/y:z").unwrap();
    let mut bad_layer = img.clone();
    bad_layer.layers[0].gz[20] ^= 0xff;
    let other_arch = if image::host_arch() == "s390x" {
        "ppc64le"
    } else {
        "s390x"
    };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": img.manifest_digest(),
            "size": img.manifest.len(),
            "platform": {"os": "linux", "architecture": other_arch},
        }],
    }))
    .unwrap();
    let mut weird: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
    weird["layers"][0]["mediaType"] = "application/x-berth-unknown".into();
    let weird = serde_json::to_vec(&weird).unwrap();
    let cut_len = img.layers[0].gz.len() / 2;
    let short_layer = img.layers[0].gz[..cut_len].to_vec();
    let layer_digest = img.layers[0].digest.clone();

    let fake = Fake::start(serving(&img, move |method, path, _, _| {
        let repo = path.strip_prefix("/v2/")?.split('/').next()?;
        let manifest = path.contains("/manifests/");
        let blob = path.contains("/blobs/");
        match repo {
            "missing" if manifest => Some(Reply::new(
                404,
                "application/json",
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
                    .to_vec(),
            )),
            "broken" if manifest => {
                Some(Reply::new(500, "text/plain", b"database on fire".to_vec()))
            }
            "garbage" if manifest => Some(Reply::new(200, OCI_MANIFEST, b"{not json".to_vec())),
            "mismatch" if manifest => Some(Reply::new(200, OCI_MANIFEST, weird.clone())),
            "weird" if manifest => Some(Reply::new(200, OCI_MANIFEST, weird.clone())),
            "noplatform" if manifest && !path.contains("sha256:") => {
                Some(Reply::new(200, OCI_INDEX, index.clone()))
            }
            "locked" => {
                let mut r = Reply::new(401, "application/json", b"{}".to_vec());
                r.headers
                    .push(("WWW-Authenticate".into(), r#"Basic realm="x""#.into()));
                Some(r)
            }
            "short" if blob && path.ends_with(&layer_digest) && method == "GET" => Some(
                Reply::new(200, "application/octet-stream", short_layer.clone()),
            ),
            "badlayer" if blob && path.ends_with(&layer_digest) => Some(Reply::new(
                200,
                "application/octet-stream",
                bad_layer.layers[0].gz.clone(),
            )),
            _ => None,
        }
    }));

    let e = pull_fails(&d, &ns, &fake.reference("missing:v1"), &[]);
    assert!(
        e.contains("not found") && e.contains("MANIFEST_UNKNOWN"),
        "{e}"
    );
    let e = pull_fails(&d, &ns, &fake.reference("broken:v1"), &[]);
    assert!(
        e.contains("HTTP 500") && e.contains("database on fire"),
        "{e}"
    );
    let e = pull_fails(&d, &ns, &fake.reference("garbage:v1"), &[]);
    assert!(e.contains("not valid JSON"), "{e}");
    let e = pull_fails(
        &d,
        &ns,
        &fake.reference(&format!("mismatch@{}", img.manifest_digest())),
        &[],
    );
    assert!(e.contains("digest mismatch"), "{e}");
    let e = pull_fails(&d, &ns, &fake.reference("weird:v1"), &[]);
    assert!(
        e.contains("unsupported layer media type application/x-berth-unknown"),
        "{e}"
    );
    let e = pull_fails(&d, &ns, &fake.reference("noplatform:v1"), &[]);
    assert!(
        e.contains("no manifest for platform") && e.contains(&format!("linux/{other_arch}")),
        "{e}"
    );
    let e = pull_fails(
        &d,
        &ns,
        &fake.reference("locked:v1"),
        &["--config", "/nonexistent/c.json"],
    );
    assert!(
        e.contains("unauthorized") && e.contains("requires credentials"),
        "{e}"
    );
    let e = pull_fails(&d, &ns, &fake.reference("short:v1"), &[]);
    assert!(e.contains("cut short"), "{e}");
    let e = pull_fails(&d, &ns, &fake.reference("badlayer:v1"), &[]);
    assert!(e.contains("does not match its descriptor"), "{e}");
    // No snapshot was committed by any of these.
    let snaps = d
        .berth(&ns, &["--format", "json", "snapshots", "ls"])
        .json();
    assert_eq!(snaps.as_array().map(|a| a.len()), Some(0), "{snaps}");
    // The good repository still pulls (the failures left nothing in the way).
    d.berth(
        &ns,
        &["images", "pull", "--plain-http", &fake.reference("good:v1")],
    )
    .ok();
}

#[test]
fn interrupted_pull_resumes_with_a_range_request() {
    // One try per pull: this is about the next pull resuming what the last one left.
    let d = Berthd::start_with_env(&[("BERTH_PULL_ATTEMPTS", "1")]).unwrap();
    let ns = unique("resume");
    let img = image::busybox_multi("x/y:z").unwrap();
    // The biggest layer is cut after half its bytes on the first GET.
    let big = biggest_layer(&img);
    let cut_at = big.gz.len() / 2;
    let big2 = big.clone();
    let fake = Fake::start(serving(&img, move |method, path, headers, n| {
        if method != "GET" || !path.ends_with(&big2.digest) {
            return None;
        }
        if n == 1 {
            let mut r = Reply::new(200, "application/octet-stream", big2.gz.clone());
            r.cut = Some(cut_at);
            return Some(r);
        }
        range_reply(&big2.gz, headers)
    }));
    let reference = fake.reference("resume/img:v1");
    let e = pull_fails(&d, &ns, &reference, &[]);
    assert!(e.contains("interrupted") || e.contains("cut short"), "{e}");

    let out = d
        .berth(
            &ns,
            &[
                "--format",
                "json",
                "images",
                "pull",
                "--plain-http",
                &reference,
            ],
        )
        .json();
    assert_eq!(out["digest"], img.manifest_digest(), "{out}");
    assert_eq!(out["chain_id"], img.chain_id(), "{out}");
    let gets: Vec<(String, Option<String>)> = fake
        .requests()
        .into_iter()
        .filter(|(l, _)| l.ends_with(&big.digest))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].1, None, "{gets:?}");
    assert_eq!(
        gets[1].1.as_deref(),
        Some(format!("bytes={cut_at}-").as_str()),
        "{gets:?}"
    );
    // The other layers were complete after the first pull: fetched only once, or never
    // again.
    assert_others_fetched_at_most_once(&fake, &img, &big);
}

#[test]
fn a_pull_killed_with_berthd_resumes_after_the_restart() {
    let mut d = Berthd::start_with_env(FAST_RETRIES).unwrap();
    let ns = unique("killpull");
    let img = image::busybox_multi("x/y:z").unwrap();
    let big = biggest_layer(&img);
    let cut_at = big.gz.len() / 2;
    let big2 = big.clone();
    // The biggest layer: half of it, then the registry stalls until berthd is gone.
    let fake = Fake::start(serving(&img, move |method, path, headers, n| {
        if method != "GET" || !path.ends_with(&big2.digest) {
            return None;
        }
        if n == 1 {
            let mut r = Reply::new(200, "application/octet-stream", big2.gz.clone());
            r.cut = Some(cut_at);
            r.stall = Some(std::time::Duration::from_secs(20));
            return Some(r);
        }
        range_reply(&big2.gz, headers)
            .or_else(|| Some(Reply::new(200, "application/octet-stream", big2.gz.clone())))
    }));
    let reference = fake.reference("kill/img:v1");
    let mut pull = d
        .berth_command(Some(&ns), &["images", "pull", "--plain-http", &reference])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !fake
        .requests()
        .iter()
        .any(|(r, _)| r.ends_with(&big.digest))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the big layer was never asked for"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Let berthd write what arrived, then kill it mid-layer.
    std::thread::sleep(std::time::Duration::from_millis(700));
    d.crash();
    let _ = pull.wait();
    d.restart().unwrap();

    let out = d
        .berth(
            &ns,
            &[
                "--format",
                "json",
                "images",
                "pull",
                "--plain-http",
                &reference,
            ],
        )
        .json();
    assert_eq!(out["digest"], img.manifest_digest(), "{out}");
    assert_eq!(out["chain_id"], img.chain_id(), "{out}");
    let gets: Vec<Option<String>> = fake
        .requests()
        .into_iter()
        .filter(|(l, _)| l.starts_with("GET") && l.ends_with(&big.digest))
        .map(|(_, range)| range)
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    let from: usize = gets[1]
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse().ok())
        .unwrap_or(0);
    assert!(
        from > 0 && from <= cut_at,
        "the second GET should resume where the first stopped: {gets:?}"
    );
    assert_others_fetched_at_most_once(&fake, &img, &big);
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            &reference,
            &unique("c"),
            "cat",
            "/etc/passwd",
        ],
    );
    assert_eq!(out.ok(), "root:x:0:0:layer3:/root:/bin/sh\n");
}
