//! Shared fixtures for Berth's end-to-end tests: where the binaries are, busybox bundles and
//! images built locally, daemons and registries started on temp dirs, and guards that clean up
//! (kill by pid, unmount, rmdir cgroups) even when a test fails.

pub mod bins;
pub mod containerd;
pub mod manager;
pub mod runtime;
