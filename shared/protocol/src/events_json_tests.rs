//! The direct decoder (`SessionEvent::from_json`) and the `Value`-free serializer must agree
//! with the `Value` path they replace on every input, valid or hostile.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

/// What the old path made of `text`: parse to a tree, then decide.
fn reference(text: &str) -> Option<SessionEvent> {
    serde_json::from_str::<Value>(text)
        .ok()
        .map(SessionEvent::from_value)
}

fn assert_same(text: &str) {
    let direct = SessionEvent::from_json(text).ok();
    assert_eq!(direct, reference(text), "decoders disagree on {text}");
}

#[test]
fn fixed_bodies_decode_as_through_a_value() {
    let big = "x\\n\\\"y".repeat(5000);
    for text in [
        r#"{"type":"agent.tool_use","id":"sevt_1","name":"bash","input":{"command":"ls"}}"#,
        r#"{"id":"sevt_1","name":"bash","input":{"a":1,"a":2},"type":"agent.tool_use"}"#,
        // Duplicate members: the tree keeps the last, the direct path must not differ.
        r#"{"type":"agent.tool_use","id":"sevt_1","id":"sevt_2","name":"bash"}"#,
        r#"{"type":"agent.tool_use","type":"user.tool_result","tool_use_id":"a"}"#,
        r#"{"type":"user.tool_result","type":"agent.tool_use","id":"a","name":"b"}"#,
        // Wrong member types and a tag that is not a string.
        r#"{"type":"agent.tool_use","id":5,"name":"bash"}"#,
        r#"{"type":7,"id":"sevt_1"}"#,
        r#"{"type":null}"#,
        r#"{"type":"user.tool_result","tool_use_id":"a","is_error":"no"}"#,
        r#"{"type":"user.tool_result","tool_use_id":"a","content":[{"type":"text"}]}"#,
        r#"{"type":"user.tool_result","tool_use_id":"a","content":[{"type":"video","x":1}]}"#,
        r#"{"type":"session.status_idle","id":"s","stop_reason":{"type":"end_turn"}}"#,
        r#"{"type":"session.status_idle","id":"s","stop_reason":{"type":"end_turn","type":"x"}}"#,
        r#"{"type":"session.thread_status_idle","id":"s"}"#,
        r#"{"type":"agent.thinking_v9","x":[1,{"y":null}]}"#,
        r#"{"no_type":true}"#,
        r#"{}"#,
        r#"[1,2]"#,
        // serde's structs also take a sequence of their fields: not an event here.
        r#"["session.status_terminated"]"#,
        r#" ["session.status_running"]"#,
        r#"["session.deleted"]"#,
        r#"["user.message"]"#,
        r#"["agent.tool_use","sevt_1","bash"]"#,
        r#"5"#,
        r#""agent.tool_use""#,
        r#"{"type":"agent.tool_use""#,
        r#"{"type":"user.tool_result","tool_use_id":"a","content":[{"type":"text","text":"\ud800"}]}"#,
        r#"{"type":"user.tool_result","tool_use_id":"a","processed_at":"t","extra":{"deep":[[[]]]}}"#,
    ] {
        assert_same(text);
    }
    assert_same(&format!(
        r#"{{"type":"user.tool_result","tool_use_id":"a","content":[{{"type":"text","text":"{big}"}}]}}"#
    ));
}

fn json_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("5".to_owned()),
        Just("-1.5e3".to_owned()),
        Just(r#""sevt_1""#.to_owned()),
        Just(r#""a\nb\u00e9""#.to_owned()),
        Just("[]".to_owned()),
        Just(r#"[{"type":"text","text":"hi"}]"#.to_owned()),
        Just(r#"[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AA=="}}]"#.to_owned()),
        Just(r#"{"type":"end_turn"}"#.to_owned()),
        Just(r#"{"type":"requires_action","event_ids":["a"]}"#.to_owned()),
        Just(r#"{"command":"ls"}"#.to_owned()),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("type"),
        Just("id"),
        Just("name"),
        Just("input"),
        Just("tool_use_id"),
        Just("custom_tool_use_id"),
        Just("is_error"),
        Just("content"),
        Just("processed_at"),
        Just("evaluated_permission"),
        Just("result"),
        Just("stop_reason"),
        Just("session_thread_id"),
        Just("unknown"),
    ]
    .prop_map(str::to_owned)
}

/// An object of `members` with the `type` tag inserted at `tag_at` (duplicates kept as given).
fn event_text(tag: &str, tag_at: usize, members: &[(String, String)]) -> String {
    let mut parts: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    parts.insert(tag_at.min(parts.len()), format!("\"type\":{tag}"));
    format!("{{{}}}", parts.join(","))
}

/// Every type the decoder knows, and one it does not.
const KNOWN_TYPES: [&str; 16] = [
    types::AGENT_TOOL_USE,
    types::AGENT_CUSTOM_TOOL_USE,
    types::USER_TOOL_RESULT,
    types::USER_CUSTOM_TOOL_RESULT,
    types::USER_TOOL_CONFIRMATION,
    types::USER_MESSAGE,
    types::SESSION_STATUS_RUNNING,
    types::SESSION_STATUS_IDLE,
    types::SESSION_STATUS_RESCHEDULED,
    types::SESSION_STATUS_TERMINATED,
    types::SESSION_DELETED,
    types::THREAD_STATUS_RUNNING,
    types::THREAD_STATUS_IDLE,
    types::THREAD_STATUS_RESCHEDULED,
    types::THREAD_STATUS_TERMINATED,
    "agent.message",
];

fn type_value() -> impl Strategy<Value = String> {
    proptest::sample::select(&KNOWN_TYPES[..]).prop_map(|t| format!("\"{t}\""))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Random objects over the members events use, with duplicates, wrong types and any order.
    #[test]
    fn random_events_decode_as_through_a_value(
        tag in type_value(),
        tag_at in 0usize..8,
        members in proptest::collection::vec((key(), json_value()), 0..8),
    ) {
        let text = event_text(&tag, tag_at, &members);
        let direct = SessionEvent::from_json(&text).ok();
        prop_assert_eq!(direct, reference(&text), "{}", text);
    }
}

/// The lean decoder: `from_json` with a result's content emptied, except that a result whose
/// content alone is malformed is still a result.
fn assert_lean(text: &str) {
    let lean = SessionEvent::from_json_without_result_content(text).ok();
    let full = SessionEvent::from_json(text).ok();
    let emptied = full.clone().map(|ev| match ev {
        SessionEvent::UserToolResult(mut r) => {
            r.content.clear();
            SessionEvent::UserToolResult(r)
        }
        SessionEvent::UserCustomToolResult(mut r) => {
            r.content.clear();
            SessionEvent::UserCustomToolResult(r)
        }
        other => other,
    });
    if lean == emptied {
        return;
    }
    // The one allowed difference: `full` kept a result as `Other` because of its content.
    let Some(SessionEvent::Other(raw)) = &full else {
        panic!("lean decoder differs on {text}: {lean:?} vs {emptied:?}");
    };
    let mut without = raw.clone();
    without.as_object_mut().map(|m| m.remove("content"));
    let again = SessionEvent::from_value(without);
    assert!(
        matches!(
            again,
            SessionEvent::UserToolResult(_) | SessionEvent::UserCustomToolResult(_)
        ),
        "lean made a result of something that is not one without its content: {text}"
    );
    assert_eq!(lean, Some(again), "{text}");
}

#[test]
fn lean_fixed_bodies() {
    for text in [
        r#"{"type":"user.tool_result","tool_use_id":"a","content":[{"type":"text","text":"x"}]}"#,
        r#"{"type":"user.tool_result","tool_use_id":"a","content":[{"type":"video"}]}"#,
        r#"{"type":"user.tool_result","tool_use_id":"a","content":5,"is_error":true,"id":"e"}"#,
        r#"{"type":"user.tool_result","tool_use_id":"a","content":[],"content":[]}"#,
        r#"{"type":"user.tool_result","custom_tool_use_id":"a"}"#,
        r#"{"type":"user.tool_result","tool_use_id":"a","custom_tool_use_id":5}"#,
        r#"{"type":"user.custom_tool_result","custom_tool_use_id":"a","content":"x"}"#,
        r#"{"type":"user.custom_tool_result","tool_use_id":"a"}"#,
        r#"{"type":"user.tool_result","tool_use_id":"a","is_error":"no","content":[]}"#,
        r#"{"type":"agent.tool_use","id":"sevt_1","name":"bash","input":{}}"#,
        r#"{"type":"user.tool_result","tool_use_id":"a","content":[1,"#,
    ] {
        assert_lean(text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn lean_random_events(
        tag in type_value(),
        tag_at in 0usize..8,
        members in proptest::collection::vec((key(), json_value()), 0..8),
    ) {
        assert_lean(&event_text(&tag, tag_at, &members));
    }
}

#[test]
fn serializing_without_a_value_writes_the_same_object() {
    let events = [
        json!({"type":"agent.tool_use","id":"sevt_01","name":"bash","input":{"command":"ls"},
            "evaluated_permission":"ask","session_thread_id":"sthr_1"}),
        json!({"type":"agent.custom_tool_use","id":"sevt_02","name":"lookup","input":{}}),
        json!({"type":"user.tool_result","id":"sevt_03","tool_use_id":"sevt_01","is_error":true,
            "content":[{"type":"text","text":"boom"}],"processed_at":"t"}),
        json!({"type":"user.custom_tool_result","custom_tool_use_id":"sevt_02","is_error":false,
            "content":[]}),
        json!({"type":"user.tool_confirmation","tool_use_id":"sevt_01","result":"deny",
            "deny_message":"no"}),
        json!({"type":"user.message","content":[{"type":"text","text":"hi"}]}),
        json!({"type":"session.status_running","id":"s1"}),
        json!({"type":"session.status_idle","id":"s2","stop_reason":{"type":"end_turn"}}),
        json!({"type":"session.deleted","id":"s3"}),
        json!({"type":"session.thread_status_idle","id":"s4","session_thread_id":"sthr_1"}),
        json!({"type":"session.thread_status_running","id":"s5","session_thread_id":"sthr_1"}),
        json!({"type":"session.thread_status_rescheduled","id":"s6","session_thread_id":"sthr_1"}),
        json!({"type":"session.thread_status_terminated","id":"s7","session_thread_id":"sthr_1"}),
        json!({"type":"session.status_rescheduled","id":"s8"}),
        json!({"type":"session.status_terminated","id":"s9"}),
        json!({"type":"agent.thinking_v9","x":[1]}),
    ];
    for wire in events {
        let ev = SessionEvent::from_value(wire.clone());
        let text = serde_json::to_string(&ev).unwrap();
        assert!(text.starts_with(r#"{"type":"#), "the tag leads: {text}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), wire);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), ev.to_value());
        assert_eq!(SessionEvent::from_json(&text).unwrap(), ev);
        assert_eq!(SessionEvent::from_json(&wire.to_string()).unwrap(), ev);
    }
}

#[test]
fn a_borrowed_result_serializes_like_the_event_it_stands_for() {
    let content = vec![
        ContentBlock::text("line\n\"quoted\""),
        ContentBlock::text(""),
    ];
    for (custom, is_error) in [(false, false), (false, true), (true, false)] {
        let borrowed = ResultToPost {
            custom,
            tool_use_id: "sevt_01",
            is_error,
            content: &content,
        };
        let owned = if custom {
            SessionEvent::UserCustomToolResult(CustomToolResultEvent {
                id: None,
                custom_tool_use_id: "sevt_01".into(),
                is_error,
                content: content.clone(),
                processed_at: None,
            })
        } else {
            SessionEvent::UserToolResult(ToolResultEvent {
                id: None,
                tool_use_id: "sevt_01".into(),
                is_error,
                content: content.clone(),
                processed_at: None,
            })
        };
        assert_eq!(
            serde_json::to_string(&borrowed).unwrap(),
            serde_json::to_string(&owned).unwrap()
        );
    }
}
