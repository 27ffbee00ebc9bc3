//! The container listener for [`Ingress`]: HTTP/1.1 on hyper with the limits `axum::serve`
//! does not give (CATALOGUE pitfall 7, W19):
//! - a header-read timeout that really runs (hyper needs a [`TokioTimer`] for it, else it is
//!   silently off); it also covers a connection that sends nothing, and the idle time between
//!   keep-alive requests, which the tests check against this very server;
//! - a body-read timeout (in the webhook handler) and a 64 KiB read buffer, so a body past the
//!   limit is refused after at most `limit + 64 KiB` bytes;
//! - a cap on concurrent connections: past it, new connections are closed at accept;
//! - graceful shutdown: readiness goes false and deliveries get 503 while sessions cancel
//!   themselves (error results posted, items stopped) within the grace period; then the
//!   listener closes and open connections finish their current request.
//!
//! `POST /webhook` is answered by the webhook handler directly; only the other requests go
//! through the Router (`/healthz`, `/readyz`, `/metrics`, 404, 405). The handler is the one the
//! Router calls, so both paths give the same answers; the direct one skips the Router's route
//! match, method dispatch and the boxing of the body and of the handler's future, which was a
//! measurable part of a delivery's cost (tests/bench/webhook).
//!
//! HTTP/2 is not offered: the webhook sender speaks HTTP/1.1, and hyper's header timeout does
//! not cover HTTP/2.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::ingress::Ingress;
use crate::timer::run_periodic_drain;
use crate::until_stopped::UntilStopped;
use crate::webhook::{WEBHOOK_PATH, webhook};

/// hyper's smallest allowed read buffer is 8 KiB; 64 KiB bounds what is read past a body limit
/// and still fits any sane header block.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Listener limits and timings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// A connection that has not sent a complete request head within this is closed; also the
    /// idle limit between keep-alive requests (Sentry Relay uses 5 s).
    pub header_timeout: Duration,
    /// Connections served at once; more are closed at accept.
    pub max_connections: usize,
    /// Total time for a graceful shutdown, sessions included. Kubernetes waits 30 s by default.
    pub shutdown_grace: Duration,
    /// How often the periodic drain runs; `None` disables it.
    pub drain_interval: Option<Duration>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            header_timeout: Duration::from_secs(5),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(25),
            drain_interval: Some(Duration::from_secs(30)),
        }
    }
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Binds `addr` (e.g. `0.0.0.0:8080`, or `127.0.0.1:0` in tests).
pub async fn bind(addr: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: addr.to_owned(),
            source,
        })
}

/// How a server run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOutcome {
    /// Every session ended within the grace period (none had to be aborted).
    pub sessions_finished: bool,
}

/// Serves `ingress` on `listener` until `stop` fires, then shuts down gracefully.
pub async fn serve(
    listener: TcpListener,
    ingress: Ingress,
    config: ServerConfig,
    stop: CancellationToken,
) -> ServeOutcome {
    let accepting = CancellationToken::new();
    let connections_stop = CancellationToken::new();
    let accept = tokio::spawn(accept_loop(
        listener,
        ingress.clone(),
        config.clone(),
        accepting.clone(),
        connections_stop.clone(),
    ));
    let timer = config
        .drain_interval
        .map(|every| tokio::spawn(run_periodic_drain(ingress.clone(), every)));

    // Shutdown: readiness false first, sessions next, connections last, all within the grace.
    stop.cancelled().await;
    let deadline = Instant::now() + config.shutdown_grace;
    ingress.begin_shutdown();
    if let Some(t) = timer {
        t.abort();
    }
    // Keep the leftover grace for connections, at least a second.
    let session_grace = config
        .shutdown_grace
        .saturating_sub(Duration::from_secs(1))
        .max(Duration::from_millis(100));
    let sessions_finished = ingress.finish_sessions(session_grace).await;
    accepting.cancel();
    connections_stop.cancel();
    let drain_conns = async {
        if let Ok(mut conns) = accept.await {
            while conns.join_next().await.is_some() {}
        }
    };
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    if tokio::time::timeout(remaining, drain_conns).await.is_err() {
        tracing::warn!("connections still open at the end of the grace period; closing them");
    }
    tracing::info!(sessions_finished, "server stopped");
    ServeOutcome { sessions_finished }
}

/// Accepts until `accepting` fires; returns the connection tasks still running.
async fn accept_loop(
    listener: TcpListener,
    ingress: Ingress,
    config: ServerConfig,
    accepting: CancellationToken,
    connections_stop: CancellationToken,
) -> JoinSet<()> {
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let routes = Routes {
        router: ingress.router(),
        webhook: Some(ingress.clone()),
    };
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = accepting.cancelled() => break,
            a = listener.accept() => a,
        };
        while conns.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            ingress.metrics().connection_refused();
            tracing::debug!(%peer, "connection cap reached; closing the new connection");
            drop(stream);
            continue;
        };
        let metrics = Arc::clone(ingress.metrics());
        let routes = routes.clone();
        let header_timeout = config.header_timeout;
        let stop = connections_stop.clone();
        conns.spawn(async move {
            metrics.connection_opened();
            serve_connection(stream, peer, routes, header_timeout, stop).await;
            metrics.connection_closed();
            drop(permit);
        });
    }
    conns
}

/// What a connection answers: `POST /webhook` straight to `webhook`'s handler when set, every
/// other request through `router`.
#[derive(Clone)]
pub(crate) struct Routes {
    pub(crate) router: Router,
    pub(crate) webhook: Option<Ingress>,
}

/// Where one request goes.
enum Route {
    Webhook(Ingress),
    Router(Router),
}

impl Routes {
    fn route(&self, req: &http::Request<Incoming>) -> Route {
        match &self.webhook {
            // The same match as the Router's: the path only (a query is ignored), no
            // normalisation, any other method left to the Router's 405.
            Some(ingress)
                if req.method() == http::Method::POST && req.uri().path() == WEBHOOK_PATH =>
            {
                Route::Webhook(ingress.clone())
            }
            _ => Route::Router(self.router.clone()),
        }
    }
}

pub(crate) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    routes: Routes,
    header_timeout: Duration,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let route = routes.route(&req);
        async move {
            Ok::<_, Infallible>(match route {
                Route::Webhook(ingress) => webhook(&ingress, req).await,
                // The Router's error type is `Infallible`: every failure is already a response.
                Route::Router(router) => match router.oneshot(req).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                },
            })
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(READ_BUFFER_BYTES)
        .keep_alive(true);
    let conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
    let stopped = pin!(stop.cancelled());
    // Not `select!`: that would poll the stop signal at every request (until_stopped.rs).
    let result = UntilStopped::new(conn, stopped, |conn| conn.graceful_shutdown()).await;
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
