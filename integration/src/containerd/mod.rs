//! Fixtures for running Debian's containerd 1.6 with the runtime under test (berth-runc, or runc
//! as the control) as its runc binary: a private config, root, state and socket per test, a
//! busybox image built locally and imported, and `ctr` commands with timeouts whose failures
//! carry containerd's log and the runtime's `log.json`.
//!
//! Every [`Containerd`] uses its own namespace (`berth-it-<pid>-<n>`), so container ids, cgroups
//! (`/<ns>/<id>`), shim sockets (`/run/containerd/s/<sha256 of address/ns/id>`, shared by every
//! containerd 1.6 on the host whatever its config says) and runc state never collide between
//! parallel tests. Dropping it kills and removes what is left, stops containerd, kills stray
//! shims, removes the namespace's cgroups, unmounts and deletes the temp dir.

pub mod cleanup;
pub mod command;
pub mod daemon;
pub mod image;

pub use command::{shell_quote, CtrOut};
pub use daemon::Containerd;
pub use image::IMAGE;
