//! Webhook ingress for `hands` (DESIGN.md "Webhook ingress", PROTOCOL.md §10): an axum
//! [`Router`](axum::Router) that answers `POST /webhook`, `/healthz`, `/readyz` and `/metrics`,
//! and a container [`server`] around it.
//!
//! A delivery is only a wake-up signal. The handler reads at most `max_body_bytes` of raw body,
//! verifies the Standard Webhooks signature on those exact bytes against every configured
//! secret, dedupes on the verified `webhook-id` and a fingerprint of the body, and for
//! `session.status_run_started` drains the queue: non-blocking claims with
//! `reclaim_older_than_ms=2000`, each claimed item handed to an in-process session task, bounded
//! by `max_sessions`, in count and in time. A timer drains too, because deliveries get lost.
//!
//! What it must never do:
//! - act on a delivery that failed verification: no control-plane call, no session, no parsing
//!   beyond the headers (CATALOGUE W1-W11, W21);
//! - tell a forger which check failed (the 401 body is the same for every cause);
//! - buffer more than the body limit, or decompress anything (W14);
//! - pass a control-plane status through to the sender, or answer with a 3xx (a 3xx disables the
//!   endpoint, PROTOCOL.md §10.4);
//! - claim an item it has no session slot for (the item stays queued for the next drain);
//! - let the sender time out while work goes ahead (W23): the reply waits at most `reply_budget`.
//!
//! The same Router serves the Lambda `webhook` function unchanged, with a [`HandOff`] that invokes
//! the `session` function instead of in-process sessions; the periodic drain and the listener
//! (header and body timeouts, connection cap, graceful shutdown) are container-only.

mod body;
mod config;
mod dedupe;
mod drain;
mod handoff;
mod ingress;
mod metrics;
mod router;
pub mod server;
pub mod starting;
mod timer;
mod until_stopped;
mod verify;
mod webhook;

pub use config::{Clock, IngressConfig, system_clock};
pub use dedupe::{BodyPrint, RecentDeliveries, Seen};
pub use drain::{DrainError, DrainReport, DrainStop, Trigger};
pub use handoff::{HandOff, HandOffError};
pub use ingress::Ingress;
pub use metrics::Metrics;
pub use server::{ServerConfig, ServerError};
pub use timer::run_periodic_drain;
pub use verify::{SecretListError, parse_secret_list};
