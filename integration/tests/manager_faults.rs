//! berthd under real faults: a disk that fills up during a pull, an import, an unpack and a
//! build's layer commit; a registry that resets the connection mid-blob, answers 500/503 or
//! stalls; a runtime that hangs on create, kill or delete. Each time the error must say what
//! happened, nothing half-made may stay visible (`berth check` clean), and the same operation
//! must work once the fault is gone.
//!
//! Every fault is local: the disk is a small tmpfs of the test's own ([`SmallDisk`],
//! unmounted on drop), the registries listen on 127.0.0.1, the hanging runtime is a shell
//! script in a temp dir wrapping berth-runc.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_integration::bins;
use berth_integration::manager::fake_registry::{biggest_layer, range_reply, serving, Fake, Reply};
use berth_integration::manager::registry::Registry;
use berth_integration::manager::tasks::{bundles, run_image, supervisors_under, NsDaemon};
use berth_integration::manager::{image, mounts_under, unique, Berthd, Out, SmallDisk};

/// berthd retrying a failed download after 50 ms (Docker: 5 s) and taking a stall of 1 s as
/// a failure (default 60 s).
const QUICK: &[(&str, &str)] = &[
    ("BERTH_PULL_RETRY_DELAY", "0.05"),
    ("BERTH_REGISTRY_TIMEOUT", "1"),
];

// ---------------------------------------------------------------------------------------
// Registry faults

/// The GETs of blob `digest` so far, with their Range headers.
fn gets_of(fake: &Fake, digest: &str) -> Vec<Option<String>> {
    fake.requests()
        .into_iter()
        .filter(|(l, _)| l.starts_with("GET") && l.ends_with(digest))
        .map(|(_, r)| r)
        .collect()
}

fn pull(d: &Berthd, ns: &str, reference: &str) -> Out {
    d.berth(
        ns,
        &[
            "--format",
            "json",
            "images",
            "pull",
            "--plain-http",
            reference,
        ],
    )
}

/// `berth check` exits 0 and reports nothing.
#[track_caller]
fn assert_check_clean(d: &Berthd, ns: &str) {
    let out = d.berth(ns, &["check"]);
    assert_eq!(
        out.code, 0,
        "berth check found problems:\n{}\n{}",
        out.stdout, out.stderr
    );
}

#[test]
fn a_reset_and_a_503_mid_blob_are_retried_and_resumed_within_one_pull() {
    let d = Berthd::start_with_env(QUICK).unwrap();
    let ns = unique("reset");
    let img = image::busybox_multi("x/y:z").unwrap();
    let big = biggest_layer(&img);
    let cut_at = big.gz.len() / 3;
    let big2 = big.clone();
    // 1st GET: a third of the layer, then a TCP reset; 2nd: 503; 3rd: the rest (Range).
    let fake = Fake::start(serving(&img, move |method, path, headers, n| {
        if method != "GET" || !path.ends_with(&big2.digest) {
            return None;
        }
        match n {
            1 => {
                let mut r = Reply::new(200, "application/octet-stream", big2.gz.clone());
                r.cut = Some(cut_at);
                r.reset = true;
                Some(r)
            }
            2 => Some(Reply::new(503, "text/plain", b"try later".to_vec())),
            _ => range_reply(&big2.gz, headers),
        }
    }));
    let reference = fake.reference("reset/img:v1");
    let out = pull(&d, &ns, &reference).json();
    assert_eq!(out["digest"], img.manifest_digest(), "{out}");
    assert_eq!(out["chain_id"], img.chain_id(), "{out}");
    // A reset loses what was in flight: the resume starts where berthd's data ends, at or
    // before the cut.
    let gets = gets_of(&fake, &big.digest);
    assert_eq!(gets.len(), 3, "{gets:?}");
    assert_eq!(gets[0], None, "{gets:?}");
    let from: usize = gets[1]
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse().ok())
        .unwrap_or(0);
    assert!(from > 0 && from <= cut_at, "{gets:?}");
    assert_eq!(
        gets[2], gets[1],
        "the try after the 503 resumes from the same offset"
    );
    let log = d.log();
    assert!(
        log.contains("download failed; retrying"),
        "berthd logs its retries:\n{log}"
    );
    assert_check_clean(&d, &ns);
    // The image is whole: its files read back.
    let snaps = d
        .berth(&ns, &["--format", "json", "snapshots", "ls"])
        .json();
    assert!(
        snaps
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s["key"] == img.chain_id())),
        "{snaps}"
    );
}

#[test]
fn server_errors_on_a_blob_are_retried_until_the_tries_run_out() {
    let d = Berthd::start_with_env(&[
        ("BERTH_PULL_RETRY_DELAY", "0.05"),
        ("BERTH_PULL_ATTEMPTS", "3"),
    ])
    .unwrap();
    let ns = unique("e500");
    let img = image::busybox_single("x/y:z").unwrap();
    let layer = img.layers[0].digest.clone();
    let l2 = layer.clone();
    let fake = Fake::start(serving(&img, move |method, path, _, _| {
        let repo = path.strip_prefix("/v2/")?.split('/').next()?;
        if method != "GET" || !path.ends_with(&l2) {
            return None;
        }
        match repo {
            "down" => Some(Reply::new(500, "text/plain", b"disk on fire".to_vec())),
            "gone" => Some(Reply::new(
                404,
                "application/json",
                br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}"#.to_vec(),
            )),
            _ => None,
        }
    }));
    let e = pull(&d, &ns, &fake.reference("down:v1")).err().to_string();
    assert!(
        e.contains("giving up after 3 tries")
            && e.contains("HTTP 500")
            && e.contains("disk on fire"),
        "{e}"
    );
    assert_eq!(gets_of(&fake, &layer).len(), 3, "{:?}", fake.requests());
    // A 404 is an answer, not a fault: asked once.
    let before = gets_of(&fake, &layer).len();
    let e = pull(&d, &ns, &fake.reference("gone:v1")).err().to_string();
    assert!(e.contains("BLOB_UNKNOWN"), "{e}");
    assert_eq!(gets_of(&fake, &layer).len(), before + 1);
    let ls = d.berth(&ns, &["images", "ls", "-q"]).ok().to_string();
    assert!(
        ls.trim().is_empty(),
        "a failed pull registered an image: {ls}"
    );
    assert_check_clean(&d, &ns);
    // The registry recovers: the same pull works.
    pull(&d, &ns, &fake.reference("fine:v1")).ok();
}

#[test]
fn a_stalled_body_times_out_and_is_resumed_while_a_slow_one_is_waited_for() {
    let d = Berthd::start_with_env(QUICK).unwrap();
    let ns = unique("stall");
    let img = image::busybox_multi("x/y:z").unwrap();
    let big = biggest_layer(&img);
    let cut_at = big.gz.len() / 2;
    let big2 = big.clone();
    let fake = Fake::start(serving(&img, move |method, path, headers, n| {
        let repo = path.strip_prefix("/v2/")?.split('/').next()?;
        if method != "GET" || !path.ends_with(&big2.digest) {
            return None;
        }
        let mut r = Reply::new(200, "application/octet-stream", big2.gz.clone());
        match repo {
            // Half the layer, then nothing for 20 s (berthd's timeout: 1 s).
            "stall" if n == 1 => {
                r.cut = Some(cut_at);
                r.stall = Some(Duration::from_secs(20));
                Some(r)
            }
            "stall" => range_reply(&big2.gz, headers),
            // Stalls every time.
            "dead" => {
                r.cut = Some(cut_at);
                r.stall = Some(Duration::from_secs(20));
                Some(r)
            }
            // Slow but never idle for long: 16 KiB every 20 ms.
            "slow" => {
                r.trickle = Some((16 << 10, Duration::from_millis(20)));
                Some(r)
            }
            _ => None,
        }
    }));
    let out = pull(&d, &ns, &fake.reference("stall/img:v1")).json();
    assert_eq!(out["digest"], img.manifest_digest(), "{out}");
    let gets = gets_of(&fake, &big.digest);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(
        gets[1].as_deref(),
        Some(format!("bytes={cut_at}-").as_str())
    );
    assert_check_clean(&d, &ns);

    let ns2 = unique("dead");
    let e = pull(&d, &ns2, &fake.reference("dead/img:v1"))
        .err()
        .to_string();
    assert!(
        e.contains("giving up after 5 tries") && e.contains("timed out"),
        "{e}"
    );
    let ls = d.berth(&ns2, &["images", "ls", "-q"]).ok().to_string();
    assert!(ls.trim().is_empty(), "{ls}");
    assert_check_clean(&d, &ns2);

    let ns3 = unique("slow");
    let out = pull(&d, &ns3, &fake.reference("slow/img:v1")).json();
    assert_eq!(out["digest"], img.manifest_digest(), "{out}");
    assert_eq!(gets_of(&fake, &big.digest).len(), 2 + 5 + 1);
    assert_check_clean(&d, &ns3);
}

#[test]
fn bad_fault_settings_are_refused_by_name() {
    for (var, value, says) in [
        (
            "BERTH_REGISTRY_TIMEOUT",
            "soon",
            "BERTH_REGISTRY_TIMEOUT=\"soon\"",
        ),
        ("BERTH_REGISTRY_TIMEOUT", "0", "registry_timeout"),
        ("BERTH_PULL_ATTEMPTS", "0", "pull_attempts"),
        ("BERTH_PULL_ATTEMPTS", "-2", "BERTH_PULL_ATTEMPTS=\"-2\""),
        ("BERTH_PULL_RETRY_DELAY", "-1", "pull_retry_delay"),
        ("BERTH_RUNTIME_TIMEOUT", "NaN", "runtime_timeout"),
    ] {
        let e = match Berthd::start_with_env(&[(var, value)]) {
            Ok(_) => panic!("berthd started with {var}={value}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(e.contains(says), "{var}={value}: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// A hanging runtime

/// A runtime that is berth-runc, except that it hangs (a `sleep` whose pid it writes to
/// `hung-<verb>.pid`) on each verb with a file `hang-<verb>` in its dir, and that a file
/// `kill-create` makes a create be SIGKILLed: `runtime` (a createRuntime hook added to the
/// bundle's config kills the runtime in the middle of create, its init cloned and waiting for
/// it) or `init` (the create finishes, then the init is killed before any start).
struct FakeRuntime {
    dir: tempfile::TempDir,
}

impl FakeRuntime {
    fn new() -> FakeRuntime {
        let dir = tempfile::Builder::new()
            .prefix("berth-fake-runtime-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let script = format!(
            "#!/bin/sh\n\
             verb=\n\
             for a in \"$@\"; do\n\
               case \"$a\" in create|start|kill|delete|state) verb=$a; break;; esac\n\
             done\n\
             if [ \"$verb\" = create ] && [ -e '{dir}/kill-create' ]; then\n\
               bundle=; pidfile=; prev=\n\
               for a in \"$@\"; do\n\
                 case \"$prev\" in --bundle) bundle=$a;; --pid-file) pidfile=$a;; esac\n\
                 prev=$a\n\
               done\n\
               case \"$(cat '{dir}/kill-create')\" in\n\
               runtime) sed -i '1s|^{{|{{\"hooks\":{{\"createRuntime\":[{{\"path\":\"/bin/sh\",\"args\":[\"sh\",\"-c\",\"kill -9 $PPID\"]}}]}},|' \"$bundle/config.json\";;\n\
               init) '{runc}' \"$@\" || exit; kill -9 \"$(cat \"$pidfile\")\"; exit 0;;\n\
               esac\n\
             fi\n\
             if [ -n \"$verb\" ] && [ -e '{dir}/hang-'\"$verb\" ]; then\n\
               sleep 1000 &\n\
               echo $! > '{dir}/hung-'\"$verb\"'.pid'\n\
               wait\n\
             fi\n\
             exec '{runc}' \"$@\"\n",
            dir = dir.path().display(),
            runc = bins::berth_runc().display()
        );
        let path = dir.path().join("fake-runc");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(script.as_bytes()).unwrap();
        drop(f);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        FakeRuntime { dir }
    }

    fn path(&self) -> String {
        self.dir.path().join("fake-runc").display().to_string()
    }

    fn hang(&self, verb: &str, on: bool) {
        let p = self.dir.path().join(format!("hang-{verb}"));
        if on {
            std::fs::write(p, "").unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }

    /// Makes every create be killed `how` ("runtime" or "init"), or none (None).
    fn kill_create(&self, how: Option<&str>) {
        let p = self.dir.path().join("kill-create");
        match how {
            Some(how) => std::fs::write(p, how).unwrap(),
            None => std::fs::remove_file(p).unwrap(),
        }
    }

    /// The hung `sleep` of `verb`, if it hung.
    fn hung_pid(&self, verb: &str) -> Option<i32> {
        std::fs::read_to_string(self.dir.path().join(format!("hung-{verb}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Cgroup dirs `/<ns>/<id>` on every hierarchy.
fn cgroups_of(ns: &str, id: &str) -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            matches!(right.split(' ').next(), Some("cgroup" | "cgroup2")).then(|| {
                left.split(' ')
                    .nth(4)
                    .map(|m| Path::new(m).join(ns).join(id))
            })?
        })
        .filter(|p| p.exists())
        .collect()
}

fn ns_daemon(env: &[(&str, &str)], ns: &str) -> NsDaemon {
    NsDaemon {
        d: Berthd::start_with_env(env).unwrap(),
        ns: ns.to_string(),
    }
}

#[test]
fn a_create_that_hangs_is_killed_after_the_timeout_and_leaves_nothing() {
    let ns = unique("hangc");
    let d = ns_daemon(&[("BERTH_RUNTIME_TIMEOUT", "2")], &ns);
    let img = run_image("berth.test/faults:1").unwrap();
    berth_integration::manager::tasks::import(&d, &ns, &img).unwrap();
    let rt = FakeRuntime::new();
    let id = unique("c");
    let fake = rt.path();
    let run = [
        "run",
        "-d",
        "--runtime",
        &fake,
        &img.name,
        &id,
        "sleep",
        "100",
    ];

    rt.hang("create", true);
    let e = d.berth(&ns, &run).err().to_string();
    assert!(
        e.contains(&fake) && e.contains("create") && e.contains("runtime timeout of 2s"),
        "the error names the runtime, the step and the timeout: {e}"
    );
    let sleeper = rt.hung_pid("create").expect("the runtime hung");
    assert!(
        !alive(sleeper),
        "the hung runtime's process {sleeper} lives on"
    );
    assert_nothing_left(&d, &ns, &id, "hung create");

    // Once the runtime behaves, the same container id works.
    rt.hang("create", false);
    d.berth(&ns, &run).ok();
    let ps = d.berth(&ns, &["tasks", "ls"]).ok().to_string();
    assert!(ps.contains(&id) && ps.contains("RUNNING"), "{ps}");
}

/// After a failed `run -d` of `id` (`what` went wrong): no bundle, supervisor, mount, cgroup,
/// task, container record or runtime state is left, and `berth check` is clean.
#[track_caller]
fn assert_nothing_left(d: &Berthd, ns: &str, id: &str, what: &str) {
    assert_eq!(
        bundles(d, ns),
        Vec::<PathBuf>::new(),
        "{what}: a bundle stayed"
    );
    let sups = supervisors_under(&d.state().join("tasks").join(ns));
    assert!(sups.is_empty(), "{what}: supervisors left: {sups:?}");
    let mounts = mounts_under(&d.state());
    assert!(mounts.is_empty(), "{what}: mounts left: {mounts:?}");
    assert_eq!(
        cgroups_of(ns, id),
        Vec::<PathBuf>::new(),
        "{what}: cgroup left"
    );
    let tasks = d.berth(ns, &["--format", "json", "tasks", "ls"]).json();
    assert_eq!(tasks, serde_json::json!([]), "{what}: a task stayed");
    let ctrs = d
        .berth(ns, &["--format", "json", "containers", "ls"])
        .json();
    assert_eq!(
        ctrs,
        serde_json::json!([]),
        "{what}: a container record stayed"
    );
    assert!(
        !d.state().join("runtime").join(ns).join(id).exists(),
        "{what}: the runtime's state stayed"
    );
    assert_check_clean(d, ns);
}

/// Processes whose command line names `needle` (the runtime's root of one berthd): what a
/// killed create may have left running.
fn processes_naming(needle: &str) -> Vec<(i32, String)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) && alive(pid) {
            v.push((pid, cmd));
        }
    }
    v
}

/// On drop, SIGKILLs every process naming runtime root `root` (a create's init left behind)
/// and removes the cgroups `/<ns>/<id>` of the ids given that have become empty, before the
/// daemon's own cleanup removes its tasks and `/<ns>`.
struct KillLeftovers {
    root: String,
    ns: String,
    ids: std::cell::RefCell<Vec<String>>,
}

impl Drop for KillLeftovers {
    fn drop(&mut self) {
        for (pid, _) in processes_naming(&self.root) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for id in self.ids.borrow().iter() {
            for dir in cgroups_of(&self.ns, id) {
                // A killed process leaves its cgroup a moment later; a cgroup a live task
                // still uses stays (its task's removal takes it).
                for _ in 0..100 {
                    if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

/// The torture's runtime kills (issue 14): the runtime SIGKILLed in the middle of `create`,
/// with the init cloned and waiting for it, or the init killed after the create and before the
/// start. Either way `run -d` must fail, say what happened and leave nothing (no init waiting
/// forever on a runtime that is gone, holding the state dir's lock so that every later create
/// or delete of the id failed; no cgroup); the same `run -d` again must then really run.
#[test]
fn a_create_whose_runtime_or_init_is_killed_fails_leaves_nothing_and_a_retry_runs() {
    let ns = unique("killc");
    let d = ns_daemon(&[], &ns);
    let runtime_root = d.state().join("runtime").join(&ns);
    let leftovers = KillLeftovers {
        root: runtime_root.display().to_string(),
        ns: ns.clone(),
        ids: Default::default(),
    };
    let img = run_image("berth.test/faults:3").unwrap();
    berth_integration::manager::tasks::import(&d, &ns, &img).unwrap();
    let rt = FakeRuntime::new();
    let fake = rt.path();
    // What the error must say: the step, and how it failed (the runtime killed by SIGKILL;
    // the init found dead, at once or while start waits for it).
    let says = |how: &str, e: &str| match how {
        "runtime" => e.contains(&fake) && e.contains("create") && e.contains("SIGKILL"),
        _ => {
            e.contains("starting")
                && (e.contains("container that has stopped")
                    || e.contains("init exited before it was started"))
        }
    };
    for how in ["runtime", "init"] {
        let id = unique("c");
        leftovers.ids.borrow_mut().push(id.clone());
        let run = [
            "run",
            "-d",
            "--runtime",
            &fake,
            &img.name,
            &id,
            "sleep",
            "100",
        ];
        rt.kill_create(Some(how));
        let e = d.berth(&ns, &run).err().to_string();
        assert!(
            says(how, &e),
            "{how} killed: the error says what happened: {e}"
        );
        let left = processes_naming(&runtime_root.display().to_string());
        assert!(left.is_empty(), "{how} killed: processes left: {left:?}");
        assert_nothing_left(&d, &ns, &id, how);

        // The same run again, the runtime left alone: the container runs and answers.
        rt.kill_create(None);
        d.berth(&ns, &run).ok();
        let tasks = d.berth(&ns, &["--format", "json", "tasks", "ls"]).json();
        let status = tasks
            .as_array()
            .and_then(|a| a.iter().find(|t| t["id"] == id.as_str()))
            .map(|t| t["status"].clone());
        assert_eq!(status, Some(serde_json::json!("RUNNING")), "{how}: {tasks}");
        let out = d.berth(&ns, &["tasks", "exec", &id, "echo", "alive"]);
        assert_eq!(out.ok().trim(), "alive", "{how}");
        assert_check_clean(&d, &ns);
        d.berth(&ns, &["tasks", "kill", "-s", "KILL", &id]).ok();
        assert_eq!(d.berth(&ns, &["tasks", "wait", &id]).code, 137);
        d.berth(&ns, &["tasks", "rm", &id]).ok();
        d.berth(&ns, &["containers", "rm", &id]).ok();
        // The cgroup the killed create made is gone too, not taken over by the retry and
        // left behind when it ends.
        assert_eq!(
            cgroups_of(&ns, &id),
            Vec::<PathBuf>::new(),
            "{how}: cgroup left"
        );
        assert_check_clean(&d, &ns);
    }
}

#[test]
fn a_kill_or_delete_that_hangs_fails_after_the_timeout_and_a_retry_works() {
    let ns = unique("hangk");
    let d = ns_daemon(&[("BERTH_RUNTIME_TIMEOUT", "2")], &ns);
    let img = run_image("berth.test/faults:2").unwrap();
    berth_integration::manager::tasks::import(&d, &ns, &img).unwrap();
    let rt = FakeRuntime::new();
    let id = unique("c");
    let fake = rt.path();
    d.berth(
        &ns,
        &[
            "run",
            "-d",
            "--runtime",
            &fake,
            &img.name,
            &id,
            "sleep",
            "100",
        ],
    )
    .ok();

    rt.hang("kill", true);
    let e = d
        .berth(&ns, &["tasks", "kill", "-s", "KILL", &id])
        .err()
        .to_string();
    assert!(
        e.contains(&fake) && e.contains("kill") && e.contains("runtime timeout of 2s"),
        "{e}"
    );
    let sleeper = rt.hung_pid("kill").expect("the runtime hung");
    assert!(!alive(sleeper), "the hung kill {sleeper} lives on");
    let ps = d.berth(&ns, &["tasks", "ls"]).ok().to_string();
    assert!(ps.contains("RUNNING"), "the task must still run: {ps}");
    rt.hang("kill", false);
    d.berth(&ns, &["tasks", "kill", "-s", "KILL", &id]).ok();
    // `tasks wait` exits with the container's code: 128 + SIGKILL.
    assert_eq!(d.berth(&ns, &["tasks", "wait", &id]).code, 137);

    rt.hang("delete", true);
    let e = d.berth(&ns, &["tasks", "rm", &id]).err().to_string();
    assert!(
        e.contains(&fake) && e.contains("delete") && e.contains("runtime timeout of 2s"),
        "{e}"
    );
    let sleeper = rt.hung_pid("delete").expect("the runtime hung");
    assert!(!alive(sleeper), "the hung delete {sleeper} lives on");
    rt.hang("delete", false);
    d.berth(&ns, &["tasks", "rm", &id]).ok();
    d.berth(&ns, &["containers", "rm", &id]).ok();
    assert_eq!(bundles(&d, &ns), Vec::<PathBuf>::new());
    assert_eq!(cgroups_of(&ns, &id), Vec::<PathBuf>::new());
    assert_check_clean(&d, &ns);
}

// ---------------------------------------------------------------------------------------
// A full disk

/// berthd with root and state on a small tmpfs of its own. Fields drop in order: berthd and
/// its tasks first, then the disk.
struct OnSmallDisk {
    d: NsDaemon,
    disk: SmallDisk,
    filler: PathBuf,
}

impl std::ops::Deref for OnSmallDisk {
    type Target = NsDaemon;
    fn deref(&self) -> &NsDaemon {
        &self.d
    }
}

const DISK: u64 = 96 << 20;

impl OnSmallDisk {
    fn start(prefix: &str) -> OnSmallDisk {
        let disk = SmallDisk::mount(DISK).unwrap();
        let d = Berthd::start_on(disk.path(), &[]).unwrap();
        let filler = disk.path().join("filler");
        OnSmallDisk {
            d: NsDaemon {
                d,
                ns: unique(prefix),
            },
            disk,
            filler,
        }
    }

    /// Fills the disk until `left` bytes are free.
    fn fill(&self, left: u64) {
        let st = nix::sys::statvfs::statvfs(self.disk.path()).unwrap();
        let free = st.blocks_available() * st.fragment_size();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.filler)
            .unwrap();
        let chunk = vec![0xa5u8; 1 << 20];
        let mut todo = free.saturating_sub(left);
        while todo > 0 {
            let n = todo.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n]).unwrap();
            todo -= n as u64;
        }
        f.sync_all().unwrap();
    }

    /// Frees what [`OnSmallDisk::fill`] took, and grows the disk too.
    fn free(&self) {
        std::fs::remove_file(&self.filler).unwrap();
        self.disk.resize(DISK * 2).unwrap();
    }

    fn berth(&self, args: &[&str]) -> Out {
        self.d.berth(&self.d.ns, args)
    }

    /// What a full disk must leave: an error saying so, no image, a clean check.
    #[track_caller]
    fn assert_failed_clean(&self, out: &Out, what: &str) {
        let e = out.err();
        assert!(
            e.contains("No space left on device") && e.contains("disk full"),
            "{what}: the error must say the disk is full: {e}"
        );
        let ls = self.berth(&["images", "ls", "-q"]).ok().to_string();
        assert!(ls.trim().is_empty(), "{what}: an image is visible: {ls}");
        let out = self.berth(&["check"]);
        assert_eq!(
            out.code, 0,
            "{what}: berth check after the failure:\n{}\n{}",
            out.stdout, out.stderr
        );
        let ingests = self.berth(&["content", "ls-ingests"]);
        if ingests.code == 0 {
            eprintln!("{what}: ingests left: {}", ingests.stdout);
        }
    }
}

fn write_archive(img: &image::Image, dir: &Path) -> String {
    let p = dir.join("image.tar");
    img.write_oci_archive(&p).unwrap();
    p.display().to_string()
}

/// A layer of incompressible bytes, so that its blob takes as much room as its files.
fn noise(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

fn big_image(name: &str) -> image::Image {
    let data = noise(3 << 20);
    image::Image::new(
        name,
        vec![
            image::base_layer().unwrap(),
            image::Layer::build(&[image::Entry::File("big.bin", 0o644, data)]).unwrap(),
        ],
    )
    .unwrap()
}

#[test]
fn a_disk_full_during_an_import_leaves_nothing_and_the_import_works_later() {
    let d = OnSmallDisk::start("fullimp");
    let tmp = tempfile::tempdir().unwrap();
    let img = big_image("berth.test/full:import");
    let tar = write_archive(&img, tmp.path());
    d.fill(1 << 20);
    let out = d.berth(&["images", "import", &tar]);
    d.assert_failed_clean(&out, "import");
    d.free();
    let out = d.berth(&["images", "import", &tar]);
    assert!(out.ok().contains(&img.chain_id()), "{}", out.stdout);
    d.berth(&["check"]).ok();
}

#[test]
fn a_disk_full_during_an_unpack_leaves_no_snapshot_and_the_unpack_works_later() {
    let d = OnSmallDisk::start("fullunp");
    let tmp = tempfile::tempdir().unwrap();
    let img = big_image("berth.test/full:unpack");
    let tar = write_archive(&img, tmp.path());
    d.berth(&["images", "import", "--no-unpack", &tar]).ok();
    d.fill(1 << 20);
    let out = d.berth(&["images", "unpack", &img.name]);
    let e = out.err();
    assert!(
        e.contains("No space left on device") && e.contains("disk full"),
        "{e}"
    );
    let snaps = d.berth(&["--format", "json", "snapshots", "ls"]).json();
    assert_eq!(
        snaps.as_array().map(Vec::len),
        Some(0),
        "{snaps}\n{}",
        d.log()
            .lines()
            .filter(|l| l.contains("snapshot"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    d.berth(&["check"]).ok();
    d.free();
    let out = d.berth(&["images", "unpack", &img.name]);
    assert!(out.ok().contains(&img.chain_id()), "{}", out.stdout);
    d.berth(&["check"]).ok();
}

#[test]
fn a_disk_full_during_a_pull_leaves_nothing_and_the_pull_works_later() {
    let reg = Registry::start().unwrap();
    let name = format!("{}/berth/full:v1", reg.addr());
    let img = big_image(&name);
    {
        // Push it from a berthd on an ordinary disk.
        let pusher = Berthd::start().unwrap();
        let ns = unique("push");
        let tmp = tempfile::tempdir().unwrap();
        let tar = write_archive(&img, tmp.path());
        pusher.berth(&ns, &["images", "import", &tar]).ok();
        pusher
            .berth(&ns, &["images", "push", "--plain-http", &name])
            .ok();
    }
    let d = OnSmallDisk::start("fullpull");
    d.fill(1 << 20);
    let out = d.berth(&["images", "pull", "--plain-http", &name]);
    d.assert_failed_clean(&out, "pull");
    d.free();
    let out = d.berth(&["--format", "json", "images", "pull", "--plain-http", &name]);
    assert_eq!(out.json()["chain_id"], img.chain_id());
    d.berth(&["check"]).ok();
}

#[test]
fn a_disk_full_during_a_build_layer_commit_leaves_nothing_and_the_build_works_later() {
    let d = OnSmallDisk::start("fullbuild");
    let base = run_image("berth.test/full:base").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let tar = write_archive(&base, tmp.path());
    d.berth(&["images", "import", &tar]).ok();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {}\nCOPY big.bin /big.bin\n", base.name),
    )
    .unwrap();
    let data = noise(3 << 20);
    std::fs::write(ctx.path().join("big.bin"), &data).unwrap();
    let ctxs = ctx.path().display().to_string();
    let build = ["build", "-t", "berth.test/full:built", ctxs.as_str()];
    // Room for the copied file (3 MiB) but not for it and its layer blob (3 MiB more).
    d.fill(4 << 20);
    let out = d.berth(&build);
    let e = out.err();
    assert!(
        e.contains("No space left on device") && e.contains("disk full"),
        "{e}"
    );
    let ls = d.berth(&["images", "ls", "-q"]).ok().to_string();
    assert!(!ls.contains("built"), "a half-built image is visible: {ls}");
    d.berth(&["check"]).ok();
    d.free();
    d.berth(&build).ok();
    let out = d.berth(&[
        "run",
        "--rm",
        "berth.test/full:built",
        &unique("c"),
        "busybox",
        "sha256sum",
        "/big.bin",
    ]);
    assert!(
        out.ok().starts_with(image::hex(&image::sha256(&data))),
        "{}",
        out.stdout
    );
    d.berth(&["check"]).ok();
}
