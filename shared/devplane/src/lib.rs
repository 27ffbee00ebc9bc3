//! devplane: a faithful local emulator of the Claude Managed Agents control plane for
//! `self_hosted` environments (PROTOCOL.md §12), for tests and `hands dev`.
//!
//! It serves the work queue, leases, sessions with their event logs and SSE streams, skills,
//! memory stores,
//! and sends signed webhooks; a scripted agent drives sessions from JSON scripts
//! (`events/sessions/`), checks what a worker answers, and writes a report. Fault switches make
//! it misbehave on purpose. It depends only on `hands-protocol` and must never depend on the
//! worker it tests. Where the real service's behaviour is unpublished (§14) it picks the safe
//! default and offers a switch for the other variant.

pub mod agent;
pub mod auth;
pub mod body;
pub mod cli;
pub mod config;
pub mod error;
pub mod faults;
pub mod ids;
pub mod memory;
pub mod query;
pub mod queue;
pub mod report;
pub mod script;
pub mod server;
pub mod sessions;
pub mod skills;
pub mod sse;
pub mod state;
pub mod webhook_sender;

pub use config::{Config, StopReply, WebhookConfig};
pub use error::DevplaneError;
pub use faults::Faults;
pub use report::ScriptReport;
pub use script::Script;
pub use server::DevPlane;
pub use sessions::SessionSpec;
