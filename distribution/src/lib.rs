//! berth-distribution: a small blocking client for the OCI distribution API.
//!
//! [`Client`] talks to one repository of one registry: manifests by tag or digest, blobs
//! (with HTTP Range to resume), HEAD checks, cross-repository mounts, chunked uploads and
//! manifest pushes. Authentication follows the registry's `WWW-Authenticate` challenge
//! (Basic, or Bearer tokens fetched from the realm with the user's credentials).
//! [`auth::DockerConfig`] reads Docker's `config.json` credentials. Nothing here knows the
//! content store or gRPC: the pipelines live in berth-store.

pub mod auth;
pub mod client;
pub mod error;
pub mod reference;
pub mod tls;

pub use auth::{Credentials, DockerConfig};
pub use client::{BlobBody, Client, ClientOptions, FetchedManifest, Retries, SearchResult};
pub use error::{DistributionError, Result};
pub use reference::Reference;
pub use tls::TlsOptions;

/// Every manifest media type the client asks for (`Accept`).
pub const MANIFEST_ACCEPT: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(data);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in h {
        s.push_str(&format!("{b:02x}"));
    }
    s
}
