//! Answers for unknown routes and methods, in the same JSON error shape as everything else.

use axum::extract::Request;
use axum::http::{Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::AppError;

/// 404 for a path the API does not have.
pub async fn not_found(method: Method, uri: Uri) -> AppError {
    AppError::NotFound(format!(
        "no route for {method} {}: see /api/v1/openapi.json",
        uri.path()
    ))
}

/// 405 for a known path asked with the wrong method.
pub async fn method_not_allowed(method: Method, uri: Uri) -> AppError {
    AppError::MethodNotAllowed(format!("{} does not accept {method}", uri.path()))
}

/// Most headers one request may carry.
pub const MAX_HEADERS: usize = 100;
/// Most bytes of header names and values one request may carry.
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// 431 with the JSON error for a request with too many or too large headers. (Past what the
/// connection's parser reads at all ([`crate::connections::MAX_HEADER_BUFFER`]) the connection itself
/// answers a bare 431 and closes.)
pub async fn header_limits(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return AppError::HeadersTooLarge(format!(
            "the request has {} headers of {bytes} bytes; the server takes at most \
             {MAX_HEADERS} headers and {MAX_HEADER_BYTES} bytes of them",
            headers.len()
        ))
        .into_response();
    }
    next.run(request).await
}
