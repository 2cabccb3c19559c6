//! berth-store: the stores behind berthd — content (blobs and ingests), metadata (redb),
//! snapshotters (overlayfs and a plain-copy fallback), image logic (parse, import, export,
//! unpack) and garbage collection. Plain synchronous Rust, no gRPC: the API layer calls these
//! from `spawn_blocking` and maps [`StoreError::kind`] onto status codes.

pub mod check;
pub mod content;
pub mod digest;
pub mod error;
mod fsutil;
pub mod metadata;
pub mod oci;

pub use digest::Digest;
pub use error::{ErrorKind, Result, StoreError};
pub mod filters;
pub mod snapshots;

/// The context of a store operation: the namespace, and the lease new objects join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctx {
    /// The namespace (validated by the stores).
    pub namespace: String,
    /// The lease that created content, ingests and snapshots are added to, if any.
    pub lease: Option<String>,
}

impl Ctx {
    /// A context in namespace `ns`, with no lease.
    pub fn new(ns: impl Into<String>) -> Ctx {
        Ctx {
            namespace: ns.into(),
            lease: None,
        }
    }

    /// The same namespace, within lease `id`.
    pub fn with_lease(&self, id: impl Into<String>) -> Ctx {
        Ctx {
            namespace: self.namespace.clone(),
            lease: Some(id.into()),
        }
    }
}
pub mod gc;
pub mod images;
pub mod pull;
pub mod push;
mod store;
pub mod volumes;

pub use store::{
    CleanupReport, ContentWriter, SnapshotterChoice, Store, StoreConfig, LABEL_GC_EXPIRE,
    LABEL_RESUMABLE_LEASE, LABEL_TEMPORARY_LEASE,
};
