//! The realistic trace: 200 tool calls (60 read, 40 bash, 30 write, 30 edit, 20 glob, 20 grep)
//! over the generated repository, as a devplane session script with an expectation on every
//! answer, so a worker that answers wrongly fails the run instead of looking fast.

use hands_devplane::Script;
use serde_json::{Value, json};

use crate::repo::{self, DIRS, FILES_PER_DIR};

/// One call of the trace: tool name, input, and what its result must contain.
#[derive(Clone, Debug)]
pub struct Call {
    pub name: &'static str,
    pub input: Value,
    pub contains: Vec<String>,
}

fn call(name: &'static str, input: Value, contains: &[&str]) -> Call {
    Call {
        name,
        input,
        contains: contains.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn note(lines: usize, b: usize, tag: &str) -> String {
    let mut s = format!("note {tag} of block {b}\nstatus: draft\n");
    for i in 0..lines {
        s.push_str(&format!(
            "line {i}: the quick brown fox jumps over the lazy dog\n"
        ));
    }
    s
}

/// The 200 calls of session `k` (`k` spreads reads over the tree and names its own output
/// directory, so concurrent sessions never edit each other's files).
pub fn calls(k: usize) -> Vec<Call> {
    let out = format!("out/s{k}");
    let mut v = Vec::with_capacity(200);
    let pick = |b: usize, j: usize| {
        let d = (k * 7 + b * 3 + j) % DIRS;
        let f = (k * 11 + b * 5 + j * 17) % FILES_PER_DIR;
        (d, f)
    };
    for b in 0..10 {
        let dir = format!("src/mod{:02}", (k + b) % DIRS);
        let read = |j: usize| {
            let (d, f) = pick(b, j);
            call(
                "read",
                json!({"file_path": repo::file(d, f)}),
                &[&repo::header(d, f)],
            )
        };
        let (a, bb, c) = (
            format!("{out}/note{b}_a.txt"),
            format!("{out}/note{b}_b.txt"),
            format!("{out}/note{b}_c.txt"),
        );
        let block_tag = format!("block {b}");
        v.push(call(
            "bash",
            json!({"command": format!("echo block {b}")}),
            &[&block_tag],
        ));
        v.push(read(0));
        v.push(call(
            "glob",
            json!({"pattern": format!("{dir}/*.rs")}),
            &[".rs"],
        ));
        v.push(read(1));
        v.push(call(
            "write",
            json!({"file_path": a, "content": note(16, b, "a")}),
            &[],
        ));
        v.push(call("read", json!({"file_path": a}), &["status: draft"]));
        v.push(call(
            "edit",
            json!({"file_path": a, "old_string": "status: draft", "new_string": "status: final"}),
            &[],
        ));
        v.push(call(
            "grep",
            json!({"pattern": "TODO", "path": dir}),
            &[&dir],
        ));
        let (d, f) = pick(b, 2);
        v.push(call(
            "bash",
            json!({"command": format!("wc -l {}", repo::file(d, f))}),
            &[&repo::file(d, f)],
        ));
        v.push(read(3));
        v.push(call(
            "write",
            json!({"file_path": bb, "content": note(8, b, "b")}),
            &[],
        ));
        v.push(call(
            "edit",
            json!({"file_path": bb, "old_string": "status: draft", "new_string": "status: review"}),
            &[],
        ));
        v.push(read(4));
        v.push(call(
            "bash",
            json!({"command": format!("ls {dir} | head -5")}),
            &["file"],
        ));
        if b % 2 == 0 {
            v.push(call("glob", json!({"pattern": "**/*.md"}), &[".md"]));
        } else {
            v.push(call(
                "glob",
                json!({"pattern": format!("{dir}/**/*.py")}),
                &[".py"],
            ));
        }
        if b % 3 == 0 {
            let n = (k + b) % DIRS;
            let (d, _) = repo::needle_file(n);
            let want = format!("mod{d:02}");
            v.push(call(
                "grep",
                json!({"pattern": format!("NEEDLE_{n}\""), "path": "src"}),
                &[&want],
            ));
        } else {
            v.push(call(
                "grep",
                json!({"pattern": "fn item_\\d+_1_7\\(", "path": dir}),
                &[&dir],
            ));
        }
        v.push(read(5));
        v.push(call(
            "write",
            json!({"file_path": c, "content": note(4, b, "c")}),
            &[],
        ));
        v.push(call(
            "edit",
            json!({"file_path": c, "old_string": "status: draft", "new_string": "status: done"}),
            &[],
        ));
        v.push(call("bash", json!({"command": "pwd"}), &["/"]));
    }
    v
}

/// Model think time before each call of session `k`, in ms: uniform in 0.5-1.5 × `mean_ms`,
/// drawn from a generator seeded by (`seed`, `k`), so a rerun with the same seed waits the same.
/// The first call waits too: in a real session the model writes its first tool call after the
/// session starts running, which is when the worker claims it (and starts its shell). All zero
/// when `mean_ms` is 0.
pub fn think_ms(seed: u64, k: usize, calls: usize, mean_ms: u64) -> Vec<u64> {
    let mut state = seed ^ (k as u64).wrapping_mul(0xA076_1D64_78BD_642F);
    (0..calls)
        .map(|_| {
            if mean_ms == 0 {
                return 0;
            }
            // splitmix64: small, good enough to spread pauses, and the same on every machine.
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
            (mean_ms as f64 * (0.5 + unit)).round() as u64
        })
        .collect()
}

/// The devplane script for a list of calls: every call must succeed and, when `checked`,
/// contain its markers;
/// `think[i]` ms of waiting (the model thinking) come before call `i`; the session ends with an
/// idle turn so the worker lets it go. The round trip of a call never includes its think time.
pub fn script(
    name: &str,
    calls: &[Call],
    think: &[u64],
    result_timeout_ms: u64,
    checked: bool,
) -> anyhow::Result<Script> {
    let mut steps: Vec<Value> = Vec::with_capacity(calls.len() * 2 + 1);
    for (i, c) in calls.iter().enumerate() {
        if let Some(&ms) = think.get(i).filter(|&&ms| ms > 0) {
            steps.push(json!({"step": "wait", "ms": ms}));
        }
        let contains: &[String] = if checked { &c.contains } else { &[] };
        steps.push(json!({"step": "tool_use", "name": c.name, "input": c.input,
                          "expect": {"is_error": false, "text_contains": contains}}));
    }
    steps.push(json!({"step": "idle", "stop_reason": "end_turn", "event_ids": []}));
    let s = json!({
        "name": name,
        "start_timeout_ms": 300_000,
        "result_timeout_ms": result_timeout_ms,
        "steps": steps,
    });
    Ok(serde_json::from_value(s)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_hundred_calls_in_the_stated_mix() {
        let c = calls(3);
        assert_eq!(c.len(), 200);
        let count = |n: &str| c.iter().filter(|x| x.name == n).count();
        assert_eq!(
            [
                count("read"),
                count("bash"),
                count("write"),
                count("edit"),
                count("glob"),
                count("grep")
            ],
            [60, 40, 30, 30, 20, 20]
        );
        assert!(script("t", &c, &[], 1000, true).is_ok());
    }

    #[test]
    fn think_time_is_reproducible_and_within_its_bounds() {
        let a = think_ms(7, 3, 200, 1000);
        assert_eq!(a, think_ms(7, 3, 200, 1000));
        assert_ne!(a, think_ms(7, 4, 200, 1000), "sessions think differently");
        assert_ne!(a, think_ms(8, 3, 200, 1000), "the seed matters");
        assert!(a.iter().all(|&ms| (500..=1500).contains(&ms)));
        let mean = a.iter().sum::<u64>() as f64 / 200.0;
        assert!((900.0..1100.0).contains(&mean), "mean {mean}");
        assert!(think_ms(7, 3, 200, 0).iter().all(|&ms| ms == 0));
    }

    #[test]
    fn think_time_becomes_wait_steps_before_the_calls() {
        let c = calls(0);
        let think = think_ms(1, 0, c.len(), 100);
        let s = serde_json::to_value(script("t", &c, &think, 1000, true).unwrap()).unwrap();
        let steps = s["steps"].as_array().unwrap();
        // 200 calls, each after its wait (the first included), one idle.
        assert_eq!(steps.len(), 401);
        assert_eq!(steps[0]["step"], "wait");
        assert_eq!(steps[0]["ms"], think[0]);
        assert_eq!(steps[1]["step"], "tool_use");
        assert_eq!(steps[2]["step"], "wait");
        assert_eq!(steps[2]["ms"], think[1]);
        assert_eq!(steps[3]["step"], "tool_use");
    }
}
