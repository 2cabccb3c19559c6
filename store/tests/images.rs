//! Image import (OCI and docker-save archives built from busybox), unpack, export, GC, bad
//! input and crash recovery.

mod common;

use std::fs;
use std::path::Path;

use berth_store::digest::Digest;
use berth_store::images::{ExportOptions, ImportOptions};
use berth_store::metadata::{Labels, MetaRead, SnapshotKind};
use berth_store::oci::chain_ids;
use berth_store::{Ctx, ErrorKind, SnapshotterChoice, Store};
use common::*;

fn unpack_opts() -> ImportOptions {
    ImportOptions {
        unpack: true,
        ..ImportOptions::default()
    }
}

fn choices() -> Vec<SnapshotterChoice> {
    let mut v = vec![SnapshotterChoice::Native];
    if overlay_ok() {
        v.push(SnapshotterChoice::Overlay);
    } else {
        eprintln!("SKIP overlay variant: overlay mounts do not work here");
    }
    v
}

/// Checks the merged rootfs of a two-layer busybox image at `root`.
fn check_rootfs(root: &Path) {
    assert_eq!(ls(root), ["bin", "etc", "hello.txt"]);
    assert_eq!(fs::read(root.join("bin/busybox")).unwrap(), busybox_bytes());
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap().to_str(),
        Some("busybox")
    );
    assert_eq!(ls(&root.join("etc")), ["data"], "etc/hostname whited out");
    assert_eq!(
        ls(&root.join("etc/data")),
        ["c"],
        "opaque dir hides a and b"
    );
    assert_eq!(
        fs::read(root.join("hello.txt")).unwrap(),
        b"hello from layer 2\n"
    );
    // The busybox in the snapshot runs.
    let out = std::process::Command::new(root.join("bin/busybox"))
        .arg("echo")
        .arg("ok")
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"ok\n");
}

/// Mounts a view of `chain` and checks the rootfs.
fn check_view(store: &Store, ctx: &Ctx, chain: &Digest) {
    let key = format!("check-{}", fastrand_key());
    let mounts = store
        .snapshotter()
        .view(ctx, &key, Some(chain.as_str()), Labels::new())
        .unwrap();
    if mounts[0].kind == "bind" && store.snapshotter().name() == "native" {
        check_rootfs(Path::new(&mounts[0].source));
    } else {
        let m = Mounted::new(&mounts);
        check_rootfs(m.path());
    }
    store.snapshotter().remove(ctx, &key).unwrap();
}

fn fastrand_key() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[test]
fn oci_archive_imports_unpacks_and_exports_to_the_same_digests() {
    for choice in choices() {
        let t = open_store(choice);
        let s = &t.store;
        let ctx = Ctx::new("default");
        let img = build_oci(&[base_layer(), top_layer()], true);
        let archive = oci_archive(&img, "docker.io/library/bb:multi", &[], None);
        let imported = s.import(&ctx, &archive[..], &unpack_opts()).unwrap();
        assert_eq!(imported.len(), 1);
        assert_eq!(imported[0].name, "docker.io/library/bb:multi");
        assert_eq!(imported[0].target.digest, img.manifest_digest);
        assert!(imported[0].target.annotations.is_empty());

        // Every blob is in the namespace; GC labels on the manifest, uncompressed on layers.
        assert_eq!(s.content_list(&ctx, &[]).unwrap().len(), img.blobs.len());
        let m = s.content_info(&ctx, &img.manifest_digest).unwrap();
        assert!(m.labels.contains_key("containerd.io/gc.ref.content.config"));
        assert!(m.labels.contains_key("containerd.io/gc.ref.content.l.1"));
        let diff_ids: Vec<Digest> = img.layers.iter().map(|l| Digest::of(l)).collect();
        let chain = chain_ids(&diff_ids);
        let layer0 = Digest::parse(img.manifest["layers"][0]["digest"].as_str().unwrap()).unwrap();
        assert_eq!(
            s.content_info(&ctx, &layer0)
                .unwrap()
                .labels
                .get("containerd.io/uncompressed"),
            Some(&diff_ids[0].to_string())
        );
        let cfg = s
            .content_info(&ctx, &Digest::of(&img.config_bytes))
            .unwrap();
        let sn = s.snapshotter().name();
        assert_eq!(
            cfg.labels
                .get(&format!("containerd.io/gc.ref.snapshot.{sn}")),
            Some(&chain[1].to_string())
        );

        // Snapshots named by chain ID, committed, parented; no extract-* left.
        let snaps = s.snapshotter().list(&ctx, &[]).unwrap();
        let names: Vec<&str> = snaps.iter().map(|i| i.name.as_str()).collect();
        let mut want = vec![chain[0].as_str(), chain[1].as_str()];
        want.sort();
        assert_eq!(names, want, "{choice:?}");
        let top = s.snapshotter().stat(&ctx, chain[1].as_str()).unwrap();
        assert_eq!(top.kind, SnapshotKind::Committed);
        assert_eq!(top.parent.as_deref(), Some(chain[0].as_str()));
        check_view(s, &ctx, &chain[1]);

        // Unpacking again applies nothing.
        let r = s.unpack(&ctx, "docker.io/library/bb:multi", None).unwrap();
        assert_eq!(
            (r.layers, r.applied, r.chain_id.clone()),
            (2, 0, chain[1].clone())
        );
        assert!(
            s.lease_list(&ctx, &[]).unwrap().is_empty(),
            "temporary leases are gone"
        );

        // Export, then re-import into a fresh store: same digests.
        let mut out = Vec::new();
        s.export(
            &ctx,
            &["docker.io/library/bb:multi".into()],
            &mut out,
            &ExportOptions::default(),
        )
        .unwrap();
        let t2 = open_store(choice);
        let again = t2
            .store
            .import(&ctx, &out[..], &ImportOptions::default())
            .unwrap();
        assert_eq!(again[0].name, "docker.io/library/bb:multi");
        assert_eq!(again[0].target.digest, img.manifest_digest);
        let mut d1: Vec<Digest> = s
            .content_list(&ctx, &[])
            .unwrap()
            .into_iter()
            .map(|c| c.digest)
            .collect();
        let mut d2: Vec<Digest> = t2
            .store
            .content_list(&ctx, &[])
            .unwrap()
            .into_iter()
            .map(|c| c.digest)
            .collect();
        d1.sort();
        d2.sort();
        assert_eq!(d1, d2);
        // Re-import into the same store updates the record.
        let again = s.import(&ctx, &out[..], &ImportOptions::default()).unwrap();
        assert_eq!(again[0].target.digest, img.manifest_digest);
        assert_eq!(s.image_list(&ctx, &[]).unwrap().len(), 1);
    }
}

#[test]
fn docker_save_archive_imports_as_schema2_and_unpacks() {
    for choice in choices() {
        let t = open_store(choice);
        let s = &t.store;
        let ctx = Ctx::new("docker-ns");
        let layers = [base_layer(), top_layer()];
        let archive = docker_archive(&layers, "bb:docker");
        let imported = s.import(&ctx, &archive[..], &unpack_opts()).unwrap();
        assert_eq!(imported.len(), 1);
        let img = &imported[0];
        assert_eq!(img.name, "docker.io/library/bb:docker");
        assert_eq!(
            img.target.media_type,
            berth_store::oci::MEDIA_TYPE_DOCKER_MANIFEST
        );
        let m: berth_store::oci::Manifest =
            berth_store::images::read_json(s, &ctx, &img.target).unwrap();
        assert_eq!(
            m.config.media_type,
            berth_store::oci::MEDIA_TYPE_DOCKER_CONFIG
        );
        assert_eq!(m.layers.len(), 2);
        assert_eq!(
            m.layers[0].media_type,
            berth_store::oci::MEDIA_TYPE_DOCKER_LAYER
        );
        assert_eq!(
            m.layers[0].digest,
            Digest::of(&layers[0]),
            "uncompressed layer kept as is"
        );
        let chain = chain_ids(&[Digest::of(&layers[0]), Digest::of(&layers[1])]);
        check_view(s, &ctx, &chain[1]);
        // Export to OCI and re-import: same manifest digest.
        let mut out = Vec::new();
        s.export(
            &ctx,
            std::slice::from_ref(&img.name),
            &mut out,
            &ExportOptions::default(),
        )
        .unwrap();
        let t2 = open_store(SnapshotterChoice::Native);
        let again = t2
            .store
            .import(&ctx, &out[..], &ImportOptions::default())
            .unwrap();
        assert_eq!(again[0].target.digest, img.target.digest);
    }
}

#[test]
fn export_with_a_docker_manifest_loads_as_a_docker_save_archive() {
    let t = open_store(SnapshotterChoice::Native);
    let s = &t.store;
    let ctx = Ctx::new("docker-ns");
    let layers = [base_layer(), top_layer()];
    let archive = docker_archive(&layers, "bb:docker");
    let img = s
        .import(&ctx, &archive[..], &unpack_opts())
        .unwrap()
        .remove(0);
    let m: berth_store::oci::Manifest =
        berth_store::images::read_json(s, &ctx, &img.target).unwrap();
    let mut out = Vec::new();
    let opts = ExportOptions {
        docker_manifest: true,
        ..ExportOptions::default()
    };
    s.export(&ctx, std::slice::from_ref(&img.name), &mut out, &opts)
        .unwrap();
    // manifest.json beside the OCI layout, pointing into blobs/.
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for e in tar::Archive::new(&out[..]).entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        entries.push((path, data));
    }
    let manifest = &entries
        .iter()
        .find(|(p, _)| p == "manifest.json")
        .unwrap()
        .1;
    let v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    assert_eq!(v[0]["RepoTags"], serde_json::json!(["bb:docker"]));
    assert_eq!(
        v[0]["Config"],
        format!("blobs/sha256/{}", m.config.digest.hex())
    );
    assert_eq!(v[0]["Layers"].as_array().unwrap().len(), 2);
    // Without the OCI layout it is a docker save archive, and imports as one.
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in &entries {
        if p == "index.json" || p == "oci-layout" {
            continue;
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, p, &data[..]).unwrap();
    }
    let docker_only = b.into_inner().unwrap();
    let t2 = open_store(SnapshotterChoice::Native);
    let again = t2
        .store
        .import(&ctx, &docker_only[..], &ImportOptions::default())
        .unwrap();
    assert_eq!(again[0].name, "docker.io/library/bb:docker");
    let m2: berth_store::oci::Manifest =
        berth_store::images::read_json(&t2.store, &ctx, &again[0].target).unwrap();
    assert_eq!(m2.config.digest, m.config.digest);
}

#[test]
fn gc_frees_what_a_removed_image_held_but_not_what_a_lease_holds() {
    let choice = *choices().last().unwrap();
    let t = open_store(choice);
    let s = &t.store;
    let ctx = Ctx::new("default");
    let img = build_oci(&[base_layer(), top_layer()], true);
    s.import(
        &ctx,
        &oci_archive(&img, "example.com/bb:gc", &[], None)[..],
        &unpack_opts(),
    )
    .unwrap();
    // A blob held only by a lease.
    s.lease_create(&ctx, "keep", Labels::new()).unwrap();
    let mut w = s
        .content_writer(&ctx.with_lease("keep"), "leased", None, None)
        .unwrap();
    w.write(b"leased blob").unwrap();
    let leased = w.commit(0, None, Labels::new()).unwrap();

    let r = s.collect().unwrap();
    assert!(
        r.content.is_empty() && r.snapshots.is_empty(),
        "nothing to collect yet: {r:?}"
    );

    s.image_delete(&ctx, "example.com/bb:gc").unwrap();
    let r = s.collect().unwrap();
    assert_eq!(r.content.len(), img.blobs.len(), "{r:?}");
    assert_eq!(r.blobs.len(), img.blobs.len());
    assert_eq!(r.snapshots.len(), 2);
    for d in img.blobs.keys() {
        let d = Digest::parse(d).unwrap();
        assert!(
            !s.content_store().blob_path(&d).exists(),
            "{d} removed from disk"
        );
    }
    assert!(s.snapshotter().list(&ctx, &[]).unwrap().is_empty());
    let sn_dir = t.root().join(format!(
        "io.containerd.snapshotter.v1.{}/snapshots",
        s.snapshotter().name()
    ));
    assert!(
        ls(&sn_dir).is_empty(),
        "snapshot dirs removed: {:?}",
        ls(&sn_dir)
    );
    // The leased blob survived; after the lease goes, it goes too.
    assert_eq!(s.content_info(&ctx, &leased).unwrap().size, 11);
    s.lease_delete(&ctx, "keep").unwrap();
    let r = s.collect().unwrap();
    assert_eq!(r.blobs, vec![leased.clone()]);

    // An expired lease is removed first, then what it held.
    let mut l = Labels::new();
    l.insert(
        "containerd.io/gc.expire".into(),
        "2000-01-01T00:00:00Z".into(),
    );
    s.lease_create(&ctx, "old", l).unwrap();
    let mut w = s
        .content_writer(&ctx.with_lease("old"), "old", None, None)
        .unwrap();
    w.write(b"old").unwrap();
    let old = w.commit(0, None, Labels::new()).unwrap();
    let r = s.collect().unwrap();
    assert_eq!(r.leases, ["default/old"]);
    assert_eq!(r.blobs, vec![old]);
    // A gc.root label keeps a blob.
    let mut root = Labels::new();
    root.insert("containerd.io/gc.root".into(), "x".into());
    let mut w = s.content_writer(&ctx, "rooted", None, None).unwrap();
    w.write(b"rooted").unwrap();
    let rooted = w.commit(0, None, root).unwrap();
    s.collect().unwrap();
    assert!(s.content_info(&ctx, &rooted).is_ok());
}

fn assert_clean_after_failure(t: &TestStore, ctx: &Ctx) {
    let s = &t.store;
    assert!(
        s.image_list(ctx, &[]).unwrap().is_empty(),
        "no image record"
    );
    assert!(s.lease_list(ctx, &[]).unwrap().is_empty(), "no lease left");
    s.collect().unwrap();
    assert!(
        s.content_list(ctx, &[]).unwrap().is_empty(),
        "nothing left after GC"
    );
    assert!(
        s.snapshotter().list(ctx, &[]).unwrap().is_empty(),
        "no snapshot left"
    );
    assert!(
        s.content_statuses(ctx, &[]).unwrap().is_empty(),
        "no ingest left"
    );
    // The next import works.
    let img = build_oci(&[base_layer()], true);
    s.import(
        ctx,
        &oci_archive(&img, "example.com/next:ok", &[], None)[..],
        &unpack_opts(),
    )
    .unwrap();
}

#[test]
fn truncated_archive_is_refused() {
    let t = open_store(SnapshotterChoice::Native);
    let ctx = Ctx::new("default");
    let img = build_oci(&[base_layer(), top_layer()], true);
    let a = oci_archive(&img, "example.com/x:y", &[], None);
    let e = t
        .store
        .import(&ctx, &a[..a.len() / 2], &unpack_opts())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(
        e.to_string().contains("truncated") || e.to_string().contains("index.json"),
        "{e}"
    );
    assert_clean_after_failure(&t, &ctx);
}

/// A stream made of literal parts and long runs of one byte, produced as it is read (so a test
/// can feed gigabytes without holding them), counting what was read.
struct Lazy {
    parts: std::collections::VecDeque<(Vec<u8>, u8, u64)>,
    read: u64,
}

impl Lazy {
    fn new() -> Lazy {
        Lazy {
            parts: Default::default(),
            read: 0,
        }
    }

    /// A tar header for `name` of type `kind` and `size`, then `size` bytes of `fill`, padded.
    fn entry(mut self, name: &str, kind: tar::EntryType, size: u64, fill: u8) -> Lazy {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        let pad = (512 - size % 512) % 512;
        self.parts.push_back((h.as_bytes().to_vec(), fill, size));
        self.parts.push_back((Vec::new(), 0, pad));
        self
    }
}

impl std::io::Read for Lazy {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some((lit, fill, run)) = self.parts.front_mut() {
            let n = if !lit.is_empty() {
                let n = lit.len().min(buf.len());
                buf[..n].copy_from_slice(&lit[..n]);
                lit.drain(..n);
                n
            } else if *run > 0 {
                let n = (*run).min(buf.len() as u64) as usize;
                buf[..n].fill(*fill);
                *run -= n as u64;
                n
            } else {
                self.parts.pop_front();
                continue;
            };
            self.read += n as u64;
            return Ok(n);
        }
        Ok(0)
    }
}

/// Found by reading the tar crate after fuzz/layer_apply's PAX bomb: an archive whose first
/// member is a PAX header claiming 1 GiB of records made the import read all of it into memory
/// before looking at them. The import now stops at 16 MiB with a clear error.
#[test]
fn huge_metadata_records_in_an_archive_are_refused() {
    let t = open_store(SnapshotterChoice::Native);
    let ctx = Ctx::new("default");
    for kind in [tar::EntryType::XHeader, tar::EntryType::GNULongName] {
        let mut a = Lazy::new().entry("PaxHeader", kind, 1 << 30, b'0').entry(
            "index.json",
            tar::EntryType::Regular,
            2,
            b' ',
        );
        let e = t
            .store
            .import(&ctx, &mut a, &ImportOptions::default())
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains("metadata records"), "{e}");
        assert!(a.read < 32 << 20, "read {} bytes of the archive", a.read);
    }
    assert_clean_after_failure(&t, &ctx);
}

/// Found by reading read_archive after the PAX bomb: every `*.json` member of up to 16 MiB was
/// kept in memory, with no bound on how many, so an archive of many large JSON members took
/// as much memory as it was long. The JSON kept is now bounded (64 MiB).
#[test]
fn archives_with_too_much_json_are_refused() {
    let t = open_store(SnapshotterChoice::Native);
    let ctx = Ctx::new("default");
    let mut a = Lazy::new();
    for i in 0..6 {
        a = a.entry(
            &format!("c{i}.json"),
            tar::EntryType::Regular,
            15 << 20,
            b' ',
        );
    }
    let e = t
        .store
        .import(&ctx, &mut a, &ImportOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("MiB of JSON documents"), "{e}");
    assert!(a.read < 80 << 20, "read {} bytes of the archive", a.read);
    assert_clean_after_failure(&t, &ctx);
}

#[test]
fn corrupt_blob_is_refused_by_digest() {
    let t = open_store(SnapshotterChoice::Native);
    let ctx = Ctx::new("default");
    let mut img = build_oci(&[base_layer()], true);
    let cfg = Digest::of(&img.config_bytes).to_string();
    let bad = img.blobs.get_mut(&cfg).unwrap();
    bad[5] ^= 0x20;
    let e = t
        .store
        .import(
            &ctx,
            &oci_archive(&img, "example.com/x:y", &[], None)[..],
            &unpack_opts(),
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("does not match its digest"), "{e}");
    assert!(e.to_string().contains(&cfg), "{e}");
    assert_clean_after_failure(&t, &ctx);
}

#[test]
fn manifest_naming_a_missing_blob_is_refused() {
    let t = open_store(SnapshotterChoice::Native);
    let ctx = Ctx::new("default");
    let img = build_oci(&[base_layer(), top_layer()], true);
    let missing = img.manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let e = t
        .store
        .import(
            &ctx,
            &oci_archive(&img, "example.com/x:y", &[&missing], None)[..],
            &unpack_opts(),
        )
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(e.to_string().contains(&missing), "{e}");
    assert!(e.to_string().contains("missing"), "{e}");
    assert_clean_after_failure(&t, &ctx);
}

#[test]
fn unsupported_media_type_is_refused() {
    let t = open_store(SnapshotterChoice::Native);
    let ctx = Ctx::new("default");
    let img = build_oci(&[base_layer()], true);
    let a = oci_archive(
        &img,
        "example.com/x:y",
        &[],
        Some("application/vnd.example.thing+json"),
    );
    let e = t.store.import(&ctx, &a[..], &unpack_opts()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(
        e.to_string()
            .contains("unsupported media type application/vnd.example.thing+json"),
        "{e}"
    );
    assert_clean_after_failure(&t, &ctx);
}

fn escape_case(layer: Vec<u8>, outside: &Path) {
    for choice in choices() {
        let t = open_store(choice);
        let ctx = Ctx::new("default");
        let img = build_oci(&[base_layer(), layer.clone()], false);
        let e = t
            .store
            .import(
                &ctx,
                &oci_archive(&img, "example.com/evil:1", &[], None)[..],
                &unpack_opts(),
            )
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{choice:?}: {e}");
        assert!(e.to_string().contains("escapes"), "{e}");
        assert!(
            !outside.exists(),
            "{} was created outside the root",
            outside.display()
        );
        assert_clean_after_failure(&t, &ctx);
    }
}

#[test]
fn layer_with_dotdot_traversal_is_refused() {
    let name = format!("berth-escape-{}", fastrand_key());
    let outside = std::env::temp_dir().join(&name);
    let layer = raw_tar_with_name(&format!("../../../../../../../../tmp/{name}"), b"pwned");
    escape_case(layer, &outside);
}

#[test]
fn layer_with_absolute_symlink_escape_stays_inside_the_root() {
    // berth-layer resolves symlinks met in a path as if the snapshot were `/` (as containerd
    // does): the write lands inside the snapshot, never outside.
    for choice in choices() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("pwned");
        let layer = layer_tar(&[
            E::Symlink("evil", dir.path().display().to_string()),
            file("evil/pwned", b"pwned"),
        ]);
        let t = open_store(choice);
        let ctx = Ctx::new("default");
        let img = build_oci(&[base_layer(), layer], false);
        t.store
            .import(
                &ctx,
                &oci_archive(&img, "example.com/evil:2", &[], None)[..],
                &unpack_opts(),
            )
            .unwrap();
        assert!(
            !outside.exists(),
            "{} was created outside the root",
            outside.display()
        );
        let chain = chain_ids(&img.layers.iter().map(|l| Digest::of(l)).collect::<Vec<_>>());
        let mounts = t
            .store
            .snapshotter()
            .view(&ctx, "look", Some(chain[1].as_str()), Labels::new())
            .unwrap();
        let inside = |root: &Path| {
            let rel = dir.path().strip_prefix("/").unwrap().join("pwned");
            assert_eq!(fs::read(root.join(rel)).unwrap(), b"pwned", "{choice:?}");
        };
        if choice == SnapshotterChoice::Native {
            inside(Path::new(&mounts[0].source));
        } else {
            let m = Mounted::new(&mounts);
            inside(m.path());
        }
    }
}

#[test]
fn interrupted_import_and_unpack_are_recovered_on_open() {
    let choice = *choices().last().unwrap();
    let t = open_store(choice);
    let ctx = Ctx::new("default");
    let sn_name = t.store.snapshotter().name().to_string();
    // What a killed import + unpack leaves: a half ingest, an extract snapshot in a
    // temporary lease, a committed blob only that lease held, an orphan snapshot dir.
    let mut labels = Labels::new();
    labels.insert(berth_store::LABEL_TEMPORARY_LEASE.into(), "true".into());
    let lease = t.store.lease_create(&ctx, "", labels).unwrap();
    let lctx = ctx.with_lease(&lease.id);
    let mut w = t
        .store
        .content_writer(&lctx, "import-dead-half", None, None)
        .unwrap();
    w.write(&[1u8; 4096]).unwrap();
    drop(w);
    let mut w = t
        .store
        .content_writer(&lctx, "import-dead-full", None, None)
        .unwrap();
    w.write(b"whole blob").unwrap();
    let whole = w.commit(0, None, Labels::new()).unwrap();
    t.store
        .snapshotter()
        .prepare(&lctx, "extract-dead-0123", None, Labels::new())
        .unwrap();
    let snaps = t
        .root()
        .join(format!("io.containerd.snapshotter.v1.{sn_name}/snapshots"));
    fs::create_dir_all(snaps.join("424242/fs/usr")).unwrap();
    let ingest = t.root().join("io.containerd.content.v1.content/ingest");
    fs::create_dir_all(ingest.join(".tmp-cafe")).unwrap();
    let TestStore { store, dir } = t;
    drop(store);

    let s = reopen(dir.path(), choice);
    assert!(s.lease_list(&ctx, &[]).unwrap().is_empty());
    assert!(s.snapshotter().list(&ctx, &[]).unwrap().is_empty());
    assert!(s.content_list(&ctx, &[]).unwrap().is_empty());
    assert!(!s.content_store().blob_path(&whole).exists());
    assert!(s.content_statuses(&ctx, &[]).unwrap().is_empty());
    assert!(ls(&snaps).is_empty(), "{:?}", ls(&snaps));
    assert!(ls(&ingest).is_empty(), "{:?}", ls(&ingest));
    assert!(s.metadata().read(|r| r.all_snapshots()).unwrap().is_empty());
    let img = build_oci(&[base_layer(), top_layer()], true);
    s.import(
        &ctx,
        &oci_archive(&img, "example.com/after:crash", &[], None)[..],
        &unpack_opts(),
    )
    .unwrap();
    let chain = chain_ids(&img.layers.iter().map(|l| Digest::of(l)).collect::<Vec<_>>());
    check_view(&s, &ctx, &chain[1]);
}

#[test]
fn namespaces_are_isolated_and_must_be_empty_to_delete() {
    let t = open_store(SnapshotterChoice::Native);
    let s = &t.store;
    let a = Ctx::new("team-a");
    let img = build_oci(&[base_layer()], true);
    s.import(
        &a,
        &oci_archive(&img, "example.com/a:1", &[], None)[..],
        &unpack_opts(),
    )
    .unwrap();
    assert!(s.image_list(&Ctx::new("team-b"), &[]).unwrap().is_empty());
    let e = s.namespace_delete("team-a").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert_eq!(
        e.to_string(),
        "namespace team-a must be empty, but it still has images, blobs, snapshots"
    );
    let e = s
        .import(&Ctx::new("bad/ns"), &[][..], &unpack_opts())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    s.image_delete(&a, "example.com/a:1").unwrap();
    s.collect().unwrap();
    s.namespace_delete("team-a").unwrap();
}
