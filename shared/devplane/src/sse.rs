//! `GET /v1/sessions/{id}/events/stream` (PROTOCOL.md §7.2): live events as SSE frames
//! `event: <type>` + `data: <json>`, `event: ping` keep-alives, and connection drops on demand
//! (fault switch or [`crate::DevPlane::drop_streams`]) so reconnect-and-reconcile can be tested.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use hands_protocol::error::codes;
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use crate::auth::{self, Accepts};
use crate::error::ApiError;
use crate::query::QueryParams;
use crate::state::AppState;

/// One SSE frame for an event.
pub fn frame(event: &Value) -> Bytes {
    let ty = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    Bytes::from(format!("event: {ty}\ndata: {event}\n\n"))
}

const PING: &[u8] = b"event: ping\ndata: {}\n\n";

struct Conn {
    st: AppState,
    rx: broadcast::Receiver<Arc<Value>>,
    drop_rx: watch::Receiver<u64>,
    drop_after: Option<u32>,
    delivered: u32,
    ping: tokio::time::Interval,
}

impl Conn {
    async fn next(&mut self) -> Option<Bytes> {
        if self.drop_after.is_some_and(|n| self.delivered >= n) {
            self.st.lock().counters.sse_drops += 1;
            return None;
        }
        tokio::select! {
            ev = self.rx.recv() => match ev {
                Ok(ev) => {
                    self.delivered += 1;
                    Some(frame(&ev))
                }
                // A lagging reader lost events: end the stream so the client reconciles from
                // history, exactly what it does after any disconnect.
                Err(_) => None,
            },
            _ = self.drop_rx.changed() => {
                self.st.lock().counters.sse_drops += 1;
                None
            }
            _ = self.ping.tick() => Some(Bytes::from_static(PING)),
        }
    }
}

/// The SSE handler.
pub async fn stream(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(raw.as_deref())?;
    let deltas = q.all("event_deltas[]");
    if deltas.len() > 100
        || deltas
            .iter()
            .any(|d| !matches!(*d, "agent.message" | "agent.thinking"))
    {
        return Err(ApiError::bad_request(
            "event_deltas[]: only agent.message and agent.thinking are supported",
        ));
    }
    let (rx, drop_rx, drop_after) = {
        let mut store = st.lock();
        auth::require_beta(&headers)?;
        let principal = auth::authenticate(&store, &st.config.api_key, &headers, Accepts::ANY)?;
        let Some(session) = store.sessions.get(&id) else {
            return Err(ApiError::not_found(
                format!("session {id} not found"),
                codes::SESSION_NOT_FOUND,
            ));
        };
        auth::check_session_scope(&principal, &id, &session.environment_id)?;
        let rx = session.tx.subscribe();
        let drop_rx = session.drop_gen.subscribe();
        session.attached.notify_waiters();
        store.counters.sse_connections += 1;
        let drop_after = store.faults.sse_drop_for_new_connection();
        (rx, drop_rx, drop_after)
    };
    let mut ping = tokio::time::interval(st.config.sse_ping_interval);
    // The first tick fires at once; skip it so a connection does not open with a ping.
    ping.reset();
    let conn = Conn {
        st,
        rx,
        drop_rx,
        drop_after,
        delivered: 0,
        ping,
    };
    let body = futures::stream::unfold(conn, |mut c| async move {
        let frame = c.next().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(frame), c))
    });
    Ok((
        [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_event_type() {
        let ev = serde_json::json!({"type":"agent.tool_use","id":"sevt_1"});
        let f = frame(&ev);
        let text = std::str::from_utf8(&f).unwrap();
        assert!(text.starts_with("event: agent.tool_use\ndata: {"));
        assert!(text.ends_with("}\n\n"));
        assert_eq!(
            text.lines().count(),
            3,
            "two fields and the blank line ending the frame"
        );
    }
}
