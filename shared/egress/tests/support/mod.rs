//! A loopback HTTPS "git host" with its own test CA: `git http-backend` behind a token, an echo
//! endpoint that returns the request headers, and a download endpoint (for the benchmark); and
//! the raw client side the tests and the benchmark share: a CONNECT through the proxy, TLS
//! over it, one HTTP/1.1 GET.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// The upstream's own CA, which the proxy is told to trust (the "operator bundle").
pub struct TestCa {
    pub pem_path: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(dir: &Path) -> TestCa {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "test upstream CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem_path = dir.join("upstream-ca.pem");
        std::fs::write(&pem_path, cert.pem()).unwrap();
        TestCa {
            pem_path,
            issuer: Issuer::new(params, key),
        }
    }

    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    }
}

/// What the upstream saw: the Authorization headers it received.
#[derive(Default)]
pub struct Seen {
    pub authorizations: Mutex<Vec<String>>,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
}

/// Serves HTTPS (or plain HTTP when `tls` is None) on loopback.
/// - `/echo`: 200, body = the request headers, and `x-echo-authorization` = the Authorization
///   header it received (an upstream that echoes headers).
/// - `/bytes/N`: N bytes.
/// - `/git/...`: `git http-backend` over `project_root`, only with `Authorization: Basic
///   base64(x-access-token:TOKEN)`.
pub async fn start_upstream(
    tls: Option<Arc<rustls::ServerConfig>>,
    project_root: Option<PathBuf>,
    token: String,
) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let (tls, root, token, seen) = (
                tls.clone(),
                project_root.clone(),
                token.clone(),
                seen2.clone(),
            );
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let (root, token, seen) = (root.clone(), token.clone(), seen.clone());
                    async move { Ok::<_, Infallible>(route(req, root, token, seen).await) }
                });
                let builder = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(cfg) => {
                        let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(stream).await
                        else {
                            return;
                        };
                        let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            });
        }
    });
    Upstream { addr, seen }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = status;
    r
}

async fn route(
    req: Request<Incoming>,
    root: Option<PathBuf>,
    token: String,
    seen: Arc<Seen>,
) -> Response<Body> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(a) = &auth {
        seen.authorizations.lock().unwrap().push(a.clone());
    }
    let path = req.uri().path().to_string();
    // `/echo` gzips its answer when the client accepts gzip; `/echo-gzip` always does (an
    // upstream that ignores `Accept-Encoding`).
    if path == "/echo" || path == "/echo-gzip" {
        let mut text = String::new();
        for (k, v) in req.headers() {
            text.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
        }
        let accepts_gzip = req
            .headers()
            .get("accept-encoding")
            .is_some_and(|v| String::from_utf8_lossy(v.as_bytes()).contains("gzip"));
        let gzip = path == "/echo-gzip" || accepts_gzip;
        let mut r = if gzip {
            use std::io::Write as _;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(text.as_bytes()).unwrap();
            let mut r = full(StatusCode::OK, enc.finish().unwrap());
            r.headers_mut()
                .insert("content-encoding", "gzip".parse().unwrap());
            r
        } else {
            full(StatusCode::OK, text)
        };
        if let Some(a) = auth {
            r.headers_mut()
                .insert("x-echo-authorization", a.parse().unwrap());
        }
        return r;
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let total: usize = n.parse().unwrap_or(0);
        const CHUNK: usize = 64 * 1024;
        let chunk = Bytes::from(vec![b'x'; CHUNK]);
        let frames = (0..total.div_ceil(CHUNK)).map(move |i| {
            let len = CHUNK.min(total - i * CHUNK);
            Ok::<_, Infallible>(Frame::data(chunk.slice(..len)))
        });
        let mut r = Response::new(StreamBody::new(futures::stream::iter(frames)).boxed_unsync());
        r.headers_mut().insert("content-length", total.into());
        return r;
    }
    if let (Some(rest), Some(root)) = (path.strip_prefix("/git"), root) {
        use base64::Engine as _;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
        );
        if auth.as_deref() != Some(expected.as_str()) {
            let mut r = full(StatusCode::UNAUTHORIZED, "token required\n");
            r.headers_mut()
                .insert("www-authenticate", "Basic realm=\"git\"".parse().unwrap());
            return r;
        }
        return git_http_backend(req, rest.to_string(), root).await;
    }
    full(StatusCode::NOT_FOUND, "not found\n")
}

/// Runs `git http-backend` as a CGI program for one request.
async fn git_http_backend(
    req: Request<Incoming>,
    path_info: String,
    root: PathBuf,
) -> Response<Body> {
    let method = req.method().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (content_type, encoding, protocol) = (
        header("content-type"),
        header("content-encoding"),
        header("git-protocol"),
    );
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", &path_info)
        .env("REQUEST_METHOD", &method)
        .env("QUERY_STRING", &query)
        .env("CONTENT_TYPE", &content_type)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", &encoding)
        .env("GIT_PROTOCOL", &protocol)
        .env("REMOTE_USER", "x-access-token")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut out)
        .await
        .unwrap();
    let _ = writer.await;
    let _ = child.wait().await;
    let split = memchr::memmem::find(&out, b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| memchr::memmem::find(&out, b"\n\n").map(|i| (i, 2)));
    let Some((end, sep)) = split else {
        return full(StatusCode::INTERNAL_SERVER_ERROR, "bad CGI output\n");
    };
    let head = String::from_utf8_lossy(&out[..end]).to_string();
    let mut resp = full(StatusCode::OK, Bytes::copy_from_slice(&out[end + sep..]));
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            let code: u16 = v
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(500);
            *resp.status_mut() = StatusCode::from_u16(code).unwrap();
        } else if let (Ok(name), Ok(value)) = (
            k.parse::<http::HeaderName>(),
            v.parse::<http::HeaderValue>(),
        ) {
            resp.headers_mut().append(name, value);
        }
    }
    resp
}

/// A TLS client (HTTP/1.1) that trusts only the certificates in `pem`.
pub fn client_config(pem: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pem).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// `CONNECT host:port` through the proxy with `proxy_auth` (a `Proxy-Authorization` value);
/// returns the connection once the proxy answered 200, ready for TLS.
pub async fn connect_tunnel(
    proxy: SocketAddr,
    proxy_auth: &str,
    host: &str,
    port: u16,
) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.set_nodelay(true).unwrap();
    let req = format!(
        "CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\nProxy-Authorization: {proxy_auth}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// TLS for `host` over `tcp` (verified with `cfg`), then an HTTP/1.1 connection on it.
pub async fn https_sender(
    tcp: TcpStream,
    host: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> SendRequest<http_body_util::Empty<Bytes>> {
    tcp.set_nodelay(true).unwrap();
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from(host.to_string()).unwrap(), tcp)
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// One GET of `path` with `Host: authority`; returns the status and the body's length.
pub async fn get(
    sender: &mut SendRequest<http_body_util::Empty<Bytes>>,
    authority: &str,
    path: &str,
) -> Result<(u16, u64), hyper::Error> {
    sender.ready().await?;
    let req = hyper::Request::get(path)
        .header("host", authority)
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame?.into_data() {
            n += d.len() as u64;
        }
    }
    Ok((status, n))
}
