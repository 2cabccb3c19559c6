//! berth-manager: `berthd`, the daemon that serves containerd's v1 gRPC API over a unix socket,
//! and `berth`, the ctr-style CLI that talks to it (and only to it: it never opens the store).

pub mod build;
pub mod check;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod docker;
pub mod identifiers;
pub mod networks;
pub mod runspec;
pub mod tasks;
