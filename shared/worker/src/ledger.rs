//! The dispatch ledger: what the session's events say should run next (PROTOCOL.md §7.5, §7.7).
//!
//! Pure state, no I/O: the runner feeds it every event from the stream and the history (in any
//! order, with duplicates) and asks for the next call to execute. It must never hand out a call
//! twice, a call someone already answered, a denied call, an `ask` call without an `allow`
//! confirmation, a call of a terminated thread, or a call of a tool this worker does not own.

use std::collections::{HashMap, HashSet};

use hands_protocol::events::{Permission, SessionEvent, stop_reasons};
use serde_json::Value;

/// Built-in toolset call or custom tool call: they are answered with different event types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    Builtin,
    Custom,
}

/// A tool call the worker should execute.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub id: String,
    pub kind: CallKind,
    pub name: String,
    pub input: Value,
}

#[derive(Clone, Debug)]
struct Pending {
    call: Call,
    permission: Permission,
    thread: Option<String>,
}

/// Why the session should end, from its own events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    Terminated,
    Deleted,
}

/// A continuation always carries the newest this many answered ids, even those whose result
/// event was seen: the stream can be ahead of the history listing the successor reads, so a
/// result seen as an event seconds before the hand-off may not be listed yet, and its call
/// would run again. Within the carried bound (`MAX_CARRIED_ANSWERED`).
pub const ALWAYS_CARRIED: usize = 32;

/// Everything learned from the events so far.
#[derive(Debug, Default)]
pub struct Ledger {
    seen_events: HashSet<String>,
    /// Calls in the order they were first seen, not yet answered.
    pending: Vec<Pending>,
    /// Tool-use ids that have a result (from this worker or any other client).
    answered: HashSet<String>,
    /// Ids answered by this worker (or seeded by a predecessor) whose result event has not been
    /// seen in the stream or the history yet, oldest first. Only these need to travel in a
    /// continuation: a result seen as an event is in the session's history, where every
    /// successor reads it again.
    unconfirmed: Vec<String>,
    /// The newest ids answered here (or seeded), oldest first, at most [`ALWAYS_CARRIED`],
    /// whether or not their result event was seen: carried as a hedge (see
    /// [`Ledger::carry_over_answered`]).
    recent: std::collections::VecDeque<String>,
    /// Ids whose result event was seen (an echo can arrive before our post's answer).
    result_events: HashSet<String>,
    /// Ids handed out by [`Ledger::next_call`] and not yet settled.
    in_flight: HashSet<String>,
    /// `tool_use_id` -> allowed?
    confirmations: HashMap<String, bool>,
    terminated_threads: HashSet<String>,
    /// The latest non-neutral event was an idle that lets the worker go (§7.7).
    idle_turn: bool,
    end: Option<SessionEnd>,
}

impl Ledger {
    pub fn new() -> Self {
        Ledger::default()
    }

    /// Learns from one event. Idempotent: an event seen before (same id) changes nothing.
    pub fn observe(&mut self, event: &SessionEvent) {
        if let Some(id) = event.id()
            && !self.seen_events.insert(id.to_owned())
        {
            return;
        }
        use SessionEvent::*;
        match event {
            AgentToolUse(e) => {
                self.idle_turn = false;
                self.add(Pending {
                    call: Call {
                        id: e.id.clone(),
                        kind: CallKind::Builtin,
                        name: e.name.clone(),
                        input: e.input.clone(),
                    },
                    permission: e.permission(),
                    thread: e.session_thread_id.clone(),
                });
            }
            AgentCustomToolUse(e) => {
                self.idle_turn = false;
                self.add(Pending {
                    call: Call {
                        id: e.id.clone(),
                        kind: CallKind::Custom,
                        name: e.name.clone(),
                        input: e.input.clone(),
                    },
                    // Custom tools have no permission gate today (§7.5).
                    permission: Permission::Allow,
                    thread: e.session_thread_id.clone(),
                });
            }
            UserToolResult(e) => {
                self.idle_turn = false;
                self.settle(&e.tool_use_id);
                self.confirm(&e.tool_use_id);
            }
            UserCustomToolResult(e) => {
                self.idle_turn = false;
                self.settle(&e.custom_tool_use_id);
                self.confirm(&e.custom_tool_use_id);
            }
            // Neutral events: they do not disarm the idle timer (§7.7).
            UserToolConfirmation(e) => {
                self.confirmations.insert(e.tool_use_id.clone(), e.allows());
            }
            ThreadStatusTerminated(e) => {
                self.terminated_threads.insert(e.session_thread_id.clone());
            }
            StatusIdle(e) => {
                self.idle_turn = e.stop_reason.kind != stop_reasons::REQUIRES_ACTION;
            }
            StatusTerminated(_) => self.end = Some(SessionEnd::Terminated),
            Deleted(_) => self.end = Some(SessionEnd::Deleted),
            UserMessage(_)
            | StatusRunning(_)
            | StatusRescheduled(_)
            | ThreadStatusRunning(_)
            | ThreadStatusIdle(_)
            | ThreadStatusRescheduled(_)
            | Other(_) => self.idle_turn = false,
        }
    }

    fn add(&mut self, p: Pending) {
        if self.answered.contains(&p.call.id) || self.pending.iter().any(|q| q.call.id == p.call.id)
        {
            return;
        }
        self.pending.push(p);
    }

    fn settle(&mut self, tool_use_id: &str) {
        self.answered.insert(tool_use_id.to_owned());
        self.pending.retain(|p| p.call.id != tool_use_id);
    }

    /// The result of `tool_use_id` is in the session's event log.
    fn confirm(&mut self, tool_use_id: &str) {
        self.result_events.insert(tool_use_id.to_owned());
        self.unconfirmed.retain(|id| id != tool_use_id);
    }

    /// Remembers an id answered here or seeded: among the newest (`recent`), and without its
    /// result event seen yet (see `unconfirmed`).
    fn unconfirmed_push(&mut self, tool_use_id: &str) {
        if !self.recent.iter().any(|id| id == tool_use_id) {
            if self.recent.len() == ALWAYS_CARRIED {
                self.recent.pop_front();
            }
            self.recent.push_back(tool_use_id.to_owned());
        }
        if !self.result_events.contains(tool_use_id)
            && !self.unconfirmed.iter().any(|id| id == tool_use_id)
        {
            self.unconfirmed.push(tool_use_id.to_owned());
        }
    }

    /// The next call to execute, in event order, among those this worker `owns`. The call is
    /// marked in flight until [`Ledger::answered`] or [`Ledger::release`].
    pub fn next_call(&mut self, owns: impl Fn(CallKind, &str) -> bool) -> Option<Call> {
        let call = self
            .pending
            .iter()
            .find(|p| self.runnable(p) && owns(p.call.kind, &p.call.name))
            .map(|p| p.call.clone())?;
        self.in_flight.insert(call.id.clone());
        Some(call)
    }

    fn runnable(&self, p: &Pending) -> bool {
        if self.in_flight.contains(&p.call.id) {
            return false;
        }
        if p.thread
            .as_ref()
            .is_some_and(|t| self.terminated_threads.contains(t))
        {
            return false;
        }
        match p.permission {
            Permission::Allow => true,
            Permission::Deny => false,
            Permission::Ask => self.confirmations.get(&p.call.id) == Some(&true),
        }
    }

    /// A result for `id` was accepted by the control plane: it never runs again.
    pub fn answered(&mut self, id: &str) {
        self.in_flight.remove(id);
        self.settle(id);
        self.unconfirmed_push(id);
    }

    /// The call was not answered (its post failed or was abandoned); a later pass may retry it.
    pub fn release(&mut self, id: &str) {
        self.in_flight.remove(id);
    }

    /// Whether any call this worker owns still waits for a result or a confirmation.
    pub fn has_outstanding(&self, owns: impl Fn(CallKind, &str) -> bool) -> bool {
        self.pending.iter().any(|p| {
            owns(p.call.kind, &p.call.name)
                && p.permission != Permission::Deny
                && self.confirmations.get(&p.call.id) != Some(&false)
                && !p
                    .thread
                    .as_ref()
                    .is_some_and(|t| self.terminated_threads.contains(t))
        })
    }

    /// The idle timer may run: the turn ended (not for `requires_action`) and nothing owned is
    /// outstanding (§7.7).
    pub fn idle_armed(&self, owns: impl Fn(CallKind, &str) -> bool) -> bool {
        self.idle_turn && !self.has_outstanding(owns)
    }

    /// Set once the session was terminated or deleted.
    pub fn end(&self) -> Option<SessionEnd> {
        self.end
    }

    /// Whether `id` is known to have a result.
    pub fn is_answered(&self, id: &str) -> bool {
        self.answered.contains(id)
    }

    /// Every tool-use id known to have a result.
    pub fn answered_ids(&self) -> impl Iterator<Item = &str> {
        self.answered.iter().map(String::as_str)
    }

    /// What a continuation must carry so that nothing runs twice: the ids answered here (or
    /// seeded) whose result event has not been seen yet, newest `max` of them, oldest first.
    /// Every other answered id has its result in the session's history, which the successor
    /// reads before it runs anything; as a hedge against a history listing behind the stream,
    /// the newest [`ALWAYS_CARRIED`] answered ids come too (first), in what room `max` leaves.
    /// The second value counts the unconfirmed ids left out by `max`.
    pub fn carry_over_answered(&self, max: usize) -> (Vec<String>, usize) {
        let skip = self.unconfirmed.len().saturating_sub(max);
        let must = &self.unconfirmed[skip..];
        let room = max - must.len();
        let hedge: Vec<&String> = self.recent.iter().filter(|id| !must.contains(id)).collect();
        let mut carried: Vec<String> = hedge[hedge.len().saturating_sub(room)..]
            .iter()
            .map(|id| (*id).clone())
            .collect();
        carried.extend(must.iter().cloned());
        (carried, skip)
    }

    /// Seeds ids answered in an earlier invocation (a Lambda continuation): they never run
    /// again even if the history listing lags behind.
    pub fn seed_answered(&mut self, ids: impl IntoIterator<Item = String>) {
        for id in ids {
            self.settle(&id);
            self.unconfirmed_push(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(v: Value) -> SessionEvent {
        SessionEvent::from_value(v)
    }

    fn tool_use(id: &str, name: &str, extra: Value) -> SessionEvent {
        let mut v = json!({"type":"agent.tool_use","id":id,"name":name,"input":{"command":"x"}});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        ev(v)
    }

    fn builtin_only(kind: CallKind, name: &str) -> bool {
        kind == CallKind::Builtin && ["bash", "read"].contains(&name)
    }

    fn drain(l: &mut Ledger) -> Vec<String> {
        let mut out = vec![];
        while let Some(c) = l.next_call(builtin_only) {
            l.answered(&c.id);
            out.push(c.id);
        }
        out
    }

    #[test]
    fn calls_run_once_in_order_and_duplicates_are_ignored() {
        let mut l = Ledger::new();
        for e in [
            tool_use("a", "bash", json!({})),
            tool_use("b", "read", json!({})),
        ] {
            l.observe(&e);
            l.observe(&e); // stream and history both deliver it
        }
        let first = l.next_call(builtin_only).unwrap();
        assert_eq!(first.id, "a");
        // In flight: not handed out again; the next one is.
        assert_eq!(l.next_call(builtin_only).unwrap().id, "b");
        assert_eq!(l.next_call(builtin_only), None);
        l.answered("a");
        l.answered("b");
        l.observe(&tool_use("a", "bash", json!({})));
        assert_eq!(l.next_call(builtin_only), None);
    }

    #[test]
    fn results_from_elsewhere_settle_calls() {
        let mut l = Ledger::new();
        l.observe(&tool_use("a", "bash", json!({})));
        l.observe(&ev(
            json!({"type":"user.tool_result","id":"r1","tool_use_id":"a","content":[]}),
        ));
        assert_eq!(drain(&mut l), Vec::<String>::new());
        // A result seen before its call (history order quirks) also prevents execution.
        l.observe(&ev(
            json!({"type":"user.tool_result","id":"r2","tool_use_id":"z","content":[]}),
        ));
        l.observe(&tool_use("z", "bash", json!({})));
        assert_eq!(drain(&mut l), Vec::<String>::new());
    }

    #[test]
    fn permission_gate() {
        let mut l = Ledger::new();
        l.observe(&tool_use(
            "deny",
            "bash",
            json!({"evaluated_permission":"deny"}),
        ));
        l.observe(&tool_use(
            "ask",
            "bash",
            json!({"evaluated_permission":"ask"}),
        ));
        l.observe(&tool_use(
            "odd",
            "bash",
            json!({"evaluated_permission":"maybe"}),
        ));
        l.observe(&tool_use(
            "ask2",
            "bash",
            json!({"evaluated_permission":"ask"}),
        ));
        assert_eq!(drain(&mut l), Vec::<String>::new());
        l.observe(&ev(
            json!({"type":"user.tool_confirmation","id":"c1","tool_use_id":"ask","result":"allow"}),
        ));
        l.observe(&ev(
            json!({"type":"user.tool_confirmation","id":"c2","tool_use_id":"ask2","result":"deny"}),
        ));
        l.observe(&ev(json!({"type":"user.tool_confirmation","id":"c3","tool_use_id":"odd","result":"whatever"})));
        assert_eq!(drain(&mut l), vec!["ask".to_owned()]);
    }

    #[test]
    fn unowned_tools_and_terminated_threads_never_run() {
        let mut l = Ledger::new();
        l.observe(&tool_use("repl", "repl", json!({})));
        l.observe(&ev(
            json!({"type":"agent.custom_tool_use","id":"cu","name":"lookup","input":{}}),
        ));
        l.observe(&tool_use("t", "bash", json!({"session_thread_id":"th_1"})));
        l.observe(&ev(
            json!({"type":"session.thread_status_terminated","id":"e9","session_thread_id":"th_1"}),
        ));
        assert_eq!(drain(&mut l), Vec::<String>::new());
        // Unowned calls do not hold the idle timer back; they belong to someone else.
        l.observe(&ev(
            json!({"type":"session.status_idle","id":"i1","stop_reason":{"type":"end_turn"}}),
        ));
        assert!(l.idle_armed(builtin_only));
    }

    #[test]
    fn idle_arming_follows_the_reference() {
        let mut l = Ledger::new();
        let idle = |id: &str, reason: &str| {
            ev(json!({"type":"session.status_idle","id":id,"stop_reason":{"type":reason}}))
        };
        l.observe(&idle("i1", "requires_action"));
        assert!(!l.idle_armed(builtin_only));
        l.observe(&idle("i2", "end_turn"));
        assert!(l.idle_armed(builtin_only));
        // Neutral events keep it armed...
        l.observe(&ev(
            json!({"type":"user.tool_confirmation","id":"c","tool_use_id":"x","result":"allow"}),
        ));
        l.observe(&ev(
            json!({"type":"session.thread_status_terminated","id":"t","session_thread_id":"th"}),
        ));
        assert!(l.idle_armed(builtin_only));
        // ...anything else disarms it.
        l.observe(&ev(json!({"type":"session.status_running","id":"r"})));
        assert!(!l.idle_armed(builtin_only));
        l.observe(&idle("i3", "retries_exhausted"));
        assert!(l.idle_armed(builtin_only));
        // An owned call still waiting keeps the worker around.
        l.observe(&tool_use(
            "q",
            "bash",
            json!({"evaluated_permission":"ask"}),
        ));
        l.observe(&idle("i4", "end_turn"));
        assert!(!l.idle_armed(builtin_only));
    }

    fn result(id: &str, tool_use_id: &str) -> SessionEvent {
        ev(json!({"type":"user.tool_result","id":id,"tool_use_id":tool_use_id,"content":[]}))
    }

    #[test]
    fn a_long_session_carries_only_the_answers_not_yet_seen_as_events() {
        let mut l = Ledger::new();
        // 10,000 calls answered by us; the result event of each is seen (the stream echoes
        // it, or the history lists it), sometimes before our post's answer came back.
        for i in 0..10_000 {
            let id = format!("call_{i}");
            l.observe(&tool_use(&id, "bash", json!({})));
            let c = l.next_call(builtin_only).unwrap();
            if i % 2 == 0 {
                l.answered(&c.id);
                l.observe(&result(&format!("r_{i}"), &id));
            } else {
                l.observe(&result(&format!("r_{i}"), &id));
                l.answered(&c.id);
            }
        }
        // The last two were posted but their events are not seen yet.
        for i in 10_000..10_002 {
            let id = format!("call_{i}");
            l.observe(&tool_use(&id, "bash", json!({})));
            let c = l.next_call(builtin_only).unwrap();
            l.answered(&c.id);
        }
        // The two unconfirmed ones, and as a hedge the 30 newest before them (seen as
        // events, maybe not listed by the history yet).
        let (carried, left_out) = l.carry_over_answered(64);
        let expected: Vec<String> = (10_002 - ALWAYS_CARRIED..10_002)
            .map(|i| format!("call_{i}"))
            .collect();
        assert_eq!(carried, expected);
        assert_eq!(left_out, 0);
        assert_eq!(l.answered_ids().count(), 10_002);
        // With little room, the unconfirmed ones come first and the hedge takes the rest.
        assert_eq!(
            l.carry_over_answered(3).0,
            vec!["call_9999", "call_10000", "call_10001"]
        );
        assert_eq!(l.carry_over_answered(1), (vec!["call_10001".to_owned()], 1));

        // A successor seeded with them never runs them (even one its history lists already),
        // and carries on the newest of them.
        let mut next = Ledger::new();
        next.seed_answered(carried.clone());
        next.observe(&tool_use("call_10000", "bash", json!({})));
        next.observe(&tool_use("call_10001", "bash", json!({})));
        next.observe(&tool_use("call_9990", "bash", json!({})));
        assert_eq!(next.next_call(builtin_only), None);
        assert_eq!(next.carry_over_answered(64).0, carried);
        // Its result seen, an id still travels while it is among the newest.
        next.observe(&result("r_10000", "call_10000"));
        let mut again = next.carry_over_answered(64).0;
        again.sort();
        let mut sorted = carried.clone();
        sorted.sort();
        assert_eq!(again, sorted);

        // Answered and seen as events: only the newest ALWAYS_CARRIED travel.
        let mut seen = Ledger::new();
        for i in 0..40 {
            let id = format!("seen_{i}");
            seen.observe(&tool_use(&id, "bash", json!({})));
            let c = seen.next_call(builtin_only).unwrap();
            seen.answered(&c.id);
            seen.observe(&result(&format!("rs_{i}"), &id));
        }
        let expected: Vec<String> = (40 - ALWAYS_CARRIED..40)
            .map(|i| format!("seen_{i}"))
            .collect();
        assert_eq!(seen.carry_over_answered(64), (expected, 0));

        // With no events seen at all, the bound keeps the newest ids and counts the rest.
        let mut blind = Ledger::new();
        blind.seed_answered((0..100).map(|i| format!("s_{i}")));
        let (carried, left_out) = blind.carry_over_answered(10);
        assert_eq!(carried.len(), 10);
        assert_eq!(carried[0], "s_90");
        assert_eq!(left_out, 90);
    }

    #[test]
    fn termination_and_released_calls() {
        let mut l = Ledger::new();
        l.observe(&tool_use("a", "bash", json!({})));
        let c = l.next_call(builtin_only).unwrap();
        l.release(&c.id);
        assert_eq!(l.next_call(builtin_only).unwrap().id, "a");
        l.observe(&ev(json!({"type":"session.status_terminated","id":"t"})));
        assert_eq!(l.end(), Some(SessionEnd::Terminated));
        let mut l = Ledger::new();
        l.seed_answered(["x".to_owned()]);
        l.observe(&tool_use("x", "bash", json!({})));
        assert_eq!(l.next_call(builtin_only), None);
    }
}
