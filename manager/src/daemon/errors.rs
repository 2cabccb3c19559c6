//! Mapping store errors onto gRPC status codes, the way containerd's errdefs does.

use berth_store::{ErrorKind, StoreError};
use tonic::{Code, Status};

/// The gRPC status for a store error: the kind picks the code, the message is the error's text
/// with its sources.
pub fn status(e: StoreError) -> Status {
    let msg = message(&e);
    if is_disk_full(&msg) {
        tracing::warn!(error = %msg, "disk full");
        return Status::resource_exhausted(msg);
    }
    let code = match e.kind() {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Internal => Code::Internal,
    };
    if code == Code::Internal {
        tracing::warn!(error = %msg, "internal error");
    }
    Status::new(code, msg)
}

/// The error's text with its sources (each added unless the text already holds it); the gRPC
/// and Docker fronts both answer with it.
pub fn message(e: &StoreError) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    with_disk_full(msg)
}

/// True if `msg` tells of ENOSPC (or EDQUOT): the disk under berthd's root or state is full.
pub fn is_disk_full(msg: &str) -> bool {
    msg.contains("No space left on device")
        || msg.contains("os error 28")
        || msg.contains("Disk quota exceeded")
}

/// `msg`, starting with "disk full: " if it tells of ENOSPC, so that the reason is read first
/// however deep in the error it was.
pub fn with_disk_full(msg: String) -> String {
    if is_disk_full(&msg) && !msg.starts_with("disk full") {
        format!("disk full: {msg}")
    } else {
        msg
    }
}

/// Lets `?` turn store results into gRPC statuses.
pub trait IntoStatus<T> {
    /// Convert the error into a [`Status`].
    fn status(self) -> Result<T, Status>;
}

impl<T> IntoStatus<T> for Result<T, StoreError> {
    fn status(self) -> Result<T, Status> {
        self.map_err(status)
    }
}

/// A `spawn_blocking` join failure (a panic in store code) as an internal error.
pub fn join_error(e: tokio::task::JoinError) -> Status {
    Status::internal(format!("store task failed: {e}"))
}

/// Runs blocking store work off the async runtime and maps its error.
pub async fn blocking<T, F>(f: F) -> Result<T, Status>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(join_error)?
        .map_err(status)
}
