//! Volumes on berthd: `berth volume create|ls|inspect|rm|prune`, `berth run -v/--mount/--tmpfs`,
//! copy-up from the image, anonymous volumes for the image's VOLUME list, and bad input that
//! leaves nothing behind.

use std::path::PathBuf;

use berth_integration::manager::image::{self, Entry, Image, Layer};
use berth_integration::manager::{mounts_under, unique, Berthd};

const IMAGE: &str = "docker.io/berth/berth-volumes:v1";

/// berthd for one test's namespace, cleaned up on drop.
use berth_integration::manager::tasks::NsDaemon as Daemon;

/// An image with content at /data (a file 0640, a symlink, a 0700 dir) and a VOLUME at /vol.
fn daemon(ns: &str) -> Daemon {
    let d = Berthd::start().unwrap();
    let mut entries = vec![Entry::Dir("bin", 0o755)];
    for a in ["bin/echo", "bin/cat", "bin/true", "bin/ls"] {
        entries.push(Entry::Symlink(a, "busybox"));
    }
    entries.extend([
        Entry::Dir("data", 0o750),
        Entry::File("data/hello", 0o640, b"from the image\n".to_vec()),
        Entry::Symlink("data/link", "hello"),
        Entry::Dir("data/sub", 0o700),
        Entry::File("data/sub/deep", 0o644, b"deep\n".to_vec()),
        Entry::Dir("vol", 0o755),
        Entry::File("vol/seed", 0o644, b"seed\n".to_vec()),
    ]);
    let img = Image::with_config(
        IMAGE,
        vec![
            image::base_layer().unwrap(),
            Layer::build(&entries).unwrap(),
        ],
        serde_json::json!({"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "Volumes": {"/vol": {}}}),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("i.tar");
    img.write_oci_archive(&tar).unwrap();
    d.ctr(ns, &["images", "import", tar.to_str().unwrap()]).ok();
    Daemon {
        d,
        ns: ns.to_string(),
    }
}

fn volume_dir(d: &Berthd, ns: &str, name: &str) -> PathBuf {
    d.root().join("volumes").join(ns).join(name)
}

/// The namespace's volumes, by `volume ls -q`.
fn volumes(d: &Berthd, ns: &str) -> Vec<String> {
    d.berth(ns, &["volume", "ls", "-q"])
        .ok()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Nothing left: no bundle, no mount, no container, no active snapshot, no volume (record or
/// directory).
#[track_caller]
fn assert_clean(d: &Berthd, ns: &str) {
    let tasks = d.state().join("tasks").join(ns);
    let left: Vec<_> = std::fs::read_dir(&tasks)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "bundles left: {left:?}");
    assert!(mounts_under(&d.state().join("tasks")).is_empty());
    assert_eq!(d.ctr(ns, &["containers", "ls", "-q"]).ok(), "");
    let snaps = d.ctr(ns, &["snapshots", "ls"]).ok().to_string();
    assert!(!snaps.contains("Active"), "{snaps}");
    assert_eq!(volumes(d, ns), Vec::<String>::new());
    let dirs: Vec<_> = std::fs::read_dir(d.root().join("volumes").join(ns))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(dirs.is_empty(), "volume dirs left: {dirs:?}");
}

#[test]
fn data_outlives_containers_ro_refuses_writes_and_in_use_volumes_stay() {
    let ns = unique("vol");
    let d = daemon(&ns);
    let out = d.berth(&ns, &["volume", "create", "--label", "a=b", "v1"]);
    assert_eq!(out.ok(), "v1\n");
    assert!(volume_dir(&d, &ns, "v1").join("_data").is_dir());
    let out = d.berth(&ns, &["volume", "create", "v1"]);
    assert!(
        out.stderr.contains("volume \"v1\": already exists"),
        "{out:?}"
    );
    let ls = d.berth(&ns, &["volume", "ls"]).ok().to_string();
    assert!(
        ls.contains("local") && ls.contains("v1") && ls.contains("a=b"),
        "{ls}"
    );

    // One container writes, the next reads.
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "-v",
            "v1:/data",
            IMAGE,
            &unique("c"),
            "sh",
            "-c",
            "echo written > /data/mine",
        ],
    );
    out.ok();
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "-v",
            "v1:/data",
            IMAGE,
            &unique("c"),
            "cat",
            "/data/mine",
        ],
    );
    assert_eq!(out.ok(), "written\n");
    assert_eq!(
        std::fs::read_to_string(volume_dir(&d, &ns, "v1").join("_data/mine")).unwrap(),
        "written\n"
    );

    // :ro refuses writes (and --mount readonly too).
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "-v",
            "v1:/data:ro",
            IMAGE,
            &unique("c"),
            "sh",
            "-c",
            "echo x > /data/other",
        ],
    );
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("Read-only file system"), "{out:?}");
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "--mount",
            "type=volume,src=v1,dst=/data,readonly",
            IMAGE,
            &unique("c"),
            "sh",
            "-c",
            "cat /data/mine; echo x > /data/other",
        ],
    );
    assert_ne!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "written\n");
    assert!(!volume_dir(&d, &ns, "v1").join("_data/other").exists());

    // A container record that names it keeps it: rm is refused, naming the container.
    let kept = unique("c");
    d.berth(&ns, &["run", "-v", "v1:/data", IMAGE, &kept, "true"])
        .ok();
    let out = d.berth(&ns, &["volume", "rm", "v1"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains(&format!("volume \"v1\" is in use by container(s) {kept}")),
        "{out:?}"
    );
    let prune = d.berth(&ns, &["volume", "prune", "--all"]);
    assert!(!prune.ok().contains("v1"), "{prune:?}");
    let inspect = d.berth(&ns, &["volume", "inspect", "v1"]).json();
    assert_eq!(inspect[0]["UsedBy"], serde_json::json!([kept]));
    assert_eq!(inspect[0]["Labels"]["a"], "b");
    assert!(volume_dir(&d, &ns, "v1").join("_data/mine").exists());

    // Once the container is gone the volume goes, and its data with it.
    d.berth(&ns, &["containers", "rm", &kept]).ok();
    // (its anonymous volume for the image's /vol goes with prune)
    d.berth(&ns, &["volume", "prune"]).ok();
    assert_eq!(d.berth(&ns, &["volume", "rm", "v1"]).ok(), "v1\n");
    assert!(!volume_dir(&d, &ns, "v1").exists());
    let out = d.berth(&ns, &["volume", "inspect", "v1"]);
    assert!(out.stderr.contains("volume \"v1\": not found"), "{out:?}");
    // A new volume of the same name starts empty (and is filled from the image again).
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "-v",
            "v1:/data",
            IMAGE,
            &unique("c"),
            "ls",
            "/data",
        ],
    );
    assert_eq!(out.ok(), "hello\nlink\nsub\n");
    d.berth(&ns, &["volume", "rm", "v1"]).ok();
    assert_clean(&d, &ns);
}

#[test]
fn copy_up_fills_an_empty_volume_from_the_image_once() {
    let ns = unique("volcp");
    let d = daemon(&ns);
    // Made by -v when missing, then filled with the image's /data: modes, symlinks, subdirs.
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "-v",
            "fresh:/data",
            IMAGE,
            &unique("c"),
            "sh",
            "-c",
            "cat /data/hello /data/sub/deep; busybox readlink /data/link; \
             busybox stat -c '%a %u' /data /data/hello /data/sub; \
             rm /data/hello; echo mine > /data/new",
        ],
    );
    assert_eq!(
        out.ok(),
        "from the image\ndeep\nhello\n750 0\n640 0\n700 0\n",
        "{out:?}"
    );
    assert_eq!(volumes(&d, &ns), vec!["fresh"]);
    // Not empty any more: not filled again, the container's changes stay.
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "-v",
            "fresh:/data",
            IMAGE,
            &unique("c"),
            "ls",
            "/data",
        ],
    );
    assert_eq!(out.ok(), "link\nnew\nsub\n");
    // nocopy: an empty volume stays empty.
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "-v",
            "empty:/data:nocopy",
            IMAGE,
            &unique("c"),
            "ls",
            "/data",
        ],
    );
    assert_eq!(out.ok(), "");

    // The image's VOLUME gets an anonymous volume, filled from the image; --rm removes it.
    let out = d.berth(
        &ns,
        &["run", "--rm", IMAGE, &unique("c"), "cat", "/vol/seed"],
    );
    assert_eq!(out.ok(), "seed\n");
    assert_eq!(volumes(&d, &ns), vec!["empty", "fresh"]);
    // Without --rm it stays with the container; prune takes it once the container is gone.
    let kept = unique("c");
    d.berth(&ns, &["run", IMAGE, &kept, "true"]).ok();
    let anon: Vec<String> = volumes(&d, &ns)
        .into_iter()
        .filter(|v| v != "empty" && v != "fresh")
        .collect();
    assert_eq!(anon.len(), 1, "{anon:?}");
    assert_eq!(anon[0].len(), 64);
    assert!(!d.berth(&ns, &["volume", "prune"]).ok().contains(&anon[0]));
    d.berth(&ns, &["containers", "rm", &kept]).ok();
    let pruned = d.berth(&ns, &["volume", "prune"]).ok().to_string();
    assert!(pruned.contains(&anon[0]), "{pruned}");
    assert!(
        !pruned.contains("fresh"),
        "named volumes need --all: {pruned}"
    );
    let pruned = d.berth(&ns, &["volume", "prune", "-a"]).ok().to_string();
    assert!(
        pruned.contains("fresh") && pruned.contains("empty"),
        "{pruned}"
    );
    assert_clean(&d, &ns);
}

#[test]
fn binds_tmpfs_and_driver_options() {
    let ns = unique("volbind");
    let d = daemon(&ns);
    let host = tempfile::tempdir().unwrap();
    let h = host.path().to_str().unwrap();
    std::fs::write(host.path().join("in"), "from the host\n").unwrap();
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "-v",
            &format!("{h}:/h"),
            "--mount",
            &format!("type=bind,source={h},target=/hro,readonly"),
            "--tmpfs",
            "/t:size=1m",
            IMAGE,
            &unique("c"),
            "sh",
            "-c",
            "cat /h/in; echo out > /h/out; echo x > /hro/y || echo refused; \
             busybox grep ' /t ' /proc/self/mounts",
        ],
    );
    let o = out.ok();
    assert!(
        o.starts_with("from the host\nrefused\ntmpfs /t tmpfs"),
        "{out:?}"
    );
    assert!(o.contains("size=1024k"), "{o}");
    assert_eq!(
        std::fs::read_to_string(host.path().join("out")).unwrap(),
        "out\n"
    );
    assert!(!host.path().join("y").exists());
    // A bind is never filled from the image.
    assert!(!host.path().join("hello").exists());

    // Driver options: a tmpfs volume, a bind volume.
    d.berth(
        &ns,
        &[
            "volume",
            "create",
            "-o",
            "type=tmpfs",
            "-o",
            "device=tmpfs",
            "-o",
            "o=size=2m",
            "tv",
        ],
    )
    .ok();
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "-v",
            "tv:/tv",
            IMAGE,
            &unique("c"),
            "sh",
            "-c",
            "busybox grep ' /tv ' /proc/self/mounts",
        ],
    );
    assert!(
        out.ok().contains("tmpfs /tv tmpfs") && out.ok().contains("size=2048k"),
        "{out:?}"
    );
    d.berth(
        &ns,
        &[
            "volume",
            "create",
            "-o",
            "type=none",
            "-o",
            "o=bind",
            "-o",
            &format!("device={h}"),
            "bv",
        ],
    )
    .ok();
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "-v",
            "bv:/bv",
            IMAGE,
            &unique("c"),
            "cat",
            "/bv/in",
        ],
    );
    assert_eq!(out.ok(), "from the host\n");
    d.berth(&ns, &["volume", "rm", "tv", "bv"]).ok();
    assert!(
        host.path().join("in").exists(),
        "removing a bind volume keeps the host's data"
    );
    assert_clean(&d, &ns);
}

#[test]
fn bad_volume_input_is_refused_by_name_and_leaves_nothing() {
    let ns = unique("volbad");
    let d = daemon(&ns);
    let cases: &[(&[&str], &str)] = &[
        (
            &["volume", "create", "../x"],
            "volume name \"../x\" is invalid",
        ),
        (
            &["volume", "create", "a/b"],
            "volume name \"a/b\" is invalid",
        ),
        (&["volume", "rm", "nosuch"], "volume \"nosuch\": not found"),
        (
            &["volume", "inspect", "nosuch"],
            "volume \"nosuch\": not found",
        ),
        (
            &["volume", "create", "-o", "type=nfs", "nfsvol"],
            "volume type \"nfs\" is not supported",
        ),
        (
            &[
                "volume",
                "create",
                "-o",
                "type=none",
                "-o",
                "o=bind",
                "-o",
                "device=/no/such/dir",
                "bvol",
            ],
            "/no/such/dir",
        ),
    ];
    for (args, want) in cases {
        let out = d.berth(&ns, args);
        assert_ne!(out.code, 0, "{args:?}: {out:?}");
        assert!(out.stderr.contains(want), "{args:?}: {out:?}");
    }
    assert_clean(&d, &ns);

    let run_cases: &[(&[&str], &str)] = &[
        (&["-v", "../etc:/data"], "volume name \"../etc\" is invalid"),
        (
            &["--mount", "type=volume,src=..,dst=/data"],
            "volume name \"..\" is invalid",
        ),
        (
            &["-v", "/no/such/path:/data"],
            "bind source path \"/no/such/path\" does not exist",
        ),
        // The named volume would be made first: the missing bind is found before anything.
        (
            &[
                "-v",
                "newvol:/data",
                "--mount",
                "type=bind,src=/no/such/path,dst=/x",
            ],
            "bind source path \"/no/such/path\" does not exist",
        ),
        (
            &["-v", "vv:/d", "--tmpfs", "/d"],
            "duplicate mount point /d",
        ),
        (
            &["--mount", "type=bind,src=/tmp,dst=/x,tmpfs-size=1m"],
            "tmpfs-size is only for type=tmpfs",
        ),
    ];
    for (flags, want) in run_cases {
        let id = unique("c");
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend([IMAGE, id.as_str(), "true"]);
        let out = d.berth(&ns, &args);
        assert_ne!(out.code, 0, "{flags:?}: {out:?}");
        assert!(out.stderr.contains(want), "{flags:?}: {out:?}");
        assert_clean(&d, &ns);
    }

    // A run that fails after making its volumes removes them again.
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "-v",
            "made:/data",
            IMAGE,
            &unique("c"),
            "/no/such/cmd",
        ],
    );
    assert_eq!(out.code, 127, "{out:?}");
    assert_clean(&d, &ns);
}
