//! The session's event feed: the SSE stream, then the whole history, again after every drop
//! (PROTOCOL.md §7.2-§7.3, CATALOGUE C16).
//!
//! The stream is opened first and the history listed second, so an event emitted between the
//! two calls is seen at least once; the ledger removes duplicates. A history listing that fails
//! midway delivers nothing from that pass. Reconnects back off from 0.5 s to 10 s and the
//! backoff resets once a connection delivers an event.

use hands_client::{Backoff, ControlPlane, Credential, EventStream};
use hands_protocol::events::SessionEvent;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the feed tells the runner.
#[derive(Debug)]
pub enum Feed {
    /// One event, from the stream or the history (possibly seen before).
    Event(SessionEvent),
    /// A full history pass was delivered after (re)connecting.
    Reconciled { events: usize, reconnects: u32 },
    /// The feed cannot go on (a fatal 4xx, e.g. the session is gone or the credential revoked).
    Fatal(String),
}

/// Runs until `stop` fires or a fatal error; sends into `tx` (stops if the runner is gone).
pub async fn run_feed(
    cp: ControlPlane,
    credential: Credential,
    session_id: String,
    tx: mpsc::Sender<Feed>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::for_stream();
    let mut reconnects = 0u32;
    loop {
        let connected = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            r = connect_and_reconcile(&cp, &credential, &session_id, &tx, reconnects) => r,
        };
        match connected {
            Ok(Some(mut stream)) => {
                let delivered = tokio::select! {
                    biased;
                    () = stop.cancelled() => return,
                    n = pump(&mut stream, &tx) => n,
                };
                match delivered {
                    Pumped::RunnerGone => return,
                    Pumped::Closed { events } => {
                        if events > 0 {
                            backoff.reset();
                        }
                        tracing::info!(session_id = %session_id, events, "event stream ended; reconnecting");
                    }
                }
            }
            Ok(None) => return, // runner gone
            Err(ConnectError::Fatal(msg)) => {
                let _ = tx.send(Feed::Fatal(msg)).await;
                return;
            }
            Err(ConnectError::Transient(msg)) => {
                tracing::warn!(session_id = %session_id, error = %msg, "event stream unavailable; retrying");
            }
        }
        reconnects += 1;
        let delay = backoff.next_delay(&mut rand::rng());
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

enum ConnectError {
    Transient(String),
    Fatal(String),
}

enum Pumped {
    Closed { events: usize },
    RunnerGone,
}

/// Opens the stream, then delivers the whole history. `Ok(None)` when the runner went away.
async fn connect_and_reconcile(
    cp: &ControlPlane,
    credential: &Credential,
    session_id: &str,
    tx: &mpsc::Sender<Feed>,
    reconnects: u32,
) -> Result<Option<EventStream>, ConnectError> {
    let classify = |e: hands_client::ApiError| {
        if e.is_transient() {
            ConnectError::Transient(e.to_string())
        } else {
            ConnectError::Fatal(e.to_string())
        }
    };
    // The worker reads its own results back on the stream; it needs their ids, not their
    // content a second time.
    let stream = cp
        .stream_events(credential, session_id)
        .await
        .map_err(classify)?
        .without_result_content();
    let history = cp
        .list_all_events(credential, session_id)
        .await
        .map_err(classify)?;
    let events = history.len();
    for event in history {
        if tx.send(Feed::Event(event)).await.is_err() {
            return Ok(None);
        }
    }
    if tx
        .send(Feed::Reconciled { events, reconnects })
        .await
        .is_err()
    {
        return Ok(None);
    }
    Ok(Some(stream))
}

async fn pump(stream: &mut EventStream, tx: &mpsc::Sender<Feed>) -> Pumped {
    let mut events = 0;
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                events += 1;
                if tx.send(Feed::Event(event)).await.is_err() {
                    return Pumped::RunnerGone;
                }
            }
            Err(e) => {
                // Any stream error means: reconnect and reconcile from history.
                tracing::warn!(error = %e, "event stream error");
                break;
            }
        }
    }
    Pumped::Closed { events }
}
