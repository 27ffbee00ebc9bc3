//! The listener while the worker is still starting (the isolation probe runs off the start
//! path): `/healthz` answers at once, so an orchestrator sees a live process, while `/readyz`
//! and everything else answer 503 `starting` with `Retry-After: 1`. Nothing is claimed here: a
//! delivery refused now is sent again, and the periodic drain finds its item anyway.

use std::future::Future;

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::server::{Routes, ServerConfig, serve_connection};

/// Serves the starting answers on `listener` until `starting` completes, then returns its
/// output with the listener free for [`crate::server::serve`]. Connections opened meanwhile
/// finish their current request and close (a kept-alive one must not keep answering
/// `starting`).
pub async fn serve_while<F: Future>(
    listener: &TcpListener,
    config: &ServerConfig,
    starting: F,
) -> F::Output {
    // Everything through this Router: no delivery is handled while starting.
    let routes = Routes {
        router: Router::new()
            .route("/healthz", get(healthz))
            .fallback(starting_answer),
        webhook: None,
    };
    let stop = CancellationToken::new();
    let mut conns = JoinSet::new();
    tokio::pin!(starting);
    let output = loop {
        tokio::select! {
            biased;
            output = &mut starting => break output,
            accepted = listener.accept() => {
                while conns.try_join_next().is_some() {}
                let Ok((stream, peer)) = accepted else { continue };
                if conns.len() >= config.max_connections.max(1) {
                    drop(stream);
                    continue;
                }
                conns.spawn(serve_connection(
                    stream,
                    peer,
                    routes.clone(),
                    config.header_timeout,
                    stop.clone(),
                ));
            }
        }
    };
    stop.cancel();
    // Each connection ends after its current request; they hold nothing the server needs.
    conns.detach_all();
    output
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn starting_answer() -> Response {
    let mut resp = (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}
