//! Sessions (PROTOCOL.md §7): the session object, its append-only event log, history listing
//! with cursor pagination, and result posting with the validations the real API applies
//! (unknown or already-answered tool-use ids, `user.message` while tool calls are open).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hands_protocol::error::{ErrorType, codes};
use hands_protocol::events::{SessionEvent, types};
use hands_protocol::session::SkillRef;
use hands_protocol::work::{WorkData, WorkState};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::auth::{self, Accepts};
use crate::body::parse_json;
use crate::error::{ApiError, DevplaneError};
use crate::faults::ResetMode;
use crate::ids;
use crate::query::QueryParams;
use crate::state::{AppState, SessionRecord, Store, ToolCall};

/// What to create a session with (the scripted agent's `session` block, §12.7).
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// `{"skill_id": "...", "version": "latest"}`; `type` defaults to `custom`.
    #[serde(default)]
    pub skills: Vec<SkillSpec>,
    /// Memory-store resources, raw (`{"type":"memory_store",...}`).
    #[serde(default)]
    pub resources: Vec<Value>,
}

#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SkillSpec {
    #[serde(rename = "type", default = "custom")]
    pub kind: String,
    pub skill_id: String,
    #[serde(default = "latest")]
    pub version: String,
}

fn custom() -> String {
    "custom".into()
}
fn latest() -> String {
    "latest".into()
}

/// Creates a session on the configured environment and enqueues its work item.
pub fn create_session(st: &AppState, spec: &SessionSpec) -> Result<String, DevplaneError> {
    for s in &spec.skills {
        if !crate::skills::exists(&s.skill_id) {
            return Err(DevplaneError::UnknownSkill(s.skill_id.clone()));
        }
    }
    let id = ids::new_id("sesn");
    let now = ids::now_rfc3339();
    let (tx, _) = broadcast::channel(4096);
    let (drop_gen, _) = watch::channel(0);
    let env = st.config.environment_id.clone();
    let mut store = st.lock();
    store.sessions.insert(
        id.clone(),
        SessionRecord {
            id: id.clone(),
            environment_id: env.clone(),
            status: "idle".into(),
            created_at: now.clone(),
            updated_at: now,
            title: spec.title.clone(),
            metadata: spec.metadata.clone(),
            skills: spec
                .skills
                .iter()
                .map(|s| SkillRef {
                    kind: s.kind.clone(),
                    skill_id: s.skill_id.clone(),
                    version: s.version.clone(),
                })
                .collect(),
            tools: vec![json!({"type":"agent_toolset_20260401","default_config":{"enabled":true}})],
            resources: spec.resources.clone(),
            events: Vec::new(),
            calls: HashMap::new(),
            terminated_threads: HashSet::new(),
            tx,
            drop_gen,
            attached: Default::default(),
            current_work: None,
        },
    );
    let work = store.enqueue(&env, WorkData::session(&id));
    if let Some(s) = store.sessions.get_mut(&id) {
        s.current_work = Some(work);
    }
    drop(store);
    st.queue_changed.notify_waiters();
    Ok(id)
}

/// Records what an event means for the session (status, tool calls, threads). `arrived` is
/// when the request carrying it reached devplane (for a posted result: its answer time).
fn apply(session: &mut SessionRecord, ev: &Value, arrived: Instant) {
    let ty = ev.get("type").and_then(Value::as_str).unwrap_or("");
    let id = ev
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let str_field = |k: &str| ev.get(k).and_then(Value::as_str).map(str::to_owned);
    match ty {
        types::SESSION_STATUS_RUNNING => session.status = "running".into(),
        types::SESSION_STATUS_IDLE => session.status = "idle".into(),
        types::SESSION_STATUS_RESCHEDULED => session.status = "rescheduling".into(),
        types::SESSION_STATUS_TERMINATED | types::SESSION_DELETED => {
            session.status = "terminated".into()
        }
        types::THREAD_STATUS_TERMINATED => {
            if let Some(t) = str_field("session_thread_id") {
                session.terminated_threads.insert(t);
            }
        }
        types::AGENT_TOOL_USE | types::AGENT_CUSTOM_TOOL_USE => {
            session.calls.insert(
                id,
                ToolCall {
                    custom: ty == types::AGENT_CUSTOM_TOOL_USE,
                    name: str_field("name").unwrap_or_default(),
                    thread: str_field("session_thread_id"),
                    denied: str_field("evaluated_permission").as_deref() == Some("deny"),
                    result: None,
                    answered_at: None,
                },
            );
        }
        types::USER_TOOL_CONFIRMATION => {
            if str_field("result").as_deref() != Some("allow")
                && let Some(call) = str_field("tool_use_id").and_then(|t| session.calls.get_mut(&t))
            {
                call.denied = true;
            }
        }
        types::USER_TOOL_RESULT | types::USER_CUSTOM_TOOL_RESULT => {
            let key = if ty == types::USER_TOOL_RESULT {
                "tool_use_id"
            } else {
                "custom_tool_use_id"
            };
            if let Some(call) = str_field(key).and_then(|t| session.calls.get_mut(&t)) {
                call.result = Some(ev.clone());
                call.answered_at = Some(arrived);
            }
        }
        _ => {}
    }
    session.updated_at = ids::now_rfc3339();
}

/// Appends an agent-side event (the scripted agent's voice) and applies it. A transition to
/// `running` fires the webhook sender, as the real service does.
pub fn emit(st: &AppState, session_id: &str, event: Value) -> Result<Arc<Value>, DevplaneError> {
    let stored = {
        let mut store = st.lock();
        let stored = store
            .append_event(session_id, event)
            .ok_or_else(|| DevplaneError::UnknownSession(session_id.to_owned()))?;
        if let Some(s) = store.sessions.get_mut(session_id) {
            apply(s, &stored, Instant::now());
        }
        stored
    };
    if stored.get("type").and_then(Value::as_str) == Some(types::SESSION_STATUS_RUNNING) {
        crate::webhook_sender::session_run_started(st, session_id);
    }
    Ok(stored)
}

/// The session JSON (`BetaManagedAgentsSession`-shaped).
pub fn session_json(s: &SessionRecord) -> Value {
    json!({
        "type": "session",
        "id": s.id,
        "status": s.status,
        "environment_id": s.environment_id,
        "title": s.title,
        "metadata": s.metadata,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "archived_at": null,
        "agent": {
            "type": "agent", "id": "agent_devplane", "name": "devplane scripted agent",
            "version": 1, "description": null, "system": null,
            "model": {"id": "claude-devplane", "speed": "standard"},
            "mcp_servers": [], "skills": s.skills, "tools": s.tools,
        },
        "resources": s.resources,
        "vault_ids": [],
        "outcome_evaluations": [],
        "stats": {"active_seconds": 0.0, "duration_seconds": 0.0},
        "usage": {"input_tokens": 0, "output_tokens": 0},
    })
}

fn session_admit<'a>(
    store: &'a mut Store,
    st: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<&'a mut SessionRecord, ApiError> {
    auth::require_beta(headers)?;
    let principal = auth::authenticate(store, &st.config.api_key, headers, Accepts::ANY)?;
    let Some(session) = store.sessions.get_mut(id) else {
        return Err(ApiError::not_found(
            format!("session {id} not found"),
            codes::SESSION_NOT_FOUND,
        ));
    };
    auth::check_session_scope(&principal, id, &session.environment_id)?;
    Ok(session)
}

/// `GET /v1/sessions/{id}`.
pub async fn get_session(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut store = st.lock();
    let body = session_json(session_admit(&mut store, &st, &headers, &id)?);
    store.counters.session_gets += 1;
    Ok(Json(body).into_response())
}

/// Cursor of the event history: a position in the log, so appends never shift a page.
fn parse_event_cursor(page: &str) -> Result<usize, ApiError> {
    page.strip_prefix("epage_")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| ApiError::bad_request("page: not a cursor this server issued"))
}

/// `GET /v1/sessions/{id}/events?limit=&order=&types[]=&page=`.
pub async fn list_events(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(raw.as_deref())?;
    let mut store = st.lock();
    let session = session_admit(&mut store, &st, &headers, &id)?;
    let limit = q.int_in("limit", 1..=1000)?.unwrap_or(20).unsigned_abs() as usize;
    let desc = match q.get("order") {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "order: expected asc or desc, got {other:?}"
            )));
        }
    };
    let wanted: Vec<&str> = q.all("types[]");
    let matches = |e: &Value| {
        wanted.is_empty()
            || e.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| wanted.contains(&t))
    };
    let cursor = q
        .get("page")
        .filter(|p| !p.is_empty())
        .map(parse_event_cursor)
        .transpose()?;
    let n = session.events.len();
    let indices: Box<dyn Iterator<Item = usize>> = if desc {
        Box::new((0..cursor.unwrap_or(n).min(n)).rev())
    } else {
        Box::new(cursor.unwrap_or(0).min(n)..n)
    };
    let mut data = Vec::new();
    let mut next_page = None;
    for i in indices {
        let e = &session.events[i];
        if !matches(e) {
            continue;
        }
        if data.len() == limit {
            // Only hand out a cursor when something is actually left.
            next_page = Some(format!("epage_{}", if desc { i + 1 } else { i }));
            break;
        }
        data.push(e.as_ref().clone());
    }
    store.counters.event_lists += 1;
    Ok(Json(json!({"data": data, "next_page": next_page})).into_response())
}

#[derive(Deserialize)]
struct PostBody {
    events: Vec<Value>,
}

/// `POST /v1/sessions/{id}/events`.
pub async fn post_events(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // The result's arrival: the whole request has been read, nothing of it decoded yet. A
    // worker's round trip ends here; decoding, validating and storing a result of hundreds of
    // KiB is the emulator's own work and would otherwise count against the worker.
    let arrived = Instant::now();
    let mut store = st.lock();
    session_admit(&mut store, &st, &headers, &id)?;
    let req: PostBody = parse_json(&body)?;
    if req.events.is_empty() {
        return Err(ApiError::bad_request(
            "events: at least one event is required",
        ));
    }
    let decoded: Vec<SessionEvent> = req
        .events
        .iter()
        .cloned()
        .map(SessionEvent::from_value)
        .collect();

    // Count attempts per tool-use id before any fault or validation, so retries are visible.
    for ev in &decoded {
        let target = match ev {
            SessionEvent::UserToolResult(r) => Some(r.tool_use_id.clone()),
            SessionEvent::UserCustomToolResult(r) => Some(r.custom_tool_use_id.clone()),
            _ => None,
        };
        if let Some(t) = target {
            *store
                .counters
                .result_attempts_by_tool_use
                .entry(t)
                .or_default() += 1;
        }
    }
    let has_tool = decoded
        .iter()
        .any(|e| matches!(e, SessionEvent::UserToolResult(_)));
    let has_custom = decoded
        .iter()
        .any(|e| matches!(e, SessionEvent::UserCustomToolResult(_)));
    if let Some(f) = store.faults.fail_post(has_tool, has_custom) {
        store.counters.injected_post_failures += 1;
        let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let kind = match f.status {
            429 => ErrorType::RateLimit,
            503 | 529 => ErrorType::Overloaded,
            _ => ErrorType::Api,
        };
        let mut err = ApiError::new(status, kind, "injected failure").code(codes::INJECTED_FAULT);
        if let Some(s) = f.retry_after_s {
            err = err.header("retry-after", s.to_string());
        }
        return Err(err);
    }

    let rejected = validate(&store, &id, &decoded);
    if let Err(e) = rejected {
        store.counters.rejected_posts += 1;
        return Err(e);
    }

    let mut echoed = Vec::new();
    let mut wants_work = false;
    for (raw, ev) in req.events.into_iter().zip(&decoded) {
        // Store the event as sent (minus any client-chosen id), so the log shows the worker's bytes.
        let mut raw = raw;
        if let Value::Object(m) = &mut raw {
            m.remove("id");
            m.remove("processed_at");
        }
        let Some(stored) = store.append_event(&id, raw) else {
            continue;
        };
        if let Some(s) = store.sessions.get_mut(&id) {
            apply(s, &stored, arrived);
        }
        match ev {
            SessionEvent::UserToolResult(r) => {
                *store
                    .counters
                    .results_by_tool_use
                    .entry(r.tool_use_id.clone())
                    .or_default() += 1;
                store.counters.result_posts += 1;
            }
            SessionEvent::UserCustomToolResult(r) => {
                *store
                    .counters
                    .results_by_tool_use
                    .entry(r.custom_tool_use_id.clone())
                    .or_default() += 1;
                store.counters.result_posts += 1;
            }
            SessionEvent::UserMessage(_) => wants_work = true,
            _ => {}
        }
        echoed.push(stored.as_ref().clone());
    }
    if wants_work {
        enqueue_if_idle(&mut store, &id);
    }
    let reset = store.faults.reset_after_commit();
    if reset.is_some() {
        store.counters.resets_after_commit += 1;
    }
    drop(store);
    st.queue_changed.notify_waiters();
    match reset {
        None => Ok(Json(json!({"data": echoed})).into_response()),
        Some(ResetMode::Error500) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::Api,
            "internal error (injected after commit)",
        )
        .code(codes::INJECTED_FAULT)),
        Some(ResetMode::GarbledOk) => Ok((
            StatusCode::OK,
            [("content-type", "text/html")],
            "<html><body>upstream answered</body></html>",
        )
            .into_response()),
        Some(ResetMode::Drop) => {
            // Headers go out, then the body fails: the client sees the connection break.
            let broken = futures::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other("injected reset after commit"))
            });
            Ok((
                StatusCode::OK,
                [("content-type", "application/json")],
                Body::from_stream(broken),
            )
                .into_response())
        }
    }
}

/// A message to a session without a live work item queues a new one (§6.1).
fn enqueue_if_idle(store: &mut Store, session_id: &str) {
    let live = store
        .sessions
        .get(session_id)
        .and_then(|s| s.current_work.as_ref())
        .and_then(|w| store.work.get(w))
        .is_some_and(|w| w.item.state != WorkState::Stopped);
    if live {
        return;
    }
    let Some(env) = store
        .sessions
        .get(session_id)
        .map(|s| s.environment_id.clone())
    else {
        return;
    };
    let work = store.enqueue(&env, WorkData::session(session_id));
    if let Some(s) = store.sessions.get_mut(session_id) {
        s.current_work = Some(work);
    }
}

fn validate(store: &Store, session_id: &str, events: &[SessionEvent]) -> Result<(), ApiError> {
    let Some(session) = store.sessions.get(session_id) else {
        return Err(ApiError::not_found(
            "session not found",
            codes::SESSION_NOT_FOUND,
        ));
    };
    let mut answered_here = HashSet::new();
    for ev in events {
        let (target, custom) = match ev {
            SessionEvent::UserToolResult(r) => (r.tool_use_id.as_str(), false),
            SessionEvent::UserCustomToolResult(r) => (r.custom_tool_use_id.as_str(), true),
            SessionEvent::UserMessage(_) => {
                let open = session.open_calls();
                if !open.is_empty() {
                    return Err(ApiError::bad_request(format!(
                        "waiting on responses to events [{}]",
                        open.join(", ")
                    ))
                    .code(codes::WAITING_ON_RESPONSES));
                }
                continue;
            }
            SessionEvent::UserToolConfirmation(_) | SessionEvent::Other(_)
                if matches!(
                    ev.event_type(),
                    types::USER_TOOL_CONFIRMATION | types::USER_INTERRUPT | types::SYSTEM_MESSAGE
                ) =>
            {
                continue;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "events: unsupported or malformed event of type {:?}",
                    other.event_type()
                )));
            }
        };
        let Some(call) = session.calls.get(target).filter(|c| c.custom == custom) else {
            let what = if custom {
                "agent.custom_tool_use"
            } else {
                "agent.tool_use"
            };
            return Err(ApiError::bad_request(format!(
                "{target} is not an {what} event of this session"
            ))
            .code(codes::UNKNOWN_TOOL_USE_ID));
        };
        if call.result.is_some() || call.denied || !answered_here.insert(target.to_owned()) {
            return Err(ApiError::bad_request(format!(
                "tool use {target} has already been answered"
            ))
            .code(codes::TOOL_USE_ALREADY_ANSWERED));
        }
        if call
            .thread
            .as_ref()
            .is_some_and(|t| session.terminated_threads.contains(t))
        {
            return Err(ApiError::bad_request(format!(
                "tool use {target} belongs to a terminated thread"
            ))
            .code(codes::TOOL_USE_ALREADY_ANSWERED));
        }
    }
    Ok(())
}
