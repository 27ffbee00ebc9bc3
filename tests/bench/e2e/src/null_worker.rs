//! The floor of a round trip: a worker that executes nothing (`hands-e2e-bench null-worker`).
//!
//! It claims work and attaches to the session's event stream with `hands-client`, as `hands`
//! does, and answers every `agent.tool_use` at once with a fixed text result: no tool, no
//! ledger, no lease upkeep, one task per session on a single-threaded runtime. What is left of
//! a round trip is what every worker pays on this machine: devplane emitting the event, the
//! loopback stream and the result's POST, devplane storing it, and waking the two CPUs. The
//! benchmark runs it pinned like the real workers and plays the trace without its
//! expectations (a fixed text cannot contain them), so "hands − floor" is hands' own share.
//! Not a worker to deploy: it never heartbeats and answers every call with a lie.

use std::time::Duration;

use anyhow::Context;
use hands_client::{ClientConfig, ControlPlane, Credential, PollOptions};
use hands_protocol::events::{SessionEvent, ToolResultEvent};
use hands_protocol::secret::decode_sessions_token;
use hands_protocol::toolset::ContentBlock;
use hands_protocol::work::WorkItem;

/// Serves up to `max_sessions` items at once until killed.
pub async fn run(max_sessions: usize) -> anyhow::Result<()> {
    let var = |k: &str| std::env::var(k).with_context(|| format!("{k} is not set"));
    let cp = ControlPlane::new(ClientConfig::with_base_url(var("ANTHROPIC_BASE_URL")?))?;
    let env_id = var("ANTHROPIC_ENVIRONMENT_ID")?;
    let key = Credential::environment_key(var("ANTHROPIC_ENVIRONMENT_KEY")?);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(max_sessions.max(1)));
    let opts = PollOptions {
        block_ms: Some(999),
        ..PollOptions::default()
    };
    loop {
        let permit = slots.clone().acquire_owned().await?;
        let item = match cp.poll(&key, &env_id, &opts).await {
            Ok(Some(item)) => item,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("null worker: poll failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (cp, key, env_id) = (cp.clone(), key.clone(), env_id.clone());
        tokio::spawn(async move {
            if let Err(e) = serve(&cp, &key, &env_id, &item).await {
                eprintln!("null worker: item {}: {e:#}", item.id);
            }
            drop(permit);
        });
    }
}

/// Answers every tool use of the item's session until it goes idle, then stops the item.
async fn serve(
    cp: &ControlPlane,
    key: &Credential,
    env_id: &str,
    item: &WorkItem,
) -> anyhow::Result<()> {
    // The queue's calls take the environment key; the session's, the item's sessions token.
    cp.ack(key, env_id, &item.id).await?;
    let credential = item
        .secret
        .as_deref()
        .and_then(decode_sessions_token)
        .map_or_else(|| key.clone(), |t| Credential::sessions_token(&t));
    if item.data.kind == "session" {
        let session = &item.data.id;
        let mut stream = cp.stream_events(&credential, session).await?;
        while let Some(event) = stream.next().await {
            match event? {
                SessionEvent::AgentToolUse(call) => {
                    let result = SessionEvent::UserToolResult(ToolResultEvent {
                        id: None,
                        tool_use_id: call.id,
                        is_error: false,
                        content: vec![ContentBlock::Text {
                            text: "ok".to_owned(),
                        }],
                        processed_at: None,
                    });
                    cp.send_events(&credential, session, &[result]).await?;
                }
                SessionEvent::StatusIdle(_)
                | SessionEvent::StatusTerminated(_)
                | SessionEvent::Deleted(_) => break,
                _ => {}
            }
        }
    }
    cp.stop(key, env_id, &item.id, false).await?;
    Ok(())
}
