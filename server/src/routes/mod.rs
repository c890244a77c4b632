//! HTTP handlers, one file per endpoint, and the small extractors they share.

pub mod batch_get;
pub mod batch_put;
mod content_encoding;
pub mod entry;
pub mod fallback;
pub mod health;
pub mod host;
pub mod info;
pub mod metrics;
pub mod openapi;
pub mod purge;
pub mod stats;
pub mod tokens;
mod upload;
pub mod writable;

use axum::extract::FromRequest;
use axum::response::{IntoResponse, Response};
use pycache_proto::KeyDigest;
use serde::Serialize;

use crate::error::AppError;

/// `axum::Json`, but a rejected body answers an [`pycache_proto::ErrorResponse`] like every
/// other error.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// The `{key}` of a path, which must be a 64-hex-digit key digest.
pub fn parse_key(raw: &str) -> Result<KeyDigest, AppError> {
    raw.parse().map_err(|e| {
        AppError::bad_request(
            "bad_key",
            format!("{e}; entries are addressed by the blake3 digest of their key"),
        )
    })
}
