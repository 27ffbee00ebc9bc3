//! What the scripted agent reports: every step with pass/fail, a human-readable detail and
//! the emit-to-result latency, per script and for a whole run.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepReport {
    pub index: usize,
    pub step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The event id the step emitted (`sevt_...`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    pub passed: bool,
    pub detail: String,
    /// Emit (or confirmation, for `ask` calls) to result, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// The same in microseconds, from devplane's own instants: just before the call's event is
    /// emitted, and when the accepted result is stored (no wake-up of the agent included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    /// When the step began, in microseconds since the script's session was created: where in
    /// a run a slow call fell (all sessions of a run start together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_us: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScriptReport {
    pub name: String,
    pub passed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_id: Option<String>,
    pub steps: Vec<StepReport>,
    /// Results posts that were rejected, and results accepted per tool-use id, for this session.
    pub rejected_posts: u64,
    pub result_attempts: std::collections::BTreeMap<String, u32>,
    /// The memory stores the session attached, at the end: store id -> path -> content.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub memory_stores:
        std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    pub passed: bool,
    pub scripts: Vec<ScriptReport>,
}

impl RunReport {
    pub fn new(scripts: Vec<ScriptReport>) -> Self {
        RunReport {
            passed: scripts.iter().all(|s| s.passed),
            scripts,
        }
    }
}
