//! The hand-off by asynchronous `Invoke` (`InvocationType=Event`): the `webhook` function
//! passes each claimed item to the `session` function, and a session near its deadline passes
//! itself on. Lambda's async-invoke queue is durable and retries; an item whose session kept
//! failing lands in the on-failure destination and is force-stopped by the janitor.
//!
//! `Ok` means Lambda accepted the event (202); only then is a webhook delivery answered 2xx.

use std::future::Future;
use std::pin::Pin;

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use hands_ingress::{HandOff, HandOffError};
use hands_protocol::work::WorkItem;

use crate::payload::SessionInvoke;

/// An invoke that was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("cannot encode the payload: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("invoke of {function} failed: {detail}")]
    Call { function: String, detail: String },
    #[error("invoke of {function} answered {status}, not 202")]
    Status { function: String, status: i32 },
}

/// Invokes one function asynchronously.
#[derive(Clone, Debug)]
pub struct SessionInvoker {
    client: aws_sdk_lambda::Client,
    function: String,
    /// Send `TenantId = session id` (for a function with `TenancyConfig: PER_TENANT`), so
    /// sessions never share an execution environment.
    tenant_per_session: bool,
}

impl SessionInvoker {
    pub fn new(client: aws_sdk_lambda::Client, function: String, tenant_per_session: bool) -> Self {
        SessionInvoker {
            client,
            function,
            tenant_per_session,
        }
    }

    pub async fn from_sdk_config(
        config: &aws_config::SdkConfig,
        function: String,
        tenant_per_session: bool,
    ) -> Self {
        Self::new(
            aws_sdk_lambda::Client::new(config),
            function,
            tenant_per_session,
        )
    }

    pub fn function(&self) -> &str {
        &self.function
    }

    /// Sends `payload` as an `Event` invoke; `Ok` once Lambda queued it.
    pub async fn invoke(&self, payload: &SessionInvoke) -> Result<(), InvokeError> {
        let body = serde_json::to_vec(payload)?;
        let mut req = self
            .client
            .invoke()
            .function_name(&self.function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(body));
        if self.tenant_per_session {
            req = req.tenant_id(&payload.work.data.id);
        }
        let out = req.send().await.map_err(|e| InvokeError::Call {
            function: self.function.clone(),
            // The SDK's Display says only "service error"; the debug form names the cause.
            detail: format!("{}", aws_sdk_lambda::error::DisplayErrorContext(&e)),
        })?;
        if out.status_code() != 202 {
            return Err(InvokeError::Status {
                function: self.function.clone(),
                status: out.status_code(),
            });
        }
        Ok(())
    }
}

impl HandOff for SessionInvoker {
    fn hand_off<'a>(
        &'a self,
        item: &'a WorkItem,
    ) -> Pin<Box<dyn Future<Output = Result<(), HandOffError>> + Send + 'a>> {
        Box::pin(async move {
            self.invoke(&SessionInvoke::first(item.clone()))
                .await
                .map_err(|e| HandOffError(e.to_string()))
        })
    }
}
