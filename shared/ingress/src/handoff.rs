//! Where claimed items go (DESIGN.md "Hand-off"). By default the drain hands each item to a
//! session task in this process (the container shape). A [`HandOff`] replaces that: the Lambda
//! `webhook` function passes each item to the `session` function by an asynchronous Invoke.
//!
//! The drain waits for every hand-off before the delivery is answered, so a 2xx means each
//! claimed item was accepted by whoever serves it. A failed hand-off fails the drain (503, the
//! sender retries). Items passed to a `HandOff` are polled but NOT acknowledged: the receiver
//! acks as its first step ([`hands_worker::Worker::ack`]). So the item of a failed hand-off is
//! still queued, and a poll after `DRAIN_RECLAIM_MS` (the next delivery or schedule drain)
//! claims it again; no acknowledged item is ever left without a server.

use std::future::Future;
use std::pin::Pin;

use hands_protocol::work::WorkItem;

/// Why an item could not be handed off.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandOffError(pub String);

/// Passes claimed items to whatever serves them outside this process.
pub trait HandOff: Send + Sync + 'static {
    /// Resolves `Ok` once the receiver has accepted the item (for Lambda: the Invoke answered
    /// 202). Called once per polled (unacknowledged) item, in poll order; the receiver must ack
    /// it before serving.
    fn hand_off<'a>(
        &'a self,
        item: &'a WorkItem,
    ) -> Pin<Box<dyn Future<Output = Result<(), HandOffError>> + Send + 'a>>;
}
