//! Bearer tokens: how they are made and hashed, and the [`Caller`] every handler checks.
//!
//! A token is 32 random bytes shown as hex behind a `pyc_` prefix; the database keeps only its
//! blake3 hash (tokens carry 256 bits of entropy, so a fast hash is enough). Tokens are never
//! logged.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use pycache_proto::api::Scope;
use rand::RngCore;

use crate::error::AppError;
use crate::state::AppState;

/// Prefix of every token, so a leaked one is recognisable.
const TOKEN_PREFIX: &str = "pyc_";

/// A new random token's text.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// What the database stores for a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// Who is asking: the scope of their valid token, or `None` without a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's scope.
    pub scope: Option<Scope>,
}

impl Caller {
    /// Ok when the caller may act at `needed`; 401 without a token, 403 with too small a one.
    pub fn require(&self, needed: Scope, public_read: bool) -> Result<(), AppError> {
        match self.scope {
            Some(scope) if scope >= needed => Ok(()),
            None if needed == Scope::Read && public_read => Ok(()),
            None => Err(AppError::Unauthorized(format!(
                "this needs a token with the {} scope: send Authorization: Bearer <token>",
                needed.as_str()
            ))),
            Some(scope) => Err(AppError::Forbidden(format!(
                "this needs the {} scope; the token has only {}",
                needed.as_str(),
                scope.as_str()
            ))),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    /// A request with an `Authorization` header must carry a valid token: an unknown,
    /// revoked or malformed one is a 401 even where no token is needed.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            return Ok(Caller { scope: None });
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                AppError::Unauthorized(
                    "the Authorization header must be `Bearer <token>`".to_owned(),
                )
            })?;
        match state.store.token_scope(&token_hash(token)).await? {
            Some(scope) => Ok(Caller { scope: Some(scope) }),
            None => Err(AppError::Unauthorized(
                "the token is unknown or revoked: ask an admin for a new one".to_owned(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = new_token();
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == 4 + 64);
        assert_ne!(a, new_token());
        assert_ne!(token_hash(&a), token_hash(&new_token()));
    }

    #[test]
    fn scopes_order_read_write_admin() {
        let write = Caller {
            scope: Some(Scope::Write),
        };
        assert!(write.require(Scope::Read, false).is_ok());
        assert!(matches!(
            write.require(Scope::Admin, false),
            Err(AppError::Forbidden(_))
        ));
        let anon = Caller { scope: None };
        assert!(anon.require(Scope::Read, true).is_ok());
        assert!(matches!(
            anon.require(Scope::Write, true),
            Err(AppError::Unauthorized(_))
        ));
    }
}
