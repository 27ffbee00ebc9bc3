//! The scripted agent (PROTOCOL.md §12.7): plays a [`Script`] against one session the way the
//! real agent loop would from the worker's point of view, and checks every answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hands_protocol::events::types;
use hands_protocol::work::WorkState;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::report::{ScriptReport, StepReport};
use crate::script::{Expect, Script, Step};
use crate::sessions;
use crate::state::AppState;

/// How often state is re-read while waiting for something that is not an event.
const RECHECK: Duration = Duration::from_millis(20);

/// A call whose result is checked later (an `ask` call, checked by its `confirm` step).
struct Deferred {
    step_index: usize,
    event_id: String,
    expect: Expect,
    timeout_ms: Option<u64>,
}

struct Run<'a> {
    st: &'a AppState,
    script: &'a Script,
    session: String,
    labels: HashMap<String, String>,
    deferred: HashMap<String, Deferred>,
    steps: Vec<StepReport>,
}

/// Runs `script` on a new session and reports.
pub async fn run(st: &AppState, script: &Script) -> ScriptReport {
    crate::memory::seed(st, &script.memories);
    let base = st.config.faults.clone();
    if let Some(f) = &script.faults {
        st.lock().faults.replace(base.merged(f));
    }
    let mut report = play(st, script).await;
    // The stores the session attached, as they ended (the worker's final flush comes before
    // its force-stop, which the scripts wait for).
    report.memory_stores = crate::memory::snapshot(st, &script.session.resources);
    if script.faults.is_some() {
        st.lock().faults.replace(base);
    }
    report
}

async fn play(st: &AppState, script: &Script) -> ScriptReport {
    let mut report = ScriptReport {
        name: script.name.clone(),
        passed: false,
        session_id: None,
        work_id: None,
        steps: Vec::new(),
        rejected_posts: 0,
        result_attempts: Default::default(),
        memory_stores: Default::default(),
    };
    let created = Instant::now();
    let session = match sessions::create_session(st, &script.session) {
        Ok(s) => s,
        Err(e) => {
            report.steps.push(step_report(
                0,
                "create_session",
                None,
                None,
                false,
                e.to_string(),
                None,
            ));
            return report;
        }
    };
    let work_id = st
        .lock()
        .sessions
        .get(&session)
        .and_then(|s| s.current_work.clone());
    report.session_id = Some(session.clone());
    report.work_id = work_id.clone();
    let rejected_before = st.lock().counters.rejected_posts;

    let mut run = Run {
        st,
        script,
        session: session.clone(),
        labels: HashMap::new(),
        deferred: HashMap::new(),
        steps: Vec::new(),
    };
    // The real agent starts running when the session gets its first message.
    let _ = sessions::emit(st, &session, json!({"type": types::SESSION_STATUS_RUNNING}));
    let attached = run.wait_for_worker().await;
    run.steps.push(attached);
    if run.steps.iter().all(|s| s.passed) {
        for (i, step) in script.steps.iter().enumerate() {
            let begun = Instant::now();
            let mut r = run.step(i + 1, step, work_id.as_deref()).await;
            r.at_us = Some(begun.saturating_duration_since(created).as_micros() as u64);
            run.steps.push(r);
        }
        for (label, d) in run.deferred.drain() {
            if let Some(r) = run.steps.get_mut(d.step_index) {
                r.passed = false;
                r.detail = format!("ask call {label} was never confirmed by the script");
            }
        }
    }
    report.passed = run.steps.iter().all(|s| s.passed);
    report.steps = run.steps;
    let store = st.lock();
    report.rejected_posts = store.counters.rejected_posts - rejected_before;
    if let Some(s) = store.sessions.get(&session) {
        report.result_attempts = s
            .calls
            .keys()
            .map(|id| {
                (
                    id.clone(),
                    store
                        .counters
                        .result_attempts_by_tool_use
                        .get(id)
                        .copied()
                        .unwrap_or(0),
                )
            })
            .collect();
    }
    report
}

fn step_report(
    index: usize,
    step: &str,
    label: Option<String>,
    event_id: Option<String>,
    passed: bool,
    detail: String,
    latency_ms: Option<u64>,
) -> StepReport {
    StepReport {
        index,
        step: step.to_owned(),
        label,
        event_id,
        passed,
        detail,
        latency_ms,
        latency_us: None,
        at_us: None,
    }
}

/// Text of a result event: its text blocks joined by newlines.
fn result_text(ev: &Value) -> String {
    ev.get("content")
        .and_then(Value::as_array)
        .map(|blocks| {
            blocks
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Checks a result against an expectation; `Err` says what is wrong.
pub fn check(expect: &Expect, result: &Value) -> Result<(), String> {
    let text = result_text(result);
    let is_error = result
        .get("is_error")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let shown = || {
        let mut t: String = text.chars().take(300).collect();
        if t.len() < text.len() {
            t.push('…');
        }
        t
    };
    if let Some(want) = expect.is_error
        && want != is_error
    {
        return Err(format!(
            "is_error {is_error}, expected {want}; text {:?}",
            shown()
        ));
    }
    for needle in &expect.text_contains {
        if !text.contains(needle.as_str()) {
            return Err(format!("text does not contain {needle:?}: {:?}", shown()));
        }
    }
    for needle in &expect.text_not_contains {
        if text.contains(needle.as_str()) {
            return Err(format!("text contains {needle:?}: {:?}", shown()));
        }
    }
    if let Some(want) = &expect.text_equals
        && &text != want
    {
        return Err(format!("text {:?} is not {want:?}", shown()));
    }
    if let Some(re) = &expect.text_matches {
        let re = regex::Regex::new(re).map_err(|e| format!("bad regex: {e}"))?;
        if !re.is_match(&text) {
            return Err(format!("text does not match /{re}/: {:?}", shown()));
        }
    }
    Ok(())
}

impl Run<'_> {
    async fn wait_for_worker(&self) -> StepReport {
        let deadline = Instant::now() + Duration::from_millis(self.script.start_timeout_ms);
        let start = Instant::now();
        loop {
            let wake = self
                .st
                .lock()
                .sessions
                .get(&self.session)
                .map(|s| s.attached.clone());
            // Created before the check: `notify_waiters` reaches a `Notified` from its creation
            // on, so an attach between the check and the wait is not missed.
            let notified = wake.as_ref().map(|n| n.notified());
            let attached = self
                .st
                .lock()
                .sessions
                .get(&self.session)
                .is_some_and(|s| s.tx.receiver_count() > 0);
            if attached {
                return step_report(
                    0,
                    "worker_attached",
                    None,
                    None,
                    true,
                    "a worker opened the session's event stream".into(),
                    Some(start.elapsed().as_millis() as u64),
                );
            }
            if Instant::now() >= deadline {
                return step_report(
                    0,
                    "worker_attached",
                    None,
                    None,
                    false,
                    format!(
                        "no worker opened the event stream within {} ms",
                        self.script.start_timeout_ms
                    ),
                    None,
                );
            }
            match notified {
                Some(n) => {
                    let _ = tokio::time::timeout(RECHECK, n).await;
                }
                None => tokio::time::sleep(RECHECK).await,
            }
        }
    }

    fn emit(&self, event: Value) -> Result<Arc<Value>, String> {
        sessions::emit(self.st, &self.session, event).map_err(|e| e.to_string())
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<Arc<Value>>> {
        Some(self.st.lock().sessions.get(&self.session)?.tx.subscribe())
    }

    /// The accepted result of `call_id` and when devplane stored it.
    fn stored_result(&self, call_id: &str) -> Option<(Value, Option<Instant>)> {
        let store = self.st.lock();
        let call = store.sessions.get(&self.session)?.calls.get(call_id)?;
        Some((call.result.clone()?, call.answered_at))
    }

    /// Waits up to `timeout` for the result of `call_id`.
    async fn await_result(
        &self,
        rx: &mut broadcast::Receiver<Arc<Value>>,
        call_id: &str,
        timeout: Duration,
    ) -> Option<(Value, Option<Instant>)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(r) = self.stored_result(call_id) {
                return Some(r);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return None;
            }
            // Events are only a wake-up; the stored call is the source of truth, so a lagged
            // receiver costs nothing but a re-check.
            let _ =
                tokio::time::timeout((deadline - now).min(Duration::from_millis(200)), rx.recv())
                    .await;
        }
    }

    /// Evaluates `expect` for `call_id`, waiting as needed; returns (passed, detail, latency in
    /// ms as the agent saw it, latency in µs from devplane's store instant).
    async fn evaluate(
        &self,
        rx: &mut broadcast::Receiver<Arc<Value>>,
        call_id: &str,
        expect: &Expect,
        timeout_ms: Option<u64>,
        since: Instant,
    ) -> (bool, String, Option<u64>, Option<u64>) {
        let micros =
            |at: Option<Instant>| at.map(|t| t.saturating_duration_since(since).as_micros() as u64);
        if let Some(ms) = expect.no_result_within_ms {
            return match self
                .await_result(rx, call_id, Duration::from_millis(ms))
                .await
            {
                None => (
                    true,
                    format!("no result within {ms} ms, as expected"),
                    None,
                    None,
                ),
                Some((r, at)) => (
                    false,
                    format!("expected no result, got {r}"),
                    Some(since.elapsed().as_millis() as u64),
                    micros(at),
                ),
            };
        }
        let timeout = Duration::from_millis(timeout_ms.unwrap_or(self.script.result_timeout_ms));
        match self.await_result(rx, call_id, timeout).await {
            None => (
                false,
                format!("no result within {} ms", timeout.as_millis()),
                None,
                None,
            ),
            Some((r, at)) => {
                let latency = Some(since.elapsed().as_millis() as u64);
                match check(expect, &r) {
                    Ok(()) => {
                        let text: String = result_text(&r).chars().take(120).collect();
                        (true, format!("result ok: {text:?}"), latency, micros(at))
                    }
                    Err(why) => (false, why, latency, micros(at)),
                }
            }
        }
    }

    async fn step(&mut self, index: usize, step: &Step, work_id: Option<&str>) -> StepReport {
        let kind = step.kind();
        let simple = |r: Result<Arc<Value>, String>, what: &str| match r {
            Ok(ev) => step_report(
                index,
                kind,
                None,
                ev.get("id").and_then(Value::as_str).map(str::to_owned),
                true,
                format!("emitted {what}"),
                None,
            ),
            Err(e) => step_report(index, kind, None, None, false, e, None),
        };
        match step {
            Step::ToolUse {
                label,
                name,
                input,
                permission,
                thread,
                expect,
                timeout_ms,
            } => {
                let mut ev = json!({"type": types::AGENT_TOOL_USE, "name": name, "input": input});
                if let Some(p) = permission {
                    ev["evaluated_permission"] = json!(p);
                }
                if let Some(t) = thread {
                    ev["session_thread_id"] = json!(t);
                }
                self.call(
                    index,
                    kind,
                    label.clone(),
                    ev,
                    expect,
                    *timeout_ms,
                    permission.as_deref() == Some("ask"),
                )
                .await
            }
            Step::CustomToolUse {
                label,
                name,
                input,
                thread,
                expect,
                timeout_ms,
            } => {
                let mut ev =
                    json!({"type": types::AGENT_CUSTOM_TOOL_USE, "name": name, "input": input});
                if let Some(t) = thread {
                    ev["session_thread_id"] = json!(t);
                }
                self.call(index, kind, label.clone(), ev, expect, *timeout_ms, false)
                    .await
            }
            Step::Confirm {
                tool_use,
                result,
                deny_message,
            } => {
                let Some(d) = self.deferred.remove(tool_use) else {
                    return step_report(
                        index,
                        kind,
                        Some(tool_use.clone()),
                        None,
                        false,
                        format!("{tool_use} is not a pending ask call"),
                        None,
                    );
                };
                let Some(mut rx) = self.subscribe() else {
                    return step_report(
                        index,
                        kind,
                        None,
                        None,
                        false,
                        "session vanished".into(),
                        None,
                    );
                };
                let mut ev = json!({"type": types::USER_TOOL_CONFIRMATION, "tool_use_id": d.event_id, "result": result});
                if let Some(m) = deny_message {
                    ev["deny_message"] = json!(m);
                }
                let since = Instant::now();
                let emitted = self.emit(ev);
                let conf_id = emitted
                    .as_ref()
                    .ok()
                    .and_then(|e| e.get("id").and_then(Value::as_str).map(str::to_owned));
                let (passed, detail, latency, latency_us) = self
                    .evaluate(&mut rx, &d.event_id, &d.expect, d.timeout_ms, since)
                    .await;
                // The ask call's own line carries the verdict too, so the report reads top-down.
                if let Some(r) = self.steps.get_mut(d.step_index) {
                    r.passed = passed;
                    r.detail = format!("after confirmation {result}: {detail}");
                    r.latency_ms = latency;
                    r.latency_us = latency_us;
                }
                StepReport {
                    latency_us,
                    ..step_report(
                        index,
                        kind,
                        Some(tool_use.clone()),
                        conf_id,
                        passed && emitted.is_ok(),
                        format!("{result}: {detail}"),
                        latency,
                    )
                }
            }
            Step::Idle {
                stop_reason,
                event_ids,
            } => {
                let ids: Vec<String> = event_ids
                    .iter()
                    .filter_map(|l| self.labels.get(l).cloned())
                    .collect();
                let mut reason = json!({"type": stop_reason});
                if !ids.is_empty() || stop_reason == "requires_action" {
                    reason["event_ids"] = json!(ids);
                }
                simple(
                    self.emit(json!({"type": types::SESSION_STATUS_IDLE, "stop_reason": reason})),
                    "session.status_idle",
                )
            }
            Step::Running {} => simple(
                self.emit(json!({"type": types::SESSION_STATUS_RUNNING})),
                "session.status_running",
            ),
            Step::ThreadRunning { thread } => simple(
                self.emit(
                    json!({"type": types::THREAD_STATUS_RUNNING, "session_thread_id": thread}),
                ),
                "session.thread_status_running",
            ),
            Step::ThreadTerminated { thread } => simple(
                self.emit(
                    json!({"type": types::THREAD_STATUS_TERMINATED, "session_thread_id": thread}),
                ),
                "session.thread_status_terminated",
            ),
            Step::Terminated {} => simple(
                self.emit(json!({"type": types::SESSION_STATUS_TERMINATED})),
                "session.status_terminated",
            ),
            Step::Deleted {} => simple(
                self.emit(json!({"type": types::SESSION_DELETED})),
                "session.deleted",
            ),
            Step::Wait { ms } => {
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                step_report(
                    index,
                    kind,
                    None,
                    None,
                    true,
                    format!("waited {ms} ms"),
                    None,
                )
            }
            Step::DropStream {} => {
                let n = self.st.lock().sessions.get(&self.session).map(|s| {
                    s.drop_gen.send_modify(|g| *g += 1);
                    s.tx.receiver_count()
                });
                step_report(
                    index,
                    kind,
                    None,
                    None,
                    n.is_some(),
                    format!("cut the session's streams ({} listeners)", n.unwrap_or(0)),
                    None,
                )
            }
            Step::ExpectStopped { within_ms } => {
                self.expect_stopped(index, work_id, *within_ms).await
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn call(
        &mut self,
        index: usize,
        kind: &str,
        label: Option<String>,
        ev: Value,
        expect: &Expect,
        timeout_ms: Option<u64>,
        ask: bool,
    ) -> StepReport {
        let Some(mut rx) = self.subscribe() else {
            return step_report(
                index,
                kind,
                label,
                None,
                false,
                "session vanished".into(),
                None,
            );
        };
        let since = Instant::now();
        let emitted = match self.emit(ev) {
            Ok(e) => e,
            Err(e) => return step_report(index, kind, label, None, false, e, None),
        };
        let id = emitted
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if let Some(l) = &label {
            self.labels.insert(l.clone(), id.clone());
        }
        if ask {
            let key = label.clone().unwrap_or_else(|| id.clone());
            // Placeholder verdict; the `confirm` step overwrites it.
            self.deferred.insert(
                key,
                Deferred {
                    step_index: self.steps.len(),
                    event_id: id.clone(),
                    expect: expect.clone(),
                    timeout_ms,
                },
            );
            return step_report(
                index,
                kind,
                label,
                Some(id),
                true,
                "ask call emitted; checked at its confirmation".into(),
                None,
            );
        }
        let (passed, detail, latency, latency_us) =
            self.evaluate(&mut rx, &id, expect, timeout_ms, since).await;
        StepReport {
            latency_us,
            ..step_report(index, kind, label, Some(id), passed, detail, latency)
        }
    }

    async fn expect_stopped(
        &self,
        index: usize,
        work_id: Option<&str>,
        within_ms: u64,
    ) -> StepReport {
        let Some(work_id) = work_id else {
            return step_report(
                index,
                "expect_stopped",
                None,
                None,
                false,
                "session has no work item".into(),
                None,
            );
        };
        let start = Instant::now();
        let deadline = start + Duration::from_millis(within_ms);
        loop {
            let (state, force) = {
                let store = self.st.lock();
                match store.work.get(work_id) {
                    Some(r) => (r.item.state, r.force_stopped),
                    None => (WorkState::Queued, false),
                }
            };
            if state == WorkState::Stopped {
                let ms = Some(start.elapsed().as_millis() as u64);
                return if force {
                    step_report(
                        index,
                        "expect_stopped",
                        None,
                        Some(work_id.to_owned()),
                        true,
                        "work item force-stopped".into(),
                        ms,
                    )
                } else {
                    step_report(
                        index,
                        "expect_stopped",
                        None,
                        Some(work_id.to_owned()),
                        false,
                        "work item stopped, but not with force".into(),
                        ms,
                    )
                };
            }
            if Instant::now() >= deadline {
                return step_report(
                    index,
                    "expect_stopped",
                    None,
                    Some(work_id.to_owned()),
                    false,
                    format!("work item still {} after {within_ms} ms", state.as_str()),
                    None,
                );
            }
            tokio::time::sleep(RECHECK).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_look_at_text_blocks_and_is_error() {
        let r = json!({"type":"user.tool_result","tool_use_id":"x","is_error":true,
            "content":[{"type":"text","text":"bash: boom"},{"type":"image","source":{}},{"type":"text","text":"line2"}]});
        assert!(
            check(
                &Expect {
                    is_error: Some(true),
                    text_contains: vec!["boom".into(), "line2".into()],
                    ..Default::default()
                },
                &r
            )
            .is_ok()
        );
        assert!(
            check(
                &Expect {
                    is_error: Some(false),
                    ..Default::default()
                },
                &r
            )
            .is_err()
        );
        assert!(
            check(
                &Expect {
                    text_equals: Some("bash: boom\nline2".into()),
                    ..Default::default()
                },
                &r
            )
            .is_ok()
        );
        assert!(
            check(
                &Expect {
                    text_matches: Some("^bash: b".into()),
                    ..Default::default()
                },
                &r
            )
            .is_ok()
        );
        assert!(
            check(
                &Expect {
                    text_not_contains: vec!["boom".into()],
                    ..Default::default()
                },
                &r
            )
            .is_err()
        );
        let ok_default = json!({"content":[{"type":"text","text":"x"}]});
        assert!(
            check(
                &Expect {
                    is_error: Some(false),
                    ..Default::default()
                },
                &ok_default
            )
            .is_ok()
        );
    }
}
