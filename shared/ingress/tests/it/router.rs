//! The Router without a socket (`tower::ServiceExt::oneshot`), as the Lambda function will
//! use it: configuration states, readiness, and the operational endpoints.

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use crate::harness::*;

async fn call(s: &Stack, req: Request<Body>) -> (StatusCode, http::HeaderMap, String) {
    let resp = s.ingress.router().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn post(d: &Delivery) -> Request<Body> {
    let mut b = Request::post("/webhook")
        .header("webhook-id", &d.id)
        .header("webhook-timestamp", &d.timestamp)
        .header("webhook-signature", &d.signature);
    for (n, v) in &d.extra {
        b = b.header(n, v);
    }
    b.body(Body::from(d.body.clone())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_configured_is_503_until_a_signing_key_is_set() {
    let mut o = Options::default();
    o.secrets = None;
    let s = Stack::start(o).await;
    let d = Delivery::run_started(SECRET);
    let (status, headers, _) = call(&s, post(&d)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    assert_eq!(s.polls(), 0);
    assert_eq!(s.ingress.metrics().deliveries("not_configured"), 1);

    s.ingress
        .set_verifier(hands_ingress::parse_secret_list(SECRET).unwrap());
    let (status, _, _) = call(&s, post(&d)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_turns_readiness_and_deliveries_to_503() {
    let s = Stack::start(Options::default()).await;
    let ready = Request::get("/readyz").body(Body::empty()).unwrap();
    assert_eq!(call(&s, ready).await.0, StatusCode::OK);
    s.ingress.begin_shutdown();
    let ready = Request::get("/readyz").body(Body::empty()).unwrap();
    assert_eq!(call(&s, ready).await.0, StatusCode::SERVICE_UNAVAILABLE);
    let (status, headers, _) = call(&s, post(&Delivery::run_started(SECRET))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    assert_eq!(s.polls(), 0);
    let health = Request::get("/healthz").body(Body::empty()).unwrap();
    assert_eq!(
        call(&s, health).await.0,
        StatusCode::OK,
        "liveness stays up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_export_the_queue_gauges_from_the_stats_endpoint() {
    let s = Stack::start(Options::default()).await;
    s.dp.create_session(&hands_devplane::SessionSpec::default())
        .unwrap();
    let req = Request::get("/metrics").body(Body::empty()).unwrap();
    let (status, headers, text) = call(&s, req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    for line in [
        "hands_queue_stats_up 1",
        "hands_queue_depth 1",
        "hands_queue_pending 0",
        "hands_ready 1",
        "hands_sessions_max 4",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(text.contains("hands_queue_oldest_age_seconds "), "{text}");
}

/// The server answers `POST /webhook` without the Router (server.rs): for any request, the
/// server and the Router must answer alike, including the near misses the direct path has to
/// leave to the Router (404, 405).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_and_the_router_answer_alike() {
    let s = Stack::start(Options::default()).await;
    let requests = [
        ("POST", "/webhook"),
        ("POST", "/webhook?source=console"),
        ("POST", "/webhook/"),
        ("POST", "/Webhook"),
        ("POST", "//webhook"),
        ("PUT", "/webhook"),
        ("post", "/webhook"),
        ("GET", "/healthz"),
    ];
    for (method, path) in requests {
        for secret in [SECRET, OTHER_SECRET] {
            // Two deliveries, so that neither path sees the other's as a duplicate.
            let a = Delivery::of_type(secret, "session.status_idled");
            let b = Delivery::of_type(secret, "session.status_idled");
            let mut raw = a.request(path);
            raw.splice(0..4, method.bytes());
            let server = exchange(s.addr, &raw).await;
            let mut req = post(&b);
            *req.method_mut() = http::Method::from_bytes(method.as_bytes()).unwrap();
            *req.uri_mut() = path.parse().unwrap();
            let (status, _, body) = call(&s, req).await;
            assert_eq!(
                (server.status, server.body.as_str()),
                (status.as_u16(), body.as_str()),
                "{method} {path}"
            );
        }
    }
    assert_eq!(s.polls(), 0);
    // Only the two forms of POST /webhook reach the handler: each sent through both paths,
    // signed with the configured secret (ignored type) and with another one (rejected).
    assert_eq!(s.ingress.metrics().deliveries("ignored"), 4);
    assert_eq!(s.ingress.metrics().deliveries("rejected"), 4);
}
