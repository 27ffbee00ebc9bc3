//! Control-plane client for the Managed Agents worker protocol (PROTOCOL.md §5-§7): the work
//! endpoints (poll, ack, heartbeat, stop, list, stats), the session endpoints (get, event
//! history, SSE stream, result posts), skills downloads, memory stores, and the retry timing the worker uses.
//!
//! It must never: follow a redirect (the bearer would travel to another origin), read an
//! unbounded body, send a request without a timeout, or put a credential in a URL, a log line
//! or an error text. It does not retry by itself: whether a call may be repeated depends on the
//! caller's lease and budget, so callers combine [`ApiError::is_transient`] with [`Backoff`].

mod client;
mod credential;
mod error;
mod lane;
mod memory;
mod retry;
mod sessions;
mod sse;
mod tls;
mod work;

pub use client::{
    BuildError, ClientConfig, ControlPlane, DEFAULT_ANTHROPIC_VERSION, DEFAULT_BASE_URL,
    MANAGED_AGENTS_BETA,
};
pub use credential::{Credential, CredentialKind};
pub use error::{ApiError, MAX_RETRY_AFTER, parse_retry_after, transient_status};
pub use memory::{MEMORY_LIST_PAGE_BASIC, MEMORY_LIST_PAGE_FULL};
pub use retry::Backoff;
pub use sessions::{EventStream, HISTORY_PAGE_SIZE, StreamError};
pub use sse::{SseDecoder, SseError, SseFrame};
pub use work::{Heartbeat, PollOptions, StopOutcome};
