//! The periodic drain (DESIGN.md step 5): webhooks are only wake-ups and the sender drops a
//! delivery after 3 failed attempts, so the container drains on a timer too, and as soon as a
//! session slot frees up after a drain had to leave items queued.

use std::time::Duration;

use tokio::time::MissedTickBehavior;

use crate::drain::Trigger;
use crate::ingress::Ingress;

/// Drains every `interval` (and when a slot frees up after a saturated drain) until the
/// ingress shuts down.
pub async fn run_periodic_drain(ingress: Ingress, interval: Duration) {
    let shutdown = ingress.shutdown_token().clone();
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + interval,
        interval.max(Duration::from_millis(10)),
    );
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
            () = ingress.slot_freed() => {}
        }
        // Draining needs only the environment key, so it runs even before a signing secret is
        // configured. Errors are logged and counted by the drain itself; the next tick tries again.
        let _ = ingress.drain(Trigger::Timer).await;
    }
}
