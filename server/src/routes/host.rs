//! `--allowed-host`: a server anyone may read must not answer pages of other sites. A browser
//! page on `evil.example` can make its name resolve to `127.0.0.1` (DNS rebinding) and then read
//! a cache on loopback as if it were its own origin; the `Host` header still says
//! `evil.example`, so requests for hosts the server was not told about are refused (421).
//! `/healthz` and `/readyz` stay open, for probes that address the server by its IP.

use axum::extract::{Request, State};
use axum::http::header::HOST;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pycache_proto::api;

use crate::error::AppError;
use crate::state::AppState;

/// The hosts a public-read server on a loopback address answers when `--allowed-host` is not
/// given.
pub const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A host as compared: without its port and IPv6 brackets, in lower case, without a final dot.
pub fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // `[::1]:8437`, `[::1]`
        rest.split_once(']').map_or(rest, |(inside, _)| inside)
    } else if host.matches(':').count() == 1 {
        // `name:8437`; a bare IPv6 address has more colons and no port.
        host.split_once(':').map_or(host, |(name, _)| name)
    } else {
        host
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Middleware: 421 for a request whose `Host` (or HTTP/2 authority) is not one of
/// `config.allowed_hosts`, when the list is set.
pub async fn allowed_host(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(allowed) = &state.config.allowed_hosts else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if path == api::HEALTHZ || path == api::READYZ {
        return next.run(request).await;
    }
    let host = request
        .headers()
        .get(HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    let listed = host
        .as_deref()
        .is_some_and(|h| allowed.contains(&normalize_host(h)));
    if listed {
        return next.run(request).await;
    }
    let named = match &host {
        // Quoted with escapes: the header is whatever the client sent.
        Some(host) => format!("the host {:?}", host.chars().take(100).collect::<String>()),
        None => "a request without a Host header".to_owned(),
    };
    AppError::MisdirectedRequest(format!(
        "this server does not answer {named}: it answers only {} (--allowed-host, \
         PYCACHE_ALLOWED_HOSTS); address it by one of those names, or ask its operator to add \
         this one",
        allowed.join(", ")
    ))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::normalize_host;

    #[test]
    fn hosts_compare_without_port_brackets_or_case() {
        assert_eq!(normalize_host("LocalHost:8437"), "localhost");
        assert_eq!(normalize_host("127.0.0.1"), "127.0.0.1");
        assert_eq!(normalize_host("[::1]:8437"), "::1");
        assert_eq!(normalize_host("[::1]"), "::1");
        assert_eq!(normalize_host("::1"), "::1");
        assert_eq!(normalize_host("cache.example.com."), "cache.example.com");
        assert_eq!(normalize_host(" Evil.Example:80 "), "evil.example");
    }
}
