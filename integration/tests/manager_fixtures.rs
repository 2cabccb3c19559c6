//! The image fixtures themselves, checked by independent tools: skopeo must read our OCI and
//! docker-save archives and report the same digests we computed, so that a misunderstanding of
//! the formats shared by the fixtures and berthd cannot pass unnoticed.

use std::process::Command;

use berth_integration::manager::image;

fn skopeo_inspect(transport_path: &str) -> serde_json::Value {
    let o = Command::new("skopeo")
        .args(["inspect", "--raw", transport_path])
        .output()
        .expect("running skopeo");
    assert!(
        o.status.success(),
        "skopeo inspect {transport_path}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("skopeo printed JSON")
}

fn skopeo_config(transport_path: &str) -> serde_json::Value {
    let o = Command::new("skopeo")
        .args(["inspect", "--config", transport_path])
        .output()
        .expect("running skopeo");
    assert!(
        o.status.success(),
        "skopeo inspect --config {transport_path}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("skopeo printed JSON")
}

#[test]
fn skopeo_reads_our_oci_archive_with_our_digests() {
    let dir = tempfile::tempdir().unwrap();
    let img = image::busybox_multi("docker.io/berth/fixture-oci:v1").unwrap();
    let path = dir.path().join("oci.tar");
    img.write_oci_archive(&path).unwrap();
    let raw = skopeo_inspect(&format!("oci-archive:{}", path.display()));
    let layers: Vec<&str> = raw["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    let ours: Vec<&str> = img.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(layers, ours);
    assert_eq!(raw["config"]["digest"], img.config_digest());
    let cfg = skopeo_config(&format!("oci-archive:{}", path.display()));
    let diff_ids: Vec<&str> = img.layers.iter().map(|l| l.diff_id.as_str()).collect();
    assert_eq!(cfg["rootfs"]["diff_ids"], serde_json::json!(diff_ids));
}

#[test]
fn skopeo_reads_our_docker_archive_with_our_diff_ids() {
    let dir = tempfile::tempdir().unwrap();
    let img = image::busybox_multi("docker.io/berth/fixture-docker:v1").unwrap();
    let path = dir.path().join("docker.tar");
    img.write_docker_archive(&path).unwrap();
    let raw = skopeo_inspect(&format!("docker-archive:{}", path.display()));
    // skopeo presents a docker archive as a schema2 manifest over the uncompressed layer tars:
    // their digests are our diff ids.
    let layers: Vec<&str> = raw["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    let diff_ids: Vec<&str> = img.layers.iter().map(|l| l.diff_id.as_str()).collect();
    assert_eq!(layers, diff_ids);
    assert_eq!(raw["config"]["digest"], img.config_digest());
}

#[test]
fn builds_are_reproducible_and_chain_ids_follow_the_spec() {
    let a = image::busybox_multi("docker.io/berth/x:1").unwrap();
    let b = image::busybox_multi("docker.io/berth/x:1").unwrap();
    assert_eq!(a.manifest_digest(), b.manifest_digest());
    // ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)).
    let single = image::busybox_single("docker.io/berth/y:1").unwrap();
    assert_eq!(single.chain_id(), single.layers[0].diff_id);
    let c1 = image::sha256(format!("{} {}", a.layers[0].diff_id, a.layers[1].diff_id).as_bytes());
    let c2 = image::sha256(format!("{c1} {}", a.layers[2].diff_id).as_bytes());
    assert_eq!(a.chain_id(), c2);
}
