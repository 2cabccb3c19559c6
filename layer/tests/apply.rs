//! apply_layer: what lands on disk for plain, compressed and whiteout layers.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use common::*;
use tar::EntryType;

fn plain_layer() -> Vec<u8> {
    let mut l = Layer::new();
    l.dir("etc/", M::mode(0o755))
        .file(
            "etc/passwd",
            b"root:x:0:0::/root:/bin/sh\n",
            M {
                mode: 0o644,
                mtime: 1_234_567_890,
                ..M::default()
            },
        )
        .file(
            "etc/shadow",
            b"secret",
            M {
                mode: 0o640,
                uid: 0,
                gid: 42,
                ..M::default()
            },
        )
        .dir(
            "home/user/",
            M {
                mode: 0o750,
                uid: 1000,
                gid: 1000,
                mtime: 1_111_111_111,
                ..M::default()
            },
        )
        .file(
            "home/user/.profile",
            b"export A=1\n",
            M {
                mode: 0o600,
                uid: 1000,
                gid: 1000,
                ..M::default()
            },
        )
        .file(
            "usr/bin/sudo",
            b"\x7fELF...",
            M {
                mode: 0o4755,
                ..M::default()
            },
        )
        .file(
            "usr/bin/ping",
            b"ping",
            M {
                mode: 0o755,
                xattrs: vec![
                    ("user.comment", b"hello"),
                    ("trusted.berth", b"\x00\x01bin"),
                ],
                ..M::default()
            },
        )
        .symlink("usr/bin/sh", "/bin/busybox")
        .symlink("usr/bin/rel", "../lib/x")
        .hardlink("usr/bin/sudo-link", "usr/bin/sudo")
        .node("dev/fifo", EntryType::Fifo, 0, 0, M::mode(0o620))
        .node("dev/null", EntryType::Char, 1, 3, M::mode(0o666))
        .node("dev/loop9", EntryType::Block, 7, 9, M::mode(0o660));
    l.finish()
}

fn check_plain(root: &std::path::Path) {
    let passwd = root.join("etc/passwd");
    assert_eq!(fs::read(&passwd).unwrap(), b"root:x:0:0::/root:/bin/sh\n");
    let md = fs::metadata(&passwd).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o644);
    assert_eq!(md.mtime(), 1_234_567_890);

    let md = fs::metadata(root.join("etc/shadow")).unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o640, 0, 42));

    let md = fs::metadata(root.join("home/user")).unwrap();
    assert!(md.is_dir());
    assert_eq!(
        (md.mode() & 0o7777, md.uid(), md.gid()),
        (0o750, 1000, 1000)
    );
    // Restored after its child was written.
    assert_eq!(md.mtime(), 1_111_111_111);
    let md = fs::metadata(root.join("home/user/.profile")).unwrap();
    assert_eq!(
        (md.mode() & 0o7777, md.uid(), md.gid()),
        (0o600, 1000, 1000)
    );

    let sudo = fs::metadata(root.join("usr/bin/sudo")).unwrap();
    assert_eq!(sudo.mode() & 0o7777, 0o4755, "setuid kept with same_owner");
    let link = fs::metadata(root.join("usr/bin/sudo-link")).unwrap();
    assert_eq!(sudo.ino(), link.ino(), "hardlink shares the inode");
    assert_eq!(link.nlink(), 2);

    let ping = root.join("usr/bin/ping");
    assert_eq!(
        getxattr(&ping, "user.comment").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        getxattr(&ping, "trusted.berth").as_deref(),
        Some(&b"\x00\x01bin"[..])
    );

    assert_eq!(
        fs::read_link(root.join("usr/bin/sh")).unwrap().as_os_str(),
        "/bin/busybox"
    );
    assert_eq!(
        fs::read_link(root.join("usr/bin/rel")).unwrap().as_os_str(),
        "../lib/x"
    );

    let fifo = fs::symlink_metadata(root.join("dev/fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o620);
    let null = fs::symlink_metadata(root.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    let lp = fs::symlink_metadata(root.join("dev/loop9")).unwrap();
    assert!(lp.file_type().is_block_device());
    assert_eq!(lp.rdev(), libc::makedev(7, 9));
}

#[test]
fn plain_layer_lands_on_disk_with_metadata() {
    for fallback in [false, true] {
        let t = tempfile::tempdir().unwrap();
        let stats = apply(plain_layer(), t.path(), &delete_opts(), fallback).unwrap();
        assert_eq!(stats.entries, 13);
        // passwd, shadow, .profile, sudo, ping
        assert_eq!(stats.bytes, 26 + 6 + 11 + 7 + 4);
        check_plain(t.path());
    }
}

#[test]
fn without_same_owner_setuid_and_owners_are_dropped() {
    let t = tempfile::tempdir().unwrap();
    let mut l = Layer::new();
    l.file(
        "suid",
        b"x",
        M {
            mode: 0o6755,
            uid: 1234,
            gid: 1234,
            ..M::default()
        },
    );
    let opts = berth_layer::ApplyOptions {
        same_owner: false,
        ..delete_opts()
    };
    apply(l.finish(), t.path(), &opts, false).unwrap();
    let md = fs::metadata(t.path().join("suid")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o755);
    assert_eq!(md.uid(), nix::unistd::geteuid().as_raw());
}

#[test]
fn gzip_and_zstd_layers_are_sniffed() {
    for (what, data) in [
        ("gzip", gzip(&plain_layer())),
        ("zstd", zstd(&plain_layer())),
    ] {
        assert_ne!(
            berth_layer::detect_compression(&data),
            berth_layer::Compression::None,
            "{what}"
        );
        let t = tempfile::tempdir().unwrap();
        apply(data, t.path(), &delete_opts(), false).unwrap_or_else(|e| panic!("{what}: {e}"));
        check_plain(t.path());
    }
}

#[test]
fn long_names_and_link_targets() {
    let long_dir = "d".repeat(90);
    let long_file = format!("{long_dir}/{}", "f".repeat(120));
    let long_target = format!("/{}", "t".repeat(150));
    let mut l = Layer::new();
    l.file(&long_file, b"long", M::default())
        .symlink("sl", &long_target)
        .hardlink("hl", &long_file);
    let t = tempfile::tempdir().unwrap();
    apply(l.finish(), t.path(), &delete_opts(), false).unwrap();
    assert_eq!(fs::read(t.path().join(&long_file)).unwrap(), b"long");
    assert_eq!(
        fs::read_link(t.path().join("sl"))
            .unwrap()
            .to_str()
            .unwrap(),
        long_target
    );
    assert_eq!(fs::read(t.path().join("hl")).unwrap(), b"long");
}

#[test]
fn replacing_entries() {
    for fallback in [false, true] {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let mut l1 = Layer::new();
        l1.dir("d/", M::mode(0o755))
            .file("d/keep", b"lower", M::default())
            .dir("gone/", M::mode(0o755))
            .file("gone/child", b"c", M::default())
            .file("f", b"file", M::default())
            .symlink("link", "/etc/passwd")
            .file("shared", b"shared", M::default())
            .hardlink("shared2", "shared");
        apply(l1.finish(), root, &delete_opts(), fallback).unwrap();

        let mut l2 = Layer::new();
        // A dir entry on an existing dir keeps its content, updates metadata.
        l2.dir("d/", M::mode(0o700))
            // A file replaces a dir (and its content).
            .file("gone", b"now a file", M::default())
            // A dir replaces a file.
            .dir("f/", M::mode(0o755))
            // A file replaces a symlink: the symlink is replaced, never followed.
            .file("link", b"not through the link", M::default())
            // A new file under a hardlinked name must not change the other name.
            .file("shared2", b"new", M::default());
        apply(l2.finish(), root, &delete_opts(), fallback).unwrap();

        assert_eq!(fs::read(root.join("d/keep")).unwrap(), b"lower");
        assert_eq!(fs::metadata(root.join("d")).unwrap().mode() & 0o7777, 0o700);
        assert_eq!(fs::read(root.join("gone")).unwrap(), b"now a file");
        assert!(fs::metadata(root.join("f")).unwrap().is_dir());
        let md = fs::symlink_metadata(root.join("link")).unwrap();
        assert!(md.file_type().is_file());
        assert_eq!(
            fs::read(root.join("link")).unwrap(),
            b"not through the link"
        );
        assert_eq!(fs::read(root.join("shared")).unwrap(), b"shared");
        assert_eq!(fs::read(root.join("shared2")).unwrap(), b"new");
    }
}

#[test]
fn merged_usr_layout_works() {
    for fallback in [false, true] {
        let t = tempfile::tempdir().unwrap();
        let mut l = Layer::new();
        l.dir("usr/", M::mode(0o755))
            .dir("usr/lib/", M::mode(0o755))
            .symlink("lib", "usr/lib")
            .symlink("lib64", "/usr/lib")
            .dir("lib/x86_64-linux-gnu/", M::mode(0o755))
            .file("lib/x86_64-linux-gnu/libc.so.6", b"libc", M::mode(0o755))
            .file("lib64/ld-linux-x86-64.so.2", b"ld", M::mode(0o755))
            // A parent that no entry created is made inside the root too.
            .file("lib/implicit/dir/file", b"i", M::default());
        apply(l.finish(), t.path(), &delete_opts(), fallback).unwrap();
        let root = t.path();
        assert_eq!(
            fs::read(root.join("usr/lib/x86_64-linux-gnu/libc.so.6")).unwrap(),
            b"libc"
        );
        assert_eq!(
            fs::read(root.join("usr/lib/ld-linux-x86-64.so.2")).unwrap(),
            b"ld"
        );
        assert_eq!(
            fs::read(root.join("usr/lib/implicit/dir/file")).unwrap(),
            b"i"
        );
        assert!(fs::symlink_metadata(root.join("lib"))
            .unwrap()
            .file_type()
            .is_symlink());
    }
}

/// Layer 1 for the whiteout tests.
fn lower_layer() -> Vec<u8> {
    let mut l = Layer::new();
    l.dir("a/", M::mode(0o755))
        .file("a/x", b"x", M::default())
        .file("a/y", b"y", M::default())
        .dir("b/", M::mode(0o755))
        .file("b/z", b"z", M::default())
        .file("c", b"c", M::default())
        .dir("d/", M::mode(0o755))
        .file("d/old1", b"o1", M::default())
        .dir("d/sub/", M::mode(0o755))
        .file("d/sub/old2", b"o2", M::default())
        .dir("d/lowersub/", M::mode(0o755))
        .file("d/lowersub/old3", b"o3", M::default());
    l.finish()
}

/// Layer 2: whiteouts for a/x, b (a dir) and c; d made opaque, with entries before and after
/// the marker; a whiteout for something absent; a same-layer file with a whiteout.
fn whiteout_layer() -> Vec<u8> {
    let mut l = Layer::new();
    l.file("a/.wh.x", b"", M::default())
        .file(".wh.b", b"", M::default())
        .file(".wh.c", b"", M::default())
        .file(".wh.never-existed", b"", M::default())
        .dir("d/", M::mode(0o755))
        .file("d/new", b"new", M::default())
        .dir("d/sub/", M::mode(0o755))
        .file("d/sub/keep", b"k", M::default())
        .file("d/.wh..wh..opq", b"", M::default())
        .file("d/after", b"after", M::default())
        .file("e", b"same layer", M::default())
        .file(".wh.e", b"", M::default());
    l.finish()
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn whiteouts_in_delete_mode() {
    for fallback in [false, true] {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        apply(lower_layer(), root, &delete_opts(), fallback).unwrap();
        apply(whiteout_layer(), root, &delete_opts(), fallback).unwrap();
        assert_eq!(
            names(root),
            ["a", "d", "e"],
            "b and c deleted, no .wh. entries"
        );
        assert_eq!(names(&root.join("a")), ["y"]);
        assert_eq!(
            names(&root.join("d")),
            ["after", "new", "sub"],
            "opaque dir keeps this layer's entries only"
        );
        assert_eq!(
            names(&root.join("d/sub")),
            ["keep"],
            "lower content of a re-created subdir is gone"
        );
        assert_eq!(
            fs::read(root.join("e")).unwrap(),
            b"same layer",
            "whiteouts hide lower layers only"
        );
    }
}

#[test]
fn whiteouts_in_overlay_upper_mode_and_the_mounted_view() {
    for fallback in [false, true] {
        let t = tempfile::tempdir().unwrap();
        let (lower, upper, work, merged) = (
            t.path().join("l"),
            t.path().join("u"),
            t.path().join("w"),
            t.path().join("m"),
        );
        for d in [&lower, &upper, &work, &merged] {
            fs::create_dir(d).unwrap();
        }
        apply(lower_layer(), &lower, &delete_opts(), fallback).unwrap();
        apply(whiteout_layer(), &upper, &upper_opts(), fallback).unwrap();

        // The upper dir, as overlayfs wants it.
        for w in ["a/x", "b", "c", "never-existed"] {
            let md = fs::symlink_metadata(upper.join(w)).unwrap_or_else(|e| panic!("{w}: {e}"));
            assert!(
                md.file_type().is_char_device(),
                "{w} must be a whiteout device"
            );
            assert_eq!(md.rdev(), 0, "{w} must be 0/0");
        }
        assert_eq!(
            getxattr(&upper.join("d"), "trusted.overlay.opaque").as_deref(),
            Some(&b"y"[..])
        );
        assert!(fs::read_dir(&upper).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".wh.")));
        assert!(fs::symlink_metadata(upper.join("d/.wh..wh..opq")).is_err());
        assert_eq!(fs::read(upper.join("e")).unwrap(), b"same layer");

        // And the kernel agrees.
        let _m = OverlayMount::new(&lower, &upper, &work, &merged);
        assert_eq!(names(&merged), ["a", "d", "e"]);
        assert_eq!(names(&merged.join("a")), ["y"]);
        assert_eq!(names(&merged.join("d")), ["after", "new", "sub"]);
        assert_eq!(
            names(&merged.join("d/sub")),
            ["keep"],
            "sub is opaque because its parent is"
        );
        assert_eq!(fs::read(merged.join("d/after")).unwrap(), b"after");
    }
}

#[test]
fn truncated_and_corrupt_streams_fail_clearly() {
    let mut l = Layer::new();
    l.file("big", &vec![7u8; 100_000], M::default())
        .file("second", b"2", M::default());
    let tar = l.finish();

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("cut in file content", tar[..50_000].to_vec(), "big"),
        (
            "cut in a header",
            tar[..512 + 100_352 + 100].to_vec(),
            "after \"big\"",
        ),
        // (Cut exactly after the last entry is an end: tests/unterminated.rs.)
        (
            "truncated gzip",
            {
                let g = gzip(&tar);
                g[..g.len() / 2].to_vec()
            },
            "corrupt layer stream",
        ),
        (
            "corrupt gzip",
            {
                let mut g = gzip(&tar);
                let n = g.len();
                for b in &mut g[n / 3..n / 3 + 16] {
                    *b ^= 0x5a;
                }
                g
            },
            "corrupt layer stream",
        ),
        (
            "corrupt gzip trailer",
            {
                let mut g = gzip(&tar);
                let n = g.len();
                g[n - 6] ^= 0xff; // CRC32 in the trailer
                g
            },
            "corrupt layer stream",
        ),
        ("empty", Vec::new(), "empty stream"),
    ];
    for (what, data, needle) in cases {
        let t = tempfile::tempdir().unwrap();
        let err = apply(data, t.path(), &delete_opts(), false).expect_err(what);
        let msg = err.to_string();
        assert!(
            matches!(err, berth_layer::LayerError::Corrupt { .. }),
            "{what}: expected Corrupt, got {msg}"
        );
        assert!(
            msg.contains(needle),
            "{what}: {msg:?} should mention {needle:?}"
        );
    }
}

#[test]
fn unsupported_entry_type_is_named() {
    let mut l = Layer::new();
    l.raw("label", EntryType::new(b'V'), "", b"");
    let t = tempfile::tempdir().unwrap();
    let err = apply(l.finish(), t.path(), &delete_opts(), false).unwrap_err();
    assert!(
        matches!(err, berth_layer::LayerError::UnsupportedEntry { ref entry, .. } if entry == "label"),
        "{err}"
    );
}

#[test]
fn failure_returns_without_reading_the_rest_of_the_stream() {
    // A bad entry followed by an endless stream: apply must fail at once, not hang reading.
    let mut l = Layer::new();
    l.raw("../escape", EntryType::Regular, "", b"");
    let mut head = l.finish();
    head.truncate(1024); // header + empty content block, no end marker
    let endless = std::io::Cursor::new(head).chain(std::io::repeat(b'a'));
    let t = tempfile::tempdir().unwrap();
    let err = berth_layer::apply_layer(endless, t.path(), &delete_opts()).unwrap_err();
    assert!(
        matches!(err, berth_layer::LayerError::PathEscape { .. }),
        "{err}"
    );
}

/// A PAX header whose records claim 32 MiB (zeros: a 32 KB gzip layer). The tar crate reads
/// metadata records into memory whole; the applier stops it at 16 MiB with an error instead of
/// letting a small layer claim gigabytes of memory (found by fuzz/corpus/layer_apply).
#[test]
fn huge_metadata_records_are_refused() {
    for (kind, name) in [
        (EntryType::XHeader, "PaxHeader"),
        (EntryType::GNULongName, "././@LongLink"),
    ] {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_size(32 << 20);
        h.set_mode(0o644);
        h.set_cksum();
        let mut t = h.as_bytes().to_vec();
        t.resize(t.len() + (32 << 20), b'0');
        let mut l = Layer::new();
        l.file("after", b"x", M::default());
        t.extend_from_slice(&l.finish());
        for fallback in [false, true] {
            let root = tempfile::tempdir().unwrap();
            let err = apply(gzip(&t), root.path(), &delete_opts(), fallback).unwrap_err();
            assert!(
                matches!(err, berth_layer::LayerError::Corrupt { .. })
                    && err.to_string().contains("metadata records"),
                "{kind:?}: {err}"
            );
            assert!(!root.path().join("after").exists());
        }
    }
}
