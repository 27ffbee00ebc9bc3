//! Fitting a continuation into an asynchronous invoke, and unpacking it on the other side.
//!
//! A refused continuation loses the lease (the item comes back through the queue). Results the
//! predecessor could not post travel in the payload, so it is kept under
//! [`CONTINUATION_PAYLOAD_BUDGET`], well under Lambda's limit: the largest
//! results move to the workspace bucket (`workspaces/<session>/results/<id>.json`) until it
//! fits; without a bucket they are left out and their calls run again in the successor, which
//! the log says for each one. The successor fetches stored results before serving and, if it
//! held the lease, deletes them once they are no longer carried.

use std::collections::HashSet;

use hands_protocol::toolset::ToolOutput;
use hands_worker::Resume;

use crate::payload::SessionInvoke;
use crate::s3_store::S3WorkspaceStore;

/// Lambda's limit for an asynchronous (`Event`) invoke's payload: 1 MB (the Lambda API
/// reference, `Invoke`: "For asynchronous invocations, the maximum payload size is 1 MB"; it
/// was 256 KB before).
pub const ASYNC_INVOKE_PAYLOAD_LIMIT: usize = 1_000_000;

/// What a continuation's payload may use: far under the limit, because the invocation record
/// an on-failure destination receives embeds the request payload (`session`'s record is itself
/// an event for `webhook`, and Lambda drops the payload from a record too big for its
/// destination, e.g. an SNS destination's 256 KB: API reference, `OnFailure`), because the
/// size after Lambda's internal serialization can exceed the limit for a payload under it
/// (`SerializedRequestEntityTooLargeException`), and because smaller events are cheaper; also
/// an estimate that is a little off (the SDK's framing, a later field) never fails the invoke.
pub const CONTINUATION_PAYLOAD_BUDGET: usize = 192 * 1024;
const _: () = assert!(CONTINUATION_PAYLOAD_BUDGET < ASYNC_INVOKE_PAYLOAD_LIMIT);

/// What fitting did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fitted {
    /// The payload's size afterwards.
    pub bytes: usize,
    /// Results moved to the bucket.
    pub stored: Vec<String>,
    /// Results left out: the successor runs those calls again.
    pub dropped: Vec<String>,
}

fn size(payload: &SessionInvoke) -> usize {
    serde_json::to_vec(payload).map_or(usize::MAX, |v| v.len())
}

fn output_size(output: &ToolOutput) -> usize {
    serde_json::to_vec(output).map_or(usize::MAX, |v| v.len())
}

/// Moves the largest carried results out of `payload` until it fits `budget`: to `store` when
/// there is one, else out of the continuation (the successor runs those calls again).
pub async fn fit_continuation(
    payload: &mut SessionInvoke,
    store: Option<&S3WorkspaceStore>,
    budget: usize,
) -> Fitted {
    let mut fitted = Fitted::default();
    let session_id = payload.work.data.id.clone();
    loop {
        let bytes = size(payload);
        fitted.bytes = bytes;
        if bytes <= budget {
            return fitted;
        }
        let Some(resume) = payload.continuation.as_mut() else {
            return fitted;
        };
        let largest = resume
            .results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.output.as_ref().map(|o| (i, output_size(o))))
            .max_by_key(|&(_, n)| n);
        let Some((index, result_bytes)) = largest else {
            tracing::error!(
                bytes,
                budget,
                "the continuation is over its payload budget with no result left to move out; the invoke may be refused"
            );
            return fitted;
        };
        let result = &mut resume.results[index];
        let id = result.tool_use_id.clone();
        let Some(store) = store else {
            tracing::warn!(tool_use_id = %id, tool = %result.name, result_bytes, budget,
                "a result that could not be posted is too big for the continuation's payload and there is no HANDS_WORKSPACE_BUCKET to hold it: the successor runs this call again");
            resume.results.remove(index);
            fitted.dropped.push(id);
            continue;
        };
        let key = S3WorkspaceStore::result_key(&session_id, &id);
        // `output` is set (only inline results are candidates): this is the ToolOutput itself.
        let body = serde_json::to_vec(&result.output).unwrap_or_default();
        match store.put_json(&key, body).await {
            Ok(()) => {
                tracing::info!(tool_use_id = %id, %key, result_bytes,
                    "a result too big for the continuation's payload waits in the workspace bucket");
                result.output = None;
                result.stored = Some(key);
                fitted.stored.push(id);
            }
            Err(e) => {
                tracing::warn!(tool_use_id = %id, error = %e,
                    "cannot store a result too big for the continuation's payload: the successor runs this call again");
                resume.results.remove(index);
                fitted.dropped.push(id);
            }
        }
    }
}

/// Fetches the results a predecessor stored in the bucket back into `resume`. One that cannot
/// be fetched is left out (its call runs again; logged). Returns the keys read, for
/// [`delete_consumed`].
pub async fn fetch_stored_results(
    resume: &mut Resume,
    session_id: &str,
    store: Option<&S3WorkspaceStore>,
) -> Vec<String> {
    let mut fetched = Vec::new();
    let mut kept = Vec::with_capacity(resume.results.len());
    for mut r in std::mem::take(&mut resume.results) {
        let Some(key) = r.stored.clone() else {
            kept.push(r);
            continue;
        };
        // Only this session's result keys: the payload names a key, it does not choose one.
        if key != S3WorkspaceStore::result_key(session_id, &r.tool_use_id) {
            tracing::warn!(tool_use_id = %r.tool_use_id, %key,
                "a carried-over result names a key that is not this session's; ignored, the call runs again");
            continue;
        }
        let Some(store) = store else {
            tracing::warn!(tool_use_id = %r.tool_use_id, %key,
                "a carried-over result is in the workspace bucket but HANDS_WORKSPACE_BUCKET is not set here; the call runs again");
            continue;
        };
        let output = match store.get_bytes(&key).await {
            Ok(bytes) => serde_json::from_slice::<ToolOutput>(&bytes)
                .map_err(|e| format!("not a tool result: {e}")),
            Err(e) => Err(e.to_string()),
        };
        match output {
            Ok(output) => {
                r.output = Some(output);
                r.stored = None;
                fetched.push(key);
                kept.push(r);
            }
            Err(e) => tracing::warn!(tool_use_id = %r.tool_use_id, %key, error = %e,
                "cannot fetch a carried-over result; the call runs again"),
        }
    }
    resume.results = kept;
    fetched
}

/// Deletes the fetched result objects that the next continuation (if any) does not carry
/// again under the same key.
pub async fn delete_consumed(
    fetched: Vec<String>,
    next: Option<&Resume>,
    store: Option<&S3WorkspaceStore>,
) {
    let Some(store) = store else { return };
    let still: HashSet<&str> = next
        .map(|r| {
            r.results
                .iter()
                .filter_map(|c| c.stored.as_deref())
                .collect()
        })
        .unwrap_or_default();
    for key in fetched.iter().filter(|k| !still.contains(k.as_str())) {
        if let Err(e) = store.delete(key).await {
            // Harmless: the bucket's lifecycle rule expires it.
            tracing::warn!(%key, error = %e, "cannot delete a consumed result object");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hands_protocol::work::WorkItem;
    use hands_worker::CarriedResult;

    fn item() -> WorkItem {
        serde_json::from_value(serde_json::json!({"type":"work","id":"work_1",
            "environment_id":"env_1","data":{"type":"session","id":"sesn_1"},"state":"starting",
            "metadata":{},"secret":null,"created_at":"2026-11-29T22:00:00Z"}))
        .unwrap()
    }

    fn result(id: &str, text_bytes: usize) -> CarriedResult {
        CarriedResult {
            tool_use_id: id.into(),
            kind: serde_json::from_value(serde_json::json!("builtin")).unwrap(),
            name: "bash".into(),
            output: Some(ToolOutput::ok("x".repeat(text_bytes))),
            stored: None,
        }
    }

    #[tokio::test]
    async fn without_a_bucket_the_largest_results_are_left_out_until_the_payload_fits() {
        let mut payload = SessionInvoke {
            work: item(),
            continuation: Some(Resume {
                last_heartbeat: Some("hb".into()),
                answered: vec!["sevt_a".into()],
                results: vec![
                    result("sevt_small", 1000),
                    result("sevt_big", 150 * 1024),
                    result("sevt_mid", 100 * 1024),
                ],
            }),
        };
        let fitted = fit_continuation(&mut payload, None, CONTINUATION_PAYLOAD_BUDGET).await;
        // 251 KiB of results: moving the biggest out is enough.
        assert_eq!(fitted.dropped, vec!["sevt_big".to_owned()]);
        assert!(fitted.stored.is_empty());
        assert!(fitted.bytes <= CONTINUATION_PAYLOAD_BUDGET);
        assert_eq!(fitted.bytes, serde_json::to_vec(&payload).unwrap().len());
        let kept: Vec<_> = payload
            .continuation
            .as_ref()
            .unwrap()
            .results
            .iter()
            .map(|r| r.tool_use_id.as_str())
            .collect();
        assert_eq!(kept, vec!["sevt_small", "sevt_mid"]);

        // A payload already within budget is left alone.
        let before = payload.clone();
        let again = fit_continuation(&mut payload, None, CONTINUATION_PAYLOAD_BUDGET).await;
        assert!(again.dropped.is_empty());
        assert_eq!(payload, before);
    }

    #[test]
    fn the_shipped_continuation_example_parses() {
        let example = include_str!("../../../events/lambda/continuation.json");
        let payload: SessionInvoke = serde_json::from_str(example).unwrap();
        let resume = payload.continuation.unwrap();
        assert_eq!(resume.results.len(), 2);
        assert!(resume.results[0].output.is_some());
        assert_eq!(
            resume.results[1].stored.as_deref(),
            Some(
                S3WorkspaceStore::result_key(&payload.work.data.id, &resume.results[1].tool_use_id)
                    .as_str()
            )
        );
    }

    #[tokio::test]
    async fn stored_results_of_another_session_or_without_a_bucket_are_not_used() {
        let mut resume = Resume {
            results: vec![
                CarriedResult {
                    output: None,
                    stored: Some("workspaces/sesn_other/results/sevt_x.json".into()),
                    ..result("sevt_x", 1)
                },
                CarriedResult {
                    output: None,
                    stored: Some(S3WorkspaceStore::result_key("sesn_1", "sevt_y")),
                    ..result("sevt_y", 1)
                },
                result("sevt_z", 10),
            ],
            ..Resume::default()
        };
        let fetched = fetch_stored_results(&mut resume, "sesn_1", None).await;
        assert!(fetched.is_empty());
        let ids: Vec<_> = resume
            .results
            .iter()
            .map(|r| r.tool_use_id.as_str())
            .collect();
        assert_eq!(ids, vec!["sevt_z"]);
        assert_eq!(
            S3WorkspaceStore::result_key("sesn_1", "../../x"),
            "workspaces/sesn_1/results/______x.json"
        );
    }
}
