//! Session events (PROTOCOL.md §7.2-§7.6): the ones a worker consumes from the stream and the
//! history, and the results it posts.
//!
//! The event log carries many more types than a worker acts on, and newer servers add types at
//! any time. Decoding is therefore total: an unknown type, or a known type whose body does not
//! match this crate's idea of it, becomes [`SessionEvent::Other`] with the raw JSON. A stream
//! never fails because of one event.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::toolset::ContentBlock;

/// Event `type` strings.
pub mod types {
    pub const AGENT_TOOL_USE: &str = "agent.tool_use";
    pub const AGENT_CUSTOM_TOOL_USE: &str = "agent.custom_tool_use";
    pub const AGENT_MESSAGE: &str = "agent.message";
    pub const USER_MESSAGE: &str = "user.message";
    pub const USER_TOOL_RESULT: &str = "user.tool_result";
    pub const USER_CUSTOM_TOOL_RESULT: &str = "user.custom_tool_result";
    pub const USER_TOOL_CONFIRMATION: &str = "user.tool_confirmation";
    pub const USER_INTERRUPT: &str = "user.interrupt";
    pub const SESSION_STATUS_RUNNING: &str = "session.status_running";
    pub const SESSION_STATUS_IDLE: &str = "session.status_idle";
    pub const SESSION_STATUS_RESCHEDULED: &str = "session.status_rescheduled";
    pub const SESSION_STATUS_TERMINATED: &str = "session.status_terminated";
    pub const SESSION_DELETED: &str = "session.deleted";
    pub const THREAD_STATUS_RUNNING: &str = "session.thread_status_running";
    pub const THREAD_STATUS_IDLE: &str = "session.thread_status_idle";
    pub const THREAD_STATUS_RESCHEDULED: &str = "session.thread_status_rescheduled";
    pub const THREAD_STATUS_TERMINATED: &str = "session.thread_status_terminated";
    pub const SYSTEM_MESSAGE: &str = "system.message";
}

/// `stop_reason.type` values of `session.status_idle`.
pub mod stop_reasons {
    pub const END_TURN: &str = "end_turn";
    pub const REQUIRES_ACTION: &str = "requires_action";
    pub const RETRIES_EXHAUSTED: &str = "retries_exhausted";
    pub const BUDGET_REACHED: &str = "budget_reached";
    pub const REFUSAL: &str = "refusal";
}

/// The permission gate of a built-in tool call (§7.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    Allow,
    /// Hold until a `user.tool_confirmation`; unknown values are treated like this.
    Ask,
    Deny,
}

/// `agent.tool_use`: a built-in toolset call routed to the worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolUseEvent {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_at: Option<String>,
    /// `allow` | `ask` | `deny`, kept as sent; see [`ToolUseEvent::permission`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated_permission: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_thread_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toolset_name: Option<String>,
}

impl ToolUseEvent {
    /// Absent means allow; an unknown value is held like `ask` (§7.5, §15).
    pub fn permission(&self) -> Permission {
        match self.evaluated_permission.as_deref() {
            None | Some("allow") => Permission::Allow,
            Some("deny") => Permission::Deny,
            Some(_) => Permission::Ask,
        }
    }
}

/// `agent.custom_tool_use`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomToolUseEvent {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_thread_id: Option<String>,
}

/// `user.tool_result`; `id`/`processed_at` are absent when posting and set in the echo.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolResultEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub tool_use_id: String,
    #[serde(default)]
    pub is_error: bool,
    #[serde(default)]
    pub content: Vec<ContentBlock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_at: Option<String>,
}

/// `user.custom_tool_result`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomToolResultEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub custom_tool_use_id: String,
    #[serde(default)]
    pub is_error: bool,
    #[serde(default)]
    pub content: Vec<ContentBlock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_at: Option<String>,
}

/// `user.tool_confirmation`: the verdict on an `ask`-gated call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolConfirmationEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub tool_use_id: String,
    /// `allow` or `deny`; anything else is treated as deny.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_thread_id: Option<String>,
}

impl ToolConfirmationEvent {
    pub fn allows(&self) -> bool {
        self.result == "allow"
    }
}

/// `user.message`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserMessageEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub content: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_at: Option<String>,
}

/// `stop_reason` of `session.status_idle`; `kind` is kept open (see [`stop_reasons`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopReason {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_ids: Vec<String>,
}

impl StopReason {
    pub fn end_turn() -> Self {
        StopReason {
            kind: stop_reasons::END_TURN.to_owned(),
            event_ids: Vec::new(),
        }
    }

    pub fn requires_action(event_ids: Vec<String>) -> Self {
        StopReason {
            kind: stop_reasons::REQUIRES_ACTION.to_owned(),
            event_ids,
        }
    }
}

/// `session.status_idle`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusIdleEvent {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_at: Option<String>,
    pub stop_reason: StopReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_details: Option<Value>,
}

/// Session status changes without a payload: running, rescheduled, terminated, deleted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusEvent {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_at: Option<String>,
}

/// `session.thread_status_*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThreadStatusEvent {
    pub id: String,
    pub session_thread_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_at: Option<String>,
}

/// Any session event. Serializes with its `type` tag; deserializing never fails on a JSON object.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionEvent {
    AgentToolUse(ToolUseEvent),
    AgentCustomToolUse(CustomToolUseEvent),
    UserToolResult(ToolResultEvent),
    UserCustomToolResult(CustomToolResultEvent),
    UserToolConfirmation(ToolConfirmationEvent),
    UserMessage(UserMessageEvent),
    StatusRunning(StatusEvent),
    StatusIdle(StatusIdleEvent),
    StatusRescheduled(StatusEvent),
    StatusTerminated(StatusEvent),
    Deleted(StatusEvent),
    ThreadStatusRunning(ThreadStatusEvent),
    ThreadStatusIdle(ThreadStatusEvent),
    ThreadStatusRescheduled(ThreadStatusEvent),
    ThreadStatusTerminated(ThreadStatusEvent),
    /// Any other type (or a malformed known one), kept verbatim.
    Other(Value),
}

impl SessionEvent {
    /// The wire `type`.
    pub fn event_type(&self) -> &str {
        use SessionEvent::*;
        match self {
            AgentToolUse(_) => types::AGENT_TOOL_USE,
            AgentCustomToolUse(_) => types::AGENT_CUSTOM_TOOL_USE,
            UserToolResult(_) => types::USER_TOOL_RESULT,
            UserCustomToolResult(_) => types::USER_CUSTOM_TOOL_RESULT,
            UserToolConfirmation(_) => types::USER_TOOL_CONFIRMATION,
            UserMessage(_) => types::USER_MESSAGE,
            StatusRunning(_) => types::SESSION_STATUS_RUNNING,
            StatusIdle(_) => types::SESSION_STATUS_IDLE,
            StatusRescheduled(_) => types::SESSION_STATUS_RESCHEDULED,
            StatusTerminated(_) => types::SESSION_STATUS_TERMINATED,
            Deleted(_) => types::SESSION_DELETED,
            ThreadStatusRunning(_) => types::THREAD_STATUS_RUNNING,
            ThreadStatusIdle(_) => types::THREAD_STATUS_IDLE,
            ThreadStatusRescheduled(_) => types::THREAD_STATUS_RESCHEDULED,
            ThreadStatusTerminated(_) => types::THREAD_STATUS_TERMINATED,
            Other(v) => v.get("type").and_then(Value::as_str).unwrap_or(""),
        }
    }

    /// The event id (`sevt_...`), when the event has one.
    pub fn id(&self) -> Option<&str> {
        use SessionEvent::*;
        match self {
            AgentToolUse(e) => Some(&e.id),
            AgentCustomToolUse(e) => Some(&e.id),
            UserToolResult(e) => e.id.as_deref(),
            UserCustomToolResult(e) => e.id.as_deref(),
            UserToolConfirmation(e) => e.id.as_deref(),
            UserMessage(e) => e.id.as_deref(),
            StatusRunning(e) | StatusRescheduled(e) | StatusTerminated(e) | Deleted(e) => {
                Some(&e.id)
            }
            StatusIdle(e) => Some(&e.id),
            ThreadStatusRunning(e)
            | ThreadStatusIdle(e)
            | ThreadStatusRescheduled(e)
            | ThreadStatusTerminated(e) => Some(&e.id),
            Other(v) => v.get("id").and_then(Value::as_str),
        }
    }

    /// The JSON object, `type` included.
    pub fn to_value(&self) -> Value {
        fn tagged<T: Serialize>(ty: &str, inner: &T) -> Value {
            let mut v = serde_json::to_value(inner).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut v {
                // Put `type` first for readable logs; serde_json keeps insertion order only
                // with `preserve_order`, so this is cosmetic at best.
                map.insert("type".to_owned(), Value::String(ty.to_owned()));
            }
            v
        }
        use SessionEvent::*;
        let ty = self.event_type();
        match self {
            AgentToolUse(e) => tagged(ty, e),
            AgentCustomToolUse(e) => tagged(ty, e),
            UserToolResult(e) => tagged(ty, e),
            UserCustomToolResult(e) => tagged(ty, e),
            UserToolConfirmation(e) => tagged(ty, e),
            UserMessage(e) => tagged(ty, e),
            StatusRunning(e) | StatusRescheduled(e) | StatusTerminated(e) | Deleted(e) => {
                tagged(ty, e)
            }
            StatusIdle(e) => tagged(ty, e),
            ThreadStatusRunning(e)
            | ThreadStatusIdle(e)
            | ThreadStatusRescheduled(e)
            | ThreadStatusTerminated(e) => tagged(ty, e),
            Other(v) => v.clone(),
        }
    }

    /// Decodes one event; never fails (see the module docs).
    pub fn from_value(v: Value) -> Self {
        fn typed<T: serde::de::DeserializeOwned>(
            v: Value,
            wrap: fn(T) -> SessionEvent,
        ) -> SessionEvent {
            match T::deserialize(&v) {
                Ok(t) => wrap(t),
                Err(_) => SessionEvent::Other(v),
            }
        }
        let ty = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        match ty.as_str() {
            types::AGENT_TOOL_USE => typed(v, SessionEvent::AgentToolUse),
            types::AGENT_CUSTOM_TOOL_USE => typed(v, SessionEvent::AgentCustomToolUse),
            types::USER_TOOL_RESULT => typed(v, SessionEvent::UserToolResult),
            types::USER_CUSTOM_TOOL_RESULT => typed(v, SessionEvent::UserCustomToolResult),
            types::USER_TOOL_CONFIRMATION => typed(v, SessionEvent::UserToolConfirmation),
            types::USER_MESSAGE => typed(v, SessionEvent::UserMessage),
            types::SESSION_STATUS_RUNNING => typed(v, SessionEvent::StatusRunning),
            types::SESSION_STATUS_IDLE => typed(v, SessionEvent::StatusIdle),
            types::SESSION_STATUS_RESCHEDULED => typed(v, SessionEvent::StatusRescheduled),
            types::SESSION_STATUS_TERMINATED => typed(v, SessionEvent::StatusTerminated),
            types::SESSION_DELETED => typed(v, SessionEvent::Deleted),
            types::THREAD_STATUS_RUNNING => typed(v, SessionEvent::ThreadStatusRunning),
            types::THREAD_STATUS_IDLE => typed(v, SessionEvent::ThreadStatusIdle),
            types::THREAD_STATUS_RESCHEDULED => typed(v, SessionEvent::ThreadStatusRescheduled),
            types::THREAD_STATUS_TERMINATED => typed(v, SessionEvent::ThreadStatusTerminated),
            _ => SessionEvent::Other(v),
        }
    }
}

impl SessionEvent {
    /// Decodes one event from its JSON text as `from_value` decodes the parsed value, without
    /// building a `Value` first: the `type` is read in a scan that skips everything else, then
    /// the body is decoded straight into its struct. A tool result's content can be hundreds
    /// of KiB, and this runs for every streamed event (our own results come back as echoes),
    /// so the intermediate tree and its second copy were most of a round trip's CPU. Anything
    /// the direct path refuses (a duplicate key, a field of the wrong type, a `type` that is
    /// not a string) goes through `from_value`, which decides; so does anything that is not an
    /// object, because serde's derived structs also accept an array of their fields
    /// (`["session.deleted"]` would otherwise become a deletion). The one difference: members
    /// the event's struct does not have are only checked for syntax here, so a body whose
    /// unknown member holds a lone surrogate, a number beyond `f64` or nesting deeper than
    /// serde_json's limit is decoded where the `Value` path refused it whole.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        if !text.trim_start().starts_with('{') {
            return SessionEvent::from_json_slow(text);
        }
        fn typed<T: serde::de::DeserializeOwned>(
            text: &str,
            wrap: fn(T) -> SessionEvent,
        ) -> Result<SessionEvent, serde_json::Error> {
            match serde_json::from_str::<T>(text) {
                Ok(t) => Ok(wrap(t)),
                Err(_) => SessionEvent::from_json_slow(text),
            }
        }
        let Ok(head) = serde_json::from_str::<Head<'_>>(text) else {
            return SessionEvent::from_json_slow(text);
        };
        match head.ty.as_ref() {
            types::AGENT_TOOL_USE => typed(text, SessionEvent::AgentToolUse),
            types::AGENT_CUSTOM_TOOL_USE => typed(text, SessionEvent::AgentCustomToolUse),
            types::USER_TOOL_RESULT => typed(text, SessionEvent::UserToolResult),
            types::USER_CUSTOM_TOOL_RESULT => typed(text, SessionEvent::UserCustomToolResult),
            types::USER_TOOL_CONFIRMATION => typed(text, SessionEvent::UserToolConfirmation),
            types::USER_MESSAGE => typed(text, SessionEvent::UserMessage),
            types::SESSION_STATUS_RUNNING => typed(text, SessionEvent::StatusRunning),
            types::SESSION_STATUS_IDLE => typed(text, SessionEvent::StatusIdle),
            types::SESSION_STATUS_RESCHEDULED => typed(text, SessionEvent::StatusRescheduled),
            types::SESSION_STATUS_TERMINATED => typed(text, SessionEvent::StatusTerminated),
            types::SESSION_DELETED => typed(text, SessionEvent::Deleted),
            types::THREAD_STATUS_RUNNING => typed(text, SessionEvent::ThreadStatusRunning),
            types::THREAD_STATUS_IDLE => typed(text, SessionEvent::ThreadStatusIdle),
            types::THREAD_STATUS_RESCHEDULED => typed(text, SessionEvent::ThreadStatusRescheduled),
            types::THREAD_STATUS_TERMINATED => typed(text, SessionEvent::ThreadStatusTerminated),
            _ => SessionEvent::from_json_slow(text),
        }
    }

    /// Like [`from_json`](Self::from_json), except that a tool result's `content` is skipped
    /// (scanned, not decoded) and comes back empty. A worker reads its own results back on
    /// the event stream and needs only whose answer each one is; decoding the content of a
    /// result of hundreds of KiB a second time is pure cost. A result whose content is not
    /// valid `ContentBlock`s is still a result here (the call it answers is answered), where
    /// `from_json` would keep it as `Other`; every other member decides as in `from_json`.
    pub fn from_json_without_result_content(text: &str) -> Result<Self, serde_json::Error> {
        /// A result's members, with `content` skipped (a present but malformed member list,
        /// such as a duplicate key, still fails and goes the full way).
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            id: Option<String>,
            #[serde(default)]
            tool_use_id: Option<String>,
            #[serde(default)]
            custom_tool_use_id: Option<String>,
            #[serde(default)]
            is_error: bool,
            #[serde(default)]
            #[allow(dead_code)]
            // scanned so that it is validated as JSON, then dropped
            content: serde::de::IgnoredAny,
            #[serde(default)]
            processed_at: Option<String>,
        }
        // Whatever the lean path cannot take goes the full way, and loses its content there.
        let full = |text: &str| {
            SessionEvent::from_json(text).map(|ev| match ev {
                SessionEvent::UserToolResult(mut r) => {
                    r.content = Vec::new();
                    SessionEvent::UserToolResult(r)
                }
                SessionEvent::UserCustomToolResult(mut r) => {
                    r.content = Vec::new();
                    SessionEvent::UserCustomToolResult(r)
                }
                other => other,
            })
        };
        let custom = match serde_json::from_str::<Head<'_>>(text) {
            Ok(h) if h.ty == types::USER_TOOL_RESULT => false,
            Ok(h) if h.ty == types::USER_CUSTOM_TOOL_RESULT => true,
            _ => return full(text),
        };
        let Ok(lean) = serde_json::from_str::<Answer>(text) else {
            return full(text);
        };
        Ok(match (custom, lean.tool_use_id, lean.custom_tool_use_id) {
            (false, Some(tool_use_id), _) => SessionEvent::UserToolResult(ToolResultEvent {
                id: lean.id,
                tool_use_id,
                is_error: lean.is_error,
                content: Vec::new(),
                processed_at: lean.processed_at,
            }),
            (true, _, Some(custom_tool_use_id)) => {
                SessionEvent::UserCustomToolResult(CustomToolResultEvent {
                    id: lean.id,
                    custom_tool_use_id,
                    is_error: lean.is_error,
                    content: Vec::new(),
                    processed_at: lean.processed_at,
                })
            }
            _ => return full(text),
        })
    }

    fn from_json_slow(text: &str) -> Result<Self, serde_json::Error> {
        Ok(SessionEvent::from_value(serde_json::from_str(text)?))
    }
}

/// Only an event's tag; serde skips every other member without allocating.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    ty: std::borrow::Cow<'a, str>,
}

/// An event body with its `type` tag in front, serialized without an intermediate `Value`.
#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    #[serde(rename = "type")]
    ty: &'a str,
    #[serde(flatten)]
    body: &'a T,
}

impl Serialize for SessionEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use SessionEvent::*;
        let ty = self.event_type();
        match self {
            AgentToolUse(e) => Tagged { ty, body: e }.serialize(s),
            AgentCustomToolUse(e) => Tagged { ty, body: e }.serialize(s),
            UserToolResult(e) => Tagged { ty, body: e }.serialize(s),
            UserCustomToolResult(e) => Tagged { ty, body: e }.serialize(s),
            UserToolConfirmation(e) => Tagged { ty, body: e }.serialize(s),
            UserMessage(e) => Tagged { ty, body: e }.serialize(s),
            StatusRunning(e) | StatusRescheduled(e) | StatusTerminated(e) | Deleted(e) => {
                Tagged { ty, body: e }.serialize(s)
            }
            StatusIdle(e) => Tagged { ty, body: e }.serialize(s),
            ThreadStatusRunning(e)
            | ThreadStatusIdle(e)
            | ThreadStatusRescheduled(e)
            | ThreadStatusTerminated(e) => Tagged { ty, body: e }.serialize(s),
            Other(v) => v.serialize(s),
        }
    }
}

/// A tool result to post, borrowing its content: serializes exactly like the
/// [`SessionEvent::UserToolResult`] (or `UserCustomToolResult`) it stands for, without copying a
/// result that may be hundreds of KiB once per attempt.
#[derive(Clone, Copy, Debug)]
pub struct ResultToPost<'a> {
    pub custom: bool,
    pub tool_use_id: &'a str,
    pub is_error: bool,
    pub content: &'a [ContentBlock],
}

impl Serialize for ResultToPost<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let (ty, id_key) = if self.custom {
            (types::USER_CUSTOM_TOOL_RESULT, "custom_tool_use_id")
        } else {
            (types::USER_TOOL_RESULT, "tool_use_id")
        };
        let mut st = s.serialize_struct("ResultToPost", 4)?;
        st.serialize_field("type", ty)?;
        st.serialize_field(id_key, self.tool_use_id)?;
        st.serialize_field("is_error", &self.is_error)?;
        st.serialize_field("content", self.content)?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for SessionEvent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(SessionEvent::from_value(Value::deserialize(d)?))
    }
}

/// Body of `POST /v1/sessions/{id}/events` (§7.6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendEventsRequest {
    pub events: Vec<SessionEvent>,
}

/// Answer of `POST /v1/sessions/{id}/events`: the events echoed with `processed_at` set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendEventsResponse {
    pub data: Vec<SessionEvent>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_use_example_round_trips() {
        let wire = json!({"type":"agent.tool_use","id":"sevt_01","name":"bash",
            "input":{"command":"ls"},"processed_at":"2026-05-11T12:00:00Z"});
        let ev: SessionEvent = serde_json::from_value(wire.clone()).unwrap();
        match &ev {
            SessionEvent::AgentToolUse(t) => {
                assert_eq!(t.name, "bash");
                assert_eq!(t.permission(), Permission::Allow);
            }
            other => panic!("decoded as {other:?}"),
        }
        assert_eq!(ev.id(), Some("sevt_01"));
        assert_eq!(serde_json::to_value(&ev).unwrap(), wire);
    }

    #[test]
    fn results_round_trip_as_posted() {
        let wire = json!({"events":[{"type":"user.tool_result","tool_use_id":"sevt_01",
            "is_error":false,"content":[{"type":"text","text":"total 4"}]},
            {"type":"user.custom_tool_result","custom_tool_use_id":"sevt_02",
            "is_error":false,"content":[{"type":"text","text":"Order 42: shipped"}]}]});
        let req: SendEventsRequest = serde_json::from_value(wire.clone()).unwrap();
        assert!(matches!(req.events[0], SessionEvent::UserToolResult(_)));
        assert!(matches!(
            req.events[1],
            SessionEvent::UserCustomToolResult(_)
        ));
        assert_eq!(serde_json::to_value(&req).unwrap(), wire);
    }

    #[test]
    fn unknown_and_malformed_events_are_kept_raw() {
        let unknown = json!({"type":"agent.thinking_v9","id":"sevt_9","x":[1]});
        let ev = SessionEvent::from_value(unknown.clone());
        assert_eq!(ev, SessionEvent::Other(unknown.clone()));
        assert_eq!(ev.event_type(), "agent.thinking_v9");
        assert_eq!(serde_json::to_value(&ev).unwrap(), unknown);
        // A known type missing a required field must not fail the stream either.
        let broken = json!({"type":"agent.tool_use","id":"sevt_3"});
        assert!(matches!(
            SessionEvent::from_value(broken),
            SessionEvent::Other(_)
        ));
        let page: Vec<SessionEvent> =
            serde_json::from_value(json!([{"type":"x"}, 5, {"no_type":true}])).unwrap();
        assert_eq!(page.len(), 3);
    }

    #[test]
    fn idle_confirmation_threads_and_permissions() {
        let idle = SessionEvent::from_value(json!({"type":"session.status_idle","id":"sevt_4",
            "processed_at":"t","stop_reason":{"type":"requires_action","event_ids":["sevt_1"]}}));
        match idle {
            SessionEvent::StatusIdle(i) => {
                assert_eq!(
                    i.stop_reason,
                    StopReason::requires_action(vec!["sevt_1".into()])
                )
            }
            other => panic!("{other:?}"),
        }
        let conf = SessionEvent::from_value(json!({"type":"user.tool_confirmation","id":"sevt_5",
            "tool_use_id":"sevt_1","result":"allow"}));
        assert!(matches!(conf, SessionEvent::UserToolConfirmation(ref c) if c.allows()));
        let th = SessionEvent::from_value(json!({"type":"session.thread_status_terminated",
            "id":"sevt_6","session_thread_id":"sthr_1"}));
        assert!(matches!(th, SessionEvent::ThreadStatusTerminated(_)));
        for (p, want) in [
            ("deny", Permission::Deny),
            ("ask", Permission::Ask),
            ("maybe", Permission::Ask),
        ] {
            let t: ToolUseEvent = serde_json::from_value(json!({"id":"a","name":"bash",
                "input":{},"evaluated_permission":p}))
            .unwrap();
            assert_eq!(t.permission(), want);
        }
    }
}

#[cfg(test)]
#[path = "events_json_tests.rs"]
mod json_tests;
