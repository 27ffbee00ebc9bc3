//! devplane integration tests: the real server on `127.0.0.1:0`, driven over HTTP with reqwest.

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
