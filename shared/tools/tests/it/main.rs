//! Integration tests of the toolset: one binary, one module per tool or concern.

// Test code: a failed setup step should panic with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod canary;
mod catalogue;
mod common;
mod isolation;
mod props;
mod tables;
