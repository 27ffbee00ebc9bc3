//! The HTTP plumbing every endpoint shares: headers, timeouts, bounded bodies, status mapping.
//!
//! Rules that hold for every call (CATALOGUE C12-C15): redirects are never followed, response
//! bodies are capped, every request has a timeout, and no error text carries a credential.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use hands_protocol::error::ErrorBody;
use http_body_util::{BodyExt, Full};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::credential::Credential;
use crate::error::{ApiError, parse_retry_after, parse_should_retry, with_causes};
use crate::lane::Lane;

/// The beta every worker call must carry; session routes 404 without it (PROTOCOL.md §2).
pub const MANAGED_AGENTS_BETA: &str = "managed-agents-2026-04-01";
/// The API version the docs and the Go SDK send (the server also accepts newer ones).
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";
/// The public API.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

/// How to reach the control plane.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `ANTHROPIC_BASE_URL`, without a trailing slash.
    pub base_url: String,
    pub anthropic_version: String,
    /// Bound for one ordinary request (long polls add their `block_ms`).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Responses larger than this are refused (a page of 1000 events with large tool inputs
    /// must fit; a runaway server must not exhaust memory).
    pub max_response_bytes: usize,
    pub user_agent: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            base_url: DEFAULT_BASE_URL.to_owned(),
            anthropic_version: DEFAULT_ANTHROPIC_VERSION.to_owned(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_response_bytes: 64 << 20,
            user_agent: concat!("hands/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

impl ClientConfig {
    pub fn with_base_url(base_url: impl Into<String>) -> Self {
        ClientConfig {
            base_url: base_url.into(),
            ..ClientConfig::default()
        }
    }
}

/// Could not build the client (bad base URL or TLS setup).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the control-plane client: {0}")]
pub struct BuildError(String);

/// A control-plane client. Cheap to clone; per process one pool of connections for the calls
/// that read their answer whole (the lane, see `lane`) and one, reqwest's, for streams.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// Where calls that read their answer whole go, unless a proxy is configured (see `lane`).
    lane: Option<Lane>,
    base: String,
    config: ClientConfig,
}

/// A successful response with its body read (within the cap).
pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

/// What one request looks like before it is sent.
pub(crate) struct Call<'a> {
    pub method: Method,
    pub path: String,
    pub credential: &'a Credential,
    pub query: Vec<(&'static str, String)>,
    pub headers: Vec<(&'static str, String)>,
    /// The encoded JSON body, written straight from the caller's types (no intermediate
    /// `Value` tree, which for a large tool result meant two more copies of it).
    pub json: Option<Bytes>,
    pub timeout: Option<Duration>,
}

impl<'a> Call<'a> {
    pub fn new(method: Method, path: String, credential: &'a Credential) -> Self {
        Call {
            method,
            path,
            credential,
            query: Vec::new(),
            headers: Vec::new(),
            json: None,
            timeout: None,
        }
    }

    pub fn query(mut self, key: &'static str, value: impl ToString) -> Self {
        self.query.push((key, value.to_string()));
        self
    }

    pub fn header(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((key, value.into()));
        self
    }

    pub fn json(mut self, body: &impl Serialize) -> Result<Self, ApiError> {
        let encoded = serde_json::to_vec(body).map_err(|e| ApiError::Decode {
            path: self.path.clone(),
            message: format!("cannot encode request: {e}"),
        })?;
        self.json = Some(Bytes::from(encoded));
        Ok(self)
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl ControlPlane {
    pub fn new(config: ClientConfig) -> Result<Self, BuildError> {
        let base = config.base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(BuildError(format!(
                "base URL must start with http:// or https://, got {base:?}"
            )));
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            "anthropic-beta",
            HeaderValue::from_static(MANAGED_AGENTS_BETA),
        );
        headers.insert(
            "anthropic-version",
            HeaderValue::from_str(&config.anthropic_version)
                .map_err(|e| BuildError(format!("anthropic-version: {e}")))?,
        );
        // Requests go to the base URL only (no redirects are followed): a plain `http://` one
        // needs no roots loaded ahead of time.
        let tls = crate::tls::client_config(base.starts_with("https://"))
            .map_err(|e| BuildError(format!("TLS configuration: {e}")))?;
        let mut lane_headers = headers.clone();
        lane_headers.insert(
            reqwest::header::USER_AGENT,
            HeaderValue::from_str(&config.user_agent)
                .map_err(|e| BuildError(format!("user agent: {e}")))?,
        );
        let lane = Lane::new(&config, lane_headers, tls.clone());
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .default_headers(headers)
            .user_agent(config.user_agent.clone())
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| BuildError(e.to_string()))?;
        Ok(ControlPlane {
            inner: Arc::new(Inner {
                http,
                lane,
                base,
                config,
            }),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// Sends a call and reads its body within the cap; non-2xx answers become [`ApiError`].
    pub(crate) async fn send(&self, call: Call<'_>) -> Result<Reply, ApiError> {
        if let Some(lane) = &self.inner.lane {
            return self.send_on_lane(lane, call).await;
        }
        let method_name = method_str(&call.method);
        let path = call.path.clone();
        let credential = call.credential;
        let response = self.start(call).await?;
        let status = response.status();
        let headers = response.headers().clone();
        if status.is_redirection() {
            return Err(ApiError::Redirect { path, status });
        }
        let body = scrub_body(self.read_body(&path, response).await?, credential);
        reply(method_name, path, status, &headers, body)
    }

    /// [`Self::send`] through the lane: the same request, the same rules, one timeout over the
    /// whole exchange (as reqwest's per-request timeout is).
    async fn send_on_lane(&self, lane: &Lane, call: Call<'_>) -> Result<Reply, ApiError> {
        let method_name = method_str(&call.method);
        let path = call.path.clone();
        let credential = call.credential;
        let timeout = call.timeout.unwrap_or(self.inner.config.request_timeout);
        let request = self.lane_request(lane, call)?;
        let limit = self.inner.config.max_response_bytes;
        let transport =
            |e: &dyn std::error::Error| ApiError::Transport(redact(&with_causes(e), credential));
        let exchange = async {
            let response = lane.request(request).await.map_err(|e| transport(&e))?;
            let (parts, body) = response.into_parts();
            if parts.status.is_redirection() {
                return Err(ApiError::Redirect {
                    path: path.clone(),
                    status: parts.status,
                });
            }
            // The length hyper settled on for the body (what reqwest's `content_length` reads
            // too): none for a chunked answer, whatever its headers say.
            let declared = hyper::body::Body::size_hint(&body).exact();
            let body = read_capped(&path, limit, declared, body.into_data_stream(), |e| {
                transport(e)
            })
            .await?;
            Ok((parts.status, parts.headers, body))
        };
        let (status, headers, body) = match tokio::time::timeout(timeout, exchange).await {
            Ok(answer) => answer?,
            Err(_) => {
                return Err(ApiError::Transport(format!(
                    "{method_name} {path}: no complete answer within {timeout:?} (timed out)"
                )));
            }
        };
        reply(
            method_name,
            path,
            status,
            &headers,
            scrub_body(body, credential),
        )
    }

    /// The request `start` would send through reqwest, for the lane.
    fn lane_request(
        &self,
        lane: &Lane,
        call: Call<'_>,
    ) -> Result<http::Request<Full<Bytes>>, ApiError> {
        let invalid = |what: &str| ApiError::Decode {
            path: call.path.clone(),
            message: format!("cannot build the request: {what}"),
        };
        let mut uri = String::with_capacity(self.inner.base.len() + call.path.len() + 64);
        uri.push_str(&self.inner.base);
        uri.push_str(&call.path);
        if !call.query.is_empty() {
            uri.push('?');
            uri.push_str(
                &serde_urlencoded::to_string(&call.query).map_err(|e| invalid(&e.to_string()))?,
            );
        }
        // As reqwest merges them: the call's own headers, and a default only where the call
        // set no header of that name.
        let mut headers = lane.headers.clone();
        for (k, _) in &call.headers {
            headers.remove(*k);
        }
        if let Some(auth) = call.credential.header_value() {
            headers.insert(reqwest::header::AUTHORIZATION, auth);
        }
        for (k, v) in &call.headers {
            let value = HeaderValue::from_str(v).map_err(|_| invalid(&format!("header {k}")))?;
            headers.append(*k, value);
        }
        if call.json.is_some() {
            headers.insert(
                reqwest::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let mut request = http::Request::builder()
            .method(call.method.clone())
            .uri(uri)
            .body(Full::new(call.json.clone().unwrap_or_default()))
            .map_err(|e| invalid(&e.to_string()))?;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// Sends a call and returns the response unread (for streams and downloads). Non-2xx
    /// answers are still turned into errors.
    pub(crate) async fn send_streaming(
        &self,
        call: Call<'_>,
    ) -> Result<reqwest::Response, ApiError> {
        let method_name = method_str(&call.method);
        let path = call.path.clone();
        let credential = call.credential;
        let response = self.start(call).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status.is_redirection() {
            return Err(ApiError::Redirect { path, status });
        }
        let headers = response.headers().clone();
        let body = scrub_body(
            self.read_body(&path, response).await.unwrap_or_default(),
            credential,
        );
        Err(status_error(method_name, path, status, &headers, &body))
    }

    async fn start(&self, call: Call<'_>) -> Result<reqwest::Response, ApiError> {
        let url = format!("{}{}", self.inner.base, call.path);
        let mut req = self.inner.http.request(call.method, url).query(&call.query);
        if let Some(auth) = call.credential.header_value() {
            req = req.header(reqwest::header::AUTHORIZATION, auth);
        }
        for (k, v) in &call.headers {
            req = req.header(*k, v);
        }
        if let Some(body) = call.json {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        req = req.timeout(call.timeout.unwrap_or(self.inner.config.request_timeout));
        req.send()
            .await
            .map_err(|e| ApiError::Transport(redact(&with_causes(&e), call.credential)))
    }

    async fn read_body(&self, path: &str, response: reqwest::Response) -> Result<Bytes, ApiError> {
        let declared = response.content_length();
        read_capped(
            path,
            self.inner.config.max_response_bytes,
            declared,
            response.bytes_stream(),
            |e| ApiError::Transport(with_causes(e)),
        )
        .await
    }
}

/// A read answer: the reply when it succeeded, else the error its status and body say.
fn reply(
    method_name: &'static str,
    path: String,
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Reply, ApiError> {
    if status.is_success() {
        return Ok(Reply { status, body });
    }
    Err(status_error(method_name, path, status, headers, &body))
}

/// The error a non-2xx answer stands for: its status, its error body if it has one, and what
/// its headers say about retrying.
fn status_error(
    method_name: &'static str,
    path: String,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiError {
    ApiError::Status {
        method: method_name,
        path,
        status,
        body: serde_json::from_slice::<ErrorBody>(body).ok().map(Box::new),
        retry_after: parse_retry_after(headers, SystemTime::now()),
        should_retry: parse_should_retry(headers),
    }
}

/// A body read whole, refused past `limit` bytes (from its declared length when it has one,
/// else once the chunks read exceed it), whichever HTTP stack it comes from.
async fn read_capped<E>(
    path: &str,
    limit: usize,
    declared: Option<u64>,
    chunks: impl futures::Stream<Item = Result<Bytes, E>>,
    transport: impl Fn(&E) -> ApiError,
) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::TooLarge {
        path: path.to_owned(),
        limit,
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    let mut chunks = std::pin::pin!(chunks);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| transport(&e))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Decodes a JSON body.
pub(crate) fn decode<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::Decode {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn method_str(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        _ => "HTTP",
    }
}

/// Scrubs the credential out of an error text (defence in depth: it is only ever in a header).
fn redact(text: &str, credential: &Credential) -> String {
    let secret = credential.expose_for_redaction();
    if secret.is_empty() {
        return text.to_owned();
    }
    text.replace(secret, "<redacted>")
}

/// Replaces the credential wherever a response body contains it (C15). A proxy or server that
/// echoes the request's headers back (a debug error page, an error message quoting the bearer)
/// would otherwise put the key into `ApiError` texts (error messages, decode errors quoting the
/// value) and from there into logs. The control plane never sends it, so a body without it is
/// returned untouched.
///
/// Every answer passes through here, the echo of each posted result included, so the search
/// is `memmem`'s (SIMD, linear): comparing the secret at every offset cost a `memcmp` call per
/// byte of the body, most of a result post's own CPU for a 10 KB result.
fn scrub_body(body: Bytes, credential: &Credential) -> Bytes {
    let secret = credential.expose_for_redaction().as_bytes();
    if secret.is_empty() {
        return body;
    }
    let finder = memchr::memmem::Finder::new(secret);
    if finder.find(&body).is_none() {
        return body;
    }
    let mut out = BytesMut::with_capacity(body.len());
    let mut rest = &body[..];
    while let Some(at) = finder.find(rest) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(b"<redacted>");
        rest = &rest[at + secret.len()..];
    }
    out.extend_from_slice(rest);
    out.freeze()
}

/// Percent-encodes one path segment: ids come from the network and must never add segments.
pub(crate) fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        // `.` is encoded too, so no id can ever form a `..` segment.
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_cannot_escape() {
        assert_eq!(segment("sesn_01Abc-x"), "sesn_01Abc-x");
        assert_eq!(segment("../x"), "%2E%2E%2Fx");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("a b?c#d"), "a%20b%3Fc%23d");
    }

    #[test]
    fn base_url_must_be_http() {
        assert!(ControlPlane::new(ClientConfig::with_base_url("ftp://x")).is_err());
        let c = ControlPlane::new(ClientConfig::with_base_url("http://127.0.0.1:9/")).unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:9");
    }

    #[test]
    fn redaction_removes_the_secret() {
        let c = Credential::environment_key("sk-canary");
        assert_eq!(redact("bad sk-canary here", &c), "bad <redacted> here");
    }

    #[test]
    fn bodies_are_scrubbed_of_the_secret_only_when_they_hold_it() {
        let c = Credential::environment_key("sk-canary");
        let body = Bytes::from_static(b"sk-canary {\"m\":\"Bearer sk-canary\"} sk-canar");
        assert_eq!(
            &scrub_body(body, &c)[..],
            b"<redacted> {\"m\":\"Bearer <redacted>\"} sk-canar"
        );
        let clean = Bytes::from_static(b"{\"id\":\"work_1\"}");
        assert_eq!(scrub_body(clean.clone(), &c), clean);
    }

    proptest::proptest! {
        /// The same as replacing every occurrence from left to right, overlapping ones and
        /// bodies that are not UTF-8 included.
        #[test]
        fn scrubbing_replaces_every_occurrence_left_to_right(
            secret in "[ab]{1,4}",
            body in proptest::collection::vec(proptest::prop_oneof![proptest::strategy::Just(b'a'), proptest::strategy::Just(b'b'), proptest::strategy::Just(0xFFu8)], 0..64),
        ) {
            let mut want = Vec::new();
            let mut rest = &body[..];
            while !rest.is_empty() {
                if rest.starts_with(secret.as_bytes()) {
                    want.extend_from_slice(b"<redacted>");
                    rest = &rest[secret.len()..];
                } else {
                    want.push(rest[0]);
                    rest = &rest[1..];
                }
            }
            let got = scrub_body(Bytes::from(body), &Credential::environment_key(secret));
            proptest::prop_assert_eq!(&got[..], &want[..]);
        }
    }
}
