//! Memory stores (PROTOCOL.md §9.7): a session's `memory_store` resources mounted as folders,
//! kept in sync with the service while the session runs, flushed and removed at the end.
//!
//! What the reference (`anthropic/lib/tools/_memories.py`, anthropic 2.14.0) does, as observed
//! from its code and on the wire, and what this crate matches:
//! - Endpoints (sessions token only; the environment key is rejected):
//!   `GET /v1/memory_stores/{id}/memories?view=basic&limit=100` (content-free pages, cursor
//!   `page=<next_page>`), `view=full&limit=20` for the initial download,
//!   `GET .../memories/{mem}?view=full`, `POST .../memories {path, content}`,
//!   `POST .../memories/{mem} {content, precondition:{type:"content_sha256", content_sha256}}`,
//!   `DELETE .../memories/{mem}?expected_content_sha256=`. A failed precondition is 409.
//! - Mount: each store at its `mount_path` verbatim (absolute, no `..`); a path that already
//!   exists fails the item; the folder gets a marker `.anthropic-memory-store` holding
//!   `version 1\n<store id>`, never synced. A folder whose marker is gone or altered while files
//!   remain is never synced (nor removed); gone with no files, or every file of two or more gone
//!   at once, means re-download (a wipe never propagates).
//! - Sync (every 15 s, floor 5 s, and a final one at a clean end): per path against a baseline
//!   of last-agreed digests: remote-only change is pulled; local-only change is uploaded (update
//!   with the baseline digest as precondition, or create); both changed: the store's version
//!   wins; a 409 on upload: the store wins; 400/413: the file is not retried until it changes;
//!   an upload whose answer was lost is settled by the next listing (no double upload); a file
//!   deleted locally is deleted on the server only after 30 s of corroboration, a re-check of
//!   the file and the marker, at most max(8, min(50, n/4)) per pass, with
//!   `expected_content_sha256` (a concurrent server edit wins and is restored);
//!   `enabled|log_only|disabled`; a memory deleted on the server is deleted locally unless the
//!   file holds an un-pushed edit (then re-created); read-only stores pull but never push.
//! - Teardown: final sync (clean end only) and a push-only flush, each bounded to 30 s, then
//!   the folders are removed.
//!
//! Where this crate differs, and why (also in the README):
//! - a conflict the store wins is logged and told to the agent in the next tool result
//!   ([`LiveMemory::after_call`]), so the agent's edit is never lost silently;
//! - a file's size is checked before it is opened (100 KiB service limit): an oversized file is
//!   skipped with one log line and never read; the reference reads any file whole;
//! - symlinks, FIFOs, devices, non-UTF-8 files and server paths that could escape are skipped
//!   with one log line each; every path is walked with `O_NOFOLLOW`, so nothing outside the
//!   store is read or written even if tool code swaps a directory for a symlink;
//! - a mount path that is not absolute, has `..` or overlaps another store's refuses that
//!   store only (logged), not the whole session (one that already exists fails the item, as
//!   in the reference);
//! - transient failures of listing pages and fetches are retried like uploads, honouring
//!   `retry-after`;
//! - a read-only store is read-only for bash too (tier 0: file modes, which stop accidents but
//!   not a deliberate `chmod`; tier 2: read-only bind);
//!   writes to it are reported (log and agent note), never uploaded;
//! - besides the timer, a sync runs right after a tool call that changed a store folder,
//!   holding the call's result for at most [`AFTER_CALL_SYNC_BOUND`];
//! - a delete never goes out on the first pass that sees the file missing, whatever the window;
//! - the download writes each listing page while fetching the next (the reference writes page
//!   by page without that overlap), so the decoded content of at most two pages per store is
//!   held in memory, as measured by [`SessionStores::peak_buffered_bytes`] (the gauge counts
//!   decoded content, not the raw JSON body the client holds while decoding a page);
//! - a walk of a store folder looks at no more than [`MAX_WALK_ENTRIES`] entries; known paths
//!   it did not reach are looked up one by one, so a capped walk never reads as deletions;
//! - a conflict is told to the agent once per edit, and a pass cut off mid-upload keeps the
//!   last agreed digests, so the flush that follows still uploads the remaining edits;
//! - all the waiting of a teardown (syncs still running, the final sync, the flush) shares one
//!   30 s budget, ended sooner by a deadline when one is given (a Lambda hand-off); the folder
//!   removal reads no file (marker check, metadata-only walk), frees the mount path at once by
//!   a rename and is waited for only until that deadline;
//! - a file or folder the worker may not read (tool code's `chmod 000`) is skipped with one log
//!   line and is unknown, not absent: never uploaded, pulled over or taken as deleted, while
//!   the rest of the store syncs.

mod config;
mod fsops;
mod scan;
mod session;
mod store;

pub use config::{
    DEFAULT_SYNC_INTERVAL, DELETE_CORROBORATION, DeleteMode, FLUSH_TIMEOUT, MAX_STORES,
    MIN_SYNC_INTERVAL, MemoryConfig, parse_sync_interval,
};
pub use scan::MAX_WALK_ENTRIES;
pub use session::{
    AFTER_CALL_SYNC_BOUND, LiveMemory, MountError, SessionStores, TeardownReport, TeardownWait,
    check_mount_path,
};
pub use store::Disposal;
