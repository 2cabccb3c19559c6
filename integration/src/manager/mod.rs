//! Fixtures for the manager's end-to-end tests: images built locally, berthd on temp dirs.

pub mod daemon;
pub mod image;

pub use daemon::{mounts_under, Berthd, Out};
