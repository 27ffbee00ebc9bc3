//! One invocation of the `session` function:
//! 1. sweep what an earlier invocation in this execution environment left behind (processes
//!    resumed from the freeze, stale workspaces);
//! 2. on a first invocation, ack the item (the webhook only polled it): 409/404 means another
//!    invocation has it, so nothing is served or stopped; a transient failure fails the
//!    invocation and Lambda retries it;
//! 3. serve the item (restoring its workspace from S3 when a bucket is configured) until it
//!    ends or until `deadline - HANDS_DEADLINE_MARGIN`;
//! 4. at the hand-off point, with the session still active: the in-flight call is cancelled
//!    and answered, the workspace saved, and a continuation invoked (this function, with the
//!    item, the lease's last heartbeat value, the answered ids not yet seen in the session's
//!    events, and the results that could not be posted within the post budget), so the lease
//!    carries on and nothing runs twice: the successor posts the carried results first. A
//!    result too big for the invoke payload waits in the workspace bucket; without one it is
//!    left out and the successor runs that call again (logged);
//! 5. at session end: workspace saved for the next turn, item force-stopped, workspace wiped.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hands_lambda::env_config::{ConfigError, bytes_var, duration_var, var};
use hands_lambda::function_config::{tenant_isolation, worker_setup};
use hands_lambda::handover::{
    CONTINUATION_PAYLOAD_BUDGET, delete_consumed, fetch_stored_results, fit_continuation,
};
use hands_lambda::{S3WorkspaceStore, SessionInvoke, SessionInvoker};
use hands_worker::{Ack, ItemEnd, NoObserver, WorkdirTemplate, Worker, startup};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Time kept back before the invocation deadline for the hand-off: cancelling the call and
/// posting its result, saving the workspace, invoking the continuation.
const DEFAULT_MARGIN: Duration = Duration::from_secs(20);

/// What a hand-off keeps back after its workspace save, out of the margin: deleting the
/// previous snapshot when the save was abandoned (`hands_worker::item::DISCARD_TIMEOUT`) and
/// the continuation's invoke. A quarter of the margin when that is less (short test margins).
const HAND_OFF_RESERVE: Duration = Duration::from_secs(5);

/// How long after the hand-off point the workspace save may run.
fn save_budget(margin: Duration) -> Duration {
    margin.saturating_sub(HAND_OFF_RESERVE.min(margin / 4))
}

pub struct SessionFunction {
    worker: Worker,
    workdir: WorkdirTemplate,
    margin: Duration,
    /// Invokes this function again with a continuation.
    continuation: SessionInvoker,
    /// The workspace bucket, also where results too big for a continuation's payload wait.
    bucket: Option<S3WorkspaceStore>,
}

/// What one invocation returns (visible in Lambda's logs and to a synchronous caller).
#[derive(Debug, Serialize)]
pub struct Report {
    work_id: String,
    session_id: String,
    end: String,
    stopped: bool,
    /// A continuation was invoked and accepted.
    continued: bool,
}

impl SessionFunction {
    pub async fn from_env() -> Result<Self, ConfigError> {
        // The isolation probe runs while the SDK configuration and the secrets are read.
        let probe = hands_lambda::isolation::start_probe();
        let sdk = hands_lambda::aws::sdk_config().await;
        let secrets = hands_lambda::Resolver::with_aws_config(sdk.clone());
        // The key acks the item on a first invocation (the webhook only polled it).
        let setup = worker_setup(&secrets, true).await?;
        let mut config = setup.worker;
        // With HANDS_EGRESS_POLICY, tools go out through the egress proxy (at tier 0 the
        // isolation step's log says plainly that tool code can connect around it).
        hands_lambda::egress::start_from_env(&mut config, &secrets).await?;
        // HANDS_ISOLATION (auto by default) and HANDS_REQUIRE_ISOLATION, as for `hands poll`; at
        // tier 1 or 2 the tools reach the network only through the egress proxy, if any.
        hands_lambda::isolation::select(&mut config, probe).await?;
        let mut store = None;
        if let Some(bucket) = var("HANDS_WORKSPACE_BUCKET") {
            tracing::info!(%bucket, "workspaces are saved to S3 between invocations");
            let cap = bytes_var(
                "HANDS_WORKSPACE_MAX_BYTES",
                hands_lambda::s3_store::DEFAULT_MAX_BYTES,
            )?;
            let s3 = S3WorkspaceStore::from_sdk_config(&sdk, bucket).with_max_bytes(cap);
            config.workspace_store = Some(Arc::new(s3.clone()));
            store = Some(s3);
        } else {
            tracing::info!(
                "no HANDS_WORKSPACE_BUCKET: continuations carry no files (stateless tools only)"
            );
        }
        let margin = duration_var("HANDS_DEADLINE_MARGIN", DEFAULT_MARGIN)?;
        // The cancelled call's result post gets at most half the margin; the rest is for the
        // workspace save and the continuation invoke.
        config.hand_off_post_budget = margin / 2;
        // The workspace save ends by `deadline - reserve`, whatever it got to, so the
        // continuation is still invoked in time.
        config.hand_off_save_budget = save_budget(margin);
        // Lambda sets AWS_LAMBDA_FUNCTION_NAME; HANDS_SESSION_FUNCTION may name an alias.
        let me = var("HANDS_SESSION_FUNCTION")
            .or_else(|| var("AWS_LAMBDA_FUNCTION_NAME"))
            .ok_or(ConfigError::Missing("AWS_LAMBDA_FUNCTION_NAME"))?;
        let continuation = SessionInvoker::from_sdk_config(&sdk, me, tenant_isolation()).await;
        if let Err(e) = startup::adopt_orphans() {
            tracing::warn!(error = %e, "cannot become the subreaper of tool processes; leftovers re-parented to init escape the startup sweep");
        }
        let workdir = config.workdir.clone();
        let worker = Worker::new(
            setup.control_plane,
            config,
            Arc::new(NoObserver),
            CancellationToken::new(),
        );
        Ok(SessionFunction {
            worker,
            workdir,
            margin,
            continuation,
            bucket: store,
        })
    }

    pub async fn handle(
        &self,
        input: SessionInvoke,
        deadline: SystemTime,
    ) -> Result<Report, lambda_runtime::Error> {
        // A warm environment resumes whatever the previous invocation left running.
        startup::kill_leftover_processes();
        startup::wipe_stale_workspaces(&self.workdir);
        // A killed invocation's session temporary directory (its lock died with the process).
        startup::sweep_leftover_tmp_dirs();
        // A killed invocation's snapshot archive too (its temp file was never dropped).
        hands_lambda::s3_store::sweep_temp_files(&std::env::temp_dir());

        let remaining = deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let hand_off_at = Instant::now() + remaining.saturating_sub(self.margin);
        if remaining <= self.margin {
            tracing::warn!(
                remaining_ms = remaining.as_millis() as u64,
                margin_ms = self.margin.as_millis() as u64,
                "the invocation has less time than HANDS_DEADLINE_MARGIN: handing off at once (raise the function timeout)"
            );
        }
        let work = input.work;
        if input.continuation.is_none() {
            // A first invocation: the webhook polled the item without acking it, so the ack is
            // ours. A continuation's item is already ours (the predecessor acked it).
            if let Some(skipped) = self.ack_first(&work).await? {
                return Ok(skipped);
            }
        }
        let mut resume = input.continuation.unwrap_or_default();
        let fetched = fetch_stored_results(&mut resume, &work.data.id, self.bucket.as_ref()).await;
        tracing::info!(work_id = %work.id, session_id = %work.data.id,
            continuation = resume.last_heartbeat.is_some(), carried_results = resume.results.len(),
            remaining_ms = remaining.as_millis() as u64, "serving work item");
        let outcome = self
            .worker
            .serve_until(&work, resume, Some(hand_off_at))
            .await;
        let mut continued = false;
        let mut next_payload = None;
        if let Some(next) = outcome.continuation.clone() {
            let mut payload = SessionInvoke {
                work: work.clone(),
                continuation: Some(next),
            };
            let fitted = fit_continuation(
                &mut payload,
                self.bucket.as_ref(),
                CONTINUATION_PAYLOAD_BUDGET,
            )
            .await;
            let (answered, results) = payload
                .continuation
                .as_ref()
                .map_or((0, 0), |c| (c.answered.len(), c.results.len()));
            match self.continuation.invoke(&payload).await {
                Ok(()) => {
                    continued = true;
                    tracing::info!(work_id = %work.id, answered, results,
                        stored = fitted.stored.len(), rerun = fitted.dropped.len(),
                        payload_bytes = fitted.bytes, "deadline near: continuation invoked");
                    next_payload = payload.continuation;
                }
                Err(e) => {
                    // The lease lapses and the control plane queues the item again; the next
                    // drain hands it out. Calls answered so far are in the session's history,
                    // so the next server does not run them again; the carried results are lost
                    // with the payload, so the next server runs those calls again.
                    tracing::error!(work_id = %work.id, error = %e, "cannot invoke the continuation");
                }
            }
        }
        // Only an invocation that held the lease consumed the stored results. A late duplicate
        // of a continuation that did not win the lease must leave them to the invocation that
        // did (it fetches them by the same fixed keys); the bucket's lifecycle rule expires
        // whatever is left.
        if matches!(outcome.end, ItemEnd::Ran(_)) {
            delete_consumed(fetched, next_payload.as_ref(), self.bucket.as_ref()).await;
        } else if !fetched.is_empty() {
            tracing::info!(work_id = %work.id, end = %describe(&outcome.end), kept = fetched.len(),
                "this invocation did not serve the item: its stored results are left in place");
        }
        // Nothing of this session may run while the environment is frozen.
        startup::kill_leftover_processes();
        Ok(Report {
            work_id: outcome.work_id,
            session_id: outcome.session_id,
            end: describe(&outcome.end),
            stopped: outcome.stopped,
            continued,
        })
    }
}

impl SessionFunction {
    /// Acks a first invocation's item. `Ok(None)`: acked, serve it. `Ok(Some(report))`: not
    /// ours (a duplicate invocation, or another worker's), answered without serving and without
    /// stopping anything, since a stop could end an item another invocation serves. `Err`: a
    /// transient failure, so Lambda retries the event (the item is still unacknowledged).
    async fn ack_first(
        &self,
        work: &hands_protocol::work::WorkItem,
    ) -> Result<Option<Report>, lambda_runtime::Error> {
        let skipped = |why: String| Report {
            work_id: work.id.clone(),
            session_id: work.data.id.clone(),
            end: format!("not_acked:{why}"),
            stopped: false,
            continued: false,
        };
        match self.worker.ack(work).await {
            Ok(Ack::Acked) => Ok(None),
            Ok(Ack::NotOurs(e)) => {
                tracing::info!(work_id = %work.id, status = ?e.status(),
                    "the item is already acknowledged or gone (a duplicate invocation?); not serving it");
                Ok(Some(skipped(e.to_string())))
            }
            Ok(Ack::Refused(e)) => {
                tracing::error!(work_id = %work.id, error = %e,
                    "ack refused; not serving the item (and not force-stopping it)");
                Ok(Some(skipped(e.to_string())))
            }
            Err(e) => {
                tracing::warn!(work_id = %work.id, error = %e, "ack failed; failing the invocation so Lambda retries it");
                Err(format!("ack of {} failed: {e}", work.id).into())
            }
        }
    }
}

fn describe(end: &ItemEnd) -> String {
    match end {
        ItemEnd::Healthcheck => "healthcheck".into(),
        ItemEnd::SessionOver => "session_over".into(),
        ItemEnd::Ran(r) => format!("ran:{r:?}"),
        ItemEnd::NotClaimed(w) => format!("not_claimed:{w}"),
        ItemEnd::Failed(w) => format!("failed:{w}"),
    }
}
