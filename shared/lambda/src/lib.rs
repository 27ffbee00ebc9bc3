//! What the two AWS Lambda functions share (DESIGN.md "Hand-off", "Lambda deadline and
//! continuation"): the payload the `webhook` function sends the `session` function and that a
//! session sends its own continuation; the hand-off by asynchronous `Invoke`; workspace
//! snapshots in S3; and reading the functions' configuration.
//!
//! The AWS SDK clients are built from the standard chain (`aws-config`), so the execution
//! role's credentials and the `AWS_ENDPOINT_URL*` overrides work as everywhere else; tests point
//! them at loopback fakes. What this crate must never do: put a credential in a payload or a
//! log line, or hand anything to tool code (it never runs tools; the worker's sandbox builds the
//! tool environment from an allow-list, so `AWS_*` never reaches a shell).

pub mod aws;
pub mod egress;
pub mod env_config;
pub mod events;
#[cfg(feature = "fakes")]
pub mod fakes;
pub mod function_config;
pub mod handover;
pub mod invoke;
pub mod isolation;
pub mod logging;
pub mod payload;
pub mod s3_store;
pub mod snapshot;
pub mod start;

pub use env_config::{ConfigError, secret_from_env};
pub use events::WebhookFunctionEvent;
pub use hands_secrets::Resolver;
pub use invoke::{InvokeError, SessionInvoker};
pub use payload::SessionInvoke;
pub use s3_store::S3WorkspaceStore;
