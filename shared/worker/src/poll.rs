//! Claiming work: one claim (poll plus ack, or the two steps apart for a hand-off), and the always-on poll loop (`hands poll`,
//! PROTOCOL.md §6.2). The webhook drain (§10.1) lives in `hands-ingress`, built on
//! [`Worker::claim`].
//!
//! A claim is `poll` then `ack`. An ack that answers 409 means another worker has the item
//! (CATALOGUE C1): nothing runs and the item is left alone. Sessions run on their own tasks,
//! at most `max_sessions` at once; beyond that, items stay queued for the next poll.

use std::sync::Arc;
use std::time::Duration;

use hands_client::{ApiError, Backoff, Credential, PollOptions};
use hands_protocol::work::WorkItem;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::item::{ItemOutcome, Resume, Worker};

/// The long-poll wait of the always-on loop (§9.5).
pub const POLL_BLOCK_MS: u32 = 999;
/// Drain mode reclaims items a dead runner claimed but never acknowledged (§6.1).
pub const DRAIN_RECLAIM_MS: u64 = 2000;

/// Why polling stopped.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("no environment key: polling needs one")]
    NoEnvironmentKey,
    /// A fatal 4xx on poll (bad or revoked key, unknown environment): retrying cannot help.
    #[error("polling refused: {0}")]
    Refused(ApiError),
}

/// What an ack answered (transient failures are errors instead).
#[derive(Debug)]
pub enum Ack {
    /// The item is ours: its lease started.
    Acked,
    /// 409 or 404: another worker (or invocation) has it, or it is gone.
    NotOurs(ApiError),
    /// Another non-transient refusal.
    Refused(ApiError),
}

/// What one claim attempt produced.
pub enum Claim {
    /// Claimed and acknowledged: serve it.
    Item(Box<WorkItem>),
    /// The queue is empty.
    Empty,
    /// Claimed but not ours to run (ack said 409 or 404); keep polling.
    Skipped,
}

impl Worker {
    fn environment_key(&self) -> Result<Credential, PollError> {
        self.config()
            .environment_key
            .clone()
            .ok_or(PollError::NoEnvironmentKey)
    }

    /// One poll without an ack: the item stays queued (claimed, not acknowledged), and a later
    /// poll with `reclaim_older_than_ms` gets it again if nobody acks it. A hand-off to another
    /// process polls this way and lets the receiver [`ack`](Worker::ack), so an item whose
    /// hand-off failed is never left acknowledged with nobody serving it.
    pub async fn poll_item(&self, opts: &PollOptions) -> Result<Option<WorkItem>, ApiError> {
        let key = self.poll_key()?;
        let env = &self.config().environment_id;
        self.control_plane().poll(&key, env, opts).await
    }

    /// Acknowledges a polled item. Transient failures are errors (the unacknowledged item is
    /// reclaimed by a later poll, or the caller retries); 409/404 and other refusals are
    /// answers, and this never force-stops anything: the caller decides.
    pub async fn ack(&self, item: &WorkItem) -> Result<Ack, ApiError> {
        let key = self.poll_key()?;
        let env = &self.config().environment_id;
        match self.control_plane().ack(&key, env, &item.id).await {
            Ok(()) => Ok(Ack::Acked),
            Err(e) if matches!(e.status().map(|s| s.as_u16()), Some(409 | 404)) => {
                Ok(Ack::NotOurs(e))
            }
            Err(e) if !e.is_transient() => Ok(Ack::Refused(e)),
            Err(e) => Err(e),
        }
    }

    fn poll_key(&self) -> Result<Credential, ApiError> {
        self.config()
            .environment_key
            .clone()
            .ok_or_else(|| ApiError::Transport("no environment key".into()))
    }

    /// One poll plus ack, for serving in this process.
    pub async fn claim(&self, opts: &PollOptions) -> Result<Claim, ApiError> {
        let Some(item) = self.poll_item(opts).await? else {
            return Ok(Claim::Empty);
        };
        match self.ack(&item).await? {
            Ack::Acked => Ok(Claim::Item(Box::new(item))),
            Ack::NotOurs(e) => {
                // C1/C2: taken by another worker, or gone. Not ours; never executed.
                tracing::info!(work_id = %item.id, status = ?e.status(), "claim lost at ack; skipping the item");
                Ok(Claim::Skipped)
            }
            Ack::Refused(e) => {
                // §6.2 step 5: a fatal ack gets a best-effort force-stop so it does not linger.
                tracing::warn!(work_id = %item.id, error = %e, "ack refused; force-stopping the item");
                let key = self.poll_key()?;
                let env = &self.config().environment_id;
                let _ = self.control_plane().stop(&key, env, &item.id, true).await;
                Ok(Claim::Skipped)
            }
        }
    }

    /// Polls until `shutdown` fires, serving up to `max_sessions` items at once. Returns when
    /// shut down (after the running sessions finished their teardown) or on a fatal error.
    pub async fn poll_forever(&self, max_sessions: usize) -> Result<(), PollError> {
        self.environment_key()?;
        let slots = Arc::new(Semaphore::new(max_sessions.max(1)));
        let mut sessions = JoinSet::new();
        let mut backoff = Backoff::for_polling();
        let opts = PollOptions {
            block_ms: Some(POLL_BLOCK_MS),
            reclaim_older_than_ms: None,
            worker_id: Some(self.config().worker_id.clone()),
        };
        let shutdown = self.shutdown_token().clone();
        let result = loop {
            while sessions.try_join_next().is_some() {}
            let permit = tokio::select! {
                biased;
                () = shutdown.cancelled() => break Ok(()),
                p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => break Ok(()) },
            };
            let started = Instant::now();
            let claim = tokio::select! {
                biased;
                () = shutdown.cancelled() => break Ok(()),
                c = self.claim(&opts) => c,
            };
            match claim {
                Ok(Claim::Item(item)) => {
                    backoff.reset();
                    self.spawn_session(&mut sessions, *item, permit);
                }
                Ok(Claim::Skipped) => backoff.reset(),
                Ok(Claim::Empty) => {
                    backoff.reset();
                    // A server that did not hold the long poll must not be hammered.
                    if started.elapsed() < Duration::from_millis(u64::from(POLL_BLOCK_MS) / 2) {
                        let pause = Duration::from_millis(rand::random_range(1000..3000));
                        tokio::select! {
                            () = shutdown.cancelled() => break Ok(()),
                            () = tokio::time::sleep(pause) => {}
                        }
                    }
                }
                Err(e) if !e.is_transient() => break Err(PollError::Refused(e)),
                Err(e) => {
                    let delay = backoff.delay_after(&e, &mut rand::rng());
                    tracing::warn!(error = %e, delay_ms = delay.as_millis() as u64, "poll failed; backing off");
                    tokio::select! {
                        () = shutdown.cancelled() => break Ok(()),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        };
        // Sessions see the same shutdown token: each cancels its in-flight call, posts the error
        // result and stops its item.
        while sessions.join_next().await.is_some() {}
        result
    }

    fn spawn_session(
        &self,
        sessions: &mut JoinSet<ItemOutcome>,
        item: WorkItem,
        permit: OwnedSemaphorePermit,
    ) {
        let worker = self.clone();
        sessions.spawn(async move {
            let outcome = worker.serve(&item, Resume::default()).await;
            drop(permit);
            outcome
        });
    }
}
