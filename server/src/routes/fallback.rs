//! Answers for unknown routes and methods, in the same JSON error shape as everything else.

use axum::http::{Method, Uri};

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
