//! What a serving invocation hands its successor besides the lease (DESIGN.md "Lambda deadline
//! and continuation"): results it computed but could not post, and the answered ids the
//! successor could not yet learn from the session's history.
//!
//! Nothing runs twice: a call whose result travels here is posted by the successor, never run
//! again; a call answered by a posted result is either in the history (the successor reads it
//! before running anything) or, when its result event was not seen yet, among the carried
//! answered ids.

use hands_protocol::toolset::ToolOutput;
use serde::{Deserialize, Serialize};

use crate::ledger::{Call, CallKind};
use crate::runner::Parked;

/// At most this many answered ids travel in a continuation: the ids whose result event was
/// not seen yet (normally the last one or two) plus, as a hedge, the newest
/// [`crate::ledger::ALWAYS_CARRIED`] answered ones. The bound is met only when the stream is
/// not echoing results at all; the newest ids are kept (the oldest have had the longest to
/// reach the history) and the cut is logged.
pub const MAX_CARRIED_ANSWERED: usize = 256;

/// One result a predecessor could not post. Exactly one of `output` (inline) and `stored` (a
/// key in the workspace bucket, for results too big for the invoke payload) is set when it is
/// sent; the receiver resolves `stored` back into `output` before serving.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedResult {
    pub tool_use_id: String,
    pub kind: CallKind,
    /// The tool's name, for the logs.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<ToolOutput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<String>,
}

impl CarriedResult {
    pub fn inline(call: &Call, output: ToolOutput) -> Self {
        CarriedResult {
            tool_use_id: call.id.clone(),
            kind: call.kind,
            name: call.name.clone(),
            output: Some(output),
            stored: None,
        }
    }
}

/// Results ready to post, as the runner keeps them; entries without an inline output (not
/// resolved from storage) are left out, so their calls run again, and that is logged.
pub(crate) fn parked_from(results: Vec<CarriedResult>) -> Parked {
    let mut parked = Parked::new();
    for r in results {
        let Some(output) = r.output else {
            tracing::warn!(tool_use_id = %r.tool_use_id, stored = ?r.stored,
                "a carried-over result came without its content; the call will run again");
            continue;
        };
        let call = Call {
            id: r.tool_use_id,
            kind: r.kind,
            name: r.name,
            input: serde_json::Value::Null,
        };
        parked.insert(call.id.clone(), (call, output));
    }
    parked
}

/// The parked results to carry on, oldest id first (ids sort by creation).
pub(crate) fn carried_from(parked: Parked) -> Vec<CarriedResult> {
    let mut out: Vec<CarriedResult> = parked
        .into_values()
        .map(|(call, output)| CarriedResult::inline(&call, output))
        .collect();
    out.sort_by(|a, b| a.tool_use_id.cmp(&b.tool_use_id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carried_results_round_trip_and_unresolved_ones_are_dropped() {
        let call = Call {
            id: "sevt_b".into(),
            kind: CallKind::Custom,
            name: "lookup".into(),
            input: serde_json::Value::Null,
        };
        let r = CarriedResult::inline(&call, ToolOutput::ok("found"));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["kind"], "custom");
        assert!(v.get("stored").is_none());
        assert_eq!(serde_json::from_value::<CarriedResult>(v).unwrap(), r);
        let unresolved = CarriedResult {
            tool_use_id: "sevt_a".into(),
            output: None,
            stored: Some("workspaces/s/results/sevt_a.json".into()),
            ..r.clone()
        };
        let parked = parked_from(vec![unresolved, r.clone()]);
        assert_eq!(parked.len(), 1);
        assert_eq!(parked["sevt_b"].0.kind, CallKind::Custom);
        assert_eq!(carried_from(parked), vec![r]);
    }
}
