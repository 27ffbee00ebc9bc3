//! `POST /webhook`: the ingress flow of DESIGN.md, step by step.
//!
//! | answer | when |
//! |---|---|
//! | 200 | a run-started delivery drained (or the environment is gone, C2: logged) |
//! | 204 | another event type (ignored, counted), or a duplicate of a delivery already handled |
//! | 401 | verification failed (generic body; nothing else happened) |
//! | 408 | the body did not arrive within the body timeout |
//! | 413 | the body is larger than the limit |
//! | 422 | authentic, but the body is not a webhook event (an alert: a contract bug) |
//! | 503 + Retry-After | no signing key yet, shutting down, control plane unreachable or key rejected, drain over budget |

use std::fmt::Display;
use std::future::poll_fn;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hands_protocol::webhook::WebhookHeaderLines;
use hands_protocol::webhook_event::WebhookEventHead;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper::body::Body as HttpBody;
use tracing::Instrument as _;

use crate::body::{BodyError, declared_too_large, read_bounded};
use crate::dedupe::Seen;
use crate::drain::{DrainError, Trigger};
use crate::ingress::Ingress;
use crate::metrics::Outcome;

/// The one 401 body, whatever failed (a forger learns nothing from it).
pub(crate) const REJECTED_BODY: &str = "webhook verification failed\n";

/// The path deliveries are posted to.
pub(crate) const WEBHOOK_PATH: &str = "/webhook";

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut resp = (status, text).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// 204 for the most frequent answers (ignored event types, duplicates): no body and no header
/// of ours, so nothing to allocate, cache or encode beyond what hyper writes.
fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn retry_later(text: &'static str, after: Duration) -> Response {
    let mut resp = plain(StatusCode::SERVICE_UNAVAILABLE, text);
    if let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// The connection is not reused after a body we stopped reading (413) or that stalled (408).
fn closing(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// `POST /webhook` as a Router handler (the Lambda function, `oneshot` in tests).
pub(crate) async fn post_webhook(State(ingress): State<Ingress>, request: Request) -> Response {
    webhook(&ingress, request).await
}

/// One delivery, handled, counted and answered. Generic over the body so that the container
/// server can call it with hyper's own body, without the Router (server.rs); the whole request
/// is taken rather than a `HeaderMap` extractor, which would copy every header.
pub(crate) async fn webhook<B>(ingress: &Ingress, request: http::Request<B>) -> Response
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Display,
{
    let (parts, body) = request.into_parts();
    let (outcome, resp) = handle(ingress, &parts.headers, body).await;
    ingress.metrics().delivery(outcome);
    resp
}

async fn handle<B>(ingress: &Ingress, headers: &HeaderMap, body: B) -> (Outcome, Response)
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Display,
{
    let inner = ingress.inner();
    let config = &inner.config;
    if !ingress.is_ready() {
        return (
            Outcome::ShuttingDown,
            retry_later("shutting down\n", config.retry_after),
        );
    }
    let Some(verifier) = inner.secrets.get() else {
        return (
            Outcome::NotConfigured,
            retry_later("webhook signing key not configured\n", config.retry_after),
        );
    };

    // 1. The raw body, bounded in size and time (W14, W19).
    if declared_too_large(&body, config.max_body_bytes) {
        return (
            Outcome::TooLarge,
            closing(plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n")),
        );
    }
    // Nearly always the whole body came with the head and the first poll finds it; the timer
    // is armed only for a body still on its way, from that first poll on.
    let mut read = pin!(read_bounded(body, config.max_body_bytes));
    let read = match poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
        Poll::Ready(done) => Ok(done),
        Poll::Pending => tokio::time::timeout(config.body_timeout, read).await,
    };
    let raw = match read {
        Ok(Ok(raw)) => raw,
        Ok(Err(BodyError::TooLarge { .. })) => {
            return (
                Outcome::TooLarge,
                closing(plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n")),
            );
        }
        Ok(Err(BodyError::Read(e))) => {
            tracing::debug!(error = %e, "request body unreadable");
            return (
                Outcome::BadRequest,
                closing(plain(StatusCode::BAD_REQUEST, "unreadable body\n")),
            );
        }
        Err(_) => {
            return (
                Outcome::BodyTimeout,
                closing(plain(StatusCode::REQUEST_TIMEOUT, "body timeout\n")),
            );
        }
    };

    // 2. Standard Webhooks on the exact bytes, every line of each header kept (W1-W13).
    // Every header is matched against the three names (by length first): cheaper than three
    // `get_all` lookups, which hash each name (tests/bench/webhook/instructions.sh).
    let webhook_headers =
        WebhookHeaderLines::from_pairs(headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())));
    let now = (config.clock)();
    let verified = match verifier.verify_lines(&webhook_headers, &raw, now) {
        Ok(v) => v,
        Err(e) => {
            let reason = e.reason();
            ingress
                .metrics()
                .rejection(reason.metric_label(), reason.is_stale());
            // Debug, not info: a flood of forgeries (W21) must not become a flood of log lines;
            // rejections are counted by reason in /metrics.
            tracing::debug!(reason = %reason, "webhook rejected");
            return (
                Outcome::Rejected,
                plain(StatusCode::UNAUTHORIZED, REJECTED_BODY),
            );
        }
    };
    // No span per delivery: most deliveries are ignored event types, and a span costs about a
    // quarter of a verified delivery (tests/bench/webhook). The few lines logged before the
    // drain carry the id themselves; the drain gets a span.
    let webhook_id = verified.id.as_str();
    if verified.secret_index > 0 {
        tracing::debug!(
            webhook_id,
            secret_index = verified.secret_index,
            "verified with a rotated-in secret"
        );
    }

    // 3. Only now parse: authentic but malformed is a contract bug worth an alert (W15, W18).
    // Only the fields acted on, borrowed from the body; the sender's usual body is read by a
    // byte scanner, anything else by serde_json, with the same result.
    let event = match WebhookEventHead::parse(&raw) {
        Ok(event) => event,
        Err(e) => {
            tracing::error!(webhook_id, error = %e, "authentic webhook body is not a webhook event");
            return (
                Outcome::Malformed,
                plain(StatusCode::UNPROCESSABLE_ENTITY, "malformed event\n"),
            );
        }
    };
    if event.id != verified.id {
        tracing::warn!(webhook_id, event_id = %event.id, "webhook-id header differs from the event id");
    }

    // 4. Dedupe on the verified id and the body's fingerprint (W10, W12).
    let print = inner.recent.body_print(&raw);
    match inner.recent.check_and_remember(&verified.id, print) {
        Seen::Duplicate => {
            tracing::debug!(webhook_id, "duplicate delivery; already handled");
            return (Outcome::Duplicate, no_content());
        }
        Seen::Reused => {
            ingress.metrics().id_reused();
            tracing::warn!(webhook_id, event_type = %event.data.kind, "webhook-id reused with a different body; handling it as a new delivery");
        }
        Seen::New => {}
    }

    // 5. Only run-started wakes the drain; everything else is acknowledged (W17).
    if !event.is_run_started() {
        tracing::debug!(webhook_id, event_type = %event.data.kind, "event type ignored");
        return (Outcome::Ignored, no_content());
    }
    let span = tracing::info_span!("webhook", webhook_id,
        environment_id = %ingress.worker().config().environment_id);
    async move {
        tracing::debug!(session_id = %event.data.id, "run started; draining");
        match ingress.drain(Trigger::Webhook).await {
            Ok(_) => (Outcome::Drained, plain(StatusCode::OK, "drained\n")),
            Err(DrainError::Gone(_)) => (
                Outcome::Gone,
                plain(StatusCode::OK, "environment not found\n"),
            ),
            Err(e) => {
                // Not acted on: the sender's retry must drain again.
                inner.recent.forget(&verified.id, print);
                let outcome = match e {
                    DrainError::OverBudget => Outcome::OverBudget,
                    _ => Outcome::Unavailable,
                };
                (
                    outcome,
                    retry_later("control plane unavailable\n", config.retry_after),
                )
            }
        }
    }
    .instrument(span)
    .await
}
