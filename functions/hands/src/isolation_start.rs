//! The host probe off the start path. The probe's trial runs (bwrap's, and the tier-1 helper's
//! when tier 2 is not usable) are process starts, 5-10 ms each here and most of the cold-start
//! budget, so the probe starts on its own thread as soon as the command line is parsed (in
//! `cli::prepare`, before the runtime is built) and runs while the worker reads its secrets and
//! opens its listener, and makes only the trials the asked mode can use
//! ([`HostProbe::run_for`]); the selection is awaited where the isolation is first needed,
//! before any work item is claimed. Fail-closed is kept: with isolation required and a tier that
//! cannot be enforced, the command fails (the process exits non-zero with the reason) before it
//! claims anything.

use std::time::{Duration, Instant};

use anyhow::Context;
use hands_sandbox::{HostProbe, Isolation, IsolationMode, Tier, Trial};
use tokio::sync::oneshot;

use crate::worker_args::WorkerArgs;

/// Test knob: the probe takes this many more milliseconds (the binary's start-up tests).
pub const TEST_DELAY_VAR: &str = "HANDS_TEST_PROBE_DELAY_MS";
/// Test knob: the probe reports every tier above 0 unusable, with this text as the reason.
/// It can only make the worker refuse to start or run at tier 0, never loosen a tier.
pub const TEST_FAIL_VAR: &str = "HANDS_TEST_PROBE_FAIL";

/// A probe running on its own thread.
pub struct PendingProbe {
    rx: oneshot::Receiver<HostProbe>,
    started: Instant,
}

/// Starts the host probe for `mode` on a thread and returns at once.
pub fn start(mode: IsolationMode) -> PendingProbe {
    let (tx, rx) = oneshot::channel();
    let started = Instant::now();
    let spawned = std::thread::Builder::new()
        .name("isolation-probe".into())
        .spawn(move || {
            // The receiver is gone only when the command already failed for another reason.
            let _ = tx.send(run_probe(mode));
        });
    if let Err(e) = spawned {
        // Without a thread the selection would never come; the caller sees the error (an
        // unresolved probe must not turn into a tier).
        tracing::error!(error = %e, "isolation: could not start the host probe thread");
    }
    PendingProbe { rx, started }
}

fn run_probe(mode: IsolationMode) -> HostProbe {
    // The process limit's probe before any trial child is forked: on cgroup v2 it may move the
    // worker into a leaf of its own cgroup, which it refuses (or undoes, EBUSY) while another
    // process is in that cgroup. Its result is kept for the limits read later.
    let _ = hands_sandbox::process_limit_mechanism();
    if let Some(ms) = std::env::var(TEST_DELAY_VAR)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tracing::warn!("{TEST_DELAY_VAR}={ms}: the host probe is delayed (tests only)");
        std::thread::sleep(Duration::from_millis(ms));
    }
    let mut probe = HostProbe::run_for(mode);
    if let Some(reason) = std::env::var(TEST_FAIL_VAR).ok().filter(|v| !v.is_empty()) {
        tracing::warn!(
            "{TEST_FAIL_VAR} is set: every tier above 0 is reported unusable (tests only)"
        );
        probe.tier1 = Trial::done(Err(reason.clone()));
        probe.bwrap = Trial::done(Err(reason));
    }
    probe
}

impl PendingProbe {
    /// The probe's result; waits without holding a runtime thread.
    pub async fn wait(self) -> anyhow::Result<HostProbe> {
        let probe = self
            .rx
            .await
            .context("isolation: the host probe ended without a result")?;
        tracing::debug!(
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            "host probe done"
        );
        Ok(probe)
    }
}

/// The isolation tools run in, and the probe's result it was chosen from (for the egress
/// proxy's check). Tier 0 asked and not required needs nothing from the probe: its result is
/// only logged when it comes (and `None` returned). Otherwise this waits for the probe and fails
/// when isolation is required and the tier cannot be fully enforced.
pub async fn select(
    args: &WorkerArgs,
    pending: PendingProbe,
) -> anyhow::Result<(Isolation, Option<HostProbe>)> {
    if args.isolation == IsolationMode::Tier(Tier::None) && !args.isolation_required() {
        tokio::spawn(async move {
            if let Ok(probe) = pending.wait().await {
                tracing::info!(probe = %probe,
                    process_limit = %hands_sandbox::process_limit_mechanism(),
                    asked = %IsolationMode::Tier(Tier::None),
                    required = false, tier = %Tier::None, "isolation");
            }
        });
        return Ok((Isolation::Tier0, None));
    }
    let probe = pending.wait().await?;
    Ok((args.isolation(&probe)?, Some(probe)))
}
