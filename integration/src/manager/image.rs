//! OCI and `docker save` archives built in Rust from busybox-static, for import tests.
//!
//! Everything is deterministic (fixed mtimes, sorted entries), so building the same image twice
//! gives the same digests. [`Image::write_oci_archive`] writes an OCI image-layout tar
//! (`oci-layout`, `index.json`, `blobs/sha256/*`), [`Image::write_docker_archive`] the legacy
//! `docker save` format (`manifest.json`, `<id>/layer.tar`, `<config>.json`, `repositories`).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest as _, Sha256};

/// Where Debian's busybox-static puts the binary.
pub const BUSYBOX: &str = "/bin/busybox";
/// Fixed mtime of every entry (2024-01-01), so builds are reproducible.
pub const MTIME: u64 = 1_704_067_200;

/// `sha256:<hex>` of some bytes.
pub fn sha256(data: &[u8]) -> String {
    let h = Sha256::digest(data);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in h {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The hex part of a `sha256:` digest.
pub fn hex(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// One entry of a layer.
#[derive(Clone, Debug)]
pub enum Entry {
    /// A directory with a mode.
    Dir(&'static str, u32),
    /// A regular file with a mode and content.
    File(&'static str, u32, Vec<u8>),
    /// A symlink `path -> target`.
    Symlink(&'static str, &'static str),
    /// A hard link `path` to the earlier entry `target`.
    Hardlink(&'static str, &'static str),
    /// A whiteout deleting `path` from lower layers (written as `dir/.wh.name`).
    Whiteout(&'static str),
    /// An opaque marker for a directory (`dir/.wh..wh..opq`).
    Opaque(&'static str),
    /// A file whose name is written into the header verbatim, bypassing the tar crate's checks
    /// (for hostile layers: `../x`, `/abs`).
    RawName(String, Vec<u8>),
}

/// A layer: its tar (uncompressed), the gzip of it, and their digests.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The uncompressed tar.
    pub tar: Vec<u8>,
    /// The gzip-compressed tar.
    pub gz: Vec<u8>,
    /// Digest of `gz` (the blob in an OCI archive).
    pub digest: String,
    /// Digest of `tar` (the diff id).
    pub diff_id: String,
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_size(size);
    h
}

impl Layer {
    /// Builds a layer from entries, in the order given.
    pub fn build(entries: &[Entry]) -> Result<Layer> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            match e {
                Entry::Dir(p, mode) => {
                    let mut h = header(tar::EntryType::Directory, *mode, 0);
                    b.append_data(&mut h, format!("{}/", p.trim_end_matches('/')), &[][..])?;
                }
                Entry::File(p, mode, data) => {
                    let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
                    b.append_data(&mut h, p, &data[..])?;
                }
                Entry::Symlink(p, target) => {
                    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                    b.append_link(&mut h, p, target)?;
                }
                Entry::Hardlink(p, target) => {
                    let mut h = header(tar::EntryType::Link, 0o644, 0);
                    b.append_link(&mut h, p, target)?;
                }
                Entry::Whiteout(p) => {
                    let (dir, name) = match p.rsplit_once('/') {
                        Some((d, n)) => (format!("{d}/"), n),
                        None => (String::new(), *p),
                    };
                    let mut h = header(tar::EntryType::Regular, 0o644, 0);
                    b.append_data(&mut h, format!("{dir}.wh.{name}"), &[][..])?;
                }
                Entry::Opaque(d) => {
                    let mut h = header(tar::EntryType::Regular, 0o644, 0);
                    b.append_data(
                        &mut h,
                        format!("{}/.wh..wh..opq", d.trim_end_matches('/')),
                        &[][..],
                    )?;
                }
                Entry::RawName(name, data) => {
                    let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
                    let raw = &mut h.as_old_mut().name;
                    raw.fill(0);
                    raw[..name.len()].copy_from_slice(name.as_bytes());
                    h.set_cksum();
                    b.append(&h, &data[..])?;
                }
            }
        }
        let tar = b.into_inner()?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar)?;
        let gz = gz.finish()?;
        Ok(Layer {
            digest: sha256(&gz),
            diff_id: sha256(&tar),
            tar,
            gz,
        })
    }
}

/// An image: layers, config, manifest, and the name it is archived under.
#[derive(Clone, Debug)]
pub struct Image {
    /// Full reference, e.g. `docker.io/berth/busybox-multi:latest`.
    pub name: String,
    /// Layers, bottom first.
    pub layers: Vec<Layer>,
    /// The config JSON.
    pub config: Vec<u8>,
    /// The OCI manifest JSON (gzip layers).
    pub manifest: Vec<u8>,
}

impl Image {
    /// Assembles config and manifest for `layers`.
    pub fn new(name: &str, layers: Vec<Layer>) -> Result<Image> {
        Image::with_config(
            name,
            layers,
            serde_json::json!({ "Cmd": ["/bin/sh"], "Env": ["PATH=/bin"] }),
        )
    }

    /// Assembles config and manifest for `layers`, with `cfg` as the config's `config`
    /// (Cmd, Env, Volumes, ...).
    pub fn with_config(name: &str, layers: Vec<Layer>, cfg: serde_json::Value) -> Result<Image> {
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": host_arch(),
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": cfg,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": layers.iter().map(|_| serde_json::json!({"created_by": "berth test"})).collect::<Vec<_>>(),
        }))?;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(&config),
                "size": config.len(),
            },
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": l.digest,
                "size": l.gz.len(),
            })).collect::<Vec<_>>(),
        }))?;
        Ok(Image {
            name: name.to_string(),
            layers,
            config,
            manifest,
        })
    }

    /// Digest of the manifest (the image's target in an OCI import).
    pub fn manifest_digest(&self) -> String {
        sha256(&self.manifest)
    }

    /// Digest of the config.
    pub fn config_digest(&self) -> String {
        sha256(&self.config)
    }

    /// The chain id of the top layer (the committed snapshot name after unpack).
    pub fn chain_id(&self) -> String {
        let mut chain = String::new();
        for l in &self.layers {
            chain = if chain.is_empty() {
                l.diff_id.clone()
            } else {
                sha256(format!("{chain} {}", l.diff_id).as_bytes())
            };
        }
        chain
    }

    /// The OCI `index.json`, naming the manifest as containerd does (full name) and as the OCI
    /// spec does (tag in `org.opencontainers.image.ref.name`).
    pub fn index_json(&self) -> Result<Vec<u8>> {
        let tag = self
            .name
            .rsplit_once(':')
            .map(|(_, t)| t)
            .unwrap_or("latest");
        Ok(serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": self.manifest_digest(),
                "size": self.manifest.len(),
                "annotations": {
                    "io.containerd.image.name": self.name,
                    "org.opencontainers.image.ref.name": tag,
                },
                "platform": { "architecture": host_arch(), "os": "linux" },
            }],
        }))?)
    }

    /// The blobs of an OCI archive: (digest, bytes), manifest first.
    pub fn oci_blobs(&self) -> Vec<(String, Vec<u8>)> {
        let mut v = vec![
            (self.manifest_digest(), self.manifest.clone()),
            (self.config_digest(), self.config.clone()),
        ];
        for l in &self.layers {
            v.push((l.digest.clone(), l.gz.clone()));
        }
        v
    }

    /// Writes an OCI image-layout archive. `edit` may change the blob list before writing
    /// (drop one, corrupt one) to make hostile archives.
    pub fn write_oci_archive_with(
        &self,
        path: &Path,
        edit: impl FnOnce(&mut Vec<(String, Vec<u8>)>),
    ) -> Result<()> {
        let mut blobs = self.oci_blobs();
        edit(&mut blobs);
        let mut files: Vec<(String, Vec<u8>)> = vec![
            (
                "oci-layout".into(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            ("index.json".into(), self.index_json()?),
        ];
        for (d, data) in blobs {
            files.push((format!("blobs/sha256/{}", hex(&d)), data));
        }
        write_tar(path, &["blobs/", "blobs/sha256/"], files)
    }

    /// Writes an OCI image-layout archive.
    pub fn write_oci_archive(&self, path: &Path) -> Result<()> {
        self.write_oci_archive_with(path, |_| {})
    }

    /// Writes a `docker save` archive (uncompressed layers, as docker writes them).
    pub fn write_docker_archive(&self, path: &Path) -> Result<()> {
        let cfg_name = format!("{}.json", hex(&self.config_digest()));
        let mut dirs = Vec::new();
        let mut files = vec![(cfg_name.clone(), self.config.clone())];
        let mut layer_paths = Vec::new();
        for l in &self.layers {
            let id = hex(&l.diff_id).to_string();
            dirs.push(format!("{id}/"));
            files.push((format!("{id}/VERSION"), b"1.0".to_vec()));
            files.push((
                format!("{id}/json"),
                format!("{{\"id\":\"{id}\"}}").into_bytes(),
            ));
            files.push((format!("{id}/layer.tar"), l.tar.clone()));
            layer_paths.push(format!("{id}/layer.tar"));
        }
        let repo_tag = docker_tag(&self.name);
        files.push((
            "manifest.json".into(),
            serde_json::to_vec(&serde_json::json!([{
                "Config": cfg_name,
                "RepoTags": [repo_tag],
                "Layers": layer_paths,
            }]))?,
        ));
        let (repo, tag) = repo_tag.rsplit_once(':').unwrap_or((&repo_tag, "latest"));
        let top = self
            .layers
            .last()
            .map(|l| hex(&l.diff_id).to_string())
            .unwrap_or_default();
        files.push((
            "repositories".into(),
            serde_json::to_vec(&serde_json::json!({ repo: { tag: top } }))?,
        ));
        let dir_refs: Vec<&str> = dirs.iter().map(String::as_str).collect();
        write_tar(path, &dir_refs, files)
    }
}

/// `docker.io/library/x:t` → `x:t`, `docker.io/a/b:t` → `a/b:t` (as docker save writes RepoTags).
pub fn docker_tag(name: &str) -> String {
    let n = name.strip_prefix("docker.io/").unwrap_or(name);
    n.strip_prefix("library/").unwrap_or(n).to_string()
}

/// The image config architecture of this host.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn write_tar(path: &Path, dirs: &[&str], files: Vec<(String, Vec<u8>)>) -> Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(f));
    for d in dirs {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, d, &[][..])?;
    }
    for (name, data) in files {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        b.append_data(&mut h, &name, &data[..])?;
    }
    b.into_inner()?.flush()?;
    Ok(())
}

fn busybox() -> Result<Vec<u8>> {
    std::fs::read(BUSYBOX)
        .with_context(|| format!("reading {BUSYBOX} (install busybox-static: hack/setup.sh does)"))
}

/// The base layer: busybox, a few applet links, /etc files, and things the next layers delete.
pub fn base_layer() -> Result<Layer> {
    Layer::build(&[
        Entry::Dir("bin", 0o755),
        Entry::File("bin/busybox", 0o755, busybox()?),
        Entry::Symlink("bin/sh", "busybox"),
        Entry::Symlink("bin/ls", "/bin/busybox"),
        Entry::Hardlink("bin/cat", "bin/busybox"),
        Entry::Dir("etc", 0o755),
        Entry::File(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
        ),
        Entry::File("etc/group", 0o644, b"root:x:0:\n".to_vec()),
        Entry::File("etc/removeme", 0o644, b"deleted by layer 2\n".to_vec()),
        Entry::Dir("opt", 0o755),
        Entry::Dir("opt/old", 0o755),
        Entry::File(
            "opt/old/a.txt",
            0o644,
            b"hidden by the opaque dir\n".to_vec(),
        ),
        Entry::Dir("tmp", 0o1777),
    ])
}

/// The second layer: a whiteout, an opaque dir with new content, a new file.
pub fn second_layer() -> Result<Layer> {
    Layer::build(&[
        Entry::Dir("etc", 0o755),
        Entry::Whiteout("etc/removeme"),
        Entry::File("etc/hostname", 0o644, b"berth\n".to_vec()),
        Entry::Dir("opt", 0o755),
        Entry::Dir("opt/old", 0o755),
        Entry::Opaque("opt/old"),
        Entry::File("opt/old/b.txt", 0o644, b"layer 2\n".to_vec()),
    ])
}

/// The third layer: overwrites a file of the base.
pub fn third_layer() -> Result<Layer> {
    Layer::build(&[
        Entry::Dir("etc", 0o755),
        Entry::File(
            "etc/passwd",
            0o600,
            b"root:x:0:0:layer3:/root:/bin/sh\n".to_vec(),
        ),
        Entry::Dir("srv", 0o750),
        Entry::File("srv/data", 0o644, b"top layer\n".to_vec()),
    ])
}

/// A one-layer busybox image.
pub fn busybox_single(name: &str) -> Result<Image> {
    Image::new(name, vec![base_layer()?])
}

/// A three-layer busybox image with a whiteout and an opaque dir.
pub fn busybox_multi(name: &str) -> Result<Image> {
    Image::new(name, vec![base_layer()?, second_layer()?, third_layer()?])
}

/// A busybox image as the Docker API suites load it: the base layer, then a layer with
/// `bin/` holding each of `applets` (paths like `bin/sleep`) as a link to busybox, then
/// `extra`.
pub fn busybox_applets(name: &str, applets: &[&'static str], extra: Vec<Entry>) -> Result<Image> {
    let mut entries = vec![Entry::Dir("bin", 0o755)];
    entries.extend(applets.iter().map(|a| Entry::Symlink(a, "busybox")));
    entries.extend(extra);
    Image::new(name, vec![base_layer()?, Layer::build(&entries)?])
}

/// An image whose one layer is just `entries` (for hostile layers).
pub fn image_with_layer(name: &str, entries: &[Entry]) -> Result<Image> {
    Image::new(name, vec![Layer::build(entries)?])
}
