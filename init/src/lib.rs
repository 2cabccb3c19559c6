//! berth-init, the init of containers run with `--init` (Docker's `docker-init`): PID 1 that
//! runs the command as its child, forwards the signals it gets to it, reaps every zombie and
//! exits with the child's code (128+N when signal N killed it).
//!
//! [`BINARY`] is the statically linked executable (build.rs), which berthd writes under its
//! root and bind-mounts into the container; [`program`] is its code.

pub mod program;

/// The static executable, as build.rs made it.
pub const BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth-init"));
