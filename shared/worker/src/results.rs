//! Posting a tool result so the agent sees it exactly once (PROTOCOL.md §7.6, CATALOGUE C7-C9).
//!
//! Transient failures are retried with jittered backoff (honouring `Retry-After`) until the
//! retry window (the lease TTL) runs out; "already answered" for our own id is success (the
//! first attempt committed and its answer was lost); a result the server refuses as too large
//! is shortened with a visible marker and sent again, never dropped.

use std::time::Duration;

use hands_client::{ApiError, Backoff, ControlPlane, Credential};
use hands_protocol::error::codes;
use hands_protocol::events::ResultToPost;
use hands_protocol::toolset::{ContentBlock, ToolOutput};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ledger::{Call, CallKind};

/// Text kept when a result has to be shortened for the control plane.
pub const SHRUNK_TEXT_BYTES: usize = 100 * 1024;
/// Marker prefixed to a shortened result, so the model knows it is not seeing everything.
pub const SHRUNK_MARKER: &str = "[result truncated: the control plane refused its full size]\n";

/// How a post ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Posted {
    /// The control plane has the result (now or from an earlier attempt).
    Accepted { attempts: u32 },
    /// Not posted: the window ran out, the server refused it for good, or the lease was lost.
    /// The call stays unanswered; a later pass (or the next holder of the item) retries it.
    Failed { attempts: u32, reason: String },
}

/// The result event for a call, borrowing the output (posted as is, never copied).
pub fn result_event<'a>(call: &'a Call, output: &'a ToolOutput) -> ResultToPost<'a> {
    ResultToPost {
        custom: matches!(call.kind, CallKind::Custom),
        tool_use_id: &call.id,
        is_error: output.is_error,
        content: &output.content,
    }
}

/// Posts `output` as the result of `call`, retrying within `window`. Gives up early when
/// `abandon` fires (the lease was lost: nothing more may be posted).
pub async fn post_result(
    cp: &ControlPlane,
    credential: &Credential,
    session_id: &str,
    call: &Call,
    output: &ToolOutput,
    window: Duration,
    abandon: &CancellationToken,
) -> Posted {
    let deadline = Instant::now() + window;
    let mut backoff = Backoff::for_results();
    // Borrowed as long as it is posted whole; a copy exists only once it had to be shortened.
    let mut output = std::borrow::Cow::Borrowed(output);
    let mut shrunk = false;
    let mut attempts = 0u32;
    loop {
        if abandon.is_cancelled() {
            return Posted::Failed {
                attempts,
                reason: "lease lost".to_owned(),
            };
        }
        attempts += 1;
        let events = [result_event(call, &output)];
        let result = tokio::select! {
            biased;
            () = abandon.cancelled() => return Posted::Failed { attempts, reason: "lease lost".to_owned() },
            r = cp.send_events(credential, session_id, &events) => r,
            // An attempt in flight does not outlive the window either (a hand-off must not wait
            // for a slow control plane past its budget); if it had committed, the next pass
            // meets "already answered" (C8).
            () = tokio::time::sleep_until(deadline) => {
                tracing::error!(tool_use_id = %call.id, attempts, "result post still unanswered when its window closed; it stays unanswered for a later pass");
                return Posted::Failed { attempts, reason: "post window closed".to_owned() };
            }
        };
        let err = match result {
            Ok(_) => return Posted::Accepted { attempts },
            Err(e) => e,
        };
        if err.error_code() == Some(codes::TOOL_USE_ALREADY_ANSWERED) {
            // C8: the earlier attempt committed and only its answer was lost.
            tracing::info!(tool_use_id = %call.id, "result was already recorded; counting it as posted");
            return Posted::Accepted { attempts };
        }
        if is_too_large(&err) && !shrunk {
            tracing::warn!(tool_use_id = %call.id, error = %err, "result refused as too large; sending it shortened");
            output = std::borrow::Cow::Owned(shrink(output.into_owned()));
            shrunk = true;
            continue;
        }
        // A 2xx whose echo cannot be read may well have committed: retry within the window
        // (the retry then meets "already answered", C8) instead of giving the result up.
        let unreadable_answer = matches!(err, ApiError::Decode { .. });
        if unreadable_answer {
            tracing::warn!(tool_use_id = %call.id, error = %err, "the answer to a result post was unreadable; posting again");
        }
        if !err.is_transient() && !unreadable_answer {
            tracing::error!(tool_use_id = %call.id, error = %err, "result refused; the agent will not see this result");
            return Posted::Failed {
                attempts,
                reason: err.to_string(),
            };
        }
        let delay = backoff.delay_after(&err, &mut rand::rng());
        if Instant::now() + delay > deadline {
            tracing::error!(tool_use_id = %call.id, error = %err, attempts,
                "result post kept failing until the retry window closed; it stays unanswered for a later pass");
            return Posted::Failed {
                attempts,
                reason: format!("retry window closed: {err}"),
            };
        }
        tracing::warn!(tool_use_id = %call.id, error = %err, delay_ms = delay.as_millis() as u64, "result post failed; retrying");
        tokio::select! {
            biased;
            () = abandon.cancelled() => return Posted::Failed { attempts, reason: "lease lost".to_owned() },
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Keeps the result's meaning within a size the control plane accepts: text is cut to its last
/// [`SHRUNK_TEXT_BYTES`] (where errors and final output are), binary blocks become a note.
pub fn shrink(output: ToolOutput) -> ToolOutput {
    let mut text = String::new();
    for block in output.content {
        match block {
            ContentBlock::Text { text: t } => {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&t);
            }
            ContentBlock::Image { .. } => text.push_str("[image omitted: too large to post]\n"),
            ContentBlock::Document { .. } => {
                text.push_str("[document omitted: too large to post]\n")
            }
            ContentBlock::SearchResult { title, .. } => {
                text.push_str(&format!("[search result {title:?} omitted]\n"))
            }
        }
    }
    let tail = tail_on_char_boundary(&text, SHRUNK_TEXT_BYTES);
    ToolOutput {
        content: vec![ContentBlock::text(format!("{SHRUNK_MARKER}{tail}"))],
        is_error: output.is_error,
    }
}

fn tail_on_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// 413, or a 400 whose message says the request is too large (C9).
fn is_too_large(err: &ApiError) -> bool {
    match err.status().map(|s| s.as_u16()) {
        Some(413) => true,
        Some(400) => err.body().is_some_and(|b| {
            let m = b.error.message.to_ascii_lowercase();
            m.contains("too large") || m.contains("too long") || m.contains("exceeds")
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hands_protocol::toolset::MediaSource;

    #[test]
    fn shrink_keeps_the_tail_and_marks_it() {
        let long = "é".repeat(SHRUNK_TEXT_BYTES); // 2 bytes each: the cut lands mid-character
        let out = shrink(ToolOutput {
            content: vec![
                ContentBlock::text(long),
                ContentBlock::Image {
                    source: MediaSource::Base64 {
                        media_type: "image/png".into(),
                        data: "AAAA".into(),
                    },
                },
            ],
            is_error: true,
        });
        assert!(out.is_error);
        let ContentBlock::Text { text } = &out.content[0] else {
            panic!("not text")
        };
        assert!(text.starts_with(SHRUNK_MARKER));
        assert!(text.ends_with("[image omitted: too large to post]\n"));
        assert!(text.len() <= SHRUNK_MARKER.len() + SHRUNK_TEXT_BYTES);
    }

    #[test]
    fn events_match_the_call_kind() {
        let call = Call {
            id: "sevt_1".into(),
            kind: CallKind::Custom,
            name: "lookup".into(),
            input: serde_json::Value::Null,
        };
        let v = serde_json::to_value(result_event(&call, &ToolOutput::ok("fine"))).unwrap();
        assert_eq!(v["type"], "user.custom_tool_result");
        assert_eq!(v["custom_tool_use_id"], "sevt_1");
        assert_eq!(v["content"][0]["text"], "fine");
    }
}
