//! diff_trees and diff_overlay_upper: round trips through apply_layer.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;

const BASE_TIME: i64 = 1_500_000_000;

/// The same tree every time it is called (times settled).
fn make_base(d: &Path) {
    for dir in [
        "etc",
        "usr/bin",
        "var/lib/old/deep",
        "data",
        "dir_to_file/sub",
    ] {
        fs::create_dir_all(d.join(dir)).unwrap();
    }
    fs::write(d.join("etc/hostname"), "base").unwrap();
    fs::write(d.join("etc/config"), "aaaa").unwrap();
    fs::write(d.join("etc/gone"), "bye").unwrap();
    fs::write(d.join("etc/unchanged"), "same").unwrap();
    fs::write(d.join("usr/bin/tool"), "tool").unwrap();
    fs::set_permissions(d.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(d.join("usr/bin/busybox"), "bb").unwrap();
    fs::hard_link(d.join("usr/bin/busybox"), d.join("usr/bin/sh")).unwrap();
    fs::write(d.join("var/lib/old/deep/f"), "old").unwrap();
    fs::write(d.join("data/big"), vec![0xab; 200_000]).unwrap();
    fs::write(d.join("file_to_dir"), "file").unwrap();
    fs::write(d.join("dir_to_file/sub/x"), "x").unwrap();
    symlink("target1", d.join("link_old")).unwrap();
    setxattr(&d.join("etc/unchanged"), "user.keep", b"k");
    settle_times(d);
}

/// The changes a container might make.
fn modify(u: &Path) {
    fs::write(u.join("etc/new"), "new").unwrap();
    setxattr(&u.join("etc/new"), "user.a", b"1");
    setxattr(&u.join("etc/new"), "trusted.b", b"\x00\xff");
    fs::write(u.join("etc/hostname"), "changed and longer").unwrap();
    // Same size, same mtime: only the content says it changed.
    fs::write(u.join("etc/config"), "bbbb").unwrap();
    let t = nix::sys::time::TimeSpec::new(BASE_TIME, 123_456_789);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &u.join("etc/config"),
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    fs::remove_file(u.join("etc/gone")).unwrap();
    fs::remove_dir_all(u.join("var/lib/old")).unwrap();
    fs::set_permissions(u.join("usr/bin/tool"), fs::Permissions::from_mode(0o4700)).unwrap();
    nix::unistd::chown(&u.join("data/big"), Some(1000.into()), Some(1000.into())).unwrap();
    symlink("/etc/hostname", u.join("newlink")).unwrap();
    fs::remove_file(u.join("link_old")).unwrap();
    symlink("target2//odd/./path/", u.join("link_old")).unwrap();
    fs::write(u.join("h1"), "linked").unwrap();
    fs::hard_link(u.join("h1"), u.join("h2")).unwrap();
    fs::hard_link(u.join("usr/bin/busybox"), u.join("usr/bin/bb2")).unwrap();
    fs::remove_file(u.join("file_to_dir")).unwrap();
    fs::create_dir(u.join("file_to_dir")).unwrap();
    fs::write(u.join("file_to_dir/child"), "c").unwrap();
    fs::remove_dir_all(u.join("dir_to_file")).unwrap();
    fs::write(u.join("dir_to_file"), "now a file").unwrap();
    mknod(&u.join("fifo"), libc::S_IFIFO, 0o640, 0, 0);
    mknod(&u.join("chr"), libc::S_IFCHR, 0o600, 5, 1);
    let long = u.join("l".repeat(80)).join("n".repeat(110));
    fs::create_dir_all(long.parent().unwrap()).unwrap();
    fs::write(&long, "long").unwrap();
    symlink(format!("/{}", "t".repeat(200)), u.join("longlink")).unwrap();
    setxattr(&u.join("etc"), "user.dir", b"d");
}

fn diff(lower: &Path, upper: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let stats = berth_layer::diff_trees(lower, upper, &mut out).unwrap();
    assert_eq!(stats.entries as usize, tar_names(&out).len());
    out
}

#[test]
fn diff_trees_round_trips_through_apply() {
    let t = tempfile::tempdir().unwrap();
    let (lower, upper, target) = (t.path().join("l"), t.path().join("u"), t.path().join("t"));
    for d in [&lower, &upper, &target] {
        fs::create_dir(d).unwrap();
        make_base(d);
    }
    modify(&upper);

    let tar = diff(&lower, &upper);
    assert_eq!(
        tar,
        diff(&lower, &upper),
        "two diffs of the same trees give the same bytes"
    );

    let names = tar_names(&tar);
    for must in [
        "etc/new",
        "etc/hostname",
        "etc/config",
        "etc/.wh.gone",
        "var/lib/.wh.old",
        "usr/bin/tool",
        "data/big",
        "newlink",
        "link_old",
        "h1",
        "h2",
        "file_to_dir",
        "file_to_dir/child",
        "dir_to_file",
        "fifo",
        "chr",
        "longlink",
    ] {
        assert!(
            names.iter().any(|n| n.trim_end_matches('/') == must),
            "{must} missing from {names:?}"
        );
    }
    // data/big is replaced (its owner changed), so data follows it: its mtime is unchanged and
    // the apply would otherwise change it.
    let pos = |n: &str| names.iter().position(|x| x.trim_end_matches('/') == n);
    assert!(pos("data") > pos("data/big"), "{names:?}");
    for never in [
        "etc/unchanged",
        "usr",
        "var/lib/old/deep/f",
        "dir_to_file/sub/x",
    ] {
        assert!(
            !names.iter().any(|n| n.trim_end_matches('/') == never),
            "{never} must not be in {names:?}"
        );
    }
    let mut sorted = names.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "no duplicate entries");

    berth_layer::apply_layer(std::io::Cursor::new(tar), &target, &delete_opts()).unwrap();
    assert_same_tree(&target, &upper);
}

#[test]
fn diff_of_identical_trees_is_empty() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    for d in [&a, &b] {
        fs::create_dir(d).unwrap();
        make_base(d);
    }
    assert!(tar_names(&diff(&a, &b)).is_empty());
}

/// Found by fuzz/layer_diff: a container may create a file named `.wh.NAME` (or a layer may
/// create a directory so named, as the parent of another entry). The diff wrote it as is, and
/// applying that layer read it back as a whiteout: deleting `NAME` below, or failing for
/// `.wh...` ("escapes the root"). Such a name cannot be expressed in a layer: refused.
#[test]
fn names_that_read_back_as_whiteouts_are_refused() {
    for name in [".wh.etc", ".wh...", ".wh..wh..opq"] {
        let t = tempfile::tempdir().unwrap();
        let (lower, upper) = (t.path().join("l"), t.path().join("u"));
        for d in [&lower, &upper] {
            fs::create_dir(d).unwrap();
            make_base(d);
        }
        fs::create_dir(upper.join("sub")).unwrap();
        fs::write(upper.join("sub").join(name), b"not a whiteout").unwrap();
        let err = berth_layer::diff_trees(&lower, &upper, Vec::new()).unwrap_err();
        assert!(
            matches!(err, berth_layer::LayerError::Unrepresentable { .. })
                && err.to_string().contains("whiteout"),
            "{name}: {err}"
        );
        let err = berth_layer::diff_overlay_upper(&upper, Vec::new()).unwrap_err();
        assert!(
            matches!(err, berth_layer::LayerError::Unrepresentable { .. }),
            "{name}: {err}"
        );
    }
}

/// Found by fuzz/layer_diff (corpus crash-33a67fb9c39fea6a): a directory whose children
/// changed but whose mtime was set back to the lower's (a layer's own entry for it, `touch -d`,
/// a restored backup) had no entry in the diff, so applying the diff left it with the time of
/// the apply.
#[test]
fn a_directory_with_changed_children_keeps_its_time() {
    let t = tempfile::tempdir().unwrap();
    let (lower, upper, target) = (t.path().join("l"), t.path().join("u"), t.path().join("t"));
    for d in [&lower, &upper, &target] {
        fs::create_dir(d).unwrap();
        make_base(d);
    }
    fs::write(upper.join("etc/added"), "new").unwrap();
    fs::remove_file(upper.join("etc/gone")).unwrap();
    settle_times(&upper);
    let tar = diff(&lower, &upper);
    assert_eq!(
        tar_names(&tar),
        ["etc/added", "etc/.wh.gone", "etc"],
        "the directory follows its children"
    );
    berth_layer::apply_layer(std::io::Cursor::new(tar), &target, &delete_opts()).unwrap();
    assert_same_tree(&target, &upper);
    assert_eq!(
        fs::metadata(target.join("etc")).unwrap().mtime(),
        fs::metadata(upper.join("etc")).unwrap().mtime()
    );
}

#[test]
fn diff_overlay_upper_from_a_real_mount() {
    let t = tempfile::tempdir().unwrap();
    let (lower, upper, work, merged, target) = (
        t.path().join("l"),
        t.path().join("u"),
        t.path().join("w"),
        t.path().join("m"),
        t.path().join("t"),
    );
    for d in [&lower, &upper, &work, &merged, &target] {
        fs::create_dir(d).unwrap();
    }
    make_base(&lower);
    make_base(&target);
    let _mount = OverlayMount::new(&lower, &upper, &work, &merged);
    let m = &merged;
    fs::remove_file(m.join("etc/gone")).unwrap();
    fs::remove_dir_all(m.join("data")).unwrap();
    // Removing a lower dir and making it again gives an opaque dir.
    fs::remove_dir_all(m.join("var/lib/old")).unwrap();
    fs::create_dir(m.join("var/lib/old")).unwrap();
    fs::write(m.join("var/lib/old/fresh"), "fresh").unwrap();
    fs::write(m.join("etc/hostname"), "through overlay").unwrap();
    fs::write(m.join("etc/new"), "new").unwrap();
    setxattr(&m.join("etc/new"), "user.x", b"y");
    fs::set_permissions(m.join("usr/bin/tool"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(m.join("h1"), "linked").unwrap();
    fs::hard_link(m.join("h1"), m.join("h2")).unwrap();
    symlink("somewhere", m.join("sl")).unwrap();

    let mut tar = Vec::new();
    let stats = berth_layer::diff_overlay_upper(&upper, &mut tar).unwrap();
    let names = tar_names(&tar);
    assert_eq!(stats.entries as usize, names.len());
    for must in [
        "etc/.wh.gone",
        ".wh.data",
        "var/lib/old/.wh..wh..opq",
        "var/lib/old/fresh",
        "etc/hostname",
        "etc/new",
        "usr/bin/tool",
        "h1",
        "h2",
        "sl",
    ] {
        assert!(
            names.iter().any(|n| n.trim_end_matches('/') == must),
            "{must} missing from {names:?}"
        );
    }
    // No overlay internals, no whiteout devices in the tar.
    let mut a = tar::Archive::new(&tar[..]);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        assert_ne!(
            e.header().entry_type(),
            tar::EntryType::Char,
            "whiteout device leaked"
        );
        if let Some(pax) = e.pax_extensions().unwrap() {
            for r in pax {
                assert!(!r.unwrap().key().unwrap().contains("trusted.overlay"));
            }
        }
    }
    // h2 is a hardlink entry to h1.
    let mut a = tar::Archive::new(&tar[..]);
    let h2 = a
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path_bytes().as_ref() == b"h2")
        .unwrap();
    assert_eq!(h2.header().entry_type(), tar::EntryType::Link);
    assert_eq!(h2.link_name_bytes().unwrap().as_ref(), b"h1");

    // Applying the diff onto the lower gives what the mount shows.
    berth_layer::apply_layer(std::io::Cursor::new(tar), &target, &delete_opts()).unwrap();
    assert_same_tree(&target, &merged);
}

#[test]
fn compressor_round_trips() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    make_base(&b);
    for c in [
        berth_layer::Compression::Gzip,
        berth_layer::Compression::Zstd,
        berth_layer::Compression::None,
    ] {
        let mut w = berth_layer::compressor(Vec::new(), c).unwrap();
        berth_layer::diff_trees(&a, &b, &mut w).unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(berth_layer::detect_compression(&bytes), c);
        let target = t.path().join(format!("t-{c:?}"));
        fs::create_dir(&target).unwrap();
        berth_layer::apply_layer(std::io::Cursor::new(bytes), &target, &delete_opts()).unwrap();
        assert_same_tree(&target, &b);
    }
}
