//! Limits and timings of the ingress. Defaults are production values; tests shorten them.

use std::sync::Arc;
use std::time::Duration;

/// The clock verification reads: unix seconds. Injected so tests can sit at a window's edge
/// (CATALOGUE W8) and replay captured deliveries.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock in unix seconds (0 before 1970, which verification then rejects as stale).
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    })
}

/// How the webhook handler and the drain behave.
#[derive(Clone)]
pub struct IngressConfig {
    /// Largest accepted body; 413 beyond it (CATALOGUE W14; the spec suggests payloads under 20 KB).
    pub max_body_bytes: usize,
    /// A body that has not fully arrived within this is answered 408 and the connection closed
    /// (W19, body trickle).
    pub body_timeout: Duration,
    /// The longest a delivery waits for its drain before answering (W23). Deliveries are answered
    /// 503 when the drain has not finished in time; the drain itself goes on and hands off
    /// whatever it claims.
    pub reply_budget: Duration,
    /// At most this many items are claimed per drain, whatever the queue holds.
    pub max_claims_per_drain: usize,
    /// Sessions served at once (`--max-sessions`); beyond it items stay queued.
    pub max_sessions: usize,
    /// Sent as `Retry-After` with every 503.
    pub retry_after: Duration,
    /// How many verified deliveries are remembered for dedupe, and for how long.
    pub dedupe_capacity: usize,
    pub dedupe_ttl: Duration,
    /// Queue stats for `/metrics` are fetched at most this often, each fetch bounded by
    /// `stats_timeout` so a slow control plane cannot hold a scrape.
    pub stats_cache_ttl: Duration,
    pub stats_timeout: Duration,
    /// Read by verification; [`system_clock`] unless a test injects another.
    pub clock: Clock,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            max_body_bytes: 1 << 20,
            body_timeout: Duration::from_secs(10),
            reply_budget: Duration::from_secs(2),
            max_claims_per_drain: 16,
            max_sessions: 4,
            retry_after: Duration::from_secs(10),
            dedupe_capacity: 10_000,
            // Longer than the timestamp window plus the sender's retry span, so a replay that
            // is still fresh enough to verify is also still remembered.
            dedupe_ttl: Duration::from_secs(15 * 60),
            stats_cache_ttl: Duration::from_secs(5),
            stats_timeout: Duration::from_secs(1),
            clock: system_clock(),
        }
    }
}

impl std::fmt::Debug for IngressConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngressConfig")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("body_timeout", &self.body_timeout)
            .field("reply_budget", &self.reply_budget)
            .field("max_claims_per_drain", &self.max_claims_per_drain)
            .field("max_sessions", &self.max_sessions)
            .field("retry_after", &self.retry_after)
            .field("dedupe_capacity", &self.dedupe_capacity)
            .field("dedupe_ttl", &self.dedupe_ttl)
            .finish_non_exhaustive()
    }
}
