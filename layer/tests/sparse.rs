//! GNU sparse entries: a few KB of layer can declare a file of any size, the rest holes. The
//! apply keeps holes as holes (no disk used for them, no time spent writing zeros) and refuses
//! a declared size over `MAX_SPARSE_FILE_SIZE`, naming the entry; nothing lands outside the
//! root either way.

mod common;

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use berth_layer::{LayerError, MAX_SPARSE_FILE_SIZE};
use common::*;

const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// Bytes of disk a tree takes (st_blocks), without following symlinks.
fn disk_usage(p: &Path) -> u64 {
    let m = fs::symlink_metadata(p).unwrap();
    let mut n = m.blocks() * 512;
    if m.is_dir() {
        for e in fs::read_dir(p).unwrap() {
            n += disk_usage(&e.unwrap().path());
        }
    }
    n
}

fn read_at(p: &Path, off: u64, len: usize) -> Vec<u8> {
    let f = fs::File::open(p).unwrap();
    let mut buf = vec![0xaa; len];
    f.read_exact_at(&mut buf, off).unwrap();
    buf
}

#[test]
fn a_sparse_file_keeps_its_holes_as_holes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    let a = vec![b'a'; 4096];
    let b = vec![b'b'; 512];
    // 2 GiB declared, data in the middle and a hole at the end; seven blocks, so the map goes
    // on in an extension header.
    let blocks: Vec<(u64, &[u8])> = vec![
        (0, &b[..]),
        (GIB, &a[..]),
        (GIB + 8192, &b[..]),
        (GIB + 16384, &b[..]),
        (GIB + 32768, &b[..]),
        (GIB + 65536, &b[..]),
        // GNU tar ends a file with a hole with an empty block at its end.
        (2 * GIB, &[][..]),
    ];
    let mut l = Layer::new();
    l.dir("var/", M::mode(0o755))
        .sparse("var/lastlog", 2 * GIB, &blocks)
        .file("var/after", b"next entry\n", M::default());
    let tar = l.finish();
    for fallback in [false, true] {
        let stats = apply(tar.clone(), &root, &delete_opts(), fallback).unwrap();
        let f = root.join("var/lastlog");
        let m = fs::metadata(&f).unwrap();
        assert_eq!(m.len(), 2 * GIB, "the declared size");
        assert!(
            m.blocks() * 512 < 1 << 20,
            "holes stayed holes: {} bytes on disk",
            m.blocks() * 512
        );
        assert_eq!(read_at(&f, 0, 512), b);
        assert_eq!(
            read_at(&f, 512, 4096),
            vec![0; 4096],
            "a hole reads as zeros"
        );
        assert_eq!(read_at(&f, GIB, 4096), a);
        assert_eq!(read_at(&f, GIB + 4096, 4096), vec![0; 4096]);
        assert_eq!(read_at(&f, GIB + 65536, 512), b);
        assert_eq!(read_at(&f, 2 * GIB - 4096, 4096), vec![0; 4096]);
        assert_eq!(
            fs::read(root.join("var/after")).unwrap(),
            b"next entry\n",
            "the entry after the sparse file is read from the right offset"
        );
        assert_eq!(
            stats.bytes,
            4096 + 5 * 512 + 11,
            "only data is counted as written"
        );
    }
}

#[test]
fn a_sparse_file_declaring_a_terabyte_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    let canary = Canary::new(tmp.path());
    let data = vec![b'x'; 4096];
    let mut l = Layer::new();
    l.dir("big/", M::mode(0o755))
        .sparse("big/disk.img", TIB, &[(TIB - 4096, &data[..])]);
    let tar = l.finish();
    assert!(tar.len() < 16 << 10, "a tiny layer: {} bytes", tar.len());
    for compressed in [tar.clone(), gzip(&tar)] {
        let err = apply(compressed, &root, &delete_opts(), false).unwrap_err();
        match &err {
            LayerError::InvalidEntry { entry, .. } => assert_eq!(entry, "big/disk.img"),
            other => panic!("expected InvalidEntry, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("big/disk.img")
                && msg.contains("GNU sparse")
                && msg.contains("1099511627776")
                && msg.contains(&format!("over {} GiB", MAX_SPARSE_FILE_SIZE >> 30)),
            "{msg}"
        );
        assert!(
            !root.join("big/disk.img").exists(),
            "nothing is made for the refused entry"
        );
        assert!(disk_usage(&root) < 1 << 20, "{}", disk_usage(&root));
    }
    canary.assert_untouched();
    let mut beside: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    beside.sort();
    assert_eq!(beside, ["canary", "root"], "nothing made outside the root");
}

#[test]
fn a_sparse_file_at_the_limit_is_applied_as_holes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    let mut l = Layer::new();
    l.sparse(
        "edge",
        MAX_SPARSE_FILE_SIZE,
        &[(0, &[b'e'; 512][..]), (MAX_SPARSE_FILE_SIZE, &[][..])],
    );
    apply(l.finish(), &root, &delete_opts(), false).unwrap();
    let m = fs::metadata(root.join("edge")).unwrap();
    assert_eq!(m.len(), MAX_SPARSE_FILE_SIZE);
    assert!(m.blocks() * 512 < 1 << 20, "{}", m.blocks() * 512);
}
