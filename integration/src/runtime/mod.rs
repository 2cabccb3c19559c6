//! Fixtures for the runtime's end-to-end tests: busybox bundles and cleanup guards.
