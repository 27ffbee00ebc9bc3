//! What can invoke the `webhook` function, told apart by shape:
//! - an HTTP request through its function URL (or an HTTP API, payload format 2.0): a delivery;
//! - an EventBridge schedule event: the backstop drain (deliveries can be lost) and the janitor;
//! - a Lambda destination record: the `session` function's on-failure destination, an item whose
//!   session invocations kept failing, to be force-stopped.

use hands_worker::FailedInvocation;
use serde_json::Value;

/// One input of the `webhook` function.
#[derive(Debug)]
pub enum WebhookFunctionEvent {
    Http(Value),
    Schedule,
    FailedInvoke(Box<FailedInvocation>),
    Unknown,
}

impl WebhookFunctionEvent {
    pub fn classify(event: Value) -> Self {
        if event.get("source").and_then(Value::as_str) == Some("aws.events")
            || event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
        {
            return WebhookFunctionEvent::Schedule;
        }
        if let Some(failed) = FailedInvocation::from_record(&event) {
            return WebhookFunctionEvent::FailedInvoke(Box::new(failed));
        }
        let ctx = event.get("requestContext");
        if ctx.and_then(|c| c.get("http")).is_some() || event.get("rawPath").is_some() {
            return WebhookFunctionEvent::Http(event);
        }
        WebhookFunctionEvent::Unknown
    }
}
