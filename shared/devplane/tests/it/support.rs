//! Shared helpers: a fast-timing server and request builders.

use std::time::Duration;

use hands_devplane::{Config, DevPlane, SessionSpec};
use serde_json::Value;

pub const BETA: &str = "managed-agents-2026-04-01";

pub struct Env {
    pub dp: DevPlane,
    pub http: reqwest::Client,
}

pub fn fast_config() -> Config {
    Config {
        lease_check_interval: Duration::from_millis(20),
        sse_ping_interval: Duration::from_secs(30),
        ..Config::default()
    }
}

pub async fn start() -> Env {
    start_with(fast_config()).await
}

pub async fn start_with(cfg: Config) -> Env {
    let dp = DevPlane::start(cfg, "127.0.0.1:0").await.unwrap();
    Env {
        dp,
        http: reqwest::Client::new(),
    }
}

impl Env {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.dp.base_url())
    }

    pub fn work_path(&self, rest: &str) -> String {
        self.url(&format!(
            "/v1/environments/{}/work{rest}",
            self.dp.environment_id()
        ))
    }

    pub fn env_key(&self) -> String {
        self.dp.environment_key().to_owned()
    }

    pub fn get(&self, url: &str, bearer: &str) -> reqwest::RequestBuilder {
        self.http
            .get(url)
            .bearer_auth(bearer)
            .header("anthropic-beta", BETA)
    }

    pub fn post(&self, url: &str, bearer: &str) -> reqwest::RequestBuilder {
        self.http
            .post(url)
            .bearer_auth(bearer)
            .header("anthropic-beta", BETA)
    }

    pub fn session(&self) -> String {
        self.dp.create_session(&SessionSpec::default()).unwrap()
    }

    /// Creates a session and claims + acks its item; returns (session, work, sessions token).
    pub async fn claimed(&self) -> (String, String, String) {
        let session = self.session();
        let item: Value = self
            .get(&self.work_path("/poll"), &self.env_key())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let work = item["id"].as_str().unwrap().to_owned();
        let r = self
            .post(&self.work_path(&format!("/{work}/ack")), &self.env_key())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let token = self.dp.sessions_token(&work).unwrap();
        (session, work, token)
    }

    pub async fn heartbeat(&self, work: &str, token: &str, expected: &str) -> reqwest::Response {
        self.post(&self.work_path(&format!("/{work}/heartbeat")), token)
            .query(&[("expected_last_heartbeat", expected)])
            .send()
            .await
            .unwrap()
    }
}

/// Asserts the §2 error body and returns it.
pub async fn error_body(resp: reqwest::Response, status: u16, kind: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let header_id = resp
        .headers()
        .get("request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert_eq!(body["request_id"], header_id.as_str());
    body
}

/// Polls `cond` every 10 ms, giving up after 10 s (an upper bound against hangs, not a timing
/// assertion).
pub async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}
