//! The work-item lease: a heartbeat task that keeps it, and tells the session when it is gone
//! (PROTOCOL.md §6.4, CATALOGUE C5, C10, C11, P9).
//!
//! The heartbeat runs on its own tokio task, so a busy tool never delays it. It starts before
//! any download and its first beat is awaited before anything runs: a duplicate executor (a
//! second delivery, a second Lambda invoke) learns from a 412 that the lease is held elsewhere
//! and runs nothing (L1, P5).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hands_client::{ControlPlane, Credential, Heartbeat};
use hands_protocol::work::NO_HEARTBEAT;
use tokio::sync::watch;

use crate::observer::Observer;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Lease timing. Defaults are the reference constants (§9.5).
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// TTL assumed until the server reports one.
    pub assumed_ttl: Duration,
    /// Upper bound of the heartbeat interval; the interval is `clamp(ttl/2, min, max)`.
    pub max_interval: Duration,
    pub min_interval: Duration,
    /// Sent as `desired_ttl_seconds` when set (no reference client sends it).
    pub desired_ttl: Option<Duration>,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            assumed_ttl: Duration::from_secs(90),
            max_interval: Duration::from_secs(30),
            min_interval: Duration::from_secs(1),
            desired_ttl: None,
        }
    }
}

/// The lease as the session sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseStatus {
    /// Before the first successful beat.
    Claiming,
    Held,
    /// Someone else holds it or it was re-queued (412), or no beat succeeded within the TTL.
    /// Kill the tool tree, post nothing more, leave the item alone.
    Lost(String),
    /// The server asked the worker to stop (`stopping`/`stopped`/`lease_extended: false`) or
    /// rejected the heartbeat outright. Cancel the in-flight call with an error result, then
    /// force-stop the item.
    Stop(String),
    /// The worker let go (the session ended normally).
    Released,
}

impl LeaseStatus {
    pub fn is_over(&self) -> bool {
        matches!(
            self,
            LeaseStatus::Lost(_) | LeaseStatus::Stop(_) | LeaseStatus::Released
        )
    }
}

/// What identifies the lease on the wire.
#[derive(Clone, Debug)]
pub struct LeaseTarget {
    pub environment_id: String,
    pub work_id: String,
    pub credential: Credential,
}

/// A running heartbeat.
#[derive(Debug)]
pub struct Lease {
    status: watch::Receiver<LeaseStatus>,
    shared: Arc<Mutex<Shared>>,
    release: CancellationToken,
    /// Ends the loop between beats, never during one (see [`Lease::hand_over`]).
    hand_over: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    last_heartbeat: String,
    ttl: Duration,
}

impl Lease {
    /// Starts heartbeating. `expected` is `NO_HEARTBEAT` for a fresh claim, or the last value a
    /// predecessor stored (a continuation carries the CAS token forward).
    pub fn start(
        cp: ControlPlane,
        target: LeaseTarget,
        config: LeaseConfig,
        expected: Option<String>,
        observer: Arc<dyn Observer>,
    ) -> Lease {
        let (tx, rx) = watch::channel(LeaseStatus::Claiming);
        let shared = Arc::new(Mutex::new(Shared {
            last_heartbeat: expected.unwrap_or_else(|| NO_HEARTBEAT.to_owned()),
            ttl: config.assumed_ttl,
        }));
        let release = CancellationToken::new();
        let hand_over = CancellationToken::new();
        let task = tokio::spawn(
            heartbeat_loop(
                cp,
                target,
                config,
                Arc::clone(&shared),
                tx,
                Stops {
                    release: release.clone(),
                    hand_over: hand_over.clone(),
                },
                observer,
            )
            .instrument(tracing::Span::current()),
        );
        Lease {
            status: rx,
            shared,
            release,
            hand_over,
            task,
        }
    }

    /// Waits for the first heartbeat's verdict: `Held`, or why the lease cannot be used.
    pub async fn claimed(&self) -> LeaseStatus {
        let mut rx = self.status.clone();
        match rx.wait_for(|s| *s != LeaseStatus::Claiming).await {
            Ok(s) => s.clone(),
            Err(_) => LeaseStatus::Lost("heartbeat task ended".to_owned()),
        }
    }

    pub fn status(&self) -> LeaseStatus {
        self.status.borrow().clone()
    }

    /// Resolves once the lease is lost, stopped or released.
    pub async fn ended(&self) -> LeaseStatus {
        let mut rx = self.status.clone();
        match rx.wait_for(LeaseStatus::is_over).await {
            Ok(s) => s.clone(),
            Err(_) => LeaseStatus::Lost("heartbeat task ended".to_owned()),
        }
    }

    /// A receiver for select loops.
    pub fn watch(&self) -> watch::Receiver<LeaseStatus> {
        self.status.clone()
    }

    /// The lease TTL the server last reported (or the assumed one).
    pub fn ttl(&self) -> Duration {
        self.shared
            .lock()
            .map(|s| s.ttl)
            .unwrap_or(Duration::from_secs(90))
    }

    /// The CAS token to hand to a successor.
    pub fn last_heartbeat(&self) -> String {
        self.shared
            .lock()
            .map(|s| s.last_heartbeat.clone())
            .unwrap_or_default()
    }

    /// Stops heartbeating and returns the final status (`Released` unless it had already
    /// ended otherwise).
    pub async fn release(mut self) -> LeaseStatus {
        self.release.cancel();
        let _ = (&mut self.task).await;
        let status = self.status.borrow().clone();
        match status {
            LeaseStatus::Claiming | LeaseStatus::Held => LeaseStatus::Released,
            other => other,
        }
    }
}

impl Lease {
    /// Stops heartbeating *without* abandoning a beat in flight, and returns the CAS token a
    /// successor must present (a Lambda continuation), or the status if the lease is no longer
    /// ours. A beat cut off mid-request may have been stored by the server with a value we never
    /// saw; the successor's first beat would then get 412 and lose a lease nobody else holds.
    pub async fn hand_over(mut self) -> Result<String, LeaseStatus> {
        self.hand_over.cancel();
        let _ = (&mut self.task).await;
        let status = self.status.borrow().clone();
        match status {
            LeaseStatus::Claiming | LeaseStatus::Held => Ok(self.last_heartbeat()),
            other => Err(other),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.release.cancel();
    }
}

fn interval_for(ttl: Duration, config: &LeaseConfig) -> Duration {
    (ttl / 2).clamp(config.min_interval, config.max_interval)
}

/// How the heartbeat loop is ended: `release` at once, `hand_over` only between beats.
struct Stops {
    release: CancellationToken,
    hand_over: CancellationToken,
}

async fn heartbeat_loop(
    cp: ControlPlane,
    target: LeaseTarget,
    config: LeaseConfig,
    shared: Arc<Mutex<Shared>>,
    tx: watch::Sender<LeaseStatus>,
    stops: Stops,
    observer: Arc<dyn Observer>,
) {
    let Stops { release, hand_over } = stops;
    let mut last_success = Instant::now();
    loop {
        if hand_over.is_cancelled() {
            return;
        }
        let (expected, ttl) = match shared.lock() {
            Ok(s) => (s.last_heartbeat.clone(), s.ttl),
            Err(_) => return,
        };
        let interval = interval_for(ttl, &config);
        let beat = cp.heartbeat(
            &target.credential,
            &target.environment_id,
            &target.work_id,
            &expected,
            config.desired_ttl.map(|d| d.as_secs()),
            // A beat that takes longer than the interval is as good as failed.
            interval.max(Duration::from_secs(1)),
        );
        let outcome = tokio::select! {
            biased;
            () = release.cancelled() => return,
            r = beat => r,
        };
        let next_wait = match outcome {
            Ok(Heartbeat::Beat(resp)) => {
                last_success = Instant::now();
                let ttl = if resp.ttl_seconds > 0 {
                    Duration::from_secs(resp.ttl_seconds)
                } else {
                    ttl
                };
                if let Ok(mut s) = shared.lock() {
                    s.last_heartbeat = resp.last_heartbeat.clone();
                    s.ttl = ttl;
                }
                if resp.ends_lease() {
                    tracing::info!(
                        work_id = %target.work_id,
                        state = resp.state.as_str(),
                        lease_extended = resp.lease_extended,
                        "the control plane asked this worker to stop"
                    );
                    let _ = tx.send(LeaseStatus::Stop(format!(
                        "work item is {} (lease_extended={})",
                        resp.state.as_str(),
                        resp.lease_extended
                    )));
                    return;
                }
                tx.send_if_modified(|s| {
                    let changed = *s != LeaseStatus::Held;
                    *s = LeaseStatus::Held;
                    changed
                });
                interval_for(ttl, &config)
            }
            Ok(Heartbeat::LeaseLost(state)) => {
                tracing::warn!(work_id = %target.work_id, server_state = ?state.map(|s| s.state),
                    "heartbeat precondition failed: the lease belongs to someone else now");
                let _ = tx.send(LeaseStatus::Lost(
                    "heartbeat answered 412: the lease is held elsewhere or the item was re-queued"
                        .to_owned(),
                ));
                return;
            }
            Err(e) if !e.is_transient() => {
                observer.heartbeat_failed(&target.work_id, &e);
                tracing::error!(work_id = %target.work_id, error = %e, "heartbeat rejected");
                let _ = tx.send(LeaseStatus::Stop(format!("heartbeat rejected: {e}")));
                return;
            }
            Err(e) => {
                observer.heartbeat_failed(&target.work_id, &e);
                let silent_for = last_success.elapsed();
                if silent_for >= ttl {
                    tracing::error!(work_id = %target.work_id, error = %e,
                        "no successful heartbeat within the lease TTL: assuming the lease is lost");
                    let _ = tx.send(LeaseStatus::Lost(format!(
                        "no successful heartbeat for {}s (TTL {}s): {}",
                        silent_for.as_secs(),
                        ttl.as_secs(),
                        e
                    )));
                    return;
                }
                tracing::warn!(work_id = %target.work_id, error = %e, "heartbeat failed; retrying");
                // Retry sooner than a full interval, but never past the TTL deadline.
                let remaining = ttl.saturating_sub(silent_for);
                (interval / 4)
                    .max(config.min_interval)
                    .min(remaining.max(Duration::from_millis(100)))
            }
        };
        tokio::select! {
            biased;
            () = release.cancelled() => return,
            () = hand_over.cancelled() => return,
            () = tokio::time::sleep(next_wait) => {}
        }
    }
}
