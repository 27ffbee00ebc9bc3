//! Keeping a session's workspace between invocations (DESIGN.md "Workspace"): a Lambda
//! function's `/tmp` does not outlive its execution environment, and a continuation or the
//! session's next turn may land in another one. The store is a seam: the worker says when to
//! restore and when to save; where the bytes go (S3 on Lambda) is the caller's business.
//!
//! The worker restores into a freshly created per-session directory only, and saves only after
//! every tool process of the session is gone, so a snapshot never races a writer.

use std::path::Path;

use futures::future::BoxFuture;

/// Why a workspace could not be restored or saved. The worker logs it and goes on: serving with
/// an empty workspace is better than not serving.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// Where workspaces are kept, keyed by session id.
pub trait WorkspaceStore: Send + Sync {
    /// Fills `dir` (empty, just created) with the session's saved workspace. `Ok(false)` when
    /// nothing was saved for this session.
    fn restore<'a>(
        &'a self,
        session_id: &'a str,
        dir: &'a Path,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Saves `dir` as the session's workspace, replacing any earlier snapshot. The worker may
    /// drop the future before it completes (a hand-off running out of time): a store must then
    /// leave no snapshot or the new one, never the earlier one (drop it before writing).
    fn save<'a>(
        &'a self,
        session_id: &'a str,
        dir: &'a Path,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Deletes the session's snapshot, if any: after an abandoned save, so that whatever the
    /// save got to, no earlier workspace is restored as current.
    fn discard<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
}
