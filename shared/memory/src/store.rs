//! One attached store and its reconciliation with the server: the reference's merge rules
//! (`SessionMemoryStores` in `_memories.py`), path by path, against a baseline of the digests
//! both sides last agreed on. See the crate documentation for the rules and where this differs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use hands_client::{ApiError, ControlPlane, Credential};
use hands_protocol::memory::{
    MAX_MEMORY_BYTES, MAX_MEMORY_PATH_SEGMENTS, Memory, MemoryListItem, MemoryView,
    STORE_MARKER_FILE, is_valid_memory_path,
};
use tokio::time::Instant;

use crate::config::{DeleteMode, MemoryConfig};
use crate::fsops::{self, ReadOutcome};
use crate::scan::{self, HashCache, Scan};

/// Single-memory fetches in flight per store during a sync.
const FETCH_CONCURRENCY: usize = 16;
/// Uploads in flight per store.
const UPLOAD_CONCURRENCY: usize = 16;
/// Tries per upload, list page or fetch (transient failures only: 5xx, 429, transport).
const PUSH_ATTEMPTS: u32 = 4;
/// The longest `retry-after` honoured between tries: a longer ask is cut to this, so a
/// download or flush stays bounded (the heartbeat keeps the lease meanwhile).
const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);

/// How long to wait before try `attempt + 1`: the server's `retry-after` if it sent one
/// (capped), else 400 ms, 800 ms, 1.6 s.
fn retry_wait(e: &ApiError, attempt: u32) -> Duration {
    e.retry_after().map_or_else(
        || Duration::from_millis(200 << attempt),
        |d| d.min(MAX_RETRY_WAIT),
    )
}

/// Runs a read (a listing page, a fetch) with the uploads' bounded retry: one transient 429
/// or 5xx must not fail a download (and with it the item) or skip a sync.
async fn read_with_retry<T, F, Fut>(store_id: &str, what: &str, mut call: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match call().await {
            Err(e) if e.is_transient() && attempt < PUSH_ATTEMPTS => {
                let wait = retry_wait(&e, attempt);
                tracing::debug!(memory_store_id = %store_id, what, error = %e, attempt,
                    wait_ms = wait.as_millis() as u64, "memory read failed; retrying");
                tokio::time::sleep(wait).await;
            }
            r => return r,
        }
    }
}
/// Bounds of the per-pass delete cap.
const DELETE_CAP_FLOOR: usize = 8;
const DELETE_CAP_CEILING: usize = 50;

/// What every store of a session shares: the client, the credential, the settings, the
/// notes for the agent, and the gauge of memory content held in RAM.
#[derive(Clone)]
pub struct Ctx {
    pub cp: ControlPlane,
    pub credential: Credential,
    pub config: MemoryConfig,
    pub notes: Arc<Mutex<Vec<String>>>,
    pub buffered: Arc<Buffered>,
}

/// Bytes of memory content received from the server and not yet written to disk, and the most
/// ever held at once: what keeps a download's footprint independent of the store's size (one
/// listing page being written while the next is fetched, per store), observable in logs and
/// tests rather than guessed from RSS.
#[derive(Debug, Default)]
pub struct Buffered {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Buffered {
    fn hold(&self, n: usize) {
        let now = self.now.fetch_add(n, Ordering::SeqCst) + n;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }

    fn release(&self, n: usize) {
        self.now.fetch_sub(n, Ordering::SeqCst);
    }

    /// The most content bytes held at once so far.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

impl Ctx {
    fn note(&self, text: String) {
        if let Ok(mut n) = self.notes.lock() {
            n.push(text);
        }
    }
}

/// One store mounted on disk.
pub struct AttachedStore {
    pub id: String,
    pub root: PathBuf,
    pub read_only: bool,
    /// rel -> digest as of the last download or successful sync.
    baseline: BTreeMap<String, String>,
    /// rel -> digest the server refused (400/413): retried only after the file changes.
    refused: HashMap<String, String>,
    /// rel -> when the file was first seen missing.
    pending_deletes: HashMap<String, Instant>,
    /// rel -> digest sent whose outcome is unknown, settled by the next listing.
    sent: HashMap<String, String>,
    cache: HashCache,
    /// Keys of problems already logged (each is logged once, not every pass).
    warned: HashSet<String>,
    /// The folder's fingerprint after the last sync.
    pub(crate) fingerprint: u64,
    /// A read-only tree was opened for the worker's own writes in this pass.
    unlocked: bool,
    /// Entries looked at per walk ([`scan::MAX_WALK_ENTRIES`] unless a test shortens it).
    walk_cap: usize,
}

/// What one upload came to.
enum Push {
    Stored(String),
    /// Nothing to send (the file vanished or is not uploadable now).
    Skipped,
    Refused(String),
    Conflict,
    Failed(Option<String>),
}

/// The per-pass delete discipline.
struct DeletePass {
    mode: DeleteMode,
    cap: usize,
    waive_window: bool,
    attempted: usize,
    capped: usize,
    suppressed: usize,
}

impl DeletePass {
    fn take_slot(&mut self) -> bool {
        if self.attempted >= self.cap {
            self.capped += 1;
            return false;
        }
        self.attempted += 1;
        true
    }
}

fn status(e: &ApiError) -> Option<u16> {
    e.status().map(|s| s.as_u16())
}

/// Blocking work off the runtime; a panic there is reported as an I/O error.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}

impl AttachedStore {
    pub fn new(id: String, root: PathBuf, read_only: bool, walk_cap: usize) -> Self {
        AttachedStore {
            id,
            root,
            read_only,
            baseline: BTreeMap::new(),
            refused: HashMap::new(),
            pending_deletes: HashMap::new(),
            sent: HashMap::new(),
            cache: HashCache::new(),
            warned: HashSet::new(),
            fingerprint: 0,
            unlocked: false,
            walk_cap,
        }
    }

    pub fn memory_count(&self) -> usize {
        self.baseline.len()
    }

    fn warn_once(&mut self, key: String, f: impl FnOnce()) {
        if self.warned.insert(key) {
            f();
        }
    }

    /// Logs (once per memory) a server path that could escape the folder or is the marker.
    fn refuse_remote(&mut self, m: &Memory) {
        let (id, path, store) = (m.id.clone(), m.path.clone(), self.id.clone());
        self.warn_once(format!("remote:{}:{}", m.id, m.path), || {
            tracing::warn!(memory_store_id = %store, memory_id = %id, path = %path,
                "memory path refused: it is not a clean relative path inside the store (or is the marker file); skipped");
        });
    }

    /// The server's memories with a usable path, by relative path, without content. A path
    /// that could escape the folder (`..`, absolute after the leading `/`, control characters)
    /// is refused and logged once per memory; the marker path is never taken from the server.
    async fn list_remote(&mut self, ctx: &Ctx) -> Result<BTreeMap<String, Memory>, ApiError> {
        let mut out = BTreeMap::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = list_page(ctx, &self.id, MemoryView::Basic, cursor.as_deref()).await?;
            ctx.buffered.release(page.content_bytes);
            for m in &page.refused {
                self.refuse_remote(m);
            }
            out.extend(page.items.into_iter().map(|(rel, mut m)| {
                m.content = None;
                (rel, m)
            }));
            match page.next {
                Some(n) => cursor = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// Scans the folder. When the walk hits its cap ([`scan::MAX_WALK_ENTRIES`]), the paths the
    /// baseline knows are looked up one by one, so a known memory's edit or deletion is seen
    /// whatever else the folder holds (files beyond the cap are left for later passes).
    async fn scan(&mut self) -> std::io::Result<Scan> {
        let root = self.root.clone();
        let id = self.id.clone();
        let mut cache = std::mem::take(&mut self.cache);
        let known: Vec<String> = self.baseline.keys().cloned().collect();
        let cap = self.walk_cap;
        let (scan, cache) = blocking(move || {
            let mut s = scan::scan(&root, &id, &mut cache, cap)?;
            if s.truncated {
                scan::lookup(&root, &known, &mut cache, &mut s)?;
            }
            Ok((s, cache))
        })
        .await?;
        self.cache = cache;
        if scan.truncated {
            let (store, root) = (self.id.clone(), self.root.display().to_string());
            let cap = self.walk_cap;
            self.warn_once("walk-cap".into(), || {
                tracing::warn!(memory_store_id = %store, root = %root, cap,
                    "the memory store folder holds more entries than one sync pass looks at: files beyond the cap are not uploaded (nor ever taken as deleted); known memories are still synced");
            });
        }
        for (key, rel, why) in &scan.skipped {
            let (store, rel, why) = (self.id.clone(), rel.clone(), why.clone());
            self.warn_once(key.clone(), || {
                tracing::warn!(memory_store_id = %store, path = %rel, reason = %why,
                    "memory file skipped: not synced");
            });
        }
        Ok(scan)
    }

    /// Opens a read-only tree for the worker's own writes (tier 0 file modes).
    async fn unlock(&mut self) {
        if self.read_only && !self.unlocked {
            let root = self.root.clone();
            if let Err(e) = blocking(move || fsops::set_tree_writable(&root, true)).await {
                tracing::warn!(memory_store_id = %self.id, error = %e, "cannot open the read-only store for the worker's writes");
            }
            self.unlocked = true;
        }
    }

    /// Closes a read-only tree again.
    pub(crate) async fn lock(&mut self) {
        if self.read_only {
            let root = self.root.clone();
            if let Err(e) = blocking(move || fsops::set_tree_writable(&root, false)).await {
                tracing::warn!(memory_store_id = %self.id, error = %e, "cannot make the read-only store read-only");
            }
            self.unlocked = false;
        }
    }

    async fn write(&mut self, rel: &str, content: String) -> bool {
        self.unlock().await;
        let root = self.root.clone();
        let r = rel.to_owned();
        match blocking(move || fsops::write_file(&root, &r, content.as_bytes(), 0o600)).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(memory_store_id = %self.id, path = %rel, error = %e, "failed to write memory");
                false
            }
        }
    }

    /// Writes the marker, then every memory of the server; pushes nothing. Each listing page
    /// (20 memories with their content) is written to disk while the next one is fetched, so the
    /// decoded content of at most two pages per store is held in memory whatever the store
    /// holds (the client also holds the raw body of the page it is decoding). The baseline is
    /// rebuilt from successful writes only, so a failure part-way leaves nothing a later pass
    /// could read as a local delete.
    pub async fn download(&mut self, ctx: &Ctx) -> Result<(), String> {
        self.baseline.clear();
        self.sent.clear();
        self.pending_deletes.clear();
        if !self
            .write(STORE_MARKER_FILE, scan::marker_content(&self.id))
            .await
        {
            return Err("cannot write the marker file".into());
        }
        self.unlock().await;
        let mut page = list_page(ctx, &self.id, MemoryView::Full, None)
            .await
            .map_err(|e| e.to_string())?;
        loop {
            for m in &page.refused {
                self.refuse_remote(m);
            }
            let held = page.content_bytes;
            let items: Vec<(String, String, String)> = page
                .items
                .into_iter()
                .filter_map(|(rel, m)| m.content.map(|c| (rel, c, m.content_sha256)))
                .collect();
            let root = self.root.clone();
            let write = blocking(move || Ok(write_page(&root, items)));
            let (written, next) = match page.next {
                Some(cursor) => {
                    let (w, n) = tokio::join!(
                        write,
                        list_page(ctx, &self.id, MemoryView::Full, Some(&cursor))
                    );
                    (w, Some(n))
                }
                None => (write.await, None),
            };
            ctx.buffered.release(held);
            let written = match written {
                Ok(w) => w,
                Err(e) => {
                    if let Some(Ok(p)) = &next {
                        ctx.buffered.release(p.content_bytes);
                    }
                    return Err(e.to_string());
                }
            };
            for (rel, sha, err) in written {
                match err {
                    None => {
                        self.baseline.insert(rel, sha);
                    }
                    Some(e) => {
                        tracing::warn!(memory_store_id = %self.id, path = %rel, error = %e, "failed to write memory")
                    }
                }
            }
            match next {
                None => break,
                Some(Ok(p)) => page = p,
                Some(Err(e)) => return Err(e.to_string()),
            }
        }
        self.lock().await;
        let root = self.root.clone();
        let cap = self.walk_cap;
        self.fingerprint = blocking(move || Ok(scan::fingerprint(&root, cap)))
            .await
            .unwrap_or(0);
        Ok(())
    }

    async fn recover(&mut self, ctx: &Ctx, reason: &str) {
        tracing::warn!(memory_store_id = %self.id, root = %self.root.display(), reason,
            "re-downloading the memory store folder instead of syncing");
        let root = self.root.clone();
        if let Err(e) = blocking(move || fsops::create_dir_all_private(&root)).await {
            tracing::warn!(memory_store_id = %self.id, error = %e, "cannot re-create the memory store folder");
            return;
        }
        if let Err(e) = self.download(ctx).await {
            tracing::warn!(memory_store_id = %self.id, error = %e, "memory store re-download failed");
        }
    }

    /// Uploads found to have landed although their answer was lost enter the baseline.
    fn settle_sent(&mut self, remote: &BTreeMap<String, Memory>) {
        for (rel, sha) in self.sent.drain() {
            if remote.get(&rel).is_some_and(|m| m.content_sha256 == sha) {
                self.baseline.insert(rel, sha);
            }
        }
    }

    /// One reconciliation pass. `final_pass` waives the delete window (no later pass will
    /// confirm). Never fails: problems are logged and the next pass tries again.
    pub async fn sync(&mut self, ctx: &Ctx, final_pass: bool) {
        if let Err(e) = self.sync_inner(ctx, final_pass).await {
            tracing::warn!(memory_store_id = %self.id, error = %e, "memory sync failed");
        }
        if self.unlocked {
            self.lock().await;
        }
        let root = self.root.clone();
        let cap = self.walk_cap;
        self.fingerprint = blocking(move || Ok(scan::fingerprint(&root, cap)))
            .await
            .unwrap_or(0);
    }

    async fn sync_inner(&mut self, ctx: &Ctx, final_pass: bool) -> Result<(), String> {
        let mut scan = self.scan().await.map_err(|e| e.to_string())?;
        if scan.marker_unreadable || scan.unknown.contains("") {
            // Not a wipe and not a foreign folder: nothing can be told about it until the
            // worker may read it again, so this pass does nothing (a re-download would fail).
            let (store, root) = (self.id.clone(), self.root.display().to_string());
            self.warn_once("unreadable-root".into(), || {
                tracing::warn!(memory_store_id = %store, root = %root,
                    "the memory store folder or its marker cannot be read (its permissions were changed); not syncing it while so");
            });
            return Ok(());
        }
        let local = std::mem::take(&mut scan.files);
        if !scan.marker_ok {
            if !local.is_empty() {
                let why = if scan.marker_present {
                    "the marker file does not match this store"
                } else {
                    "the marker file is gone"
                };
                let (store, root) = (self.id.clone(), self.root.display().to_string());
                self.warn_once(format!("distrust:{why}"), || {
                    tracing::warn!(memory_store_id = %store, root = %root, why,
                        "leaving the memory store folder as found and not syncing it");
                });
                return Ok(());
            }
            self.recover(ctx, "the folder or its marker is gone").await;
            return Ok(());
        }
        let remote = self.list_remote(ctx).await.map_err(|e| e.to_string())?;
        self.settle_sent(&remote);
        // A truncated walk: the server's paths it did not reach are looked up too, so a file
        // the walk missed is never overwritten by a pull nor taken as absent.
        let (local, scan) = if scan.truncated {
            let mut scan = Scan {
                files: local,
                truncated: true,
                unknown: scan.unknown,
                ..Scan::default()
            };
            let root = self.root.clone();
            let rels: Vec<String> = remote
                .keys()
                .filter(|r| !scan.files.contains_key(*r))
                .cloned()
                .collect();
            let mut cache = std::mem::take(&mut self.cache);
            let (mut s, c) = blocking(move || {
                scan::lookup(&root, &rels, &mut cache, &mut scan)?;
                Ok((scan, cache))
            })
            .await
            .map_err(|e| e.to_string())?;
            self.cache = c;
            (std::mem::take(&mut s.files), s)
        } else {
            (local, scan)
        };
        // One file gone is a delete; every file gone at once is a wipe, never propagated.
        // Files the worker may not read are not gone.
        if local.is_empty()
            && self
                .baseline
                .keys()
                .filter(|rel| !scan.is_unknown(rel))
                .count()
                > 1
        {
            self.recover(ctx, "every memory file is gone at once").await;
            return Ok(());
        }
        let mut deletes = DeletePass {
            mode: ctx.config.deletions,
            cap: (self.baseline.len() / 4).clamp(DELETE_CAP_FLOOR, DELETE_CAP_CEILING),
            waive_window: final_pass,
            attempted: 0,
            capped: 0,
            suppressed: 0,
        };
        let mut pulls: Vec<(String, Memory)> = Vec::new();
        // (rel, local digest, existing memory, baseline digest if the upload fails)
        let mut pushes: Vec<(String, String, Option<Memory>, Option<String>)> = Vec::new();
        let mut baseline: BTreeMap<String, String> = BTreeMap::new();
        let paths: BTreeSet<String> = remote
            .keys()
            .chain(local.keys())
            .chain(self.baseline.keys())
            .cloned()
            .collect();
        for rel in paths {
            let remote_item = remote.get(&rel);
            let local_sha = local.get(&rel).cloned();
            let base_sha = self.baseline.get(&rel).cloned();
            if local_sha.is_none() && scan.is_unknown(&rel) {
                // Unreadable (tool code's `chmod 000`), not deleted: nothing is sent, pulled
                // over it or counted towards a delete; it is synced once readable again.
                self.pending_deletes.remove(&rel);
                if let Some(b) = base_sha {
                    baseline.insert(rel, b);
                }
                continue;
            }
            let sha = if local_sha.is_none()
                && base_sha.is_some()
                && remote_item.is_some_and(|m| Some(&m.content_sha256) == base_sha.as_ref())
                && !self.read_only
            {
                match (remote_item, base_sha) {
                    (Some(m), Some(b)) => {
                        self.corroborated_delete(ctx, &rel, m, b, &mut deletes)
                            .await
                    }
                    _ => None,
                }
            } else {
                self.sync_path(ctx, &rel, remote_item, local_sha, &mut pulls, &mut pushes)
                    .await
            };
            if let Some(sha) = sha {
                baseline.insert(rel, sha);
            }
        }
        self.baseline = baseline;
        self.run_pushes(ctx, pushes).await;
        self.pull_all(ctx, pulls).await;
        if deletes.suppressed > 0 {
            tracing::debug!(memory_store_id = %self.id, held = deletes.suppressed,
                "server deletes are disabled; locally deleted memories stay on the server");
        }
        if deletes.capped > 0 {
            tracing::warn!(memory_store_id = %self.id, mode = %deletes.mode, sent = deletes.attempted,
                held = deletes.capped, "delete cap reached; the rest wait for later syncs");
        }
        Ok(())
    }

    async fn sync_path(
        &mut self,
        ctx: &Ctx,
        rel: &str,
        remote: Option<&Memory>,
        mut local_sha: Option<String>,
        pulls: &mut Vec<(String, Memory)>,
        pushes: &mut Vec<(String, String, Option<Memory>, Option<String>)>,
    ) -> Option<String> {
        let base_sha = self.baseline.get(rel).cloned();
        if local_sha.is_some() {
            self.pending_deletes.remove(rel);
        }
        let Some(remote) = remote else {
            let Some(mut sha) = local_sha else {
                self.pending_deletes.remove(rel);
                return None;
            };
            if let Some(base) = &base_sha {
                if sha == *base {
                    // Deleted on the server and untouched here: delete here too.
                    match self.remove_local(rel, base).await {
                        None => return None,
                        Some(fresh) if fresh == *base => return Some(fresh),
                        Some(fresh) => sha = fresh,
                    }
                }
                // An un-pushed edit exists only in this file, so the remote delete loses.
                if self.read_only {
                    tracing::warn!(memory_store_id = %self.id, path = %rel,
                        "memory deleted remotely but edited locally; keeping the file, which a read-only store cannot push");
                } else if self.refused.get(rel) != Some(&sha) {
                    tracing::info!(memory_store_id = %self.id, path = %rel,
                        "memory deleted remotely but edited locally; re-creating it from the file");
                }
            }
            if self.read_only {
                self.report_read_only_write(ctx, rel, &sha);
                return None;
            }
            if self.refused.get(rel) == Some(&sha) {
                return None;
            }
            pushes.push((rel.to_owned(), sha, None, None));
            return None;
        };

        let remote_sha = remote.content_sha256.clone();
        let remote_changed = Some(&remote_sha) != base_sha.as_ref();
        let locally_edited = local_sha
            .as_ref()
            .is_some_and(|l| Some(l) != base_sha.as_ref() && *l != remote_sha);
        let local_changed = !self.read_only && locally_edited;

        if local_sha.is_none() && base_sha.is_some() {
            // Deleted here after a successful write: a real local deletion.
            if remote_changed {
                tracing::warn!(memory_store_id = %self.id, path = %rel,
                    "memory deleted locally but changed remotely; restoring the remote version");
                ctx.note(format!(
                    "{}: you deleted this memory file, but it was changed in the memory store meanwhile; the store's version was restored.",
                    self.display(rel)
                ));
                self.pending_deletes.remove(rel);
                pulls.push((rel.to_owned(), remote.clone()));
            }
            return base_sha;
        }

        if remote_changed {
            if local_sha.as_ref() == Some(&remote_sha) {
                return Some(remote_sha);
            }
            if locally_edited {
                tracing::warn!(memory_store_id = %self.id, path = %rel,
                    "memory changed both locally and remotely; keeping the remote version");
                if self.read_only {
                    self.report_read_only_write(ctx, rel, local_sha.as_deref().unwrap_or(""));
                } else if self.warned.insert(format!(
                    "conflict:{rel}:{}",
                    local_sha.as_deref().unwrap_or("")
                )) {
                    ctx.note(format!(
                        "{}: this memory was changed in the memory store while you edited it; the store's version replaced your edit. Read it again and re-apply your change if it is still needed.",
                        self.display(rel)
                    ));
                }
            }
            pulls.push((rel.to_owned(), remote.clone()));
            return base_sha;
        }
        if local_changed && let Some(l) = local_sha.take() {
            if self.refused.get(rel) == Some(&l) {
                return Some(remote_sha);
            }
            pushes.push((
                rel.to_owned(),
                l,
                Some(remote.clone()),
                Some(remote_sha.clone()),
            ));
            // The upload's outcome moves the baseline on; until then (and if this pass is cut
            // off before it) the last agreed digest stays, so a later pass or the flush still
            // sees a local edit on an unchanged memory, not a conflict.
            return Some(remote_sha);
        }
        if self.read_only && locally_edited {
            self.report_read_only_write(ctx, rel, local_sha.as_deref().unwrap_or(""));
        }
        Some(remote_sha)
    }

    fn display(&self, rel: &str) -> String {
        self.root.join(rel).display().to_string()
    }

    fn report_read_only_write(&mut self, ctx: &Ctx, rel: &str, sha: &str) {
        let (store, shown) = (self.id.clone(), self.display(rel));
        if self.warned.insert(format!("ro:{rel}:{sha}")) {
            tracing::warn!(memory_store_id = %store, path = %rel,
                "a file of a read-only memory store was written; it is not uploaded");
            ctx.note(format!(
                "{shown}: this memory store is read-only; your change is not saved to it."
            ));
        }
    }

    /// Removes the file for a memory deleted on the server if it still has `expect`; returns
    /// `None` when gone, `expect` when it must stay, or the fresh digest of an edited file.
    async fn remove_local(&mut self, rel: &str, expect: &str) -> Option<String> {
        let root = self.root.clone();
        let r = rel.to_owned();
        let fresh = blocking(move || fsops::read_file(&root, &r, MAX_MEMORY_BYTES as u64)).await;
        match fresh {
            Ok(ReadOutcome::Absent) => return None,
            Ok(ReadOutcome::Content(c)) => {
                let sha = hands_protocol::memory::content_sha256(c.as_bytes());
                if sha != expect {
                    return Some(sha);
                }
            }
            _ => return Some(expect.to_owned()),
        }
        self.unlock().await;
        let root = self.root.clone();
        let r = rel.to_owned();
        match blocking(move || fsops::remove_file(&root, &r)).await {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(memory_store_id = %self.id, path = %rel, error = %e,
                    "failed to remove a memory deleted remotely");
                Some(expect.to_owned())
            }
        }
    }

    async fn corroborated_delete(
        &mut self,
        ctx: &Ctx,
        rel: &str,
        remote: &Memory,
        base: String,
        deletes: &mut DeletePass,
    ) -> Option<String> {
        if deletes.mode == DeleteMode::Disabled {
            deletes.suppressed += 1;
            return Some(base);
        }
        let now = Instant::now();
        let first_seen = self.pending_deletes.get(rel).copied();
        if !deletes.waive_window {
            // Never on the first pass that sees the file missing, and only after the window.
            match first_seen {
                None => {
                    self.pending_deletes.insert(rel.to_owned(), now);
                    return Some(base);
                }
                Some(t) if now.duration_since(t) < ctx.config.delete_corroboration => {
                    return Some(base);
                }
                Some(_) => {}
            }
        }
        // Re-check now: the folder may have been destroyed or the file re-created meanwhile.
        let root = self.root.clone();
        let (id, r) = (self.id.clone(), rel.to_owned());
        let recheck = blocking(move || {
            let marker = fsops::read_file(&root, STORE_MARKER_FILE, 4096)?;
            let marker_ok = marker == ReadOutcome::Content(scan::marker_content(&id));
            let absent = fsops::read_file(&root, &r, 0)? == ReadOutcome::Absent;
            Ok((marker_ok, absent))
        })
        .await;
        let (marker_ok, absent) = recheck.unwrap_or((false, false));
        if !marker_ok {
            return Some(base);
        }
        if !absent {
            self.pending_deletes.remove(rel);
            return Some(base);
        }
        if !deletes.take_slot() {
            return Some(base);
        }
        if deletes.mode == DeleteMode::LogOnly {
            tracing::info!(memory_store_id = %self.id, path = %rel,
                "log-only: sync would delete this memory on the server");
            return Some(base);
        }
        match ctx
            .cp
            .delete_memory(&ctx.credential, &self.id, &remote.id, &base)
            .await
        {
            Ok(_) => {
                tracing::info!(memory_store_id = %self.id, path = %rel, "propagated local deletion");
                self.pending_deletes.remove(rel);
                None
            }
            Err(e) if status(&e) == Some(404) => {
                self.pending_deletes.remove(rel);
                None
            }
            Err(e) if matches!(status(&e), Some(409) | Some(412)) => {
                tracing::warn!(memory_store_id = %self.id, path = %rel,
                    "memory deleted locally but changed remotely; keeping the remote version");
                Some(base)
            }
            Err(e) => {
                tracing::warn!(memory_store_id = %self.id, path = %rel, error = %e, "failed to delete memory");
                Some(base)
            }
        }
    }

    /// Uploads, a bounded number at a time; each outcome updates the baseline.
    async fn run_pushes(
        &mut self,
        ctx: &Ctx,
        pushes: Vec<(String, String, Option<Memory>, Option<String>)>,
    ) {
        if pushes.is_empty() {
            return;
        }
        let root = self.root.clone();
        let id = self.id.clone();
        let results: Vec<_> = futures::stream::iter(pushes.into_iter().map(
            |(rel, local_sha, existing, fallback)| {
                let (ctx, root, id) = (ctx.clone(), root.clone(), id.clone());
                async move {
                    let outcome = push(&ctx, &id, &root, &rel, existing).await;
                    (rel, local_sha, fallback, outcome)
                }
            },
        ))
        .buffer_unordered(UPLOAD_CONCURRENCY)
        .collect()
        .await;
        for (rel, local_sha, fallback, outcome) in results {
            let sha = match outcome {
                Push::Stored(sha) => {
                    self.refused.remove(&rel);
                    self.sent.remove(&rel);
                    Some(sha)
                }
                Push::Skipped => fallback,
                Push::Refused(sha) => {
                    let store = self.id.clone();
                    tracing::warn!(memory_store_id = %store, path = %rel,
                        "the server rejected this memory file; it stays un-synced until its content changes");
                    self.refused.insert(rel.clone(), sha);
                    fallback
                }
                Push::Conflict => {
                    tracing::warn!(memory_store_id = %self.id, path = %rel,
                        "memory changed both locally and remotely; the upload was refused and the store's version wins");
                    // The next pass pulls the winner over the file (as in the reference); the
                    // agent is told now, once for this edit.
                    if self.warned.insert(format!("conflict:{rel}:{local_sha}")) {
                        ctx.note(format!(
                            "{}: this memory was changed in the memory store while you edited it; the store's version will replace your edit. Read it again and re-apply your change if it is still needed.",
                            self.display(&rel)
                        ));
                    }
                    fallback
                }
                Push::Failed(sent) => {
                    if let Some(s) = sent {
                        self.sent.insert(rel.clone(), s);
                    }
                    fallback
                }
            };
            if let Some(sha) = sha {
                self.baseline.insert(rel, sha);
            }
        }
    }

    /// Fetches and writes the given memories, a bounded number at a time. A failed fetch or
    /// write keeps the old baseline entry so the next pass retries; a 404 means the memory was
    /// deleted after the listing.
    async fn pull_all(&mut self, ctx: &Ctx, pulls: Vec<(String, Memory)>) {
        if pulls.is_empty() {
            return;
        }
        self.unlock().await;
        let root = self.root.clone();
        let id = self.id.clone();
        let results: Vec<(String, Option<String>)> =
            futures::stream::iter(pulls.into_iter().map(|(rel, listed)| {
                let (ctx, root, id) = (ctx.clone(), root.clone(), id.clone());
                async move {
                    let fetched = read_with_retry(&id, "get", || {
                        ctx.cp.get_memory(&ctx.credential, &id, &listed.id)
                    })
                    .await;
                    let m = match fetched {
                        Ok(m) => m,
                        Err(e) => {
                            if status(&e) != Some(404) {
                                tracing::warn!(memory_store_id = %id, path = %rel, error = %e, "failed to fetch memory content");
                            }
                            return (rel, None);
                        }
                    };
                    let content = m.content.unwrap_or_default();
                    let held = content.len();
                    ctx.buffered.hold(held);
                    let r = rel.clone();
                    let written = blocking(move || {
                        fsops::write_file(&root, &r, content.as_bytes(), 0o600)
                    })
                    .await;
                    ctx.buffered.release(held);
                    match written {
                        Ok(()) => (rel, Some(m.content_sha256)),
                        Err(e) => {
                            tracing::warn!(memory_store_id = %id, path = %rel, error = %e, "failed to write memory");
                            (rel, None)
                        }
                    }
                }
            }))
            .buffer_unordered(FETCH_CONCURRENCY)
            .collect()
            .await;
        for (rel, sha) in results {
            if let Some(sha) = sha {
                self.baseline.insert(rel, sha);
            }
        }
    }

    /// The push-only rescue pass of teardown: uploads new and changed files, sends no deletes,
    /// pulls nothing. Returns how many changed files were left un-uploaded by a conflict.
    pub async fn flush_writes(&mut self, ctx: &Ctx) {
        if self.read_only {
            return;
        }
        let scan = match self.scan().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(memory_store_id = %self.id, error = %e, "memory flush failed");
                return;
            }
        };
        if !scan.marker_ok {
            if !scan.files.is_empty() {
                tracing::warn!(memory_store_id = %self.id, root = %self.root.display(),
                    "the marker file is gone or altered; not uploading anything from the memory store folder");
            }
            return;
        }
        // A path with an unsettled send counts even at its baseline digest.
        let dirty: BTreeMap<String, String> = scan
            .files
            .into_iter()
            .filter(|(rel, sha)| {
                (Some(sha) != self.baseline.get(rel) || self.sent.contains_key(rel))
                    && self.refused.get(rel) != Some(sha)
            })
            .collect();
        if dirty.is_empty() {
            return;
        }
        let remote = match self.list_remote(ctx).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(memory_store_id = %self.id, error = %e, unsent = dirty.len(),
                    "memory flush failed: cannot list the store; changed files are not saved");
                return;
            }
        };
        self.settle_sent(&remote);
        let mut pushes = Vec::new();
        for (rel, local_sha) in dirty {
            let base = self.baseline.get(&rel).cloned();
            let existing = remote.get(&rel).cloned();
            if Some(&local_sha) == base.as_ref() {
                continue;
            }
            if let Some(m) = &existing {
                if m.content_sha256 == local_sha {
                    self.baseline.insert(rel, local_sha);
                    continue;
                }
                if Some(&m.content_sha256) != base.as_ref() {
                    tracing::warn!(memory_store_id = %self.id, path = %rel,
                        "memory changed both locally and remotely; the flush leaves the remote version (the local edit is lost)");
                    continue;
                }
            }
            pushes.push((rel, local_sha, existing, base));
        }
        self.run_pushes(ctx, pushes).await;
    }

    /// Removes the folder unless it holds files but fails the marker check (left as found).
    /// Metadata only: the marker is read (a few bytes) and, only when it fails, the folder is
    /// walked (nothing read) to see whether it holds files. The folder is first renamed to a
    /// hidden name beside it (one `rename`), so its mount path is free at once; the tree is then
    /// removed on a blocking thread, waited for until `deadline` when one is given (a Lambda
    /// hand-off: the workspace save and the continuation must not wait for it), else to the
    /// end. A removal still running at the deadline finishes in the background.
    pub async fn dispose(&mut self, deadline: Option<Instant>) -> Disposal {
        let root = self.root.clone();
        let (id, cap) = (self.id.clone(), self.walk_cap);
        // A handful of system calls on local metadata, done here rather than on a blocking
        // thread so that the mount path is free before the deadline however little is left.
        let marker_ok = matches!(
            fsops::read_file(&root, STORE_MARKER_FILE, 4096),
            Ok(ReadOutcome::Content(c)) if c == scan::marker_content(&id)
        );
        let renamed = if marker_ok { hide(&root) } else { None };
        let work = tokio::task::spawn_blocking(move || -> std::io::Result<Disposal> {
            let target = match renamed {
                Some(t) => t,
                None => {
                    if !marker_ok {
                        let w = fsops::walk(&root, MAX_MEMORY_PATH_SEGMENTS + 1, cap)?;
                        let holds_files = w.truncated
                            || !w.unreadable.is_empty()
                            || w.files.keys().any(|rel| rel != STORE_MARKER_FILE);
                        if holds_files {
                            return Ok(Disposal::LeftAsFound);
                        }
                    }
                    hide(&root).unwrap_or(root)
                }
            };
            fsops::remove_tree(&target).map(|()| Disposal::Removed)
        });
        let joined = match deadline {
            None => work.await,
            // Nothing left: not even one poll.
            Some(d) if d <= Instant::now() => {
                tracing::info!(memory_store_id = %self.id, root = %self.root.display(),
                    "no time left to remove the memory store folder; the removal goes on in the background");
                return Disposal::InBackground;
            }
            Some(d) => match tokio::time::timeout_at(d, work).await {
                Ok(j) => j,
                Err(_) => {
                    tracing::info!(memory_store_id = %self.id, root = %self.root.display(),
                        "the memory store folder is still being removed at the deadline; the removal goes on in the background");
                    return Disposal::InBackground;
                }
            },
        };
        let r = joined.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        match r {
            Ok(Disposal::LeftAsFound) => {
                tracing::warn!(memory_store_id = %self.id, root = %self.root.display(),
                    "the marker file is gone or altered; leaving the memory store folder on disk");
                Disposal::LeftAsFound
            }
            Ok(d) => {
                tracing::info!(memory_store_id = %self.id, root = %self.root.display(), "removed memory store dir");
                d
            }
            Err(e) => {
                tracing::warn!(memory_store_id = %self.id, root = %self.root.display(), error = %e,
                    "failed to remove the memory store folder");
                Disposal::Failed
            }
        }
    }
}

/// What became of a store folder at teardown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposal {
    Removed,
    /// Still being removed on a blocking thread when the deadline came; its mount path is
    /// free already (the folder was renamed away first).
    InBackground,
    /// It holds files but fails the marker check: not this session's to remove.
    LeftAsFound,
    /// Logged.
    Failed,
}

/// Renames the store folder to a hidden name beside it (`.<name>.hands-removing-<random>`),
/// so its mount path is free before the (unbounded) removal of its tree; `None` if the rename
/// fails (the folder is then removed where it is).
fn hide(root: &Path) -> Option<PathBuf> {
    let name = root.file_name()?.to_string_lossy().into_owned();
    let hidden = root.with_file_name(format!(
        ".{name}.hands-removing-{:016x}",
        rand::random::<u64>()
    ));
    std::fs::rename(root, &hidden).ok().map(|()| hidden)
}

/// One listing page: the memories with a usable path (by relative path), those refused, the
/// next cursor, and how many content bytes it holds (counted in [`Buffered`] on arrival; the
/// caller releases them once written or dropped).
struct ListedPage {
    items: Vec<(String, Memory)>,
    refused: Vec<Memory>,
    next: Option<String>,
    content_bytes: usize,
}

async fn list_page(
    ctx: &Ctx,
    store_id: &str,
    view: MemoryView,
    cursor: Option<&str>,
) -> Result<ListedPage, ApiError> {
    let p = read_with_retry(store_id, "list", || {
        ctx.cp
            .list_memories(&ctx.credential, store_id, view, cursor)
    })
    .await?;
    let mut out = ListedPage {
        items: Vec::with_capacity(p.data.len()),
        refused: Vec::new(),
        next: p.next_page.filter(|n| !n.is_empty()),
        content_bytes: 0,
    };
    for item in p.data {
        let MemoryListItem::Memory(mut m) = item else {
            continue;
        };
        let rel = m.path.strip_prefix('/').unwrap_or(&m.path).to_owned();
        if !is_valid_memory_path(&m.path) || rel == STORE_MARKER_FILE {
            m.content = None;
            out.refused.push(m);
            continue;
        }
        out.content_bytes += m.content.as_ref().map_or(0, String::len);
        out.items.push((rel, m));
    }
    ctx.buffered.hold(out.content_bytes);
    Ok(out)
}

/// Writes one page of a download; returns `(rel, digest, error)` per memory.
fn write_page(
    root: &Path,
    items: Vec<(String, String, String)>,
) -> Vec<(String, String, Option<String>)> {
    items
        .into_iter()
        .map(|(rel, content, sha)| {
            let err = fsops::write_file(root, &rel, content.as_bytes(), 0o600)
                .err()
                .map(|e| e.to_string());
            (rel, sha, err)
        })
        .collect()
}

/// Uploads one file: a create, or an update with a `content_sha256` precondition.
async fn push(ctx: &Ctx, store_id: &str, root: &Path, rel: &str, existing: Option<Memory>) -> Push {
    let (root2, r) = (root.to_path_buf(), rel.to_owned());
    let content = match blocking(move || fsops::read_file(&root2, &r, MAX_MEMORY_BYTES as u64))
        .await
    {
        Ok(ReadOutcome::Content(c)) => c,
        Ok(ReadOutcome::Absent) => return Push::Skipped,
        // Changed into something unsendable since the scan; the next scan reports it.
        Ok(_) => return Push::Skipped,
        Err(e) => {
            tracing::warn!(memory_store_id = %store_id, path = %rel, error = %e, "cannot read memory file");
            return Push::Skipped;
        }
    };
    let sha = hands_protocol::memory::content_sha256(content.as_bytes());
    let mut existing = existing;
    // Transient failures (5xx, 429, transport) are retried a few times: the teardown flush
    // has no later pass to catch up.
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let result = match &existing {
            None => {
                ctx.cp
                    .create_memory(
                        &ctx.credential,
                        store_id,
                        &format!("/{rel}"),
                        content.clone(),
                    )
                    .await
            }
            Some(m) => {
                ctx.cp
                    .update_memory(
                        &ctx.credential,
                        store_id,
                        &m.id,
                        content.clone(),
                        &m.content_sha256,
                    )
                    .await
            }
        };
        return match result {
            Ok(m) => Push::Stored(m.content_sha256),
            // Deleted on the server since the listing: this file is now the only copy.
            Err(e) if existing.is_some() && status(&e) == Some(404) => {
                existing = None;
                continue;
            }
            Err(e) if existing.is_some() && status(&e) == Some(409) => {
                // After a retry, the 409 may be our own earlier attempt that landed unheard.
                // The read that tells is retried like any read; if it still fails, nothing is
                // known: the upload is left to the next listing (`sent`), which either finds
                // our content or sees a real conflict and tells the agent then. Reporting a
                // conflict here would tell the agent its edit was replaced when it may not be.
                if attempt > 1
                    && let Some(m) = &existing
                {
                    match read_with_retry(store_id, "get", || {
                        ctx.cp.get_memory(&ctx.credential, store_id, &m.id)
                    })
                    .await
                    {
                        Ok(now) if now.content_sha256 == sha => return Push::Stored(sha),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::info!(memory_store_id = %store_id, path = %rel, error = %e,
                                "cannot tell whether a retried memory update landed; the next listing settles it");
                            return Push::Failed(Some(sha));
                        }
                    }
                }
                Push::Conflict
            }
            Err(e) if e.is_transient() && status(&e) != Some(409) && attempt < PUSH_ATTEMPTS => {
                tracing::debug!(memory_store_id = %store_id, path = %rel, error = %e, attempt, "memory upload failed; retrying");
                tokio::time::sleep(retry_wait(&e, attempt)).await;
                continue;
            }
            Err(e) if matches!(status(&e), Some(400) | Some(413)) => Push::Refused(sha),
            // A retried create that finds its path taken: most likely the earlier attempt
            // landed and its answer was lost. The next listing tells (`sent`); the flush has
            // none, but then the content is on the server already or the store's wins.
            Err(e) if existing.is_none() && attempt > 1 && status(&e) == Some(409) => {
                tracing::info!(memory_store_id = %store_id, path = %rel,
                    "a retried memory create found its path taken (its earlier attempt probably landed unheard); the next listing settles it");
                Push::Failed(Some(sha.clone()))
            }
            Err(e) => {
                tracing::warn!(memory_store_id = %store_id, path = %rel, error = %e, "failed to upload memory");
                Push::Failed(Some(sha.clone()))
            }
        };
    }
}
