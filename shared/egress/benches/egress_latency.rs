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
use http_body_util::Empty;
use hyper::client::conn::http1::SendRequest;
use secrecy::ExposeSecret;
use support::{client_config, connect_tunnel, get, https_sender};
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

impl Bench {
    async fn connect(&self, path: Path) -> SendRequest<Empty<Bytes>> {
        let port = self.upstream.port();
        match path {
            Path::Direct => {
                let tcp = TcpStream::connect(self.upstream).await.unwrap();
                https_sender(tcp, "tunnel.test", self.upstream_roots.clone()).await
            }
            Path::Tunnel => {
                let tcp = connect_tunnel(self.proxy, &self.proxy_auth, "tunnel.test", port).await;
                https_sender(tcp, "tunnel.test", self.upstream_roots.clone()).await
            }
            Path::Inject => {
                let tcp = connect_tunnel(self.proxy, &self.proxy_auth, "inject.test", port).await;
                https_sender(tcp, "inject.test", self.proxy_roots.clone()).await
            }
        }
    }

    async fn get(&self, sender: &mut SendRequest<Empty<Bytes>>, host: &str, path: &str) -> u64 {
        let authority = format!("{host}:{}", self.upstream.port());
        let (status, n) = get(sender, &authority, path).await.unwrap();
        assert_eq!(status, 200);
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
