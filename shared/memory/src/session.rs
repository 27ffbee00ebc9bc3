//! A session's stores: mounted at claim, synced on a timer and after tool calls that touched
//! them, flushed and removed at teardown.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hands_client::{ControlPlane, Credential};
use hands_protocol::session::MemoryStoreResource;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{MAX_STORES, MemoryConfig};
use crate::fsops;
use crate::scan;
use crate::store::{AttachedStore, Ctx, Disposal};

/// Why a session's stores could not be mounted at all (the item fails).
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("memory store {store}: download failed: {message}")]
    Download { store: String, message: String },
    /// Something is already at the mount path: most likely another session of the same agent
    /// on this host mounted the same store path. Running anyway would let this session's tools
    /// write into the other session's folder (uploaded into the other store) and either teardown
    /// remove the folder under the other, so the item fails, as in the reference.
    #[error(
        "memory store {store}: something already exists at its mount path {mount_path} (another session on this host may be using it; concurrent sessions of one agent need distinct mount paths or isolation tier 2)"
    )]
    MountPathExists { store: String, mount_path: String },
}

/// A mount path the reference would also refuse: absolute, no `..`, nothing odd.
pub fn check_mount_path(path: &str) -> Result<PathBuf, String> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err("is not absolute".into());
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err("contains `..`".into());
    }
    if path.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    if p.parent().is_none() {
        return Err("is the file-system root".into());
    }
    Ok(p.to_path_buf())
}

/// Every store of one session.
pub struct SessionStores {
    ctx: Ctx,
    stores: Vec<AttachedStore>,
    last_sync: tokio::time::Instant,
    finished: bool,
}

impl SessionStores {
    /// Mounts and downloads every store of `resources`. A store whose mount path is unusable
    /// (not absolute, `..`, uncreatable) is refused with a log line and the others go on; a
    /// mount path that already exists, or a store whose download fails, fails the whole mount
    /// (the item fails, as in the reference: a session must not share another's folder, nor
    /// run with amnesia about a store it was told about).
    pub async fn mount(
        cp: ControlPlane,
        credential: Credential,
        config: MemoryConfig,
        resources: &[MemoryStoreResource],
    ) -> Result<SessionStores, MountError> {
        let ctx = Ctx {
            cp,
            credential,
            config,
            notes: Arc::new(Mutex::new(Vec::new())),
            buffered: Arc::default(),
        };
        let mut planned: Vec<AttachedStore> = Vec::new();
        for (i, r) in resources.iter().enumerate() {
            if i >= MAX_STORES {
                tracing::error!(memory_store_id = %r.memory_store_id, "more than {MAX_STORES} memory stores attached; this one is not mounted");
                continue;
            }
            let root = match check_mount_path(&r.mount_path) {
                Ok(p) => p,
                Err(why) => {
                    tracing::error!(memory_store_id = %r.memory_store_id, mount_path = %r.mount_path,
                        "memory store refused: its mount path {why}; the session runs without it");
                    continue;
                }
            };
            if planned
                .iter()
                .any(|s| s.root.starts_with(&root) || root.starts_with(&s.root))
            {
                tracing::error!(memory_store_id = %r.memory_store_id, mount_path = %r.mount_path,
                    "memory store refused: its mount path overlaps another store's; the session runs without it");
                continue;
            }
            // The folder itself is created with a non-recursive mkdir: the check for "already
            // exists" and the claim of the path are one atomic step, so two sessions racing for
            // the same path cannot both win. A symlink at the path counts as existing.
            let created = root
                .parent()
                .map_or(Ok(()), fsops::create_dir_all_private)
                .and_then(|()| fsops::create_dir_private(&root));
            match created {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    tracing::error!(memory_store_id = %r.memory_store_id, mount_path = %r.mount_path,
                        "memory store refused: something already exists at its mount path; the item fails");
                    let mut partial = SessionStores {
                        ctx,
                        stores: planned,
                        last_sync: tokio::time::Instant::now(),
                        finished: true,
                    };
                    partial.dispose(None).await;
                    return Err(MountError::MountPathExists {
                        store: r.memory_store_id.clone(),
                        mount_path: r.mount_path.clone(),
                    });
                }
                Err(e) => {
                    tracing::error!(memory_store_id = %r.memory_store_id, mount_path = %r.mount_path, error = %e,
                        "memory store refused: cannot create its folder (the host must make this path writable); the session runs without it");
                    continue;
                }
            }
            if r.read_only() && ctx.config.file_modes_only && rustix::process::geteuid().is_root() {
                tracing::warn!(memory_store_id = %r.memory_store_id,
                    "the worker runs as root: at isolation tier 0 file modes cannot stop tool code from writing to this read-only store (the file tools still refuse, and nothing written is uploaded)");
            }
            planned.push(AttachedStore::new(
                r.memory_store_id.clone(),
                root,
                r.read_only(),
                ctx.config.walk_cap,
            ));
        }
        let results = futures::future::join_all(planned.iter_mut().map(|s| {
            let ctx = ctx.clone();
            async move {
                let started = std::time::Instant::now();
                let r = s.download(&ctx).await;
                if r.is_ok() {
                    tracing::info!(memory_store_id = %s.id, root = %s.root.display(), memories = s.memory_count(),
                        read_only = s.read_only, elapsed_ms = started.elapsed().as_millis() as u64,
                        peak_buffered_bytes = ctx.buffered.peak(), "memory store downloaded");
                }
                r
            }
        }))
        .await;
        let mut failure = None;
        for (s, r) in planned.iter().zip(results) {
            if let Err(message) = r {
                failure.get_or_insert(MountError::Download {
                    store: s.id.clone(),
                    message,
                });
            }
        }
        let mut stores = SessionStores {
            ctx,
            stores: planned,
            last_sync: tokio::time::Instant::now(),
            finished: false,
        };
        if let Some(e) = failure {
            stores.dispose(None).await;
            return Err(e);
        }
        Ok(stores)
    }

    pub fn is_empty(&self) -> bool {
        self.stores.is_empty()
    }

    /// The most memory content this session's stores have held in RAM at once (downloads and
    /// pulls: received, not yet written to disk).
    pub fn peak_buffered_bytes(&self) -> usize {
        self.ctx.buffered.peak()
    }

    /// Every mounted store's folder (the file tools' extra roots).
    pub fn roots(&self) -> Vec<PathBuf> {
        self.stores.iter().map(|s| s.root.clone()).collect()
    }

    /// The folders of read-only stores (refused by `write`/`edit`, bound read-only in tier 2).
    pub fn read_only_roots(&self) -> Vec<PathBuf> {
        self.stores
            .iter()
            .filter(|s| s.read_only)
            .map(|s| s.root.clone())
            .collect()
    }

    /// Takes the notes for the agent gathered since the last call.
    pub fn take_notes(&self) -> Vec<String> {
        self.ctx
            .notes
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default()
    }

    /// One sync of every store, in parallel.
    pub async fn sync_all(&mut self) {
        self.sync_pass(false).await;
    }

    async fn sync_pass(&mut self, final_pass: bool) {
        let ctx = self.ctx.clone();
        futures::future::join_all(self.stores.iter_mut().map(|s| s.sync(&ctx, final_pass))).await;
        self.last_sync = tokio::time::Instant::now();
    }

    /// Syncs when the interval has passed since the last sync.
    pub async fn sync_if_due(&mut self) {
        if self.last_sync.elapsed() >= self.ctx.config.sync_interval {
            self.sync_all().await;
        }
    }

    /// Whether any store folder changed since its last sync (metadata only, nothing read).
    pub async fn touched(&self) -> bool {
        let roots: Vec<(PathBuf, u64)> = self
            .stores
            .iter()
            .map(|s| (s.root.clone(), s.fingerprint))
            .collect();
        let cap = self.ctx.config.walk_cap;
        tokio::task::spawn_blocking(move || {
            roots
                .iter()
                .any(|(root, fp)| scan::fingerprint(root, cap) != *fp)
        })
        .await
        .unwrap_or(true)
    }

    /// The session's last full sync (server deletes skip the window, the cap still applies).
    /// Runs once.
    pub async fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.sync_pass(true).await;
    }

    /// Push-only pass: uploads new and changed files; no deletes, no pulls.
    pub async fn flush_writes(&mut self) {
        let ctx = self.ctx.clone();
        futures::future::join_all(self.stores.iter_mut().map(|s| s.flush_writes(&ctx))).await;
    }

    /// Removes every store folder this session created (all at once), waiting for the
    /// removals until `deadline` when one is given: a removal still running then goes on in
    /// the background (each folder is renamed away first, so its mount path is free at once).
    pub async fn dispose(&mut self, deadline: Option<Instant>) -> Vec<Disposal> {
        let done =
            futures::future::join_all(self.stores.iter_mut().map(|s| s.dispose(deadline))).await;
        self.stores.clear();
        done
    }

    /// Teardown: after a clean end the final sync, then the push-only flush, sharing ONE budget:
    /// the flush timeout (30 s) from now, or `deadline` if nearer (a Lambda hand-off must be
    /// over before the invocation's deadline). The final sync gets at most half of what remains
    /// of it, the flush the rest. Then the folders are removed (see [`Self::dispose`]; bounded
    /// by `deadline` only, as it reads nothing and sends nothing).
    pub async fn teardown(self, clean_end: bool, deadline: Option<Instant>) -> TeardownReport {
        let report = TeardownReport::start(self.ctx.config.flush_timeout, deadline);
        self.teardown_within(clean_end, deadline, report).await
    }

    async fn teardown_within(
        mut self,
        clean_end: bool,
        deadline: Option<Instant>,
        mut report: TeardownReport,
    ) -> TeardownReport {
        let end = report.budget_end;
        if clean_end {
            let now = Instant::now();
            let until = (now + end.saturating_duration_since(now) / 2).min(end);
            let cut = tokio::time::timeout_at(until, self.finish()).await.is_err();
            if cut {
                tracing::warn!(
                    "final memory sync cut off; the flush that follows still uploads changed files"
                );
            }
            report.waits.push(TeardownWait {
                what: "final sync",
                until,
                cut,
            });
        }
        let cut = tokio::time::timeout_at(end, self.flush_writes())
            .await
            .is_err();
        if cut {
            if deadline.is_some_and(|d| d <= end) {
                // The memory folders are not part of the workspace snapshot: what the flush
                // did not upload is gone once they are removed, and the successor downloads
                // the store as the server has it.
                tracing::error!(
                    "memory flush cut off by the invocation deadline: changed memory files it had not uploaded yet are lost (the successor re-downloads the store from the server); raise HANDS_DEADLINE_MARGIN"
                );
            } else {
                tracing::warn!(
                    budget_ms = self.ctx.config.flush_timeout.as_millis() as u64,
                    "memory flush cut off by the teardown budget; changed files it had not uploaded yet are not saved"
                );
            }
        }
        report.waits.push(TeardownWait {
            what: "flush",
            until: end,
            cut,
        });
        report.folders = self.dispose(deadline).await;
        report
    }
}

/// What a teardown did: the one budget its waits shared and how each ended, and what became
/// of each folder (for logs and tests).
#[derive(Debug)]
pub struct TeardownReport {
    pub started: Instant,
    /// The end of the budget every wait of the teardown shares (the syncs still running, the
    /// final sync, the flush): the flush timeout after `started`, or the deadline if nearer.
    pub budget_end: Instant,
    pub waits: Vec<TeardownWait>,
    pub folders: Vec<Disposal>,
}

/// One bounded wait of a teardown.
#[derive(Debug)]
pub struct TeardownWait {
    pub what: &'static str,
    /// The instant it had to be over by.
    pub until: Instant,
    /// It was cut off at `until`.
    pub cut: bool,
}

impl TeardownReport {
    fn start(flush_timeout: Duration, deadline: Option<Instant>) -> TeardownReport {
        let started = Instant::now();
        let budget_end =
            deadline.map_or(started + flush_timeout, |d| d.min(started + flush_timeout));
        TeardownReport {
            started,
            budget_end,
            waits: Vec::new(),
            folders: Vec::new(),
        }
    }
}

/// How long a tool result may wait for the sync after its call. The sync sits on the tool-result
/// critical path, and a slow or rate-limited control plane (retries honour `retry-after`) could
/// otherwise hold the agent's result for minutes. Past this bound the sync carries on in the
/// background (never cancelled half-way), its notes go out with the next result, and what it
/// did not reach is left to the periodic sync.
pub const AFTER_CALL_SYNC_BOUND: Duration = Duration::from_secs(3);

/// A session's stores while it runs: a timer syncs them every interval while no tool call is
/// running, and [`LiveMemory::after_call`] syncs right after a call that touched them.
pub struct LiveMemory {
    stores: Arc<tokio::sync::Mutex<SessionStores>>,
    busy: Arc<AtomicBool>,
    stop: CancellationToken,
    ticker: JoinHandle<()>,
    roots: Vec<PathBuf>,
    read_only_roots: Vec<PathBuf>,
    /// The stores' notes for the agent, readable while a sync holds the stores.
    notes: Arc<Mutex<Vec<String>>>,
    /// An after-call sync that outlived [`AFTER_CALL_SYNC_BOUND`] and is still running.
    pending: Mutex<Option<JoinHandle<()>>>,
    flush_timeout: Duration,
}

impl LiveMemory {
    pub fn start(stores: SessionStores) -> LiveMemory {
        let interval = stores.ctx.config.sync_interval;
        let flush_timeout = stores.ctx.config.flush_timeout;
        let notes = Arc::clone(&stores.ctx.notes);
        let roots = stores.roots();
        let read_only_roots = stores.read_only_roots();
        let stores = Arc::new(tokio::sync::Mutex::new(stores));
        let busy = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let ticker = tokio::spawn(
            tick(
                Arc::clone(&stores),
                Arc::clone(&busy),
                stop.clone(),
                interval,
            )
            .instrument(tracing::Span::current()),
        );
        LiveMemory {
            stores,
            busy,
            stop,
            ticker,
            roots,
            read_only_roots,
            notes,
            pending: Mutex::new(None),
            flush_timeout,
        }
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    pub fn read_only_roots(&self) -> &[PathBuf] {
        &self.read_only_roots
    }

    /// A tool call is about to run: the timer holds off until it is over.
    pub fn call_started(&self) {
        self.busy.store(true, Ordering::SeqCst);
    }

    /// A tool call ended: sync now if it touched a store (or the interval passed), waiting at
    /// most [`AFTER_CALL_SYNC_BOUND`], and return the notes the agent should see with this
    /// call's result (a sync that outlives the bound delivers its notes with a later result).
    /// While an earlier after-call sync is still running, no second one is started: this call
    /// waits for that one (bounded too) and the timer picks up the rest.
    pub async fn after_call(&self) -> Vec<String> {
        let running = self
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.take())
            .filter(|h| !h.is_finished());
        let mut sync = running.unwrap_or_else(|| {
            let stores = Arc::clone(&self.stores);
            tokio::spawn(
                async move {
                    let mut stores = stores.lock().await;
                    if stores.touched().await {
                        stores.sync_all().await;
                    } else {
                        stores.sync_if_due().await;
                    }
                }
                .instrument(tracing::Span::current()),
            )
        });
        if tokio::time::timeout(AFTER_CALL_SYNC_BOUND, &mut sync)
            .await
            .is_err()
        {
            tracing::info!(
                bound_ms = AFTER_CALL_SYNC_BOUND.as_millis() as u64,
                "memory sync after the tool call is still running; the result goes out without waiting for it"
            );
            if let Ok(mut p) = self.pending.lock() {
                *p = Some(sync);
            }
        }
        self.busy.store(false, Ordering::SeqCst);
        self.notes
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default()
    }

    /// Stops the timer and tears the stores down (see [`SessionStores::teardown`]): the wait
    /// for a sync still running (the timer's, the last tool call's) comes out of the same
    /// budget as the final sync and the flush, so the whole teardown waits at most the flush
    /// timeout (or until `deadline`, if nearer) before the folders are removed.
    pub async fn teardown(self, clean_end: bool, deadline: Option<Instant>) -> TeardownReport {
        let mut report = TeardownReport::start(self.flush_timeout, deadline);
        let end = report.budget_end;
        self.stop.cancel();
        // A timer sync already under way finishes (within the budget; past it, it is
        // cancelled: the flush below re-reads the folder anyway, and an upload it had in
        // flight is recognised by the flush's listing).
        let mut ticker = self.ticker;
        let cut = tokio::time::timeout_at(end, &mut ticker).await.is_err();
        if cut {
            tracing::warn!("memory sync of the timer cut off at teardown");
            ticker.abort();
            let _ = ticker.await;
        }
        report.waits.push(TeardownWait {
            what: "timer sync",
            until: end,
            cut,
        });
        // So does a sync still running from the last tool call.
        let pending = self.pending.lock().ok().and_then(|mut p| p.take());
        if let Some(mut sync) = pending {
            let cut = tokio::time::timeout_at(end, &mut sync).await.is_err();
            if cut {
                tracing::warn!("memory sync of the last tool call cut off at teardown");
                sync.abort();
                let _ = sync.await;
            }
            report.waits.push(TeardownWait {
                what: "after-call sync",
                until: end,
                cut,
            });
        }
        let stores = match Arc::try_unwrap(self.stores) {
            Ok(m) => m.into_inner(),
            Err(_) => {
                tracing::error!("memory stores still shared at teardown; not flushed");
                return report;
            }
        };
        let notes = stores.take_notes();
        if !notes.is_empty() {
            tracing::info!(
                count = notes.len(),
                "memory notes the agent will not see (the session ended)"
            );
        }
        stores.teardown_within(clean_end, deadline, report).await
    }
}

async fn tick(
    stores: Arc<tokio::sync::Mutex<SessionStores>>,
    busy: Arc<AtomicBool>,
    stop: CancellationToken,
    interval: Duration,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if busy.load(Ordering::SeqCst) {
            continue;
        }
        let mut s = stores.lock().await;
        s.sync_if_due().await;
    }
}
