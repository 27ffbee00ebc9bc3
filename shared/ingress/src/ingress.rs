//! [`Ingress`]: the state behind the Router, shared by the webhook handler, the periodic drain,
//! the metrics endpoint and the server's shutdown.

use std::sync::Arc;
use std::time::Duration;

use hands_client::ControlPlane;
use hands_protocol::webhook::Verifier;
use hands_worker::{Observer, Worker, WorkerConfig};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::IngressConfig;
use crate::dedupe::RecentDeliveries;
use crate::drain::{DrainError, DrainReport, Drainer, Trigger};
use crate::handoff::HandOff;
use crate::metrics::{Metrics, QueueGauges};
use crate::verify::SecretSlot;

/// The webhook ingress. Cheap to clone; every clone is the same ingress.
#[derive(Clone)]
pub struct Ingress {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: IngressConfig,
    pub(crate) secrets: SecretSlot,
    pub(crate) recent: RecentDeliveries,
    pub(crate) drainer: Arc<Drainer>,
    pub(crate) metrics: Arc<Metrics>,
    /// Fires when the process stops taking work; the sessions' worker watches the same token.
    shutdown: CancellationToken,
    stats: tokio::sync::Mutex<Option<(Instant, Option<QueueGauges>)>>,
}

impl Ingress {
    /// An ingress whose sessions are served by a worker built from `cp` and `worker`, with no
    /// signing secret yet (deliveries get 503 until [`Ingress::set_verifier`]).
    pub fn new(cp: ControlPlane, worker: WorkerConfig, config: IngressConfig) -> Self {
        Self::build(cp, worker, config, None)
    }

    /// An ingress that hands every claimed item to `hand_off` (the Lambda `webhook` function
    /// invokes the `session` function) instead of serving it in process; `max_sessions` does
    /// not apply.
    pub fn with_hand_off(
        cp: ControlPlane,
        worker: WorkerConfig,
        config: IngressConfig,
        hand_off: Arc<dyn HandOff>,
    ) -> Self {
        Self::build(cp, worker, config, Some(hand_off))
    }

    fn build(
        cp: ControlPlane,
        worker: WorkerConfig,
        config: IngressConfig,
        hand_off: Option<Arc<dyn HandOff>>,
    ) -> Self {
        let metrics = Arc::new(Metrics::new(config.max_sessions));
        metrics.set_ready(true);
        let shutdown = CancellationToken::new();
        let observer: Arc<dyn Observer> = metrics.clone();
        let worker = Worker::new(cp, worker, observer, shutdown.clone());
        let mut drainer = Drainer::new(
            worker,
            Arc::clone(&metrics),
            config.max_sessions,
            config.max_claims_per_drain,
        );
        if let Some(h) = hand_off {
            drainer = drainer.with_hand_off(h);
        }
        let drainer = Arc::new(drainer);
        Ingress {
            inner: Arc::new(Inner {
                recent: RecentDeliveries::new(config.dedupe_capacity, config.dedupe_ttl),
                secrets: SecretSlot::default(),
                drainer,
                metrics,
                shutdown,
                stats: tokio::sync::Mutex::new(None),
                config,
            }),
        }
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Installs (or, with `None`, removes) the secrets deliveries are verified against.
    pub fn set_verifier(&self, verifier: Option<Verifier>) {
        self.inner.secrets.set(verifier);
    }

    /// Whether a signing secret is configured.
    pub fn is_configured(&self) -> bool {
        self.inner.secrets.get().is_some()
    }

    pub fn config(&self) -> &IngressConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The worker sessions are served by.
    pub fn worker(&self) -> &Worker {
        self.inner.drainer.worker()
    }

    /// False once shutdown began: `/readyz` answers 503 and deliveries are answered 503 so the
    /// sender retries them elsewhere or later.
    pub fn is_ready(&self) -> bool {
        !self.inner.shutdown.is_cancelled()
    }

    /// Stops taking work: readiness goes false, no drain starts, and every session cancels its
    /// in-flight call, posts the error result and stops its item (CATALOGUE P2).
    pub fn begin_shutdown(&self) {
        if !self.inner.shutdown.is_cancelled() {
            tracing::info!("shutting down: no new deliveries, cancelling sessions");
        }
        self.inner.metrics.set_ready(false);
        self.inner.shutdown.cancel();
    }

    /// The token [`Ingress::begin_shutdown`] cancels.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Waits up to `grace` for sessions to end; true if all did.
    pub async fn finish_sessions(&self, grace: Duration) -> bool {
        self.inner.drainer.finish_sessions(grace).await
    }

    /// Drains now, waiting at most the configured reply budget.
    pub async fn drain(&self, trigger: Trigger) -> Result<DrainReport, DrainError> {
        self.inner
            .drainer
            .drain(trigger, self.inner.config.reply_budget)
            .await
    }

    /// Resolves when a session slot was freed after a drain had to leave items queued.
    pub async fn slot_freed(&self) {
        self.inner.drainer.slot_freed.notified().await;
    }

    /// The queue's stats for `/metrics`, cached for `stats_cache_ttl`, each fetch bounded by
    /// `stats_timeout`; `None` when they cannot be read.
    pub(crate) async fn queue_gauges(&self) -> Option<QueueGauges> {
        let mut cache = self.inner.stats.lock().await;
        if let Some((at, gauges)) = *cache
            && at.elapsed() < self.inner.config.stats_cache_ttl
        {
            return gauges;
        }
        let gauges = self.fetch_gauges().await;
        *cache = Some((Instant::now(), gauges));
        gauges
    }

    async fn fetch_gauges(&self) -> Option<QueueGauges> {
        let worker = self.worker();
        let key = worker.config().environment_key.clone()?;
        let env = worker.config().environment_id.clone();
        let fetch = worker.control_plane().stats(&key, &env);
        let stats = match tokio::time::timeout(self.inner.config.stats_timeout, fetch).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "queue stats unavailable");
                return None;
            }
            Err(_) => {
                tracing::debug!("queue stats timed out");
                return None;
            }
        };
        let now = (self.inner.config.clock)();
        let oldest_age_seconds = stats
            .oldest_queued_at
            .as_deref()
            .and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(|t| (now - t.unix_timestamp()).max(0) as f64)
            .unwrap_or(0.0);
        Some(QueueGauges {
            depth: stats.depth,
            pending: stats.pending,
            oldest_age_seconds,
        })
    }
}
