//! `berth check` against berthd, and `berthd check` offline: a clean store is clean (exit 0); a
//! flipped byte in a blob is reported by digest (exit 1) and `--repair` quarantines it while the
//! image stays, reported broken; an orphan snapshot directory is removed by `--repair`; a
//! container's task whose supervisor died is reported; a cgroup of a container without a task
//! is removed offline; the offline check of a stopped daemon finds the same as the online one,
//! and is refused while berthd runs; bad input is a clear error (exit 2). `hack/torture.sh`
//! with a few trials runs here too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use berth_integration::bins;
use berth_integration::manager::image::hex;
use berth_integration::manager::tasks::{
    import, remove_namespace_cgroups, run_image, supervisors_under, Cleanup,
};
use berth_integration::manager::{mounts_under, unique, Berthd, Out};

const IMAGE: &str = "docker.io/berth/check:v1";

fn daemon(ns: &str) -> (Berthd, berth_integration::manager::image::Image) {
    let d = Berthd::start().unwrap();
    let img = run_image(IMAGE).unwrap();
    import(&d, ns, &img).unwrap();
    (d, img)
}

fn blob_path(d: &Berthd, digest: &str) -> PathBuf {
    d.root()
        .join("io.containerd.content.v1.content/blobs/sha256")
        .join(hex(digest))
}

/// The snapshot directories of the store (whichever snapshotter berthd chose).
fn snapshots_dir(d: &Berthd) -> PathBuf {
    let o = d
        .root()
        .join("io.containerd.snapshotter.v1.overlayfs/snapshots");
    if o.is_dir() {
        o
    } else {
        d.root()
            .join("io.containerd.snapshotter.v1.native/snapshots")
    }
}

/// Sets `path`'s mtime an hour back: older than the running daemon's grace period, so the
/// online check may call it an orphan.
fn age(path: &Path) {
    let f = std::fs::File::open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
}

fn flip_a_byte(path: &Path) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    let at = f.metadata().unwrap().len() / 2;
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, at).unwrap();
}

fn out_of(o: std::process::Output) -> Out {
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn offline(d: &Berthd, args: &[&str]) -> Out {
    let mut cmd = Command::new(bins::berthd());
    cmd.arg("check")
        .arg("--root")
        .arg(d.root())
        .arg("--state")
        .arg(d.state())
        .args(args);
    out_of(cmd.output().unwrap())
}

/// The finding lines of a check's output (its last line is the summary).
fn findings(out: &Out) -> Vec<String> {
    let mut v: Vec<String> = out.stdout.lines().map(str::to_string).collect();
    v.pop();
    v
}

#[test]
fn a_clean_store_with_a_running_container_is_clean() {
    let ns = unique("chk");
    let (d, _img) = daemon(&ns);
    let _g = Cleanup::new(&d, &ns);
    let id = unique("c");
    d.berth(&ns, &["run", "-d", IMAGE, &id, "sleep", "1000"])
        .ok();
    let out = d.berth(&ns, &["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    let last = out.stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("clean: "), "{out:?}");
    assert!(last.contains("1 containers checked"), "{out:?}");
    let json = d.berth(&ns, &["--format", "json", "check"]).json();
    assert_eq!(json["clean"], true);
    assert!(json["check"]["blobs"].as_u64().unwrap() >= 4, "{json}");
}

#[test]
fn a_flipped_byte_is_reported_and_quarantined_and_the_image_stays_broken() {
    let ns = unique("chk");
    let (d, img) = daemon(&ns);
    let _g = Cleanup::new(&d, &ns);
    let layer = &img.layers[1].digest;
    let path = blob_path(&d, layer);
    flip_a_byte(&path);
    let out = d.berth(&ns, &["check"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with(&format!("corrupt-blob {layer}: "))),
        "{out:?}"
    );
    assert!(out.stdout.contains("1 problem found"), "{out:?}");

    let out = d.berth(&ns, &["check", "--repair"]);
    assert_eq!(out.code, 1, "the image still lacks its layer: {out:?}");
    let repaired = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("corrupt-blob {layer}: ")))
        .unwrap_or_else(|| panic!("{out:?}"));
    assert!(repaired.ends_with("[repaired]"), "{repaired}");
    assert!(repaired.contains("quarantine"), "{repaired}");
    // The re-check names the image whose layer is gone.
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("left: missing-blob")
                && l.contains(&format!("{ns}/{IMAGE}"))
                && l.contains(layer.as_str())),
        "{out:?}"
    );
    assert!(!path.exists());
    let q = d
        .root()
        .join("io.containerd.content.v1.content/quarantine")
        .join(hex(layer));
    assert!(q.is_file(), "{q:?}");
    // Not silently deleted: the image is still listed.
    let ls = d.berth(&ns, &["images", "ls", "-q"]);
    assert!(ls.ok().lines().any(|l| l == IMAGE), "{ls:?}");
    // A second check says the same (the store is not "clean" by forgetting).
    let out = d.berth(&ns, &["check"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("missing-blob"), "{out:?}");
}

#[test]
fn an_orphan_snapshot_dir_is_reported_and_removed_by_repair() {
    let ns = unique("chk");
    let (d, _img) = daemon(&ns);
    let _g = Cleanup::new(&d, &ns);
    let orphan = snapshots_dir(&d).join("987654");
    std::fs::create_dir_all(orphan.join("fs/etc")).unwrap();
    std::fs::write(orphan.join("fs/etc/x"), "x").unwrap();
    // Young: a running berthd may be making it.
    let out = d.berth(&ns, &["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    age(&orphan);
    let out = d.berth(&ns, &["check"]);
    assert_eq!(out.code, 1, "{out:?}");
    let line = format!("orphan-snapshot-dir {}: ", orphan.display());
    assert!(out.stdout.lines().any(|l| l.starts_with(&line)), "{out:?}");
    let out = d.berth(&ns, &["check", "--repair"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("re-check clean"), "{out:?}");
    assert!(!orphan.exists());
    assert_eq!(d.berth(&ns, &["check"]).code, 0);
}

#[test]
fn a_task_whose_supervisor_died_is_reported() {
    let ns = unique("chk");
    let (d, _img) = daemon(&ns);
    let _g = Cleanup::new(&d, &ns);
    let id = unique("c");
    d.berth(&ns, &["run", "-d", IMAGE, &id, "sleep", "1000"])
        .ok();
    for pid in supervisors_under(&d.state().join("tasks").join(&ns)) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let out = d.berth(&ns, &["check", "--repair"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with(&format!("lost-supervisor {ns}/{id}: "))
                && l.ends_with("[not repaired]")),
        "{out:?}"
    );
}

/// Removes a cgroup tree the test made, and the namespace's parent, on drop.
struct CgroupGuard(Vec<PathBuf>, String);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir(d);
        }
        remove_namespace_cgroups(&self.1);
    }
}

#[test]
fn offline_check_sees_what_the_online_check_sees_and_repairs_cgroups() {
    let ns = unique("chk");
    // No task runs here: the temp dirs and the cgroup guards are all there is to clean up.
    let (mut d, img) = daemon(&ns);
    // A container record with no task, and a cgroup of its name (as a crash mid-delete
    // leaves one): berth's, since the record is.
    let id = unique("c");
    d.ctr(&ns, &["containers", "create", IMAGE, &id]).ok();
    let pids = PathBuf::from("/sys/fs/cgroup/pids");
    let cg = pids.join(&ns).join(&id);
    let _cg = CgroupGuard(vec![cg.clone()], ns.clone());
    let have_cgroup = pids.is_dir() && std::fs::create_dir_all(&cg).is_ok();
    // A cgroup of the same namespace no record names: never touched.
    let other = pids.join(&ns).join("not-berths");
    let _other = CgroupGuard(vec![other.clone()], ns.clone());
    if have_cgroup {
        std::fs::create_dir_all(&other).unwrap();
    }
    flip_a_byte(&blob_path(&d, &img.layers[0].digest));
    let orphan = snapshots_dir(&d).join("876543");
    std::fs::create_dir_all(orphan.join("fs")).unwrap();
    age(&orphan);

    // Refused while berthd holds the root.
    let out = offline(&d, &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("a berthd is running on"), "{out:?}");

    let online = d.berth(&ns, &["check"]);
    assert_eq!(online.code, 1, "{online:?}");
    d.stop_with(nix::sys::signal::Signal::SIGTERM);
    let out = offline(&d, &[]);
    assert_eq!(out.code, 1, "{out:?}");
    let mut want = findings(&online);
    let mut got: Vec<String> = findings(&out);
    // The online check's grace period hides a cgroup made a moment ago; offline has none.
    let line = format!("orphan-cgroup /{ns}/{id}: ");
    if have_cgroup {
        assert!(got.iter().any(|l| l.starts_with(&line)), "{out:?}");
    }
    got.retain(|l| !l.starts_with(&line));
    want.retain(|l| !l.starts_with(&line));
    assert!(
        !got.iter().any(|l| l.contains("not-berths")),
        "a cgroup no record names is reported: {out:?}"
    );
    want.sort();
    got.sort();
    assert_eq!(
        got, want,
        "offline:\n{}\nonline:\n{}",
        out.stdout, online.stdout
    );
    assert!(
        got.iter().any(|l| l.starts_with("corrupt-blob"))
            && got.iter().any(|l| l.starts_with("orphan-snapshot-dir")),
        "{got:?}"
    );

    let out = offline(&d, &["--repair"]);
    assert_eq!(
        out.code, 1,
        "a quarantined layer leaves the image broken: {out:?}"
    );
    assert!(!orphan.exists());
    if have_cgroup {
        assert!(!cg.exists(), "{out:?}");
        assert!(other.exists(), "a cgroup no record names was touched");
    }
    assert!(out.stdout.contains("left: missing-blob"), "{out:?}");
    // The daemon starts again on the repaired store.
    d.restart().unwrap();
    let ls = d.berth(&ns, &["images", "ls", "-q"]);
    assert!(ls.ok().lines().any(|l| l == IMAGE), "{ls:?}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("missing");
    let out = out_of(
        Command::new(bins::berthd())
            .arg("check")
            .arg("--root")
            .arg(&missing)
            .arg("--state")
            .arg(t.path())
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("--root") && out.stderr.contains("No such file"),
        "{out:?}"
    );
    assert!(!missing.exists(), "the check created its root");
    // A directory that is not a berthd root.
    let out = out_of(
        Command::new(bins::berthd())
            .args(["check", "--root"])
            .arg(t.path())
            .arg("--state")
            .arg(t.path())
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("not a berthd root"), "{out:?}");
    assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
    // No berthd on the socket.
    let out = out_of(
        Command::new(bins::berth())
            .arg("--address")
            .arg(t.path().join("none.sock"))
            .arg("check")
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(!out.stderr.is_empty(), "{out:?}");
}

/// Three trials, berthd or a supervisor killed in each.
#[test]
fn torture_script_runs_a_few_trials_without_losses() {
    let script = bins::workspace_root().join("hack/torture.sh");
    let out = out_of(
        Command::new("bash")
            .arg(&script)
            .env("BERTH_TORTURE_TRIALS", "3")
            .env("BERTH_TORTURE_SECONDS", "240")
            .env("BERTHD", bins::berthd())
            .env("BERTH", bins::berth())
            .current_dir(bins::workspace_root())
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("trials 3"), "{out:?}");
}

#[test]
fn a_temporary_mount_of_a_killed_berthd_is_removed_at_the_next_start() {
    let ns = unique("chk");
    let (mut d, _img) = daemon(&ns);
    d.crash();
    // What a berthd killed in the middle of a diff or a commit leaves: a tree mounted on a
    // directory under <state>/tmpmounts named after its pid (two mounts stacked here).
    let left = d.state().join("tmpmounts").join("m-999999-1");
    std::fs::create_dir_all(&left).unwrap();
    // Unmounted by the test too if berthd does not (a failing test leaves nothing).
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            while nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH).is_ok() {}
            let _ = std::fs::remove_dir(self.0);
        }
    }
    let _unmount = Unmount(&left);
    for _ in 0..2 {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&left)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::write(left.join("f"), "x").unwrap();
    }
    d.restart().unwrap();
    assert_eq!(
        mounts_under(&d.state()),
        Vec::<PathBuf>::new(),
        "mounts left"
    );
    assert!(!left.exists(), "{} still there", left.display());
    let out = d.berth(&ns, &["check"]);
    assert_eq!(out.code, 0, "{out:?}");
}

/// Removes a test's cgroup (every hierarchy) even when the test fails.
struct BundleCgroup(String);

impl Drop for BundleCgroup {
    fn drop(&mut self) {
        berth_integration::runtime::guard::remove_cgroups(&self.0);
    }
}

/// Runs the runtime's create of `id` under `rt_root` and SIGKILLs it (a createRuntime hook)
/// once the cgroup exists and the init is cloned: the state dir has `creating-cgroup.json` and
/// no `state.json`. Returns the dir, the bundle's cgroup path and the bundle.
fn a_cut_short_create(
    rt_root: &Path,
    id: &str,
) -> (PathBuf, String, berth_integration::runtime::Bundle) {
    let mut bundle = berth_integration::runtime::Bundle::new().unwrap();
    bundle.args(&["sleep", "1000"]);
    bundle.config_mut()["hooks"] = serde_json::json!({
        "createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "kill -9 $PPID"]}]
    });
    bundle.save().unwrap();
    let cgroup = bundle.cgroup_path().to_string();
    let out = Command::new(bins::berth_runc())
        .arg("--root")
        .arg(rt_root)
        .args(["create", "--bundle"])
        .arg(bundle.path())
        .arg(id)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the create was not killed: {out:?}");
    let dir = rt_root.join(id);
    assert!(
        dir.join("creating-cgroup.json").is_file() && !dir.join("state.json").exists(),
        "no cut-short create in {}",
        dir.display()
    );
    (dir, cgroup, bundle)
}

/// A create cut short while berthd runs (a runtime killed mid-create) is reported by the check
/// once it is older than the grace period, and `--repair` has the runtime delete its state dir
/// and the cgroup it recorded.
#[test]
fn a_create_cut_short_while_berthd_runs_is_reported_and_repaired() {
    let ns = unique("chk");
    let (d, _img) = daemon(&ns);
    let _g = Cleanup::new(&d, &ns);
    let id = unique("cut");
    let rt_root = d.state().join("runtime").join(&ns);
    let (dir, cgroup, _bundle) = a_cut_short_create(&rt_root, &id);
    let _cg = BundleCgroup(cgroup.clone());
    assert!(
        !berth_integration::runtime::kernel::cgroup_dirs(&cgroup).is_empty(),
        "the create made no cgroup"
    );
    // Young: a create may still be under way.
    let out = d.berth(&ns, &["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    age(&dir);
    let out = d.berth(&ns, &["check"]);
    assert_eq!(out.code, 1, "{out:?}");
    let line = format!("unfinished-runtime-state {ns}/{id}: ");
    assert!(out.stdout.lines().any(|l| l.starts_with(&line)), "{out:?}");
    let out = d.berth(&ns, &["check", "--repair"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("re-check clean"), "{out:?}");
    assert!(!dir.exists(), "{} still there", dir.display());
    assert_eq!(
        berth_integration::runtime::kernel::cgroup_dirs(&cgroup),
        Vec::<PathBuf>::new(),
        "the recorded cgroup is left"
    );
    assert_eq!(d.berth(&ns, &["check"]).code, 0);
}

/// A create killed before it saved state.json leaves the runtime's state dir and the cgroup it
/// recorded (every later create of that id failed "already exists"). berthd's next start has
/// the runtime delete both, and removes an interrupted build's work dir, before its socket
/// accepts anyone: the runtime here takes 2 s to delete, so a recovery that ran after the bind
/// would still be under way when the first client gets in.
#[test]
fn runtime_state_of_a_killed_create_is_removed_before_berthd_serves() {
    let tools = tempfile::tempdir().unwrap();
    let slow = tools.path().join("slow-delete-runtime");
    std::fs::write(
        &slow,
        format!(
            "#!/bin/sh\ncase \" $* \" in *\" delete \"*) sleep 2;; esac\nexec {} \"$@\"\n",
            bins::berth_runc().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut d = Berthd::start_with_env(&[("BERTH_RUNTIME", slow.to_str().unwrap())]).unwrap();
    d.crash();

    // The runtime's create, SIGKILLed by a createRuntime hook once the cgroup exists and the
    // init is cloned.
    let ns = unique("chk");
    let rt_root = d.state().join("runtime").join(&ns);
    let id = unique("cut");
    let (dir, cgroup, _bundle) = a_cut_short_create(&rt_root, &id);
    let _cg = BundleCgroup(cgroup.clone());
    let cgroups = berth_integration::runtime::kernel::cgroup_dirs(&cgroup);
    assert!(!cgroups.is_empty(), "the create made no cgroup");
    // The runtime's own compiled seccomp filters beside the state dirs: not a container.
    let cache = rt_root.join("seccomp-cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("f"), "filter").unwrap();
    // What a berthd killed during a build leaves.
    let build = d.state().join("builds").join(unique("b"));
    std::fs::create_dir_all(build.join("ctx")).unwrap();

    d.restart().unwrap();
    // berthd's socket accepts: recovery is over.
    assert!(!dir.exists(), "{} still there", dir.display());
    assert_eq!(
        berth_integration::runtime::kernel::cgroup_dirs(&cgroup),
        Vec::<PathBuf>::new(),
        "the recorded cgroup is left (it was {cgroups:?})"
    );
    assert!(!build.exists(), "{} still there", build.display());
    assert!(cache.join("f").is_file(), "the seccomp cache went too");
    let log = d.log();
    assert!(
        log.contains("removed the runtime state of a create that was cut short"),
        "{log}"
    );
    // The id is free again.
    let out = Command::new(bins::berth_runc())
        .arg("--root")
        .arg(&rt_root)
        .arg("state")
        .arg(&id)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{out:?}"
    );
}
