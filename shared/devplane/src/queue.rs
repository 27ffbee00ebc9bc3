//! The work queue and lease (PROTOCOL.md §4-§6): poll with long-polling and reclaim, ack,
//! heartbeat compare-and-set, stop, list, stats, retrieve and metadata update, plus the lease
//! sweeper that re-queues items whose lease lapsed.

use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hands_protocol::error::{ErrorType, codes};
use hands_protocol::secret::{SessionsToken, encode_secret};
use hands_protocol::work::{
    HeartbeatResponse, LeaseState, NO_HEARTBEAT, Page, QueueStats, StopRequest, UpdateWorkRequest,
    WorkItem, WorkState,
};
use serde_json::Value;
use time::OffsetDateTime;

use crate::auth::{self, Accepts, Principal};
use crate::body::parse_json;
use crate::config::StopReply;
use crate::error::ApiError;
use crate::faults::{AckLoss, HeartbeatFault};
use crate::ids;
use crate::query::QueryParams;
use crate::state::{AppState, Store, WorkRecord};

/// Longest sleep between claim attempts while long-polling: reclaimable items become claimable
/// by time passing, not by a notification.
const POLL_RECHECK: Duration = Duration::from_millis(25);

fn environment_exists(store: &Store, env: &str) -> Result<(), ApiError> {
    if store.environments.contains_key(env) {
        Ok(())
    } else {
        Err(ApiError::not_found(
            format!("environment {env} not found"),
            codes::ENVIRONMENT_NOT_FOUND,
        ))
    }
}

/// Authenticates and scopes a call on `env` (and `work`, when the path names one).
fn admit(
    store: &Store,
    st: &AppState,
    headers: &HeaderMap,
    accepts: Accepts,
    env: &str,
    work: Option<&str>,
) -> Result<Principal, ApiError> {
    let principal = auth::authenticate(store, &st.config.api_key, headers, accepts)?;
    environment_exists(store, env)?;
    auth::check_environment_scope(&principal, env, work)?;
    Ok(principal)
}

fn record<'a>(store: &'a mut Store, env: &str, work: &str) -> Result<&'a mut WorkRecord, ApiError> {
    match store.work.get_mut(work) {
        Some(rec) if rec.item.environment_id == env => Ok(rec),
        _ => Err(ApiError::not_found(
            format!("work item {work} not found"),
            codes::WORK_NOT_FOUND,
        )),
    }
}

/// The item as returned anywhere but poll (`secret` is null there).
fn public(rec: &WorkRecord) -> WorkItem {
    WorkItem {
        secret: None,
        ..rec.item.clone()
    }
}

fn lease_state(rec: &WorkRecord) -> LeaseState {
    LeaseState {
        last_heartbeat: rec.last_heartbeat.clone(),
        lease_extended: false,
        state: rec.item.state,
        ttl_seconds: rec.ttl_seconds,
    }
}

/// Claims the first claimable item: never claimed, or claimed but unacked for `reclaim`.
fn try_claim(
    store: &mut Store,
    env: &str,
    worker: Option<&str>,
    reclaim: Duration,
) -> Option<WorkItem> {
    let now = Instant::now();
    let id = store.queue.iter().find(|id| {
        store.work.get(*id).is_some_and(|r| {
            r.item.environment_id == env
                && r.item.state == WorkState::Queued
                && r.claimed_at
                    .is_none_or(|t| now.duration_since(t) >= reclaim)
        })
    })?;
    let id = id.clone();
    let rec = store.work.get_mut(&id)?;
    rec.claimed_at = Some(now);
    rec.claimed_by = worker.map(str::to_owned);
    let item = WorkItem {
        secret: Some(encode_secret(&SessionsToken::new(
            rec.sessions_token.clone(),
        ))),
        ..rec.item.clone()
    };
    store.counters.claims += 1;
    Some(item)
}

/// `GET /v1/environments/{env}/work/poll`.
pub async fn poll(
    State(st): State<AppState>,
    Path(env): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(raw.as_deref())?;
    let worker = headers
        .get("anthropic-worker-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (block, reclaim) = {
        let mut store = st.lock();
        admit(&store, &st, &headers, Accepts::ENV_KEY, &env, None)?;
        let block_ms = q.int_in("block_ms", 1..=999)?;
        let reclaim_ms = q.int_in("reclaim_older_than_ms", 0..=86_400_000)?;
        store.counters.polls += 1;
        store.first_poll_at.get_or_insert_with(Instant::now);
        if let Some(w) = &worker {
            store.pollers.insert(w.clone(), Instant::now());
            if !store.counters.worker_ids.contains(w) {
                store.counters.worker_ids.push(w.clone());
            }
        }
        let reclaim = reclaim_ms
            .map(|ms| Duration::from_millis(ms.unsigned_abs()))
            .unwrap_or(st.config.default_reclaim);
        (
            Duration::from_millis(block_ms.unwrap_or(0).unsigned_abs()),
            reclaim,
        )
    };
    let deadline = tokio::time::Instant::now() + block;
    loop {
        let notified = st.queue_changed.notified();
        if let Some(item) = try_claim(&mut st.lock(), &env, worker.as_deref(), reclaim) {
            return Ok(Json(item).into_response());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            st.lock().counters.empty_polls += 1;
            // An empty poll is 200 with a JSON `null` body: the SDK's poller handles only this.
            return Ok(Json(Value::Null).into_response());
        }
        let wait = (deadline - now).min(POLL_RECHECK);
        let _ = tokio::time::timeout(wait, notified).await;
    }
}

/// `POST /v1/environments/{env}/work/{work}/ack`.
pub async fn ack(
    State(st): State<AppState>,
    Path((env, work)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut store = st.lock();
    admit(&store, &st, &headers, Accepts::ENV_KEY, &env, Some(&work))?;
    let ttl = st.config.default_ttl;
    record(&mut store, &env, &work)?;
    if let Some(loss) = store.faults.ack_race() {
        // Someone else got there first; this ack then meets the state they left.
        store.counters.raced_acks += 1;
        match loss {
            AckLoss::Taken => {
                let rec = record(&mut store, &env, &work)?;
                if rec.item.state == WorkState::Queued {
                    acknowledge(rec, ttl, Some("devplane-rival"));
                    store.queue.retain(|id| id != &work);
                }
            }
            AckLoss::Gone => {
                store.work.remove(&work);
                store.queue.retain(|id| id != &work);
                store.tokens.retain(|_, w| w != &work);
            }
        }
    }
    let rec = record(&mut store, &env, &work)?;
    if rec.item.state != WorkState::Queued {
        return Err(ApiError::conflict(
            format!("work item {work} is already {}", rec.item.state.as_str()),
            codes::WORK_ALREADY_ACKNOWLEDGED,
        ));
    }
    acknowledge(rec, ttl, None);
    let item = public(rec);
    store.queue.retain(|id| id != &work);
    store.counters.acks += 1;
    Ok(Json(item).into_response())
}

/// `queued` -> `starting` (the caller removes it from the queue).
fn acknowledge(rec: &mut WorkRecord, ttl: Duration, by: Option<&str>) {
    rec.item.state = WorkState::Starting;
    rec.item.acknowledged_at = Some(ids::now_rfc3339());
    rec.claimed_at = None;
    if let Some(by) = by {
        rec.claimed_by = Some(by.to_owned());
    }
    // Acking starts the lease: a worker that acks and then never heartbeats loses the item.
    rec.lease_expires = Some(Instant::now() + ttl);
    rec.ttl_seconds = ttl.as_secs();
}

/// `POST /v1/environments/{env}/work/{work}/heartbeat?expected_last_heartbeat=..[&desired_ttl_seconds=..]`.
pub async fn heartbeat(
    State(st): State<AppState>,
    Path((env, work)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(raw.as_deref())?;
    let mut store = st.lock();
    admit(
        &store,
        &st,
        &headers,
        Accepts::ENV_KEY_OR_TOKEN,
        &env,
        Some(&work),
    )?;
    let Some(expected) = q.get("expected_last_heartbeat").map(str::to_owned) else {
        return Err(ApiError::bad_request(
            "expected_last_heartbeat is required (NO_HEARTBEAT for the first heartbeat)",
        ));
    };
    let desired = q.int_in("desired_ttl_seconds", 1..=86_400)?;
    record(&mut store, &env, &work)?;
    store.counters.heartbeats += 1;
    let fault = store.faults.heartbeat_fault();
    let injected_412 = fault == Some(HeartbeatFault::Reject412);
    if let Some(HeartbeatFault::Fail(status)) = fault {
        store.counters.injected_heartbeat_failures += 1;
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let kind = match status.as_u16() {
            429 => ErrorType::RateLimit,
            503 | 529 => ErrorType::Overloaded,
            _ => ErrorType::Api,
        };
        return Err(ApiError::new(status, kind, "injected failure").code(codes::INJECTED_FAULT));
    }
    let default_ttl = st.config.default_ttl.as_secs();
    let rec = record(&mut store, &env, &work)?;

    // No compare once stopping/stopped: the answer tells the worker to wind down (§5.3).
    if rec.item.state.is_winding_down() {
        let resp = HeartbeatResponse {
            kind: Default::default(),
            last_heartbeat: rec.last_heartbeat.clone().unwrap_or_default(),
            lease_extended: false,
            state: rec.item.state,
            ttl_seconds: rec.ttl_seconds,
        };
        return Ok(Json(resp).into_response());
    }
    let stored = rec.last_heartbeat.as_deref().unwrap_or(NO_HEARTBEAT);
    let held = matches!(rec.item.state, WorkState::Starting | WorkState::Active);
    if injected_412 || !held || stored != expected {
        let current = lease_state(rec);
        store.counters.heartbeat_412s += 1;
        let message = if injected_412 {
            "heartbeat precondition failed (injected fault)".to_owned()
        } else {
            format!(
                "heartbeat precondition failed: expected_last_heartbeat {expected:?} does not match"
            )
        };
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            ErrorType::InvalidRequest,
            message,
        )
        .code(codes::HEARTBEAT_PRECONDITION_FAILED)
        .detail(
            "current_state",
            serde_json::to_value(current).unwrap_or(Value::Null),
        ));
    }
    let now = OffsetDateTime::now_utc();
    let mut stamp = ids::heartbeat_stamp(now);
    if rec.last_heartbeat.as_deref() == Some(stamp.as_str()) {
        // Two beats in one microsecond must still differ, or a stale holder could match.
        stamp = ids::heartbeat_stamp(now + time::Duration::microseconds(1));
    }
    let ttl = desired.map(i64::unsigned_abs).unwrap_or(default_ttl);
    rec.last_heartbeat = Some(stamp.clone());
    rec.item.latest_heartbeat_at = Some(ids::format_rfc3339(now));
    if rec.item.state == WorkState::Starting {
        rec.item.state = WorkState::Active;
        rec.item.started_at = Some(ids::format_rfc3339(now));
    }
    rec.lease_expires = Some(Instant::now() + Duration::from_secs(ttl));
    rec.ttl_seconds = ttl;
    let answer = HeartbeatResponse {
        kind: Default::default(),
        last_heartbeat: stamp,
        lease_extended: true,
        state: rec.item.state,
        ttl_seconds: ttl,
    };
    if fault == Some(HeartbeatFault::ResetAfterCommit) {
        store.counters.heartbeat_resets_after_commit += 1;
        // Stored; the headers go out, then the body fails: the worker never learns the token.
        let broken = futures::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::other("injected reset after commit"))
        });
        return Ok((
            StatusCode::OK,
            [("content-type", "application/json")],
            axum::body::Body::from_stream(broken),
        )
            .into_response());
    }
    Ok(Json(answer).into_response())
}

/// `POST /v1/environments/{env}/work/{work}/stop` with `{}` or `{"force":true}`.
pub async fn stop(
    State(st): State<AppState>,
    Path((env, work)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut store = st.lock();
    admit(&store, &st, &headers, Accepts::ANY, &env, Some(&work))?;
    let req: StopRequest = parse_json(&body)?;
    let force = req.force.unwrap_or(false);
    let rec = record(&mut store, &env, &work)?;
    if rec.item.state == WorkState::Stopped {
        return Err(ApiError::conflict(
            format!("work item {work} is already stopped"),
            codes::WORK_ALREADY_STOPPED,
        ));
    }
    let now = ids::now_rfc3339();
    rec.item
        .stop_requested_at
        .get_or_insert_with(|| now.clone());
    // A queued item has no worker to confirm a graceful stop, so it stops at once.
    if force || rec.item.state == WorkState::Queued {
        rec.item.state = WorkState::Stopped;
        rec.item.stopped_at = Some(now);
        rec.force_stopped = force;
        rec.lease_expires = None;
    } else {
        rec.item.state = WorkState::Stopping;
    }
    let item = public(rec);
    store.queue.retain(|id| id != &work);
    store.counters.stops += 1;
    if force {
        store.counters.force_stops += 1;
    }
    drop(store);
    st.queue_changed.notify_waiters();
    Ok(match st.config.stop_reply {
        StopReply::NoContent => StatusCode::NO_CONTENT.into_response(),
        StopReply::Json => Json(item).into_response(),
    })
}

/// `GET /v1/environments/{env}/work?limit=&page=` (environment key only).
pub async fn list(
    State(st): State<AppState>,
    Path(env): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = QueryParams::parse(raw.as_deref())?;
    let store = st.lock();
    admit(&store, &st, &headers, Accepts::ENV_KEY, &env, None)?;
    let limit = q.int_in("limit", 1..=1000)?.unwrap_or(20).unsigned_abs() as usize;
    let offset = match q.get("page") {
        None | Some("") => 0,
        Some(p) => p
            .strip_prefix("wpage_")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| ApiError::bad_request("page: not a cursor this server issued"))?,
    };
    let all: Vec<&WorkRecord> = store
        .work_order
        .iter()
        .filter_map(|id| store.work.get(id))
        .filter(|r| r.item.environment_id == env)
        .collect();
    let data: Vec<WorkItem> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(|r| public(r))
        .collect();
    let next = offset + data.len();
    let next_page = (next < all.len()).then(|| format!("wpage_{next}"));
    Ok(Json(Page { data, next_page }).into_response())
}

/// `GET /v1/environments/{env}/work/stats`.
pub async fn stats(
    State(st): State<AppState>,
    Path(env): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let store = st.lock();
    admit(&store, &st, &headers, Accepts::API_OR_ENV_KEY, &env, None)?;
    Ok(Json(queue_stats(&store, &env, st.config.workers_polling_window)).into_response())
}

/// §4.5 for one environment.
pub fn queue_stats(store: &Store, env: &str, window: Duration) -> QueueStats {
    let queued: Vec<&WorkRecord> = store
        .queue
        .iter()
        .filter_map(|id| store.work.get(id))
        .filter(|r| r.item.environment_id == env && r.item.state == WorkState::Queued)
        .collect();
    let pending = queued.iter().filter(|r| r.claimed_at.is_some()).count() as u64;
    let now = Instant::now();
    QueueStats {
        kind: Default::default(),
        depth: queued.len() as u64 - pending,
        pending,
        oldest_queued_at: queued.iter().map(|r| r.item.created_at.clone()).min(),
        workers_polling: Some(
            store
                .pollers
                .values()
                .filter(|t| now.duration_since(**t) <= window)
                .count() as u64,
        ),
    }
}

/// `GET /v1/environments/{env}/work/{work}` (API key only).
pub async fn retrieve(
    State(st): State<AppState>,
    Path((env, work)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut store = st.lock();
    admit(&store, &st, &headers, Accepts::API_KEY, &env, Some(&work))?;
    Ok(Json(public(record(&mut store, &env, &work)?)).into_response())
}

/// `POST /v1/environments/{env}/work/{work}` with a metadata merge patch (API key only).
pub async fn update(
    State(st): State<AppState>,
    Path((env, work)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut store = st.lock();
    admit(&store, &st, &headers, Accepts::API_KEY, &env, Some(&work))?;
    let req: UpdateWorkRequest = parse_json(&body)?;
    for key in req.metadata.keys() {
        if key.is_empty() || key.len() > 64 {
            return Err(ApiError::bad_request(
                "metadata keys must be 1-64 characters",
            ));
        }
    }
    let rec = record(&mut store, &env, &work)?;
    for (k, v) in req.metadata {
        match v {
            Some(v) => {
                rec.item.metadata.insert(k, v);
            }
            None => {
                rec.item.metadata.remove(&k);
            }
        }
    }
    Ok(Json(public(rec)).into_response())
}

/// Sends items whose lease lapsed back to the queue (or leaves them, if so configured).
/// Returns whether anything was re-queued.
pub fn expire_leases(store: &mut Store, now: Instant, requeue: bool) -> bool {
    let mut requeued = Vec::new();
    for (id, rec) in store.work.iter_mut() {
        let held = matches!(rec.item.state, WorkState::Starting | WorkState::Active);
        if !held || rec.lease_expires.is_none_or(|t| t > now) {
            continue;
        }
        rec.lease_expires = None;
        store.counters.lease_expiries += 1;
        if requeue {
            rec.item.state = WorkState::Queued;
            rec.item.acknowledged_at = None;
            rec.item.started_at = None;
            rec.claimed_at = None;
            rec.claimed_by = None;
            rec.last_heartbeat = None;
            rec.ttl_seconds = 0;
            rec.requeues += 1;
            requeued.push(id.clone());
        }
    }
    let any = !requeued.is_empty();
    store.queue.extend(requeued);
    any
}

/// Runs [`expire_leases`] forever at the configured interval.
pub async fn lease_sweeper(st: AppState) {
    let mut tick = tokio::time::interval(st.config.lease_check_interval);
    loop {
        tick.tick().await;
        let requeued = expire_leases(
            &mut st.lock(),
            Instant::now(),
            st.config.requeue_on_lease_expiry,
        );
        if requeued {
            st.queue_changed.notify_waiters();
        }
    }
}
