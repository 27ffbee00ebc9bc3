//! The thin webhook event (PROTOCOL.md §10.3): only a type and ids. It is a wake-up signal, so
//! `data.type` stays an open string: a receiver acknowledges types it does not act on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `data.type` that wakes a webhook-triggered worker.
pub const SESSION_STATUS_RUN_STARTED: &str = "session.status_run_started";

/// Constant top-level `type` tag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEventKind {
    #[default]
    Event,
}

/// `data` of a webhook event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WebhookEventData {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// Absent for organization-level events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    /// Present for `session.thread_*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_thread_id: Option<String>,
    /// `vault_id`, `enforcement_action_id`, and whatever comes next.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `{"type":"event","id":"whe_...","created_at":...,"data":{...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WebhookEvent {
    #[serde(rename = "type", default)]
    pub kind: WebhookEventKind,
    /// Equals the `webhook-id` header; dedupe on it.
    pub id: String,
    pub created_at: String,
    pub data: WebhookEventData,
}

impl WebhookEvent {
    pub fn is_run_started(&self) -> bool {
        self.data.kind == SESSION_STATUS_RUN_STARTED
    }
}

pub use crate::webhook_event_head::{WebhookEventDataHead, WebhookEventHead};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn protocol_examples_parse() {
        let body = r#"{"type":"event","id":"whe_01TESTVECTOR000000000000","created_at":"2026-03-18T14:05:22Z","data":{"type":"session.status_run_started","id":"sesn_01TESTSESSION0000000000","organization_id":"org_01TESTORG","workspace_id":"wrkspc_01TESTWS"}}"#;
        let ev: WebhookEvent = serde_json::from_str(body).unwrap();
        assert!(ev.is_run_started());
        assert_eq!(
            serde_json::to_value(&ev).unwrap(),
            serde_json::from_str::<Value>(body).unwrap()
        );
    }

    #[test]
    fn unknown_data_types_and_extra_ids_are_representable() {
        let wire = json!({"type":"event","id":"whe_2","created_at":"t",
            "data":{"type":"vault_credential.refresh_failed","id":"vcred_1","vault_id":"vlt_1",
                    "organization_id":"org_1"}});
        let ev: WebhookEvent = serde_json::from_value(wire.clone()).unwrap();
        assert!(!ev.is_run_started());
        assert_eq!(ev.data.extra.get("vault_id"), Some(&json!("vlt_1")));
        assert_eq!(ev.data.workspace_id, None);
        assert_eq!(serde_json::to_value(&ev).unwrap(), wire);
    }
}
