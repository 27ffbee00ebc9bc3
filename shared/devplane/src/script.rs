//! The session-script format the scripted agent runs (documented for authors in
//! `events/sessions/README.md`). A script creates one session, optionally installs fault
//! switches, then plays steps: tool calls with expectations on the worker's answer,
//! confirmations, idles, terminations, waits, and a final check that the worker released the
//! item.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::DevplaneError;
use crate::faults::Faults;
use crate::sessions::SessionSpec;

/// A whole script.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub session: SessionSpec,
    /// Memories put into stores before the session is created: store id -> path -> content.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub memories: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    /// Fault switches active while this script runs (on top of the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faults: Option<Faults>,
    /// How long to wait for a worker to attach (open the session's stream).
    #[serde(default = "default_start_timeout_ms")]
    pub start_timeout_ms: u64,
    /// Default bound for a result to arrive.
    #[serde(default = "default_result_timeout_ms")]
    pub result_timeout_ms: u64,
    pub steps: Vec<Step>,
}

fn default_start_timeout_ms() -> u64 {
    60_000
}
fn default_result_timeout_ms() -> u64 {
    30_000
}

/// What a tool call's answer must look like. Text checks look at the result's text blocks
/// joined by `\n`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub text_contains: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub text_not_contains: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_equals: Option<String>,
    /// A regular expression (Rust `regex` syntax) the text must match somewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_matches: Option<String>,
    /// The worker must post nothing for this call within this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_result_within_ms: Option<u64>,
}

/// One step. Tool calls carry a `label` so later steps can refer to them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Emit `agent.tool_use`. With `permission: "ask"` the result is awaited by the `confirm`
    /// step naming this label, not here.
    ToolUse {
        #[serde(default)]
        label: Option<String>,
        name: String,
        #[serde(default)]
        input: Value,
        #[serde(default)]
        permission: Option<String>,
        #[serde(default)]
        thread: Option<String>,
        #[serde(default)]
        expect: Expect,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// Emit `agent.custom_tool_use`.
    CustomToolUse {
        #[serde(default)]
        label: Option<String>,
        name: String,
        #[serde(default)]
        input: Value,
        #[serde(default)]
        thread: Option<String>,
        #[serde(default)]
        expect: Expect,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// Emit `user.tool_confirmation` for an `ask` call, then check that call's expectation.
    Confirm {
        tool_use: String,
        result: String,
        #[serde(default)]
        deny_message: Option<String>,
    },
    /// Emit `session.status_idle` (`end_turn`, `requires_action` with the labels' ids, ...).
    Idle {
        stop_reason: String,
        #[serde(default)]
        event_ids: Vec<String>,
    },
    /// Emit `session.status_running` (fires the webhook).
    Running {},
    /// Emit `session.thread_status_running` for a thread.
    ThreadRunning { thread: String },
    /// Emit `session.thread_status_terminated` for a thread.
    ThreadTerminated { thread: String },
    /// Emit `session.status_terminated`.
    Terminated {},
    /// Emit `session.deleted`.
    Deleted {},
    /// Sleep.
    Wait { ms: u64 },
    /// Cut the worker's SSE connections now.
    DropStream {},
    /// The session's work item must reach `stopped` through a force stop within `within_ms`.
    ExpectStopped { within_ms: u64 },
}

impl Step {
    pub fn kind(&self) -> &'static str {
        match self {
            Step::ToolUse { .. } => "tool_use",
            Step::CustomToolUse { .. } => "custom_tool_use",
            Step::Confirm { .. } => "confirm",
            Step::Idle { .. } => "idle",
            Step::Running {} => "running",
            Step::ThreadRunning { .. } => "thread_running",
            Step::ThreadTerminated { .. } => "thread_terminated",
            Step::Terminated {} => "terminated",
            Step::Deleted {} => "deleted",
            Step::Wait { .. } => "wait",
            Step::DropStream {} => "drop_stream",
            Step::ExpectStopped { .. } => "expect_stopped",
        }
    }
}

impl Script {
    pub fn from_json(text: &str, origin: &str) -> Result<Script, DevplaneError> {
        let script: Script =
            serde_json::from_str(text).map_err(|e| DevplaneError::InvalidScript {
                path: origin.to_owned(),
                message: e.to_string(),
            })?;
        script.check(origin)?;
        Ok(script)
    }

    pub fn load(path: &Path) -> Result<Script, DevplaneError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| DevplaneError::ReadScript {
            path: origin.clone(),
            source,
        })?;
        Script::from_json(&text, &origin)
    }

    /// Static checks: labels unique, references resolve, regexes compile.
    fn check(&self, origin: &str) -> Result<(), DevplaneError> {
        let bad = |message: String| DevplaneError::InvalidScript {
            path: origin.to_owned(),
            message,
        };
        let mut labels = std::collections::HashSet::new();
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                Step::ToolUse { label, expect, .. } | Step::CustomToolUse { label, expect, .. } => {
                    if let Some(l) = label
                        && !labels.insert(l.clone())
                    {
                        return Err(bad(format!("step {i}: duplicate label {l:?}")));
                    }
                    if let Some(re) = &expect.text_matches {
                        regex::Regex::new(re)
                            .map_err(|e| bad(format!("step {i}: bad regex: {e}")))?;
                    }
                }
                Step::Confirm { tool_use, .. } if !labels.contains(tool_use) => {
                    return Err(bad(format!(
                        "step {i}: confirm names unknown label {tool_use:?}"
                    )));
                }
                Step::Idle { event_ids, .. } => {
                    if let Some(l) = event_ids.iter().find(|l| !labels.contains(*l)) {
                        return Err(bad(format!("step {i}: idle names unknown label {l:?}")));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_steps_and_rejects_bad_references() {
        let ok = r#"{"name":"t","steps":[
            {"step":"tool_use","label":"a","name":"bash","input":{"command":"ls"},"permission":"ask",
             "expect":{"is_error":false,"text_matches":"^x"}},
            {"step":"confirm","tool_use":"a","result":"allow"},
            {"step":"idle","stop_reason":"requires_action","event_ids":["a"]},
            {"step":"expect_stopped","within_ms":100}]}"#;
        let s = Script::from_json(ok, "t").unwrap();
        assert_eq!(s.steps.len(), 4);
        assert_eq!(s.result_timeout_ms, 30_000);
        let unknown_label =
            r#"{"name":"t","steps":[{"step":"confirm","tool_use":"zz","result":"allow"}]}"#;
        assert!(Script::from_json(unknown_label, "t").is_err());
        let bad_regex = r#"{"name":"t","steps":[{"step":"tool_use","name":"bash","expect":{"text_matches":"("}}]}"#;
        assert!(Script::from_json(bad_regex, "t").is_err());
        let unknown_step = r#"{"name":"t","steps":[{"step":"dance"}]}"#;
        assert!(Script::from_json(unknown_step, "t").is_err());
        let typo = r#"{"name":"t","steps":[{"step":"wait","ms":1,"extra":2}]}"#;
        assert!(Script::from_json(typo, "t").is_err());
    }
}
