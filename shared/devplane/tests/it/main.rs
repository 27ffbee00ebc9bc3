//! devplane integration tests: the real server on `127.0.0.1:0`, driven over HTTP with reqwest.

// Helpers outside `#[test]` functions panic on setup failures too; that is what a test wants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent;
mod auth;
mod faults;
mod lease;
mod queue;
mod sessions;
mod skills;
mod sse;
mod support;
mod webhook;
