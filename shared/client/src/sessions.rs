//! Session endpoints a worker uses (PROTOCOL.md §7.1): the session object, the event history,
//! the SSE stream, and posting results. Skills downloads (§9.6) live here too: they are
//! per-session reads with the item's credential.

use std::collections::VecDeque;
use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use hands_protocol::error::ErrorBody;
use hands_protocol::events::SessionEvent;
use hands_protocol::session::Session;
use hands_protocol::skills::SkillVersion;
use hands_protocol::work::Page;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::client::{Call, ControlPlane, decode, segment};
use crate::credential::Credential;
use crate::error::{ApiError, with_causes};
use crate::sse::{SseDecoder, SseError, SseFrame};

/// The history page size the reference runner uses (§7.3).
pub const HISTORY_PAGE_SIZE: u32 = 1000;

/// Largest single SSE frame accepted; a `write` tool call can carry a big file.
const MAX_SSE_FRAME_BYTES: usize = 32 << 20;

fn session_path(session_id: &str, rest: &str) -> String {
    format!("/v1/sessions/{}{rest}", segment(session_id))
}

/// Why the event stream ended or produced something unusable. Every variant means: reconnect
/// (unless fatal) and reconcile from history.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("event stream transport error: {0}")]
    Transport(String),
    /// The server sent `event: error` (§7.2).
    #[error("event stream error from server: {}", .0.error.message)]
    Server(Box<ErrorBody>),
    #[error("event stream framing: {0}")]
    Frame(#[from] SseError),
    #[error("event stream frame `{event}` is not valid JSON: {message}")]
    Decode { event: String, message: String },
}

/// A live SSE connection to a session's events.
pub struct EventStream {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    decoder: SseDecoder,
    ready: VecDeque<SseFrame>,
    decode: fn(&str) -> Result<SessionEvent, serde_json::Error>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl EventStream {
    /// Tool results come without their content (see
    /// `SessionEvent::from_json_without_result_content`): for a worker, which sees each of its
    /// own results again on the stream and needs only whose answer it is.
    pub fn without_result_content(mut self) -> Self {
        self.decode = SessionEvent::from_json_without_result_content;
        self
    }

    /// The next event; `None` when the server closed the stream. Frames without an `event:`
    /// name are dropped and `ping` frames skipped, as the SDK decoders do (§7.2).
    pub async fn next(&mut self) -> Option<Result<SessionEvent, StreamError>> {
        loop {
            while let Some(frame) = self.ready.pop_front() {
                let Some(name) = frame.event else { continue };
                match name.as_str() {
                    "ping" => continue,
                    "error" => {
                        return Some(Err(match serde_json::from_str::<ErrorBody>(&frame.data) {
                            Ok(body) => StreamError::Server(Box::new(body)),
                            Err(e) => StreamError::Decode {
                                event: name,
                                message: e.to_string(),
                            },
                        }));
                    }
                    _ => {}
                }
                return Some((self.decode)(&frame.data).map_err(|e| StreamError::Decode {
                    event: name,
                    message: e.to_string(),
                }));
            }
            match self.body.next().await? {
                Ok(chunk) => match self.decoder.push(&chunk) {
                    Ok(frames) => self.ready.extend(frames),
                    Err(e) => return Some(Err(e.into())),
                },
                Err(e) => return Some(Err(StreamError::Transport(with_causes(&e)))),
            }
        }
    }
}

impl ControlPlane {
    /// `GET /v1/sessions/{id}`.
    pub async fn get_session(
        &self,
        credential: &Credential,
        session_id: &str,
    ) -> Result<Session, ApiError> {
        let path = session_path(session_id, "");
        let reply = self
            .send(Call::new(Method::GET, path.clone(), credential))
            .await?;
        decode(&path, &reply.body)
    }

    /// One page of the event history, oldest first.
    pub async fn list_events(
        &self,
        credential: &Credential,
        session_id: &str,
        page: Option<&str>,
        limit: u32,
    ) -> Result<Page<SessionEvent>, ApiError> {
        let path = session_path(session_id, "/events");
        let mut call = Call::new(Method::GET, path.clone(), credential)
            .query("limit", limit)
            .query("order", "asc");
        if let Some(page) = page {
            call = call.query("page", page);
        }
        let reply = self.send(call).await?;
        decode(&path, &reply.body)
    }

    /// The whole history, page by page. Fails as a whole if any page fails, so a caller never
    /// dispatches from a partial view (§7.3).
    pub async fn list_all_events(
        &self,
        credential: &Credential,
        session_id: &str,
    ) -> Result<Vec<SessionEvent>, ApiError> {
        let mut all = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let p = self
                .list_events(credential, session_id, page.as_deref(), HISTORY_PAGE_SIZE)
                .await?;
            all.extend(p.data);
            match p.next_page {
                Some(next) if !next.is_empty() && Some(&next) != page.as_ref() => page = Some(next),
                _ => return Ok(all),
            }
        }
    }

    /// Opens the SSE stream. The request has no overall timeout (it lives as long as the
    /// session); a stalled stream is the caller's to detect.
    pub async fn stream_events(
        &self,
        credential: &Credential,
        session_id: &str,
    ) -> Result<EventStream, ApiError> {
        let path = session_path(session_id, "/events/stream");
        let call = Call::new(Method::GET, path, credential)
            .header("accept", "text/event-stream")
            .timeout(std::time::Duration::from_secs(365 * 24 * 3600));
        let response = self.send_streaming(call).await?;
        Ok(EventStream {
            body: Box::pin(response.bytes_stream()),
            decoder: SseDecoder::new(MAX_SSE_FRAME_BYTES),
            ready: VecDeque::new(),
            decode: SessionEvent::from_json,
        })
    }

    /// `POST /v1/sessions/{id}/events` with `{"events": [...]}`; returns how many events the
    /// server echoed. Anything that serializes as an event will do: a worker posts a
    /// [`ResultToPost`](hands_protocol::events::ResultToPost) that borrows its content. The
    /// echo (each event again, with `id` and `processed_at`) is checked to be a list and then
    /// skipped unread: a worker has no use for its own result a second time, and decoding a
    /// result of hundreds of KiB was a large share of a round trip.
    pub async fn send_events<E: Serialize>(
        &self,
        credential: &Credential,
        session_id: &str,
        events: &[E],
    ) -> Result<usize, ApiError> {
        #[derive(Serialize)]
        struct Request<'a, E: Serialize> {
            events: &'a [E],
        }
        #[derive(Deserialize)]
        struct Echo {
            data: Vec<serde::de::IgnoredAny>,
        }
        let path = session_path(session_id, "/events");
        let call = Call::new(Method::POST, path.clone(), credential).json(&Request { events })?;
        let reply = self.send(call).await?;
        decode::<Echo>(&path, &reply.body).map(|echo| echo.data.len())
    }

    /// `GET /v1/skills/{id}/versions/{version}` (`version` may be `latest`).
    pub async fn skill_version(
        &self,
        credential: &Credential,
        skill_id: &str,
        version: &str,
    ) -> Result<SkillVersion, ApiError> {
        let path = format!(
            "/v1/skills/{}/versions/{}",
            segment(skill_id),
            segment(version)
        );
        let reply = self
            .send(Call::new(Method::GET, path.clone(), credential))
            .await?;
        decode(&path, &reply.body)
    }

    /// Streams a skill version's archive into `out`, refusing more than `limit` bytes.
    /// Returns the number of bytes written.
    pub async fn download_skill(
        &self,
        credential: &Credential,
        skill_id: &str,
        version_id: &str,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
        limit: u64,
    ) -> Result<u64, ApiError> {
        let path = format!(
            "/v1/skills/{}/versions/{}/content",
            segment(skill_id),
            segment(version_id)
        );
        let call = Call::new(Method::GET, path.clone(), credential)
            .header("accept", "application/binary")
            .timeout(std::time::Duration::from_secs(300));
        let response = self.send_streaming(call).await?;
        let too_large = || ApiError::TooLarge {
            path: path.clone(),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        };
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut written = 0u64;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ApiError::Transport(with_causes(&e)))?;
            written += chunk.len() as u64;
            if written > limit {
                return Err(too_large());
            }
            out.write_all(&chunk)
                .await
                .map_err(|e| ApiError::Transport(format!("writing skill archive: {e}")))?;
        }
        out.flush()
            .await
            .map_err(|e| ApiError::Transport(format!("writing skill archive: {e}")))?;
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hands_protocol::toolset::ContentBlock;

    fn stream_of(text: &'static str) -> EventStream {
        EventStream {
            body: Box::pin(futures::stream::iter([Ok(Bytes::from_static(
                text.as_bytes(),
            ))])),
            decoder: SseDecoder::new(MAX_SSE_FRAME_BYTES),
            ready: VecDeque::new(),
            decode: SessionEvent::from_json,
        }
    }

    const RESULT: &str = "event: user.tool_result\ndata: {\"type\":\"user.tool_result\",\"id\":\"sevt_2\",\"tool_use_id\":\"sevt_1\",\"content\":[{\"type\":\"text\",\"text\":\"big\"}]}\n\n";

    #[tokio::test]
    async fn a_worker_stream_drops_result_content_and_keeps_the_answer() {
        let full = stream_of(RESULT).next().await.unwrap().unwrap();
        let lean = stream_of(RESULT)
            .without_result_content()
            .next()
            .await
            .unwrap()
            .unwrap();
        match (full, lean) {
            (SessionEvent::UserToolResult(f), SessionEvent::UserToolResult(l)) => {
                assert_eq!(f.content, vec![ContentBlock::text("big")]);
                assert!(l.content.is_empty());
                assert_eq!(
                    (l.tool_use_id.as_str(), l.id.as_deref()),
                    ("sevt_1", Some("sevt_2"))
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
