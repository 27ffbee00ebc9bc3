//! The forward proxy: authenticate the session, apply the policy, guard addresses, then tunnel,
//! forward, or terminate TLS and forward with the secret attached.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use secrecy::ExposeSecret;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

use crate::audit::{AuditRecord, EgressMetrics};
use crate::ca::{CaError, WorkerCa};
use crate::policy::{
    Action, ConnectVerdict, Piece, Policy, RequestFacts, Rule, Template, Verdict, is_hop_by_hop,
    normalize_host,
};
use crate::redact::{MIN_SECRET_LEN, Needles, Redactor};
use crate::resolve::Resolver;
use crate::secrets::{SecretError, SecretSource};
use crate::sessions::{Admission, SessionEntry, SessionGrant, SessionRegistry};
use crate::tls::{UpstreamRoots, UpstreamTlsError, client_config};

/// How long a connection to an upstream may take before the request fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// How to start a proxy.
pub struct EgressConfig {
    pub policy: Policy,
    /// Loopback by default: sessions reach it from the host network (tier 0/1) or through the
    /// unix-socket relay (tier 2).
    pub listen: SocketAddr,
    pub upstream_roots: UpstreamRoots,
    pub resolver: Resolver,
    /// Where the proxy makes its own directory for the CA bundle file tool code reads (must be
    /// readable inside the sandbox): `hands-egress-XXXXXX`, created exclusively with a random
    /// name (so a directory another local user made beforehand is never used), mode 0700 (tool
    /// code runs as the worker's user), removed when the proxy is dropped.
    pub bundle_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(
        "secret {0:?} is shorter than {MIN_SECRET_LEN} bytes: too short to strip from responses safely"
    )]
    ShortSecret(String),
    #[error(
        "the value injected into header {header} (rule at line {line}) is not a valid header value"
    )]
    BadHeaderValue { header: String, line: usize },
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    UpstreamTls(#[from] UpstreamTlsError),
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot write the CA bundle into {dir}: {error}")]
    Bundle { dir: String, error: std::io::Error },
}

/// A running proxy. Dropping it stops accepting connections.
pub struct EgressProxy {
    addr: SocketAddr,
    state: Arc<State>,
    ca_bundle: PathBuf,
    /// Owns the bundle's directory: removed with the proxy.
    _bundle_dir: tempfile::TempDir,
    system_roots: usize,
    stop: watch::Sender<bool>,
    accept_task: JoinHandle<()>,
}

struct State {
    policy: Policy,
    /// Resolved injections, by rule index.
    injections: Vec<Option<ResolvedInjection>>,
    sessions: Arc<SessionRegistry>,
    metrics: Arc<EgressMetrics>,
    ca: WorkerCa,
    upstream_tls: tokio_rustls::TlsConnector,
    resolver: Resolver,
}

struct ResolvedInjection {
    headers: Vec<(HeaderName, HeaderValue)>,
    needles: Needles,
    /// For the audit line: the secrets' names, comma-separated.
    secret_names: String,
}

impl EgressProxy {
    /// Resolves every secret the policy names, creates the CA and its bundle, and listens.
    pub async fn start(
        config: EgressConfig,
        secrets: &dyn SecretSource,
    ) -> Result<EgressProxy, EgressError> {
        let mut injections = Vec::with_capacity(config.policy.rules().len());
        for rule in config.policy.rules() {
            injections.push(match &rule.action {
                Action::Inject(inj) => Some(resolve_injection(rule, inj, secrets).await?),
                _ => None,
            });
        }
        let ca = WorkerCa::generate()?;
        let bundle_error = |error| EgressError::Bundle {
            dir: config.bundle_dir.display().to_string(),
            error,
        };
        std::fs::create_dir_all(&config.bundle_dir).map_err(bundle_error)?;
        let bundle_dir = tempfile::Builder::new()
            .prefix("hands-egress-")
            .tempdir_in(&config.bundle_dir)
            .map_err(bundle_error)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(bundle_dir.path(), std::fs::Permissions::from_mode(0o700))
                .map_err(bundle_error)?;
        }
        let (ca_bundle, system_roots) = ca.write_bundle(bundle_dir.path()).map_err(bundle_error)?;
        let upstream_tls = tokio_rustls::TlsConnector::from(client_config(&config.upstream_roots)?);
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|error| EgressError::Bind {
                    addr: config.listen,
                    error,
                })?;
        let addr = listener.local_addr().map_err(|error| EgressError::Bind {
            addr: config.listen,
            error,
        })?;
        let state = Arc::new(State {
            policy: config.policy,
            injections,
            sessions: Arc::new(SessionRegistry::new()),
            metrics: Arc::new(EgressMetrics::default()),
            ca,
            upstream_tls,
            resolver: config.resolver,
        });
        let (stop, stopped) = watch::channel(false);
        let accept_task = tokio::spawn(accept_loop(listener, state.clone(), stopped));
        tracing::info!(
            %addr,
            rules = state.policy.rules().len(),
            secrets = state.policy.secret_names().len(),
            ca_bundle = %ca_bundle.display(),
            "egress proxy listening"
        );
        Ok(EgressProxy {
            addr,
            state,
            ca_bundle,
            _bundle_dir: bundle_dir,
            system_roots,
            stop,
            accept_task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn sessions(&self) -> &Arc<SessionRegistry> {
        &self.state.sessions
    }

    pub fn metrics(&self) -> &Arc<EgressMetrics> {
        &self.state.metrics
    }

    /// The bundle tool code trusts: system roots plus this worker's CA certificate.
    pub fn ca_bundle(&self) -> &std::path::Path {
        &self.ca_bundle
    }

    /// How many system roots went into the bundle (0 means only intercepted hosts will verify).
    pub fn system_roots(&self) -> usize {
        self.system_roots
    }

    pub fn ca_cert_pem(&self) -> &str {
        self.state.ca.cert_pem()
    }

    /// The variables a session's tools need: the proxy (with that session's credential) under
    /// every name git, curl, pip, npm and cargo read, and the CA bundle likewise.
    pub fn tool_env(&self, grant: &SessionGrant) -> Vec<(&'static str, String)> {
        let url = grant.proxy_url(self.addr).expose_secret().to_string();
        let bundle = self.ca_bundle.display().to_string();
        let mut env: Vec<(&'static str, String)> = [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ]
        .into_iter()
        .map(|k| (k, url.clone()))
        .collect();
        // A dev server the agent starts in its workspace stays reachable: loopback is never
        // proxied (the proxy would refuse it anyway, as a private address).
        for k in ["NO_PROXY", "no_proxy"] {
            env.push((k, LOOPBACK_NO_PROXY.to_string()));
        }
        for k in [
            "SSL_CERT_FILE",
            "GIT_SSL_CAINFO",
            "CURL_CA_BUNDLE",
            "REQUESTS_CA_BUNDLE",
            "NODE_EXTRA_CA_CERTS",
            "PIP_CERT",
            "NPM_CONFIG_CAFILE",
            "CARGO_HTTP_CAINFO",
        ] {
            env.push((k, bundle.clone()));
        }
        env
    }

    /// Registers a session and returns what its tools need; the credential dies with the
    /// returned guard (when the session ends). The worker's one call per session.
    pub fn open_session(&self, session_id: &str) -> SessionEgress {
        let grant = self.state.sessions.register(session_id);
        let env = self.tool_env(&grant);
        SessionEgress {
            registry: self.state.sessions.clone(),
            session_id: session_id.to_string(),
            user: grant.user().to_string(),
            env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }

    /// Stops accepting; connections already open finish on their own.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// One session's use of the proxy: its tool environment, and its credential until dropped.
pub struct SessionEgress {
    registry: Arc<SessionRegistry>,
    session_id: String,
    /// This guard's own credential: dropping it revokes that one, never a newer grant of the
    /// same session.
    user: String,
    /// `HTTP_PROXY` and friends (with this session's credential) and the CA bundle variables:
    /// add them to the session's tool environment (`EnvPolicy::set`).
    pub env: Vec<(String, String)>,
}

impl SessionEgress {
    /// Names the running tool call in the audit log (`None` between calls).
    pub fn set_tool_call(&self, tool_call: Option<&str>) {
        self.registry.set_grant_tool_call(&self.user, tool_call);
    }
}

impl Drop for SessionEgress {
    fn drop(&mut self) {
        self.registry.remove_grant(&self.user);
    }
}

impl std::fmt::Debug for SessionEgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionEgress")
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

/// `NO_PROXY` in the tool environment: loopback goes direct.
pub const LOOPBACK_NO_PROXY: &str = "localhost,127.0.0.1,::1";

/// What the worker logs at tier 0, where nothing stops tool code from ignoring the proxy.
/// Tool code runs as the worker's user there, so a secret file the worker reads is readable to
/// it too: the caller names those files (`hands_secrets::secret_files()`) beside this notice.
pub const TIER0_NOTICE: &str = "egress proxy: isolation tier 0 cannot force tool code through the proxy; a tool can connect to the network directly and bypass the policy. The injected secrets are not put in the tool environment, but tool code runs as the worker's user and can read any secret file the worker reads (NAME_FILE); use isolation tier 1 or 2 to hide them";

async fn resolve_injection(
    rule: &Rule,
    inj: &crate::policy::Injection,
    secrets: &dyn SecretSource,
) -> Result<ResolvedInjection, EgressError> {
    let mut needles: Vec<Vec<u8>> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut render = async |t: &Template| -> Result<String, EgressError> {
        let mut out = String::new();
        for p in &t.pieces {
            match p {
                Piece::Literal(s) => out.push_str(s),
                Piece::Secret(name) => {
                    let value = secrets.resolve(name).await?;
                    let value = value.expose_secret();
                    if value.len() < MIN_SECRET_LEN {
                        return Err(EgressError::ShortSecret(name.clone()));
                    }
                    needles.push(value.as_bytes().to_vec());
                    if !names.contains(name) {
                        names.push(name.clone());
                    }
                    out.push_str(value);
                }
            }
        }
        Ok(out)
    };
    let mut rendered: Vec<(HeaderName, String, bool)> = Vec::new();
    for (name, t) in &inj.headers {
        rendered.push((name.clone(), render(t).await?, t.has_secret()));
    }
    if let Some((user, pass)) = &inj.basic_auth {
        let pair = format!("{}:{}", render(user).await?, render(pass).await?);
        let b64 = base64::engine::general_purpose::STANDARD.encode(pair);
        rendered.push((header::AUTHORIZATION, format!("Basic {b64}"), true));
    }
    let mut headers = Vec::with_capacity(rendered.len());
    for (name, value, secret) in rendered {
        let mut hv = HeaderValue::from_str(&value).map_err(|_| EgressError::BadHeaderValue {
            header: name.to_string(),
            line: rule.line,
        })?;
        if secret {
            hv.set_sensitive(true);
            // the whole value too: a basic-auth pair is only visible in its encoded form
            needles.push(value.into_bytes());
            if let Some(b64) = hv.to_str().ok().and_then(|v| v.strip_prefix("Basic ")) {
                needles.push(b64.as_bytes().to_vec());
            }
        }
        headers.push((name, hv));
    }
    Ok(ResolvedInjection {
        headers,
        needles: Needles::new(needles),
        secret_names: names.join(","),
    })
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, mut stopped: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = stopped.changed() => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning
                tracing::warn!(error = %e, "egress proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        // The task learns its own abort handle first: a session that authenticates on this
        // connection holds it, and revoking the session closes the connection.
        let (me_tx, me_rx) = tokio::sync::oneshot::channel::<AbortHandle>();
        let task = tokio::spawn(async move {
            let Ok(me) = me_rx.await else {
                return;
            };
            let svc = service_fn(move |req| handle(state.clone(), me.clone(), req));
            let conn = client_connection_builder()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "egress proxy: client connection ended with an error");
            }
        });
        let _ = me_tx.send(task.abort_handle());
    }
}

/// Connections (client connections and the tunnels they became) one session may have open
/// through the proxy at a time; one more is answered 429 and closed. Tool code decides how many
/// it opens, and each costs the worker descriptors every other session needs too. The same
/// number as the tier-2 relay's cap per sandbox (`hands_sandbox::MAX_EGRESS_CONNECTIONS`, a test
/// keeps them equal; this crate does not depend on the sandbox's), far above what a package
/// manager opens at once (npm's default is 15 per origin).
pub const MAX_SESSION_CONNECTIONS: usize = 256;

/// How long a client may take to send a request head: a tool that opens connections and
/// sends nothing must not hold the worker's sockets forever.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

fn client_connection_builder() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    b
}

async fn handle(
    state: Arc<State>,
    connection: AbortHandle,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let Some(session) = state
        .sessions
        .authenticate(req.headers().get(header::PROXY_AUTHORIZATION))
    else {
        EgressMetrics::inc(&state.metrics.proxy_auth_failed);
        let mut resp = text(
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            "this proxy needs the session's own proxy credential (it is in HTTPS_PROXY)",
        );
        resp.headers_mut().insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"hands egress\""),
        );
        return Ok(resp);
    };
    if let Admission::Refused { first } = session.admit(connection, MAX_SESSION_CONNECTIONS) {
        if first {
            tracing::warn!(session = %session.session_id, max = MAX_SESSION_CONNECTIONS,
                "egress proxy: the session has the most connections it may have open at once; \
                 refusing more until some close");
        }
        let mut resp = text(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "this session has {MAX_SESSION_CONNECTIONS} connections open through the egress proxy, \
                 the most it may have at once; close some and retry"
            ),
        );
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(resp);
    }
    if req.method() == Method::CONNECT {
        return Ok(connect(state, session, req).await);
    }
    // Absolute-form request for plain http://
    let (host, port) = match (req.uri().scheme_str(), req.uri().authority()) {
        (Some("http"), Some(a)) => (normalize_host(a.host()), a.port_u16().unwrap_or(80)),
        _ => {
            return Ok(text(
                StatusCode::BAD_REQUEST,
                "this proxy takes http:// URLs in absolute form, and CONNECT for https",
            ));
        }
    };
    let target = Target {
        host,
        port,
        tls: false,
    };
    let mut upstream = None;
    Ok(forward(&state, &session, &target, &mut upstream, req).await)
}

/// Where requests of one client connection go.
struct Target {
    host: String,
    port: u16,
    tls: bool,
}

impl Target {
    fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Why a request did not go out, as the sentence the model reads.
enum Refusal {
    Policy,
    Address { class: &'static str, ip: IpAddr },
    Resolve(String),
}

impl Refusal {
    fn response(&self, host: &str) -> Response<ProxyBody> {
        match self {
            Refusal::Policy => text(
                StatusCode::FORBIDDEN,
                &format!("egress to {host} is not allowed by this environment's policy"),
            ),
            Refusal::Address { class, ip } => text(
                StatusCode::FORBIDDEN,
                &format!(
                    "egress to {host} is not allowed by this environment's policy: it resolves to {class} ({ip})"
                ),
            ),
            Refusal::Resolve(e) => text(
                StatusCode::BAD_GATEWAY,
                &format!("egress to {host} failed: the name does not resolve ({e})"),
            ),
        }
    }

    fn outcome(&self) -> &'static str {
        match self {
            Refusal::Policy => "denied",
            Refusal::Address { .. } => "refused-address",
            Refusal::Resolve(_) => "unresolved",
        }
    }
}

fn rule_permits(rule: &Rule, ip: IpAddr) -> Result<(), Refusal> {
    crate::address::rule_permits(rule, ip).map_err(|class| Refusal::Address { class, ip })
}

/// Resolves and returns the first address the rule permits; the caller connects to exactly it.
async fn checked_address(
    state: &State,
    host: &str,
    port: u16,
    rule: &Rule,
) -> Result<SocketAddr, Refusal> {
    let addrs = state
        .resolver
        .lookup(host, port)
        .await
        .map_err(|e| Refusal::Resolve(e.to_string()))?;
    let mut first_refusal = None;
    for addr in addrs {
        match rule_permits(rule, addr.ip()) {
            Ok(()) => return Ok(addr),
            Err(r) => {
                first_refusal.get_or_insert(r);
            }
        }
    }
    Err(first_refusal.unwrap_or_else(|| Refusal::Resolve("no addresses".to_string())))
}

enum ConnectPlan {
    Tunnel(TcpStream, SocketAddr),
    Intercept,
    Refuse(Refusal),
}

async fn connect(
    state: Arc<State>,
    session: Arc<SessionEntry>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let Some(authority) = req.uri().authority().cloned() else {
        return text(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let host = normalize_host(authority.host());
    let port = authority.port_u16().unwrap_or(443);
    let record = AuditRecord {
        session: session.session_id.clone(),
        tool_call: session.tool_call(),
        host: host.clone(),
        port,
        method: "CONNECT".to_string(),
        path: "-".to_string(),
        secret: None,
        started: Instant::now(),
    };
    let plan = match state.policy.decide_connect(&host, port) {
        ConnectVerdict::Tunnel { rule } => {
            match checked_address(&state, &host, port, &state.policy.rules()[rule]).await {
                Ok(addr) => {
                    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                        Ok(Ok(s)) => ConnectPlan::Tunnel(s, addr),
                        Ok(Err(e)) => {
                            return upstream_failed(
                                &state,
                                &record,
                                &format!("could not connect to {addr}: {e}"),
                            );
                        }
                        Err(_) => {
                            return upstream_failed(
                                &state,
                                &record,
                                &format!("connecting to {addr} timed out"),
                            );
                        }
                    }
                }
                Err(refusal) => ConnectPlan::Refuse(refusal),
            }
        }
        ConnectVerdict::Intercept => ConnectPlan::Intercept,
        ConnectVerdict::Deny { .. } => ConnectPlan::Refuse(Refusal::Policy),
    };
    // Refusals are answered inside the tunnel, over TLS from our CA, so the client shows the
    // model the sentence (a 403 to CONNECT itself shows up as a bare "tunnel failed").
    let holder = session.clone();
    let task = tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "egress proxy: CONNECT upgrade failed");
                return;
            }
        };
        match plan {
            ConnectPlan::Tunnel(upstream, _addr) => {
                tunnel(&state, upgraded, upstream, record).await
            }
            ConnectPlan::Intercept => {
                let target = Target {
                    host,
                    port,
                    tls: true,
                };
                intercept(state, session, upgraded, target, None).await;
            }
            ConnectPlan::Refuse(refusal) => {
                let target = Target {
                    host,
                    port,
                    tls: true,
                };
                intercept(state, session, upgraded, target, Some(Arc::new(refusal))).await;
            }
        }
    });
    // The tunnel or intercepted connection outlives this request: it dies with the session.
    holder.hold(task.abort_handle());
    Response::new(empty())
}

async fn tunnel(
    state: &State,
    mut client: TokioIo<hyper::upgrade::Upgraded>,
    mut upstream: TcpStream,
    record: AuditRecord,
) {
    EgressMetrics::inc(&state.metrics.tunnels);
    let (up, down) = match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok(n) => n,
        Err(e) => {
            tracing::debug!(error = %e, host = %record.host, "egress proxy: tunnel ended with an error");
            (0, 0)
        }
    };
    EgressMetrics::add(&state.metrics.bytes_to_upstream, up);
    EgressMetrics::add(&state.metrics.bytes_from_upstream, down);
    record.log(200, "tunnel", down);
}

/// Terminates the client's TLS with a leaf from our CA and serves its requests one by one.
async fn intercept(
    state: Arc<State>,
    session: Arc<SessionEntry>,
    client: TokioIo<hyper::upgrade::Upgraded>,
    target: Target,
    refusal: Option<Arc<Refusal>>,
) {
    let config = match state.ca.server_config(&target.host) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "egress proxy: cannot mint a certificate");
            return;
        }
    };
    let tls = match tokio_rustls::TlsAcceptor::from(config).accept(client).await {
        Ok(t) => t,
        Err(e) => {
            EgressMetrics::inc(&state.metrics.client_tls_errors);
            tracing::debug!(error = %e, host = %target.host, "egress proxy: client TLS handshake failed (does it trust the CA bundle?)");
            return;
        }
    };
    let target = Arc::new(target);
    let upstream: Arc<tokio::sync::Mutex<Option<Upstream>>> =
        Arc::new(tokio::sync::Mutex::new(None));
    let svc = service_fn(move |req: Request<Incoming>| {
        let (state, session, target, upstream, refusal) = (
            state.clone(),
            session.clone(),
            target.clone(),
            upstream.clone(),
            refusal.clone(),
        );
        async move {
            if let Some(refusal) = refusal {
                let record = audit_record(&session, &target, &req, None);
                count_refusal(&state, &refusal);
                record.log(refusal_status(&refusal), refusal.outcome(), 0);
                return Ok::<_, Infallible>(refusal.response(&target.host));
            }
            let mut slot = upstream.lock().await;
            Ok(forward(&state, &session, &target, &mut slot, req).await)
        }
    });
    if let Err(e) = client_connection_builder()
        .serve_connection(TokioIo::new(tls), svc)
        .await
    {
        tracing::debug!(error = %e, "egress proxy: intercepted connection ended with an error");
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One upstream connection, reused for the requests of one intercepted client connection.
struct Upstream {
    sender: SendRequest<Incoming>,
    addr: SocketAddr,
}

async fn open_upstream(
    state: &State,
    target: &Target,
    addr: SocketAddr,
) -> Result<Upstream, String> {
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("could not connect to {addr}: {e}")),
        Err(_) => return Err(format!("connecting to {addr} timed out")),
    };
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = if target.tls {
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| format!("{} is not a valid TLS server name: {e}", target.host))?;
        let tls = state
            .upstream_tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {} failed: {e}", target.host))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "egress proxy: upstream connection ended with an error");
        }
    });
    Ok(Upstream { sender, addr })
}

fn audit_record(
    session: &SessionEntry,
    target: &Target,
    req: &Request<Incoming>,
    secret: Option<String>,
) -> AuditRecord {
    AuditRecord {
        session: session.session_id.clone(),
        tool_call: session.tool_call(),
        host: target.host.clone(),
        port: target.port,
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        secret,
        started: Instant::now(),
    }
}

fn count_refusal(state: &State, refusal: &Refusal) {
    match refusal {
        Refusal::Policy => EgressMetrics::inc(&state.metrics.denied_by_policy),
        Refusal::Address { .. } => EgressMetrics::inc(&state.metrics.refused_address),
        Refusal::Resolve(_) => EgressMetrics::inc(&state.metrics.upstream_errors),
    }
}

fn refusal_status(refusal: &Refusal) -> u16 {
    match refusal {
        Refusal::Resolve(_) => 502,
        _ => 403,
    }
}

/// Decides one request, attaches the secret if the rule says so, sends it to the checked
/// address, and returns the response with secret values removed.
async fn forward(
    state: &Arc<State>,
    session: &SessionEntry,
    target: &Target,
    upstream: &mut Option<Upstream>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let verdict = state.policy.decide(&RequestFacts {
        host: &target.host,
        port: target.port,
        method: req.method(),
        path: req.uri().path(),
    });
    let (rule_index, injection) = match verdict {
        Verdict::Deny { .. } => {
            let record = audit_record(session, target, &req, None);
            EgressMetrics::inc(&state.metrics.denied_by_policy);
            record.log(403, "denied", 0);
            return Refusal::Policy.response(&target.host);
        }
        Verdict::AmbiguousPath { .. } => {
            let record = audit_record(session, target, &req, None);
            EgressMetrics::inc(&state.metrics.denied_by_policy);
            record.log(403, "denied-ambiguous-path", 0);
            return text(
                StatusCode::FORBIDDEN,
                &crate::policy::ambiguous_path_refusal(&target.host),
            );
        }
        Verdict::Allow { rule } => (rule, None),
        Verdict::Inject { rule } => (rule, state.injections[rule].as_ref()),
    };
    let rule = &state.policy.rules()[rule_index];
    let record = audit_record(
        session,
        target,
        &req,
        injection.map(|i| i.secret_names.clone()),
    );
    if injection.is_some() && !target.tls && !rule.insecure_http {
        // The credential would cross the network in cleartext.
        EgressMetrics::inc(&state.metrics.denied_by_policy);
        record.log(403, "denied-cleartext", 0);
        return text(
            StatusCode::FORBIDDEN,
            &crate::policy::cleartext_refusal(&target.host),
        );
    }

    // Reuse the connection only if it is alive and this rule may reach its address.
    if let Some(u) = upstream.as_ref()
        && (u.sender.is_closed() || rule_permits(rule, u.addr.ip()).is_err())
    {
        *upstream = None;
    }
    if upstream.is_none() {
        let addr = match checked_address(state, &target.host, target.port, rule).await {
            Ok(a) => a,
            Err(refusal) => {
                count_refusal(state, &refusal);
                record.log(refusal_status(&refusal), refusal.outcome(), 0);
                return refusal.response(&target.host);
            }
        };
        match open_upstream(state, target, addr).await {
            Ok(u) => *upstream = Some(u),
            Err(e) => return upstream_failed(state, &record, &e),
        }
    }
    let Some(u) = upstream.as_mut() else {
        return upstream_failed(state, &record, "no upstream connection");
    };
    if let Err(e) = u.sender.ready().await {
        *upstream = None;
        return upstream_failed(
            state,
            &record,
            &format!("the upstream connection closed: {e}"),
        );
    }

    let (mut parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    parts.uri = match path_and_query.parse() {
        Ok(u) => u,
        Err(_) => return text(StatusCode::BAD_REQUEST, "the request path is not valid"),
    };
    strip_hop_by_hop(&mut parts.headers);
    // The host we connected to, never one the client names: a shared front end must not route
    // an allowed connection to another site.
    if let Ok(h) = HeaderValue::from_str(&target.authority()) {
        parts.headers.insert(header::HOST, h);
    }
    if let Some(inj) = injection {
        for (name, value) in &inj.headers {
            parts.headers.insert(name.clone(), value.clone());
        }
        // The redactor matches raw bytes: a compressed or partial body could carry the secret
        // past it (split across ranges, or encoded), so an injected request asks for the whole
        // body, uncompressed.
        parts.headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        parts.headers.remove(header::RANGE);
        parts.headers.remove(header::IF_RANGE);
    }
    let sent = u
        .sender
        .send_request(Request::from_parts(parts, body))
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            *upstream = None;
            return upstream_failed(state, &record, &format!("the request failed: {e}"));
        }
    };
    if injection.is_some() {
        EgressMetrics::inc(&state.metrics.requests_injected);
    } else {
        EgressMetrics::inc(&state.metrics.requests_allowed);
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if injection.is_some() {
        if let Some(encoding) = encoded_with(&parts.headers) {
            // The upstream ignored `Accept-Encoding: identity`; its body cannot be searched
            // for the secret, so none of it goes back.
            EgressMetrics::inc(&state.metrics.upstream_errors);
            record.log(502, "refused-encoding", 0);
            return text(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "egress to {} failed: the response to a request carrying a credential came back with Content-Encoding {encoding:?}, which this proxy cannot check for the credential, so it was dropped",
                    target.host
                ),
            );
        }
        // hyper keeps a custom reason phrase here (it would reach the client unredacted).
        parts.extensions = http::Extensions::new();
    }
    let mut headers_stripped = false;
    let redactor = match injection {
        Some(inj) if !inj.needles.is_empty() => {
            let mut stripped = false;
            for value in parts.headers.values_mut() {
                if let Some(clean) = inj.needles.replace_all(value.as_bytes()) {
                    stripped = true;
                    *value =
                        HeaderValue::from_bytes(&clean).unwrap_or(HeaderValue::from_static(""));
                }
            }
            headers_stripped = stripped;
            // the body length may change
            parts.headers.remove(header::CONTENT_LENGTH);
            Some(Redactor::new(inj.needles.clone()))
        }
        _ => None,
    };
    let status = parts.status.as_u16();
    let body = AuditBody {
        inner: body,
        redactor,
        // Trailers of an injected response are not searched for the secret: dropped.
        keep_trailers: injection.is_none(),
        headers_stripped,
        record: Some(record),
        status,
        bytes: 0,
        ended: false,
        stashed: None,
        metrics: state.metrics.clone(),
    };
    Response::from_parts(parts, body.boxed_unsync())
}

fn upstream_failed(state: &State, record: &AuditRecord, why: &str) -> Response<ProxyBody> {
    EgressMetrics::inc(&state.metrics.upstream_errors);
    record.log(502, "upstream-error", 0);
    text(
        StatusCode::BAD_GATEWAY,
        &format!("egress to {} failed: {why}", record.host),
    )
}

/// The content coding of a response, unless it is absent or `identity`.
fn encoded_with(headers: &http::HeaderMap) -> Option<String> {
    let codings: Vec<String> = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_string())
        .flat_map(|v| {
            v.split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    (!codings.is_empty()).then(|| codings.join(", "))
}

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    // Headers named in Connection are hop-by-hop too (RFC 9110 7.6.1).
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    let hop: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_hop_by_hop(k))
        .cloned()
        .collect();
    for n in hop {
        headers.remove(n);
    }
}

fn text(status: StatusCode, sentence: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(format!("{sentence}\n")))
            .map_err(|n| match n {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn empty() -> ProxyBody {
    Full::new(Bytes::new())
        .map_err(|n| match n {})
        .boxed_unsync()
}

/// The upstream response body: counts bytes, strips secrets when the request carried one, and
/// writes the audit line when it ends (or when the client goes away).
struct AuditBody {
    inner: Incoming,
    redactor: Option<Redactor>,
    keep_trailers: bool,
    /// Whether a secret was already removed from the response headers.
    headers_stripped: bool,
    record: Option<AuditRecord>,
    status: u16,
    bytes: u64,
    ended: bool,
    /// Trailers that arrived while the redactor still held bytes back.
    stashed: Option<Frame<Bytes>>,
    metrics: Arc<EgressMetrics>,
}

impl AuditBody {
    fn finish(&mut self, outcome: &str) {
        if let Some(record) = self.record.take() {
            let in_body = self.redactor.as_ref().is_some_and(|r| r.removed > 0);
            let stripped = self.headers_stripped || in_body;
            if stripped {
                EgressMetrics::inc(&self.metrics.secrets_stripped);
            }
            let outcome = match (stripped, outcome) {
                (true, "ok") => "ok-secret-stripped",
                (_, o) => o,
            };
            record.log(self.status, outcome, self.bytes);
        }
    }
}

impl Body for AuditBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                if let Some(frame) = this.stashed.take() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                this.finish("ok");
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.bytes += data.len() as u64;
                        EgressMetrics::add(&this.metrics.bytes_from_upstream, data.len() as u64);
                        let out = match &mut this.redactor {
                            Some(r) => r.push(&data),
                            None => data,
                        };
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(trailers) => {
                        // Flush what the redactor holds before the trailers.
                        this.ended = true;
                        if this.keep_trailers {
                            this.stashed = Some(trailers);
                        }
                        if let Some(r) = &mut this.redactor {
                            let tail = r.finish();
                            if !tail.is_empty() {
                                return Poll::Ready(Some(Ok(Frame::data(tail))));
                            }
                        }
                    }
                },
                Some(Err(e)) => {
                    this.finish("upstream-error");
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    this.ended = true;
                    if let Some(r) = &mut this.redactor {
                        let tail = r.finish();
                        if !tail.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(tail))));
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.redactor.is_none() && self.stashed.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.redactor.is_some() {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

impl Drop for AuditBody {
    fn drop(&mut self) {
        self.finish("client-gone");
    }
}
