//! Cleanup that runs even when a test panics, and the check that a runtime left nothing behind.
//!
//! The guard only touches what its test made: the container id in the test's own `--root`,
//! processes it recorded (matched by pid and start time) or found in the test's own cgroup, the
//! cgroup directories of the bundle's unique cgroupsPath, and mounts under the bundle dir.

use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::bundle::Bundle;
use super::driver::Runtime;
use super::kernel;

/// Cleans up one container when dropped: `delete --force`, then SIGKILL to leftover processes,
/// rmdir of the test's cgroups, lazy unmount of anything left under the bundle.
pub struct Guard<'a> {
    runtime: &'a Runtime,
    bundle: &'a Bundle,
    id: String,
    pids: RefCell<Vec<(i32, Option<u64>)>>,
}

impl<'a> Guard<'a> {
    /// A guard for container `id` of `bundle` run by `runtime`.
    pub fn new(runtime: &'a Runtime, id: &str, bundle: &'a Bundle) -> Guard<'a> {
        Guard {
            runtime,
            bundle,
            id: id.to_string(),
            pids: RefCell::new(Vec::new()),
        }
    }

    /// The container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Remembers a process to kill at the end if it still lives (e.g. the container's init).
    pub fn track_pid(&self, pid: i32) {
        if pid > 0 {
            self.pids.borrow_mut().push((pid, kernel::start_time(pid)));
        }
    }

    /// Asserts the runtime left nothing behind for this container (see [`assert_no_leftovers`]).
    #[track_caller]
    pub fn assert_no_leftovers(&self) {
        assert_no_leftovers(self.runtime, &self.id, self.bundle);
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        // Errors are ignored: this is best-effort cleanup, the assertions are elsewhere.
        let _ = self.runtime.exec(&["delete", "--force", &self.id]);
        for (pid, started) in self.pids.borrow().iter() {
            if kernel::alive(*pid) && kernel::start_time(*pid) == *started {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
        }
        remove_cgroups(self.bundle.cgroup_path());
        unmount_under(self.bundle.path());
    }
}

/// Kills every process in the cgroup dirs of `path` (after thawing a frozen freezer) and
/// removes the dirs, deepest first; gives up after two seconds.
pub fn remove_cgroups(path: &str) {
    let dirs = kernel::cgroup_dirs(path);
    if dirs.is_empty() {
        return;
    }
    let mut all: Vec<PathBuf> = Vec::new();
    for dir in &dirs {
        collect_subdirs(dir, &mut all);
    }
    // Deepest first.
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for dir in &all {
        let state = dir.join("freezer.state");
        if state.exists() {
            let _ = fs::write(&state, "THAWED");
        }
        for pid in kernel::cgroup_procs(dir) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    for dir in &all {
        while dir.exists() && fs::remove_dir(dir).is_err() && Instant::now() < deadline {
            for pid in kernel::cgroup_procs(dir) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn collect_subdirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_subdirs(&path, out);
            }
        }
    }
}

/// Lazily unmounts every host mount at or under `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let mut points = kernel::mounts_under(dir);
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = nix::mount::umount2(point.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Panics unless the runtime left nothing of container `id` behind: no file or dir under its
/// `--root` whose name contains the id, no id in `list -q`, no cgroup dir for the bundle's
/// cgroupsPath in any hierarchy, no host mount under the bundle dir.
#[track_caller]
pub fn assert_no_leftovers(runtime: &Runtime, id: &str, bundle: &Bundle) {
    let mut problems = Vec::new();
    let mut state = Vec::new();
    find_named(runtime.root(), id, &mut state);
    if !state.is_empty() {
        problems.push(format!("state left under --root: {state:?}"));
    }
    match runtime.list(&["-q"]) {
        Ok(out) if out.stdout.lines().any(|l| l.trim() == id) => {
            problems.push(format!("`list -q` still shows {id}"))
        }
        _ => {}
    }
    let cgroups = kernel::cgroup_dirs(bundle.cgroup_path());
    if !cgroups.is_empty() {
        problems.push(format!("cgroup dirs left: {cgroups:?}"));
    }
    let mounts = kernel::mounts_under(bundle.path());
    if !mounts.is_empty() {
        problems.push(format!("host mounts left under the bundle: {mounts:?}"));
    }
    assert!(
        problems.is_empty(),
        "container {id} left things behind:\n{}",
        problems.join("\n")
    );
}

fn find_named(dir: &Path, needle: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().contains(needle) {
            out.push(path.clone());
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            find_named(&path, needle, out);
        }
    }
}
