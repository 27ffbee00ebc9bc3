//! The janitor (DESIGN.md "Hand-off"): items whose serving failed for good are force-stopped,
//! and items that look abandoned are listed.
//!
//! On Lambda, an item whose `session` invocations kept failing ends in the function's
//! on-failure destination as a *destination record* (`requestContext.condition`,
//! `requestPayload` = the invoke's input, which carries the work item). Force-stopping it ends
//! the session's run visibly instead of leaving the agent waiting for a lease to lapse and the
//! same failing item to be handed out again. The `webhook` function receives those records
//! directly when it is the destination; `hands janitor` reads them from a file (e.g. exported
//! from an SQS destination).

use std::time::Duration;

use hands_client::{ApiError, Credential};
use hands_protocol::secret::decode_sessions_token;
use hands_protocol::work::{WorkItem, WorkState};
use serde_json::Value;

use crate::item::Worker;

/// One record of a failed asynchronous invocation.
#[derive(Clone, Debug)]
pub struct FailedInvocation {
    /// Lambda's reason: `RetriesExhausted`, `EventAgeExceeded`, ...
    pub condition: String,
    /// The work item the invocation was to serve, when the payload carries one.
    pub work: Option<WorkItem>,
}

impl FailedInvocation {
    /// Reads a Lambda destination record; `None` if `record` is not one.
    pub fn from_record(record: &Value) -> Option<FailedInvocation> {
        let condition = record
            .get("requestContext")?
            .get("condition")?
            .as_str()?
            .to_owned();
        let payload = record.get("requestPayload")?;
        // The payload may arrive as an object or, from some destinations, as a JSON string.
        let payload = match payload {
            Value::String(s) => serde_json::from_str(s).ok()?,
            v => v.clone(),
        };
        let work = payload
            .get("work")
            .cloned()
            .and_then(|w| serde_json::from_value(w).ok());
        Some(FailedInvocation { condition, work })
    }
}

/// What the janitor did with one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cleanup {
    Stopped {
        work_id: String,
    },
    StopFailed {
        work_id: String,
    },
    /// The record named no work item.
    NoItem,
}

/// An item that holds a lease but has not heartbeated for a while.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaleItem {
    pub work_id: String,
    pub session_id: String,
    pub state: WorkState,
    /// `latest_heartbeat_at`, or `acknowledged_at` when it never beat.
    pub since: Option<String>,
}

impl Worker {
    /// Force-stops the item of a failed invocation, with its sessions token if the record
    /// carries one, else the environment key.
    pub async fn clean_up_failed(&self, failed: &FailedInvocation) -> Cleanup {
        let Some(work) = &failed.work else {
            tracing::warn!(condition = %failed.condition, "failed invocation without a work item; nothing to stop");
            return Cleanup::NoItem;
        };
        let credential = work
            .secret
            .as_deref()
            .and_then(decode_sessions_token)
            .map(|t| Credential::sessions_token(&t))
            .or_else(|| self.config().environment_key.clone());
        let Some(credential) = credential else {
            tracing::error!(work_id = %work.id, "no credential to stop a failed item with");
            return Cleanup::StopFailed {
                work_id: work.id.clone(),
            };
        };
        tracing::warn!(work_id = %work.id, session_id = %work.data.id, condition = %failed.condition,
            "the session function kept failing on this item; force-stopping it");
        if self
            .force_stop(&credential, &work.environment_id, &work.id)
            .await
        {
            Cleanup::Stopped {
                work_id: work.id.clone(),
            }
        } else {
            Cleanup::StopFailed {
                work_id: work.id.clone(),
            }
        }
    }

    /// Items in `starting` or `active` whose last heartbeat (or ack) is older than
    /// `older_than`: their worker is probably gone. Only listed here; the callers stop them
    /// (`hands janitor --stop-stale`, the webhook function's schedule).
    pub async fn stale_items(&self, older_than: Duration) -> Result<Vec<StaleItem>, ApiError> {
        let key = self
            .config()
            .environment_key
            .clone()
            .ok_or_else(|| ApiError::Transport("no environment key".into()))?;
        let env = &self.config().environment_id;
        let now = time::OffsetDateTime::now_utc();
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        for _ in 0..100 {
            let p = self
                .control_plane()
                .list_work(&key, env, Some(100), page.as_deref())
                .await?;
            for item in p.data {
                if !matches!(item.state, WorkState::Starting | WorkState::Active) {
                    continue;
                }
                let since = item
                    .latest_heartbeat_at
                    .clone()
                    .or_else(|| item.acknowledged_at.clone());
                let age = since
                    .as_deref()
                    .and_then(|t| {
                        time::OffsetDateTime::parse(
                            t,
                            &time::format_description::well_known::Rfc3339,
                        )
                        .ok()
                    })
                    .map(|t| now - t);
                if age.is_none_or(|a| a.whole_milliseconds() >= older_than.as_millis() as i128) {
                    out.push(StaleItem {
                        work_id: item.id,
                        session_id: item.data.id,
                        state: item.state,
                        since,
                    });
                }
            }
            match p.next_page {
                Some(n) if !n.is_empty() => page = Some(n),
                _ => break,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_records_are_read_with_object_or_string_payloads() {
        let work = serde_json::json!({"type":"work","id":"work_1","environment_id":"env_1",
            "data":{"type":"session","id":"sesn_1"},"state":"starting","metadata":{},
            "secret":null,"created_at":"2026-11-29T22:00:00Z"});
        let rec = serde_json::json!({"version":"1.0","requestContext":{"condition":"RetriesExhausted",
            "approximateInvokeCount":3},"requestPayload":{"work":work}});
        let f = FailedInvocation::from_record(&rec).unwrap();
        assert_eq!(f.condition, "RetriesExhausted");
        assert_eq!(f.work.unwrap().id, "work_1");
        let rec = serde_json::json!({"requestContext":{"condition":"EventAgeExceeded"},
            "requestPayload": serde_json::json!({"work":work}).to_string()});
        assert_eq!(
            FailedInvocation::from_record(&rec)
                .unwrap()
                .work
                .unwrap()
                .data
                .id,
            "sesn_1"
        );
        assert!(
            FailedInvocation::from_record(&serde_json::json!({"source":"aws.events"})).is_none()
        );
    }
}
