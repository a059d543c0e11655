//! Integration tests of `runner::executor` against real processes and the real Docker Engine.
//!
//! `contract` runs the same semantics tests against both executors; `shell` and `docker` cover
//! what only one of them does. Docker tests fail (never skip) when no Engine answers.

mod contract;
mod docker;
mod shell;
mod support;
