//! One invocation of the `webhook` function, by what invoked it:
//! - a delivery (function URL): the ingress Router (verify, dedupe, drain); each claimed item is
//!   handed to the `session` function by an asynchronous Invoke, and the delivery is answered
//!   2xx only after every invoke was accepted;
//! - the EventBridge schedule: the same drain (deliveries get lost), then the janitor's list of
//!   items that hold a lease without heartbeating;
//! - an on-failure destination record of the `session` function: the item is force-stopped.

use std::sync::Arc;
use std::time::Duration;

use hands_ingress::{Ingress, IngressConfig, Trigger, parse_secret_list};
use hands_lambda::env_config::{ConfigError, duration_var, secret_from_env, var};
use hands_lambda::function_config::{tenant_isolation, worker_setup};
use hands_lambda::{SessionInvoker, WebhookFunctionEvent};
use hands_worker::Cleanup;
use serde_json::{Value, json};

pub struct WebhookFunction {
    ingress: Ingress,
    router: axum::Router,
    /// Items without a heartbeat for this long are listed by the janitor.
    stale_after: Duration,
}

impl WebhookFunction {
    pub async fn from_env() -> Result<Self, lambda_runtime::Error> {
        let sdk = hands_lambda::aws::sdk_config().await;
        let secrets = hands_lambda::Resolver::with_aws_config(sdk.clone());
        let setup = worker_setup(&secrets, true).await?;
        let session_function =
            var("HANDS_SESSION_FUNCTION").ok_or(ConfigError::Missing("HANDS_SESSION_FUNCTION"))?;
        let invoker =
            SessionInvoker::from_sdk_config(&sdk, session_function.clone(), tenant_isolation())
                .await;
        let config = IngressConfig {
            // The reply waits for the whole drain: after the response the environment is
            // frozen, so a drain left running would stall until the next invocation.
            reply_budget: duration_var("HANDS_REPLY_BUDGET", Duration::from_secs(10))?,
            ..IngressConfig::default()
        };
        tracing::info!(environment_id = %setup.worker.environment_id, %session_function,
            tenant_isolation = tenant_isolation(), "webhook function ready");
        let ingress =
            Ingress::with_hand_off(setup.control_plane, setup.worker, config, Arc::new(invoker));
        let signing = secret_from_env(&secrets, "ANTHROPIC_WEBHOOK_SIGNING_KEY")
            .await?
            .unwrap_or_default();
        let verifier = parse_secret_list(&signing)?;
        if verifier.is_none() {
            tracing::warn!(
                "no webhook signing key: deliveries are answered 503 until ANTHROPIC_WEBHOOK_SIGNING_KEY is set"
            );
        }
        ingress.set_verifier(verifier);
        Ok(WebhookFunction {
            router: ingress.router(),
            ingress,
            stale_after: duration_var("HANDS_STALE_AFTER", Duration::from_secs(600))?,
        })
    }

    pub async fn handle(&self, event: Value) -> Result<Value, lambda_runtime::Error> {
        match WebhookFunctionEvent::classify(event) {
            WebhookFunctionEvent::Http(event) => {
                crate::http_event::answer(&self.router, &event).await
            }
            WebhookFunctionEvent::Schedule => Ok(self.on_schedule().await),
            WebhookFunctionEvent::FailedInvoke(failed) => {
                let cleanup = self.ingress.worker().clean_up_failed(&failed).await;
                Ok(match cleanup {
                    Cleanup::Stopped { work_id } => {
                        json!({"janitor": "stopped", "work_id": work_id})
                    }
                    Cleanup::StopFailed { work_id } => {
                        // Failing the invocation lets Lambda retry the record.
                        return Err(format!("could not stop {work_id}").into());
                    }
                    Cleanup::NoItem => json!({"janitor": "no_item"}),
                })
            }
            WebhookFunctionEvent::Unknown => {
                tracing::warn!(
                    "an event of an unknown shape invoked the webhook function; ignored"
                );
                Ok(json!({"ignored": true}))
            }
        }
    }

    async fn on_schedule(&self) -> Value {
        let drain = match self.ingress.drain(Trigger::Timer).await {
            Ok(r) => {
                json!({"claimed": r.claimed, "polls": r.polls, "stop": format!("{:?}", r.stop)})
            }
            Err(e) => json!({"error": e.to_string()}),
        };
        let worker = self.ingress.worker();
        let mut stopped = Vec::new();
        let mut stop_failed = Vec::new();
        let stale = match worker.stale_items(self.stale_after).await {
            Ok(items) => {
                // The rule of `hands janitor --stop-stale`: no heartbeat (or ack) for
                // HANDS_STALE_AFTER means the serving invocation is gone (a continuation that
                // never started, a killed function), so the item is force-stopped rather than
                // left holding the session until its lease lapses and it is served again.
                let key = worker.config().environment_key.clone();
                let env = worker.config().environment_id.clone();
                for i in &items {
                    tracing::warn!(work_id = %i.work_id, session_id = %i.session_id, state = ?i.state,
                        since = ?i.since, "work item holds a lease without heartbeating; force-stopping it");
                    match &key {
                        Some(key) if worker.force_stop(key, &env, &i.work_id).await => {
                            stopped.push(i.work_id.clone())
                        }
                        _ => {
                            tracing::error!(work_id = %i.work_id, "cannot force-stop a stale work item");
                            stop_failed.push(i.work_id.clone())
                        }
                    }
                }
                json!(items.iter().map(|i| i.work_id.clone()).collect::<Vec<_>>())
            }
            Err(e) => json!({"error": e.to_string()}),
        };
        json!({"drain": drain, "stale": stale, "stopped": stopped, "stop_failed": stop_failed})
    }

    /// Local mode: the same Router on `HANDS_LISTEN` (default `127.0.0.1:9000`), until SIGINT
    /// or SIGTERM.
    pub async fn serve_locally(&self) -> Result<(), lambda_runtime::Error> {
        let listen = var("HANDS_LISTEN").unwrap_or_else(|| "127.0.0.1:9000".to_owned());
        let listener = hands_ingress::server::bind(&listen).await?;
        tracing::info!(%listen, "AWS_LAMBDA_RUNTIME_API is not set: serving the webhook Router locally");
        let stop = tokio_util::sync::CancellationToken::new();
        let on_signal = stop.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            on_signal.cancel();
        });
        let config = hands_ingress::ServerConfig {
            drain_interval: None,
            ..hands_ingress::ServerConfig::default()
        };
        hands_ingress::server::serve(listener, self.ingress.clone(), config, stop).await;
        Ok(())
    }
}
