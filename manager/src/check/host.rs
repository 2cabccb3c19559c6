//! The host side of `berth check`: what berthd made outside its stores — task bundles under
//! `<state>/tasks/<ns>/<id>`, the runtime's state under `<state>/runtime/<ns>/<id>`, the
//! `berth-shim` supervisors serving those bundles, mounts under the state dir, and the cgroups
//! `/<ns>/<id>` that `berth run` asks the runtime for — each against the records that own it:
//! a container record, and the bundle's `task.json` (written once the task exists).
//!
//! Only what is berth's is looked at: a supervisor whose bundle lies under this state dir, a
//! mount under this state dir, a cgroup named after a container of this store (another engine
//! may use a cgroup `/default/<id>` too; a cgroup no record of ours names is never touched).
//! Network namespaces under `<state>/netns` are [`crate::networks::Networks::check`]'s.
//!
//! Repair removes a piece only when it is clearly orphaned: nothing records it, it is older
//! than the grace period, and nothing runs in it (a cgroup with processes, or the bundle of a
//! live supervisor whose container record still exists, is reported and left). A task whose
//! supervisor is gone is reported as broken, never removed: its container record is the
//! user's, and `berth tasks rm` cleans it up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_store::check::young;
use berth_store::{Ctx, Store};
use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{Finding, Report};

/// How long a repair waits for the runtime's `delete --force`.
const RUNTIME_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks the host side; adds findings to `report`.
pub(super) fn check(
    store: &Store,
    state: &Path,
    repair: bool,
    grace: Duration,
    report: &mut Report,
) {
    let tasks = state.join("tasks");
    let record = |ns: &str, id: &str| store.container(&Ctx::new(ns), id).is_ok();
    let mut add = |kind: &str, what: String, detail: String, repaired: bool| {
        report.findings.push(Finding {
            kind: kind.into(),
            what,
            detail,
            repaired,
        })
    };

    // Bundles: owned when the container exists and the task was created (task.json).
    let shims = supervisors(&tasks);
    let mut lost = Vec::new();
    for (ns, id, dir) in children2(&tasks) {
        let what = format!("{ns}/{id}");
        let has_task = dir.join("task.json").is_file();
        let owned = has_task && record(&ns, &id);
        let served: Vec<i32> = shims
            .iter()
            .filter(|(_, b)| *b == dir)
            .map(|(p, _)| *p)
            .collect();
        if owned {
            if served.is_empty() {
                lost.push((what, dir));
            }
            continue;
        }
        if young(&dir, grace) {
            continue;
        }
        let why = if has_task {
            "its container record is gone"
        } else {
            "it has no task.json (a create that did not finish)"
        };
        let mut detail = format!("task bundle {}: {why}", dir.display());
        if !served.is_empty() {
            detail.push_str(&format!("; served by berth-shim {served:?}"));
        }
        let mut repaired = false;
        if repair {
            match remove_bundle(state, &ns, &id, &dir, &served) {
                Ok(done) => {
                    detail.push_str(&format!("; {done}"));
                    repaired = true;
                }
                Err(e) => detail.push_str(&format!("; not removed: {e}")),
            }
        }
        add("orphan-task-state", what, detail, repaired);
    }

    // Tasks without their supervisor. A running berthd may be deleting one (the supervisor
    // is told to exit just before the bundle goes): look again a moment later.
    if !lost.is_empty() && !grace.is_zero() {
        std::thread::sleep(Duration::from_millis(300));
    }
    let shims = supervisors(&tasks);
    for (what, dir) in lost {
        if !dir.join("task.json").is_file() || shims.iter().any(|(_, b)| *b == dir) {
            continue;
        }
        add(
            "lost-supervisor",
            what,
            format!(
                "no berth-shim serves {}: the task's state is unknown (`berth tasks rm` \
                 removes it)",
                dir.display()
            ),
            false,
        );
    }

    // Supervisors whose bundle is gone altogether: nothing can reach them.
    for (pid, bundle) in supervisors(&tasks) {
        if bundle.exists() {
            continue;
        }
        let what = format!("berth-shim {pid}");
        let mut detail = format!("serves {}, which does not exist", bundle.display());
        let repaired = repair && stop(pid);
        if repair {
            detail.push_str(if repaired {
                "; killed"
            } else {
                "; could not kill it"
            });
        }
        add("orphan-supervisor", what, detail, repaired);
    }

    // The runtime's state of containers without a bundle (berth-runc's and runc's layout:
    // `<root>/<id>/state.json`).
    let runtime = state.join("runtime");
    for (ns, id, dir) in children2(&runtime) {
        if !dir.join("state.json").is_file()
            || tasks.join(&ns).join(&id).exists()
            || young(&dir, grace)
        {
            continue;
        }
        let mut detail = format!("{} belongs to no task", dir.display());
        let mut repaired = false;
        if repair {
            match runtime_delete(&runtime.join(&ns), &id) {
                Ok(()) if !dir.exists() => {
                    detail.push_str("; the runtime deleted the container");
                    repaired = true;
                }
                Ok(()) => detail.push_str("; the runtime's delete left it"),
                Err(e) => detail.push_str(&format!("; not removed: {e}")),
            }
        }
        add(
            "orphan-runtime-state",
            format!("{ns}/{id}"),
            detail,
            repaired,
        );
    }

    // The runtime's state of creates cut short (no state.json): berthd removes them when it
    // starts; one found while it runs is a create killed since (a runtime or supervisor killed
    // mid-create). Each keeps the cgroup it recorded and blocks that id.
    for (root, id) in unfinished_runtime_state(state) {
        let dir = root.join(&id);
        if young(&dir, grace) {
            continue;
        }
        let mut detail = format!(
            "{} has no state.json: a create that was cut short",
            dir.display()
        );
        let mut repaired = false;
        if repair {
            match runtime_delete(&root, &id) {
                Ok(()) if !dir.exists() => {
                    detail.push_str("; the runtime deleted it and the cgroup it recorded");
                    repaired = true;
                }
                Ok(()) => detail.push_str("; the runtime's delete left it"),
                Err(e) => detail.push_str(&format!("; not removed: {e}")),
            }
        }
        let what = match root.strip_prefix(&runtime) {
            Ok(ns) => format!("{}/{id}", ns.display()),
            Err(_) => format!("build/{id}"),
        };
        add("unfinished-runtime-state", what, detail, repaired);
    }

    // Mounts under the state dir (read again: repairs above unmounted some).
    let netns = state.join("netns");
    let tmpmounts = state.join("tmpmounts");
    for m in mounts_under(state) {
        if m.starts_with(&netns) {
            continue;
        }
        let owner = if let Ok(rest) = m.strip_prefix(&tasks) {
            let mut c = rest.components().map(|c| c.as_os_str().to_string_lossy());
            match (c.next(), c.next()) {
                (Some(ns), Some(id)) => {
                    let dir = tasks.join(ns.as_ref()).join(id.as_ref());
                    if dir.join("task.json").is_file() && record(&ns, &id) || young(&dir, grace) {
                        continue;
                    }
                    "a task bundle no task or container owns"
                }
                _ => "no task bundle",
            }
        } else if let Ok(rest) = m.strip_prefix(&tmpmounts) {
            // `m-<pid>-<n>`: a temporary mount of the berthd with that pid.
            let pid = rest
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .and_then(|n| n.strip_prefix("m-"))
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<i32>().ok());
            if pid.is_some_and(alive) {
                continue;
            }
            "a temporary mount of a berthd that is gone"
        } else {
            if young(&m, grace) {
                continue;
            }
            "no record names it"
        };
        let mut detail = format!("mount point under the state dir: {owner}");
        let mut repaired = false;
        if repair {
            match umount2(&m, MntFlags::MNT_DETACH) {
                Ok(()) => {
                    if m.starts_with(&tmpmounts) {
                        let _ = std::fs::remove_dir(&m);
                    }
                    detail.push_str("; unmounted");
                    repaired = true;
                }
                Err(e) => detail.push_str(&format!("; unmount failed: {e}")),
            }
        }
        add("orphan-mount", m.display().to_string(), detail, repaired);
    }

    // Cgroups `/<ns>/<id>` of this store's containers that have no task.
    let namespaces: Vec<String> = store
        .namespaces()
        .map(|v| v.into_iter().map(|n| n.name).collect())
        .unwrap_or_default();
    let mut cgroups: BTreeMap<(String, String), Vec<PathBuf>> = BTreeMap::new();
    for m in cgroup_mounts() {
        for ns in &namespaces {
            for e in std::fs::read_dir(m.join(ns))
                .into_iter()
                .flatten()
                .flatten()
            {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let id = e.file_name().to_string_lossy().into_owned();
                cgroups.entry((ns.clone(), id)).or_default().push(e.path());
            }
        }
    }
    for ((ns, id), dirs) in cgroups {
        if crate::tasks::exists(state, &ns, &id)
            || !record(&ns, &id)
            || dirs.iter().any(|d| young(d, grace))
        {
            continue;
        }
        let procs: usize = dirs.iter().map(|d| processes(d)).sum();
        let mut detail = format!(
            "cgroup of container {ns}/{id}, which has no task ({} hierarch{}, {procs} process{})",
            dirs.len(),
            if dirs.len() == 1 { "y" } else { "ies" },
            if procs == 1 { "" } else { "es" }
        );
        let mut repaired = false;
        if repair {
            if procs > 0 {
                detail.push_str("; processes run in it: left");
            } else {
                let failed: Vec<String> = dirs
                    .iter()
                    .filter_map(|d| rmdir_tree(d).err().map(|e| format!("{}: {e}", d.display())))
                    .collect();
                if failed.is_empty() {
                    detail.push_str("; removed");
                    repaired = true;
                } else {
                    detail.push_str(&format!("; not removed: {}", failed.join(", ")));
                }
            }
        }
        add("orphan-cgroup", format!("/{ns}/{id}"), detail, repaired);
    }
}

/// Crash recovery at berthd's start (nothing is in flight then): removes every task bundle
/// without `task.json` — a create that berthd died during (bundle made, rootfs mounted, maybe
/// the supervisor and the container started, the client never told) or a removal it died
/// during — with its container (the runtime's delete), supervisor and rootfs mount. Left in
/// place, such a bundle made every later create of that id fail with "already exists".
/// Returns what was removed, as `ns/id: what was done`.
pub fn recover_unfinished_tasks(state: &Path) -> Vec<String> {
    let tasks = state.join("tasks");
    let shims = supervisors(&tasks);
    let mut done = Vec::new();
    for (ns, id, dir) in children2(&tasks) {
        if dir.join("task.json").is_file() {
            continue;
        }
        let served: Vec<i32> = shims
            .iter()
            .filter(|(_, b)| *b == dir)
            .map(|(p, _)| *p)
            .collect();
        match remove_bundle(state, &ns, &id, &dir, &served) {
            Ok(what) => {
                tracing::info!(namespace = %ns, id = %id, %what, "removed an unfinished task");
                done.push(format!("{ns}/{id}: {what}"));
            }
            Err(e) => {
                tracing::warn!(namespace = %ns, id = %id, error = %e, "removing an unfinished task")
            }
        }
    }
    done
}

/// Crash recovery at berthd's start, after [`recover_unfinished_tasks`]: deletes the runtime's
/// state dirs that have no `state.json` — a create killed before it saved state (a runtime or
/// supervisor killed mid-create, or the shim of a task bundle removed just before) — under
/// `<state>/runtime/<ns>/` (tasks) and `<state>/builds/runtime/` (builds' RUN steps). The
/// runtime's `delete --force` of such a dir kills what runs in the cgroup the create recorded
/// (`creating-cgroup.json`) and removes that cgroup with the dir. A dir whose lock is held
/// belongs to a create still running (a supervisor the previous berthd started) and is left.
/// Without this, each such dir kept a cgroup and made every later create of that id fail
/// with "already exists". Returns what was removed, as `root/id: what was done`.
pub fn recover_unfinished_runtime_state(state: &Path) -> Vec<String> {
    let mut done = Vec::new();
    for (root, id) in unfinished_runtime_state(state) {
        let dir = root.join(&id);
        let what = format!("{}/{id}", root.display());
        match runtime_delete(&root, &id) {
            Ok(()) if !dir.exists() => {
                tracing::info!(dir = %dir.display(), "removed the runtime state of a create that was cut short (and its cgroup)");
                done.push(format!("{what}: the runtime deleted it"));
            }
            Ok(()) => {
                tracing::warn!(dir = %dir.display(), "the runtime's delete left the state of a create that was cut short")
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "removing the runtime state of a create that was cut short")
            }
        }
    }
    done
}

/// The runtime's state dirs without `state.json` and not locked — creates cut short — under
/// `<state>/runtime/<ns>/` and `<state>/builds/runtime/`, as (the runtime's root, id).
fn unfinished_runtime_state(state: &Path) -> Vec<(PathBuf, String)> {
    let mut dirs: Vec<(PathBuf, String)> = children2(&state.join("runtime"))
        .into_iter()
        .map(|(ns, id, _)| (state.join("runtime").join(ns), id))
        .collect();
    let builds = state.join("builds").join("runtime");
    for e in std::fs::read_dir(&builds).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            dirs.push((builds.clone(), e.file_name().to_string_lossy().into_owned()));
        }
    }
    dirs.retain(|(root, id)| {
        let dir = root.join(id);
        if id == RUNTIME_SECCOMP_CACHE || dir.join("state.json").is_file() {
            return false;
        }
        if locked(&dir) {
            tracing::info!(dir = %dir.display(), "runtime state without state.json is locked: a create still runs, left");
            return false;
        }
        true
    });
    dirs
}

/// The directory berth-runc keeps compiled seccomp filters in, beside the containers' state
/// dirs under its `--root`: not a container.
const RUNTIME_SECCOMP_CACHE: &str = "seccomp-cache";

/// Whether another process holds the runtime's lock on a state dir (a create or delete runs).
fn locked(dir: &Path) -> bool {
    use nix::fcntl::{Flock, FlockArg};
    let Ok(f) = std::fs::File::open(dir) else {
        return false;
    };
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(_unlocked_on_drop) => false,
        Err((_, e)) => e == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// `(first, second, path)` of every directory two levels under `dir`.
fn children2(dir: &Path) -> Vec<(String, String, PathBuf)> {
    let mut v = Vec::new();
    for a in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !a.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let an = a.file_name().to_string_lossy().into_owned();
        for b in std::fs::read_dir(a.path()).into_iter().flatten().flatten() {
            if b.file_type().is_ok_and(|t| t.is_dir()) {
                v.push((
                    an.clone(),
                    b.file_name().to_string_lossy().into_owned(),
                    b.path(),
                ));
            }
        }
    }
    v.sort();
    v
}

/// `berth-shim` processes whose bundle (argv[1]) lies under `tasks`: `(pid, bundle)`.
pub fn supervisors(tasks: &Path) -> Vec<(i32, PathBuf)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmd.split(|b| *b == 0);
        let exe = args.next().unwrap_or_default();
        if !exe.ends_with(b"berth-shim") {
            continue;
        }
        let Some(bundle) = args.next() else {
            continue;
        };
        let bundle = PathBuf::from(String::from_utf8_lossy(bundle).into_owned());
        if bundle.starts_with(tasks) {
            v.push((pid, bundle));
        }
    }
    v
}

fn alive(pid: i32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// SIGKILLs `pid` and waits (up to 2 s) until it is gone.
fn stop(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), Signal::SIGKILL).is_err() {
        return !alive(pid);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        // A zombie is gone for our purposes: it holds no mount and no cgroup.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = state
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if !alive(pid) || zombie {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The runtime's `delete --force` (kills the container, removes its state and cgroup).
fn runtime_delete(root: &Path, id: &str) -> Result<(), String> {
    let bin = crate::tasks::helper_binary("BERTH_RUNTIME", "berth-runc");
    let mut child = std::process::Command::new(&bin)
        .arg("--root")
        .arg(root)
        .args(["delete", "--force", id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {}: {e}", bin.display()))?;
    let deadline = Instant::now() + RUNTIME_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(format!("{} delete: {st}: {}", bin.display(), err.trim()));
            }
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} delete did not finish in {RUNTIME_TIMEOUT:?}",
                    bin.display()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {}: {e}", bin.display())),
        }
    }
}

/// Removes an orphaned bundle: the container (runtime delete), its supervisors, the rootfs
/// mount, the dir. Returns what was done.
fn remove_bundle(
    state: &Path,
    ns: &str,
    id: &str,
    dir: &Path,
    served: &[i32],
) -> Result<String, String> {
    let mut done = Vec::new();
    let rt_root = state.join("runtime").join(ns);
    if rt_root.join(id).join("state.json").is_file() {
        runtime_delete(&rt_root, id)?;
        done.push("the runtime deleted the container".to_string());
    }
    for &pid in served {
        if !stop(pid) {
            return Err(format!("berth-shim {pid} did not die"));
        }
        done.push(format!("killed berth-shim {pid}"));
    }
    crate::tasks::mounts::unmount_all(&dir.join("rootfs"));
    if let Some(m) = mounts_under(dir).first() {
        return Err(format!("{} is still mounted", m.display()));
    }
    std::fs::remove_dir_all(dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
    done.push("removed the bundle".into());
    Ok(done.join(", "))
}

/// Mount points at or under `dir` (from /proc/self/mountinfo), deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// Where every cgroup hierarchy (v1 controllers, named ones, the v2 tree) is mounted.
pub(crate) fn cgroup_mounts() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            if !matches!(right.split(' ').next(), Some("cgroup" | "cgroup2")) {
                return None;
            }
            left.split(' ').nth(4).map(|p| PathBuf::from(unescape(p)))
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// mountinfo's octal escapes (space, tab, newline, backslash).
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Processes in a cgroup and its descendants.
fn processes(dir: &Path) -> usize {
    let mut n = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        n += std::fs::read_to_string(d.join("cgroup.procs"))
            .map(|s| s.lines().filter(|l| !l.trim().is_empty()).count())
            .unwrap_or(0);
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
            }
        }
    }
    n
}

/// Removes an empty cgroup and its (empty) descendants, deepest first.
fn rmdir_tree(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            rmdir_tree(&e.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/a\\040b\\134c"), "/a b\\c");
    }

    #[test]
    fn children2_lists_two_levels_sorted() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("ns2/b")).unwrap();
        std::fs::create_dir_all(t.path().join("ns1/a")).unwrap();
        std::fs::write(t.path().join("ns1/file"), "").unwrap();
        let got: Vec<(String, String)> = children2(t.path())
            .into_iter()
            .map(|(a, b, _)| (a, b))
            .collect();
        assert_eq!(
            got,
            vec![("ns1".into(), "a".into()), ("ns2".into(), "b".into())]
        );
        assert!(children2(&t.path().join("missing")).is_empty());
    }

    #[test]
    fn an_empty_cgroup_like_tree_is_removed_deepest_first() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("c");
        std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
        assert_eq!(processes(&d), 0);
        rmdir_tree(&d).unwrap();
        assert!(!d.exists());
    }
}
