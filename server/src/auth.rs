//! Bearer tokens: how they are made and hashed, and the [`Caller`] every handler checks.
//!
//! A token is 32 random bytes shown as hex behind a `pyc_` prefix; the database keeps only its
//! blake3 hash (tokens carry 256 bits of entropy, so a fast hash is enough). Tokens are never
//! logged.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use pycache_proto::api::{Scope, NAMESPACE_HEADER};
use pycache_proto::namespace::{join_patterns, validate_namespace, NamespacePattern};
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

/// Longest token name.
pub const MAX_TOKEN_NAME: usize = 64;

/// Checks a new token's name: 1 to 64 of `A-Z a-z 0-9 . _ - @ /`, starting with a letter or
/// digit, so that names print as they are in lists, logs and provenance.
pub fn validate_token_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TOKEN_NAME
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a token name: use 1 to {MAX_TOKEN_NAME} of the characters A-Z a-z 0-9 \
             . _ - @ /, starting with a letter or digit (e.g. ci-main)",
            name.chars().take(80).collect::<String>()
        ))
    }
}

/// What a new token may write and read when its creator does not say: write and admin tokens
/// write `default`, read tokens nothing; every token reads `default` (what tokens from before
/// namespaces do).
pub fn default_grants(scope: Scope) -> (Vec<NamespacePattern>, Vec<NamespacePattern>) {
    let default =
        || NamespacePattern::Exact(pycache_proto::namespace::DEFAULT_NAMESPACE.to_owned());
    let writes = if scope >= Scope::Write {
        vec![default()]
    } else {
        Vec::new()
    };
    (writes, vec![default()])
}

/// Who is asking: their valid token's name, scope and namespace grants (none without a token:
/// then the server's public namespaces are its reads), and the namespace the request named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// The token's scope.
    pub scope: Option<Scope>,
    /// The token's name.
    pub name: Option<String>,
    /// Namespaces the token may write.
    pub writes: Vec<NamespacePattern>,
    /// Namespaces the token reads, in order.
    pub reads: Vec<NamespacePattern>,
    /// The namespace the request named ([`NAMESPACE_HEADER`]).
    pub namespace: Option<String>,
}

impl Caller {
    /// Who the caller is, for messages and logs.
    pub fn who(&self) -> String {
        match &self.name {
            Some(name) => format!("the token {name:?}"),
            None => "a caller without a token".to_owned(),
        }
    }

    fn may_write(&self, namespace: &str) -> bool {
        self.writes.iter().any(|p| p.matches(namespace))
    }

    fn may_read(&self, namespace: &str) -> bool {
        self.may_write(namespace) || self.reads.iter().any(|p| p.matches(namespace))
    }

    fn grants(&self) -> String {
        let writes = if self.writes.is_empty() {
            "no namespace".to_owned()
        } else {
            join_patterns(&self.writes)
        };
        let reads = if self.reads.is_empty() {
            "no namespace".to_owned()
        } else {
            join_patterns(&self.reads)
        };
        format!("it writes {writes} and reads {reads}")
    }

    /// The namespace this caller's uploads go to: the one the request named, else the token's
    /// first writable namespace; 403 when that is not one the token may write.
    pub fn write_namespace(&self) -> Result<String, AppError> {
        match &self.namespace {
            Some(named) if self.may_write(named) => Ok(named.clone()),
            Some(named) => Err(AppError::Forbidden(format!(
                "{} may not write the namespace {named:?}: {}; name one it may write \
                 (--namespace) or ask an admin for a token that writes {named:?}",
                self.who(),
                self.grants()
            ))),
            None => self
                .writes
                .iter()
                .find_map(|p| p.exact())
                .map(str::to_owned)
                .ok_or_else(|| {
                    AppError::Forbidden(format!(
                        "{} names no namespace to write: {}; name one it may write with \
                         --namespace (PYCACHE_NAMESPACE)",
                        self.who(),
                        self.grants()
                    ))
                }),
        }
    }

    /// The namespaces a lookup of this caller searches, in order (first hit wins): the one
    /// the request named (or the token's write namespace), then the token's reads. 403 when
    /// the request names a namespace the token may neither read nor write.
    pub fn read_order(&self) -> Result<Vec<String>, AppError> {
        let mut order: Vec<String> = Vec::new();
        match &self.namespace {
            Some(named) if self.may_read(named) => order.push(named.clone()),
            Some(named) => {
                return Err(AppError::Forbidden(format!(
                    "{} may not read the namespace {named:?}: {}; name one it may read \
                     (--namespace) or ask an admin for a token that reads {named:?}",
                    self.who(),
                    self.grants()
                )))
            }
            None => order.extend(
                self.writes
                    .iter()
                    .find_map(|p| p.exact())
                    .map(str::to_owned),
            ),
        }
        for name in self.reads.iter().filter_map(|p| p.exact()) {
            if !order.iter().any(|o| o == name) {
                order.push(name.to_owned());
            }
        }
        Ok(order)
    }

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
    /// revoked or malformed one is a 401 even where no token is needed. A namespace header
    /// must name a valid namespace (400).
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let namespace = match parts.headers.get(NAMESPACE_HEADER) {
            None => None,
            Some(value) => {
                let text = value.to_str().unwrap_or("\u{fffd}").trim().to_owned();
                validate_namespace(&text).map_err(|e| {
                    AppError::bad_request("bad_namespace", format!("{NAMESPACE_HEADER}: {e}"))
                })?;
                Some(text)
            }
        };
        let mut headers = parts.headers.get_all(AUTHORIZATION).iter();
        let (Some(header), None) = (headers.next(), headers.next()) else {
            if parts.headers.contains_key(AUTHORIZATION) {
                return Err(AppError::Unauthorized(
                    "more than one Authorization header: send exactly one `Bearer <token>`"
                        .to_owned(),
                ));
            }
            return Ok(Caller {
                reads: state.config.public_namespaces.clone(),
                namespace,
                ..Caller::default()
            });
        };
        // The scheme's name is case-insensitive (RFC 9110 §11.1).
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                AppError::Unauthorized(
                    "the Authorization header must be `Bearer <token>`".to_owned(),
                )
            })?;
        match state.store.token_grant(&token_hash(token)).await? {
            Some(record) => Ok(Caller {
                scope: Some(record.scope),
                name: Some(record.name),
                writes: record.writes,
                reads: record.reads,
                namespace,
            }),
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
            ..Caller::default()
        };
        assert!(write.require(Scope::Read, false).is_ok());
        assert!(matches!(
            write.require(Scope::Admin, false),
            Err(AppError::Forbidden(_))
        ));
        let anon = Caller::default();
        assert!(anon.require(Scope::Read, true).is_ok());
        assert!(matches!(
            anon.require(Scope::Write, true),
            Err(AppError::Unauthorized(_))
        ));
    }

    fn caller(writes: &str, reads: &str, namespace: Option<&str>) -> Caller {
        Caller {
            scope: Some(Scope::Write),
            name: Some("t".into()),
            writes: pycache_proto::namespace::parse_patterns(writes).unwrap(),
            reads: pycache_proto::namespace::parse_patterns(reads).unwrap(),
            namespace: namespace.map(str::to_owned),
        }
    }

    #[test]
    fn namespaces_follow_the_tokens_grants() {
        let pr = caller("pr/*", "main", Some("pr/12"));
        assert_eq!(pr.write_namespace().unwrap(), "pr/12");
        assert_eq!(pr.read_order().unwrap(), ["pr/12", "main"]);
        // A PR token can neither write nor name-to-write main; it reads main.
        let pr_main = caller("pr/*", "main", Some("main"));
        assert!(matches!(
            pr_main.write_namespace(),
            Err(AppError::Forbidden(_))
        ));
        assert_eq!(pr_main.read_order().unwrap(), ["main"]);
        assert!(matches!(
            caller("pr/*", "main", Some("release")).read_order(),
            Err(AppError::Forbidden(_))
        ));
        // Without a namespace: the first exact write namespace, then the reads.
        let main = caller("main", "main,default", None);
        assert_eq!(main.write_namespace().unwrap(), "main");
        assert_eq!(main.read_order().unwrap(), ["main", "default"]);
        assert!(matches!(
            caller("pr/*", "main", None).write_namespace(),
            Err(AppError::Forbidden(_))
        ));
        assert_eq!(caller("", "main", None).read_order().unwrap(), ["main"]);
    }
}
