//! The webhook sender (PROTOCOL.md §10.3-§10.5): when a session starts running, POST a thin
//! `session.status_run_started` event signed with Standard Webhooks, retrying like the real
//! sender (same event id each attempt, fresh timestamp and signature, jittered exponential
//! backoff, 2xx acknowledges, 3xx is never followed, give up after the last attempt).

use std::time::Duration;

use hands_protocol::webhook::{SigningSecret, sign};
use hands_protocol::webhook_event::{SESSION_STATUS_RUN_STARTED, WebhookEvent, WebhookEventData};
use rand::Rng;

use crate::config::WebhookConfig;
use crate::ids;
use crate::state::AppState;

/// Fires the run-started webhook for `session_id` in the background, if a webhook is configured.
pub fn session_run_started(st: &AppState, session_id: &str) {
    let Some(cfg) = st.config.webhook.clone() else {
        return;
    };
    let event = WebhookEvent {
        kind: Default::default(),
        id: ids::new_id("whe"),
        created_at: ids::now_rfc3339(),
        data: WebhookEventData {
            kind: SESSION_STATUS_RUN_STARTED.to_owned(),
            id: session_id.to_owned(),
            organization_id: Some("org_devplane".to_owned()),
            workspace_id: Some("wrkspc_devplane".to_owned()),
            session_thread_id: None,
            extra: Default::default(),
        },
    };
    let st = st.clone();
    tokio::spawn(async move {
        let outcome = deliver(&st, &cfg, &event).await;
        tracing::info!(event_id = %event.id, ?outcome, "webhook delivery finished");
    });
}

/// How a delivery ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    Delivered {
        attempts: u32,
    },
    /// A 3xx: the real sender disables the endpoint and never follows redirects.
    Redirected,
    GaveUp {
        attempts: u32,
    },
    BadSecret,
}

fn backoff(cfg: &WebhookConfig, attempt: u32) -> Duration {
    let d = cfg
        .base_delay
        .saturating_mul(1u32 << attempt.min(16))
        .min(cfg.max_delay);
    let half = d / 2;
    let jitter_ms = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
    half + Duration::from_millis(jitter_ms)
}

/// Delivers one event with retries.
pub async fn deliver(st: &AppState, cfg: &WebhookConfig, event: &WebhookEvent) -> Delivery {
    let Ok(secret) = SigningSecret::parse(&cfg.secret) else {
        tracing::warn!("webhook secret does not parse; not delivering");
        return Delivery::BadSecret;
    };
    let Ok(body) = serde_json::to_vec(event) else {
        return Delivery::BadSecret;
    };
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot build webhook client");
            return Delivery::GaveUp { attempts: 0 };
        }
    };
    let attempts = cfg.attempts.max(1);
    for attempt in 1..=attempts {
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let signature = sign(&secret, &event.id, timestamp, &body);
        {
            let mut store = st.lock();
            store.counters.webhook_attempts += 1;
            store
                .webhook_first_sent
                .entry(event.data.id.clone())
                .or_insert_with(std::time::SystemTime::now);
        }
        let resp = client
            .post(&cfg.url)
            .header("content-type", "application/json")
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.clone())
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => {
                st.lock().counters.webhook_deliveries += 1;
                return Delivery::Delivered { attempts: attempt };
            }
            Ok(r) if r.status().is_redirection() => return Delivery::Redirected,
            Ok(r) => tracing::info!(status = %r.status(), attempt, "webhook attempt failed"),
            Err(e) => tracing::info!(error = %e, attempt, "webhook attempt failed"),
        }
        if attempt < attempts {
            tokio::time::sleep(backoff(cfg, attempt - 1)).await;
        }
    }
    Delivery::GaveUp { attempts }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut cfg = WebhookConfig::new("http://x", "whsec_x");
        cfg.base_delay = Duration::from_millis(100);
        cfg.max_delay = Duration::from_millis(300);
        let first = backoff(&cfg, 0);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let capped = backoff(&cfg, 10);
        assert!(capped >= Duration::from_millis(150) && capped <= Duration::from_millis(300));
    }
}
