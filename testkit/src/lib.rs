//! Dev-only harnesses shared by the tests of `pycache-server` and `pycache-client`: one way to
//! run the real `pycache-server` binary ([`server`]) and one throwaway PostgreSQL cluster
//! ([`pg`]). Only std and `tempfile`, so depending on it adds nothing to the crates under test.

pub mod pg;
pub mod server;
