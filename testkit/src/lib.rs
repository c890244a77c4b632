//! Dev-only harnesses shared by the tests of `pycache-server` and `pycache-client`: one way to
//! run the real `pycache-server` binary ([`server`]) and one throwaway PostgreSQL cluster
//! ([`pg`]), and a certificate authority for TLS tests ([`tls`]). Only std, `tempfile` and
//! `rcgen`, so depending on it adds nothing to the crates under test.

pub mod pg;
pub mod server;
pub mod tls;
