//! The session runner: follows the event feed, executes owned calls one at a time, posts each
//! result, and decides when the session is over (PROTOCOL.md §7.5-§7.7).
//!
//! One tool call is in flight at a time. While it runs, the runner keeps reading the feed and
//! watching the lease, so a stop or a lost lease cancels the call within the tool's kill time:
//! - lease lost (C10): the call is killed and nothing more is posted;
//! - stop requested (C11) or worker shutdown (P2): the call is killed and its error result posted.
//!
//! A result that could not be posted is kept and posted again after the next history
//! reconciliation; the tool itself never runs twice. Results still unposted at a hand-off stay
//! in [`Parked`] for the caller to carry to the successor, which posts them before anything else
//! (DESIGN.md "Lambda deadline and continuation").

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hands_client::{ControlPlane, Credential};
use hands_protocol::toolset::ToolOutput;
use hands_tools::Toolset;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::custom_tools::{CustomTools, SessionSide};
use crate::feed::{Feed, run_feed};
use crate::lease::{Lease, LeaseStatus};
use crate::ledger::{Call, CallKind, Ledger, SessionEnd};
use crate::observer::Observer;
use crate::results::{Posted, post_result};

/// How a session run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// `max_idle` passed after the turn ended.
    Idle,
    Terminated,
    Deleted,
    /// The lease is gone: nothing more was posted; the item must be left alone.
    LeaseLost(String),
    /// The control plane asked to stop; the in-flight call got an error result.
    Stopped(String),
    /// The worker is shutting down; the in-flight call got an error result.
    Shutdown,
    /// The event feed failed for good (session gone, credential revoked).
    FeedFailed(String),
    /// The invocation's hand-off point (`deadline - margin`) came with the session still
    /// active: the in-flight call was cancelled and its error result posted; the item is still
    /// held and a successor carries on (DESIGN.md "Lambda deadline and continuation").
    Deadline,
}

/// What a runner needs for one session.
#[derive(Clone)]
pub struct SessionContext {
    pub cp: ControlPlane,
    pub credential: Credential,
    pub session_id: String,
    pub work_id: String,
    pub toolset: Toolset,
    /// The operator's custom tools; the only custom calls this worker answers.
    pub custom_tools: Arc<CustomTools>,
    /// `None` disables idle shutdown.
    pub max_idle: Option<Duration>,
    /// Outer bound of one tool call (must exceed bash's own 120 s default).
    pub tool_timeout: Duration,
    pub observer: Arc<dyn Observer>,
    /// This session's use of the egress proxy; names the running call in its audit log.
    pub egress: Option<Arc<hands_egress::SessionEgress>>,
    /// Fires when the worker process is shutting down.
    pub shutdown: CancellationToken,
    /// The session's memory stores, synced after each call; `None` without stores.
    pub memory: Option<Arc<hands_memory::LiveMemory>>,
    /// When to stop and hand the session to a successor (a Lambda invocation's deadline minus
    /// a margin); `None` serves until the session ends.
    pub hand_off_at: Option<Instant>,
    /// Result posts end at most this long after `hand_off_at` (see
    /// [`crate::WorkerConfig::hand_off_post_budget`]).
    pub hand_off_post_budget: Duration,
}

/// Result posting window when the lease has not told us its TTL (§6.4).
const DEFAULT_POST_WINDOW: Duration = Duration::from_secs(300);

type InFlight = Pin<Box<dyn Future<Output = (Call, Option<ToolOutput>, Posted)> + Send>>;

/// Results computed but not posted yet, by tool-use id: posted again, never recomputed.
pub type Parked = HashMap<String, (Call, ToolOutput)>;

fn owns(ctx: &SessionContext, kind: CallKind, name: &str) -> bool {
    // A custom tool the operator did not declare here is served by whoever registered it: post
    // nothing for it (§7.5 rule 4).
    match kind {
        CallKind::Builtin => Toolset::owns(name),
        CallKind::Custom => ctx.custom_tools.owns(name),
    }
}

/// Runs the session until it ends. `ledger` may be pre-seeded (a continuation's answered ids),
/// and `parked` may hold results a predecessor could not post: they are posted first, and a
/// call whose result is parked is never run. What is still parked when the run ends at its
/// hand-off point is for the successor.
pub async fn run_session(
    ctx: &SessionContext,
    lease: &Lease,
    ledger: &mut Ledger,
    parked: &mut Parked,
) -> RunEnd {
    let (tx, mut rx) = mpsc::channel(1024);
    let feed_stop = CancellationToken::new();
    let feed = tokio::spawn(
        run_feed(
            ctx.cp.clone(),
            ctx.credential.clone(),
            ctx.session_id.clone(),
            tx,
            feed_stop.clone(),
        )
        .instrument(tracing::Span::current()),
    );
    post_carried(ctx, lease, ledger, parked).await;
    let end = drive(ctx, lease, ledger, &mut rx, parked).await;
    feed_stop.cancel();
    let _ = feed.await;
    end
}

/// Posts the results a predecessor handed over, before anything else runs: the agent has been
/// waiting for them longest. One that still cannot be posted stays parked and goes out when its
/// call comes up after the history pass (or travels on to the next successor).
async fn post_carried(
    ctx: &SessionContext,
    lease: &Lease,
    ledger: &mut Ledger,
    parked: &mut Parked,
) {
    if parked.is_empty() {
        return;
    }
    tracing::info!(
        count = parked.len(),
        "posting results carried over from the previous invocation"
    );
    let mut calls: Vec<&(Call, ToolOutput)> = parked.values().collect();
    calls.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    let mut posted = Vec::new();
    for (call, output) in calls {
        if !matches!(
            *lease.watch().borrow(),
            LeaseStatus::Claiming | LeaseStatus::Held
        ) {
            return; // lost or stopped: the run loop sees it at once and posts nothing more
        }
        let window = post_window(ctx, lease);
        // Nothing may be posted once the lease is lost, not even a retry of this post.
        let abandon = CancellationToken::new();
        let post = post_result(
            &ctx.cp,
            &ctx.credential,
            &ctx.session_id,
            call,
            output,
            window,
            &abandon,
        );
        tokio::pin!(post);
        let mut watch = lease.watch();
        let result = loop {
            tokio::select! {
                r = &mut post => break r,
                changed = watch.changed() => {
                    let lost = changed.is_err() || matches!(*watch.borrow(), LeaseStatus::Lost(_));
                    if lost {
                        abandon.cancel();
                        break post.await;
                    }
                }
            }
        };
        ctx.observer.result_posted(&ctx.session_id, call, &result);
        if let Posted::Accepted { .. } = result {
            tracing::info!(tool_use_id = %call.id, "carried-over result posted; the call was not run again");
            posted.push(call.id.clone());
        }
    }
    for id in posted {
        parked.remove(&id);
        ledger.answered(&id);
    }
}

async fn drive(
    ctx: &SessionContext,
    lease: &Lease,
    ledger: &mut Ledger,
    rx: &mut mpsc::Receiver<Feed>,
    unposted: &mut Parked,
) -> RunEnd {
    let mut lease_rx = lease.watch();
    // Fires when the lease is lost: nothing may be posted after that.
    let abandon = CancellationToken::new();
    let mut in_flight: Option<(InFlight, CancellationToken)> = None;
    let mut idle_since: Option<Instant> = None;
    // Nothing is dispatched, and the idle timer does not run, before the first full history
    // pass has been observed. The history arrives one event at a time: without this, a call
    // whose result comes later in the listing started as soon as the call itself was seen, so a
    // new worker (after a crash, or for the session's next work item) re-ran calls that were
    // already answered (CATALOGUE P3).
    let mut reconciled = false;

    loop {
        // Past the hand-off point nothing new starts: the hand-off branch below is the last
        // one of the biased select, so a call finishing (or an event arriving) just after it
        // must not get the next call dispatched only to be cancelled at once.
        let handing_off = ctx.hand_off_at.is_some_and(|at| Instant::now() >= at);
        if in_flight.is_none() && reconciled {
            match ledger.end() {
                Some(SessionEnd::Terminated) => return RunEnd::Terminated,
                Some(SessionEnd::Deleted) => return RunEnd::Deleted,
                None => {}
            }
            let next = if handing_off {
                None
            } else {
                ledger.next_call(|k, n| owns(ctx, k, n))
            };
            if let Some(call) = next {
                let token = ctx.shutdown.child_token();
                let ready = unposted.remove(&call.id).map(|(_, out)| out);
                let window = post_window(ctx, lease);
                in_flight = Some((
                    Box::pin(execute(
                        ctx.clone(),
                        call,
                        ready,
                        token.clone(),
                        abandon.clone(),
                        window,
                    )),
                    token,
                ));
            }
        }
        let armed = in_flight.is_none() && ledger.idle_armed(|k, n| owns(ctx, k, n));
        match (armed && reconciled, idle_since) {
            (true, None) => idle_since = Some(Instant::now()),
            (false, Some(_)) => idle_since = None,
            _ => {}
        }
        let idle_deadline = idle_since.zip(ctx.max_idle).map(|(t, m)| t + m);

        tokio::select! {
            biased;
            changed = lease_rx.changed() => {
                let status = if changed.is_ok() { lease_rx.borrow().clone() } else { LeaseStatus::Lost("heartbeat task ended".into()) };
                match status {
                    LeaseStatus::Lost(why) => {
                        abandon.cancel();
                        finish_in_flight(&mut in_flight, ledger, unposted).await;
                        return RunEnd::LeaseLost(why);
                    }
                    LeaseStatus::Stop(why) => {
                        finish_in_flight(&mut in_flight, ledger, unposted).await;
                        return RunEnd::Stopped(why);
                    }
                    LeaseStatus::Claiming | LeaseStatus::Held | LeaseStatus::Released => {}
                }
            }
            () = ctx.shutdown.cancelled() => {
                finish_in_flight(&mut in_flight, ledger, unposted).await;
                return RunEnd::Shutdown;
            }
            done = async { match in_flight.as_mut() { Some((f, _)) => f.await, None => std::future::pending().await } } => {
                in_flight = None;
                settle(done, ledger, unposted);
            }
            feed = rx.recv() => match feed {
                Some(Feed::Event(event)) => ledger.observe(&event),
                Some(Feed::Reconciled { events, reconnects }) => {
                    tracing::debug!(session_id = %ctx.session_id, events, reconnects, "history reconciled");
                    reconciled = true;
                    // Parked results get another chance now that the control plane answers.
                    for id in unposted.keys() {
                        ledger.release(id);
                    }
                }
                Some(Feed::Fatal(why)) => {
                    finish_in_flight(&mut in_flight, ledger, unposted).await;
                    return RunEnd::FeedFailed(why);
                }
                None => {
                    finish_in_flight(&mut in_flight, ledger, unposted).await;
                    return RunEnd::FeedFailed("event feed ended".into());
                }
            },
            () = sleep_until(idle_deadline) => return RunEnd::Idle,
            () = sleep_until(ctx.hand_off_at) => {
                // Cancelled, not left running: the successor must not find a call of ours
                // still executing, and the agent gets an answer it can act on.
                finish_in_flight(&mut in_flight, ledger, unposted).await;
                if !unposted.is_empty() {
                    tracing::warn!(count = unposted.len(),
                        "handing off with results that could not be posted; they go to the successor, which posts them first");
                }
                return RunEnd::Deadline;
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// How long a result post may keep retrying: the lease TTL, but never past the hand-off point
/// plus its post budget, so a post stuck on a failing control plane cannot hold the hand-off
/// beyond the invocation's deadline (the result is then left unposted and the successor runs
/// the call again).
fn post_window(ctx: &SessionContext, lease: &Lease) -> Duration {
    let ttl = lease.ttl();
    let window = if ttl.is_zero() {
        DEFAULT_POST_WINDOW
    } else {
        ttl
    };
    match ctx.hand_off_at {
        Some(at) => {
            window.min((at + ctx.hand_off_post_budget).saturating_duration_since(Instant::now()))
        }
        None => window,
    }
}

/// Cancels the in-flight call (its tool tree is killed) and waits for it to settle: it posts an
/// error result unless the lease was lost.
async fn finish_in_flight(
    in_flight: &mut Option<(InFlight, CancellationToken)>,
    ledger: &mut Ledger,
    unposted: &mut Parked,
) {
    if let Some((fut, token)) = in_flight.take() {
        token.cancel();
        let done = fut.await;
        settle(done, ledger, unposted);
    }
}

fn settle(
    (call, output, posted): (Call, Option<ToolOutput>, Posted),
    ledger: &mut Ledger,
    unposted: &mut Parked,
) {
    match posted {
        Posted::Accepted { .. } => ledger.answered(&call.id),
        Posted::Failed { .. } => {
            // Parked (still "in flight" for the ledger) until the next reconcile releases it.
            if let Some(out) = output {
                unposted.insert(call.id.clone(), (call, out));
            }
        }
    }
}

/// Runs one call (unless its output is already known) and posts the result.
#[tracing::instrument(name = "tool", skip_all, fields(tool_use_id = %call.id, tool = %call.name))]
async fn execute(
    ctx: SessionContext,
    call: Call,
    ready: Option<ToolOutput>,
    cancel: CancellationToken,
    abandon: CancellationToken,
    window: Duration,
) -> (Call, Option<ToolOutput>, Posted) {
    // The tool's own figures, logged once its result is on its way: the log line is not on
    // the path from the tool's end to the result's post.
    let mut line = ExecutedLine {
        executed: None,
        posted: "not posted (the call's task ended first)",
    };
    let output = match ready {
        Some(out) => out,
        None => {
            ctx.observer.call_started(&ctx.session_id, &call);
            let started = Instant::now();
            if let Some(m) = &ctx.memory {
                m.call_started();
            }
            if let Some(egress) = &ctx.egress {
                egress.set_tool_call(Some(&call.id));
            }
            let out = run_tool(&ctx, &call, &cancel).await;
            if let Some(egress) = &ctx.egress {
                egress.set_tool_call(None);
            }
            // A call that touched a store is synced before its result goes out, so the agent
            // learns in this very result if an edit of its did not stick.
            let out = match &ctx.memory {
                Some(m) => crate::memory::with_notes(out, m.after_call().await),
                None => out,
            };
            let elapsed = started.elapsed();
            line.executed = Some((out.is_error, elapsed));
            ctx.observer
                .call_executed(&ctx.session_id, &call, &out, elapsed);
            out
        }
    };
    if abandon.is_cancelled() {
        line.posted = "not posted (lease lost)";
        return (
            call,
            None,
            Posted::Failed {
                attempts: 0,
                reason: "lease lost".into(),
            },
        );
    }
    let posted = post_result(
        &ctx.cp,
        &ctx.credential,
        &ctx.session_id,
        &call,
        &output,
        window,
        &abandon,
    )
    .await;
    line.posted = match posted {
        Posted::Accepted { .. } => "accepted",
        Posted::Failed { .. } => "failed",
    };
    ctx.observer.result_posted(&ctx.session_id, &call, &posted);
    (call, Some(output), posted)
}

/// The line every executed call gets (a carried-over result was executed by a predecessor,
/// which logged it), with how its post ended, written when this is dropped: at the end of
/// `execute`, or when its future is dropped before the post ended (a shutdown), so no
/// executed call goes without its line.
struct ExecutedLine {
    executed: Option<(bool, Duration)>,
    posted: &'static str,
}

impl Drop for ExecutedLine {
    fn drop(&mut self) {
        if let Some((is_error, elapsed)) = self.executed.take() {
            tracing::info!(
                is_error,
                elapsed_us = elapsed.as_micros() as u64,
                posted = self.posted,
                "tool call executed"
            );
        }
    }
}

async fn run_tool(ctx: &SessionContext, call: &Call, cancel: &CancellationToken) -> ToolOutput {
    let fut = async {
        match call.kind {
            CallKind::Builtin => {
                ctx.toolset
                    .call(&call.name, call.input.clone(), cancel)
                    .await
            }
            CallKind::Custom => {
                let session = SessionSide {
                    workdir: ctx.toolset.workdir(),
                    tmp_dir: ctx.toolset.tmp_dir(),
                    env: ctx.egress.as_ref().map_or(&[][..], |e| &e.env[..]),
                };
                (ctx.custom_tools)
                    .call_in(&call.name, call.input.clone(), &session, cancel)
                    .await
            }
        }
    };
    tokio::pin!(fut);
    match tokio::time::timeout(ctx.tool_timeout, &mut fut).await {
        Ok(out) => out,
        Err(_) => {
            // Kill what the call started before answering.
            cancel.cancel();
            let _ = fut.await;
            ToolOutput::error(format!("tool '{}' timed out", call.name))
        }
    }
}
