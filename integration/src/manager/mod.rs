//! Fixtures for the manager's end-to-end tests: images built locally, berthd on temp dirs.

pub mod daemon;
pub mod fake_registry;
pub mod image;
pub mod registry;
pub mod tasks;
pub mod token;

pub use daemon::{
    files_under, mounts_under, unique, until, wait_timeout, Berthd, MountGuard, Out, SmallDisk,
};
