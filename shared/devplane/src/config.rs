//! Everything that shapes how devplane behaves: identities, lease timing, variant switches for
//! the protocol's unknowns (PROTOCOL.md §14), fault injection and the webhook sender.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::faults::Faults;

/// How `POST .../stop` answers on success; both happen in the wild (§5.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReply {
    /// 204 with no body and no content type (what the Go SDK records today).
    #[default]
    #[serde(rename = "204")]
    NoContent,
    /// 200 with the work item JSON (what the docs say).
    #[serde(rename = "200")]
    Json,
}

/// Where and how to deliver webhooks (§10).
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub url: String,
    /// `whsec_...`.
    pub secret: String,
    /// Attempts per event (the real sender makes 3).
    pub attempts: u32,
    /// First backoff; doubles each attempt, jittered in [d/2, d]. The real sender waits 5-120 s;
    /// tests use milliseconds.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl WebhookConfig {
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> Self {
        WebhookConfig {
            url: url.into(),
            secret: secret.into(),
            attempts: 3,
            base_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(120),
        }
    }
}

/// The emulator's configuration. `Config::default()` is what `hands devplane` uses.
#[derive(Clone, Debug)]
pub struct Config {
    pub environment_id: String,
    pub environment_key: String,
    pub api_key: String,
    /// Lease TTL applied when a heartbeat asks for none (also the lease an ack starts).
    pub default_ttl: Duration,
    /// Whether an item whose lease lapsed goes back to the queue (else it is left as it was).
    pub requeue_on_lease_expiry: bool,
    /// How often leases are checked for expiry.
    pub lease_check_interval: Duration,
    /// Default `reclaim_older_than_ms` when a poll omits it.
    pub default_reclaim: Duration,
    /// Window for `workers_polling`.
    pub workers_polling_window: Duration,
    pub stop_reply: StopReply,
    /// Whether `/v1/skills/...` accepts a sessions token (the SDK sends one; Anthropic's
    /// quickstart notes say the real API refused it at the time, §1.1).
    pub skills_accept_sessions_token: bool,
    /// Interval of `event: ping` frames on the SSE stream.
    pub sse_ping_interval: Duration,
    pub faults: Faults,
    pub webhook: Option<WebhookConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            environment_id: crate::ids::new_id("env"),
            environment_key: crate::ids::new_token("sk-ant-oat01-devplane-"),
            api_key: crate::ids::new_token("sk-ant-api03-devplane-"),
            default_ttl: Duration::from_secs(90),
            requeue_on_lease_expiry: true,
            lease_check_interval: Duration::from_millis(250),
            default_reclaim: Duration::from_millis(5000),
            workers_polling_window: Duration::from_secs(30),
            stop_reply: StopReply::NoContent,
            skills_accept_sessions_token: true,
            sse_ping_interval: Duration::from_secs(15),
            faults: Faults::default(),
            webhook: None,
        }
    }
}
