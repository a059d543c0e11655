//! The store's test suite: every test runs on SQLite and on PostgreSQL (see `support.rs`).

#[macro_use]
mod support;

mod claims;
mod forge;
mod id_token_keys;
mod open;
mod pipelines;
mod resources;
mod reuse;
mod runners;
mod throughput;
mod tls;
#[path = "../common/tls.rs"]
mod tls_ca;
mod transitions;
