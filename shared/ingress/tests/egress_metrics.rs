//! `/metrics` carries the egress proxy's counters when the worker runs one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use hands_client::{ClientConfig, ControlPlane};
use hands_egress::{EgressConfig, EgressProxy, Policy, Resolver, StaticSecrets, UpstreamRoots};
use hands_ingress::{Ingress, IngressConfig};
use hands_worker::{WorkdirTemplate, WorkerConfig};
use http::Request;
use http_body_util::BodyExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tower::ServiceExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_include_the_egress_counters() {
    let scratch = tempfile::tempdir().unwrap();
    let proxy = EgressProxy::start(
        EgressConfig {
            policy: Policy::parse("", "empty").unwrap(),
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream_roots: UpstreamRoots::Webpki,
            resolver: Resolver::system(),
            bundle_dir: scratch.path().join("ca"),
        },
        &StaticSecrets::new(),
    )
    .await
    .unwrap();
    // One request without a session credential: refused with 407 and counted.
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(
        b"GET http://example.test/ HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 407"), "{answer}");

    let template = WorkdirTemplate::new(format!("{}/{{session_id}}", scratch.path().display()));
    let mut worker = WorkerConfig::new("env_test", template);
    worker.egress = Some(Arc::new(proxy));
    // A dead control plane: the queue gauges are reported as down, the rest still renders.
    let cp = ControlPlane::new(ClientConfig::with_base_url("http://127.0.0.1:9")).unwrap();
    let ingress = Ingress::new(cp, worker, IngressConfig::default());
    let resp = ingress
        .router()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned();
    for line in [
        "hands_egress_proxy_auth_failed_total 1",
        "hands_egress_denied_total 0",
        "# TYPE hands_egress_tunnels_total counter",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}
