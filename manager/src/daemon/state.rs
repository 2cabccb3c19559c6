//! What every service shares: the stores and the daemon's directories.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use berth_store::{Store, StoreConfig};

use super::config::Config;

/// Shared daemon state, cheap to clone.
#[derive(Clone)]
pub struct State {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    registries: super::registries::Registries,
    runtime: Option<String>,
    root: PathBuf,
    state_dir: PathBuf,
    networks: Arc<crate::networks::Networks>,
}

impl State {
    /// Opens the stores under the configured root (this also recovers from a crash: temporary
    /// leases of interrupted imports are dropped and what they held is collected).
    pub fn open(config: &Config) -> Result<State> {
        let store = Store::open(&StoreConfig::new(&config.root))
            .with_context(|| format!("opening the stores under {}", config.root.display()))?;
        let networks = Arc::new(crate::networks::Networks::new(
            store.clone(),
            &config.root,
            &config.state,
        ));
        Ok(State {
            inner: Arc::new(Inner {
                networks,
                store,
                registries: config.registries.clone(),
                runtime: config.runtime.clone(),
                root: config.root.clone(),
                state_dir: config.state.clone(),
            }),
        })
    }

    /// The stores.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Per-registry settings from the config file.
    pub fn registries(&self) -> &super::registries::Registries {
        &self.inner.registries
    }

    /// The configured default runtime (`--runtime` or the config file's `runtime`).
    pub fn default_runtime(&self) -> Option<&str> {
        self.inner.runtime.as_deref()
    }

    /// The networks (records and attachments).
    pub fn networks(&self) -> &Arc<crate::networks::Networks> {
        &self.inner.networks
    }

    /// The persistent root.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The state dir (temporary mounts live under it).
    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    /// The snapshotter's name (`overlayfs` or `native`).
    pub fn snapshotter_name(&self) -> &'static str {
        self.inner.store.snapshotter().name()
    }
}
