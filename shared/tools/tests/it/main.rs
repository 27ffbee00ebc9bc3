//! Integration tests of the toolset: one binary, one module per tool or concern.

// Test code: a failed setup step should panic with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod canary;
mod canary_rows;
mod catalogue;
mod common;
mod isolation;
mod openat2_filtered;
mod prewarm;
mod props;
mod shell_rows;
mod symlink_race;
mod tables;
mod tier1;

// This test binary is the tier-1 helper of the rows that run tools under tier 1
// (`/proc/self/exe` is the test binary).
hands_sandbox::helper_dispatch_for_tests!();
