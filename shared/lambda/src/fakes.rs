//! Loopback fakes of the two Lambda APIs the functions talk to, for tests (feature `fakes`):
//! - [`FakeRuntime`]: the Lambda Runtime API a function binary polls
//!   (`GET /2018-06-01/runtime/invocation/next`, `POST .../{request_id}/response|error`,
//!   `POST .../init/error`), handing out the invocations a test queues, each with its
//!   `Lambda-Runtime-Deadline-Ms`, and returning what the function answered;
//! - [`FakeInvoke`]: the Lambda `Invoke` API (`POST /2015-03-31/functions/{name}/invocations`),
//!   recording every call (invocation type, tenant id, payload) and answering 202, or a chosen
//!   failure status.
//!
//! Point a function at them with `AWS_LAMBDA_RUNTIME_API=<addr>` and
//! `AWS_ENDPOINT_URL_LAMBDA=http://<addr>` (plus dummy credentials and a region).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio::sync::{Notify, mpsc, oneshot};

/// How one invocation ended, as the function reported it.
#[derive(Clone, Debug, PartialEq)]
pub enum InvocationResult {
    Response(Value),
    Error(Value),
}

struct Pending {
    request_id: String,
    payload: Value,
    deadline: SystemTime,
    done: oneshot::Sender<InvocationResult>,
}

#[derive(Default)]
struct RuntimeState {
    queue: Option<mpsc::UnboundedReceiver<Pending>>,
    /// Invocations handed out, with their deadlines.
    waiting: HashMap<String, (SystemTime, oneshot::Sender<InvocationResult>)>,
    init_errors: Vec<Value>,
    next_calls: u64,
}

/// The fake Runtime API.
pub struct FakeRuntime {
    addr: SocketAddr,
    tx: mpsc::UnboundedSender<Pending>,
    state: Arc<tokio::sync::Mutex<RuntimeState>>,
    counter: Mutex<u64>,
}

impl FakeRuntime {
    pub async fn start() -> std::io::Result<FakeRuntime> {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(tokio::sync::Mutex::new(RuntimeState {
            queue: Some(rx),
            ..RuntimeState::default()
        }));
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeRuntime {
            addr,
            tx,
            state,
            counter: Mutex::new(0),
        })
    }

    /// `AWS_LAMBDA_RUNTIME_API` for the function: `127.0.0.1:<port>`.
    pub fn api(&self) -> String {
        self.addr.to_string()
    }

    /// Queues an invocation with `payload` and a deadline `timeout` from now; resolves with
    /// what the function answered.
    pub fn invoke(&self, payload: Value, timeout: Duration) -> oneshot::Receiver<InvocationResult> {
        let (done, rx) = oneshot::channel();
        let n = {
            let mut c = self.counter.lock().unwrap_or_else(|p| p.into_inner());
            *c += 1;
            *c
        };
        let _ = self.tx.send(Pending {
            request_id: format!("req-{n:04}"),
            payload,
            deadline: SystemTime::now() + timeout,
            done,
        });
        rx
    }

    /// Bodies the function posted to `/runtime/init/error`.
    pub async fn init_errors(&self) -> Vec<Value> {
        self.state.lock().await.init_errors.clone()
    }

    /// How many times the function asked for its next invocation.
    pub async fn next_calls(&self) -> u64 {
        self.state.lock().await.next_calls
    }
}

async fn next(State(state): State<Arc<tokio::sync::Mutex<RuntimeState>>>) -> Response {
    // One poller at a time (a function has one runtime loop); hold the receiver while waiting.
    let mut rx = {
        let mut s = state.lock().await;
        s.next_calls += 1;
        match s.queue.take() {
            Some(rx) => rx,
            None => return (StatusCode::CONFLICT, "another poller is waiting").into_response(),
        }
    };
    let pending = rx.recv().await;
    let mut s = state.lock().await;
    s.queue = Some(rx);
    let Some(p) = pending else {
        return (StatusCode::GONE, "runtime closed").into_response();
    };
    s.waiting.insert(p.request_id.clone(), (p.deadline, p.done));
    let deadline_ms = p
        .deadline
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let mut resp = p.payload.to_string().into_response();
    let headers = resp.headers_mut();
    let mut put = |k: &'static str, v: String| {
        if let Ok(v) = http::HeaderValue::from_str(&v) {
            headers.insert(k, v);
        }
    };
    put("lambda-runtime-aws-request-id", p.request_id);
    put("lambda-runtime-deadline-ms", deadline_ms.to_string());
    put(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:000000000000:function:fake".into(),
    );
    put(
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000".into(),
    );
    put("content-type", "application/json".into());
    resp
}

async fn finish(
    state: &tokio::sync::Mutex<RuntimeState>,
    id: &str,
    result: InvocationResult,
) -> Response {
    match state.lock().await.waiting.remove(id) {
        // Lambda kills an invocation at its deadline: an answer after it never arrives, so the
        // caller sees a timeout, not the late answer.
        Some((deadline, done)) if SystemTime::now() > deadline => {
            let late_ms = SystemTime::now()
                .duration_since(deadline)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            let _ = done.send(InvocationResult::Error(serde_json::json!({
                "errorType": "Sandbox.Timedout",
                "errorMessage": format!("Task timed out: answered {late_ms} ms after the deadline"),
            })));
            (StatusCode::GONE, "the invocation timed out").into_response()
        }
        Some((_, done)) => {
            let _ = done.send(result);
            (StatusCode::ACCEPTED, "{\"status\":\"OK\"}").into_response()
        }
        None => (StatusCode::BAD_REQUEST, "unknown request id").into_response(),
    }
}

fn json_or_text(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

async fn response(
    State(state): State<Arc<tokio::sync::Mutex<RuntimeState>>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    finish(&state, &id, InvocationResult::Response(json_or_text(&body))).await
}

async fn error(
    State(state): State<Arc<tokio::sync::Mutex<RuntimeState>>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    finish(&state, &id, InvocationResult::Error(json_or_text(&body))).await
}

async fn init_error(
    State(state): State<Arc<tokio::sync::Mutex<RuntimeState>>>,
    body: Bytes,
) -> Response {
    state.lock().await.init_errors.push(json_or_text(&body));
    (StatusCode::ACCEPTED, "{\"status\":\"OK\"}").into_response()
}

/// One recorded `Invoke` call.
#[derive(Clone, Debug)]
pub struct InvokeCall {
    pub function: String,
    /// `X-Amz-Invocation-Type` (`Event` for an async invoke).
    pub invocation_type: Option<String>,
    /// `X-Amz-Tenant-Id`.
    pub tenant_id: Option<String>,
    pub payload: Value,
}

#[derive(Default)]
struct InvokeState {
    calls: Vec<InvokeCall>,
    /// Answer this status instead of 202 while set.
    fail_with: Option<u16>,
}

/// The fake Invoke API.
#[derive(Clone)]
pub struct FakeInvoke {
    addr: SocketAddr,
    state: Arc<Mutex<InvokeState>>,
    notify: Arc<Notify>,
}

impl FakeInvoke {
    pub async fn start() -> std::io::Result<FakeInvoke> {
        let state = Arc::new(Mutex::new(InvokeState::default()));
        let notify = Arc::new(Notify::new());
        let app = Router::new()
            .route("/2015-03-31/functions/{name}/invocations", post(invoke))
            .with_state((Arc::clone(&state), Arc::clone(&notify)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeInvoke {
            addr,
            state,
            notify,
        })
    }

    /// `AWS_ENDPOINT_URL_LAMBDA` for the function.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calls(&self) -> Vec<InvokeCall> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .calls
            .clone()
    }

    /// Answer `status` to every call from now on (`None`: 202 again).
    pub fn fail_with(&self, status: Option<u16>) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .fail_with = status;
    }

    /// Waits until at least `n` calls were recorded, or `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<InvokeCall> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            let calls = self.calls();
            if calls.len() >= n || tokio::time::Instant::now() >= deadline {
                return calls;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }
}

type InvokeShared = (Arc<Mutex<InvokeState>>, Arc<Notify>);

async fn invoke(
    State((state, notify)): State<InvokeShared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let call = InvokeCall {
        function: name,
        invocation_type: header("x-amz-invocation-type"),
        tenant_id: header("x-amz-tenant-id"),
        payload: json_or_text(&body),
    };
    let fail = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.calls.push(call);
        s.fail_with
    };
    notify.notify_waiters();
    match fail {
        Some(status) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            [("x-amzn-errortype", "ServiceException")],
            "{\"Type\":\"Service\",\"message\":\"injected failure\"}",
        )
            .into_response(),
        None => (StatusCode::ACCEPTED, "").into_response(),
    }
}

/// A function binary started against the fakes; killed when dropped.
pub struct FunctionProcess {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl FunctionProcess {
    /// Starts `binary` with a clean environment: `PATH` and `HOME` kept, every `ANTHROPIC_*`,
    /// `HANDS_*` and `AWS_*` variable of the test process removed, then `env` applied. Its
    /// stderr goes to `log`.
    pub fn spawn(
        binary: &str,
        env: &[(String, String)],
        log: std::path::PathBuf,
    ) -> std::io::Result<FunctionProcess> {
        let mut cmd = std::process::Command::new(binary);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("ANTHROPIC_")
                || k.starts_with("HANDS_")
                || k.starts_with("AWS_")
                || k == "RUST_LOG"
            {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        Ok(FunctionProcess {
            child: cmd.spawn()?,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the function logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment Lambda gives a function (the runtime's required variables, a region,
/// dummy credentials standing for the execution role's), pointed at the fakes.
pub fn lambda_env(
    runtime: &FakeRuntime,
    invoke: &FakeInvoke,
    function_name: &str,
    credentials_canary: &str,
) -> Vec<(String, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", runtime.api()),
        ("AWS_LAMBDA_FUNCTION_NAME", function_name.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024".to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", format!("AKIA{credentials_canary}")),
        ("AWS_SECRET_ACCESS_KEY", credentials_canary.to_owned()),
        ("AWS_SESSION_TOKEN", credentials_canary.to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("AWS_ENDPOINT_URL_LAMBDA", invoke.endpoint()),
        ("RUST_LOG", "info".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}
