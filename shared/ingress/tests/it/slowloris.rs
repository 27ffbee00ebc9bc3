//! CATALOGUE W19 and pitfall 7 against the real listener: trickled headers, silent
//! connections and trickled bodies are closed by the server's own timeouts, connections past the
//! cap are closed at accept, and valid deliveries keep being answered throughout.

use std::time::Duration;

use hands_ingress::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

/// Reads until the server closes the connection; returns what it sent. Fails the test if the
/// server keeps it open past [`GUARD`].
async fn until_closed(rd: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut got = Vec::new();
    let closed = tokio::time::timeout(GUARD, async {
        let mut buf = [0u8; 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept a slow connection open");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn w19_a_header_trickle_is_closed_while_valid_deliveries_are_served() {
    let s = Stack::start(Options::default()).await;
    let (mut rd, mut wr) = TcpStream::connect(s.addr).await.unwrap().into_split();
    let trickle = tokio::spawn(async move {
        if wr.write_all(b"POST /webhook HTTP/1.1\r\n").await.is_err() {
            return;
        }
        for b in b"x-slow: ".iter().chain([b'a'; 10_000].iter()) {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // While the trickle is going on, a valid delivery is answered.
    let reply = s.send(&Delivery::of_type(SECRET, "session.updated")).await;
    assert_eq!(reply.status, 204, "{reply:?}");
    let got = until_closed(&mut rd).await;
    // hyper closes a header-timed-out connection without a response, or with a 408.
    let text = String::from_utf8_lossy(&got);
    assert!(
        got.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text:?}"
    );
    trickle.abort();
    assert_eq!(s.polls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w19_a_connection_that_sends_nothing_is_closed() {
    let s = Stack::start(Options::default()).await;
    let mut idle = TcpStream::connect(s.addr).await.unwrap();
    let got = until_closed(&mut idle).await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        got.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w19_an_idle_keep_alive_connection_is_closed_after_its_request() {
    let s = Stack::start(Options::default()).await;
    let mut conn = TcpStream::connect(s.addr).await.unwrap();
    let d = Delivery::of_type(SECRET, "session.updated");
    conn.write_all(&d.request_with("/webhook", false))
        .await
        .unwrap();
    // The whole response (204 has no body), then nothing more: the server must close.
    let got = until_closed(&mut conn).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 204"), "{text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn w19_a_trickled_body_is_answered_408_and_closed() {
    let s = Stack::start(Options::default()).await;
    let d = Delivery::run_started(SECRET);
    let raw = d.request("/webhook");
    let split = raw.len() - d.body.len();
    let (mut rd, mut wr) = TcpStream::connect(s.addr).await.unwrap().into_split();
    let body = d.body.clone();
    let head = raw[..split].to_vec();
    let trickle = tokio::spawn(async move {
        if wr.write_all(&head).await.is_err() {
            return;
        }
        for b in body {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let got = until_closed(&mut rd).await;
    trickle.abort();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert_eq!(s.ingress.metrics().deliveries("body_timeout"), 1);
    assert_eq!(s.polls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w19_connections_past_the_cap_are_closed_at_accept() {
    let mut o = Options::default();
    o.server = ServerConfig {
        max_connections: 2,
        // Long enough that the two idle connections hold their slots for the whole test.
        header_timeout: Duration::from_secs(60),
        ..o.server
    };
    let s = Stack::start(o).await;
    let a = TcpStream::connect(s.addr).await.unwrap();
    let b = TcpStream::connect(s.addr).await.unwrap();
    let metrics = std::sync::Arc::clone(s.ingress.metrics());
    eventually("two connections open", || {
        metrics.render(None).contains("hands_connections_open 2")
    })
    .await;
    let mut third = TcpStream::connect(s.addr).await.unwrap();
    let got = until_closed(&mut third).await;
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert!(
        metrics
            .render(None)
            .contains("hands_connections_refused_total 1")
    );
    // A slot freed is a slot usable again.
    drop(a);
    eventually("a slot was freed", || {
        metrics.render(None).contains("hands_connections_open 1")
    })
    .await;
    let reply = s.send(&Delivery::of_type(SECRET, "session.updated")).await;
    assert_eq!(reply.status, 204);
    drop(b);
}

/// Shutdown reaches a keep-alive connection idling between requests: the server closes it and
/// stops, with no timeout of its own to do it (header timeout and grace far beyond [`GUARD`],
/// which fails the test if either is what ends the wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_an_idle_keep_alive_connection() {
    let mut o = Options::default();
    o.server = ServerConfig {
        header_timeout: Duration::from_secs(600),
        shutdown_grace: Duration::from_secs(600),
        ..o.server
    };
    let mut s = Stack::start(o).await;
    let mut conn = TcpStream::connect(s.addr).await.unwrap();
    let d = Delivery::of_type(SECRET, "session.updated");
    conn.write_all(&d.request_with("/webhook", false))
        .await
        .unwrap();
    // The response head (a 204 has no body); the connection stays open after it.
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(GUARD, conn.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 204"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    s.shutdown().await;
    let rest = until_closed(&mut conn).await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}
