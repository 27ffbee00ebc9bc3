//! A no-verification baseline for `tests/bench/webhook/run.sh`: the same stack as `hands serve`
//! (tokio multi-thread runtime, hyper HTTP/1.1 with the same builder settings, an axum Router
//! called through `oneshot`) answering `POST /webhook` with 204 after reading the body, and
//! nothing else: no verification, no parsing, no dedupe, no metrics, no logging.
//!
//!     cargo run --release -p hands-ingress --example hello_webhook -- 127.0.0.1:18082

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tower::ServiceExt as _;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18082".to_owned());
    let router = Router::new().route(
        "/webhook",
        post(|_body: Bytes| async { StatusCode::NO_CONTENT }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let router = router.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                router.clone().oneshot(req)
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .max_buf_size(64 * 1024)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
