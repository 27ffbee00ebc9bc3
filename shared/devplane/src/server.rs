//! The HTTP surface: routes, the `request-id` header on every answer, the §2 body for unknown
//! routes and methods, the `slow_ms` fault, and the [`DevPlane`] handle for in-process use.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use hands_protocol::error::ErrorType;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::error::{ApiError, DevplaneError};
use crate::faults::Faults;
use crate::sessions::{self, SessionSpec};
use crate::state::{AppState, Counters, Shared};
use crate::{ids, memory, queue, skills, sse};

/// Builds the router over `state` (usable without a socket, e.g. with `tower::ServiceExt`).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/environments/{env}/work/poll", get(queue::poll))
        .route("/v1/environments/{env}/work/stats", get(queue::stats))
        .route("/v1/environments/{env}/work", get(queue::list))
        .route(
            "/v1/environments/{env}/work/{work}",
            get(queue::retrieve).post(queue::update),
        )
        .route("/v1/environments/{env}/work/{work}/ack", post(queue::ack))
        .route(
            "/v1/environments/{env}/work/{work}/heartbeat",
            post(queue::heartbeat),
        )
        .route("/v1/environments/{env}/work/{work}/stop", post(queue::stop))
        .route("/v1/sessions/{id}", get(sessions::get_session))
        .route(
            "/v1/sessions/{id}/events",
            get(sessions::list_events).post(sessions::post_events),
        )
        .route("/v1/sessions/{id}/events/stream", get(sse::stream))
        .route(
            "/v1/skills/{skill}/versions/{version}",
            get(skills::get_version),
        )
        .route(
            "/v1/skills/{skill}/versions/{version}/content",
            get(skills::get_content),
        )
        .route(
            "/v1/memory_stores/{store}/memories",
            get(memory::list).post(memory::create),
        )
        .route(
            "/v1/memory_stores/{store}/memories/{id}",
            get(memory::retrieve)
                .post(memory::update)
                .delete(memory::delete),
        )
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(state.clone(), around))
        .with_state(state)
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("Not found", "route_not_found")
}

async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorType::InvalidRequest,
        "method not allowed",
    )
}

/// Adds `request-id` where an error did not already set one, and applies `slow_ms`.
async fn around(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let slow = st.lock().faults.faults.slow_ms;
    if let Some(ms) = slow {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    tracing::debug!(method = %req.method(), uri = %req.uri(), "request");
    let mut resp = next.run(req).await;
    if !resp.headers().contains_key("request-id")
        && let Ok(v) = HeaderValue::from_str(&ids::new_id("req"))
    {
        resp.headers_mut().insert("request-id", v);
    }
    resp
}

impl IntoResponse for DevplaneError {
    fn into_response(self) -> Response {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::Api,
            self.to_string(),
        )
        .into_response()
    }
}

/// A running emulator. Dropping it stops the server.
pub struct DevPlane {
    state: AppState,
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl DevPlane {
    /// Binds `listen` (use `127.0.0.1:0` in tests) and serves until dropped.
    pub async fn start(config: Config, listen: &str) -> Result<DevPlane, DevplaneError> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| DevplaneError::Bind {
                addr: listen.to_owned(),
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| DevplaneError::Bind {
                addr: listen.to_owned(),
                source,
            })?;
        // No Nagle: an SSE stream writes one small chunk per event, and a chunk written while
        // the one before is still unacknowledged would otherwise wait for that ACK, which the
        // reader (who sends nothing on the stream) delays by up to 40 ms. The real API answers
        // events as they happen; the emulator must not add a stall it does not have.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "devplane: TCP_NODELAY could not be set");
            }
        });
        let state = Shared::new(config);
        let app = router(state.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "devplane server stopped");
            }
        });
        let sweeper = tokio::spawn(queue::lease_sweeper(state.clone()));
        Ok(DevPlane {
            state,
            addr,
            tasks: vec![server, sweeper],
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn config(&self) -> &Config {
        &self.state.config
    }

    pub fn environment_id(&self) -> &str {
        &self.state.config.environment_id
    }

    pub fn environment_key(&self) -> &str {
        &self.state.config.environment_key
    }

    pub fn api_key(&self) -> &str {
        &self.state.config.api_key
    }

    /// Registers another environment (for cross-environment auth tests); returns its key.
    pub fn add_environment(&self, environment_id: &str) -> String {
        let key = ids::new_token("sk-ant-oat01-devplane-");
        self.state
            .lock()
            .environments
            .insert(environment_id.to_owned(), key.clone());
        key
    }

    /// Creates a session (and its work item) on the default environment.
    pub fn create_session(&self, spec: &SessionSpec) -> Result<String, DevplaneError> {
        sessions::create_session(&self.state, spec)
    }

    /// Appends an agent-side event to a session's log, as the scripted agent does.
    pub fn emit(
        &self,
        session_id: &str,
        event: serde_json::Value,
    ) -> Result<serde_json::Value, DevplaneError> {
        sessions::emit(&self.state, session_id, event).map(|v| v.as_ref().clone())
    }

    /// Enqueues a `healthcheck` item; returns its work id.
    pub fn enqueue_healthcheck(&self) -> String {
        let env = self.state.config.environment_id.clone();
        let id = self.state.lock().enqueue(
            &env,
            hands_protocol::work::WorkData {
                kind: hands_protocol::work::WORK_DATA_HEALTHCHECK.to_owned(),
                id: ids::new_id("hc"),
            },
        );
        self.state.queue_changed.notify_waiters();
        id
    }

    /// The work item currently serving a session.
    pub fn current_work(&self, session_id: &str) -> Option<String> {
        self.state
            .lock()
            .sessions
            .get(session_id)?
            .current_work
            .clone()
    }

    /// The sessions token of a work item (what its `secret` carries).
    pub fn sessions_token(&self, work_id: &str) -> Option<String> {
        Some(self.state.lock().work.get(work_id)?.sessions_token.clone())
    }

    /// A work item as the API would show it.
    pub fn work_item(&self, work_id: &str) -> Option<hands_protocol::work::WorkItem> {
        let store = self.state.lock();
        let rec = store.work.get(work_id)?;
        Some(hands_protocol::work::WorkItem {
            secret: None,
            ..rec.item.clone()
        })
    }

    /// Cuts every open SSE connection of a session.
    pub fn drop_streams(&self, session_id: &str) {
        if let Some(s) = self.state.lock().sessions.get(session_id) {
            s.drop_gen.send_modify(|g| *g += 1);
        }
    }

    /// Replaces the live fault switches (and restarts their counters).
    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().faults.replace(faults);
    }

    /// When the first poll arrived, if one did.
    pub fn first_poll_at(&self) -> Option<std::time::Instant> {
        self.state.lock().first_poll_at
    }

    /// Wall-clock time of the first attempt of a session's run-started webhook.
    pub fn webhook_sent_at(&self, session_id: &str) -> Option<std::time::SystemTime> {
        self.state
            .lock()
            .webhook_first_sent
            .get(session_id)
            .copied()
    }

    pub fn counters(&self) -> Counters {
        self.state.lock().counters.clone()
    }

    /// Creates or replaces the memory at `path` in a store, as another client would.
    pub fn put_memory(&self, store_id: &str, path: &str, content: &str) -> memory::MemoryRecord {
        self.state
            .lock()
            .memory_stores
            .entry(store_id.to_owned())
            .or_default()
            .put(path, content)
    }

    /// Deletes the memory at `path` in a store, as another client would; whether it existed.
    pub fn remove_memory(&self, store_id: &str, path: &str) -> bool {
        let mut store = self.state.lock();
        let Some(mems) = store.memory_stores.get_mut(store_id) else {
            return false;
        };
        let id = mems
            .memories
            .values()
            .find(|m| m.path == path)
            .map(|m| m.id.clone());
        id.is_some_and(|id| mems.memories.remove(&id).is_some())
    }

    /// A store's memories as `{path: content}` (empty for an unknown store).
    pub fn memories(&self, store_id: &str) -> std::collections::BTreeMap<String, String> {
        self.state
            .lock()
            .memory_stores
            .get(store_id)
            .map(memory::MemoryStore::contents)
            .unwrap_or_default()
    }

    /// A store's memory records (ids, versions), ordered by path.
    pub fn memory_records(&self, store_id: &str) -> Vec<memory::MemoryRecord> {
        let store = self.state.lock();
        let mut v: Vec<_> = store
            .memory_stores
            .get(store_id)
            .map(|m| m.memories.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }

    /// Runs a session script to completion and returns its report.
    pub async fn run_script(&self, script: &crate::script::Script) -> crate::report::ScriptReport {
        crate::agent::run(&self.state, script).await
    }
}

impl Drop for DevPlane {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
