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

/// The devplane script for a list of calls: every call must succeed and contain its markers;
/// the session ends with an idle turn so the worker lets it go.
pub fn script(name: &str, calls: &[Call], result_timeout_ms: u64) -> anyhow::Result<Script> {
    let mut steps: Vec<Value> = calls
        .iter()
        .map(|c| {
            json!({"step": "tool_use", "name": c.name, "input": c.input,
                   "expect": {"is_error": false, "text_contains": c.contains}})
        })
        .collect();
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
        assert!(script("t", &c, 1000).is_ok());
    }
}
