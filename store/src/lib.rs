//! berth-store: the stores behind berthd — content (blobs and ingests), metadata (redb),
//! snapshotters (overlayfs and a plain-copy fallback), image logic (parse, import, export,
//! unpack) and garbage collection. Plain synchronous Rust, no gRPC: the API layer calls these
//! from `spawn_blocking` and maps [`StoreError::kind`] onto status codes.

pub mod content;
pub mod digest;
pub mod error;
mod fsutil;
pub mod metadata;
pub mod oci;

pub use digest::Digest;
pub use error::{ErrorKind, Result, StoreError};
