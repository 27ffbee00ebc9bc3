//! `session`: the Lambda function that serves one work item per invocation (DESIGN.md "Lambda
//! deadline and continuation"). See `handler.rs`; this file only starts things.

mod handler;

use std::process::ExitCode;

use lambda_runtime::{LambdaEvent, service_fn};

fn main() -> ExitCode {
    // Before any thread exists: a same-uid tool must not read this process's memory or
    // /proc/<pid>/environ, where Lambda put the execution role's credentials.
    if let Err(e) = hands_sandbox::harden_worker_process() {
        eprintln!("session: cannot harden the worker process: {e}");
        return ExitCode::FAILURE;
    }
    hands_lambda::logging::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("session: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "session function stopped");
            ExitCode::FAILURE
        }
    }
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
