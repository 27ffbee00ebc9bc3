//! `webhook`: the Lambda function that receives the environment's signed webhooks through its
//! function URL, drains the queue and hands each claimed item to the `session` function by an
//! asynchronous Invoke; an EventBridge schedule invokes it too (backstop drain, janitor), and it
//! is the `session` function's on-failure destination. See `handler.rs`.
//!
//! Without `AWS_LAMBDA_RUNTIME_API` (not inside Lambda, nor `cargo lambda watch`) it serves the
//! same Router on a loopback port instead of starting the Lambda runtime: a local mode.

mod handler;
mod http_event;

use std::process::ExitCode;
use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};

fn main() -> ExitCode {
    hands_lambda::start::main_with("webhook", run)
}

async fn run() -> Result<(), lambda_runtime::Error> {
    let function = Arc::new(handler::WebhookFunction::from_env().await?);
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        return function.serve_locally().await;
    }
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let function = Arc::clone(&function);
        async move { function.handle(event.payload).await }
    }))
    .await
}
