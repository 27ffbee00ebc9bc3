//! The emulator's shared state: environments, work items, sessions and their event logs,
//! credentials, fault switches and counters. One mutex guards it all; it is never held across an
//! `.await`, so handlers stay simple and the state is always consistent.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

use hands_protocol::session::SkillRef;
use hands_protocol::work::{WorkData, WorkItem, WorkState};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Notify, broadcast, watch};

use crate::config::Config;
use crate::faults::FaultState;
use crate::ids;

/// One work item and what the emulator tracks about it.
#[derive(Debug)]
pub struct WorkRecord {
    pub item: WorkItem,
    /// The sessions token handed out in `secret`.
    pub sessions_token: String,
    /// When a poll last claimed it (pending until acked).
    pub claimed_at: Option<Instant>,
    pub claimed_by: Option<String>,
    /// The stored heartbeat token (`None` = no heartbeat yet).
    pub last_heartbeat: Option<String>,
    pub lease_expires: Option<Instant>,
    pub ttl_seconds: u64,
    /// Whether the final stop was a force stop.
    pub force_stopped: bool,
    /// How many times a lapsed lease put it back in the queue.
    pub requeues: u32,
}

/// What the emulator knows about one tool call of a session.
#[derive(Debug, Clone)]
pub struct ToolCall {
    pub custom: bool,
    pub name: String,
    pub thread: Option<String>,
    /// Resolved without a result: `deny` permission or a denied confirmation.
    pub denied: bool,
    /// The accepted result event, once posted.
    pub result: Option<Value>,
    /// When the request that carried the accepted result reached devplane (read whole, not yet
    /// decoded): with the emit instant, the round trip as devplane sees it (what the
    /// end-to-end benchmark reports).
    pub answered_at: Option<Instant>,
}

/// A session: status, agent snapshot bits, and its append-only event log.
#[derive(Debug)]
pub struct SessionRecord {
    pub id: String,
    pub environment_id: String,
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
    pub title: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub skills: Vec<SkillRef>,
    pub tools: Vec<Value>,
    pub resources: Vec<Value>,
    pub events: Vec<Arc<Value>>,
    pub calls: HashMap<String, ToolCall>,
    pub terminated_threads: HashSet<String>,
    pub tx: broadcast::Sender<Arc<Value>>,
    /// Bumped to cut every open SSE connection of this session.
    pub drop_gen: watch::Sender<u64>,
    /// Woken when a worker opens the session's event stream, so the scripted agent starts at
    /// once instead of on its next re-check.
    pub attached: Arc<Notify>,
    pub current_work: Option<String>,
}

impl SessionRecord {
    /// Tool calls still waiting for a result, in emission order.
    pub fn open_calls(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| e.get("id").and_then(Value::as_str))
            .filter(|id| {
                self.calls.get(*id).is_some_and(|c| {
                    c.result.is_none()
                        && !c.denied
                        && !c
                            .thread
                            .as_ref()
                            .is_some_and(|t| self.terminated_threads.contains(t))
                })
            })
            .map(str::to_owned)
            .collect()
    }
}

/// Observable counts for tests and reports.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Counters {
    pub polls: u64,
    pub empty_polls: u64,
    pub claims: u64,
    pub acks: u64,
    pub heartbeats: u64,
    pub heartbeat_412s: u64,
    pub stops: u64,
    pub force_stops: u64,
    pub lease_expiries: u64,
    pub session_gets: u64,
    pub event_lists: u64,
    pub sse_connections: u64,
    pub sse_drops: u64,
    pub result_posts: u64,
    pub rejected_posts: u64,
    pub injected_post_failures: u64,
    pub resets_after_commit: u64,
    pub injected_heartbeat_failures: u64,
    pub heartbeat_resets_after_commit: u64,
    /// Acks that lost an injected race (`ack_race`).
    pub raced_acks: u64,
    pub skill_version_gets: u64,
    pub skill_downloads: u64,
    pub webhook_attempts: u64,
    pub webhook_deliveries: u64,
    pub memory_lists: u64,
    pub memory_gets: u64,
    /// Creates and updates that were stored.
    pub memory_writes: u64,
    pub memory_deletes: u64,
    /// Updates and deletes refused by their precondition (409).
    pub memory_conflicts: u64,
    pub injected_memory_failures: u64,
    /// Stored writes per `store:path` (more than one for an unchanged file is a double upload).
    pub memory_writes_by_path: BTreeMap<String, u32>,
    /// Accepted results per tool-use id (more than 1 is impossible: duplicates are rejected).
    pub results_by_tool_use: BTreeMap<String, u32>,
    /// Every post that named a tool-use id, accepted or not (shows retries and duplicates).
    pub result_attempts_by_tool_use: BTreeMap<String, u32>,
    /// Worker ids seen on polls.
    pub worker_ids: Vec<String>,
}

/// Everything behind the mutex.
#[derive(Debug, Default)]
pub struct Store {
    /// environment id -> environment key.
    pub environments: HashMap<String, String>,
    pub work: HashMap<String, WorkRecord>,
    /// FIFO of work ids that are queued (claimed or not).
    pub queue: Vec<String>,
    /// Creation order of all work ids, for listing.
    pub work_order: Vec<String>,
    pub sessions: HashMap<String, SessionRecord>,
    /// memory store id -> its memories.
    pub memory_stores: HashMap<String, crate::memory::MemoryStore>,
    /// sessions token -> work id.
    pub tokens: HashMap<String, String>,
    /// worker id -> last poll.
    pub pollers: HashMap<String, Instant>,
    pub faults: FaultState,
    pub counters: Counters,
    /// When the first poll arrived (a worker's cold start ends there).
    pub first_poll_at: Option<Instant>,
    /// Session id -> wall-clock time of the first attempt of its run-started webhook (wall
    /// clock, so it compares with timestamps taken by tool processes).
    pub webhook_first_sent: HashMap<String, SystemTime>,
}

impl Store {
    /// Creates a work item for `data` and puts it at the back of the queue.
    pub fn enqueue(&mut self, environment_id: &str, data: WorkData) -> String {
        let id = ids::new_id("work");
        let token = ids::new_token("sk-ant-sit01-devplane-");
        let item = WorkItem {
            kind: Default::default(),
            id: id.clone(),
            environment_id: environment_id.to_owned(),
            data,
            state: WorkState::Queued,
            metadata: BTreeMap::new(),
            secret: None,
            created_at: ids::now_rfc3339(),
            acknowledged_at: None,
            started_at: None,
            latest_heartbeat_at: None,
            stop_requested_at: None,
            stopped_at: None,
        };
        self.tokens.insert(token.clone(), id.clone());
        self.work.insert(
            id.clone(),
            WorkRecord {
                item,
                sessions_token: token,
                claimed_at: None,
                claimed_by: None,
                last_heartbeat: None,
                lease_expires: None,
                ttl_seconds: 0,
                force_stopped: false,
                requeues: 0,
            },
        );
        self.queue.push(id.clone());
        self.work_order.push(id.clone());
        id
    }

    /// Appends an event to a session's log with a fresh `sevt_` id and `processed_at`, and
    /// publishes it to the session's live streams. Returns the stored event.
    pub fn append_event(&mut self, session_id: &str, mut event: Value) -> Option<Arc<Value>> {
        let session = self.sessions.get_mut(session_id)?;
        if let Value::Object(map) = &mut event {
            map.insert("id".into(), Value::String(ids::new_id("sevt")));
            map.insert("processed_at".into(), Value::String(ids::now_rfc3339()));
        }
        let event = Arc::new(event);
        session.events.push(event.clone());
        // No receivers is normal (no worker attached yet): history covers it.
        let _ = session.tx.send(event.clone());
        Some(event)
    }
}

/// Shared by every handler, the scripted agent and the library handle.
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    store: Mutex<Store>,
    /// Woken whenever the queue may have something claimable.
    pub queue_changed: Notify,
}

pub type AppState = Arc<Shared>;

impl Shared {
    pub fn new(config: Config) -> AppState {
        let mut store = Store::default();
        store.environments.insert(
            config.environment_id.clone(),
            config.environment_key.clone(),
        );
        store.faults = FaultState::new(config.faults.clone());
        Arc::new(Shared {
            config,
            store: Mutex::new(store),
            queue_changed: Notify::new(),
        })
    }

    /// Locks the store. A panic elsewhere cannot wedge the emulator: poisoning is ignored
    /// because every mutation leaves the store consistent before it can panic.
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
