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
            if r.read_only() && rustix::process::geteuid().is_root() {
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

    /// Teardown: after a clean end the final sync, then the push-only flush, each bounded by
    /// the flush timeout and, when given, by `deadline` (a Lambda hand-off must be over before
    /// the invocation's deadline): the final sync then gets at most half of what remains, the
    /// flush the rest. Then the folders are removed.
    pub async fn teardown(mut self, clean_end: bool, deadline: Option<Instant>) {
        let flush_timeout = self.ctx.config.flush_timeout;
        let bound = |share: u32| {
            deadline.map_or(flush_timeout, |d| {
                (d.saturating_duration_since(Instant::now()) / share).min(flush_timeout)
            })
        };
        let b = bound(2);
        if clean_end && tokio::time::timeout(b, self.finish()).await.is_err() {
            tracing::warn!(
                bound_ms = b.as_millis() as u64,
                "final memory sync cut off; the flush that follows still uploads changed files"
            );
        }
        let b = bound(1);
        if tokio::time::timeout(b, self.flush_writes()).await.is_err() {
            if deadline.is_some() {
                // The memory folders are not part of the workspace snapshot: what the flush
                // did not upload is gone once they are removed, and the successor downloads
                // the store as the server has it.
                tracing::error!(
                    bound_ms = b.as_millis() as u64,
                    "memory flush cut off by the invocation deadline: changed memory files it had not uploaded yet are lost (the successor re-downloads the store from the server); raise HANDS_DEADLINE_MARGIN"
                );
            } else {
                tracing::warn!(
                    bound_ms = b.as_millis() as u64,
                    "memory flush cut off; changed files it had not uploaded yet are not saved"
                );
            }
        }
        self.dispose(deadline).await;
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

    /// Stops the timer and tears the stores down (see [`SessionStores::teardown`]), all of it
    /// by `deadline` when one is given.
    pub async fn teardown(self, clean_end: bool, deadline: Option<Instant>) {
        let bound = || {
            deadline.map_or(self.flush_timeout, |d| {
                d.saturating_duration_since(Instant::now())
                    .min(self.flush_timeout)
            })
        };
        self.stop.cancel();
        // A timer sync already under way finishes (within the bound; past it, it is cancelled:
        // the flush below re-reads the folder anyway, and an upload it had in flight is
        // recognised by the flush's listing).
        let mut ticker = self.ticker;
        if tokio::time::timeout(bound(), &mut ticker).await.is_err() {
            tracing::warn!("memory sync of the timer cut off at teardown");
            ticker.abort();
            let _ = ticker.await;
        }
        // So does a sync still running from the last tool call.
        let pending = self.pending.lock().ok().and_then(|mut p| p.take());
        if let Some(mut sync) = pending
            && tokio::time::timeout(bound(), &mut sync).await.is_err()
        {
            tracing::warn!("memory sync of the last tool call cut off at teardown");
            sync.abort();
            let _ = sync.await;
        }
        let stores = match Arc::try_unwrap(self.stores) {
            Ok(m) => m.into_inner(),
            Err(_) => {
                tracing::error!("memory stores still shared at teardown; not flushed");
                return;
            }
        };
        let notes = stores.take_notes();
        if !notes.is_empty() {
            tracing::info!(
                count = notes.len(),
                "memory notes the agent will not see (the session ended)"
            );
        }
        stores.teardown(clean_end, deadline).await;
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
