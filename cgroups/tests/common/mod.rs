//! Helpers shared by the real-cgroup tests: unique names, a guard that cleans up even when a
//! test panics, and children that wait for a go signal so they can be moved first.

#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_cgroups::Cgroup;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// `berth-cgtest-<pid>-<n>`, unique across parallel tests and test binaries.
pub fn unique_name() -> String {
    format!(
        "berth-cgtest-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Owns what a test made: kills its processes, thaws, destroys the cgroup and removes extra
/// directories, in that order, when dropped (also on panic).
#[derive(Default)]
pub struct Guard {
    pub cgroups: Vec<Cgroup>,
    pub children: Vec<Child>,
    /// Directories the test made itself (removed last, deepest first as listed reversed).
    pub dirs: Vec<PathBuf>,
}

impl Guard {
    pub fn new() -> Guard {
        Guard::default()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for cg in &self.cgroups {
            let _ = cg.thaw();
            for pid in cg.pids().unwrap_or_default() {
                // Only processes in a cgroup this test created.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for cg in &self.cgroups {
            // Processes reparented to init may take a moment to go: wait for an empty cgroup.
            let start = Instant::now();
            while !cg.pids().unwrap_or_default().is_empty()
                && start.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            if let Err(e) = cg.destroy() {
                eprintln!("guard: {e}");
            }
        }
        for d in self.dirs.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }
}

/// Starts `sh -c "read _; SCRIPT"`: it does nothing until [`go`] writes a line, so the test
/// can put it in a cgroup first.
pub fn spawn_waiting(script: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!("read _; {script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh")
}

/// Lets a [`spawn_waiting`] child run.
pub fn go(child: &mut Child) {
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"go\n").expect("write go");
}

/// Waits for the child and returns (exit code, stdout, stderr).
pub fn finish(child: &mut Child) -> (Option<i32>, String, String) {
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut out).expect("read stdout");
    }
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut err).expect("read stderr");
    }
    let status = child.wait().expect("wait");
    (status.code(), out, err)
}

/// Starts `sleep 30`.
pub fn spawn_sleep() -> Child {
    Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep")
}

pub fn read(path: impl AsRef<Path>) -> String {
    let p = path.as_ref();
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
        .trim()
        .to_string()
}

/// Polls `cond` every 5 ms for up to 10 s (never an assertion on time, only a bound).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "gave up waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The path of `pid` in the hierarchy whose controllers field is `controllers` ("memory",
/// "" for v2), from /proc/<pid>/cgroup.
pub fn proc_cgroup_of(pid: u32, controllers: &str) -> Option<String> {
    read(format!("/proc/{pid}/cgroup")).lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let _ = it.next()?;
        (it.next()? == controllers).then(|| it.next().unwrap_or("").to_string())
    })
}
