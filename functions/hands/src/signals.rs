//! SIGTERM and SIGINT start a graceful shutdown: stop taking work, cancel in-flight calls with
//! an error result, stop the items (PROTOCOL.md §6.5, CATALOGUE P2).

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
        tracing::info!("shutdown requested: finishing in-flight calls and stopping items");
        token.cancel();
    });
}
