//! What one result post costs the worker, by client stack (`hands-post-bench`; a program that
//! prints figures, it asserts nothing).
//!
//! Issue 8 puts hands' own share of a round trip at ~180 µs, and a CPU profile of hands during
//! the e2e trace put 40 % of its CPU samples outside the tools under reqwest's and hyper's
//! frames. This measures that part alone: the same `POST /v1/sessions/{id}/events` of a tool
//! result, answered by a loopback server (a child process on another CPU) with the echo the
//! control plane sends, through
//! - `hands-client` (`ControlPlane::send_events`, what the worker uses: its lane over
//!   hyper-util's pooled client, or reqwest where a proxy is configured; then the echo checked
//!   and counted, the credential scrubbed),
//! - hyper-util's pooled client (`client::legacy`, what reqwest is built on) and
//! - one hyper HTTP/1 connection (`hyper::client::conn::http1`), both doing the same work
//!   around the request: the same JSON, the same headers, the echo scrubbed and counted.
//!
//! For each, results of 200 bytes and 9 KiB (the trace's typical `write` and `read`), sequential
//! requests on a single-threaded worker pinned to one CPU as in the e2e benchmark: the median and
//! p90 round trip, and the client process's CPU time per request (user + system, from
//! `getrusage`). Usage: `hands-post-bench [--requests N] [--client-cpu C --server-cpu S]`.
//! With `HTTP_PROXY=http://127.0.0.1:9 NO_PROXY=127.0.0.1` in the environment `hands-client`
//! takes its reqwest path instead (and `NO_PROXY` keeps reqwest off the proxy): the same client
//! before and after its lane.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::IgnoredAny;
use tokio::net::{TcpListener, TcpStream};

use hands_client::{ClientConfig, ControlPlane, Credential};
use hands_protocol::events::ResultToPost;
use hands_protocol::toolset::ContentBlock;

const SESSION: &str = "sesn_011CbenchPostPath0000000";
const KEY: &str = "sk-ant-bench-post-path-key-0123456789";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        return serve(args.get(2).context("serve PORT_FILE")?);
    }
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let requests: usize = flag("--requests").map_or(Ok(5000), |v| v.parse())?;
    let client_cpu: usize = flag("--client-cpu").map_or(Ok(0), |v| v.parse())?;
    let server_cpu: usize = flag("--server-cpu").map_or(Ok(1), |v| v.parse())?;

    let port_file = tempfile::NamedTempFile::new()?;
    let mut server = std::process::Command::new("taskset")
        .arg("-c")
        .arg(server_cpu.to_string())
        .arg(std::env::current_exe()?)
        .arg("serve")
        .arg(port_file.path())
        .spawn()
        .context("starting the echo server (taskset is needed)")?;
    let port = wait_for_port(port_file.path())?;
    pin_to(client_cpu)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let result = rt.block_on(measure(port, requests));
    let _ = server.kill();
    let _ = server.wait();
    result
}

/// The figures of one client at one result size.
struct Figures {
    p50: Duration,
    p90: Duration,
    cpu_per_request: Duration,
}

async fn measure(port: u16, requests: usize) -> anyhow::Result<()> {
    let base = format!("http://127.0.0.1:{port}");
    let cp = ControlPlane::new(ClientConfig::with_base_url(base.clone()))?;
    let credential = Credential::environment_key(KEY);
    let mut raw = RawClient::connect(port).await?;
    let mut pooled = RawClient::pooled(port)?;
    println!(
        "{requests} sequential result posts per row, client on one CPU, echo server on another"
    );
    println!("| client | result | p50 round trip | p90 round trip | client CPU per post |");
    println!("|---|---:|---:|---:|---:|");
    for size in [200usize, 9 * 1024] {
        let content = vec![ContentBlock::text("x".repeat(size))];
        let event = ResultToPost {
            custom: false,
            tool_use_id: "sevt_011CbenchPostPathToolUse0",
            is_error: false,
            content: &content,
        };
        // Alternating blocks, so a drift of the machine falls on all alike.
        let mut samples = [
            Vec::with_capacity(requests),
            Vec::with_capacity(requests),
            Vec::with_capacity(requests),
        ];
        let mut cpu = [Duration::ZERO; 3];
        let block = 500.min(requests.max(1));
        let mut done = 0;
        // Two blocks of warm-up (connections open, allocator and caches settled), then measure.
        let mut warm = 2;
        while done < requests {
            let n = block.min(requests - done);
            for (i, (samples, cpu)) in samples.iter_mut().zip(&mut cpu).enumerate() {
                let start = cpu_time();
                for _ in 0..n {
                    let t = Instant::now();
                    let echoed = match i {
                        0 => cp.send_events(&credential, SESSION, &[event]).await?,
                        1 => pooled.post(&event).await?,
                        _ => raw.post(&event).await?,
                    };
                    if warm == 0 {
                        samples.push(t.elapsed());
                    }
                    anyhow::ensure!(echoed == 1, "client {i}: echo of {echoed} events");
                }
                if warm == 0 {
                    *cpu += cpu_time() - start;
                }
            }
            if warm > 0 {
                warm -= 1;
            } else {
                done += n;
            }
        }
        let label = if size < 1024 {
            format!("{size} B")
        } else {
            format!("{} KiB", size / 1024)
        };
        let names = [
            "hands-client",
            "hyper-util's pooled client",
            "one hyper HTTP/1 connection",
        ];
        for ((name, samples), cpu) in names.iter().zip(&mut samples).zip(cpu) {
            let f = figures(samples, cpu);
            println!(
                "| {name} | {label} | {} µs | {} µs | {} µs |",
                f.p50.as_micros(),
                f.p90.as_micros(),
                f.cpu_per_request.as_micros()
            );
        }
    }
    Ok(())
}

fn figures(samples: &mut [Duration], cpu: Duration) -> Figures {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Figures {
        p50: at(0.5),
        p90: at(0.9),
        cpu_per_request: cpu / samples.len().max(1) as u32,
    }
}

/// The same request and the same work on its answer as `send_events`, on one kept connection
/// or through hyper-util's pooled client.
struct RawClient {
    send: Sender,
    uri: hyper::Uri,
    authorization: http::HeaderValue,
}

enum Sender {
    Connection(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Pooled(
        Box<
            hyper_util::client::legacy::Client<
                hyper_util::client::legacy::connect::HttpConnector,
                Full<Bytes>,
            >,
        >,
    ),
}

impl RawClient {
    async fn connect(port: u16) -> anyhow::Result<RawClient> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(RawClient {
            send: Sender::Connection(send),
            uri: format!("http://127.0.0.1:{port}/v1/sessions/{SESSION}/events").parse()?,
            authorization: http::HeaderValue::from_str(&format!("Bearer {KEY}"))?,
        })
    }

    fn pooled(port: u16) -> anyhow::Result<RawClient> {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        Ok(RawClient {
            send: Sender::Pooled(Box::new(client)),
            uri: format!("http://127.0.0.1:{port}/v1/sessions/{SESSION}/events").parse()?,
            authorization: http::HeaderValue::from_str(&format!("Bearer {KEY}"))?,
        })
    }

    async fn post(&mut self, event: &ResultToPost<'_>) -> anyhow::Result<usize> {
        #[derive(Serialize)]
        struct Body<'a, E: Serialize> {
            events: &'a [E],
        }
        #[derive(serde::Deserialize)]
        struct Echo {
            data: Vec<IgnoredAny>,
        }
        let body = serde_json::to_vec(&Body {
            events: std::slice::from_ref(event),
        })?;
        let req = Request::post(self.uri.clone())
            .header(http::header::HOST, "127.0.0.1")
            .header(http::header::AUTHORIZATION, self.authorization.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("anthropic-version", "2023-06-01")
            .header("anthropic-beta", "managed-agents-2026-04-01")
            .header(http::header::USER_AGENT, "hands-post-bench")
            .body(Full::new(Bytes::from(body)))?;
        let response = match &mut self.send {
            Sender::Connection(send) => {
                send.ready().await?;
                send.send_request(req).await?
            }
            Sender::Pooled(client) => client.request(req).await?,
        };
        anyhow::ensure!(response.status().is_success(), "{}", response.status());
        let body = response.into_body().collect().await?.to_bytes();
        // The worker scrubs every answer of its credential before anything reads it.
        anyhow::ensure!(
            memchr::memmem::find(&body, KEY.as_bytes()).is_none(),
            "the key came back"
        );
        Ok(serde_json::from_slice::<Echo>(&body)?.data.len())
    }
}

/// The echo server: answers every POST with `{"data":[<each posted event>]}`, as the control
/// plane echoes the events it stored (without the id and timestamp it adds: a few bytes).
fn serve(port_file: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        std::fs::write(port_file, listener.local_addr()?.port().to_string())?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(async move {
                let service = hyper::service::service_fn(echo);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    // `{"events":[...]}` becomes `{"data":[...]}`.
    let events = body
        .strip_prefix(b"{\"events\":")
        .and_then(|b| b.strip_suffix(b"}"))
        .unwrap_or(b"[]");
    let mut out = Vec::with_capacity(events.len() + 9);
    out.extend_from_slice(b"{\"data\":");
    out.extend_from_slice(events);
    out.push(b'}');
    let mut response = Response::new(Full::new(Bytes::from(out)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

fn wait_for_port(path: &std::path::Path) -> anyhow::Result<u16> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(port) = text.trim().parse()
        {
            return Ok(port);
        }
        anyhow::ensure!(Instant::now() < deadline, "the echo server did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Pins this process (and the threads it starts later) to one CPU.
fn pin_to(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity only read
    // and write it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error()).context("sched_setaffinity");
        }
    }
    Ok(())
}

/// User plus system CPU time of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
