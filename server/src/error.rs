//! [`AppError`]: every way a request can fail, and the one place that picks its status.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pycache_proto::ErrorResponse;

use crate::store::{StorageProblem, StoreError};

/// A failed request. Client variants carry a message for the caller; internal ones are logged
/// once and answered with a generic message.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400: the request is malformed.
    #[error("{message}")]
    BadRequest {
        /// Stable machine-readable code.
        code: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
    /// 401: no valid token (missing, unknown or revoked).
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a valid token without the needed scope.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such entry, token or route.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: the request conflicts with what is stored (e.g. a token name in use).
    #[error("{0}")]
    Conflict(String),
    /// 408: the request body did not arrive within the body timeout.
    #[error("{0}")]
    RequestTimeout(String),
    /// 413: a body, entry or batch over a limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 431: too many or too large request headers.
    #[error("{0}")]
    HeadersTooLarge(String),
    /// 415: a body in an encoding the server does not read.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed but unacceptable content (bad digest, not a code object).
    #[error("{message}")]
    Unprocessable {
        /// Stable machine-readable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// 503: every slot for heavy requests stayed taken for the slot wait; try again shortly.
    #[error("{0}")]
    Busy(String),
    /// 503: every heavy-request slot is taken (`/readyz`); try again shortly.
    #[error("{0}")]
    Saturated(String),
    /// 421: the request's `Host` is not one `--allowed-host` lists.
    #[error("{0}")]
    MisdirectedRequest(String),
    /// 503 (the database file gone or replaced) or 507 (read-only): writes are refused before
    /// they start, so nothing is acknowledged that would be lost.
    #[error("nothing of this request was stored: {0}")]
    StorageRefused(StorageProblem),
    /// 503 from `/readyz`: the database file is gone, replaced or read-only.
    #[error("not ready: {0}")]
    NotReady(StorageProblem),
    /// 507: the database refused a write as read-only; nothing of the request was stored.
    #[error("the database refused the write as read-only: {0}")]
    ReadOnly(#[source] StoreError),
    /// 503: the database does not answer.
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] StoreError),
    /// 507: the database's disk is full; nothing of the request was stored.
    #[error("the database's disk is full: {0}")]
    InsufficientStorage(#[source] StoreError),
    /// 500: a store failure; details are logged, not sent.
    #[error(transparent)]
    Store(StoreError),
}

impl AppError {
    /// A 408 for a body that did not arrive within `timeout`.
    pub fn body_timeout(timeout: std::time::Duration) -> Self {
        AppError::RequestTimeout(format!(
            "the request body did not arrive within {}s; send it faster or in smaller batches",
            timeout.as_secs_f64()
        ))
    }

    /// A 413 for a body (as sent, or decoded) of at least `len` bytes, over `limit`.
    pub fn request_too_large(len: u64, limit: u64) -> Self {
        AppError::PayloadTooLarge(format!(
            "the request body is over {} bytes (the server's limit is {limit}): send smaller batches",
            len.min(limit),
        ))
    }
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        if err.is_storage_full() {
            AppError::InsufficientStorage(err)
        } else if err.is_read_only() {
            AppError::ReadOnly(err)
        } else if err.is_unavailable() {
            AppError::Unavailable(err)
        } else {
            AppError::Store(err)
        }
    }
}

impl AppError {
    /// A 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        AppError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// A 422 with a code.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        AppError::Unprocessable {
            code,
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            AppError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AppError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AppError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            AppError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            AppError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            AppError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            AppError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            AppError::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            AppError::HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            AppError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            AppError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            AppError::Saturated(_) => (StatusCode::SERVICE_UNAVAILABLE, "saturated"),
            AppError::MisdirectedRequest(_) => {
                (StatusCode::MISDIRECTED_REQUEST, "misdirected_request")
            }
            AppError::StorageRefused(problem) if problem.is_read_only() => {
                (StatusCode::INSUFFICIENT_STORAGE, "database_read_only")
            }
            AppError::StorageRefused(_) => (StatusCode::SERVICE_UNAVAILABLE, "database_gone"),
            AppError::NotReady(problem) if problem.is_read_only() => {
                (StatusCode::SERVICE_UNAVAILABLE, "database_read_only")
            }
            AppError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "database_gone"),
            AppError::ReadOnly(_) => (StatusCode::INSUFFICIENT_STORAGE, "database_read_only"),
            AppError::InsufficientStorage(_) => {
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
            }
            AppError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return AppError::PayloadTooLarge(format!(
                "the JSON body is over the server's request limit: {}",
                rejection.body_text()
            ));
        }
        AppError::bad_request(
            "bad_json",
            format!(
                "{}; send a JSON body with Content-Type: application/json",
                rejection.body_text()
            ),
        )
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            AppError::Store(err) => {
                tracing::error!(error = %err, "request failed inside the store");
                "internal server error; the server log has the details".to_owned()
            }
            AppError::InsufficientStorage(err @ StoreError::Spool(_)) => {
                tracing::warn!(error = %err, "spool directory full; upload refused");
                "the server's spool directory is full, so nothing was stored; uploads resume \
                 once space is freed (the server operator must free space there or move \
                 --spool-dir)"
                    .to_owned()
            }
            AppError::InsufficientStorage(err) => {
                tracing::warn!(error = %err, "database disk full; write refused");
                "the server's disk is full, so nothing was stored; writes resume once space is \
                 freed (the server operator must free space or lower --max-size)"
                    .to_owned()
            }
            AppError::ReadOnly(err) => {
                tracing::error!(error = %err, "the database refused a write as read-only");
                "the database refused the write because it is read-only, so nothing was stored: \
                 the server operator must make the database file, its -wal and -shm files and \
                 its directory writable by the user the server runs as (or mount the disk \
                 read-write), then restart the server"
                    .to_owned()
            }
            AppError::Unavailable(err) => {
                tracing::warn!(error = %err, "database unavailable");
                "the database is unavailable; try again later".to_owned()
            }
            other => other.to_string(),
        };
        let retry = matches!(
            self,
            AppError::Busy(_) | AppError::Saturated(_) | AppError::Unavailable(_)
        );
        let body = ErrorResponse {
            code: code.to_owned(),
            message,
        };
        let mut response = (status, axum::Json(body)).into_response();
        if retry {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}
