//! Hooks for watching a worker serve sessions: the live transcript of `hands dev`, metrics.
//! Observers are called inline and must return quickly.

use std::time::Duration;

use hands_client::ApiError;
use hands_protocol::toolset::ToolOutput;

use crate::item::ItemOutcome;
use crate::ledger::Call;
use crate::results::Posted;

/// Receives what happens while sessions are served. Every method has an empty default.
pub trait Observer: Send + Sync {
    /// A call is about to execute.
    fn call_started(&self, _session_id: &str, _call: &Call) {}
    /// A call finished executing (before its result is posted).
    fn call_executed(
        &self,
        _session_id: &str,
        _call: &Call,
        _output: &ToolOutput,
        _elapsed: Duration,
    ) {
    }
    /// The result post ended.
    fn result_posted(&self, _session_id: &str, _call: &Call, _posted: &Posted) {}
    /// A heartbeat failed (the lease may still be held: transient failures are retried within
    /// the TTL). Lease loss and stops show up in [`Observer::item_finished`].
    fn heartbeat_failed(&self, _work_id: &str, _error: &ApiError) {}
    /// A work item was fully handled (teardown and stop included).
    fn item_finished(&self, _outcome: &ItemOutcome) {}
}

/// Observes nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl Observer for NoObserver {}
