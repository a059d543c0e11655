//! Integration tests of `runner::agent` against a fake server built from the protocol
//! (`fake/`: in-memory state, git over smart HTTP through `git http-backend`, injected faults),
//! with the real shell executor and, in `docker`, the real Docker Engine (the test fails, never
//! skips, when no Engine answers).

mod control;
mod docker;
mod fake;
mod jobs;
mod logs;
mod register;
mod support;
