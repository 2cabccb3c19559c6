//! The one error type of the stores, with a [`ErrorKind`] the API layer maps to gRPC codes.

use std::path::PathBuf;

/// What kind of failure an error is; maps one-to-one onto gRPC status codes
/// (`NotFound`, `AlreadyExists`, `FailedPrecondition`, `InvalidArgument`, `Unavailable`,
/// `Internal` for everything else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object does not exist (gRPC NotFound).
    NotFound,
    /// The object exists already (gRPC AlreadyExists).
    AlreadyExists,
    /// The request is valid but the state forbids it (gRPC FailedPrecondition).
    FailedPrecondition,
    /// The request itself is malformed (gRPC InvalidArgument).
    InvalidArgument,
    /// The resource is busy, e.g. an ingest ref locked by another writer (gRPC Unavailable).
    Unavailable,
    /// Anything else: I/O, database, bugs (gRPC Internal / Unknown).
    Internal,
}

/// Errors of every store in this crate.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// See [`ErrorKind::NotFound`].
    #[error("{0}: not found")]
    NotFound(String),
    /// See [`ErrorKind::AlreadyExists`].
    #[error("{0}: already exists")]
    AlreadyExists(String),
    /// See [`ErrorKind::FailedPrecondition`].
    #[error("{0}")]
    FailedPrecondition(String),
    /// See [`ErrorKind::InvalidArgument`].
    #[error("{0}")]
    InvalidArgument(String),
    /// See [`ErrorKind::Unavailable`].
    #[error("{0}")]
    Unavailable(String),
    /// A file-system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("open", "rename", ...).
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The metadata database failed.
    #[error("metadata database: {0}")]
    Db(String),
    /// A layer could not be applied or diffed.
    #[error("layer: {0}")]
    Layer(#[from] berth_layer::LayerError),
    /// A stored record could not be (de)serialized.
    #[error("corrupt record {what}: {source}")]
    Corrupt {
        /// Which record.
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

/// Shorthand result.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// The error's kind, for mapping onto gRPC codes without string matching.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::NotFound(_) => ErrorKind::NotFound,
            StoreError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            StoreError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            StoreError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            StoreError::Unavailable(_) => ErrorKind::Unavailable,
            StoreError::Layer(
                berth_layer::LayerError::PathEscape { .. }
                | berth_layer::LayerError::UnsupportedEntry { .. }
                | berth_layer::LayerError::InvalidEntry { .. }
                | berth_layer::LayerError::Corrupt { .. },
            ) => ErrorKind::InvalidArgument,
            StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            _ => ErrorKind::Internal,
        }
    }

    /// True if the error (or one of its sources) is ENOSPC: the disk is full.
    pub fn is_disk_full(&self) -> bool {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.raw_os_error() == Some(libc::ENOSPC) {
                    return true;
                }
            }
            let t = e.to_string();
            if t.contains("No space left on device") || t.contains("os error 28") {
                return true;
            }
            cur = e.source();
        }
        false
    }

    /// True when [`kind`](Self::kind) is `NotFound`.
    pub fn is_not_found(&self) -> bool {
        self.kind() == ErrorKind::NotFound
    }

    /// True when [`kind`](Self::kind) is `AlreadyExists`.
    pub fn is_already_exists(&self) -> bool {
        self.kind() == ErrorKind::AlreadyExists
    }

    /// Builds an [`StoreError::Io`] error.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Prefixes a message-carrying error with context ("importing X: ...").
    pub fn context(self, ctx: impl std::fmt::Display) -> Self {
        match self {
            StoreError::NotFound(m) => StoreError::NotFound(format!("{ctx}: {m}")),
            StoreError::AlreadyExists(m) => StoreError::AlreadyExists(format!("{ctx}: {m}")),
            StoreError::FailedPrecondition(m) => {
                StoreError::FailedPrecondition(format!("{ctx}: {m}"))
            }
            StoreError::InvalidArgument(m) => StoreError::InvalidArgument(format!("{ctx}: {m}")),
            StoreError::Unavailable(m) => StoreError::Unavailable(format!("{ctx}: {m}")),
            StoreError::Db(m) => StoreError::Db(format!("{ctx}: {m}")),
            other => other,
        }
    }
}

macro_rules! db_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.to_string())
            }
        }
    )*};
}
db_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Extension to attach a path and operation to `std::io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| StoreError::io(op, path, e))
    }
}
