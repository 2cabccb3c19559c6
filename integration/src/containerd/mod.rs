//! Fixtures for running Debian's containerd 1.6 with berth-runc as its runc binary: a private config, root, state and socket per test, and an image built locally.
