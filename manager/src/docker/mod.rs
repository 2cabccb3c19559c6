//! The Docker Engine API front (API 1.41, for the unmodified docker CLI): an HTTP/1.1 server on
//! a second unix socket (`--docker-address`), routed the way moby's API routers are, one file
//! per resource. Handlers are thin: decode the request, call the same store and engine
//! functions the gRPC services call (never the gRPC API itself), shape Docker's JSON, and map
//! errors onto Docker's status codes and `{"message": ...}` bodies.
//!
//! Everything made through this API lives in the store namespace [`NAMESPACE`] (`moby`), so
//! `berth -n moby images ls` shows what `docker images` shows, and objects of other
//! namespaces stay invisible to docker.

pub mod archive;
pub mod build;
pub mod changes;
pub mod commit;
pub mod containers;
pub mod create;
pub mod detach;
pub mod errors;
pub mod events;
pub mod exec;
pub mod health;
pub mod images;
pub mod lifecycle;
pub mod logs;
pub mod networks;
pub mod registry;
pub mod server;
pub mod stats;
pub mod stdin;
pub mod system;
pub mod update;
pub mod version;
pub mod volumes;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_store::Ctx;

use crate::daemon::services::tasks::TasksService;

use crate::daemon::state::State;
use errors::ApiError;

/// The store namespace of everything the Docker API makes and sees.
pub const NAMESPACE: &str = "moby";

/// What every handler shares.
#[derive(Clone)]
pub struct Api {
    /// The daemon's stores and engine.
    pub state: State,
    /// The task service, called in-process.
    pub tasks: Arc<TasksService>,
    /// Exit announcements per container.
    pub notifier: Arc<lifecycle::Notifier>,
    /// Containers waiting out their restart back-off.
    pub restarting: Arc<Mutex<HashSet<String>>>,
    /// The current restart back-off per container.
    pub backoff: Arc<Mutex<HashMap<String, Duration>>>,
    /// Held while a name is checked and taken (create, rename).
    pub create_lock: Arc<tokio::sync::Mutex<()>>,
    /// Exec instances (`docker exec`), in memory as in dockerd.
    pub execs: Arc<exec::Execs>,
    /// Docker's events: the live stream and the ring `since` replays.
    pub events: Arc<events::Events>,
    /// The stdin FIFOs of containers made with OpenStdin.
    pub stdins: Arc<stdin::Stdins>,
}

impl Api {
    /// The front over `state`.
    pub fn new(state: State) -> Api {
        Api {
            tasks: Arc::new(TasksService::in_process(state.clone())),
            state,
            notifier: Arc::default(),
            restarting: Arc::default(),
            backoff: Arc::default(),
            create_lock: Arc::default(),
            execs: Arc::default(),
            events: Arc::default(),
            stdins: Arc::default(),
        }
    }

    /// The store context of Docker requests.
    pub fn ctx(&self) -> Ctx {
        Ctx::new(NAMESPACE)
    }
}

/// Runs blocking store or engine work off the async thread.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("task failed: {e}")))?
}

/// The short (12 hex digits) form of an ID or digest, as docker prints them.
pub fn short_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.chars().take(12).collect()
}

/// RFC 3339 with nanoseconds, as Go's time.RFC3339Nano, in UTC.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let dt: chrono::DateTime<chrono::Utc> = t.into();
    dt.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}
