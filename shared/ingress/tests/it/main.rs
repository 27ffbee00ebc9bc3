//! The ingress against a real socket on `127.0.0.1:0` with devplane behind it: every row of
//! CATALOGUE §2a that concerns the server (W25 is a unit test in `hands-protocol`), replays and
//! concurrent duplicates, the periodic drain, devplane's webhook sender driving whole sessions,
//! slowloris, and graceful shutdown. No test asserts an elapsed time; timeouts are short through
//! configuration and only bound how long a failing test can hang.

// Helpers outside `#[test]` functions panic on setup failures too; that is what a test wants.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Each test changes one or two knobs of the shared default stack; reassigning reads better.
#![allow(clippy::field_reassign_with_default)]

mod harness;
mod router;
mod sessions;
mod slowloris;
mod webhook_rows;
