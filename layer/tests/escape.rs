//! Hostile layers: nothing may be written, linked or deleted outside the root. Every case runs
//! with openat2 and with the fallback walker. Layout per test: T/canary (outside), root T/a/b/root.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

use berth_layer::LayerError;
use common::*;
use tar::EntryType;

struct Setup {
    _t: tempfile::TempDir,
    top: PathBuf,
    root: PathBuf,
    canary: Canary,
}

fn setup() -> Setup {
    let t = tempfile::tempdir().unwrap();
    let top = t.path().canonicalize().unwrap();
    let root = top.join("a/b/root");
    fs::create_dir_all(&root).unwrap();
    let canary = Canary::new(&top);
    Setup {
        _t: t,
        top,
        root,
        canary,
    }
}

fn assert_escape(res: Result<berth_layer::ApplyStats, LayerError>, entry: &str, what: &str) {
    match res {
        Err(LayerError::PathEscape { entry: e, what: w }) => {
            assert_eq!(e, entry);
            assert_eq!(w, what);
        }
        other => panic!("expected PathEscape for {entry:?}, got {other:?}"),
    }
}

#[test]
fn dotdot_names_are_refused() {
    for fallback in [false, true] {
        for name in [
            "../../../canary",
            "/../canary",
            "a/../../../../canary",
            "x/../../canary",
        ] {
            let s = setup();
            let mut l = Layer::new();
            l.file("ok", b"fine", M::default())
                .raw(name, EntryType::Regular, "", b"pwned");
            assert_escape(
                apply(l.finish(), &s.root, &delete_opts(), fallback),
                name,
                "name",
            );
            s.canary.assert_untouched();
        }
    }
}

#[test]
fn dotdot_in_pax_and_gnu_long_names_is_refused() {
    for fallback in [false, true] {
        let long = format!("{}../../../canary", "x/../".repeat(40));
        for pax in [true, false] {
            let s = setup();
            let mut l = Layer::new();
            if pax {
                l.pax_path(&long);
            } else {
                l.gnu_long_name(&long);
            }
            l.raw("benign", EntryType::Regular, "", b"pwned");
            assert_escape(
                apply(l.finish(), &s.root, &delete_opts(), fallback),
                &long,
                "name",
            );
            s.canary.assert_untouched();
            assert!(!s.root.join("benign").exists());
        }
    }
}

#[test]
fn absolute_symlink_parent_is_resolved_inside_root() {
    // evil -> /<abs path of the dir holding the canary>; evil/canary must land in
    // ROOT/<abs path>/canary (contained, not refused).
    for fallback in [false, true] {
        let s = setup();
        let mut l = Layer::new();
        l.symlink("evil", s.top.to_str().unwrap())
            .file("evil/canary", b"pwned", M::default())
            .dir("evil/newdir/", M::mode(0o755));
        apply(l.finish(), &s.root, &delete_opts(), fallback).unwrap();
        s.canary.assert_untouched();
        let inside = s.root.join(s.top.strip_prefix("/").unwrap());
        assert_eq!(fs::read(inside.join("canary")).unwrap(), b"pwned");
        assert!(inside.join("newdir").is_dir());
        assert!(!s.top.join("newdir").exists());
    }
}

#[test]
fn relative_symlink_climbing_out_is_clamped_at_root() {
    for fallback in [false, true] {
        let s = setup();
        let mut l = Layer::new();
        // From ROOT, ../../.. is T: the canary's dir.
        l.symlink("evil", "../../..")
            .file("evil/canary", b"pwned", M::default())
            .symlink("sub/deeper", "../../../../../..")
            .file("sub/deeper/x", b"x", M::default());
        apply(l.finish(), &s.root, &delete_opts(), fallback).unwrap();
        s.canary.assert_untouched();
        // Contained: ".." at the root stays at the root.
        assert_eq!(fs::read(s.root.join("canary")).unwrap(), b"pwned");
        assert_eq!(fs::read(s.root.join("x")).unwrap(), b"x");
        assert!(!s.top.join("x").exists());
    }
}

#[test]
fn final_symlink_component_is_replaced_not_followed() {
    for fallback in [false, true] {
        let s = setup();
        let top_mode = fs::metadata(&s.top).unwrap().mode();
        let canary = s.canary.path.to_str().unwrap().to_string();
        let mut l = Layer::new();
        l.symlink("link", &canary)
            .file("link", b"pwned", M::default())
            .symlink("dirlink", s.top.to_str().unwrap())
            .dir("dirlink/", M::mode(0o777))
            .symlink("nodelink", &canary)
            .node("nodelink", EntryType::Fifo, 0, 0, M::default());
        apply(l.finish(), &s.root, &delete_opts(), fallback).unwrap();
        s.canary.assert_untouched();
        assert!(fs::symlink_metadata(s.root.join("link")).unwrap().is_file());
        assert!(fs::symlink_metadata(s.root.join("dirlink"))
            .unwrap()
            .is_dir());
        assert!(fs::symlink_metadata(s.root.join("nodelink"))
            .unwrap()
            .file_type()
            .is_fifo());
        assert_eq!(
            fs::metadata(&s.top).unwrap().mode(),
            top_mode,
            "outside dir's mode untouched"
        );
    }
}

#[test]
fn symlinked_parent_with_mode_and_owner_does_not_touch_outside() {
    // chmod/chown/xattrs/mtime through a symlinked parent stay inside the root.
    for fallback in [false, true] {
        let s = setup();
        let before = fs::metadata(&s.canary.path).unwrap();
        let mut l = Layer::new();
        l.symlink("evil", s.top.to_str().unwrap()).file(
            "evil/canary",
            b"pwned",
            M {
                mode: 0o4777,
                uid: 4242,
                gid: 4242,
                mtime: 1,
                xattrs: vec![("user.pwned", b"1")],
            },
        );
        apply(l.finish(), &s.root, &delete_opts(), fallback).unwrap();
        s.canary.assert_untouched();
        let after = fs::metadata(&s.canary.path).unwrap();
        assert_eq!(
            (before.mode(), before.uid(), before.mtime()),
            (after.mode(), after.uid(), after.mtime())
        );
        assert_eq!(getxattr(&s.canary.path, "user.pwned"), None);
    }
}

#[test]
fn hardlinks_cannot_reach_outside() {
    for fallback in [false, true] {
        // A dotdot target is refused.
        let s = setup();
        let mut l = Layer::new();
        l.raw("h", EntryType::Link, "../../../canary", b"");
        assert_escape(
            apply(l.finish(), &s.root, &delete_opts(), fallback),
            "h",
            "hardlink target",
        );
        s.canary.assert_untouched();

        // An absolute target names the file inside the root: missing there → error, host file
        // not linked.
        let s = setup();
        let host_links = fs::metadata("/etc/passwd").unwrap().nlink();
        let mut l = Layer::new();
        l.raw("passwd", EntryType::Link, "/etc/passwd", b"");
        let err = apply(l.finish(), &s.root, &delete_opts(), fallback).unwrap_err();
        assert!(
            matches!(err, LayerError::Entry { ref entry, .. } if entry == "passwd"),
            "{err}"
        );
        assert!(err.to_string().contains("hardlink"), "{err}");
        assert!(!s.root.join("passwd").exists());
        assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), host_links);

        // ... and present inside the root → linked to the root's file.
        let s = setup();
        let mut l = Layer::new();
        l.file("etc/passwd", b"inside", M::default()).raw(
            "passwd",
            EntryType::Link,
            "/etc/passwd",
            b"",
        );
        apply(l.finish(), &s.root, &delete_opts(), fallback).unwrap();
        assert_eq!(
            fs::metadata(s.root.join("passwd")).unwrap().ino(),
            fs::metadata(s.root.join("etc/passwd")).unwrap().ino()
        );
        assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), host_links);

        // Through a symlinked dir: resolved inside the root, the outside canary is not linked.
        let s = setup();
        let mut l = Layer::new();
        l.symlink("evil", s.top.to_str().unwrap())
            .raw("h", EntryType::Link, "evil/canary", b"");
        assert!(apply(l.finish(), &s.root, &delete_opts(), fallback).is_err());
        s.canary.assert_untouched();

        // A hardlink to a symlink links the symlink itself.
        let s = setup();
        let mut l = Layer::new();
        l.symlink("sl", s.canary.path.to_str().unwrap())
            .raw("h", EntryType::Link, "sl", b"");
        apply(l.finish(), &s.root, &delete_opts(), fallback).unwrap();
        assert!(fs::symlink_metadata(s.root.join("h"))
            .unwrap()
            .file_type()
            .is_symlink());
        s.canary.assert_untouched();
    }
}

#[test]
fn whiteouts_cannot_delete_outside() {
    for fallback in [false, true] {
        for opts in [delete_opts(), upper_opts()] {
            for (name, what) in [
                ("../../../.wh.canary", "name"),
                ("x/../../../../.wh.canary", "name"),
                (".wh...", "whiteout"),
                ("sub/.wh...", "whiteout"),
            ] {
                let s = setup();
                fs::create_dir(s.root.join("sub")).unwrap();
                let mut l = Layer::new();
                l.raw(name, EntryType::Regular, "", b"");
                assert_escape(apply(l.finish(), &s.root, &opts, fallback), name, what);
                s.canary.assert_untouched();
                assert!(s.root.join("sub").is_dir());
            }
            // Through a symlinked dir: the whiteout applies inside the root.
            let s = setup();
            let mut l = Layer::new();
            l.symlink("evil", s.top.to_str().unwrap())
                .raw("evil/.wh.canary", EntryType::Regular, "", b"")
                .symlink("up", "../../..")
                .raw("up/.wh.canary", EntryType::Regular, "", b"")
                .raw("evil/.wh..wh..opq", EntryType::Regular, "", b"");
            apply(l.finish(), &s.root, &opts, fallback).unwrap();
            s.canary.assert_untouched();
            assert!(
                s.top.join("a").is_dir(),
                "opaque marker must not empty the outside dir"
            );
        }
    }
}

#[test]
fn symlink_loops_fail_cleanly() {
    for fallback in [false, true] {
        let s = setup();
        let mut l = Layer::new();
        l.symlink("loop1", "loop2")
            .symlink("loop2", "loop1")
            .file("loop1/x", b"x", M::default());
        let err = apply(l.finish(), &s.root, &delete_opts(), fallback).unwrap_err();
        assert!(
            matches!(err, LayerError::Entry { ref entry, .. } if entry == "loop1/x"),
            "{err}"
        );
        s.canary.assert_untouched();
    }
}
