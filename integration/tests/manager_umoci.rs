//! An image built by Debian's umoci 0.4.7: its `umoci insert` layers end right after their last
//! entry (no end-of-archive blocks, not even the last file's padding), as Go's archive/tar
//! accepts. berthd imports it, runs a container from it, pushes it to a registry and pulls it
//! back (the pull applies layers while they download) with the same digests.

use std::io::Read;
use std::path::Path;
use std::process::Command;

use berth_integration::manager::registry::Registry;
use berth_integration::manager::tasks::Cleanup;
use berth_integration::manager::{image, unique, Berthd};

const NAME: &str = "docker.io/berth/umoci:v1";

#[track_caller]
fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn umoci(args: &[&str]) {
    run(Command::new("umoci").args(args));
}

/// Builds with umoci an OCI layout at `layout` tagged `v1`: a busybox rootfs through
/// unpack/repack, then two `umoci insert`s: `/ins/f` (9 bytes, so the layer ends inside its
/// padding) and `/ins/dir` holding a 1024-byte file (ends on a block boundary), then a config.
fn build_with_umoci(work: &Path) -> std::path::PathBuf {
    let layout = work.join("layout");
    let image = format!("{}:v1", layout.display());
    let bundle = work.join("bundle");
    umoci(&["init", "--layout", layout.to_str().unwrap()]);
    umoci(&["new", "--image", &image]);
    umoci(&["unpack", "--image", &image, bundle.to_str().unwrap()]);
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy(image::BUSYBOX, rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    umoci(&["repack", "--image", &image, bundle.to_str().unwrap()]);

    let src = work.join("src");
    std::fs::create_dir_all(src.join("dir")).unwrap();
    std::fs::write(src.join("f"), "inserted\n").unwrap();
    std::fs::write(src.join("dir/big"), vec![b'x'; 1024]).unwrap();
    umoci(&[
        "insert",
        "--image",
        &image,
        src.join("f").to_str().unwrap(),
        "/ins/f",
    ]);
    umoci(&[
        "insert",
        "--image",
        &image,
        src.join("dir").to_str().unwrap(),
        "/ins/dir",
    ]);
    umoci(&["config", "--image", &image, "--config.env", "PATH=/bin"]);
    layout
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The uncompressed layers of the layout's only image, bottom first.
fn layers(layout: &Path) -> Vec<Vec<u8>> {
    let blob = |digest: &serde_json::Value| {
        layout
            .join("blobs/sha256")
            .join(image::hex(digest.as_str().unwrap()))
    };
    let index = json(&layout.join("index.json"));
    let manifest = json(&blob(&index["manifests"][0]["digest"]));
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let mut tar = Vec::new();
            flate2::read::GzDecoder::new(std::fs::File::open(blob(&l["digest"])).unwrap())
                .read_to_end(&mut tar)
                .unwrap();
            tar
        })
        .collect()
}

#[test]
fn an_image_built_by_umoci_imports_runs_and_pulls() {
    let work = tempfile::tempdir().unwrap();
    let layout = build_with_umoci(work.path());

    // What this test is about: umoci's insert layers have no end blocks.
    let tars = layers(&layout);
    assert_eq!(tars.len(), 3);
    let ends_with_end_blocks = |t: &Vec<u8>| t.len() >= 1024 && t[t.len() - 1024..] == [0; 1024];
    assert!(ends_with_end_blocks(&tars[0]), "umoci repack writes them");
    assert!(
        !ends_with_end_blocks(&tars[1]) && tars[1].len() % 512 != 0,
        "the /ins/f layer should end inside its padding ({} bytes); if umoci now \
         terminates its layers, this test needs hand-made ones",
        tars[1].len()
    );
    assert!(
        !ends_with_end_blocks(&tars[2]) && tars[2].len() % 512 == 0,
        "the /ins/dir layer should end on a block boundary without end blocks ({} bytes)",
        tars[2].len()
    );

    // An OCI archive of the layout; umoci's index names the image by tag only.
    let archive = work.path().join("umoci.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .args(["oci-layout", "index.json", "blobs"]));

    let d = Berthd::start().unwrap();
    let ns = unique("umoci");
    let _cleanup = Cleanup::new(&d, &ns);
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
                archive.to_str().unwrap(),
            ],
        )
        .json();
    assert_eq!(out[0]["name"], NAME, "{out}");
    let digest = out[0]["digest"].clone();
    let chain_id = out[0]["chain_id"].clone();
    let warnings = |d: &Berthd| d.log().matches("without end-of-archive blocks").count();
    assert_eq!(
        warnings(&d),
        2,
        "berthd should warn once per unterminated layer:\n{}",
        d.log()
    );

    let cat = |d: &Berthd, name: &str| {
        d.berth(
            &ns,
            &[
                "run",
                "--rm",
                name,
                &unique("c"),
                "sh",
                "-c",
                "cat /ins/f; cat /ins/dir/big | busybox wc -c",
            ],
        )
        .ok()
        .to_string()
    };
    assert_eq!(cat(&d, NAME), "inserted\n1024\n");

    // Push to a registry, remove, pull: the pull tees each layer into the apply.
    let reg = Registry::start().unwrap();
    let remote = format!("{}/berth/umoci:v1", reg.addr());
    d.berth(&ns, &["images", "tag", NAME, &remote]).ok();
    d.berth(&ns, &["images", "push", "--plain-http", &remote])
        .ok();
    d.berth(&ns, &["images", "rm", NAME, &remote]).ok();
    let content = d.berth(&ns, &["--format", "json", "content", "ls"]).json();
    assert_eq!(content.as_array().map(|a| a.len()), Some(0), "{content}");
    let out = d
        .berth(
            &ns,
            &[
                "--format",
                "json",
                "images",
                "pull",
                "--plain-http",
                &remote,
            ],
        )
        .json();
    assert_eq!(out["digest"], digest, "{out}");
    assert_eq!(out["layers_fetched"], 3, "{out}");
    assert_eq!(out["chain_id"], chain_id, "{out}");
    assert_eq!(cat(&d, &remote), "inserted\n1024\n");
    // Applied while downloading, not redone by the unpack after a failed stream.
    assert_eq!(warnings(&d), 4, "{}", d.log());
    assert!(!d.log().contains("streamed apply failed"), "{}", d.log());
}
