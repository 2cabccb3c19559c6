//! berth-runc's library: the command line, container operations, and one module per concern of
//! building a container (namespaces, rootfs, devices, capabilities, rlimits, console...).
//!
//! Layers, top to bottom: [`cli`] → [`container`] operations (create, start, kill, delete, run,
//! state, list) → [`init`] (the container's first process, between clone and exec) → one module per
//! concern → thin syscall helpers in [`sys`].

pub mod capabilities;
pub mod cli;
pub mod config;
pub mod container;
pub mod devices;
pub mod features;
pub mod hooks;
pub mod identity;
pub mod idmap;
pub mod init;
pub mod logging;
pub mod mounts;
pub mod namespaces;
pub mod rlimits;
pub mod rootfs;
pub mod sched;
pub mod sealed;
pub mod seccomp;
pub mod signals;
pub mod spec;
pub mod state;
pub mod sync;
pub mod sys;
pub mod tty;

/// The runtime-spec version this runtime implements.
pub const OCI_VERSION: &str = "1.2.0";
/// berth-runc's own version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
