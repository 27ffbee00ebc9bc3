//! The `session` function's input: one work item, and for a continuation what the predecessor
//! knew. The same shape for the first invoke (from `webhook`) and every continuation, so
//! `events/lambda/session-invoke.json` and `events/lambda/continuation.json` differ only in
//! `continuation`.
//!
//! The item carries its `secret` (the per-item sessions token): the async-invoke queue is
//! inside the operator's account and the payload is never logged.

use hands_protocol::work::WorkItem;
use hands_worker::Resume;
use serde::{Deserialize, Serialize};

/// `{"work": <WorkItem>, "continuation": {"last_heartbeat": "...", "answered": [...]}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInvoke {
    pub work: WorkItem,
    /// Absent on the first invoke of an item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation: Option<Resume>,
}

impl SessionInvoke {
    pub fn first(work: WorkItem) -> Self {
        SessionInvoke {
            work,
            continuation: None,
        }
    }
}
