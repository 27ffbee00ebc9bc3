//! The worker's side of memory stores (PROTOCOL.md §6.3 steps 5, 6 and 8): whether a session's
//! stores are mounted at all, the toolset's extra roots, the note appended to a tool result,
//! and the teardown after the run. The stores themselves are `hands-memory`.

use std::sync::Arc;
use std::time::Duration;

use hands_client::{ControlPlane, Credential, CredentialKind};
use hands_memory::{LiveMemory, MemoryConfig, SessionStores};
use hands_protocol::session::{MemoryStoreResource, Session, SessionResource};
use hands_protocol::toolset::{ContentBlock, ToolOutput};
use hands_tools::{Toolset, ToolsetConfig, ToolsetError};
use serde::Deserialize;
use tokio::time::Instant;

use crate::runner::RunEnd;

/// Why the session's tools could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("toolset: {0}")]
    Toolset(#[from] ToolsetError),
    /// The memory endpoints reject the environment key: the item fails rather than running
    /// the session without the memory its agent was told about (§6.3 step 5).
    #[error(
        "the session has {0} memory store(s) but the work item carried no sessions token; the memory endpoints reject the environment key, so its memory cannot be mounted"
    )]
    NoSessionsToken(usize),
    #[error("memory: {0}")]
    Memory(#[from] hands_memory::MountError),
    /// A `memory_store` resource this worker cannot read (e.g. no `mount_path`): the agent was
    /// told about a store it would not get, so the item fails rather than run with amnesia.
    #[error(
        "memory store {store}: the session's memory_store resource is malformed ({reason}); it cannot be mounted"
    )]
    MalformedStore { store: String, reason: String },
}

/// The first `memory_store` resource that did not parse (kept raw as `Other` by the protocol),
/// with the store id it names (if any) and why it did not parse.
fn malformed_store(session: &Session) -> Option<(String, String)> {
    session.resources.iter().find_map(|r| match r {
        SessionResource::Other(v)
            if v.get("type").and_then(serde_json::Value::as_str) == Some("memory_store") =>
        {
            let store = v
                .get("memory_store_id")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("(no memory_store_id)")
                .to_owned();
            // Name the field: serde's message ("invalid type: null") does not.
            let reason = ["memory_store_id", "access", "mount_path"]
                .iter()
                .find(|f| !v.get(**f).is_some_and(serde_json::Value::is_string))
                .map(|f| format!("`{f}` is missing or not a string"))
                .or_else(|| {
                    MemoryStoreResource::deserialize(v)
                        .err()
                        .map(|e| e.to_string())
                })
                .unwrap_or_else(|| "unreadable".to_owned());
            Some((store, reason))
        }
        _ => None,
    })
}

/// Mounts the session's stores (unless memory is off) and builds the toolset with them as extra
/// roots, read-only ones refused to `write`/`edit` and bound read-only in tier 2.
pub async fn prepare(
    cp: &ControlPlane,
    credential: &Credential,
    config: &MemoryConfig,
    session: &Session,
    mut tool_config: ToolsetConfig,
) -> Result<(Toolset, Option<Arc<LiveMemory>>), PrepareError> {
    let resources: Vec<MemoryStoreResource> = session.memory_stores().cloned().collect();
    let malformed = malformed_store(session);
    if let Some((store, reason)) = malformed {
        if config.enabled {
            return Err(PrepareError::MalformedStore { store, reason });
        }
        tracing::warn!(memory_store_id = %store, %reason,
            "malformed memory_store resource ignored: memory is off (--memory off)");
    }
    let config = &for_tier(config, &tool_config.isolation);
    let mut memory = None;
    if !resources.is_empty() {
        if !config.enabled {
            tracing::warn!(
                stores = resources.len(),
                "memory is off (--memory off): the session runs without its memory stores"
            );
        } else if credential.kind() != CredentialKind::SessionsToken {
            return Err(PrepareError::NoSessionsToken(resources.len()));
        } else {
            let stores =
                SessionStores::mount(cp.clone(), credential.clone(), config.clone(), &resources)
                    .await?;
            if !stores.is_empty() {
                memory = Some(stores);
            }
        }
    }
    if let Some(stores) = &memory {
        tool_config.allowed_roots.extend(stores.roots());
        tool_config.read_only_roots.extend(stores.read_only_roots());
    }
    match Toolset::new(tool_config) {
        Ok(t) => Ok((t, memory.map(|m| Arc::new(LiveMemory::start(m))))),
        Err(e) => {
            if let Some(stores) = memory {
                stores.teardown(false, None).await;
            }
            Err(e.into())
        }
    }
}

/// `config` for tools running in `isolation`: only at tier 0 do file modes alone guard a
/// read-only store (tiers 1 and 2 enforce it themselves), so only there is a root worker's
/// warning about it due.
fn for_tier(config: &MemoryConfig, isolation: &hands_sandbox::Isolation) -> MemoryConfig {
    MemoryConfig {
        file_modes_only: isolation.tier() == hands_sandbox::Tier::None,
        ..config.clone()
    }
}

/// Appends the memory notes of a tool call to its result (conflicts the store won, writes to a
/// read-only store), so the agent learns that an edit of its did not stick.
pub fn with_notes(mut out: ToolOutput, notes: Vec<String>) -> ToolOutput {
    if notes.is_empty() {
        return out;
    }
    let mut text = String::from("[memory]");
    for n in notes {
        text.push_str("\n- ");
        text.push_str(&n);
    }
    out.content.push(ContentBlock::Text { text });
    out
}

/// When the memory teardown of a session served up to a hand-off point must be over: three
/// quarters of the deadline margin after that point. The session function gives result posts
/// the first half of its margin (`hand_off_post_budget`); the flush may use the next quarter
/// (and whatever the posts left), and the last quarter stays for the workspace save and the
/// continuation invoke.
pub fn flush_deadline(hand_off_at: Instant, post_budget: Duration) -> Instant {
    hand_off_at + post_budget + post_budget / 2
}

/// After the run (tool processes already gone): the final sync after a normal end (idle,
/// terminated, deleted, or a hand-off to a successor, which re-downloads), the push-only flush
/// in every case, then the folders are removed; all of it by `deadline` when one is given (see
/// [`flush_deadline`]).
pub async fn teardown(memory: Option<Arc<LiveMemory>>, end: &RunEnd, deadline: Option<Instant>) {
    let Some(memory) = memory else { return };
    let clean = !matches!(
        end,
        RunEnd::LeaseLost(_) | RunEnd::Stopped(_) | RunEnd::Shutdown | RunEnd::FeedFailed(_)
    );
    match Arc::try_unwrap(memory) {
        Ok(m) => {
            let report = m.teardown(clean, deadline).await;
            tracing::debug!(waits = ?report.waits, folders = ?report.folders, "memory teardown");
        }
        Err(_) => tracing::error!("memory stores still in use at teardown; not flushed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_appended_as_one_text_block() {
        let out = with_notes(ToolOutput::ok("done"), vec!["a".into(), "b".into()]);
        assert_eq!(out.content.len(), 2);
        assert!(
            matches!(&out.content[1], ContentBlock::Text { text } if text == "[memory]\n- a\n- b")
        );
        assert_eq!(with_notes(ToolOutput::ok("x"), vec![]).content.len(), 1);
    }

    #[test]
    fn only_tier_0_leaves_read_only_stores_to_file_modes() {
        use hands_sandbox::{BwrapSandbox, Isolation, Tier1Options, Tier1Sandbox, Tier2Options};
        let base = MemoryConfig::default();
        assert!(for_tier(&base, &Isolation::Tier0).file_modes_only);
        let tier1 = Isolation::Landlock(Tier1Sandbox::this_binary(Tier1Options::default()));
        let tier2 = Isolation::Bwrap(BwrapSandbox {
            program: "/usr/bin/bwrap".into(),
            options: Tier2Options::default(),
        });
        for isolation in [tier1, tier2] {
            let config = for_tier(&base, &isolation);
            assert!(!config.file_modes_only, "{:?}", isolation.tier());
            assert_eq!(config.sync_interval, base.sync_interval);
        }
    }
}
