//! Draining the queue when woken (PROTOCOL.md §10.1, DESIGN.md "Hand-off", container route):
//! non-blocking claims with `reclaim_older_than_ms=2000`, each claimed item handed to an
//! in-process session task. With a remote hand-off (Lambda) the drain only polls: the receiver
//! acks, so an item whose hand-off failed stays queued and is polled again.
//!
//! Bounds, so one delivery can neither hold its sender nor overrun the process:
//! - a free session slot is taken *before* each claim; with none free the drain stops and the
//!   rest stays queued (claiming an item nobody can serve would only let its lease lapse);
//! - at most `max_claims_per_drain` items per drain, and no claim starts after the drain's
//!   deadline;
//! - one drain at a time per process (claims are authoritative anyway; this only keeps a burst
//!   of deliveries from turning into a burst of polls).
//!
//! The drain runs on its own task and the caller waits for it at most its budget: if the
//! control plane is slow the delivery is answered 503 in time (CATALOGUE W23) while the drain
//! finishes and hands off whatever it claimed, so nothing claimed is ever dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hands_client::{ApiError, PollOptions};
use hands_protocol::work::WorkItem;
use hands_worker::poll::DRAIN_RECLAIM_MS;
use hands_worker::{Claim, Resume, Worker};
use http::StatusCode;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::handoff::HandOff;
use crate::metrics::Metrics;

/// Claims that ended in "not ours" (ack 409/404) allowed on top of `max_claims_per_drain`, so a
/// queue full of items other workers took cannot keep one drain polling.
const SKIP_ALLOWANCE: usize = 16;

/// What woke the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A verified `session.status_run_started` delivery.
    Webhook,
    /// The periodic drain (deliveries can be lost) or a freed session slot.
    Timer,
}

impl Trigger {
    pub const fn label(self) -> &'static str {
        match self {
            Trigger::Webhook => "webhook",
            Trigger::Timer => "timer",
        }
    }
}

/// Why a drain stopped claiming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainStop {
    /// The queue answered empty.
    Empty,
    /// Every session slot is busy; the rest stays queued.
    Saturated,
    /// The per-drain claim bound was reached.
    MaxClaims,
    /// The deadline passed before the queue was empty.
    Budget,
    /// The process is shutting down.
    ShuttingDown,
}

/// What one drain did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Polls sent (each claim attempt is one poll).
    pub polls: usize,
    /// Items claimed and handed to a session task.
    pub claimed: usize,
    pub stop: DrainStop,
}

/// Why a drain failed. None of these is passed through to the webhook sender as a status.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// Transport failure, 408/409/429 or 5xx (CATALOGUE C4).
    #[error("control plane unavailable: {0}")]
    Unavailable(ApiError),
    /// 401/403: the environment key is bad or revoked (C3).
    #[error("the control plane rejected the environment key: {0}")]
    KeyRejected(ApiError),
    /// 404: the environment (or the item) is gone (C2).
    #[error("environment not found: {0}")]
    Gone(ApiError),
    /// Another 4xx.
    #[error("the control plane refused the claim: {0}")]
    Refused(ApiError),
    /// The drain had not finished when the caller's budget ran out; it goes on in the background.
    #[error("the drain did not finish within the reply budget")]
    OverBudget,
    /// The drain task panicked.
    #[error("the drain task failed")]
    TaskFailed,
    /// A claimed item could not be handed to its server (the Lambda Invoke failed).
    #[error("hand-off failed: {0}")]
    HandOff(String),
}

impl DrainError {
    fn from_api(e: ApiError) -> Self {
        match e.status() {
            _ if e.is_transient() => DrainError::Unavailable(e),
            _ if e.is_auth() => DrainError::KeyRejected(e),
            Some(StatusCode::NOT_FOUND) => DrainError::Gone(e),
            _ => DrainError::Refused(e),
        }
    }

    /// A short stable label for metrics.
    pub const fn label(&self) -> &'static str {
        match self {
            DrainError::Unavailable(_) => "unavailable",
            DrainError::KeyRejected(_) => "key_rejected",
            DrainError::Gone(_) => "gone",
            DrainError::Refused(_) => "refused",
            DrainError::OverBudget => "over_budget",
            DrainError::TaskFailed => "task_failed",
            DrainError::HandOff(_) => "hand_off",
        }
    }
}

/// Releases a session's slot accounting even if the session task panics.
struct ActiveSession {
    metrics: Arc<Metrics>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for ActiveSession {
    fn drop(&mut self) {
        self.metrics.session_ended();
    }
}

/// Claims items and runs their sessions.
pub(crate) struct Drainer {
    worker: Worker,
    metrics: Arc<Metrics>,
    slots: Arc<Semaphore>,
    sessions: Mutex<JoinSet<()>>,
    /// One drain at a time; also taken by shutdown so no drain is mid-claim when sessions are
    /// collected.
    lock: tokio::sync::Mutex<()>,
    max_claims: usize,
    /// Set when a drain stopped for lack of a slot: the next freed slot wakes the timer.
    saturated: AtomicBool,
    pub(crate) slot_freed: Notify,
    /// Items go here instead of to in-process sessions (no slot bound: the receiver scales).
    remote: Option<Arc<dyn HandOff>>,
}

impl Drainer {
    pub(crate) fn new(
        worker: Worker,
        metrics: Arc<Metrics>,
        max_sessions: usize,
        max_claims: usize,
    ) -> Self {
        Drainer {
            worker,
            metrics,
            slots: Arc::new(Semaphore::new(max_sessions.max(1))),
            sessions: Mutex::new(JoinSet::new()),
            lock: tokio::sync::Mutex::new(()),
            max_claims: max_claims.max(1),
            saturated: AtomicBool::new(false),
            slot_freed: Notify::new(),
            remote: None,
        }
    }

    /// Hands claimed items to `remote` instead of serving them in process.
    pub(crate) fn with_hand_off(mut self, remote: Arc<dyn HandOff>) -> Self {
        self.remote = Some(remote);
        self
    }

    pub(crate) fn worker(&self) -> &Worker {
        &self.worker
    }

    /// Drains on a task of its own and waits for it at most `budget`. Claims start only in the
    /// first three quarters of the budget, so a claim in flight usually completes in time.
    pub(crate) async fn drain(
        self: &Arc<Self>,
        trigger: Trigger,
        budget: Duration,
    ) -> Result<DrainReport, DrainError> {
        let started = Instant::now();
        let claim_until = started + budget.mul_f64(0.75);
        let me = Arc::clone(self);
        let task = tokio::spawn(
            async move { me.pass(claim_until).await }.instrument(tracing::Span::current()),
        );
        let result = match tokio::time::timeout_at(started + budget, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(join)) => {
                tracing::error!(error = %join, "drain task failed");
                Err(DrainError::TaskFailed)
            }
            Err(_) => Err(DrainError::OverBudget),
        };
        let label = match &result {
            Ok(_) => "ok",
            Err(e) => e.label(),
        };
        self.metrics.drain(trigger.label(), label);
        match &result {
            Ok(r) if r.claimed > 0 => {
                tracing::info!(trigger = trigger.label(), claimed = r.claimed, polls = r.polls, stop = ?r.stop, "drained")
            }
            Ok(r) => {
                tracing::debug!(trigger = trigger.label(), polls = r.polls, stop = ?r.stop, "drained")
            }
            Err(DrainError::Gone(e)) => {
                tracing::info!(trigger = trigger.label(), error = %e, "drain: environment not found")
            }
            Err(DrainError::KeyRejected(e)) => {
                tracing::error!(trigger = trigger.label(), error = %e, "drain: environment key rejected")
            }
            Err(e) => tracing::warn!(trigger = trigger.label(), error = %e, "drain failed"),
        }
        result
    }

    async fn pass(self: Arc<Self>, claim_until: Instant) -> Result<DrainReport, DrainError> {
        let mut report = DrainReport {
            polls: 0,
            claimed: 0,
            stop: DrainStop::Budget,
        };
        let shutdown = self.worker.shutdown_token().clone();
        let _one_at_a_time = tokio::select! {
            guard = self.lock.lock() => guard,
            () = tokio::time::sleep_until(claim_until) => return Ok(report),
        };
        let opts = PollOptions {
            block_ms: None,
            reclaim_older_than_ms: Some(DRAIN_RECLAIM_MS),
            worker_id: Some(self.worker.config().worker_id.clone()),
        };
        report.stop = loop {
            if shutdown.is_cancelled() {
                break DrainStop::ShuttingDown;
            }
            if report.claimed >= self.max_claims || report.polls >= self.max_claims + SKIP_ALLOWANCE
            {
                break DrainStop::MaxClaims;
            }
            if Instant::now() >= claim_until {
                break DrainStop::Budget;
            }
            let permit = if self.remote.is_some() {
                None
            } else {
                let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
                    self.saturated.store(true, Ordering::SeqCst);
                    self.metrics.saturated();
                    break DrainStop::Saturated;
                };
                Some(permit)
            };
            report.polls += 1;
            if let Some(remote) = &self.remote {
                // Polled, not acked: the receiver acks as its first step. If the hand-off
                // fails, the item is still queued and a poll after DRAIN_RECLAIM_MS gets it
                // again; acking here would leave it leased to nobody.
                match self.worker.poll_item(&opts).await {
                    Ok(Some(item)) => {
                        report.claimed += 1;
                        self.metrics.claimed();
                        if let Err(e) = remote.hand_off(&item).await {
                            tracing::error!(work_id = %item.id, session_id = %item.data.id, error = %e,
                                reclaim_after_ms = DRAIN_RECLAIM_MS,
                                "hand-off failed; the item stays unacknowledged and a later drain polls it again");
                            return Err(DrainError::HandOff(e.to_string()));
                        }
                        tracing::info!(work_id = %item.id, session_id = %item.data.id, "handed off");
                    }
                    Ok(None) => break DrainStop::Empty,
                    Err(e) => return Err(DrainError::from_api(e)),
                }
                continue;
            }
            match self.worker.claim(&opts).await {
                Ok(Claim::Item(item)) => {
                    report.claimed += 1;
                    self.metrics.claimed();
                    match permit {
                        Some(permit) => self.spawn_session(*item, permit),
                        // A permit is taken above whenever there is no remote.
                        None => return Err(DrainError::TaskFailed),
                    }
                }
                Ok(Claim::Skipped) => {}
                Ok(Claim::Empty) => break DrainStop::Empty,
                Err(e) => return Err(DrainError::from_api(e)),
            }
        };
        Ok(report)
    }

    fn spawn_session(self: &Arc<Self>, item: WorkItem, permit: OwnedSemaphorePermit) {
        let span = tracing::info_span!("session",
            environment_id = %item.environment_id, work_id = %item.id, session_id = %item.data.id);
        self.metrics.session_started();
        let active = ActiveSession {
            metrics: Arc::clone(&self.metrics),
            _permit: permit,
        };
        let me = Arc::clone(self);
        let session = async move {
            me.worker.serve(&item, Resume::default()).await;
            drop(active);
            if me.saturated.swap(false, Ordering::SeqCst) {
                // Items were left queued for lack of a slot; one is free now.
                me.slot_freed.notify_one();
            }
        }
        .instrument(span);
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(done) = sessions.try_join_next() {
            self.settle(done);
        }
        sessions.spawn(session);
    }

    fn settle(&self, done: Result<(), tokio::task::JoinError>) {
        if let Err(e) = done {
            // P7: a panic ends the task, not the process; the item's lease lapses and the
            // control plane hands it out again.
            self.metrics.session_panicked();
            tracing::error!(error = %e, "session task failed");
        }
    }

    /// Waits up to `grace` for every session to end (they see the worker's shutdown token and
    /// cancel themselves); aborts the rest. True if all ended in time.
    pub(crate) async fn finish_sessions(&self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        // No drain may be between a claim and its hand-off while the set is collected.
        let _no_drain = tokio::time::timeout_at(deadline, self.lock.lock()).await;
        let mut sessions =
            std::mem::take(&mut *self.sessions.lock().unwrap_or_else(|p| p.into_inner()));
        let all = tokio::time::timeout_at(deadline, async {
            while let Some(done) = sessions.join_next().await {
                self.settle(done);
            }
        })
        .await
        .is_ok();
        if !all {
            tracing::warn!(
                left = sessions.len(),
                "sessions still running at the end of the grace period; aborting them"
            );
            sessions.abort_all();
        }
        all
    }
}
