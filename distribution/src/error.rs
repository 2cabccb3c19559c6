//! Errors of the registry client.

/// What went wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum DistributionError {
    /// The reference does not parse.
    #[error("invalid reference {reference:?}: {why}")]
    InvalidReference {
        /// The input.
        reference: String,
        /// Why.
        why: String,
    },
    /// The registry refused the credentials (or none were given).
    #[error("{url}: unauthorized: {message}")]
    Unauthorized {
        /// The request's URL.
        url: String,
        /// The registry's explanation.
        message: String,
    },
    /// 404 (manifest or blob unknown).
    #[error("{what}: not found in {url}: {message}")]
    NotFound {
        /// What was asked for.
        what: String,
        /// The request's URL.
        url: String,
        /// The registry's explanation.
        message: String,
    },
    /// Any other non-success status.
    #[error("{method} {url}: HTTP {status}: {message}")]
    Status {
        /// HTTP method.
        method: &'static str,
        /// The request's URL.
        url: String,
        /// HTTP status code.
        status: u16,
        /// The registry's explanation (its `errors` JSON, or the body).
        message: String,
    },
    /// Connection, TLS or I/O failure.
    #[error("{url}: {message}")]
    Transport {
        /// The request's URL.
        url: String,
        /// The cause.
        message: String,
    },
    /// Content whose digest is not the one asked for.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was fetched.
        what: String,
        /// The digest asked for.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// A response the client cannot use (bad JSON, missing header, too large).
    #[error("{0}")]
    Invalid(String),
    /// Reading credentials failed.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

impl DistributionError {
    /// True for a failure that may pass if the request is made again: a transport error
    /// (reset, timeout, refused) or a server-side status (5xx, 429 Too Many Requests).
    pub fn is_transient(&self) -> bool {
        match self {
            DistributionError::Transport { .. } => true,
            DistributionError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// Shorthand result.
pub type Result<T, E = DistributionError> = std::result::Result<T, E>;
