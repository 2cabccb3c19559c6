//! Bad input to berthd: every case gets a clear error, leaves no half blob visible and nothing
//! outside the root touched, and the next good import succeeds.

use std::time::{Duration, Instant};

use berth_integration::manager::image::Entry;
use berth_integration::manager::{image, unique, Berthd};

/// Imports `path` into `ns` and returns berth's stderr, asserting it failed.
fn import_fails(d: &Berthd, ns: &str, path: &std::path::Path) -> String {
    d.berth(ns, &["images", "import", path.to_str().unwrap()])
        .err()
        .to_string()
}

/// Every blob berth lists must read back with its own digest (no half blob visible), there
/// must be no image, and a good import must then succeed.
fn assert_consistent_then_import_works(d: &Berthd, ns: &str) {
    let content = d.berth(ns, &["--format", "json", "content", "ls"]).json();
    for c in content.as_array().unwrap() {
        let dg = c["digest"].as_str().unwrap();
        let o = std::process::Command::new(berth_integration::bins::berth())
            .args([
                "--address",
                d.socket().to_str().unwrap(),
                "-n",
                ns,
                "content",
                "get",
                dg,
            ])
            .output()
            .unwrap();
        assert!(o.status.success());
        assert_eq!(
            image::sha256(&o.stdout),
            dg,
            "blob {dg} does not match its digest"
        );
        assert_eq!(o.stdout.len() as i64, c["size"].as_i64().unwrap());
    }
    assert_eq!(
        d.berth(ns, &["images", "ls", "-q"]).ok().trim(),
        "",
        "no image may be registered"
    );
    let work = tempfile::tempdir().unwrap();
    let good = image::busybox_multi("docker.io/berth/good:v1").unwrap();
    let p = work.path().join("good.tar");
    good.write_oci_archive(&p).unwrap();
    let out = d
        .berth(
            ns,
            &["--format", "json", "images", "import", p.to_str().unwrap()],
        )
        .json();
    assert_eq!(out[0]["digest"], good.manifest_digest());
    assert_eq!(out[0]["chain_id"], good.chain_id());
}

#[test]
fn truncated_archive() {
    let d = Berthd::start().unwrap();
    let ns = unique("trunc");
    let work = tempfile::tempdir().unwrap();
    let img = image::busybox_multi("docker.io/berth/trunc:v1").unwrap();
    let p = work.path().join("t.tar");
    img.write_oci_archive(&p).unwrap();
    let data = std::fs::read(&p).unwrap();
    std::fs::write(&p, &data[..data.len() / 2 + 100]).unwrap();
    let err = import_fails(&d, &ns, &p);
    assert!(
        err.contains("InvalidArgument")
            || err.to_lowercase().contains("truncat")
            || err.contains("EOF"),
        "{err}"
    );
    assert_consistent_then_import_works(&d, &ns);
}

#[test]
fn corrupt_archive() {
    let d = Berthd::start().unwrap();
    let ns = unique("corrupt");
    let work = tempfile::tempdir().unwrap();
    let p = work.path().join("c.tar");
    let junk: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&p, junk).unwrap();
    let err = import_fails(&d, &ns, &p);
    assert!(err.contains("InvalidArgument"), "{err}");
    assert_consistent_then_import_works(&d, &ns);
}

#[test]
fn blob_whose_digest_does_not_match() {
    let d = Berthd::start().unwrap();
    let ns = unique("mismatch");
    let work = tempfile::tempdir().unwrap();
    let img = image::busybox_multi("docker.io/berth/mismatch:v1").unwrap();
    let bad_layer = img.layers[1].digest.clone();
    let p = work.path().join("m.tar");
    img.write_oci_archive_with(&p, |blobs| {
        for (d, data) in blobs.iter_mut() {
            if *d == bad_layer {
                let last = data.len() - 1;
                data[last] ^= 0xff;
            }
        }
    })
    .unwrap();
    let err = import_fails(&d, &ns, &p);
    assert!(
        err.contains(image::hex(&bad_layer)),
        "error must name the blob: {err}"
    );
    assert!(err.to_lowercase().contains("digest"), "{err}");
    assert_consistent_then_import_works(&d, &ns);
}

#[test]
fn manifest_naming_a_missing_blob() {
    let d = Berthd::start().unwrap();
    let ns = unique("missing");
    let work = tempfile::tempdir().unwrap();
    let img = image::busybox_multi("docker.io/berth/missing:v1").unwrap();
    let gone = img.layers[2].digest.clone();
    let p = work.path().join("x.tar");
    img.write_oci_archive_with(&p, |blobs| blobs.retain(|(d, _)| *d != gone))
        .unwrap();
    let err = import_fails(&d, &ns, &p);
    assert!(
        err.contains(image::hex(&gone)),
        "error must name the missing blob: {err}"
    );
    assert_consistent_then_import_works(&d, &ns);
}

#[test]
fn layer_with_path_traversal() {
    let d = Berthd::start().unwrap();
    let ns = unique("traversal");
    let work = tempfile::tempdir().unwrap();
    let target = format!("/tmp/{}", unique("berth-escape"));
    let name = format!("../../../../../../../../..{target}");
    let img = image::image_with_layer(
        "docker.io/berth/traversal:v1",
        &[
            Entry::Dir("etc", 0o755),
            Entry::RawName(name.clone(), b"pwned\n".to_vec()),
        ],
    )
    .unwrap();
    let p = work.path().join("t.tar");
    img.write_oci_archive(&p).unwrap();
    let err = import_fails(&d, &ns, &p);
    assert!(err.contains("escape") || err.contains(".."), "{err}");
    assert!(
        !std::path::Path::new(&target).exists(),
        "{target} was written outside the root"
    );
    assert_consistent_then_import_works(&d, &ns);
}

#[test]
fn layer_with_absolute_symlink_escape() {
    let d = Berthd::start().unwrap();
    let ns = unique("symlink");
    let work = tempfile::tempdir().unwrap();
    // A real host directory the symlink points at: nothing may land in it.
    let host_dir = tempfile::Builder::new()
        .prefix("berth-host-")
        .tempdir_in("/tmp")
        .unwrap();
    let link_target: &'static str =
        Box::leak(host_dir.path().display().to_string().into_boxed_str());
    let img = image::image_with_layer(
        "docker.io/berth/symlink:v1",
        &[
            Entry::Symlink("evil", link_target),
            Entry::File("evil/pwned", 0o644, b"pwned\n".to_vec()),
        ],
    )
    .unwrap();
    let p = work.path().join("s.tar");
    img.write_oci_archive(&p).unwrap();
    // Either refused or confined (the file lands inside the snapshot under the same path):
    // never in the host directory.
    let out = d.berth(&ns, &["images", "import", p.to_str().unwrap()]);
    assert!(
        std::fs::read_dir(host_dir.path()).unwrap().next().is_none(),
        "the layer wrote through the symlink into {}: {out:?}",
        host_dir.path().display()
    );
    if out.code == 0 {
        d.berth(&ns, &["images", "rm", "docker.io/berth/symlink:v1"])
            .ok();
    }
    assert_consistent_then_import_works(&d, &ns);
}

#[test]
fn unknown_and_invalid_namespaces() {
    let d = Berthd::start().unwrap();
    // Unknown: reads see nothing (as containerd), removing it is NotFound.
    let ghost = unique("ghost");
    assert_eq!(d.berth(&ghost, &["images", "ls", "-q"]).ok().trim(), "");
    let err = d
        .berth("default", &["namespaces", "rm", &ghost])
        .err()
        .to_string();
    assert!(err.contains(&ghost) && err.contains("NotFound"), "{err}");
    // Invalid names are refused by the CLI, and by the daemon for clients that do not check.
    let err = d.berth("bad/ns", &["images", "ls"]).err().to_string();
    assert!(
        err.contains("identifier") && err.contains("bad/ns"),
        "{err}"
    );
    let err = d.ctr("-bad", &["images", "ls"]).err().to_string();
    assert!(err.contains("namespace"), "{err}");
    let out = d.ctr("ok", &["namespaces", "create", "no..dots"]);
    assert!(out.err().contains("must match"), "{out:?}");
}

#[test]
fn client_disconnecting_mid_write_resumes_cleanly() {
    use berth_proto::containerd::services::content::v1 as pb;
    use berth_proto::containerd::services::content::v1::content_client::ContentClient;
    use tokio_stream::StreamExt;

    let d = Berthd::start().unwrap();
    let ns = unique("disc");
    let blob: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let dg = image::sha256(&blob);
    let r#ref = unique("ref");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ch = berth_manager::client::connect(d.socket()).await.unwrap();
        let ic = berth_manager::client::NamespaceInterceptor::new(&ns, None).unwrap();
        let mut c = ContentClient::with_interceptor(ch.clone(), ic.clone());
        // Write the first MiB, then drop the stream (the client "dies").
        {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let mut resp = c
                .write(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            tx.send(pb::WriteContentRequest {
                action: pb::WriteAction::Write as i32,
                r#ref: r#ref.clone(),
                total: blob.len() as i64,
                expected: dg.clone(),
                offset: 0,
                data: blob[..1 << 20].to_vec(),
                labels: Default::default(),
            })
            .await
            .unwrap();
            let m = resp.next().await.unwrap().unwrap();
            assert_eq!(m.offset, 1 << 20);
            drop(tx);
            drop(resp);
        }
        // The ingest is there with its offset; no blob is visible.
        let deadline = Instant::now() + Duration::from_secs(5);
        let st = loop {
            match c
                .status(pb::StatusRequest {
                    r#ref: r#ref.clone(),
                })
                .await
            {
                Ok(s) => break s.into_inner().status.unwrap(),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("status of {ref}: {e}", ref = r#ref),
            }
        };
        assert_eq!(st.offset, 1 << 20);
        assert_eq!(st.total, blob.len() as i64);
        assert!(
            c.info(pb::InfoRequest { digest: dg.clone() })
                .await
                .is_err(),
            "half blob visible"
        );
        // Resume: STAT says where to continue; write the rest and commit.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut resp = c
            .write(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        tx.send(pb::WriteContentRequest {
            action: pb::WriteAction::Stat as i32,
            r#ref: r#ref.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        let m = resp.next().await.unwrap().unwrap();
        let off = m.offset as usize;
        assert_eq!(off, 1 << 20);
        tx.send(pb::WriteContentRequest {
            action: pb::WriteAction::Commit as i32,
            r#ref: r#ref.clone(),
            total: blob.len() as i64,
            expected: dg.clone(),
            offset: off as i64,
            data: blob[off..].to_vec(),
            labels: Default::default(),
        })
        .await
        .unwrap();
        let m = resp.next().await.unwrap().unwrap();
        assert_eq!(m.digest, dg);
        let info = c
            .info(pb::InfoRequest { digest: dg.clone() })
            .await
            .unwrap()
            .into_inner()
            .info
            .unwrap();
        assert_eq!(info.size, blob.len() as i64);
        // And the ingest is gone.
        assert!(c
            .status(pb::StatusRequest {
                r#ref: r#ref.clone()
            })
            .await
            .is_err());
    });
}

#[test]
fn berthd_killed_mid_import_then_restarted() {
    let mut d = Berthd::start().unwrap();
    let ns = unique("crash");
    let work = tempfile::tempdir().unwrap();
    // A big, incompressible layer so the import is still running when the daemon dies.
    let mut state = 0x9e3779b97f4a7c15u64;
    let big: Vec<u8> = (0..96 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let img = image::Image::new(
        "docker.io/berth/crash:v1",
        vec![
            image::base_layer().unwrap(),
            image::Layer::build(&[
                Entry::Dir("data", 0o755),
                Entry::File("data/big", 0o644, big),
            ])
            .unwrap(),
        ],
    )
    .unwrap();
    let p = work.path().join("big.tar");
    img.write_oci_archive(&p).unwrap();
    let mut child = std::process::Command::new(berth_integration::bins::berth())
        .args([
            "--address",
            d.socket().to_str().unwrap(),
            "-n",
            &ns,
            "images",
            "import",
            p.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the daemon is writing an ingest, then kill it.
    let ingest = d.root().join("io.containerd.content.v1.content/ingest");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::fs::read_dir(&ingest)
            .map(|mut r| r.next().is_some())
            .unwrap_or(false)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    d.crash();
    let st = child.wait().unwrap();
    assert!(
        !st.success(),
        "the import cannot have succeeded against a killed daemon"
    );
    d.restart().unwrap();
    // Consistent: no image, only whole blobs, no temporary lease left.
    let leases = d.berth(&ns, &["--format", "json", "leases", "ls"]).json();
    assert_eq!(
        leases,
        serde_json::json!([]),
        "temporary leases must be gone after restart"
    );
    assert_consistent_then_import_works(&d, &ns);
    let out = d
        .berth(
            &ns,
            &["--format", "json", "images", "import", p.to_str().unwrap()],
        )
        .json();
    assert_eq!(out[0]["digest"], img.manifest_digest());
}
