//! Who may reach berthd and what a client may reach through it: the sockets' modes and
//! `--group`, a non-root user refused; one namespace's objects invisible and untouchable from
//! another; paths from clients that lead out of where they belong through symlinks (a mount
//! destination in the image, a directory swapped for a symlink while `docker cp` runs, a
//! volume whose directory became a symlink) never reaching the host.
//!
//! The runtime-level symlinked destination is `runtime_escape.rs`'s; here it comes through
//! `berth run` (bind, tmpfs and a named volume with copy-up, which berthd does on the host).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use berth_integration::bins;
use berth_integration::manager::image::{self, Entry, Image, Layer};
use berth_integration::manager::tasks::{self, NsDaemon};
use berth_integration::manager::{mounts_under, unique, Berthd, Out};

/// A command run as `nobody:nogroup` with no supplementary groups.
fn as_nobody(bin: &Path, args: &[&str]) -> Out {
    let o = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--reset-env",
            "--",
        ])
        .arg(bin)
        .args(args)
        .env("HOME", "/tmp")
        .output()
        .expect("running setpriv");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// The temp dir holding the sockets made traversable (0711), so that only the sockets' own
/// modes stand between another user and berthd.
fn open_dir(d: &Berthd) {
    std::fs::set_permissions(d.dir(), std::fs::Permissions::from_mode(0o711)).unwrap();
}

/// Image entries take `&'static str`; a test's few computed names live as long as it does.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn sock_arg(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

#[test]
fn the_sockets_are_roots_and_nobody_is_refused() {
    let d = Berthd::start().unwrap();
    open_dir(&d);
    let grpc = std::fs::metadata(d.socket()).unwrap();
    assert_eq!(grpc.mode() & 0o777, 0o600, "gRPC socket mode");
    assert_eq!((grpc.uid(), grpc.gid()), (0, 0));
    let docker = std::fs::metadata(d.docker_socket()).unwrap();
    assert_eq!(docker.mode() & 0o777, 0o660, "Docker socket mode");
    assert_eq!((docker.uid(), docker.gid()), (0, 0));
    // Root and state dirs: reachable by path, not listable.
    for dir in [d.root(), d.state()] {
        let md = std::fs::metadata(&dir).unwrap();
        assert_eq!(md.mode() & 0o777, 0o711, "{}", dir.display());
    }
    let out = as_nobody(Path::new("/bin/ls"), &[d.root().to_str().unwrap()]);
    assert!(out.err().contains("Permission denied"), "{out:?}");

    let addr = sock_arg(&d.socket());
    let out = as_nobody(&bins::berth(), &["--address", &addr, "version"]);
    let err = out.err();
    assert!(
        err.contains(&format!("permission denied on {addr}")) && err.contains("--group"),
        "{out:?}"
    );
    let host = format!("unix://{}", d.docker_socket().display());
    let out = as_nobody(
        Path::new(berth_integration::manager::daemon::DOCKER),
        &["-H", &host, "version"],
    );
    assert!(out.err().contains("permission denied"), "{out:?}");
    // Root still gets in.
    assert!(d.berth("default", &["version"]).ok().contains("Server"));
}

#[test]
fn a_group_opens_both_sockets_to_its_members() {
    let d = Berthd::start_with_config("group = \"nogroup\"\n").unwrap();
    open_dir(&d);
    for s in [d.socket(), d.docker_socket()] {
        let md = std::fs::metadata(&s).unwrap();
        assert_eq!(md.mode() & 0o777, 0o660, "{}", s.display());
        assert_eq!((md.uid(), md.gid()), (0, 65534), "{}", s.display());
    }
    let addr = sock_arg(&d.socket());
    let out = as_nobody(&bins::berth(), &["--address", &addr, "version"]);
    assert!(out.ok().contains("Server"), "{out:?}");
    let host = format!("unix://{}", d.docker_socket().display());
    let out = as_nobody(
        Path::new(berth_integration::manager::daemon::DOCKER),
        &["-H", &host, "version", "--format", "{{.Server.Os}}"],
    );
    assert_eq!(out.ok().trim(), "linux", "{out:?}");
}

#[test]
fn an_unknown_group_is_refused_at_start() {
    let err = Berthd::start_with_config("group = \"no-such-group-berth\"\n")
        .err()
        .expect("berthd started with an unknown group");
    let err = format!("{err:#}");
    assert!(
        err.contains("group \"no-such-group-berth\" (berthd --group) does not exist"),
        "{err}"
    );
}

const IMAGE: &str = "docker.io/berth/access:v1";

fn import(d: &Berthd, ns: &str, img: &Image) {
    tasks::import(d, ns, img).unwrap();
}

#[test]
fn a_namespace_cannot_see_or_touch_anothers_objects() {
    let d = Berthd::start().unwrap();
    let (a, b) = (unique("nsa"), unique("nsb"));
    let _ga = tasks::Cleanup::new(&d, &a);
    let _gb = tasks::Cleanup::new(&d, &b);
    import(&d, &b, &tasks::run_image(IMAGE).unwrap());
    let id = unique("c");
    d.berth(&b, &["run", "-d", IMAGE, &id, "sleep", "1000"])
        .ok();
    let lease = unique("lease");
    d.ctr(&b, &["leases", "create", "--id", &lease]).ok();
    // Namespace a exists and has nothing of b's.
    d.berth(&a, &["namespaces", "create", &a]).ok();
    assert!(!d.berth(&a, &["containers", "ls"]).ok().contains(&id));
    assert!(!d.berth(&a, &["images", "ls"]).ok().contains(IMAGE));
    assert!(!d.ctr(&a, &["leases", "ls"]).ok().contains(&lease));
    assert!(!d.berth(&a, &["snapshots", "ls"]).ok().contains(&id));

    let cases: &[&[&str]] = &[
        &["containers", "info", &id],
        &["containers", "rm", &id],
        &["tasks", "start", &id],
        &["tasks", "exec", "--exec-id", "x", &id, "true"],
        &["tasks", "kill", "-s", "KILL", &id],
        &["tasks", "rm", &id],
        &["images", "rm", IMAGE],
        &["snapshots", "rm", &id],
    ];
    for args in cases {
        let out = d.berth(&a, args);
        assert!(
            out.err().contains("not found"),
            "berth -n a {args:?}: {out:?}"
        );
    }
    let out = d.ctr(&a, &["leases", "rm", &lease]);
    assert!(out.err().contains("not found"), "{out:?}");

    // Nothing of b's changed.
    let ls = d.berth(&b, &["tasks", "ls"]).ok().to_string();
    assert!(ls.contains(&id) && ls.contains("RUNNING"), "{ls}");
    assert!(d.berth(&b, &["images", "ls"]).ok().contains(IMAGE));
    assert!(d.ctr(&b, &["leases", "ls"]).ok().contains(&lease));
    d.ctr(&b, &["leases", "rm", &lease]).ok();
}

/// Host dirs `<name>/{a,b,c}` under /var/tmp, each holding `marker` ("HOST"), removed on drop.
struct HostDirs(tempfile::TempDir);

impl HostDirs {
    fn new() -> HostDirs {
        let t = tempfile::Builder::new()
            .prefix("berth-access-host-")
            .tempdir_in("/var/tmp")
            .unwrap();
        for s in ["a", "b", "c"] {
            std::fs::create_dir(t.path().join(s)).unwrap();
            std::fs::write(t.path().join(s).join("marker"), "HOST").unwrap();
        }
        HostDirs(t)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// What each of a, b and c holds.
    #[track_caller]
    fn assert_untouched(&self) {
        for s in ["a", "b", "c"] {
            let names: Vec<_> = std::fs::read_dir(self.path().join(s))
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert_eq!(names, ["marker"], "{s}");
        }
        assert!(mounts_under(self.path()).is_empty());
    }
}

#[test]
fn mount_destinations_symlinked_out_of_the_image_stay_inside_it() {
    let host = HostDirs::new();
    let h = host.path().to_str().unwrap().to_string();
    let (a, b, c) = (
        leak(format!("{h}/a")),
        leak(format!("../../../../../..{h}/b")),
        leak(format!("{h}/c")),
    );
    let img = Image::new(
        IMAGE,
        vec![
            image::base_layer().unwrap(),
            Layer::build(&[
                Entry::Dir("bin", 0o755),
                Entry::Symlink("bin/echo", "busybox"),
                Entry::Symlink("bin/grep", "busybox"),
                Entry::Dir("mnt", 0o755),
                Entry::Symlink("mnt/out", a),
                Entry::Symlink("mnt/rel", b),
                Entry::Symlink("mnt/vol", c),
            ])
            .unwrap(),
        ],
    )
    .unwrap();
    let ns = unique("symdst");
    let d = NsDaemon {
        d: Berthd::start().unwrap(),
        ns: ns.clone(),
    };
    import(&d, &ns, &img);
    let src = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::write(src.path().join("from-bind"), "BIND").unwrap();
    let vol = unique("vol");
    let bind = format!("{}:/mnt/out", src.path().display());
    let volume = format!("{vol}:/mnt/vol");
    // Where each mount is in the container's own view: at the symlinks' targets inside it.
    let script = format!(
        "cat /mnt/out/from-bind; echo; \
         grep -c ' {h}/b ' /proc/self/mountinfo; \
         echo w > /mnt/rel/w && cat {h}/b/w; \
         echo v > /mnt/vol/v && ls {h}/c"
    );
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "-v",
            &bind,
            "--mount",
            "type=tmpfs,target=/mnt/rel",
            "-v",
            &volume,
            IMAGE,
            &unique("c"),
            "sh",
            "-c",
            &script,
        ],
    );
    assert_eq!(out.ok(), "BIND\n1\nw\nv\n", "{out:?}");
    host.assert_untouched();
    // The volume got what the container wrote, and nothing of the host's.
    let data = d.root().join("volumes").join(&ns).join(&vol).join("_data");
    let names: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["v"]);
    assert_eq!(
        std::fs::read_to_string(src.path().join("from-bind")).unwrap(),
        "BIND"
    );
    d.berth(&ns, &["volume", "rm", &vol]).ok();
}

#[test]
fn a_volume_whose_directory_became_a_symlink_is_refused() {
    let host = HostDirs::new();
    let ns = unique("symvol");
    let d = NsDaemon {
        d: Berthd::start().unwrap(),
        ns: ns.clone(),
    };
    import(&d, &ns, &tasks::run_image(IMAGE).unwrap());
    let vol = unique("vol");
    d.berth(&ns, &["volume", "create", &vol]).ok();
    let dir = d.root().join("volumes").join(&ns).join(&vol);
    // The volume's directory swapped for a symlink to a host dir whose _data holds a marker.
    std::fs::create_dir(host.path().join("a").join("_data")).unwrap();
    std::fs::write(host.path().join("a/_data/marker"), "HOST").unwrap();
    std::fs::rename(&dir, d.dir().join("moved")).unwrap();
    std::os::unix::fs::symlink(host.path().join("a"), &dir).unwrap();

    // With copy-up and without (then only the runtime's bind would have followed it).
    let copy = format!("{vol}:/data");
    let nocopy = format!("type=volume,src={vol},dst=/data,volume-nocopy");
    for flags in [["-v", copy.as_str()], ["--mount", nocopy.as_str()]] {
        let mut args = vec!["run", "--rm"];
        args.extend(flags);
        let id = unique("c");
        args.extend([IMAGE, id.as_str(), "cat", "/data/marker"]);
        let out = d.berth(&ns, &args);
        assert!(!out.stdout.contains("HOST"), "{flags:?}: {out:?}");
        assert!(
            out.err()
                .contains("is not a directory (a symlink is never followed)"),
            "{flags:?}: {out:?}"
        );
    }
    // Removing it removes the link, never what it leads to.
    d.berth(&ns, &["volume", "rm", &vol]).ok();
    assert!(std::fs::symlink_metadata(&dir).is_err(), "the link is left");
    assert_eq!(
        std::fs::read_to_string(host.path().join("a/_data/marker")).unwrap(),
        "HOST"
    );
    // A name with `../` never gets that far (the Docker API's: in the docker cp test).
    let out = d.berth(&ns, &["volume", "create", "../x"]);
    assert!(
        out.err().contains("volume name \"../x\" is invalid"),
        "{out:?}"
    );
    let out = d.berth(
        &ns,
        &[
            "run",
            "--rm",
            "-v",
            "../x:/data",
            IMAGE,
            &unique("c"),
            "true",
        ],
    );
    assert!(
        out.err().contains("volume name \"../x\" is invalid"),
        "{out:?}"
    );
    assert!(!d.root().join("volumes").join("x").exists());
}

/// renameat2(RENAME_EXCHANGE) of two names in one directory.
fn exchange(dir: &Path, a: &str, b: &str) -> nix::Result<()> {
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        &dir.join(a),
        nix::fcntl::AT_FDCWD,
        &dir.join(b),
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
}

#[test]
fn docker_cp_never_leaves_the_container_while_a_dir_is_swapped_for_a_symlink() {
    let host = HostDirs::new();
    let h = host.path().to_str().unwrap().to_string();
    let rel = h.trim_start_matches('/').to_string();
    let d = NsDaemon {
        d: Berthd::start_in_netns(&[]).unwrap(),
        ns: "moby".into(),
    };
    // /data/<h>/a/marker says "data", /<h>/a/marker (where /data -> / leads) says "root";
    // the host's says "HOST". /data is made by the container (an overlay upper dir: a
    // lower one could not be renamed).
    let mut entries = vec![Entry::Dir("bin", 0o755)];
    for a in ["bin/sleep", "bin/mkdir", "bin/echo", "bin/touch"] {
        entries.push(Entry::Symlink(a, "busybox"));
    }
    let mut acc = String::new();
    for part in rel.split('/').chain(["a"]) {
        acc = if acc.is_empty() {
            part.to_string()
        } else {
            format!("{acc}/{part}")
        };
        entries.push(Entry::Dir(leak(acc.clone()), 0o755));
    }
    entries.push(Entry::File(
        leak(format!("{rel}/a/marker")),
        0o644,
        b"root".to_vec(),
    ));
    entries.push(Entry::Symlink("swap", "/"));
    let img = Image::new(
        "docker.io/berth/access-cp:v1",
        vec![
            image::base_layer().unwrap(),
            Layer::build(&entries).unwrap(),
        ],
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let tar = tmp.path().join("i.tar");
    img.write_docker_archive(&tar).unwrap();
    d.docker(&["load", "-i", tar.to_str().unwrap()]).ok();
    let name = unique("cp");
    let setup = format!(
        "mkdir -p /data/{rel}/a && echo -n data > /data/{rel}/a/marker && touch /ready && \
         exec sleep 1000"
    );
    d.docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "berth/access-cp:v1",
        "sh",
        "-c",
        &setup,
    ])
    .ok();
    let id = d
        .docker(&["inspect", "--format", "{{.Id}}", &name])
        .ok()
        .trim()
        .to_string();
    let rootfs = d
        .state()
        .join("tasks")
        .join("moby")
        .join(&id)
        .join("rootfs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !rootfs.join("ready").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the container never got ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // Swap /data and /swap (a symlink to /) as fast as possible while docker cp runs.
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, rootfs) = (stop.clone(), rootfs.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                exchange(&rootfs, "data", "swap").expect("RENAME_EXCHANGE in the rootfs");
                n += 1;
            }
            n
        })
    };
    let src = format!("{name}:/data/{rel}/a/marker");
    let upload = tmp.path().join("uploaded");
    std::fs::write(&upload, "UP").unwrap();
    let dst = format!("{name}:/data/{rel}/a/");
    let (mut seen, mut copied_in) = (std::collections::BTreeSet::new(), 0);
    for _ in 0..60 {
        let out = d.docker(&["cp", &src, "-"]);
        if out.code == 0 {
            let mut ar = tar::Archive::new(out.stdout.as_bytes());
            for e in ar.entries().unwrap() {
                let mut e = e.unwrap();
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                seen.insert(s);
            }
        }
        if d.docker(&["cp", upload.to_str().unwrap(), &dst]).code == 0 {
            copied_in += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 100, "only {swaps} swaps");
    assert!(!seen.contains("HOST"), "read the host's file: {seen:?}");
    assert!(
        !seen.is_empty() && copied_in > 0,
        "no copy ever worked: {seen:?}"
    );
    host.assert_untouched();
    d.docker(&["rm", "-f", &name]).ok();
    let out = d.docker(&["volume", "create", "../x"]);
    assert!(
        out.err().contains("volume name \"../x\" is invalid"),
        "{out:?}"
    );
    let out = d.docker(&[
        "run",
        "--rm",
        "-v",
        "../x:/data",
        "berth/access-cp:v1",
        "true",
    ]);
    assert!(out.code != 0 && !out.stderr.is_empty(), "{out:?}");
    assert!(!d.root().join("volumes").join("x").exists());
}
