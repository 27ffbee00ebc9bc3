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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// Everything learned from the events so far.
#[derive(Debug, Default)]
pub struct Ledger {
    seen_events: HashSet<String>,
    /// Calls in the order they were first seen, not yet answered.
    pending: Vec<Pending>,
    /// Tool-use ids that have a result (from this worker or any other client).
    answered: HashSet<String>,
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
            }
            UserCustomToolResult(e) => {
                self.idle_turn = false;
                self.settle(&e.custom_tool_use_id);
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

    /// Every tool-use id known to have a result.
    pub fn answered_ids(&self) -> impl Iterator<Item = &str> {
        self.answered.iter().map(String::as_str)
    }

    /// Seeds ids answered in an earlier invocation (a Lambda continuation): they never run
    /// again even if the history listing lags behind.
    pub fn seed_answered(&mut self, ids: impl IntoIterator<Item = String>) {
        for id in ids {
            self.settle(&id);
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
