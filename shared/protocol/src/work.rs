//! Work-queue objects (PROTOCOL.md §4.1, §4.3-§4.5, §5): the work item in every state, the
//! heartbeat response, the lease state inside a 412, queue stats, request bodies and list pages.
//!
//! Timestamps stay strings: `last_heartbeat` is a compare-and-set token that must be echoed
//! byte for byte, so no type here reformats a time the server sent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `expected_last_heartbeat` value that claims a lease nobody has heartbeated yet (§5.3).
pub const NO_HEARTBEAT: &str = "NO_HEARTBEAT";

/// The `data.type` of a work item that serves a session.
pub const WORK_DATA_SESSION: &str = "session";
/// The `data.type` of queue health probes, which the generated SDK types do not model (§4.1).
pub const WORK_DATA_HEALTHCHECK: &str = "healthcheck";

/// Lifecycle state of a work item (§6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkState {
    Queued,
    Starting,
    Active,
    Stopping,
    Stopped,
}

impl WorkState {
    /// `stopping` or `stopped`: the worker must shut the session down.
    pub fn is_winding_down(self) -> bool {
        matches!(self, WorkState::Stopping | WorkState::Stopped)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WorkState::Queued => "queued",
            WorkState::Starting => "starting",
            WorkState::Active => "active",
            WorkState::Stopping => "stopping",
            WorkState::Stopped => "stopped",
        }
    }
}

/// Constant `type` tag of a work item.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkKind {
    #[default]
    Work,
}

/// What a work item asks the worker to run. `kind` is kept as a string because the queue sends
/// types the published schema lacks (`healthcheck`); a worker skips anything but `session`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkData {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

impl WorkData {
    pub fn session(id: impl Into<String>) -> Self {
        WorkData {
            kind: WORK_DATA_SESSION.to_owned(),
            id: id.into(),
        }
    }

    pub fn is_session(&self) -> bool {
        self.kind == WORK_DATA_SESSION
    }
}

/// `BetaSelfHostedWork` (§4.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkItem {
    #[serde(rename = "type", default)]
    pub kind: WorkKind,
    pub id: String,
    pub environment_id: String,
    pub data: WorkData,
    pub state: WorkState,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Only populated by `poll`; decode with [`crate::secret::decode_sessions_token`].
    #[serde(default)]
    pub secret: Option<String>,
    pub created_at: String,
    #[serde(default)]
    pub acknowledged_at: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub latest_heartbeat_at: Option<String>,
    #[serde(default)]
    pub stop_requested_at: Option<String>,
    #[serde(default)]
    pub stopped_at: Option<String>,
}

/// Constant `type` tag of a heartbeat response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeartbeatKind {
    #[default]
    WorkHeartbeat,
}

/// `BetaSelfHostedWorkHeartbeatResponse` (§4.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    #[serde(rename = "type", default)]
    pub kind: HeartbeatKind,
    /// The stored heartbeat, or `""` when none is recorded; echo it verbatim next time.
    pub last_heartbeat: String,
    pub lease_extended: bool,
    pub state: WorkState,
    pub ttl_seconds: u64,
}

impl HeartbeatResponse {
    /// Whether this answer tells the worker to shut the session down (§6.4).
    pub fn ends_lease(&self) -> bool {
        self.state.is_winding_down() || !self.lease_extended
    }
}

/// `BetaWorkLeaseState`, found at `error.details.current_state` of a 412 (§4.4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseState {
    pub last_heartbeat: Option<String>,
    pub lease_extended: bool,
    pub state: WorkState,
    pub ttl_seconds: u64,
}

/// Constant `type` tag of queue stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueStatsKind {
    #[default]
    WorkQueueStats,
}

/// `BetaSelfHostedWorkQueueStats` (§4.5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    #[serde(rename = "type", default)]
    pub kind: QueueStatsKind,
    pub depth: u64,
    pub pending: u64,
    pub oldest_queued_at: Option<String>,
    pub workers_polling: Option<u64>,
}

/// Body of `POST .../stop` (§5.4); `{}` is a graceful stop.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
}

/// Body of `POST .../work/{id}` (§5.7): a merge patch where `null` deletes a key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateWorkRequest {
    pub metadata: BTreeMap<String, Option<String>>,
}

/// A cursor page (§2): pass `next_page` back as `?page=` for the next one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub next_page: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn poll_example_round_trips() {
        let wire = json!({"type":"work","id":"work_01Abc","environment_id":"env_01Xyz",
            "data":{"type":"session","id":"sesn_01Def"},
            "state":"queued","metadata":{},
            "secret":"eyJzZXNzaW9uc190b2tlbiI6InNrLWFudC1leGFtcGxlLXNlc3Npb24tdG9rZW4ifQ",
            "created_at":"2026-03-18T14:05:20Z","acknowledged_at":null,"started_at":null,
            "latest_heartbeat_at":null,"stop_requested_at":null,"stopped_at":null});
        let item: WorkItem = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(item.state, WorkState::Queued);
        assert!(item.data.is_session());
        assert_eq!(serde_json::to_value(&item).unwrap(), wire);
    }

    #[test]
    fn healthcheck_items_and_unknown_fields_are_accepted() {
        let item: WorkItem =
            serde_json::from_value(json!({"type":"work","id":"w","environment_id":"e",
            "data":{"type":"healthcheck","id":"hc_1"},"state":"queued","created_at":"t","later":1}))
            .unwrap();
        assert!(!item.data.is_session());
        assert_eq!(item.secret, None);
    }

    #[test]
    fn heartbeat_response_and_lease_state() {
        let hb: HeartbeatResponse = serde_json::from_value(json!({"type":"work_heartbeat",
            "last_heartbeat":"2026-03-18T14:05:21.123456+00:00","lease_extended":true,
            "state":"active","ttl_seconds":90}))
        .unwrap();
        assert!(!hb.ends_lease());
        assert_eq!(hb.last_heartbeat, "2026-03-18T14:05:21.123456+00:00");
        let stopping = HeartbeatResponse {
            state: WorkState::Stopping,
            ..hb
        };
        assert!(stopping.ends_lease());
        let lease: LeaseState = serde_json::from_value(json!({"last_heartbeat":null,
            "lease_extended":false,"state":"queued","ttl_seconds":0}))
        .unwrap();
        assert_eq!(lease.state, WorkState::Queued);
    }

    #[test]
    fn stats_stop_update_and_page_shapes() {
        let stats = QueueStats {
            kind: QueueStatsKind::WorkQueueStats,
            depth: 1,
            pending: 0,
            oldest_queued_at: None,
            workers_polling: Some(2),
        };
        assert_eq!(
            serde_json::to_value(&stats).unwrap(),
            json!({"type":"work_queue_stats","depth":1,"pending":0,"oldest_queued_at":null,"workers_polling":2})
        );
        assert_eq!(
            serde_json::to_value(StopRequest::default()).unwrap(),
            json!({})
        );
        let upd: UpdateWorkRequest =
            serde_json::from_value(json!({"metadata":{"k":"v","gone":null}})).unwrap();
        assert_eq!(upd.metadata.get("gone"), Some(&None));
        let page: Page<u32> = serde_json::from_value(json!({"data":[1,2]})).unwrap();
        assert_eq!(page.next_page, None);
    }

    #[test]
    fn unknown_state_is_an_error_not_a_panic() {
        assert!(serde_json::from_value::<WorkState>(json!("exploded")).is_err());
    }
}
