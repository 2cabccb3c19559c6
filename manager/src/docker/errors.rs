//! Docker's error answers: a status code and `{"message": "..."}`. Store and network errors
//! map by kind, as moby's errdefs do (not found 404, conflict 409, bad input 400).

use berth_store::{ErrorKind, StoreError};
use http::StatusCode;

use crate::networks::NetworkError;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The `message` docker prints after "Error response from daemon: ".
    pub message: String,
}

impl ApiError {
    /// An answer with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400: the request is malformed or asks for what berthd does not do.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 400 for an option Docker has and berthd does not implement: never silently ignored.
    pub fn unsupported(what: impl std::fmt::Display) -> ApiError {
        Self::bad_request(format!("{what} is not supported by berthd"))
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 403 (moby's answer for removing a pre-defined or busy network).
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The error as one line of a JSON progress stream (pull, push, load), once the answer's
    /// status has been sent.
    pub fn stream_line(&self) -> bytes::Bytes {
        let v = serde_json::json!({
            "errorDetail": {"message": self.message},
            "error": self.message,
        });
        let mut b = serde_json::to_vec(&v).unwrap_or_default();
        b.push(b'\n');
        b.into()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status.as_u16())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let status = match e.kind() {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::AlreadyExists | ErrorKind::FailedPrecondition => StatusCode::CONFLICT,
            ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = crate::daemon::errors::message(&e);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::warn!(error = %message, "docker api: internal error");
        }
        ApiError::new(status, message)
    }
}

impl From<NetworkError> for ApiError {
    fn from(e: NetworkError) -> ApiError {
        match e {
            NetworkError::InvalidArgument(m) => ApiError::bad_request(m),
            NetworkError::NotFound(m) => ApiError::not_found(m),
            NetworkError::AlreadyExists(m) => ApiError::conflict(m),
            // moby answers 403 for a network that cannot be removed (pre-defined, in use).
            NetworkError::FailedPrecondition(m) => ApiError::forbidden(m),
            NetworkError::Internal(m) => ApiError::internal(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_kinds_map_to_dockers_codes() {
        let nf: ApiError = StoreError::NotFound("image x".into()).into();
        assert_eq!(nf.status, StatusCode::NOT_FOUND);
        let c: ApiError = StoreError::AlreadyExists("x".into()).into();
        assert_eq!(c.status, StatusCode::CONFLICT);
        let b: ApiError = StoreError::InvalidArgument("x".into()).into();
        assert_eq!(b.status, StatusCode::BAD_REQUEST);
        let f: ApiError = NetworkError::FailedPrecondition("in use".into()).into();
        assert_eq!(f.status, StatusCode::FORBIDDEN);
    }

    #[test]
    fn a_stream_error_is_one_json_line() {
        let l = ApiError::not_found("boom").stream_line();
        let v: serde_json::Value = serde_json::from_slice(&l).unwrap();
        assert_eq!(v["error"], "boom");
        assert_eq!(v["errorDetail"]["message"], "boom");
        assert!(l.ends_with(b"\n"));
    }
}
