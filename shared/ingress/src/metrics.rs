//! Prometheus text exposition for `/metrics`, hand-written over atomics: a handful of counters
//! does not need a metrics framework.
//!
//! [`Metrics`] is also the worker's [`Observer`], so tool calls, result posts and finished items
//! are counted where they happen. Labels come from fixed sets (outcomes, reject reasons, item
//! ends) except the tool name, which is capped at [`MAX_TOOL_LABELS`] distinct values so a
//! misbehaving agent cannot blow up the series count.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use hands_protocol::toolset::ToolOutput;
use hands_worker::ledger::Call;
use hands_worker::results::Posted;
use hands_worker::{ItemEnd, ItemOutcome, Observer, RunEnd};

/// Distinct tool names tracked before the rest are counted as `other`.
pub const MAX_TOOL_LABELS: usize = 32;

/// A counter with one label set per key. Keys are mostly fixed labels (`&'static str`), so the
/// per-delivery count allocates nothing; only composed labels are owned.
#[derive(Default)]
struct Labeled {
    values: Mutex<BTreeMap<Cow<'static, str>, u64>>,
}

impl Labeled {
    fn inc_by(&self, key: impl Into<Cow<'static, str>>, by: u64) {
        let mut m = self.values.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(key.into()).or_default() += by;
    }

    fn inc(&self, key: impl Into<Cow<'static, str>>) {
        self.inc_by(key, 1);
    }

    /// Counts under `key` if it is known or there is room for it, else under `fallback`.
    fn inc_capped(&self, key: String, fallback: String, cap: usize) {
        let mut m = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let key = if m.contains_key(key.as_str()) || m.len() < cap {
            key
        } else {
            fallback
        };
        *m.entry(Cow::Owned(key)).or_default() += 1;
    }

    fn snapshot(&self) -> Vec<(String, u64)> {
        let m = self.values.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn get(&self, key: &str) -> u64 {
        let m = self.values.lock().unwrap_or_else(|p| p.into_inner());
        m.get(key).copied().unwrap_or(0)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.values.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// How a delivery was answered: the `outcome` label of `hands_webhook_deliveries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    BadRequest,
    BodyTimeout,
    Drained,
    Duplicate,
    Gone,
    Ignored,
    Malformed,
    NotConfigured,
    OverBudget,
    Rejected,
    ShuttingDown,
    TooLarge,
    Unavailable,
}

impl Outcome {
    /// Every outcome, in the order of their labels (the exposition's order).
    const ALL: [Outcome; 13] = [
        Outcome::BadRequest,
        Outcome::BodyTimeout,
        Outcome::Drained,
        Outcome::Duplicate,
        Outcome::Gone,
        Outcome::Ignored,
        Outcome::Malformed,
        Outcome::NotConfigured,
        Outcome::OverBudget,
        Outcome::Rejected,
        Outcome::ShuttingDown,
        Outcome::TooLarge,
        Outcome::Unavailable,
    ];

    pub(crate) const fn label(self) -> &'static str {
        match self {
            Outcome::BadRequest => "bad_request",
            Outcome::BodyTimeout => "body_timeout",
            Outcome::Drained => "drained",
            Outcome::Duplicate => "duplicate",
            Outcome::Gone => "gone",
            Outcome::Ignored => "ignored",
            Outcome::Malformed => "malformed",
            Outcome::NotConfigured => "not_configured",
            Outcome::OverBudget => "over_budget",
            Outcome::Rejected => "rejected",
            Outcome::ShuttingDown => "shutting_down",
            Outcome::TooLarge => "too_large",
            Outcome::Unavailable => "unavailable",
        }
    }
}

/// One atomic per delivery outcome: counted on every delivery, so no lock and no map.
#[derive(Default)]
struct DeliveryCounts([AtomicU64; Outcome::ALL.len()]);

impl DeliveryCounts {
    fn inc(&self, outcome: Outcome) {
        // `ALL` lists the variants in declaration order, so the discriminant is the index.
        if let Some(c) = self.0.get(outcome as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn get(&self, outcome: Outcome) -> u64 {
        self.0
            .get(outcome as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The outcomes seen so far with their counts, in label order.
    fn snapshot(&self) -> Vec<(String, u64)> {
        Outcome::ALL
            .iter()
            .map(|&o| (o.label().to_owned(), self.get(o)))
            .filter(|&(_, v)| v > 0)
            .collect()
    }
}

/// The queue's numbers from the stats endpoint (PROTOCOL.md §5.8), for autoscalers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueueGauges {
    pub depth: u64,
    pub pending: u64,
    /// Seconds since the oldest queued item was created; 0 when the queue is empty.
    pub oldest_age_seconds: f64,
}

/// Every counter and gauge the ingress exports.
#[derive(Default)]
pub struct Metrics {
    deliveries: DeliveryCounts,
    rejections: Labeled,
    stale_rejections: AtomicU64,
    id_reuse: AtomicU64,
    drains: Labeled,
    items_claimed: AtomicU64,
    drains_saturated: AtomicU64,
    sessions_active: AtomicI64,
    sessions_max: AtomicU64,
    sessions_finished: Labeled,
    session_panics: AtomicU64,
    tool_calls: Labeled,
    result_posts: Labeled,
    result_post_retries: AtomicU64,
    heartbeat_failures: AtomicU64,
    connections_open: AtomicI64,
    connections_refused: AtomicU64,
    ready: AtomicU64,
}

fn end_label(end: &ItemEnd) -> &'static str {
    match end {
        ItemEnd::Healthcheck => "healthcheck",
        ItemEnd::SessionOver => "session_over",
        ItemEnd::NotClaimed(_) => "not_claimed",
        ItemEnd::Failed(_) => "failed",
        ItemEnd::Ran(run) => match run {
            RunEnd::Idle => "idle",
            RunEnd::Terminated => "terminated",
            RunEnd::Deleted => "deleted",
            RunEnd::LeaseLost(_) => "lease_lost",
            RunEnd::Stopped(_) => "stopped",
            RunEnd::Shutdown => "shutdown",
            RunEnd::FeedFailed(_) => "feed_failed",
            RunEnd::Deadline => "deadline",
        },
    }
}

/// Label values are ours or capped tool names; escape anyway so a strange tool name cannot
/// break the exposition format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn new(max_sessions: usize) -> Self {
        let m = Metrics::default();
        m.sessions_max.store(max_sessions as u64, Ordering::Relaxed);
        m
    }

    pub(crate) fn delivery(&self, outcome: Outcome) {
        self.deliveries.inc(outcome);
    }

    pub(crate) fn rejection(&self, reason: &'static str, stale: bool) {
        self.rejections.inc(reason);
        if stale {
            self.stale_rejections.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn id_reused(&self) {
        self.id_reuse.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn drain(&self, trigger: &'static str, result: &'static str) {
        self.drains
            .inc(format!("trigger=\"{trigger}\",result=\"{result}\""));
    }

    pub(crate) fn claimed(&self) {
        self.items_claimed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn saturated(&self) {
        self.drains_saturated.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn session_started(&self) {
        self.sessions_active.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn session_ended(&self) {
        self.sessions_active.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn session_panicked(&self) {
        self.session_panics.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(u64::from(ready), Ordering::Relaxed);
    }

    /// Deliveries answered with `outcome` so far (see the README for the outcome names).
    pub fn deliveries(&self, outcome: &str) -> u64 {
        Outcome::ALL
            .iter()
            .find(|o| o.label() == outcome)
            .map_or(0, |&o| self.deliveries.get(o))
    }

    /// Items claimed by drains so far.
    pub fn items_claimed(&self) -> u64 {
        self.items_claimed.load(Ordering::Relaxed)
    }

    /// Sessions being served now.
    pub fn sessions_active(&self) -> i64 {
        self.sessions_active.load(Ordering::Relaxed)
    }

    /// Items that finished with `end` (`idle`, `shutdown`, `not_claimed`, ...).
    pub fn sessions_finished(&self, end: &str) -> u64 {
        self.sessions_finished.get(end)
    }

    /// Stale-timestamp rejections so far (CATALOGUE W24: alarm on their rate).
    pub fn stale_rejections(&self) -> u64 {
        self.stale_rejections.load(Ordering::Relaxed)
    }

    /// Drains so far by trigger (`webhook`, `timer`), any result.
    pub fn drains(&self, trigger: &str) -> u64 {
        let prefix = format!("trigger=\"{trigger}\",");
        self.drains
            .snapshot()
            .into_iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v)
            .sum()
    }

    /// The Prometheus text exposition. `queue` is `None` when the stats endpoint could not be
    /// read; `hands_queue_stats_up` says so instead of exporting stale numbers.
    pub fn render(&self, queue: Option<QueueGauges>) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, kind: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        let labeled = |out: &mut String, name: &str, label: &str, values: Vec<(String, u64)>| {
            for (k, v) in values {
                let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {v}", escape(&k));
            }
        };

        counter(
            &mut out,
            "hands_webhook_deliveries_total",
            "Webhook deliveries by how they were answered.",
            "counter",
        );
        labeled(
            &mut out,
            "hands_webhook_deliveries_total",
            "outcome",
            self.deliveries.snapshot(),
        );
        counter(
            &mut out,
            "hands_webhook_rejections_total",
            "Deliveries that failed verification, by reason.",
            "counter",
        );
        labeled(
            &mut out,
            "hands_webhook_rejections_total",
            "reason",
            self.rejections.snapshot(),
        );
        counter(
            &mut out,
            "hands_webhook_stale_rejections_total",
            "Deliveries rejected for a timestamp outside the window; a steady rate means clock skew.",
            "counter",
        );
        let _ = writeln!(
            out,
            "hands_webhook_stale_rejections_total {}",
            self.stale_rejections.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            "hands_webhook_id_reuse_total",
            "Verified deliveries that reused a webhook-id with a different body.",
            "counter",
        );
        let _ = writeln!(
            out,
            "hands_webhook_id_reuse_total {}",
            self.id_reuse.load(Ordering::Relaxed)
        );

        counter(
            &mut out,
            "hands_drains_total",
            "Queue drains by trigger and result.",
            "counter",
        );
        for (k, v) in self.drains.snapshot() {
            let _ = writeln!(out, "hands_drains_total{{{k}}} {v}");
        }
        counter(
            &mut out,
            "hands_drains_saturated_total",
            "Drains that stopped because every session slot was busy.",
            "counter",
        );
        let _ = writeln!(
            out,
            "hands_drains_saturated_total {}",
            self.drains_saturated.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            "hands_items_claimed_total",
            "Work items claimed and handed to a session task.",
            "counter",
        );
        let _ = writeln!(
            out,
            "hands_items_claimed_total {}",
            self.items_claimed.load(Ordering::Relaxed)
        );

        counter(
            &mut out,
            "hands_sessions_active",
            "Sessions being served now.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "hands_sessions_active {}",
            self.sessions_active.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            "hands_sessions_max",
            "Sessions this process serves at once (--max-sessions).",
            "gauge",
        );
        let _ = writeln!(
            out,
            "hands_sessions_max {}",
            self.sessions_max.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            "hands_sessions_finished_total",
            "Work items finished, by how they ended.",
            "counter",
        );
        labeled(
            &mut out,
            "hands_sessions_finished_total",
            "end",
            self.sessions_finished.snapshot(),
        );
        counter(
            &mut out,
            "hands_session_panics_total",
            "Session tasks that panicked (caught at the task boundary).",
            "counter",
        );
        let _ = writeln!(
            out,
            "hands_session_panics_total {}",
            self.session_panics.load(Ordering::Relaxed)
        );

        counter(
            &mut out,
            "hands_tool_calls_total",
            "Tool calls executed, by tool and outcome.",
            "counter",
        );
        for (k, v) in self.tool_calls.snapshot() {
            let _ = writeln!(out, "hands_tool_calls_total{{{k}}} {v}");
        }
        counter(
            &mut out,
            "hands_result_posts_total",
            "Tool results posted, by outcome.",
            "counter",
        );
        labeled(
            &mut out,
            "hands_result_posts_total",
            "outcome",
            self.result_posts.snapshot(),
        );
        counter(
            &mut out,
            "hands_result_post_retries_total",
            "Extra attempts needed to post tool results.",
            "counter",
        );
        let _ = writeln!(
            out,
            "hands_result_post_retries_total {}",
            self.result_post_retries.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            "hands_heartbeat_failures_total",
            "Lease heartbeats that failed (transient ones are retried within the TTL).",
            "counter",
        );
        let _ = writeln!(
            out,
            "hands_heartbeat_failures_total {}",
            self.heartbeat_failures.load(Ordering::Relaxed)
        );

        counter(
            &mut out,
            "hands_connections_open",
            "HTTP connections open now.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "hands_connections_open {}",
            self.connections_open.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            "hands_connections_refused_total",
            "Connections closed at accept because the connection cap was reached.",
            "counter",
        );
        let _ = writeln!(
            out,
            "hands_connections_refused_total {}",
            self.connections_refused.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            "hands_ready",
            "1 while the process takes new deliveries.",
            "gauge",
        );
        let _ = writeln!(out, "hands_ready {}", self.ready.load(Ordering::Relaxed));

        counter(
            &mut out,
            "hands_queue_stats_up",
            "1 if the last read of the queue's stats succeeded.",
            "gauge",
        );
        let _ = writeln!(out, "hands_queue_stats_up {}", u8::from(queue.is_some()));
        if let Some(q) = queue {
            counter(
                &mut out,
                "hands_queue_depth",
                "Items waiting to be claimed (stats endpoint).",
                "gauge",
            );
            let _ = writeln!(out, "hands_queue_depth {}", q.depth);
            counter(
                &mut out,
                "hands_queue_pending",
                "Items claimed but not yet acknowledged (stats endpoint).",
                "gauge",
            );
            let _ = writeln!(out, "hands_queue_pending {}", q.pending);
            counter(
                &mut out,
                "hands_queue_oldest_age_seconds",
                "Age of the oldest queued item (stats endpoint).",
                "gauge",
            );
            let _ = writeln!(
                out,
                "hands_queue_oldest_age_seconds {:.3}",
                q.oldest_age_seconds
            );
        }
        out
    }
}

impl Observer for Metrics {
    fn call_executed(
        &self,
        _session_id: &str,
        call: &Call,
        output: &ToolOutput,
        _elapsed: Duration,
    ) {
        let outcome = if output.is_error { "error" } else { "ok" };
        // Two series per tool (ok, error).
        self.tool_calls.inc_capped(
            format!("tool=\"{}\",outcome=\"{outcome}\"", escape(&call.name)),
            format!("tool=\"other\",outcome=\"{outcome}\""),
            MAX_TOOL_LABELS * 2,
        );
    }

    fn result_posted(&self, _session_id: &str, _call: &Call, posted: &Posted) {
        let (outcome, attempts) = match posted {
            Posted::Accepted { attempts } => ("accepted", *attempts),
            Posted::Failed { attempts, .. } => ("failed", *attempts),
        };
        self.result_posts.inc(outcome);
        self.result_post_retries
            .fetch_add(u64::from(attempts.saturating_sub(1)), Ordering::Relaxed);
    }

    fn heartbeat_failed(&self, _work_id: &str, _error: &hands_client::ApiError) {
        self.heartbeat_failures.fetch_add(1, Ordering::Relaxed);
    }

    fn item_finished(&self, outcome: &ItemOutcome) {
        self.sessions_finished.inc(end_label(&outcome.end));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_help_type_and_values() {
        let m = Metrics::new(4);
        m.delivery(Outcome::Drained);
        m.delivery(Outcome::Drained);
        m.rejection("stale_too_old", true);
        m.drain("webhook", "ok");
        let call = Call {
            id: "toolu_1".into(),
            kind: hands_worker::ledger::CallKind::Builtin,
            name: "bash".into(),
            input: serde_json::json!({}),
        };
        m.call_executed("s", &call, &ToolOutput::error("x"), Duration::ZERO);
        m.result_posted("s", &call, &Posted::Accepted { attempts: 3 });
        m.heartbeat_failed("w", &hands_client::ApiError::Transport("reset".into()));
        let text = m.render(Some(QueueGauges {
            depth: 2,
            pending: 1,
            oldest_age_seconds: 1.5,
        }));
        for line in [
            "hands_webhook_deliveries_total{outcome=\"drained\"} 2",
            "hands_webhook_rejections_total{reason=\"stale_too_old\"} 1",
            "hands_webhook_stale_rejections_total 1",
            "hands_drains_total{trigger=\"webhook\",result=\"ok\"} 1",
            "hands_tool_calls_total{tool=\"bash\",outcome=\"error\"} 1",
            "hands_result_post_retries_total 2",
            "hands_heartbeat_failures_total 1",
            "hands_sessions_max 4",
            "hands_queue_stats_up 1",
            "hands_queue_depth 2",
            "hands_queue_oldest_age_seconds 1.500",
            "# TYPE hands_sessions_active gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        let down = m.render(None);
        assert!(down.contains("hands_queue_stats_up 0"));
        assert!(!down.contains("hands_queue_depth"));
    }

    #[test]
    fn delivery_outcomes_are_indexed_by_declaration_and_listed_by_label() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i, "{o:?}");
        }
        assert!(
            Outcome::ALL.windows(2).all(|w| w[0].label() < w[1].label()),
            "ALL must be sorted by label"
        );
        let m = Metrics::new(1);
        for (i, o) in Outcome::ALL.iter().enumerate() {
            for _ in 0..=i {
                m.delivery(*o);
            }
        }
        let text = m.render(None);
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(m.deliveries(o.label()), i as u64 + 1, "{o:?}");
            let line = format!(
                "hands_webhook_deliveries_total{{outcome=\"{}\"}} {}",
                o.label(),
                i + 1
            );
            assert!(text.lines().any(|l| l == line), "missing {line:?}");
        }
        assert_eq!(m.deliveries("no_such_outcome"), 0);
    }

    #[test]
    fn tool_labels_are_capped() {
        let m = Metrics::new(1);
        for i in 0..200 {
            let call = Call {
                id: format!("t{i}"),
                kind: hands_worker::ledger::CallKind::Builtin,
                name: format!("tool{i}"),
                input: serde_json::json!({}),
            };
            m.call_executed("s", &call, &ToolOutput::error("x"), Duration::ZERO);
        }
        assert!(m.tool_calls.len() <= MAX_TOOL_LABELS * 2 + 2);
    }
}
