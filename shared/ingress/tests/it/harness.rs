//! A devplane + ingress stack on loopback, signed deliveries, and a raw HTTP/1.1 client that
//! sends exactly the bytes a test wants (duplicate headers, odd paths, trickles).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hands_client::{ClientConfig, ControlPlane, Credential};
use hands_devplane::{Config, DevPlane};
use hands_ingress::server::{self, ServeOutcome};
use hands_ingress::{Ingress, IngressConfig, ServerConfig, parse_secret_list};
use hands_protocol::webhook::{SigningSecret, sign};
use hands_worker::{WorkdirTemplate, WorkerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The production-shaped key of PROTOCOL.md §10.5 example C.
pub const SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// Another valid 32-byte key (rotation, wrong-secret tests).
pub const OTHER_SECRET: &str = "whsec_ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

/// Upper bound on any single wait, so a broken server fails a test instead of hanging it.
pub const GUARD: Duration = Duration::from_secs(30);

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub struct Options {
    pub devplane: Config,
    pub ingress: IngressConfig,
    pub server: ServerConfig,
    /// `None`: start without a signing key.
    pub secrets: Option<String>,
    /// Point the worker at this base URL instead of devplane (a dead port for W22).
    pub base_url: Option<String>,
    /// Use this environment key instead of devplane's (C3).
    pub environment_key: Option<String>,
    /// Use this environment id instead of devplane's (C2).
    pub environment_id: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            devplane: Config::default(),
            ingress: IngressConfig {
                body_timeout: Duration::from_millis(500),
                ..IngressConfig::default()
            },
            server: ServerConfig {
                header_timeout: Duration::from_millis(500),
                shutdown_grace: Duration::from_secs(20),
                // Off unless a test wants it, so polls come from deliveries only.
                drain_interval: None,
                ..ServerConfig::default()
            },
            secrets: Some(SECRET.to_owned()),
            base_url: None,
            environment_key: None,
            environment_id: None,
        }
    }
}

pub struct Stack {
    pub dp: DevPlane,
    pub ingress: Ingress,
    pub addr: SocketAddr,
    stop: CancellationToken,
    server: Option<JoinHandle<ServeOutcome>>,
    _scratch: tempfile::TempDir,
}

impl Stack {
    pub async fn start(options: Options) -> Stack {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, options).await
    }

    /// Starts on a listener bound earlier, so devplane's webhook sender can be given its URL.
    pub async fn start_on(listener: TcpListener, options: Options) -> Stack {
        let addr = listener.local_addr().unwrap();
        let dp = DevPlane::start(options.devplane, "127.0.0.1:0")
            .await
            .unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let base = options.base_url.unwrap_or_else(|| dp.base_url());
        let cp = ControlPlane::new(ClientConfig::with_base_url(base)).unwrap();
        let template = WorkdirTemplate::new(format!("{}/{{session_id}}", scratch.path().display()));
        let env = options
            .environment_id
            .unwrap_or_else(|| dp.environment_id().to_owned());
        let mut worker = WorkerConfig::new(env, template);
        let key = options
            .environment_key
            .unwrap_or_else(|| dp.environment_key().to_owned());
        worker.environment_key = Some(Credential::environment_key(key));
        worker.max_idle = Some(Duration::from_millis(300));
        let ingress = Ingress::new(cp, worker, options.ingress);
        if let Some(s) = &options.secrets {
            ingress.set_verifier(parse_secret_list(s).unwrap());
        }
        let stop = CancellationToken::new();
        let server = tokio::spawn(server::serve(
            listener,
            ingress.clone(),
            options.server,
            stop.clone(),
        ));
        Stack {
            dp,
            ingress,
            addr,
            stop,
            server: Some(server),
            _scratch: scratch,
        }
    }

    pub fn polls(&self) -> u64 {
        self.dp.counters().polls
    }

    pub async fn send(&self, d: &Delivery) -> Reply {
        exchange(self.addr, &d.request("/webhook")).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        exchange(
            self.addr,
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
    }

    /// What SIGTERM does in `hands serve`: returns once the server stopped.
    pub async fn shutdown(&mut self) -> ServeOutcome {
        self.stop.cancel();
        let server = self.server.take().unwrap();
        tokio::time::timeout(GUARD * 2, server)
            .await
            .unwrap()
            .unwrap()
    }
}

/// One delivery, built from parts so a test can break any of them.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
    /// Extra header lines, sent after the webhook headers.
    pub extra: Vec<(String, String)>,
    /// Webhook headers to leave out (`webhook-id`, ...).
    pub omit: Vec<&'static str>,
    pub content_type: Option<String>,
}

pub fn event_body(id: &str, kind: &str, session_id: &str) -> Vec<u8> {
    serde_json::json!({
        "type": "event", "id": id, "created_at": "2026-03-18T14:05:22Z",
        "data": {"type": kind, "id": session_id, "organization_id": "org_1", "workspace_id": "wrkspc_1"}
    })
    .to_string()
    .into_bytes()
}

impl Delivery {
    /// A `session.status_run_started` delivery signed with `secret` now.
    pub fn run_started(secret: &str) -> Delivery {
        let id = format!("whe_{:016x}", rand_u64());
        let body = event_body(&id, "session.status_run_started", "sesn_test");
        Delivery::signed(secret, &id, now(), body)
    }

    /// A delivery of another event type, signed now: verified, then ignored (no polls).
    pub fn of_type(secret: &str, kind: &str) -> Delivery {
        let id = format!("whe_{:016x}", rand_u64());
        let body = event_body(&id, kind, "sesn_test");
        Delivery::signed(secret, &id, now(), body)
    }

    pub fn signed(secret: &str, id: &str, timestamp: i64, body: Vec<u8>) -> Delivery {
        let key = SigningSecret::parse(secret).unwrap();
        Delivery {
            id: id.to_owned(),
            timestamp: timestamp.to_string(),
            signature: sign(&key, id, timestamp, &body),
            body,
            extra: Vec::new(),
            omit: Vec::new(),
            content_type: Some("application/json".into()),
        }
    }

    /// Re-signs after a test changed the id, timestamp or body.
    pub fn resign(mut self, secret: &str) -> Delivery {
        let key = SigningSecret::parse(secret).unwrap();
        let ts: i64 = self.timestamp.parse().unwrap();
        self.signature = sign(&key, &self.id, ts, &self.body);
        self
    }

    pub fn request(&self, path: &str) -> Vec<u8> {
        self.request_with(path, true)
    }

    pub fn request_with(&self, path: &str, close: bool) -> Vec<u8> {
        let mut head = format!("POST {path} HTTP/1.1\r\nhost: x\r\n");
        for (name, value) in [
            ("webhook-id", &self.id),
            ("webhook-timestamp", &self.timestamp),
            ("webhook-signature", &self.signature),
        ] {
            if !self.omit.contains(&name) {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        for (name, value) in &self.extra {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(ct) = &self.content_type {
            head.push_str(&format!("content-type: {ct}\r\n"));
        }
        head.push_str(&format!("content-length: {}\r\n", self.body.len()));
        if close {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now() as u64);
    h.finish()
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` on a new connection and reads the response until the server closes.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_reply(&mut stream).await
}

pub async fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let read = tokio::time::timeout(GUARD, async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    parse_reply(&raw)
}

pub fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Waits until `cond` holds, checking every 50 ms, at most [`GUARD`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + GUARD;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether a process whose command line contains `marker` is running.
pub fn process_running(marker: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| {
                let c: Vec<u8> = c.iter().map(|&b| if b == 0 { b' ' } else { b }).collect();
                String::from_utf8_lossy(&c).contains(marker)
            })
            .unwrap_or(false)
    })
}

/// Like [`exchange`] for requests the server may refuse while they are still being sent (a
/// 1 MB header, a body past the limit): writes on one task, reads on another, ignores write
/// errors, and returns the response if one arrived before the connection was reset.
pub async fn exchange_lenient(addr: SocketAddr, request: &[u8]) -> Option<Reply> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let request = request.to_vec();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        wr
    });
    let mut raw = Vec::new();
    let read = tokio::time::timeout(GUARD, async {
        let mut buf = [0u8; 8192];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    writer.abort();
    let text = String::from_utf8_lossy(&raw);
    text.contains("\r\n\r\n").then(|| parse_reply(&raw))
}
