//! Fault injection: switches that make devplane misbehave the ways the real control plane and
//! the network do, so a worker's recovery paths can be exercised on purpose. Set globally
//! (CLI flags, [`crate::Config::faults`]) and overridden per script while it runs.

use serde::{Deserialize, Serialize};

/// Which result posts a fault applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostKind {
    /// Any `POST /v1/sessions/{id}/events`.
    #[default]
    Any,
    /// Posts containing a `user.tool_result`.
    ToolResult,
    /// Posts containing a `user.custom_tool_result`.
    CustomToolResult,
}

/// Fail the first `count` posts of `kind` with `status` (5xx, or 429 with `retry_after_s`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailPosts {
    #[serde(default)]
    pub kind: PostKind,
    pub count: u32,
    #[serde(default = "default_fail_status")]
    pub status: u16,
    /// Sent as `retry-after` (seconds) when set; meaningful with 429/503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

fn default_fail_status() -> u16 {
    500
}

/// What happens after a result post has been committed, for the first `count` posts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetMode {
    /// Send the headers, then abort the body: the client sees a broken connection.
    #[default]
    Drop,
    /// Answer 500 although the result was stored.
    Error500,
    /// Answer 200 with a body that is not the echo (a proxy's error page, say), although the
    /// result was stored.
    GarbledOk,
}

/// Commit the result, then lose the answer (the worker cannot tell it was stored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetAfterCommit {
    pub count: u32,
    #[serde(default)]
    pub mode: ResetMode,
}

/// Answer `count` heartbeats, starting with the `from`-th (1-based), with `status` without
/// storing them: a control plane that is briefly down while the lease is still valid (C4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailHeartbeats {
    #[serde(default = "first")]
    pub from: u32,
    pub count: u32,
    #[serde(default = "default_heartbeat_fail_status")]
    pub status: u16,
}

fn first() -> u32 {
    1
}

fn default_heartbeat_fail_status() -> u16 {
    503
}

/// What an ack that lost the race finds (C1, C2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckLoss {
    /// Another worker acknowledged the item just before: 409, and the item stays theirs.
    #[default]
    Taken,
    /// The item was deleted just before: 404.
    Gone,
}

/// The first `count` acks lose a race they could not see.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckRace {
    pub count: u32,
    #[serde(default)]
    pub outcome: AckLoss,
}

/// Answer the first `count` memory writes (create, update, delete) with `status`, storing
/// nothing: a flush that meets a failing control plane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailMemoryWrites {
    pub count: u32,
    #[serde(default = "default_fail_status")]
    pub status: u16,
}

/// Answer the first `count` memory reads (list pages and single gets) with `status`: a download
/// or sync that meets a briefly failing or rate-limiting control plane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailMemoryReads {
    pub count: u32,
    #[serde(default = "default_fail_status")]
    pub status: u16,
    /// Sent as `retry-after` (seconds) when set; meaningful with 429/503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    /// Fail single-memory gets only (listing pages pass and are not counted): the read that
    /// checks whether a retried update landed, without breaking the listing before it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gets_only: bool,
}

/// Commit the first `count` memory writes (create, update), then lose the answer (`mode`): the
/// worker cannot tell the write landed, and its retry meets its own content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoseMemoryWriteAnswers {
    pub count: u32,
    #[serde(default)]
    pub mode: ResetMode,
}

/// The first `count` memory updates find the memory changed by another client just before
/// they arrive (its content replaced by `content`), so a `content_sha256` precondition taken
/// from an earlier listing fails with 409: the race between a worker's listing and its update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaceMemoryUpdates {
    pub count: u32,
    pub content: String,
}

/// What the current heartbeat must suffer, if anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeartbeatFault {
    /// Answer 412 as if another worker held the lease.
    Reject412,
    /// Answer this status without storing the heartbeat.
    Fail(u16),
    /// Store the heartbeat, then break the connection before the answer (C5).
    ResetAfterCommit,
}

/// All switches; every one is off by default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Close SSE connections after they delivered this many events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse_drop_after_events: Option<u32>,
    /// How many connections the drop applies to (default 1: the first one only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse_drop_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_posts: Option<FailPosts>,
    /// Answer the N-th heartbeat (1-based, counted over the server's life or the script's run)
    /// with 412, as if another worker held the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_412_at: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_after_commit: Option<ResetAfterCommit>,
    /// Delay every answer by this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_heartbeats: Option<FailHeartbeats>,
    /// Store the N-th heartbeat (1-based, counted like `heartbeat_412_at`), then lose its
    /// answer: the worker still holds the old `last_heartbeat`, so its next beat gets 412.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_reset_at: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_race: Option<AckRace>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_memory_writes: Option<FailMemoryWrites>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_memory_reads: Option<FailMemoryReads>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lose_memory_write_answers: Option<LoseMemoryWriteAnswers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub race_memory_updates: Option<RaceMemoryUpdates>,
    /// Delay every memory-store answer by this many milliseconds (the rest of the API keeps
    /// its pace): a slow memory service under a flush.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_memory_ms: Option<u64>,
}

impl Faults {
    /// `self` with every switch `over` sets taking precedence.
    pub fn merged(&self, over: &Faults) -> Faults {
        Faults {
            sse_drop_after_events: over.sse_drop_after_events.or(self.sse_drop_after_events),
            sse_drop_connections: over.sse_drop_connections.or(self.sse_drop_connections),
            fail_posts: over.fail_posts.clone().or_else(|| self.fail_posts.clone()),
            heartbeat_412_at: over.heartbeat_412_at.or(self.heartbeat_412_at),
            reset_after_commit: over
                .reset_after_commit
                .clone()
                .or_else(|| self.reset_after_commit.clone()),
            slow_ms: over.slow_ms.or(self.slow_ms),
            fail_heartbeats: over
                .fail_heartbeats
                .clone()
                .or_else(|| self.fail_heartbeats.clone()),
            heartbeat_reset_at: over.heartbeat_reset_at.or(self.heartbeat_reset_at),
            ack_race: over.ack_race.clone().or_else(|| self.ack_race.clone()),
            fail_memory_writes: over
                .fail_memory_writes
                .clone()
                .or_else(|| self.fail_memory_writes.clone()),
            fail_memory_reads: over
                .fail_memory_reads
                .clone()
                .or_else(|| self.fail_memory_reads.clone()),
            lose_memory_write_answers: over
                .lose_memory_write_answers
                .clone()
                .or_else(|| self.lose_memory_write_answers.clone()),
            race_memory_updates: over
                .race_memory_updates
                .clone()
                .or_else(|| self.race_memory_updates.clone()),
            slow_memory_ms: over.slow_memory_ms.or(self.slow_memory_ms),
        }
    }
}

/// The live fault switches plus the counters that decide when a "first K" fault is used up.
#[derive(Debug, Default)]
pub struct FaultState {
    pub faults: Faults,
    pub sse_connections_dropped: u32,
    pub posts_failed: u32,
    pub heartbeats_seen: u32,
    pub resets_done: u32,
    pub acks_raced: u32,
    pub memory_writes_failed: u32,
    pub memory_reads_failed: u32,
    pub memory_answers_lost: u32,
    pub memory_updates_raced: u32,
}

impl FaultState {
    pub fn new(faults: Faults) -> Self {
        FaultState {
            faults,
            ..Default::default()
        }
    }

    /// Installs a new set of switches and restarts their counters.
    pub fn replace(&mut self, faults: Faults) {
        *self = FaultState::new(faults);
    }

    /// For a new SSE connection: after how many events it must be dropped, if at all.
    pub fn sse_drop_for_new_connection(&mut self) -> Option<u32> {
        let after = self.faults.sse_drop_after_events?;
        let budget = self.faults.sse_drop_connections.unwrap_or(1);
        if self.sse_connections_dropped >= budget {
            return None;
        }
        self.sse_connections_dropped += 1;
        Some(after)
    }

    /// For a result post: the injected failure to answer instead, if any.
    pub fn fail_post(
        &mut self,
        has_tool_result: bool,
        has_custom_result: bool,
    ) -> Option<FailPosts> {
        let f = self.faults.fail_posts.clone()?;
        let applies = match f.kind {
            PostKind::Any => true,
            PostKind::ToolResult => has_tool_result,
            PostKind::CustomToolResult => has_custom_result,
        };
        if !applies || self.posts_failed >= f.count {
            return None;
        }
        self.posts_failed += 1;
        Some(f)
    }

    /// Counts a heartbeat; true when this one must be answered 412.
    pub fn heartbeat_412(&mut self) -> bool {
        self.heartbeat_fault() == Some(HeartbeatFault::Reject412)
    }

    /// Counts a heartbeat and says which fault, if any, applies to it.
    pub fn heartbeat_fault(&mut self) -> Option<HeartbeatFault> {
        self.heartbeats_seen += 1;
        let n = self.heartbeats_seen;
        if self.faults.heartbeat_412_at == Some(n) {
            return Some(HeartbeatFault::Reject412);
        }
        if let Some(f) = &self.faults.fail_heartbeats
            && n >= f.from
            && n - f.from < f.count
        {
            return Some(HeartbeatFault::Fail(f.status));
        }
        if self.faults.heartbeat_reset_at == Some(n) {
            return Some(HeartbeatFault::ResetAfterCommit);
        }
        None
    }

    /// For an ack: the race it must lose, if any.
    pub fn ack_race(&mut self) -> Option<AckLoss> {
        let r = self.faults.ack_race.clone()?;
        if self.acks_raced >= r.count {
            return None;
        }
        self.acks_raced += 1;
        Some(r.outcome)
    }

    /// For a memory write: the status to fail it with, if one is due.
    pub fn fail_memory_write(&mut self) -> Option<u16> {
        let f = self.faults.fail_memory_writes.clone()?;
        if self.memory_writes_failed >= f.count {
            return None;
        }
        self.memory_writes_failed += 1;
        Some(f.status)
    }

    /// For a memory read: the failure to answer it with, if one is due.
    pub fn fail_memory_read(&mut self, is_get: bool) -> Option<FailMemoryReads> {
        let f = self.faults.fail_memory_reads.clone()?;
        if (f.gets_only && !is_get) || self.memory_reads_failed >= f.count {
            return None;
        }
        self.memory_reads_failed += 1;
        Some(f)
    }

    /// For a committed memory write: how to lose its answer, if at all.
    pub fn lose_memory_write_answer(&mut self) -> Option<ResetMode> {
        let f = self.faults.lose_memory_write_answers.clone()?;
        if self.memory_answers_lost >= f.count {
            return None;
        }
        self.memory_answers_lost += 1;
        Some(f.mode)
    }

    /// For a memory update: the content another client writes just before it, if due.
    pub fn race_memory_update(&mut self) -> Option<String> {
        let f = self.faults.race_memory_updates.clone()?;
        if self.memory_updates_raced >= f.count {
            return None;
        }
        self.memory_updates_raced += 1;
        Some(f.content)
    }

    /// For a committed result post: how to lose the answer, if at all.
    pub fn reset_after_commit(&mut self) -> Option<ResetMode> {
        let r = self.faults.reset_after_commit.clone()?;
        if self.resets_done >= r.count {
            return None;
        }
        self.resets_done += 1;
        Some(r.mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_k_faults_run_out() {
        let mut s = FaultState::new(Faults {
            fail_posts: Some(FailPosts {
                kind: PostKind::CustomToolResult,
                count: 2,
                status: 503,
                retry_after_s: None,
            }),
            heartbeat_412_at: Some(2),
            sse_drop_after_events: Some(3),
            ..Faults::default()
        });
        assert!(s.fail_post(true, false).is_none(), "kind filter");
        assert!(s.fail_post(false, true).is_some());
        assert!(s.fail_post(false, true).is_some());
        assert!(s.fail_post(false, true).is_none());
        assert!(!s.heartbeat_412());
        assert!(s.heartbeat_412());
        assert!(!s.heartbeat_412());
        assert_eq!(s.sse_drop_for_new_connection(), Some(3));
        assert_eq!(s.sse_drop_for_new_connection(), None);
    }

    #[test]
    fn heartbeat_and_ack_faults_hit_the_counted_calls() {
        let mut s = FaultState::new(Faults {
            fail_heartbeats: Some(FailHeartbeats {
                from: 2,
                count: 2,
                status: 502,
            }),
            heartbeat_reset_at: Some(5),
            ack_race: Some(AckRace {
                count: 1,
                outcome: AckLoss::Gone,
            }),
            ..Faults::default()
        });
        let seen: Vec<_> = (0..6).map(|_| s.heartbeat_fault()).collect();
        assert_eq!(
            seen,
            [
                None,
                Some(HeartbeatFault::Fail(502)),
                Some(HeartbeatFault::Fail(502)),
                None,
                Some(HeartbeatFault::ResetAfterCommit),
                None
            ]
        );
        assert_eq!(s.ack_race(), Some(AckLoss::Gone));
        assert_eq!(s.ack_race(), None);
        let f: Faults = serde_json::from_str(
            r#"{"fail_heartbeats":{"count":1},"ack_race":{"count":2},"heartbeat_reset_at":3}"#,
        )
        .unwrap();
        assert_eq!(
            f.fail_heartbeats,
            Some(FailHeartbeats {
                from: 1,
                count: 1,
                status: 503
            })
        );
        assert_eq!(f.ack_race.map(|r| r.outcome), Some(AckLoss::Taken));
    }

    #[test]
    fn merge_prefers_override_and_json_rejects_unknown_switches() {
        let base = Faults {
            slow_ms: Some(5),
            heartbeat_412_at: Some(1),
            ..Faults::default()
        };
        let over = Faults {
            slow_ms: Some(9),
            ..Faults::default()
        };
        let m = base.merged(&over);
        assert_eq!((m.slow_ms, m.heartbeat_412_at), (Some(9), Some(1)));
        assert!(serde_json::from_str::<Faults>(r#"{"sse_drop":1}"#).is_err());
    }
}
