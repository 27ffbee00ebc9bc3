//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

use hands_protocol::toolset::{ContentBlock, ToolOutput};
use hands_tools::{Toolset, ToolsetConfig};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A temporary directory holding `ws/` (the workdir) and `outside/` (a sibling the tools must
/// never reach, with `outside/secret.txt`).
pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub ws: PathBuf,
    pub outside: PathBuf,
    pub tools: Toolset,
}

pub const SECRET: &str = "outside-secret-7f3a";

impl Fixture {
    pub fn new() -> Fixture {
        Fixture::with(|_| {})
    }

    pub fn with(configure: impl FnOnce(&mut ToolsetConfig)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let ws = root.join("ws");
        let outside = root.join("outside");
        std::fs::create_dir(&ws).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret.txt"), SECRET).unwrap();
        let mut config = ToolsetConfig::new(&ws);
        configure(&mut config);
        let tools = Toolset::new(config).unwrap();
        Fixture {
            _dir: dir,
            root,
            ws,
            outside,
            tools,
        }
    }

    pub async fn call(&self, name: &str, input: Value) -> ToolOutput {
        self.tools
            .call(name, input, &CancellationToken::new())
            .await
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.ws.join(rel)
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(p, content).unwrap();
    }

    /// The result as the model reads it, with the temporary root replaced by `[ROOT]` so
    /// snapshots are stable.
    pub fn shown(&self, out: &ToolOutput) -> String {
        let mut s = String::new();
        for block in &out.content {
            match block {
                ContentBlock::Text { text } => s.push_str(text),
                other => s.push_str(&serde_json::to_string(other).unwrap()),
            }
        }
        s.replace(&self.root.display().to_string(), "[ROOT]")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Best effort: tests that use bash call shutdown themselves; this is for panics.
    }
}

pub fn text(out: &ToolOutput) -> &str {
    match out.content.as_slice() {
        [ContentBlock::Text { text }] => text,
        other => panic!("expected one text block, got {other:?}"),
    }
}

/// One row of a table test: a name, the tool, its input.
pub struct Case {
    pub name: &'static str,
    pub tool: &'static str,
    pub input: Value,
}

/// Runs `cases` in order and renders a transcript of exactly what the model would read.
pub async fn transcript(fx: &Fixture, cases: Vec<Case>) -> String {
    let mut out = String::new();
    for case in cases {
        let result = fx.call(case.tool, case.input.clone()).await;
        let input = case
            .input
            .to_string()
            .replace(&fx.root.display().to_string(), "[ROOT]");
        out.push_str(&format!(
            "## {}\n> {} {}\nis_error: {}\n{}\n\n",
            case.name,
            case.tool,
            input,
            result.is_error,
            fx.shown(&result)
        ));
    }
    out
}

pub fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// Live (non-zombie) processes of the host with `arg` as one of their arguments: how the rows
/// find what a command left running, whichever tier it ran in.
pub fn alive_with_arg(arg: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmdline.split(|&b| b == 0).any(|a| a == arg.as_bytes())
            && hands_sandbox::pid_is_alive(pid)
        {
            pids.push(pid);
        }
    }
    pids
}
