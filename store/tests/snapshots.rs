//! The snapshotter contract, run against overlayfs and the native (copy) snapshotter.

mod common;

use std::fs;

use berth_store::metadata::{Labels, SnapshotKind};
use berth_store::snapshots::Snapshotter;
use berth_store::{Ctx, ErrorKind, SnapshotterChoice};
use common::{ls, open_store, overlay_ok, Mounted};

fn fs_dir(mounts: &[berth_store::snapshots::Mount]) -> std::path::PathBuf {
    let m = &mounts[0];
    if m.kind == "bind" {
        return m.source.clone().into();
    }
    m.options
        .iter()
        .find_map(|o| o.strip_prefix("upperdir="))
        .expect("upperdir")
        .into()
}

/// The contract every snapshotter passes.
fn contract(sn: &dyn Snapshotter, overlay: bool) {
    let ctx = Ctx::new("contract");
    let m = sn.prepare(&ctx, "base-key", None, Labels::new()).unwrap();
    assert_eq!(m[0].kind, "bind");
    assert_eq!(m[0].options, ["rw", "rbind"]);
    fs::write(fs_dir(&m).join("base.txt"), b"base").unwrap();
    assert_eq!(
        sn.stat(&ctx, "base-key").unwrap().kind,
        SnapshotKind::Active
    );
    let e = sn
        .prepare(&ctx, "base-key", None, Labels::new())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);

    let mut l = Labels::new();
    l.insert("role".into(), "base".into());
    sn.commit(&ctx, "base", "base-key", l).unwrap();
    assert!(sn.stat(&ctx, "base-key").unwrap_err().is_not_found());
    let info = sn.stat(&ctx, "base").unwrap();
    assert_eq!(info.kind, SnapshotKind::Committed);
    assert_eq!(info.labels.get("role").map(String::as_str), Some("base"));
    assert_eq!(
        sn.mounts(&ctx, "base").unwrap_err().kind(),
        ErrorKind::FailedPrecondition
    );

    // An active child.
    let m = sn
        .prepare(&ctx, "child", Some("base"), Labels::new())
        .unwrap();
    if overlay {
        assert_eq!(m[0].kind, "overlay");
        assert_eq!(m[0].source, "overlay");
        assert!(
            m[0].options[0].starts_with("workdir="),
            "{:?}",
            m[0].options
        );
        assert!(m[0].options[1].starts_with("upperdir="));
        assert!(m[0].options[2].starts_with("lowerdir="));
        let mnt = Mounted::new(&m);
        assert_eq!(fs::read(mnt.path().join("base.txt")).unwrap(), b"base");
        fs::write(mnt.path().join("child.txt"), b"child").unwrap();
    } else {
        assert_eq!(m[0].kind, "bind");
        assert_eq!(fs::read(fs_dir(&m).join("base.txt")).unwrap(), b"base");
        fs::write(fs_dir(&m).join("child.txt"), b"child").unwrap();
    }
    assert_eq!(sn.mounts(&ctx, "child").unwrap(), m);
    sn.commit(&ctx, "child-c", "child", Labels::new()).unwrap();

    // Views: one parent → ro bind; two parents (overlay) → lowerdir-only overlay.
    let v = sn.view(&ctx, "view1", Some("base"), Labels::new()).unwrap();
    assert_eq!(v[0].kind, "bind");
    assert_eq!(v[0].options, ["ro", "rbind"]);
    assert_eq!(ls(&fs_dir(&v)), ["base.txt"]);
    let v2 = sn
        .view(&ctx, "view2", Some("child-c"), Labels::new())
        .unwrap();
    if overlay {
        assert_eq!(v2[0].kind, "overlay");
        assert_eq!(v2[0].options.len(), 1);
        let lower = v2[0].options[0].strip_prefix("lowerdir=").unwrap();
        assert_eq!(lower.split(':').count(), 2);
        let mnt = Mounted::new(&v2);
        assert_eq!(ls(mnt.path()), ["base.txt", "child.txt"]);
    } else {
        assert_eq!(v2[0].options, ["ro", "rbind"]);
        assert_eq!(ls(&fs_dir(&v2)), ["base.txt", "child.txt"]);
    }
    assert_eq!(sn.stat(&ctx, "view2").unwrap().kind, SnapshotKind::View);
    assert_eq!(
        sn.stat(&ctx, "view2").unwrap().parent.as_deref(),
        Some("child-c")
    );

    // Errors.
    assert!(sn
        .prepare(&ctx, "x", Some("nope"), Labels::new())
        .unwrap_err()
        .is_not_found());
    let e = sn
        .prepare(&ctx, "x", Some("view1"), Labels::new())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert_eq!(
        sn.commit(&ctx, "y", "view1", Labels::new())
            .unwrap_err()
            .kind(),
        ErrorKind::FailedPrecondition
    );
    let e = sn.remove(&ctx, "base").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(e.to_string().contains("has children"), "{e}");

    // Update, list, filters, usage.
    let mut info = sn.stat(&ctx, "child-c").unwrap();
    info.labels
        .insert("containerd.io/gc.root".into(), "now".into());
    let got = sn
        .update(&ctx, &info, &["labels.containerd.io/gc.root".into()])
        .unwrap();
    assert!(got.labels.contains_key("containerd.io/gc.root"));
    let names = |f: &[&str]| -> Vec<String> {
        let f: Vec<String> = f.iter().map(|s| s.to_string()).collect();
        sn.list(&ctx, &f)
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect()
    };
    assert_eq!(names(&[]), ["base", "child-c", "view1", "view2"]);
    assert_eq!(names(&["kind==committed"]), ["base", "child-c"]);
    assert_eq!(names(&["parent==base"]), ["child-c", "view1"]);
    assert_eq!(names(&["labels.role==base"]), ["base"]);
    assert!(sn.list(&Ctx::new("other"), &[]).unwrap().is_empty());
    let u = sn.usage(&ctx, "child-c").unwrap();
    assert!(u.inodes >= 2 && u.size > 0, "{u:?}");

    // Remove children first, then the parent.
    for k in ["view2", "view1", "child-c", "base"] {
        sn.remove(&ctx, k).unwrap();
    }
    assert!(sn.list(&ctx, &[]).unwrap().is_empty());
    assert!(sn.remove(&ctx, "base").unwrap_err().is_not_found());
}

#[test]
fn native_snapshotter_passes_the_contract() {
    let t = open_store(SnapshotterChoice::Native);
    assert_eq!(t.store.snapshotter().name(), "native");
    contract(t.store.snapshotter(), false);
}

#[test]
fn overlay_snapshotter_passes_the_contract() {
    if !overlay_ok() {
        eprintln!("SKIP: overlay mounts do not work here");
        return;
    }
    let t = open_store(SnapshotterChoice::Overlay);
    assert_eq!(t.store.snapshotter().name(), "overlayfs");
    contract(t.store.snapshotter(), true);
}

#[test]
fn cleanup_removes_orphan_directories_only() {
    let t = open_store(SnapshotterChoice::Native);
    let sn = t.store.snapshotter();
    let ctx = Ctx::new("default");
    sn.prepare(&ctx, "keep", None, Labels::new()).unwrap();
    let snaps = t
        .root()
        .join("io.containerd.snapshotter.v1.native/snapshots");
    fs::create_dir_all(snaps.join("9999/fs")).unwrap();
    fs::create_dir_all(snaps.join("new-deadbeef/fs")).unwrap();
    let removed = sn.cleanup().unwrap();
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert_eq!(ls(&snaps), ["1"]);
    assert!(sn.mounts(&ctx, "keep").is_ok());
}

#[test]
fn snapshots_join_the_lease_of_their_context() {
    let t = open_store(SnapshotterChoice::Native);
    let ctx = Ctx::new("default");
    t.store.lease_create(&ctx, "l1", Labels::new()).unwrap();
    let lctx = ctx.with_lease("l1");
    t.store
        .snapshotter()
        .prepare(&lctx, "k", None, Labels::new())
        .unwrap();
    let res = t.store.lease_resources(&ctx, "l1").unwrap();
    assert_eq!(res.len(), 1);
    assert_eq!(
        (res[0].kind.as_str(), res[0].id.as_str()),
        ("snapshots/native", "k")
    );
    let e = t
        .store
        .snapshotter()
        .prepare(&ctx.with_lease("missing"), "k2", None, Labels::new())
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(
        t.store
            .snapshotter()
            .stat(&ctx, "k2")
            .unwrap_err()
            .is_not_found(),
        "rolled back"
    );
}

#[test]
fn the_snapshots_directory_spreads_its_trees_over_block_groups_on_ext4() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::Builder::new()
        .prefix("berth-store-topdir")
        .tempdir_in("/var/tmp")
        .unwrap();
    let mut cfg = berth_store::StoreConfig::new(dir.path().join("root"));
    cfg.snapshotter = SnapshotterChoice::Native;
    let _store = berth_store::Store::open(&cfg).unwrap();
    let snaps = dir
        .path()
        .join("root/io.containerd.snapshotter.v1.native/snapshots");
    let st = nix::sys::statfs::statfs(&snaps).unwrap();
    if st.filesystem_type() != nix::sys::statfs::EXT4_SUPER_MAGIC {
        eprintln!("skipped: {} is not on ext2/3/4", snaps.display());
        return;
    }
    let f = fs::File::open(&snaps).unwrap();
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int.
    assert_eq!(
        unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) },
        0
    );
    assert_ne!(flags & 0x0002_0000, 0, "FS_TOPDIR_FL not set: {flags:#x}");
}
