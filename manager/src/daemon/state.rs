//! What every service shares: the stores and the daemon's directories.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;

use super::config::Config;

/// Shared daemon state, cheap to clone.
#[derive(Clone)]
pub struct State {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    state_dir: PathBuf,
}

impl State {
    /// Opens the stores under the configured root.
    pub fn open(config: &Config) -> Result<State> {
        Ok(State {
            inner: Arc::new(Inner {
                root: config.root.clone(),
                state_dir: config.state.clone(),
            }),
        })
    }

    /// The persistent root.
    pub fn root(&self) -> &std::path::Path {
        &self.inner.root
    }

    /// The state dir (temporary mounts live under it).
    pub fn state_dir(&self) -> &std::path::Path {
        &self.inner.state_dir
    }
}
