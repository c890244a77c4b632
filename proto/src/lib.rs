//! The contract between `pycache-client` and `pycache-server`.
//!
//! This crate owns what both sides must agree on byte for byte: the cache [`key`] (its canonical
//! encoding and blake3 digest), the [`entry`] format shared by the client's local cache and the
//! server's store, the [`pack`] codec of batch requests, and the JSON [`api`] types and routes.
//! It depends on no web framework, database or HTTP client.

pub mod api;
pub mod entry;
pub mod key;
pub mod namespace;
pub mod pack;
mod reader;
pub mod signature;
pub mod size;

pub use api::ErrorResponse;
pub use entry::{Entry, EntryDigest, Outcome};
pub use key::{CacheKey, KeyDigest};
