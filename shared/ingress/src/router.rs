//! The Router: `POST /webhook`, `GET /healthz`, `GET /readyz`, `GET /metrics`. Anything else is
//! 404, a wrong method 405, both with no side effects (CATALOGUE W20). No route redirects.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderValue, StatusCode, header};

use crate::ingress::Ingress;
use crate::webhook::post_webhook;

impl Ingress {
    /// The Router over this ingress; usable with a socket ([`crate::server`]), with
    /// `tower::ServiceExt::oneshot`, or as a Lambda function.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/webhook", post(post_webhook))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .fallback(not_found)
            .method_not_allowed_fallback(wrong_method)
            .with_state(self.clone())
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(ingress): State<Ingress>) -> Response {
    if ingress.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

async fn metrics(State(ingress): State<Ingress>) -> Response {
    let queue = ingress.queue_gauges().await;
    let mut text = ingress.metrics().render(queue);
    // The egress proxy's counters, when the worker runs one.
    if let Some(egress) = &ingress.worker().config().egress {
        egress.metrics().render_prometheus(&mut text);
    }
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

async fn wrong_method() -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n").into_response()
}
