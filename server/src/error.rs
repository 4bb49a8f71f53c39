//! The one place where server errors become gRPC statuses.
//!
//! Handlers return [`ServiceError`]; [`ServiceError::into_status`] logs the detail and gives the
//! client a stable code with a clear message that never carries secret material. Storage
//! outages always read "storage unavailable" (UNAVAILABLE), whatever the database said.

use tonic::{Code, Status};

use crate::auth::{AuthError, AuthFailure};
use crate::storage::StorageError;

/// An error a handler returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// A request signature check failed.
    #[error(transparent)]
    Unauthenticated(#[from] AuthError),
    /// The request is malformed or breaks a limit.
    #[error("{0}")]
    InvalidArgument(String),
    /// The resource does not exist, or the caller may not learn that it does.
    #[error("{0}")]
    NotFound(String),
    /// The caller sees the resource but its role is too weak.
    #[error("{0}")]
    PermissionDenied(String),
    /// A unique name or id is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// Optimistic concurrency failed (version conflict, environment changed).
    #[error("{0}")]
    Aborted(String),
    /// The system is not in a state that allows the operation (used or expired invite).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A rate limit refused the request.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The database failed.
    #[error("storage unavailable")]
    Unavailable(#[source] StorageError),
    /// A bug or corrupt data: detail goes to the logs only.
    #[error("internal error")]
    Internal(String),
}

/// Result alias for handlers.
pub type ServiceResult<T> = Result<T, ServiceError>;

impl From<StorageError> for ServiceError {
    /// Generic mapping; handlers match the variants they can phrase better first.
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Unavailable(_) => ServiceError::Unavailable(e),
            StorageError::AlreadyExists(c) => {
                ServiceError::AlreadyExists(format!("{c} already in use"))
            }
            StorageError::NotFound(what) => ServiceError::NotFound(format!("{what} not found")),
            StorageError::InviteExpired | StorageError::InviteUsed => {
                ServiceError::FailedPrecondition(e.to_string())
            }
            StorageError::VersionConflict { .. }
            | StorageError::PrevHashMismatch { .. }
            | StorageError::EnvironmentChanged { .. }
            | StorageError::KeyEpochMismatch { .. } => ServiceError::Aborted(e.to_string()),
            // The state asked for is gone: the client words it (FetchEnvironment).
            StorageError::Pruned { .. } => ServiceError::NotFound(e.to_string()),
            StorageError::Corrupt(_) | StorageError::UnsupportedUrl(_) => {
                ServiceError::Internal(e.to_string())
            }
        }
    }
}

impl From<AuthFailure> for ServiceError {
    fn from(e: AuthFailure) -> Self {
        match e {
            AuthFailure::Refused(a) => ServiceError::Unauthenticated(a),
            AuthFailure::Storage(s) => s.into(),
        }
    }
}

impl ServiceError {
    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            ServiceError::Unauthenticated(_) => Code::Unauthenticated,
            ServiceError::InvalidArgument(_) => Code::InvalidArgument,
            ServiceError::NotFound(_) => Code::NotFound,
            ServiceError::PermissionDenied(_) => Code::PermissionDenied,
            ServiceError::AlreadyExists(_) => Code::AlreadyExists,
            ServiceError::Aborted(_) => Code::Aborted,
            ServiceError::FailedPrecondition(_) => Code::FailedPrecondition,
            ServiceError::ResourceExhausted(_) => Code::ResourceExhausted,
            ServiceError::Unavailable(_) => Code::Unavailable,
            ServiceError::Internal(_) => Code::Internal,
        }
    }

    /// Converts to the status sent to the client, logging what the client does not see.
    pub fn into_status(self) -> Status {
        let code = self.code();
        match &self {
            ServiceError::Unavailable(e) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(e), "storage unavailable");
            }
            ServiceError::Internal(detail) => {
                tracing::error!(detail = %detail, "internal error");
            }
            _ => {}
        }
        Status::new(code, self.to_string())
    }
}

/// Lowercase gRPC code name, as recorded in the audit trail's `result` and in metrics.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_outage_hides_database_detail() {
        let e: ServiceError =
            StorageError::Unavailable("disk I/O error at /var/lib/secret/path".into()).into();
        let s = e.into_status();
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.message(), "storage unavailable");
    }

    #[test]
    fn corrupt_data_is_internal_without_detail() {
        let e: ServiceError = StorageError::Corrupt("bad envelope row".into()).into();
        let s = e.into_status();
        assert_eq!(s.code(), Code::Internal);
        assert_eq!(s.message(), "internal error");
    }

    #[test]
    fn conflicts_and_invites_keep_their_messages() {
        let s = ServiceError::from(StorageError::EnvironmentChanged { current: 7 }).into_status();
        assert_eq!(s.code(), Code::Aborted);
        assert_eq!(s.message(), "environment changed: now at version 7");
        let s = ServiceError::from(StorageError::InviteUsed).into_status();
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(s.message(), "invite already used");
        let s = ServiceError::from(AuthError::Replay).into_status();
        assert_eq!(s.code(), Code::Unauthenticated);
        assert_eq!(s.message(), "replayed request nonce");
    }
}
