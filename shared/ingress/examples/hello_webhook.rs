//! A no-verification baseline for `tests/bench/webhook/run.sh`: the same stack as `hands serve`
//! (tokio multi-thread runtime, hyper HTTP/1.1 with the same builder settings, an axum Router
//! called through `oneshot`) answering `POST /webhook` with 204 after reading the body, and
//! nothing else: no verification, no parsing, no dedupe, no metrics, no logging.
//!
//! With `--direct`, `POST /webhook` is answered by a function called straight from the hyper
//! service and only other requests go through the Router: the dispatch `hands serve` uses
//! (shared/ingress/src/server.rs), for comparing like with like.
//!
//!     cargo run --release -p hands-ingress --example hello_webhook -- 127.0.0.1:18082 [--direct]

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tower::ServiceExt as _;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18082".to_owned());
    let direct = args.next().as_deref() == Some("--direct");
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
            let io = TokioIo::new(stream);
            let builder = builder();
            if direct {
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let webhook =
                        req.method() == http::Method::POST && req.uri().path() == "/webhook";
                    let router = router.clone();
                    async move {
                        if webhook {
                            return Ok::<_, Infallible>(read_and_answer(req).await);
                        }
                        router.oneshot(req).await
                    }
                });
                let _ = builder.serve_connection(io, service).await;
            } else {
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    router.clone().oneshot(req)
                });
                let _ = builder.serve_connection(io, service).await;
            }
        });
    }
}

/// The connection settings of `hands serve` (shared/ingress/src/server.rs).
fn builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5))
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    builder
}

/// Reads the whole body, then answers 204 (the direct path's handler).
async fn read_and_answer(req: http::Request<Incoming>) -> Response {
    match req.into_body().collect().await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}
