//! The client against hand-written misbehaving servers on loopback (CATALOGUE §2b C6, C12, C13,
//! C15 and the wire forms of PROTOCOL.md §5.1-§5.4 and §7.2): redirects are errors and their
//! target hears nothing, bodies are capped and timed out, credentials never reach an error text,
//! and every empty-poll, stop, 412 and SSE form a real server may send is understood.

// Test helpers panic on setup failures; that is what a test wants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hands_client::{
    ApiError, ClientConfig, ControlPlane, Credential, Heartbeat, MAX_RETRY_AFTER, PollOptions,
    StopOutcome, StreamError,
};
use hands_protocol::events::SessionEvent;
use hands_protocol::work::WorkState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The canary every test sends; it must never show up in an error.
const KEY: &str = "sk-ant-oat01-canary-c15-0123456789abcdef";
const ENV: &str = "env_faults";
/// Bounds a whole call so a missing cap or timeout fails the test instead of hanging it.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// A canned answer.
type Form = fn() -> Response;
/// Response headers to add.
type Headers = Vec<(&'static str, String)>;

fn key() -> Credential {
    Credential::environment_key(KEY)
}

/// Serves `router` on an ephemeral loopback port; returns its base URL.
async fn serve(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

/// One handler for every route.
async fn serve_fn<F, R>(f: F) -> String
where
    F: Fn(HeaderMap, Bytes) -> R + Clone + Send + Sync + 'static,
    R: IntoResponse + 'static,
{
    serve(Router::new().fallback(any(move |h: HeaderMap, b: Bytes| {
        let f = f.clone();
        async move { f(h, b) }
    })))
    .await
}

fn client(base: &str) -> ControlPlane {
    ControlPlane::new(ClientConfig::with_base_url(base)).unwrap()
}

fn client_with(base: &str, tweak: impl FnOnce(&mut ClientConfig)) -> ControlPlane {
    let mut config = ClientConfig::with_base_url(base);
    tweak(&mut config);
    ControlPlane::new(config).unwrap()
}

async fn guarded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, f)
        .await
        .expect("the call hung: no cap or no timeout")
}

fn assert_no_key(e: &impl std::fmt::Debug, display: &str) {
    let debug = format!("{e:?}");
    assert!(!display.contains(KEY), "Display leaks the key: {display}");
    assert!(!debug.contains(KEY), "Debug leaks the key: {debug}");
    // Not even a recognisable fragment of it.
    assert!(!display.contains("canary-c15"), "{display}");
    assert!(!debug.contains("canary-c15"), "{debug}");
}

fn error_json(kind: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_1"})
}

fn work_item_json() -> serde_json::Value {
    serde_json::json!({
        "type": "work", "id": "work_1", "environment_id": ENV,
        "data": {"type": "session", "id": "sesn_1"}, "state": "queued",
        "created_at": "2026-01-01T00:00:00Z"
    })
}

// ---------------------------------------------------------------- C12

/// A raw listener that counts connections (and bytes) it receives: the redirect target.
struct Target {
    url: String,
    connections: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
}

async fn target() -> Target {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/steal", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let bytes = Arc::new(AtomicUsize::new(0));
    let (c, b) = (Arc::clone(&connections), Arc::clone(&bytes));
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let b = Arc::clone(&b);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    b.fetch_add(n, Ordering::SeqCst);
                }
            });
        }
    });
    Target {
        url,
        connections,
        bytes,
    }
}

#[tokio::test]
async fn c12_redirects_are_errors_and_the_target_hears_nothing() {
    let t = target().await;
    for status in [301u16, 302, 303, 307, 308] {
        let location = t.url.clone();
        let base = serve_fn(move |_, _| {
            (
                StatusCode::from_u16(status).unwrap(),
                [("location", location.clone())],
                "moved",
            )
        })
        .await;
        let cp = client(&base);
        let k = key();
        // Buffered calls (GET and POST) and the streaming ones.
        let results: Vec<(&str, Result<(), ApiError>)> = vec![
            (
                "poll",
                guarded(cp.poll(&k, ENV, &PollOptions::default()))
                    .await
                    .map(drop),
            ),
            ("ack", guarded(cp.ack(&k, ENV, "work_1")).await),
            (
                "events",
                guarded(cp.send_events::<hands_protocol::events::SessionEvent>(&k, "sesn_1", &[]))
                    .await
                    .map(drop),
            ),
            (
                "stream",
                guarded(cp.stream_events(&k, "sesn_1")).await.map(drop),
            ),
            (
                "skill",
                guarded(cp.download_skill(&k, "skill_x", "v1", &mut Vec::new(), 1 << 20))
                    .await
                    .map(drop),
            ),
        ];
        for (call, r) in results {
            let e = r.expect_err(call);
            assert!(
                matches!(e, ApiError::Redirect { status: s, .. } if s.as_u16() == status),
                "{call} {status}: {e:?}"
            );
            assert!(
                !e.is_transient(),
                "{call} {status}: a redirect is not retried"
            );
            assert_no_key(&e, &e.to_string());
        }
    }
    // Give a (wrongly) followed redirect time to connect before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(t.connections.load(Ordering::SeqCst), 0, "redirect followed");
    assert_eq!(t.bytes.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------- C13

/// Answers every connection with `head` and then whatever `body` writes, never closing first.
async fn raw_server<F, Fut>(body: F) -> String
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = Arc::new(body);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let body = Arc::clone(&body);
            tokio::spawn(async move {
                // Read the request head before answering.
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                body(sock).await;
            });
        }
    });
    format!("http://{addr}")
}

const CAP: usize = 64 * 1024;

#[tokio::test]
async fn c13_a_declared_gigantic_body_is_refused_from_its_header() {
    // Declares a terabyte, sends a few bytes and then nothing: a client that reads before
    // checking the length would sit here until its timeout instead of refusing.
    let base = raw_server(|mut sock| async move {
        let _ = sock
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000000000000\r\n\r\n{\"data\":[")
            .await;
        tokio::time::sleep(Duration::from_secs(60)).await;
    })
    .await;
    let cp = client_with(&base, |c| {
        c.max_response_bytes = CAP;
        c.request_timeout = Duration::from_secs(20);
    });
    let e = guarded(cp.list_events(&key(), "sesn_1", None, 10))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ApiError::TooLarge { limit, .. } if limit == CAP),
        "{e:?}"
    );
    assert!(!e.is_transient());
}

#[tokio::test]
async fn c13_an_endless_chunked_body_stops_at_the_cap() {
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&sent);
    // Chunked, no length, never ends: only the cap can stop the read.
    let base = raw_server(move |mut sock| {
        let counter = Arc::clone(&counter);
        async move {
            if sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
            let chunk = vec![b' '; 8192];
            loop {
                let head = format!("{:x}\r\n", chunk.len());
                if sock.write_all(head.as_bytes()).await.is_err()
                    || sock.write_all(&chunk).await.is_err()
                    || sock.write_all(b"\r\n").await.is_err()
                {
                    return;
                }
                counter.fetch_add(chunk.len(), Ordering::SeqCst);
            }
        }
    })
    .await;
    let cp = client_with(&base, |c| {
        c.max_response_bytes = CAP;
        c.request_timeout = Duration::from_secs(20);
    });
    let e = guarded(cp.get_session(&key(), "sesn_1")).await.unwrap_err();
    assert!(
        matches!(e, ApiError::TooLarge { limit, .. } if limit == CAP),
        "{e:?}"
    );
    // And the same for the streaming download path with its own limit.
    let mut sink = Vec::new();
    let e = guarded(cp.download_skill(&key(), "skill_x", "v1", &mut sink, CAP as u64))
        .await
        .unwrap_err();
    assert!(matches!(e, ApiError::TooLarge { .. }), "{e:?}");
    assert!(
        sink.len() <= CAP,
        "wrote {} bytes past a {CAP} cap",
        sink.len()
    );
}

#[tokio::test]
async fn c13_a_trickling_body_hits_the_request_timeout() {
    // One byte a second forever: headers are prompt, the body never completes.
    let base = raw_server(|mut sock| async move {
        if sock
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        loop {
            if sock.write_all(b"1\r\n \r\n").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let cp = client_with(&base, |c| c.request_timeout = Duration::from_millis(800));
    let e = guarded(cp.get_session(&key(), "sesn_1")).await.unwrap_err();
    assert!(matches!(e, ApiError::Transport(_)), "{e:?}");
    assert!(e.is_transient(), "a timeout may be retried");
    // A stalled poll is bounded by the request timeout plus its block time, too.
    let e = guarded(cp.poll(
        &key(),
        ENV,
        &PollOptions {
            block_ms: Some(100),
            ..PollOptions::default()
        },
    ))
    .await
    .unwrap_err();
    assert!(matches!(e, ApiError::Transport(_)), "{e:?}");
}

// ---------------------------------------------------------------- C15

#[tokio::test]
async fn c15_the_key_never_appears_in_errors() {
    let k = key();
    let debug = format!("{k:?}");
    assert!(
        !debug.contains(KEY) && debug.contains("redacted"),
        "{debug}"
    );

    // A transport error: nothing listens on the port.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cp = client_with(&format!("http://{closed}"), |c| {
        c.connect_timeout = Duration::from_secs(5);
    });
    let e = guarded(cp.poll(&k, ENV, &PollOptions::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ApiError::Transport(_)) && e.is_transient(),
        "{e:?}"
    );
    assert_no_key(&e, &e.to_string());

    // Servers that echo the Authorization header back, in an error body and in its details.
    let base = serve_fn(|h: HeaderMap, _| {
        let auth = h
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut body = error_json("api_error", &format!("upstream rejected {auth}"));
        body["error"]["details"] = serde_json::json!({"error_code": "x", "echo": auth});
        (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body))
    })
    .await;
    let cp = client(&base);
    let errors = vec![
        guarded(cp.ack(&k, ENV, "work_1")).await.unwrap_err(),
        guarded(cp.stream_events(&k, "sesn_1")).await.unwrap_err(),
        guarded(cp.get_session(&k, "sesn_1")).await.unwrap_err(),
    ];
    for e in &errors {
        assert_eq!(e.status(), Some(StatusCode::INTERNAL_SERVER_ERROR), "{e:?}");
        assert!(e.is_transient());
        assert_no_key(e, &e.to_string());
        // What is left is still useful.
        assert!(e.to_string().contains("upstream rejected"), "{e}");
    }

    // A 2xx whose body is the echoed header instead of the object the protocol promises.
    let base = serve_fn(|h: HeaderMap, _| {
        let auth = h
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        axum::Json(serde_json::Value::String(auth))
    })
    .await;
    let cp = client(&base);
    let e = guarded(cp.poll(&k, ENV, &PollOptions::default()))
        .await
        .unwrap_err();
    assert!(matches!(e, ApiError::Decode { .. }), "{e:?}");
    assert_no_key(&e, &e.to_string());
    let e = guarded(cp.get_session(&k, "sesn_1")).await.unwrap_err();
    assert!(matches!(e, ApiError::Decode { .. }), "{e:?}");
    assert_no_key(&e, &e.to_string());
}

// ---------------------------------------------------------------- C6

#[tokio::test]
async fn c6_retry_after_is_read_from_real_responses() {
    let when = SystemTime::now() + Duration::from_secs(40);
    let date = httpdate::fmt_http_date(when);
    let cases: Vec<(Headers, Option<(Duration, Duration)>)> = vec![
        (
            vec![("retry-after", "3".into())],
            Some((Duration::from_secs(3), Duration::from_secs(3))),
        ),
        (
            vec![("retry-after-ms", "250".into())],
            Some((Duration::from_millis(250), Duration::from_millis(250))),
        ),
        (
            vec![
                ("retry-after-ms", "1500".into()),
                ("retry-after", "9".into()),
            ],
            Some((Duration::from_millis(1500), Duration::from_millis(1500))),
        ),
        // An HTTP date: whole seconds, measured from when the answer arrived.
        (
            vec![("retry-after", date)],
            Some((Duration::from_secs(35), Duration::from_secs(40))),
        ),
        (
            vec![("retry-after", "86400".into())],
            Some((MAX_RETRY_AFTER, MAX_RETRY_AFTER)),
        ),
        (vec![("retry-after", "soon".into())], None),
        (vec![], None),
    ];
    for (headers, expected) in cases {
        let h = headers.clone();
        let base = serve_fn(move |_, _| {
            let mut resp = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(error_json("rate_limit_error", "slow down")),
            )
                .into_response();
            for (k, v) in &h {
                resp.headers_mut().insert(*k, v.parse().unwrap());
            }
            resp
        })
        .await;
        let e = guarded(client(&base).ack(&key(), ENV, "work_1"))
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(StatusCode::TOO_MANY_REQUESTS));
        assert!(e.is_transient());
        match (e.retry_after(), expected) {
            (Some(got), Some((lo, hi))) => {
                assert!(
                    got >= lo && got <= hi,
                    "{headers:?}: {got:?} not in {lo:?}..={hi:?}"
                )
            }
            (None, None) => {}
            (got, want) => panic!("{headers:?}: got {got:?}, want {want:?}"),
        }
    }
    // `x-should-retry: false` overrides a transient status.
    let base = serve_fn(|_, _| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [("x-should-retry", "false")],
            axum::Json(error_json("overloaded_error", "no")),
        )
    })
    .await;
    let e = guarded(client(&base).ack(&key(), ENV, "work_1"))
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e:?}");
}

// ---------------------------------------------------------------- §5.1 poll

#[tokio::test]
async fn empty_polls_in_every_form_are_none() {
    let forms: Vec<(&str, Form)> = vec![
        ("200 null", || {
            axum::Json(serde_json::Value::Null).into_response()
        }),
        ("200 empty", || {
            (StatusCode::OK, [("content-type", "application/json")], "").into_response()
        }),
        ("200 whitespace", || {
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                " \r\n",
            )
                .into_response()
        }),
        ("204", || StatusCode::NO_CONTENT.into_response()),
        ("empty id", || {
            let mut item = work_item_json();
            item["id"] = "".into();
            axum::Json(item).into_response()
        }),
    ];
    for (name, form) in forms {
        let base = serve_fn(move |_, _| form()).await;
        let got = guarded(client(&base).poll(&key(), ENV, &PollOptions::default())).await;
        assert!(matches!(got, Ok(None)), "{name}: {got:?}");
    }
    // And the non-empty form is an item (so the test above can tell the difference).
    let base = serve_fn(|_, _| axum::Json(work_item_json())).await;
    let item = guarded(client(&base).poll(&key(), ENV, &PollOptions::default()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (item.id.as_str(), item.data.id.as_str()),
        ("work_1", "sesn_1")
    );
    // A body that is neither is an error, not an empty queue.
    let base = serve_fn(|_, _| axum::Json(serde_json::json!({"id": 7}))).await;
    let got = guarded(client(&base).poll(&key(), ENV, &PollOptions::default())).await;
    assert!(matches!(got, Err(ApiError::Decode { .. })), "{got:?}");
}

// ---------------------------------------------------------------- §5.4 stop

#[tokio::test]
async fn stop_accepts_204_200_and_409() {
    let bodies = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let forms: Vec<(&str, Form, StopOutcome)> = vec![
        (
            "204",
            || StatusCode::NO_CONTENT.into_response(),
            StopOutcome::Stopped,
        ),
        (
            "200",
            || {
                let mut item = work_item_json();
                item["state"] = "stopped".into();
                axum::Json(item).into_response()
            },
            StopOutcome::Stopped,
        ),
        (
            "409",
            || {
                (
                    StatusCode::CONFLICT,
                    axum::Json(error_json("invalid_request_error", "already stopped")),
                )
                    .into_response()
            },
            StopOutcome::AlreadyStopped,
        ),
    ];
    for (name, form, want) in forms {
        let seen = Arc::clone(&bodies);
        let base = serve_fn(move |_, body: Bytes| {
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
            form()
        })
        .await;
        let got = guarded(client(&base).stop(&key(), ENV, "work_1", true)).await;
        assert_eq!(got.unwrap(), want, "{name}");
    }
    // A graceful stop sends `{}`, a forced one `{"force":true}`.
    let seen = Arc::clone(&bodies);
    let base = serve_fn(move |_, body: Bytes| {
        seen.lock()
            .unwrap()
            .push(String::from_utf8_lossy(&body).into_owned());
        StatusCode::NO_CONTENT
    })
    .await;
    guarded(client(&base).stop(&key(), ENV, "work_1", false))
        .await
        .unwrap();
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies[..3], [r#"{"force":true}"#; 3]);
    assert_eq!(bodies[3], "{}");
    // Any other failure is an error.
    let base = serve_fn(|_, _| {
        (
            StatusCode::NOT_FOUND,
            axum::Json(error_json("not_found_error", "gone")),
        )
    })
    .await;
    let got = guarded(client(&base).stop(&key(), ENV, "work_1", true)).await;
    assert_eq!(got.unwrap_err().status(), Some(StatusCode::NOT_FOUND));
}

// ---------------------------------------------------------------- §5.3 heartbeat

#[tokio::test]
async fn heartbeat_412_is_lease_lost_with_or_without_the_current_state() {
    let with_state = || {
        let mut body = error_json("invalid_request_error", "heartbeat precondition failed");
        body["error"]["details"] = serde_json::json!({
            "error_code": "heartbeat_precondition_failed",
            "current_state": {"last_heartbeat": "2026-01-01T00:00:01.000001Z",
                              "lease_extended": false, "state": "queued", "ttl_seconds": 0}
        });
        (StatusCode::PRECONDITION_FAILED, axum::Json(body)).into_response()
    };
    let base = serve_fn(move |_, _| with_state()).await;
    let got = guarded(client(&base).heartbeat(
        &key(),
        ENV,
        "work_1",
        "NO_HEARTBEAT",
        None,
        Duration::from_secs(5),
    ))
    .await
    .unwrap();
    let Heartbeat::LeaseLost(Some(state)) = got else {
        panic!("{got:?}")
    };
    assert_eq!(state.state, WorkState::Queued);
    assert_eq!(
        state.last_heartbeat.as_deref(),
        Some("2026-01-01T00:00:01.000001Z")
    );

    let forms: Vec<(&str, Form)> = vec![
        ("no details", || {
            (
                StatusCode::PRECONDITION_FAILED,
                axum::Json(error_json("invalid_request_error", "lost")),
            )
                .into_response()
        }),
        ("no body", || {
            StatusCode::PRECONDITION_FAILED.into_response()
        }),
        ("unreadable state", || {
            let mut body = error_json("invalid_request_error", "lost");
            body["error"]["details"] = serde_json::json!({"current_state": "??"});
            (StatusCode::PRECONDITION_FAILED, axum::Json(body)).into_response()
        }),
    ];
    for (name, form) in forms {
        let base = serve_fn(move |_, _| form()).await;
        let got = guarded(client(&base).heartbeat(
            &key(),
            ENV,
            "work_1",
            "2026-01-01T00:00:00+00:00",
            None,
            Duration::from_secs(5),
        ))
        .await;
        assert_eq!(got.unwrap(), Heartbeat::LeaseLost(None), "{name}");
    }

    // The CAS token travels percent-encoded (a `+` must not become a space).
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
    let s = Arc::clone(&seen);
    let base = serve(Router::new().fallback(any(move |uri: axum::http::Uri| {
        let s = Arc::clone(&s);
        async move {
            *s.lock().unwrap() = uri.query().unwrap_or("").to_owned();
            axum::Json(
                serde_json::json!({"type": "work_heartbeat", "last_heartbeat": "t2",
                "lease_extended": true, "state": "active", "ttl_seconds": 9}),
            )
        }
    })))
    .await;
    let got = guarded(client(&base).heartbeat(
        &key(),
        ENV,
        "work_1",
        "2026-01-01T00:00:00+00:00",
        None,
        Duration::from_secs(5),
    ))
    .await
    .unwrap();
    assert!(
        matches!(&got, Heartbeat::Beat(r) if r.last_heartbeat == "t2" && r.ttl_seconds == 9),
        "{got:?}"
    );
    assert!(
        seen.lock()
            .unwrap()
            .contains("expected_last_heartbeat=2026-01-01T00%3A00%3A00%2B00%3A00"),
        "{}",
        seen.lock().unwrap()
    );
}

// ---------------------------------------------------------------- §7.2 SSE

#[tokio::test]
async fn sse_drops_unnamed_frames_skips_pings_and_surfaces_server_errors() {
    let frames = [
        // No `event:` line: dropped, as the SDK decoders do.
        "data: {\"type\":\"agent.tool_use\",\"id\":\"sevt_unnamed\",\"name\":\"bash\",\"input\":{}}\n\n",
        ": keep-alive comment\n\n",
        "event: ping\ndata: {}\n\n",
        "event: agent.tool_use\ndata: {\"type\":\"agent.tool_use\",\"id\":\"sevt_1\",\n",
        "data: \"name\":\"bash\",\"input\":{\"command\":\"ls\"}}\n\n",
        "event: ping\r\ndata: {}\r\n\r\n",
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"stream overloaded\"}}\n\n",
        "event: session.status_idle\ndata: {\"type\":\"session.status_idle\",\"id\":\"sevt_2\"}\n\n",
    ];
    let base = serve_fn(move |_, _| {
        let chunks = frames.map(|f| Ok::<_, Infallible>(Bytes::from_static(f.as_bytes())));
        (
            [("content-type", "text/event-stream")],
            Body::from_stream(futures::stream::iter(chunks)),
        )
    })
    .await;
    let mut stream = guarded(client(&base).stream_events(&key(), "sesn_1"))
        .await
        .unwrap();
    let first = guarded(stream.next()).await.unwrap().unwrap();
    assert!(
        matches!(&first, SessionEvent::AgentToolUse(t) if t.id == "sevt_1"),
        "{first:?}"
    );
    let second = guarded(stream.next()).await.unwrap();
    match second {
        Err(StreamError::Server(body)) => assert_eq!(body.error.message, "stream overloaded"),
        other => panic!("{other:?}"),
    }
    let third = guarded(stream.next()).await.unwrap().unwrap();
    assert_eq!(third.id(), Some("sevt_2"));
    assert!(guarded(stream.next()).await.is_none(), "the stream ended");
}

// ---------------------------------------------------------------- the request itself

/// What a call puts on the wire, whichever HTTP stack sends it (the lane, or reqwest where a
/// proxy is configured): the method, the path with its query, the credential, the beta, the
/// API version, the user agent and the call's own headers; a JSON body with its type.
#[tokio::test]
async fn a_call_carries_its_query_credential_and_every_header() {
    let seen: Arc<std::sync::Mutex<Vec<(String, String, HeaderMap)>>> = Arc::default();
    let record = Arc::clone(&seen);
    let base = serve(Router::new().fallback(any(
        move |method: axum::http::Method, uri: axum::http::Uri, h: HeaderMap| {
            let record = Arc::clone(&record);
            async move {
                record
                    .lock()
                    .unwrap()
                    .push((method.to_string(), uri.to_string(), h));
                (StatusCode::OK, axum::Json(work_item_json()))
            }
        },
    )))
    .await;
    let cp = client(&base);
    let opts = PollOptions {
        block_ms: Some(250),
        reclaim_older_than_ms: Some(2000),
        worker_id: Some("worker-7".into()),
    };
    let item = guarded(cp.poll(&key(), ENV, &opts)).await.unwrap();
    assert_eq!(item.map(|i| i.id), Some("work_1".to_owned()));
    let seen = seen.lock().unwrap();
    let (method, uri, headers) = &seen[0];
    assert_eq!(method, "GET");
    assert_eq!(
        uri,
        &format!("/v1/environments/{ENV}/work/poll?block_ms=250&reclaim_older_than_ms=2000")
    );
    let header = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(header("authorization"), [format!("Bearer {KEY}")]);
    assert_eq!(
        header("anthropic-beta"),
        [hands_client::MANAGED_AGENTS_BETA]
    );
    assert_eq!(header("anthropic-version"), ["2023-06-01"]);
    assert_eq!(header("anthropic-worker-id"), ["worker-7"]);
    assert!(header("user-agent")[0].starts_with("hands/"), "{headers:?}");
}
