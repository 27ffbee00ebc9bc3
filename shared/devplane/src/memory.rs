//! Memory stores (PROTOCOL.md §9.7): `GET/POST /v1/memory_stores/{id}/memories`,
//! `GET/POST/DELETE /v1/memory_stores/{id}/memories/{mem_id}`, with the answers the SDK's sync
//! code branches on:
//! - an update whose `content_sha256` precondition no longer holds, and a delete whose
//!   `expected_content_sha256` differs: 409 `memory_precondition_failed_error`;
//! - a create at a path that is taken: 409 `memory_path_conflict_error`;
//! - content over 102,400 bytes or an invalid path: 400 `invalid_request_error`;
//! - an unknown memory: 404; the environment key: 403 (the endpoints reject it).
//!
//! A sessions token may reach only the stores its session attaches, and writes only to those
//! attached `read_write` (devplane's choice: the real service's answer to a write through a
//! `read_only` attachment is unpublished, and the reference workers never send one). Stores
//! spring into existence on first use; tests seed and inspect them through [`crate::DevPlane`].
//!
//! Faults for these endpoints: `fail_memory_writes`, `fail_memory_reads`,
//! `lose_memory_write_answers` (the write is stored, its answer lost), `race_memory_updates`
//! (another client's write lands just before an update, so its precondition fails) and
//! `slow_memory_ms`.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hands_protocol::error::{ErrorType, codes};
use hands_protocol::memory::{
    CreateMemoryRequest, MAX_MEMORY_BYTES, Precondition, UpdateMemoryRequest, content_sha256,
    is_valid_memory_path,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::auth::{self, Accepts, Principal};
use crate::body::parse_json;
use crate::error::ApiError;
use crate::faults::ResetMode;
use crate::ids;
use crate::query::QueryParams;
use crate::state::{AppState, Store};

/// The beta the SDK's memory methods may add instead of the managed-agents one.
pub const AGENT_MEMORY_BETA: &str = "agent-memory-2026-07-22";

/// One memory as stored.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryRecord {
    pub id: String,
    pub path: String,
    pub content: String,
    pub content_sha256: String,
    /// How many versions were written (1 after the create).
    pub versions: u32,
    pub memory_version_id: String,
    pub created_at: String,
    pub updated_at: String,
}

/// A store: memories by id.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    pub memories: BTreeMap<String, MemoryRecord>,
}

impl MemoryStore {
    fn by_path(&self, path: &str) -> Option<&MemoryRecord> {
        self.memories.values().find(|m| m.path == path)
    }

    /// Creates or replaces the memory at `path` (server-side edit, as another client would).
    pub fn put(&mut self, path: &str, content: &str) -> MemoryRecord {
        let now = ids::now_rfc3339();
        let existing = self.by_path(path).map(|m| m.id.clone());
        match existing.and_then(|id| self.memories.get_mut(&id)) {
            Some(m) => {
                m.content = content.to_owned();
                m.content_sha256 = content_sha256(content.as_bytes());
                m.versions += 1;
                m.memory_version_id = ids::new_id("memver");
                m.updated_at = now;
                m.clone()
            }
            None => {
                let m = MemoryRecord {
                    id: ids::new_id("mem"),
                    path: path.to_owned(),
                    content: content.to_owned(),
                    content_sha256: content_sha256(content.as_bytes()),
                    versions: 1,
                    memory_version_id: ids::new_id("memver"),
                    created_at: now.clone(),
                    updated_at: now,
                };
                self.memories.insert(m.id.clone(), m.clone());
                m
            }
        }
    }

    /// `{path: content}`: the state tests compare.
    pub fn contents(&self) -> BTreeMap<String, String> {
        self.memories
            .values()
            .map(|m| (m.path.clone(), m.content.clone()))
            .collect()
    }
}

/// Puts a script's seed memories into their stores.
pub fn seed(st: &AppState, memories: &BTreeMap<String, BTreeMap<String, String>>) {
    let mut store = st.lock();
    for (store_id, files) in memories {
        let mems = store.memory_stores.entry(store_id.clone()).or_default();
        for (path, content) in files {
            mems.put(path, content);
        }
    }
}

/// The stores named by `memory_store` resources, as `{store: {path: content}}`.
pub fn snapshot(st: &AppState, resources: &[Value]) -> BTreeMap<String, BTreeMap<String, String>> {
    let store = st.lock();
    resources
        .iter()
        .filter(|r| r.get("type").and_then(Value::as_str) == Some("memory_store"))
        .filter_map(|r| r.get("memory_store_id").and_then(Value::as_str))
        .map(|id| {
            let contents = store
                .memory_stores
                .get(id)
                .map(MemoryStore::contents)
                .unwrap_or_default();
            (id.to_owned(), contents)
        })
        .collect()
}

fn memory_json(store_id: &str, m: &MemoryRecord, full: bool) -> Value {
    json!({
        "type": "memory",
        "id": m.id,
        "memory_store_id": store_id,
        "path": m.path,
        "content_sha256": m.content_sha256,
        "content_size_bytes": m.content.len(),
        "memory_version_id": m.memory_version_id,
        "created_at": m.created_at,
        "updated_at": m.updated_at,
        "content": if full { Value::String(m.content.clone()) } else { Value::Null },
    })
}

fn require_beta(headers: &HeaderMap) -> Result<(), ApiError> {
    let ok = headers.get_all("anthropic-beta").iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|b| b.trim() == auth::MANAGED_AGENTS_BETA || b.trim() == AGENT_MEMORY_BETA)
        })
    });
    if ok {
        Ok(())
    } else {
        auth::require_beta(headers)
    }
}

/// Who may do what on `store_id`: API keys anything; a sessions token only the stores its
/// session attaches (writes only `read_write` ones); the environment key nothing.
fn admit(
    store: &Store,
    st: &AppState,
    headers: &HeaderMap,
    store_id: &str,
    write: bool,
) -> Result<(), ApiError> {
    require_beta(headers)?;
    let principal = auth::authenticate(
        store,
        &st.config.api_key,
        headers,
        Accepts::API_KEY_OR_TOKEN,
    )?;
    let Principal::SessionsToken { session_id, .. } = principal else {
        return Ok(());
    };
    let access = store.sessions.get(&session_id).and_then(|s| {
        s.resources.iter().find_map(|r| {
            (r.get("type").and_then(Value::as_str) == Some("memory_store")
                && r.get("memory_store_id").and_then(Value::as_str) == Some(store_id))
            .then(|| {
                r.get("access")
                    .and_then(Value::as_str)
                    .unwrap_or("read_write")
                    .to_owned()
            })
        })
    });
    match access {
        None => Err(ApiError::forbidden(
            "this sessions token's session does not attach this memory store",
        )),
        Some(a) if write && a == "read_only" => Err(ApiError::forbidden(
            "this session attaches the memory store read-only",
        )),
        Some(_) => Ok(()),
    }
}

/// The injected failure for a write, if one is due.
fn injected(store: &mut Store) -> Option<ApiError> {
    let status = store.faults.fail_memory_write()?;
    store.counters.injected_memory_failures += 1;
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Some(
        ApiError::new(code, ErrorType::Api, "injected memory write failure")
            .code(codes::INJECTED_FAULT),
    )
}

/// The injected failure for a read (list page or get), if one is due.
fn injected_read(store: &mut Store, is_get: bool) -> Option<ApiError> {
    let f = store.faults.fail_memory_read(is_get)?;
    store.counters.injected_memory_failures += 1;
    let code = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = match f.status {
        429 => ErrorType::RateLimit,
        503 | 529 => ErrorType::Overloaded,
        _ => ErrorType::Api,
    };
    let mut err =
        ApiError::new(code, kind, "injected memory read failure").code(codes::INJECTED_FAULT);
    if let Some(s) = f.retry_after_s {
        err = err.header("retry-after", s.to_string());
    }
    Some(err)
}

/// The `slow_memory_ms` fault: waits (without the state lock) before handling the request.
async fn slow_memory(st: &AppState) {
    let delay = st.lock().faults.faults.slow_memory_ms;
    if let Some(ms) = delay {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// The answer to a committed write, or, when the `lose_memory_write_answers` fault is due, its
/// loss: a 500 or a connection broken after the headers, the write stored all the same.
fn committed(store: &mut Store, out: Value) -> Result<Response, ApiError> {
    let Some(mode) = store.faults.lose_memory_write_answer() else {
        return Ok(Json(out).into_response());
    };
    store.counters.injected_memory_failures += 1;
    match mode {
        ResetMode::Error500 => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::Api,
            "internal error (injected after the memory write was stored)",
        )
        .code(codes::INJECTED_FAULT)),
        ResetMode::GarbledOk => Ok((
            StatusCode::OK,
            [("content-type", "text/html")],
            "<html><body>upstream answered</body></html>",
        )
            .into_response()),
        ResetMode::Drop => {
            let broken = futures::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other(
                    "injected reset after the memory write",
                ))
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

fn check_content(content: &str) -> Result<(), ApiError> {
    if content.len() > MAX_MEMORY_BYTES {
        return Err(ApiError::bad_request(format!(
            "content: at most {MAX_MEMORY_BYTES} bytes, got {}",
            content.len()
        )));
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), ApiError> {
    if !is_valid_memory_path(path) {
        return Err(ApiError::bad_request(format!(
            "path: invalid memory path {path:?}"
        )));
    }
    Ok(())
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("memory {id} not found"), "memory_not_found")
}

fn precondition_failed() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorType::MemoryPreconditionFailed,
        "the memory's content_sha256 does not match the precondition",
    )
    .code("memory_precondition_failed")
}

fn view_full(q: &QueryParams, default_full: bool) -> Result<bool, ApiError> {
    match q.get("view") {
        None => Ok(default_full),
        Some("basic") => Ok(false),
        Some("full") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "view: expected basic or full, got {other:?}"
        ))),
    }
}

/// `GET /v1/memory_stores/{store}/memories?view=&limit=&page=&path_prefix=`, ordered by path.
pub async fn list(
    State(st): State<AppState>,
    Path(store_id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(raw.as_deref())?;
    slow_memory(&st).await;
    let mut store = st.lock();
    admit(&store, &st, &headers, &store_id, false)?;
    let full = view_full(&q, false)?;
    let limit = q.int_in("limit", 1..=100)?.unwrap_or(20) as usize;
    let limit = if full { limit.min(20) } else { limit };
    // The cursor is the last path of the previous page, so writes never shift a page.
    let after = match q.get("page") {
        None => None,
        Some(p) => Some(
            p.strip_prefix("mpage_")
                .ok_or_else(|| ApiError::bad_request("page: not a cursor this server issued"))?
                .to_owned(),
        ),
    };
    if let Some(e) = injected_read(&mut store, false) {
        return Err(e);
    }
    let prefix = q.get("path_prefix").unwrap_or("/");
    store.counters.memory_lists += 1;
    let mems = store.memory_stores.entry(store_id.clone()).or_default();
    let mut sorted: Vec<&MemoryRecord> = mems
        .memories
        .values()
        .filter(|m| m.path.starts_with(prefix))
        .filter(|m| {
            after
                .as_ref()
                .is_none_or(|a| m.path.as_str() > hex_decode(a).as_str())
        })
        .collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let more = sorted.len() > limit;
    let page: Vec<Value> = sorted
        .iter()
        .take(limit)
        .map(|m| memory_json(&store_id, m, full))
        .collect();
    let next = if more {
        sorted
            .get(limit - 1)
            .map(|m| Value::String(format!("mpage_{}", hex_encode(&m.path))))
            .unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    Ok(Json(json!({"data": page, "next_page": next})).into_response())
}

fn hex_encode(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str) -> String {
    let bytes: Vec<u8> = (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `GET /v1/memory_stores/{store}/memories/{id}` (view defaults to `full`).
pub async fn retrieve(
    State(st): State<AppState>,
    Path((store_id, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(raw.as_deref())?;
    slow_memory(&st).await;
    let mut store = st.lock();
    admit(&store, &st, &headers, &store_id, false)?;
    let full = view_full(&q, true)?;
    if let Some(e) = injected_read(&mut store, true) {
        return Err(e);
    }
    store.counters.memory_gets += 1;
    let mems = store.memory_stores.entry(store_id.clone()).or_default();
    let m = mems.memories.get(&id).ok_or_else(|| not_found(&id))?;
    Ok(Json(memory_json(&store_id, m, full)).into_response())
}

/// `POST /v1/memory_stores/{store}/memories` `{path, content}`.
pub async fn create(
    State(st): State<AppState>,
    Path(store_id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(raw.as_deref())?;
    slow_memory(&st).await;
    let req: CreateMemoryRequest = parse_json(&body)?;
    let mut store = st.lock();
    admit(&store, &st, &headers, &store_id, true)?;
    let full = view_full(&q, false)?;
    if let Some(e) = injected(&mut store) {
        return Err(e);
    }
    check_path(&req.path)?;
    check_content(&req.content)?;
    let mems = store.memory_stores.entry(store_id.clone()).or_default();
    if mems.by_path(&req.path).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorType::MemoryPathConflict,
            format!("a memory already exists at {}", req.path),
        )
        .code("memory_path_conflict"));
    }
    let rec = mems.put(&req.path, &req.content);
    let out = memory_json(&store_id, &rec, full);
    count_write(&mut store, &store_id, &req.path);
    committed(&mut store, out)
}

fn count_write(store: &mut Store, store_id: &str, path: &str) {
    store.counters.memory_writes += 1;
    *store
        .counters
        .memory_writes_by_path
        .entry(format!("{store_id}:{path}"))
        .or_default() += 1;
}

/// `POST /v1/memory_stores/{store}/memories/{id}` `{content?, path?, precondition?}`.
pub async fn update(
    State(st): State<AppState>,
    Path((store_id, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(raw.as_deref())?;
    slow_memory(&st).await;
    let req: UpdateMemoryRequest = parse_json(&body)?;
    let mut store = st.lock();
    admit(&store, &st, &headers, &store_id, true)?;
    let full = view_full(&q, false)?;
    if let Some(e) = injected(&mut store) {
        return Err(e);
    }
    if let Some(c) = &req.content {
        check_content(c)?;
    }
    if let Some(p) = &req.path {
        check_path(p)?;
    }
    // Another client's write lands between the worker's listing and this update.
    if let Some(content) = store.faults.race_memory_update() {
        let mems = store.memory_stores.entry(store_id.clone()).or_default();
        if let Some(path) = mems.memories.get(&id).map(|m| m.path.clone()) {
            mems.put(&path, &content);
        }
        store.counters.injected_memory_failures += 1;
    }
    let mems = store.memory_stores.entry(store_id.clone()).or_default();
    let current = mems
        .memories
        .get(&id)
        .ok_or_else(|| not_found(&id))?
        .clone();
    if let Some(Precondition::ContentSha256 { content_sha256 }) = &req.precondition
        && *content_sha256 != current.content_sha256
    {
        store.counters.memory_conflicts += 1;
        return Err(precondition_failed());
    }
    if let Some(p) = &req.path
        && *p != current.path
        && mems.by_path(p).is_some()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorType::MemoryPathConflict,
            format!("a memory already exists at {p}"),
        )
        .code("memory_path_conflict"));
    }
    let Some(m) = mems.memories.get_mut(&id) else {
        return Err(not_found(&id));
    };
    if let Some(p) = req.path {
        m.path = p;
    }
    if let Some(c) = req.content {
        m.content_sha256 = content_sha256(c.as_bytes());
        m.content = c;
    }
    m.versions += 1;
    m.memory_version_id = ids::new_id("memver");
    m.updated_at = ids::now_rfc3339();
    let out = memory_json(&store_id, m, full);
    let path = m.path.clone();
    count_write(&mut store, &store_id, &path);
    committed(&mut store, out)
}

/// `DELETE /v1/memory_stores/{store}/memories/{id}?expected_content_sha256=`.
pub async fn delete(
    State(st): State<AppState>,
    Path((store_id, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(raw.as_deref())?;
    slow_memory(&st).await;
    let mut store = st.lock();
    admit(&store, &st, &headers, &store_id, true)?;
    if let Some(e) = injected(&mut store) {
        return Err(e);
    }
    let expected = q.get("expected_content_sha256").map(str::to_owned);
    let mems = store.memory_stores.entry(store_id.clone()).or_default();
    let current = mems.memories.get(&id).ok_or_else(|| not_found(&id))?;
    if expected.is_some_and(|e| e != current.content_sha256) {
        store.counters.memory_conflicts += 1;
        return Err(precondition_failed());
    }
    mems.memories.remove(&id);
    store.counters.memory_deletes += 1;
    Ok(Json(json!({"id": id, "type": "memory_deleted"})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_any_path() {
        for p in ["/a", "/notes/ü.md", "/x y/z"] {
            assert_eq!(hex_decode(&hex_encode(p)), p);
        }
    }

    #[test]
    fn put_versions_and_contents() {
        let mut s = MemoryStore::default();
        let a = s.put("/a.md", "one");
        let b = s.put("/a.md", "two");
        assert_eq!(a.id, b.id);
        assert_eq!(b.versions, 2);
        assert_eq!(b.content_sha256, content_sha256(b"two"));
        assert_eq!(s.contents().get("/a.md").map(String::as_str), Some("two"));
    }
}
