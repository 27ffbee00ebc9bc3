//! What the egress proxy costs, side by side with going direct, in one run on loopback:
//! - added latency per HTTPS request (p50/p99), through a tunnel and through interception with
//!   an injected secret, on a kept-alive connection and on a new connection per request;
//! - throughput of a 100 MB download, direct vs tunnelled vs intercepted.
//!
//! `cargo bench -p hands-egress` (a program that prints figures; it asserts nothing).
//! `EGRESS_BENCH_REQUESTS`, `EGRESS_BENCH_NEW_CONNECTIONS` and `EGRESS_BENCH_MB` change the sizes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hands_egress::{EgressConfig, EgressProxy, Policy, Resolver, StaticSecrets, UpstreamRoots};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use secrecy::ExposeSecret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const POLICY: &str = r#"
[[rule]]
host = "inject.test"
private = true
action = "inject"
headers = { Authorization = "Bearer {secret:bench_token}" }

[[rule]]
host = "tunnel.test"
private = true
action = "allow"
"#;

#[derive(Clone, Copy, Debug)]
enum Path {
    Direct,
    Tunnel,
    Inject,
}

struct Bench {
    upstream: SocketAddr,
    proxy: SocketAddr,
    proxy_auth: String,
    upstream_roots: Arc<rustls::ClientConfig>,
    proxy_roots: Arc<rustls::ClientConfig>,
}

fn client_config(pem: &std::path::Path) -> Arc<rustls::ClientConfig> {
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

impl Bench {
    async fn connect(&self, path: Path) -> SendRequest<Empty<Bytes>> {
        let (tcp, host, cfg) = match path {
            Path::Direct => (
                TcpStream::connect(self.upstream).await.unwrap(),
                "tunnel.test",
                self.upstream_roots.clone(),
            ),
            Path::Tunnel | Path::Inject => {
                let host = if matches!(path, Path::Tunnel) {
                    "tunnel.test"
                } else {
                    "inject.test"
                };
                let mut s = TcpStream::connect(self.proxy).await.unwrap();
                s.set_nodelay(true).unwrap();
                let port = self.upstream.port();
                let req = format!(
                    "CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\nProxy-Authorization: {}\r\n\r\n",
                    self.proxy_auth
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
                let cfg = if matches!(path, Path::Tunnel) {
                    self.upstream_roots.clone()
                } else {
                    self.proxy_roots.clone()
                };
                (s, host, cfg)
            }
        };
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

    async fn get(&self, sender: &mut SendRequest<Empty<Bytes>>, host: &str, path: &str) -> u64 {
        sender.ready().await.unwrap();
        let req = http::Request::get(path)
            .header("host", format!("{host}:{}", self.upstream.port()))
            .body(Empty::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(d) = frame.unwrap().into_data() {
                n += d.len() as u64;
            }
        }
        n
    }
}

fn host_of(path: Path) -> &'static str {
    match path {
        Path::Inject => "inject.test",
        _ => "tunnel.test",
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

async fn warm_latencies(b: &Bench, path: Path, n: usize) -> Vec<Duration> {
    let mut s = b.connect(path).await;
    for _ in 0..50 {
        b.get(&mut s, host_of(path), "/echo").await;
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        b.get(&mut s, host_of(path), "/echo").await;
        out.push(t.elapsed());
    }
    out.sort();
    out
}

async fn cold_latencies(b: &Bench, path: Path, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 10 {
        let t = Instant::now();
        let mut s = b.connect(path).await;
        b.get(&mut s, host_of(path), "/echo").await;
        if i >= 10 {
            out.push(t.elapsed());
        }
    }
    out.sort();
    out
}

async fn throughput(b: &Bench, path: Path, bytes: u64) -> f64 {
    let mut s = b.connect(path).await;
    let t = Instant::now();
    let got = b
        .get(&mut s, host_of(path), &format!("/bytes/{bytes}"))
        .await;
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(got, bytes);
    bytes as f64 / secs / 1e6
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let requests = env_num("EGRESS_BENCH_REQUESTS", 2000);
    let new_conns = env_num("EGRESS_BENCH_NEW_CONNECTIONS", 300);
    let mb = env_num("EGRESS_BENCH_MB", 100) as u64;
    let dir = tempfile::tempdir().unwrap();
    let ca = support::TestCa::new(dir.path());
    let tls = ca.server_config(&["tunnel.test", "inject.test"]);
    let upstream = support::start_upstream(Some(tls), None, String::new()).await;
    let pins = vec!["127.0.0.1".parse().unwrap()];
    let config = EgressConfig {
        policy: Policy::parse(POLICY, "bench").unwrap(),
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream_roots: UpstreamRoots::Only(ca.pem_path.clone()),
        resolver: Resolver::system()
            .pin("tunnel.test", pins.clone())
            .pin("inject.test", pins),
        bundle_dir: dir.path().join("bundle"),
    };
    let secrets = StaticSecrets::new().with("bench_token", "bench-token-0123456789abcdef");
    let proxy = EgressProxy::start(config, &secrets).await.unwrap();
    let grant = proxy.sessions().register("sesn_bench");
    let proxy_ca = dir.path().join("proxy-ca.pem");
    std::fs::write(&proxy_ca, proxy.ca_cert_pem()).unwrap();
    let b = Bench {
        upstream: upstream.addr,
        proxy: proxy.addr(),
        proxy_auth: grant.proxy_authorization().expose_secret().to_string(),
        upstream_roots: client_config(&ca.pem_path),
        proxy_roots: client_config(&proxy_ca),
    };

    println!(
        "egress proxy benchmark (loopback, one client at a time, {} CPUs)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "Latency per HTTPS GET of a small response, kept-alive connection ({requests} requests each):"
    );
    println!("| path | p50 ms | p99 ms | added p50 ms |");
    println!("|---|---|---|---|");
    let direct = warm_latencies(&b, Path::Direct, requests).await;
    let d50 = percentile(&direct, 0.5);
    println!(
        "| direct | {} | {} | |",
        ms(d50),
        ms(percentile(&direct, 0.99))
    );
    for path in [Path::Tunnel, Path::Inject] {
        let l = warm_latencies(&b, path, requests).await;
        let p50 = percentile(&l, 0.5);
        println!(
            "| {} | {} | {} | {} |",
            if matches!(path, Path::Tunnel) {
                "tunnel (CONNECT, no interception)"
            } else {
                "inject (TLS terminated, header added, response scanned)"
            },
            ms(p50),
            ms(percentile(&l, 0.99)),
            ms(p50.saturating_sub(d50))
        );
    }
    println!();
    println!(
        "Latency per HTTPS GET on a new connection (TCP + CONNECT + TLS handshakes; {new_conns} each):"
    );
    println!("| path | p50 ms | p99 ms | added p50 ms |");
    println!("|---|---|---|---|");
    let direct = cold_latencies(&b, Path::Direct, new_conns).await;
    let d50 = percentile(&direct, 0.5);
    println!(
        "| direct | {} | {} | |",
        ms(d50),
        ms(percentile(&direct, 0.99))
    );
    for path in [Path::Tunnel, Path::Inject] {
        let l = cold_latencies(&b, path, new_conns).await;
        let p50 = percentile(&l, 0.5);
        println!(
            "| {} | {} | {} | {} |",
            if matches!(path, Path::Tunnel) {
                "tunnel"
            } else {
                "inject"
            },
            ms(p50),
            ms(percentile(&l, 0.99)),
            ms(p50.saturating_sub(d50))
        );
    }
    println!();
    let bytes = mb * 1_000_000;
    println!("Download of {mb} MB over HTTPS (median of 3 runs each):");
    println!("| path | MB/s | share of direct |");
    println!("|---|---|---|");
    let mut direct_mbs = 0.0;
    for path in [Path::Direct, Path::Tunnel, Path::Inject] {
        let mut runs = Vec::new();
        for _ in 0..3 {
            runs.push(throughput(&b, path, bytes).await);
        }
        runs.sort_by(f64::total_cmp);
        let median = runs[1];
        if matches!(path, Path::Direct) {
            direct_mbs = median;
        }
        println!(
            "| {} | {:.0} | {:.0} % |",
            match path {
                Path::Direct => "direct",
                Path::Tunnel => "tunnel",
                Path::Inject => "inject (decrypt, scan for the secret, re-encrypt)",
            },
            median,
            median / direct_mbs * 100.0
        );
    }
}
