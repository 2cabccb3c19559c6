//! Shared fixtures for Berth's end-to-end tests: where the binaries are, busybox bundles and
//! images built locally, daemons and registries started on temp dirs, and guards that clean up
//! (kill by pid, unmount, rmdir cgroups) even when a test fails.

pub mod bins;
pub mod containerd;
pub mod manager;
pub mod runtime;

/// This (root) test process's capability bounding set as /proc shows it (16 hex digits): what
/// a privileged container gets from an engine running as the test does.
pub fn cap_bounding() -> String {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("a CapBnd line")
        .trim()
        .to_string()
}
