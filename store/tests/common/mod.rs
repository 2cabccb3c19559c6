//! Shared fixtures: stores in temp dirs, busybox image layers and archives built by hand,
//! a mount guard.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use berth_store::digest::Digest;
use berth_store::{SnapshotterChoice, Store, StoreConfig};
use serde_json::json;

/// A store in a fresh temp dir (dropped with it).
pub struct TestStore {
    pub store: Store,
    pub dir: tempfile::TempDir,
}

impl TestStore {
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}

pub fn open_store(choice: SnapshotterChoice) -> TestStore {
    let dir = tempfile::Builder::new()
        .prefix("berth-store-test")
        .tempdir()
        .expect("tempdir");
    let mut cfg = StoreConfig::new(dir.path().join("root"));
    cfg.snapshotter = choice;
    let store = Store::open(&cfg).expect("open store");
    TestStore { store, dir }
}

pub fn reopen(dir: &Path, choice: SnapshotterChoice) -> Store {
    let mut cfg = StoreConfig::new(dir.join("root"));
    cfg.snapshotter = choice;
    Store::open(&cfg).expect("reopen store")
}

/// True if overlay mounts work here (root, a file system that takes an upper dir).
pub fn overlay_ok() -> bool {
    let d = tempfile::tempdir().expect("tempdir");
    berth_store::snapshots::overlay_supported(d.path())
}

pub enum E {
    Dir(&'static str),
    File(String, Vec<u8>, u32),
    Symlink(&'static str, String),
}

pub fn file(p: &str, data: &[u8]) -> E {
    E::File(p.to_string(), data.to_vec(), 0o644)
}

/// An uncompressed layer tar of `entries`.
pub fn layer_tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            E::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).expect("dir");
            }
            E::File(p, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, &data[..]).expect("file");
            }
            E::Symlink(p, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, t).expect("symlink");
            }
        }
    }
    b.into_inner().expect("tar")
}

/// A raw tar whose single entry name is written as given (tar::Builder refuses `..`).
pub fn raw_tar_with_name(name: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    {
        let gnu = h.as_gnu_mut().expect("gnu");
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
    }
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(0);
    h.set_cksum();
    let mut out = Vec::new();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

pub fn busybox_bytes() -> Vec<u8> {
    std::fs::read("/bin/busybox").expect("busybox-static installed at /bin/busybox")
}

/// Layer 1: busybox, a few applets, /etc files, a dir for the opaque test.
pub fn base_layer() -> Vec<u8> {
    layer_tar(&[
        E::Dir("bin/"),
        E::File("bin/busybox".into(), busybox_bytes(), 0o755),
        E::Symlink("bin/sh", "busybox".into()),
        E::Symlink("bin/ls", "busybox".into()),
        E::Dir("etc/"),
        file("etc/hostname", b"berth\n"),
        E::Dir("etc/data/"),
        file("etc/data/a", b"a"),
        file("etc/data/b", b"b"),
    ])
}

/// Layer 2: deletes etc/hostname, makes etc/data opaque with only `c`, adds hello.txt.
pub fn top_layer() -> Vec<u8> {
    layer_tar(&[
        E::Dir("etc/"),
        file("etc/.wh.hostname", b""),
        E::Dir("etc/data/"),
        file("etc/data/.wh..wh..opq", b""),
        file("etc/data/c", b"c"),
        file("hello.txt", b"hello from layer 2\n"),
    ])
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// An image built by hand: blobs by digest plus the manifest descriptor.
pub struct BuiltImage {
    pub blobs: BTreeMap<String, Vec<u8>>,
    pub manifest: serde_json::Value,
    pub manifest_digest: Digest,
    pub manifest_bytes: Vec<u8>,
    pub config_bytes: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
}

pub fn config_json(diff_ids: &[Digest]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": host_arch(),
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
    }))
    .expect("json")
}

/// An OCI image: layers stored gzip'd when `gz`.
pub fn build_oci(layers: &[Vec<u8>], gz: bool) -> BuiltImage {
    let mut blobs = BTreeMap::new();
    let diff_ids: Vec<Digest> = layers.iter().map(|l| Digest::of(l)).collect();
    let cfg = config_json(&diff_ids);
    let cfg_d = Digest::of(&cfg);
    blobs.insert(cfg_d.to_string(), cfg.clone());
    let mut ldescs = Vec::new();
    for l in layers {
        let (data, mt) = if gz {
            (gzip(l), "application/vnd.oci.image.layer.v1.tar+gzip")
        } else {
            (l.clone(), "application/vnd.oci.image.layer.v1.tar")
        };
        let d = Digest::of(&data);
        ldescs.push(json!({"mediaType": mt, "digest": d.to_string(), "size": data.len()}));
        blobs.insert(d.to_string(), data);
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_d.to_string(), "size": cfg.len()},
        "layers": ldescs,
    });
    let mb = serde_json::to_vec(&manifest).expect("json");
    let md = Digest::of(&mb);
    blobs.insert(md.to_string(), mb.clone());
    BuiltImage {
        blobs,
        manifest,
        manifest_digest: md,
        manifest_bytes: mb,
        config_bytes: cfg,
        layers: layers.to_vec(),
    }
}

fn tar_add(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, data).expect("tar add");
}

/// An OCI image-layout archive; `skip` blobs are left out; `media_type` overrides the index
/// entry's media type.
pub fn oci_archive(
    img: &BuiltImage,
    name: &str,
    skip: &[&str],
    media_type: Option<&str>,
) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    tar_add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    for (d, data) in &img.blobs {
        if skip.contains(&d.as_str()) {
            continue;
        }
        tar_add(&mut b, &format!("blobs/sha256/{}", &d[7..]), data);
    }
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": media_type.unwrap_or("application/vnd.oci.image.manifest.v1+json"),
            "digest": img.manifest_digest.to_string(),
            "size": img.manifest_bytes.len(),
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": "latest",
            }
        }]
    });
    tar_add(
        &mut b,
        "index.json",
        &serde_json::to_vec(&index).expect("json"),
    );
    b.into_inner().expect("tar")
}

/// A `docker save` archive of uncompressed `layers` tagged `tag`.
pub fn docker_archive(layers: &[Vec<u8>], tag: &str) -> Vec<u8> {
    let diff_ids: Vec<Digest> = layers.iter().map(|l| Digest::of(l)).collect();
    let cfg = config_json(&diff_ids);
    let cfg_name = format!("{}.json", Digest::of(&cfg).hex());
    let mut b = tar::Builder::new(Vec::new());
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let dir = format!("{:064x}", i + 1);
        tar_add(&mut b, &format!("{dir}/VERSION"), b"1.0");
        tar_add(&mut b, &format!("{dir}/layer.tar"), l);
        names.push(format!("{dir}/layer.tar"));
    }
    tar_add(&mut b, &cfg_name, &cfg);
    let m = json!([{"Config": cfg_name, "RepoTags": [tag], "Layers": names}]);
    tar_add(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&m).expect("json"),
    );
    b.into_inner().expect("tar")
}

/// Mounts `mounts` (one overlay or bind) at a temp dir; unmounts on drop.
pub struct Mounted {
    pub target: tempfile::TempDir,
}

impl Mounted {
    pub fn new(mounts: &[berth_store::snapshots::Mount]) -> Mounted {
        assert_eq!(mounts.len(), 1, "one mount expected: {mounts:?}");
        let m = &mounts[0];
        let target = tempfile::tempdir().expect("tempdir");
        let mut flags = nix::mount::MsFlags::empty();
        let mut data = Vec::new();
        for o in &m.options {
            match o.as_str() {
                "ro" => flags |= nix::mount::MsFlags::MS_RDONLY,
                "rw" => {}
                "rbind" => flags |= nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC,
                other => data.push(other.to_string()),
            }
        }
        let data = data.join(",");
        nix::mount::mount(
            Some(m.source.as_str()),
            target.path(),
            Some(m.kind.as_str()),
            flags,
            if data.is_empty() {
                None
            } else {
                Some(data.as_str())
            },
        )
        .unwrap_or_else(|e| panic!("mount {m:?}: {e}"));
        Mounted { target }
    }

    pub fn path(&self) -> &Path {
        self.target.path()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.target.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Sorted names in a directory.
pub fn ls(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", p.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
