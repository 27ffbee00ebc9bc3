//! One audit line per request and the counters `/metrics` renders.
//!
//! The line names the injected secret, never its value, and the path without its query (query
//! strings carry tokens often enough).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Counters since the proxy started.
#[derive(Debug, Default)]
pub struct EgressMetrics {
    pub requests_allowed: AtomicU64,
    pub requests_injected: AtomicU64,
    pub tunnels: AtomicU64,
    pub denied_by_policy: AtomicU64,
    pub refused_address: AtomicU64,
    pub proxy_auth_failed: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub client_tls_errors: AtomicU64,
    pub secrets_stripped: AtomicU64,
    pub bytes_from_upstream: AtomicU64,
    pub bytes_to_upstream: AtomicU64,
}

impl EgressMetrics {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Name, help and value of every counter.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            (
                "hands_egress_requests_allowed_total",
                "requests forwarded without injection",
                v(&self.requests_allowed),
            ),
            (
                "hands_egress_requests_injected_total",
                "requests forwarded with an injected secret",
                v(&self.requests_injected),
            ),
            (
                "hands_egress_tunnels_total",
                "CONNECT tunnels relayed without interception",
                v(&self.tunnels),
            ),
            (
                "hands_egress_denied_total",
                "requests refused by the policy",
                v(&self.denied_by_policy),
            ),
            (
                "hands_egress_refused_address_total",
                "requests refused for a private, loopback, link-local or metadata address",
                v(&self.refused_address),
            ),
            (
                "hands_egress_proxy_auth_failed_total",
                "requests without a valid session proxy credential",
                v(&self.proxy_auth_failed),
            ),
            (
                "hands_egress_upstream_errors_total",
                "upstream connections or requests that failed",
                v(&self.upstream_errors),
            ),
            (
                "hands_egress_client_tls_errors_total",
                "intercepted connections whose client TLS handshake failed",
                v(&self.client_tls_errors),
            ),
            (
                "hands_egress_secrets_stripped_total",
                "responses from which a secret value was removed",
                v(&self.secrets_stripped),
            ),
            (
                "hands_egress_bytes_from_upstream_total",
                "bytes received from upstream",
                v(&self.bytes_from_upstream),
            ),
            (
                "hands_egress_bytes_to_upstream_total",
                "bytes sent upstream through tunnels",
                v(&self.bytes_to_upstream),
            ),
        ]
    }

    /// Prometheus text exposition, for the ingress `/metrics`.
    pub fn render_prometheus(&self, out: &mut String) {
        for (name, help, value) in self.snapshot() {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
    }
}

/// The facts of one request, logged once when it ends.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub session: String,
    pub tool_call: Option<String>,
    pub host: String,
    pub port: u16,
    pub method: String,
    pub path: String,
    /// The name of the injected secret(s), never a value.
    pub secret: Option<String>,
    pub started: Instant,
}

impl AuditRecord {
    pub fn log(&self, status: u16, outcome: &str, bytes: u64) {
        tracing::info!(
            target: "hands_egress::audit",
            session = %self.session,
            tool_call = %self.tool_call.as_deref().unwrap_or("-"),
            host = %self.host,
            port = self.port,
            method = %self.method,
            path = %self.path,
            status,
            outcome = %outcome,
            bytes,
            duration_ms = format_args!("{:.2}", self.started.elapsed().as_secs_f64() * 1000.0),
            secret = %self.secret.as_deref().unwrap_or("-"),
            "egress"
        );
    }
}
