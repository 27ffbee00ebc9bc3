//! Work endpoints (PROTOCOL.md §5): poll, ack, heartbeat, stop, list, stats.

use std::time::Duration;

use hands_protocol::work::{
    HeartbeatResponse, LeaseState, Page, QueueStats, StopRequest, WorkItem,
};
use reqwest::{Method, StatusCode};

use crate::client::{Call, ControlPlane, decode, segment};
use crate::credential::Credential;
use crate::error::ApiError;

/// Options of one poll.
#[derive(Clone, Debug, Default)]
pub struct PollOptions {
    /// Long-poll wait, 1-999 ms; `None` = non-blocking (drain mode).
    pub block_ms: Option<u32>,
    /// Reclaim unacknowledged items older than this (the server defaults to 5000 ms).
    pub reclaim_older_than_ms: Option<u64>,
    /// Sent as `Anthropic-Worker-ID` so the queue can count pollers.
    pub worker_id: Option<String>,
}

/// How a stop request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopOutcome {
    Stopped,
    /// 409: it was already stopped; every reference client treats this as done (§5.4).
    AlreadyStopped,
}

/// How a heartbeat ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Heartbeat {
    /// 200: the lease answer (which may still say "shut down", see
    /// [`HeartbeatResponse::ends_lease`]).
    Beat(HeartbeatResponse),
    /// 412: someone else holds the lease or the item was re-queued; the lease is lost (§5.3).
    /// Carries the server's view of the lease when it sent one.
    LeaseLost(Option<LeaseState>),
}

fn work_path(env: &str, rest: &str) -> String {
    format!("/v1/environments/{}/work{rest}", segment(env))
}

impl ControlPlane {
    /// Claims the next item, if any. Every empty form is `None`: 200 `null`, 200 with an empty
    /// body, 204, or an object with an empty `id` (§5.1).
    pub async fn poll(
        &self,
        credential: &Credential,
        environment_id: &str,
        opts: &PollOptions,
    ) -> Result<Option<WorkItem>, ApiError> {
        let path = work_path(environment_id, "/poll");
        let mut call = Call::new(Method::GET, path.clone(), credential);
        if let Some(ms) = opts.block_ms {
            call = call.query("block_ms", ms.clamp(1, 999));
            call = call.timeout(
                self.config().request_timeout + Duration::from_millis(u64::from(ms.min(999))),
            );
        }
        if let Some(ms) = opts.reclaim_older_than_ms {
            call = call.query("reclaim_older_than_ms", ms);
        }
        if let Some(id) = &opts.worker_id {
            call = call.header("anthropic-worker-id", id.clone());
        }
        let reply = self.send(call).await?;
        if reply.status == StatusCode::NO_CONTENT || reply.body.iter().all(u8::is_ascii_whitespace)
        {
            return Ok(None);
        }
        let value: serde_json::Value = decode(&path, &reply.body)?;
        if value.is_null() || value.get("id").and_then(|v| v.as_str()) == Some("") {
            return Ok(None);
        }
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| ApiError::Decode {
                path,
                message: e.to_string(),
            })
    }

    /// Acknowledges a claimed item (`queued` -> `starting`).
    pub async fn ack(
        &self,
        credential: &Credential,
        environment_id: &str,
        work_id: &str,
    ) -> Result<(), ApiError> {
        let path = work_path(environment_id, &format!("/{}/ack", segment(work_id)));
        self.send(Call::new(Method::POST, path, credential)).await?;
        Ok(())
    }

    /// Compare-and-set heartbeat: `expected` is `NO_HEARTBEAT` first, then the previous
    /// answer's `last_heartbeat` verbatim (percent-encoded by the query encoder).
    pub async fn heartbeat(
        &self,
        credential: &Credential,
        environment_id: &str,
        work_id: &str,
        expected: &str,
        desired_ttl_seconds: Option<u64>,
        timeout: Duration,
    ) -> Result<Heartbeat, ApiError> {
        let path = work_path(environment_id, &format!("/{}/heartbeat", segment(work_id)));
        let mut call = Call::new(Method::POST, path.clone(), credential)
            .query("expected_last_heartbeat", expected)
            .timeout(timeout);
        if let Some(ttl) = desired_ttl_seconds {
            call = call.query("desired_ttl_seconds", ttl);
        }
        match self.send(call).await {
            Ok(reply) => Ok(Heartbeat::Beat(decode(&path, &reply.body)?)),
            Err(e) if e.status() == Some(StatusCode::PRECONDITION_FAILED) => {
                let state = e
                    .body()
                    .and_then(|b| b.error.details.as_ref())
                    .and_then(|d| d.get("current_state"))
                    .and_then(|v| serde_json::from_value(v.clone()).ok());
                Ok(Heartbeat::LeaseLost(state))
            }
            Err(e) => Err(e),
        }
    }

    /// Stops an item: graceful (`force: false`, body `{}`) or immediate. Accepts 200 with the
    /// item or 204 empty; 409 means it was already stopped.
    pub async fn stop(
        &self,
        credential: &Credential,
        environment_id: &str,
        work_id: &str,
        force: bool,
    ) -> Result<StopOutcome, ApiError> {
        let path = work_path(environment_id, &format!("/{}/stop", segment(work_id)));
        let body = StopRequest {
            force: force.then_some(true),
        };
        let call = Call::new(Method::POST, path, credential).json(&body)?;
        match self.send(call).await {
            Ok(_) => Ok(StopOutcome::Stopped),
            Err(e) if e.status() == Some(StatusCode::CONFLICT) => Ok(StopOutcome::AlreadyStopped),
            Err(e) => Err(e),
        }
    }

    /// Queue depth, pending, oldest item and pollers (§5.8).
    pub async fn stats(
        &self,
        credential: &Credential,
        environment_id: &str,
    ) -> Result<QueueStats, ApiError> {
        let path = work_path(environment_id, "/stats");
        let reply = self
            .send(Call::new(Method::GET, path.clone(), credential))
            .await?;
        decode(&path, &reply.body)
    }

    /// One page of the environment's work items (§5.5).
    pub async fn list_work(
        &self,
        credential: &Credential,
        environment_id: &str,
        limit: Option<u32>,
        page: Option<&str>,
    ) -> Result<Page<WorkItem>, ApiError> {
        let path = work_path(environment_id, "");
        let mut call = Call::new(Method::GET, path.clone(), credential);
        if let Some(limit) = limit {
            call = call.query("limit", limit);
        }
        if let Some(page) = page {
            call = call.query("page", page);
        }
        let reply = self.send(call).await?;
        decode(&path, &reply.body)
    }
}
