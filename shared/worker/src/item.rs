//! Serving one claimed work item from start to finish (PROTOCOL.md §6.3, DESIGN.md "Serving one
//! work item"): credential, healthcheck and terminated-session skips, the lease, the workspace,
//! skills, the session run, teardown, and the final force-stop.
//!
//! The force-stop is skipped only when the lease was lost: the item then belongs to the queue or
//! to another worker, and stopping it would kill their session.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hands_client::{ApiError, Backoff, ControlPlane, Credential, StopOutcome};
use hands_protocol::secret::decode_sessions_token;
use hands_protocol::session::{Session, SessionStatus};
use hands_protocol::work::WorkItem;
use hands_tools::ToolsetConfig;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::continuation::{CarriedResult, MAX_CARRIED_ANSWERED, carried_from, parked_from};
use crate::custom_tools::CustomTools;
use crate::lease::{Lease, LeaseConfig, LeaseStatus, LeaseTarget};
use crate::ledger::Ledger;
use crate::observer::Observer;
use crate::runner::{RunEnd, SessionContext, run_session};
use crate::skills::install_skills;
use crate::workdir::{Workdir, WorkdirTemplate};
use crate::workspace_store::WorkspaceStore;

/// How the worker serves items. One per process; shared by every session.
#[derive(Clone)]
pub struct WorkerConfig {
    pub environment_id: String,
    /// The standing credential; per-item calls prefer the item's sessions token.
    pub environment_key: Option<Credential>,
    pub workdir: WorkdirTemplate,
    /// `None` disables idle shutdown (`--max-idle 0`).
    pub max_idle: Option<Duration>,
    /// Outer bound of one tool call (§7.5: 150 s).
    pub tool_timeout: Duration,
    pub lease: LeaseConfig,
    /// The toolset template; its `workdir` is replaced per session.
    pub toolset: ToolsetConfig,
    /// Operator-declared custom tools (`--custom-tools`); empty: custom calls are left alone.
    pub custom_tools: Arc<CustomTools>,
    /// The egress proxy (`--egress-policy`): each session's tools get their own proxy
    /// credential and the CA bundle in their environment. `None`: no proxy variables are set.
    pub egress: Option<Arc<hands_egress::EgressProxy>>,
    pub worker_id: String,
    /// Memory stores: on/off, sync cadence, server deletes (`--memory*`).
    pub memory: hands_memory::MemoryConfig,
    /// Where per-session workspaces are kept between invocations (S3 on Lambda); `None` keeps
    /// nothing.
    pub workspace_store: Option<Arc<dyn WorkspaceStore>>,
    /// With a hand-off point (`serve_until`), result posts (retries included) end at most this
    /// long after it, whatever the lease TTL: the workspace save and the continuation invoke
    /// must still fit before the invocation's deadline. The session function sets half its
    /// deadline margin.
    pub hand_off_post_budget: Duration,
    /// With a hand-off point, the workspace save (after the posts) ends at most this long
    /// after it: a save still running then is abandoned, logged as failed, and the hand-off
    /// goes on, so the continuation is invoked before the invocation's deadline. The session
    /// function sets its deadline margin minus a reserve for the invoke.
    pub hand_off_save_budget: Duration,
}

impl WorkerConfig {
    pub fn new(environment_id: impl Into<String>, workdir: WorkdirTemplate) -> Self {
        WorkerConfig {
            environment_id: environment_id.into(),
            environment_key: None,
            workdir,
            max_idle: Some(Duration::from_secs(60)),
            tool_timeout: Duration::from_secs(150),
            lease: LeaseConfig::default(),
            toolset: ToolsetConfig::new("."),
            custom_tools: Arc::new(CustomTools::empty()),
            egress: None,
            worker_id: default_worker_id(),
            memory: hands_memory::MemoryConfig::default(),
            workspace_store: None,
            hand_off_post_budget: Duration::from_secs(10),
            hand_off_save_budget: Duration::from_secs(15),
        }
    }
}

/// `<hostname>-<12 hex>`, like the reference workers (§5.1).
pub fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "hands".to_owned()
    } else {
        host
    };
    format!("{host}-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// How an item ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemEnd {
    /// Not a session item (a queue healthcheck): nothing ran.
    Healthcheck,
    /// The session was already terminated or deleted: nothing ran.
    SessionOver,
    /// The session ran and ended this way.
    Ran(RunEnd),
    /// The first heartbeat did not win the lease: another executor has it (L1, P5).
    NotClaimed(String),
    /// Something prevented serving (no credential, bad workdir, session unreadable).
    Failed(String),
}

/// How long an abandoned hand-off save's clean-up (deleting the previous snapshot) may take;
/// part of the reserve the session function keeps for the end of a hand-off.
pub const DISCARD_TIMEOUT: Duration = Duration::from_secs(2);

/// What happened to one item.
#[derive(Clone, Debug)]
pub struct ItemOutcome {
    pub work_id: String,
    pub session_id: String,
    pub end: ItemEnd,
    /// Whether the worker force-stopped the item at the end.
    pub stopped: bool,
    /// Set when the run ended at its hand-off point ([`RunEnd::Deadline`]) with the lease
    /// still held: what a successor needs to carry on.
    pub continuation: Option<Resume>,
}

/// Extra inputs a caller can hand to [`Worker::serve`] (a Lambda continuation uses them).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resume {
    /// The last heartbeat value a predecessor stored (the lease's CAS token).
    pub last_heartbeat: Option<String>,
    /// Tool-use ids a predecessor answered whose result it had not yet seen as an event, and
    /// the newest [`crate::ledger::ALWAYS_CARRIED`] it answered regardless (bounded by
    /// [`crate::continuation::MAX_CARRIED_ANSWERED`]; the others are in the session's history).
    #[serde(default)]
    pub answered: Vec<String>,
    /// Results a predecessor computed but could not post: posted first, never run again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<CarriedResult>,
}

/// Serves work items.
#[derive(Clone)]
pub struct Worker {
    cp: ControlPlane,
    config: Arc<WorkerConfig>,
    observer: Arc<dyn Observer>,
    shutdown: CancellationToken,
}

impl Worker {
    pub fn new(
        cp: ControlPlane,
        config: WorkerConfig,
        observer: Arc<dyn Observer>,
        shutdown: CancellationToken,
    ) -> Self {
        Worker {
            cp,
            config: Arc::new(config),
            observer,
            shutdown,
        }
    }

    pub fn control_plane(&self) -> &ControlPlane {
        &self.cp
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Serves one claimed (and acknowledged) item to the end.
    pub async fn serve(&self, item: &WorkItem, resume: Resume) -> ItemOutcome {
        self.serve_until(item, resume, None).await
    }

    /// Serves one item until it ends or until `hand_off_at`, whichever comes first. At the
    /// hand-off point the in-flight call is cancelled and answered, the workspace saved, the
    /// heartbeat stopped between beats, and the item left held (not stopped): the outcome's
    /// `continuation` is what a successor passes back as its [`Resume`].
    pub async fn serve_until(
        &self,
        item: &WorkItem,
        resume: Resume,
        hand_off_at: Option<Instant>,
    ) -> ItemOutcome {
        // Every log line of this item (heartbeats, stream, tool calls) carries these ids.
        let span = tracing::info_span!("item", environment_id = %item.environment_id,
            work_id = %item.id, session_id = %item.data.id);
        let outcome = self
            .serve_inner(item, resume, hand_off_at)
            .instrument(span.clone())
            .await;
        let _entered = span.enter();
        tracing::info!(work_id = %outcome.work_id, session_id = %outcome.session_id,
            end = ?outcome.end, stopped = outcome.stopped, "work item finished");
        self.observer.item_finished(&outcome);
        outcome
    }

    async fn serve_inner(
        &self,
        item: &WorkItem,
        resume: Resume,
        hand_off_at: Option<Instant>,
    ) -> ItemOutcome {
        let work_id = item.id.clone();
        let session_id = item.data.id.clone();
        let outcome = |end, stopped| ItemOutcome {
            work_id: work_id.clone(),
            session_id: session_id.clone(),
            end,
            stopped,
            continuation: None,
        };
        let credential = match self.item_credential(item) {
            Some(c) => c,
            None => {
                return outcome(
                    ItemEnd::Failed("no sessions token in the item and no environment key".into()),
                    false,
                );
            }
        };
        if !item.data.is_session() {
            tracing::info!(%work_id, kind = %item.data.kind, "not a session item; stopping it");
            let stopped = self
                .force_stop(&credential, &item.environment_id, &work_id)
                .await;
            return outcome(ItemEnd::Healthcheck, stopped);
        }

        // The lease comes first: downloads can outlast its TTL (§6.3 step 3).
        let lease = Lease::start(
            self.cp.clone(),
            LeaseTarget {
                environment_id: item.environment_id.clone(),
                work_id: work_id.clone(),
                credential: credential.clone(),
            },
            self.config.lease.clone(),
            resume.last_heartbeat.clone(),
            Arc::clone(&self.observer),
        );
        let (claim, session) = tokio::join!(
            lease.claimed(),
            self.fetch_session(&credential, &session_id)
        );
        match claim {
            LeaseStatus::Held => {}
            LeaseStatus::Stop(why) => {
                let _ = lease.release().await;
                let stopped = self
                    .force_stop(&credential, &item.environment_id, &work_id)
                    .await;
                return outcome(ItemEnd::Ran(RunEnd::Stopped(why)), stopped);
            }
            other => {
                let _ = lease.release().await;
                let why = match other {
                    LeaseStatus::Lost(w) => w,
                    s => format!("{s:?}"),
                };
                return outcome(ItemEnd::NotClaimed(why), false);
            }
        }
        let session = match session {
            Ok(s) => s,
            Err(e) => {
                let stopped = self.release_then_stop(lease, &credential, item).await;
                return outcome(
                    ItemEnd::Failed(format!("cannot read the session: {e}")),
                    stopped,
                );
            }
        };
        if session.status == SessionStatus::Terminated {
            let stopped = self.release_then_stop(lease, &credential, item).await;
            return outcome(ItemEnd::SessionOver, stopped);
        }

        let workdir = match self.config.workdir.prepare(&session_id) {
            Ok(w) => w,
            Err(e) => {
                let stopped = self.release_then_stop(lease, &credential, item).await;
                return outcome(ItemEnd::Failed(format!("workspace: {e}")), stopped);
            }
        };
        if let Some(store) = &self.config.workspace_store
            && workdir.is_owned()
        {
            match store.restore(&session_id, workdir.path()).await {
                Ok(true) => tracing::info!("workspace restored"),
                Ok(false) => tracing::debug!("no saved workspace"),
                // Serving with an empty workspace beats not serving; the agent can see it.
                Err(e) => {
                    tracing::error!(error = %e, "cannot restore the workspace; starting empty")
                }
            }
        }
        let (end, carry) = self
            .run_prepared(
                &credential,
                &session,
                &workdir,
                &lease,
                &work_id,
                resume,
                hand_off_at,
            )
            .await;

        // Teardown: the shell and every descendant are gone (run_prepared shut the toolset
        // down) before the workspace is saved and the item released.
        let keep = matches!(
            end,
            ItemEnd::Ran(RunEnd::Idle | RunEnd::Deadline | RunEnd::Shutdown | RunEnd::Stopped(_))
        );
        if keep
            && let Some(store) = &self.config.workspace_store
            && workdir.is_owned()
        {
            let save = store.save(&session_id, workdir.path());
            let save_by = hand_off_at.map(|at| at + self.config.hand_off_save_budget);
            let saved = match save_by {
                Some(by) => tokio::time::timeout_at(by, save).await.map_err(|_| ()),
                None => Ok(save.await),
            };
            match saved {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot save the workspace; the next invocation starts without it")
                }
                // Abandoned, maybe before the store dropped the previous snapshot: drop it now
                // (briefly: the continuation's invoke must still fit), so the next invocation
                // starts empty instead of restoring an older workspace as current.
                Err(()) => {
                    let discarded =
                        tokio::time::timeout(DISCARD_TIMEOUT, store.discard(&session_id)).await;
                    let budget_ms = self.config.hand_off_save_budget.as_millis() as u64;
                    match discarded {
                        Ok(Ok(())) => tracing::error!(
                            budget_ms,
                            "the workspace save did not finish in time and was abandoned so the hand-off can go on; the previous snapshot was deleted, the next invocation starts without one"
                        ),
                        Ok(Err(e)) => tracing::error!(budget_ms, error = %e,
                            "the workspace save did not finish in time and was abandoned, AND the previous snapshot could not be deleted: the next invocation may restore an OLDER workspace"),
                        Err(_) => tracing::error!(
                            budget_ms,
                            "the workspace save did not finish in time and was abandoned, and deleting the previous snapshot did not finish either: the next invocation may restore an OLDER workspace"
                        ),
                    }
                }
            }
        } else if keep && end == ItemEnd::Ran(RunEnd::Deadline) {
            tracing::warn!(
                "handing off without a workspace store: files written so far are not carried over (stateless tools only)"
            );
        }
        workdir.cleanup();
        if end == ItemEnd::Ran(RunEnd::Deadline) {
            return match lease.hand_over().await {
                Ok(last_heartbeat) => ItemOutcome {
                    continuation: Some(Resume {
                        last_heartbeat: Some(last_heartbeat),
                        ..carry
                    }),
                    ..outcome(end, false)
                },
                Err(status) => {
                    tracing::warn!(?status, "the lease ended while handing off");
                    let stopped = match status {
                        LeaseStatus::Stop(_) => {
                            self.force_stop(&credential, &item.environment_id, &work_id)
                                .await
                        }
                        _ => false,
                    };
                    outcome(end, stopped)
                }
            };
        }
        let stopped = if matches!(end, ItemEnd::Ran(RunEnd::LeaseLost(_))) {
            let _ = lease.release().await;
            false
        } else {
            self.release_then_stop(lease, &credential, item).await
        };
        outcome(end, stopped)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_prepared(
        &self,
        credential: &Credential,
        session: &Session,
        workdir: &Workdir,
        lease: &Lease,
        work_id: &str,
        resume: Resume,
        hand_off_at: Option<Instant>,
    ) -> (ItemEnd, Resume) {
        let installed = install_skills(&self.cp, credential, session, workdir.path()).await;
        let mut tool_config = self.config.toolset.clone();
        tool_config.workdir = workdir.path().to_path_buf();
        // This session's own proxy credential and the CA bundle; the credential dies with
        // `egress` when this function returns, after the session's tools are gone.
        let egress = self.config.egress.as_ref().map(|proxy| {
            let session_egress = proxy.open_session(&session.id);
            tool_config
                .env
                .set
                .extend(session_egress.env.iter().cloned());
            Arc::new(session_egress)
        });
        // Memory stores are mounted (and downloaded) here, with the heartbeat already going.
        let prepared = crate::memory::prepare(
            &self.cp,
            credential,
            &self.config.memory,
            session,
            tool_config,
        )
        .await;
        let (toolset, memory) = match prepared {
            Ok(t) => t,
            Err(e) => return (ItemEnd::Failed(e.to_string()), resume),
        };
        // While the event stream attaches and the model thinks, not on the first call's clock.
        toolset.prewarm_shell();
        let ctx = SessionContext {
            cp: self.cp.clone(),
            credential: credential.clone(),
            session_id: session.id.clone(),
            work_id: work_id.to_owned(),
            toolset: toolset.clone(),
            custom_tools: Arc::clone(&self.config.custom_tools),
            max_idle: self.config.max_idle,
            tool_timeout: self.config.tool_timeout,
            observer: Arc::clone(&self.observer),
            egress: egress.clone(),
            shutdown: self.shutdown.clone(),
            memory: memory.clone(),
            hand_off_at,
            hand_off_post_budget: self.config.hand_off_post_budget,
        };
        let mut ledger = Ledger::new();
        ledger.seed_answered(resume.answered);
        let mut parked = parked_from(resume.results);
        let end = run_session(&ctx, lease, &mut ledger, &mut parked).await;
        toolset.shutdown().await;
        // Tool processes are gone: nothing writes into the stores during the final sync.
        drop(ctx);
        let flush_by = hand_off_at
            .map(|at| crate::memory::flush_deadline(at, self.config.hand_off_post_budget));
        crate::memory::teardown(memory, &end, flush_by).await;
        for dir in installed {
            remove_dir_logged(&dir);
        }
        (ItemEnd::Ran(end), carry_over(&ledger, parked))
    }

    fn item_credential(&self, item: &WorkItem) -> Option<Credential> {
        match item.secret.as_deref().and_then(decode_sessions_token) {
            Some(token) => Some(Credential::sessions_token(&token)),
            None => {
                if item.secret.is_some() {
                    tracing::warn!(work_id = %item.id, "item secret carries no usable sessions token; using the environment key");
                }
                self.config.environment_key.clone()
            }
        }
    }

    /// Reads the session, retrying transient failures for up to 30 s.
    async fn fetch_session(
        &self,
        credential: &Credential,
        session_id: &str,
    ) -> Result<Session, ApiError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            match self.cp.get_session(credential, session_id).await {
                Ok(s) => return Ok(s),
                Err(e) if e.is_transient() => {
                    let delay = backoff.delay_after(&e, &mut rand::rng());
                    if Instant::now() + delay > deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Ends the heartbeat, then force-stops the item unless the lease turned out to be lost
    /// (the item then belongs to the queue or another worker). Returns whether it was stopped.
    async fn release_then_stop(
        &self,
        lease: Lease,
        credential: &Credential,
        item: &WorkItem,
    ) -> bool {
        if lease_lost(lease.release().await) {
            return false;
        }
        self.force_stop(credential, &item.environment_id, &item.id)
            .await
    }

    /// `stop {"force": true}`, retried briefly; 409 (already stopped) counts as done.
    pub async fn force_stop(
        &self,
        credential: &Credential,
        environment_id: &str,
        work_id: &str,
    ) -> bool {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
        for attempt in 1..=4 {
            match self
                .cp
                .stop(credential, environment_id, work_id, true)
                .await
            {
                Ok(StopOutcome::Stopped | StopOutcome::AlreadyStopped) => return true,
                Err(e) if e.is_transient() && attempt < 4 => {
                    let delay = backoff.delay_after(&e, &mut rand::rng());
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    tracing::error!(%work_id, error = %e, "force-stop failed; the lease will expire instead");
                    return false;
                }
            }
        }
        false
    }
}

/// What a successor needs besides the lease (see [`crate::continuation`]): the answered ids not
/// yet seen in the session's events, and the results still unposted, minus any whose call got
/// an answer meanwhile.
fn carry_over(ledger: &Ledger, mut parked: crate::runner::Parked) -> Resume {
    let (answered, left_out) = ledger.carry_over_answered(MAX_CARRIED_ANSWERED);
    if left_out > 0 {
        tracing::warn!(
            left_out,
            kept = answered.len(),
            "more answered ids unseen in the session's events than a continuation carries; the oldest are left to the history"
        );
    }
    parked.retain(|id, _| !ledger.is_answered(id));
    Resume {
        last_heartbeat: None,
        answered,
        results: carried_from(parked),
    }
}

fn lease_lost(status: LeaseStatus) -> bool {
    matches!(status, LeaseStatus::Lost(_))
}

pub(crate) fn remove_dir_logged(dir: &Path) {
    // Directories tool code closed with `chmod` are reopened; links are never followed.
    if let Err(e) = hands_sandbox::remove_tree(dir) {
        tracing::warn!(path = %dir.display(), error = %e, "cannot remove directory");
    }
}
