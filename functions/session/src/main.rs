//! `session`: the Lambda function that serves one work item per invocation (DESIGN.md "Lambda
//! deadline and continuation"). See `handler.rs`; this file only starts things.

mod handler;

use std::process::ExitCode;

use lambda_runtime::{LambdaEvent, service_fn};

fn main() -> ExitCode {
    hands_lambda::start::main_with("session", run)
}

async fn run() -> Result<(), lambda_runtime::Error> {
    let function = std::sync::Arc::new(handler::SessionFunction::from_env().await?);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<hands_lambda::SessionInvoke>| {
            let function = std::sync::Arc::clone(&function);
            async move {
                function
                    .handle(event.payload, event.context.deadline())
                    .await
            }
        },
    ))
    .await
}
