//! Operator-declared custom tools (GitHub issue 4): a TOML file names each tool and the program
//! that serves it; the worker owns exactly those names (PROTOCOL.md §7.5 rule 4) and answers
//! their `agent.custom_tool_use` calls with `user.custom_tool_result` (§7.6).
//!
//! ```toml
//! [[tool]]
//! name = "lookup_order"                                 # ^[a-zA-Z0-9_-]{1,64}$, not a built-in
//! command = ["/usr/local/bin/lookup-order", "--json"]   # argv: absolute program, no shell
//! timeout = "30s"                                       # optional: default 60s, at most 150s
//! description = "Looks an order up by id"               # optional, for humans
//! ```
//!
//! A call runs the program once, with the same isolation as the `bash` tool (cleared environment
//! plus the toolset's allow-list, own session and process group, child subreaper, capabilities
//! dropped, limits set before `exec`; `hands_sandbox::spawn_oneshot`), in the session's workdir,
//! with the session's private temporary directory as `TMPDIR` (tiers 0 and 1; writable at tier 1
//! like the shell's; tier 2 has a tmpfs of its own on `/tmp`).
//! The call's input is written to stdin as one line of compact JSON, then stdin is closed.
//! Exit 0: stdout is the result. Non-zero exit, a signal, a timeout: an error result naming the
//! cause, with stderr and stdout, and a note when a filesystem the tool writes to is full.
//!
//! What it must never do:
//! - run a tool through a shell or look its program up on `PATH` (T15);
//! - wait for a pipe to close to decide the call is over: a background grandchild can hold stdout
//!   forever (pitfall 4), so reading stops a short grace after the process exits;
//! - hold unbounded output (T7): the last 100 KiB of stdout and 32 KiB of stderr are kept;
//! - leave a process behind: every call ends with a kill of the process group and a descendant
//!   sweep (T9), also when it timed out or was cancelled (T8);
//! - panic on what a tool prints (T13): invalid UTF-8 is shown lossily, with a note.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use hands_protocol::toolset::{BuiltinTool, ToolOutput};
use hands_sandbox::{
    Binds, EnvPolicy, Isolation, OneShotProcess, OneShotSpec, Rlimits, SweepScope, kill_group,
    spawn_oneshot, stop_group, sweep,
};
use hands_tools::output::{append_note, shape_tail};
use hands_tools::{DiskPlace, full_disk_note};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Timeout of a tool that declares none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest timeout a tool may declare: the runner's outer bound of one call (§7.5 rule 5).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(150);
/// Stdout kept: the last this many bytes, as for `bash`.
pub const OUTPUT_BYTES: usize = 100 * 1024;
/// Stderr kept: the last this many bytes (diagnostics; only error results show it).
pub const STDERR_BYTES: usize = 32 * 1024;
/// How long output is still read after the process exited, for data a descendant that escaped
/// the sweep might still be holding the pipe open with (pitfall 4).
const EXIT_GRACE: Duration = Duration::from_millis(200);
/// Read size from each pipe.
const CHUNK: usize = 64 * 1024;

/// One declared tool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomTool {
    pub name: String,
    /// Absolute path of the program (checked to exist and be executable at load time).
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub timeout: Duration,
    pub description: Option<String>,
}

/// The custom tools a worker serves. The default serves none.
#[derive(Clone, Debug, Default)]
pub struct CustomTools {
    tools: BTreeMap<String, CustomTool>,
    env: EnvPolicy,
    rlimits: Rlimits,
    isolation: Isolation,
}

/// Why a custom tools file was refused. Every message names the file, and the tool if one is
/// at fault.
#[derive(Debug, thiserror::Error)]
pub enum CustomToolsError {
    /// The file could not be read.
    #[error("custom tools file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("custom tools file {}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    /// One tool's declaration is invalid.
    #[error("custom tools file {}: tool {name:?}: {problem}", path.display())]
    Tool {
        path: PathBuf,
        name: String,
        problem: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    tool: Vec<RawTool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTool {
    name: String,
    command: Vec<String>,
    #[serde(default)]
    timeout: Option<toml::Value>,
    #[serde(default)]
    description: Option<String>,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `30s`, `1500ms`, `2m`, or an integer number of seconds.
fn parse_timeout(value: &toml::Value) -> Result<Duration, String> {
    let timeout = match value {
        toml::Value::Integer(n) => u64::try_from(*n)
            .map(Duration::from_secs)
            .map_err(|_| format!("timeout {n} is negative"))?,
        toml::Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let bad =
                || format!("timeout {s:?} is not a duration like \"30s\", \"1500ms\" or \"2m\"");
            let n: u64 = num.parse().map_err(|_| bad())?;
            match unit {
                "s" | "" => Duration::from_secs(n),
                "ms" => Duration::from_millis(n),
                "m" => Duration::from_secs(n.saturating_mul(60)),
                _ => return Err(bad()),
            }
        }
        other => {
            return Err(format!(
                "timeout must be a string like \"30s\" or a number of seconds, not a {}",
                other.type_str()
            ));
        }
    };
    if timeout.is_zero() {
        return Err("timeout must be more than 0".into());
    }
    if timeout > MAX_TIMEOUT {
        return Err(format!(
            "timeout {} is over the maximum of {} (the worker's bound on any call)",
            seconds(timeout),
            seconds(MAX_TIMEOUT)
        ));
    }
    Ok(timeout)
}

fn check_program(program: &Path) -> Result<(), String> {
    if !program.is_absolute() {
        return Err(format!(
            "program {:?} must be an absolute path (it is never looked up on PATH)",
            program.display().to_string()
        ));
    }
    let meta =
        std::fs::metadata(program).map_err(|e| format!("program {}: {e}", program.display()))?;
    if !meta.is_file() {
        return Err(format!("program {} is not a file", program.display()));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("program {} is not executable", program.display()));
    }
    Ok(())
}

impl CustomTools {
    /// No custom tools: custom calls are left to their owner.
    pub fn empty() -> Self {
        CustomTools::default()
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<CustomTools, CustomToolsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CustomToolsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        CustomTools::parse(&text, path)
    }

    /// Validates `text`, the content of the file at `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<CustomTools, CustomToolsError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| CustomToolsError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let mut tools = BTreeMap::new();
        for raw in raw.tool {
            let fail = |problem: String| CustomToolsError::Tool {
                path: path.to_path_buf(),
                name: raw.name.clone(),
                problem,
            };
            if !valid_name(&raw.name) {
                return Err(fail(
                    "a name is 1 to 64 characters from a-z, A-Z, 0-9, '_' and '-'".into(),
                ));
            }
            if BuiltinTool::from_name(&raw.name).is_some() {
                return Err(fail(
                    "the name is a built-in tool (bash, read, write, edit, glob, grep)".into(),
                ));
            }
            if tools.contains_key(&raw.name) {
                return Err(fail("the name is declared twice".into()));
            }
            let Some((program, args)) = raw.command.split_first() else {
                return Err(fail("command is empty: give at least the program".into()));
            };
            if raw.command.iter().any(|a| a.contains('\0')) {
                return Err(fail("command contains a NUL character".into()));
            }
            let program = PathBuf::from(program);
            check_program(&program).map_err(fail)?;
            let timeout = match &raw.timeout {
                Some(v) => parse_timeout(v).map_err(fail)?,
                None => DEFAULT_TIMEOUT,
            };
            tools.insert(
                raw.name.clone(),
                CustomTool {
                    name: raw.name.clone(),
                    program,
                    args: args.iter().map(OsString::from).collect(),
                    timeout,
                    description: raw.description.clone(),
                },
            );
        }
        Ok(CustomTools {
            tools,
            ..CustomTools::default()
        })
    }

    /// Uses the toolset's environment policy and resource limits, so custom tools run exactly
    /// as isolated as `bash` (the defaults are the toolset's defaults).
    pub fn with_isolation(mut self, env: EnvPolicy, rlimits: Rlimits) -> Self {
        self.env = env;
        self.rlimits = rlimits;
        self
    }

    /// Runs every call in `isolation` (the tier the worker selected for `bash`), with the
    /// session's workdir as the workspace.
    pub fn with_sandbox(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// Whether `name` is a declared custom tool: the only custom calls this worker answers.
    pub fn owns(&self, name: &str) -> bool {
        self.tools.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Option<&CustomTool> {
        self.tools.get(name)
    }

    /// The declared names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.tools.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// Runs tool `name` once with `input` on stdin, in `workdir`. Never panics and never fails:
    /// every problem is a result with `is_error: true`. When `cancel` fires, the process and
    /// everything it started are killed and an error result is returned.
    pub async fn call(
        &self,
        name: &str,
        input: serde_json::Value,
        workdir: &Path,
        cancel: &CancellationToken,
    ) -> ToolOutput {
        let session = SessionSide {
            workdir,
            tmp_dir: None,
            env: &[],
        };
        self.call_in(name, input, &session, cancel).await
    }

    /// [`CustomTools::call`] in a session: its temporary directory, and per-session variables
    /// added to the environment (the egress proxy's; the deny-list still applies to them).
    pub async fn call_in(
        &self,
        name: &str,
        input: serde_json::Value,
        session: &SessionSide<'_>,
        cancel: &CancellationToken,
    ) -> ToolOutput {
        let SessionSide {
            workdir,
            tmp_dir,
            env: session_env,
        } = *session;
        let Some(tool) = self.tools.get(name) else {
            return ToolOutput::error(format!("unknown custom tool: {name}"));
        };
        let mut stdin = match serde_json::to_vec(&input) {
            Ok(bytes) => bytes,
            Err(e) => return ToolOutput::error(format!("{name}: invalid input: {e}")),
        };
        // One line: line-oriented tools (`read`, `readline()`) see a complete line.
        stdin.push(b'\n');
        let mut env = if session_env.is_empty() {
            self.env.build(std::env::vars_os())
        } else {
            let mut env = self.env.clone();
            env.set.extend(session_env.iter().cloned());
            env.build(std::env::vars_os())
        };
        let mut binds = Binds::default();
        let disk = disk_places(workdir, tmp_dir);
        if let Some(dir) = tmp_dir {
            // As for the shell: named by TMPDIR, TMP and TEMP, and writable at tier 1 (where
            // `/tmp` itself is not).
            hands_tools::set_tmp_vars(dir, &mut env);
            binds.read_write.push(dir.to_path_buf());
        }
        let spec = OneShotSpec {
            program: tool.program.clone(),
            args: tool.args.clone(),
            cwd: workdir.to_path_buf(),
            env,
            rlimits: self.rlimits.clone(),
            isolation: self.isolation.clone(),
            binds,
        };
        match spawn_oneshot(&spec).await {
            Ok(proc) => run(tool, proc, stdin, &disk, &spec.rlimits, cancel).await,
            Err(e) => ToolOutput::error(format!("{name}: {e}")),
        }
    }
}

/// Where a custom tool writes, looked at when it fails: the workspace and the session's
/// temporary directory. Both may be on filesystems other work shares, and their notes say so.
fn disk_places(workdir: &Path, tmp_dir: Option<&Path>) -> Vec<DiskPlace> {
    let mut disk = vec![DiskPlace::workspace(workdir)];
    disk.extend(tmp_dir.map(DiskPlace::tmp_dir));
    disk
}

/// What a call takes from the session it runs in.
#[derive(Clone, Copy, Debug)]
pub struct SessionSide<'a> {
    /// The session's workdir: the tool's working directory.
    pub workdir: &'a Path,
    /// The session's private temporary directory ([`hands_tools::Toolset::tmp_dir`]).
    pub tmp_dir: Option<&'a Path>,
    /// Variables added to the environment (the egress proxy's).
    pub env: &'a [(String, String)],
}

/// The bounded tail of one output pipe.
struct Tail {
    buf: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl Tail {
    fn new(limit: usize) -> Self {
        Tail {
            buf: Vec::new(),
            limit,
            truncated: false,
        }
    }

    /// Appends `bytes`, trimming the front once the buffer holds twice the limit (amortised:
    /// a flood costs one copy of `limit` bytes per `limit` bytes read).
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > 2 * self.limit {
            let cut = self.buf.len() - self.limit;
            self.buf.drain(..cut);
            self.truncated = true;
        }
    }

    /// The text the model reads, as `bash` shows a command's output.
    fn text(&self) -> String {
        shape_tail(&self.buf, self.limit, self.truncated).0
    }
}

/// Reads one chunk into `tail`; `false` once the pipe is closed (or broken, which ends it too).
async fn read_into(pipe: &mut (impl AsyncRead + Unpin), chunk: &mut [u8], tail: &mut Tail) -> bool {
    match pipe.read(chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            tail.push(&chunk[..n]);
            true
        }
    }
}

/// Kills the tool's process tree if the call is dropped before it finished (the runtime is
/// shutting down): synchronous, a last resort. Declared after the child, so it runs while the
/// tool (the subreaper holding its orphans together) may still be alive.
struct TreeGuard(Option<SweepScope>);

impl Drop for TreeGuard {
    fn drop(&mut self) {
        if let Some(scope) = self.0.take() {
            let _ = kill_group(scope.leader);
            sweep(&scope, false);
        }
    }
}

async fn sweep_blocking(scope: SweepScope) {
    let fallback = scope.clone();
    if tokio::task::spawn_blocking(move || sweep(&scope, false))
        .await
        .is_err()
    {
        // The blocking pool is gone (runtime shutting down): do it here rather than not at all.
        sweep(&fallback, false);
    }
}

enum End {
    Exited(std::io::Result<ExitStatus>),
    TimedOut,
    Cancelled,
}

async fn run(
    tool: &CustomTool,
    proc: OneShotProcess,
    input: Vec<u8>,
    disk: &[DiskPlace],
    rlimits: &Rlimits,
    cancel: &CancellationToken,
) -> ToolOutput {
    let OneShotProcess {
        mut child,
        mut stdin,
        mut stdout,
        mut stderr,
        scope,
        pids,
        // Tier 2's way to the egress proxy: kept until the call is over.
        egress_relay: _egress_relay,
    } = proc;
    let mut guard = TreeGuard(Some(scope.clone()));
    let mut out = Tail::new(OUTPUT_BYTES);
    let mut err = Tail::new(STDERR_BYTES);
    let mut out_chunk = vec![0u8; CHUNK];
    let mut err_chunk = vec![0u8; CHUNK];
    let (mut out_open, mut err_open, mut feeding) = (true, true, true);
    // Written while the output is read: a tool may answer before it has read all its input,
    // and a full stdout pipe must not block our write. Dropping the future closes stdin.
    let mut feed = Box::pin(async move {
        // A tool that exits without reading its input breaks the pipe: not an error of ours.
        let _ = stdin.write_all(&input).await;
    });
    let deadline = tokio::time::sleep(tool.timeout);
    tokio::pin!(deadline);

    let end = loop {
        tokio::select! {
            // `Child::wait` is cancel-safe: losing the race to a read loses nothing.
            status = child.wait() => break End::Exited(status),
            open = read_into(&mut stdout, &mut out_chunk, &mut out), if out_open => out_open = open,
            open = read_into(&mut stderr, &mut err_chunk, &mut err), if err_open => err_open = open,
            () = &mut feed, if feeding => feeding = false,
            () = &mut deadline => break End::TimedOut,
            () = cancel.cancelled() => break End::Cancelled,
        }
    };
    // Closes stdin if the tool did not read it all.
    drop(feed);

    if !matches!(end, End::Exited(Ok(_))) {
        // Freeze the group, so nothing in it forks or reports the deaths that follow; sweep
        // while the tool is alive and its orphans are still below it (it is their subreaper);
        // then the group and the tool; the last sweep below catches anything that escaped.
        let _ = stop_group(scope.leader);
        sweep_blocking(scope.clone()).await;
        let _ = kill_group(scope.leader);
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    // Whatever the tool left running is killed now: the call is over (T9). Its output already
    // in the pipes stays readable.
    let _ = kill_group(scope.leader);
    sweep_blocking(scope).await;
    guard.0 = None;

    // Read what is left. Every writer should be dead, so EOF comes at once; the grace bounds
    // the wait for a writer that escaped the sweep (pitfall 4).
    let grace = tokio::time::sleep(EXIT_GRACE);
    tokio::pin!(grace);
    while out_open || err_open {
        tokio::select! {
            open = read_into(&mut stdout, &mut out_chunk, &mut out), if out_open => out_open = open,
            open = read_into(&mut stderr, &mut err_chunk, &mut err), if err_open => err_open = open,
            () = &mut grace => break,
        }
    }

    let name = &tool.name;
    // A hit process limit is said in plain words, after everything else (T5).
    let limit = pids.as_ref().and_then(|p| p.limit_note(0));
    drop(pids);
    // A tool that failed may have filled a disk it writes to. (At tier 2 its own tmpfs is gone
    // with it by now: only the workspace is looked at.) A timed-out tool may have been stuck
    // on a full disk.
    let failed = matches!(&end, End::Exited(Ok(status)) if !status.success())
        || matches!(end, End::TimedOut);
    let mut result = match end {
        End::Exited(Ok(status)) if status.success() => ToolOutput::ok(out.text()),
        End::Exited(Ok(status)) => {
            let head = match (status.code(), status.signal()) {
                (Some(code), _) => format!("{name}: exited with status {code}"),
                (None, Some(signal)) => format!("{name}: killed by signal {signal}"),
                (None, None) => format!("{name}: ended abnormally ({status})"),
            };
            ToolOutput::error(report(head, &out, &err))
        }
        End::Exited(Err(e)) => ToolOutput::error(report(
            format!(
                "{name}: could not wait for the process ({e}); it and everything it started were killed"
            ),
            &out,
            &err,
        )),
        End::TimedOut => ToolOutput::error(report(
            format!(
                "{name}: timed out after {}\n[the tool and everything it started were killed]",
                seconds(tool.timeout)
            ),
            &out,
            &err,
        )),
        End::Cancelled => ToolOutput::error(report(
            format!("{name}: cancelled; the tool and everything it started were killed"),
            &out,
            &err,
        )),
    };
    // Under RLIMIT_NPROC (no pids cgroup) a failed tool's output is the only sign of the limit.
    if let Some(note) = limit.or_else(|| hands_tools::output::nproc_note(rlimits, &result)) {
        append_note(&mut result, &note);
    }
    if failed && let Some(note) = full_disk_note(disk) {
        append_note(&mut result, &note);
    }
    result
}

/// An error result: the cause, then stderr (the diagnostics), then stdout, each when not empty.
fn report(head: String, out: &Tail, err: &Tail) -> String {
    let mut text = head;
    for (label, tail) in [("[stderr]", err), ("[stdout]", out)] {
        let body = tail.text();
        if !body.is_empty() {
            let _ = write!(text, "\n{label}\n{body}");
        }
    }
    text
}

/// `30s`, `1.5s`.
fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:?}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use serde_json::json;

    use super::*;
    use hands_tools::output::{LOSSY_NOTE, TRUNCATED_PREFIX};

    /// A temp dir holding executable scripts and serving as the session workdir.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn path(&self) -> PathBuf {
            std::fs::canonicalize(self.dir.path()).unwrap()
        }

        /// Writes an executable `/bin/sh` script and returns its path.
        fn script(&self, file: &str, body: &str) -> PathBuf {
            let path = self.path().join(file);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        }

        fn tools(&self, toml: &str) -> Result<CustomTools, CustomToolsError> {
            CustomTools::parse(toml, &self.path().join("tools.toml"))
        }

        /// One tool `t` running `body`, with `timeout`.
        fn tool(&self, body: &str, timeout: &str) -> CustomTools {
            let program = self.script("t.sh", body);
            self.tools(&format!(
                "[[tool]]\nname = \"t\"\ncommand = [{:?}]\ntimeout = {timeout:?}\n",
                program.display().to_string()
            ))
            .unwrap()
        }

        async fn call(&self, tools: &CustomTools, input: serde_json::Value) -> ToolOutput {
            tools
                .call("t", input, &self.path(), &CancellationToken::new())
                .await
        }
    }

    fn text(out: &ToolOutput) -> String {
        out.content
            .iter()
            .filter_map(|b| match b {
                hands_protocol::toolset::ContentBlock::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Processes whose command line contains `marker` (a unique `sleep` argument).
    fn survivors(marker: &str) -> Vec<i32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == marker.as_bytes()))
                    && hands_sandbox::pid_is_alive(*pid)
            })
            .collect()
    }

    fn unique_sleep(tag: u32) -> String {
        // GNU sleep takes fractional seconds: the fraction makes the command line unique.
        format!("1000.{}{tag}", std::process::id())
    }

    fn load_err(fx: &Fixture, toml: &str) -> String {
        fx.tools(toml).unwrap_err().to_string()
    }

    // ---- configuration ----

    #[test]
    fn a_valid_file_declares_its_tools() {
        let fx = Fixture::new();
        let program = fx.script("lookup", "cat");
        let p = program.display();
        let tools = fx
            .tools(&format!(
                r#"
                [[tool]]
                name = "lookup_order"
                command = ["{p}", "--json", "a b"]
                timeout = "30s"
                description = "Looks an order up"

                [[tool]]
                name = "Refund-2"
                command = ["{p}"]

                [[tool]]
                name = "slow"
                command = ["{p}"]
                timeout = 150
                "#
            ))
            .unwrap();
        assert_eq!(
            tools.names().collect::<Vec<_>>(),
            ["Refund-2", "lookup_order", "slow"]
        );
        assert_eq!(
            tools.get("lookup_order"),
            Some(&CustomTool {
                name: "lookup_order".into(),
                program: program.clone(),
                args: vec!["--json".into(), "a b".into()],
                timeout: Duration::from_secs(30),
                description: Some("Looks an order up".into()),
            })
        );
        assert_eq!(tools.get("Refund-2").unwrap().timeout, DEFAULT_TIMEOUT);
        assert_eq!(tools.get("slow").unwrap().timeout, MAX_TIMEOUT);
        assert!(tools.owns("lookup_order") && !tools.owns("bash") && !tools.owns("lookup"));
        assert!(CustomTools::empty().is_empty());
        assert!(fx.tools("").unwrap().is_empty());
    }

    #[test]
    fn names_must_be_valid_unique_and_not_built_in() {
        let fx = Fixture::new();
        let p = fx.script("x", "true").display().to_string();
        let one = |name: &str| format!("[[tool]]\nname = {name:?}\ncommand = [{p:?}]\n");
        for bad in ["", "has space", "dot.name", "ünï", &"a".repeat(65)] {
            let e = load_err(&fx, &one(bad));
            assert!(
                e.contains("tools.toml") && e.contains("1 to 64 characters"),
                "{e}"
            );
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        assert!(fx.tools(&one(&"a".repeat(64))).is_ok());
        for builtin in ["bash", "read", "write", "edit", "glob", "grep"] {
            let e = load_err(&fx, &one(builtin));
            assert!(
                e.contains(&format!("tool \"{builtin}\": the name is a built-in")),
                "{e}"
            );
        }
        let e = load_err(&fx, &format!("{}{}", one("twice"), one("twice")));
        assert!(
            e.contains("tool \"twice\": the name is declared twice"),
            "{e}"
        );
    }

    #[test]
    fn the_program_must_be_absolute_existing_and_executable() {
        let fx = Fixture::new();
        let one = |cmd: &str| format!("[[tool]]\nname = \"t\"\ncommand = {cmd}\n");
        let e = load_err(&fx, &one(r#"["cat"]"#));
        assert!(
            e.contains("tool \"t\"") && e.contains("must be an absolute path"),
            "{e}"
        );
        let e = load_err(&fx, &one(r#"["/nonexistent/hands-tool"]"#));
        assert!(
            e.contains("/nonexistent/hands-tool") && e.contains("No such file"),
            "{e}"
        );
        let e = load_err(&fx, &one("[]"));
        assert!(e.contains("command is empty"), "{e}");
        let plain = fx.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_err(&fx, &one(&format!("[{:?}]", plain.display().to_string())));
        assert!(e.contains("is not executable"), "{e}");
        let e = load_err(
            &fx,
            &one(&format!("[{:?}]", fx.path().display().to_string())),
        );
        assert!(e.contains("is not a file"), "{e}");
        let e = load_err(&fx, &one(r#"["/bin/sh", "a\u0000b"]"#));
        assert!(e.contains("NUL"), "{e}");
    }

    #[test]
    fn timeouts_parse_and_are_bounded() {
        let fx = Fixture::new();
        let p = fx.script("x", "true").display().to_string();
        let with = |t: &str| {
            fx.tools(&format!(
                "[[tool]]\nname = \"t\"\ncommand = [{p:?}]\ntimeout = {t}\n"
            ))
        };
        let ok = |t: &str| with(t).unwrap().get("t").unwrap().timeout;
        assert_eq!(ok("\"1500ms\""), Duration::from_millis(1500));
        assert_eq!(ok("\"2m\""), Duration::from_secs(120));
        assert_eq!(ok("\"150s\""), MAX_TIMEOUT);
        assert_eq!(ok("45"), Duration::from_secs(45));
        for (bad, says) in [
            ("\"0s\"", "more than 0"),
            ("\"151s\"", "over the maximum of 150s"),
            ("\"3m\"", "over the maximum"),
            ("\"soon\"", "not a duration"),
            ("\"5h\"", "not a duration"),
            ("-5", "negative"),
            ("1.5", "not a float"),
        ] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains("tool \"t\"") && e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn syntax_errors_and_unknown_fields_name_the_file() {
        let fx = Fixture::new();
        let e = load_err(
            &fx,
            "[[tool]]\nname = \"t\"\ncommand = [\"/bin/true\"]\nshell = true\n",
        );
        assert!(e.contains("tools.toml") && e.contains("shell"), "{e}");
        let e = load_err(&fx, "[[tool]\n");
        assert!(
            e.starts_with("custom tools file ") && e.contains("tools.toml"),
            "{e}"
        );
        let e = load_err(&fx, "[[tool]]\nname = \"t\"\n");
        assert!(e.contains("command"), "{e}");
        let missing = fx.path().join("absent.toml");
        let e = CustomTools::load(&missing).unwrap_err().to_string();
        assert!(e.contains("absent.toml"), "{e}");
    }

    #[test]
    fn the_example_file_is_well_formed() {
        // Its programs are placeholders, so the first check that fails is the first program's.
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events/custom-tools.example.toml");
        match CustomTools::load(&example) {
            Err(CustomToolsError::Tool { name, problem, .. }) => {
                assert_eq!(name, "lookup_order");
                assert!(problem.contains("/usr/local/bin/lookup-order"), "{problem}");
            }
            other => panic!("unexpected: {other:?}"),
        }
    }

    // ---- calls ----

    #[tokio::test]
    async fn input_json_arrives_on_stdin_and_stdout_is_the_result() {
        let fx = Fixture::new();
        let tools = fx.tool("cat", "10s");
        let input = json!({"order": 42, "note": "ünï \"quoted\"\nline"});
        let out = fx.call(&tools, input.clone()).await;
        assert!(!out.is_error, "{}", text(&out));
        // One line of compact JSON; the trailing newline is trimmed like bash output.
        assert_eq!(text(&out), serde_json::to_string(&input).unwrap());
    }

    #[tokio::test]
    async fn stderr_stays_out_of_a_success_and_empty_output_is_no_output() {
        let fx = Fixture::new();
        let tools = fx.tool("echo noise >&2", "10s");
        let out = fx.call(&tools, json!({})).await;
        assert!(!out.is_error);
        assert_eq!(text(&out), "(no output)");
    }

    #[tokio::test]
    async fn runs_in_the_session_workdir() {
        let fx = Fixture::new();
        let tools = fx.tool("pwd", "10s");
        let out = fx.call(&tools, json!(null)).await;
        assert_eq!(text(&out), fx.path().display().to_string());
    }

    #[tokio::test]
    async fn non_zero_exit_is_an_error_with_stderr_and_stdout() {
        let fx = Fixture::new();
        let tools = fx.tool("echo partial; echo 'order 42 not found' >&2; exit 3", "10s");
        let out = fx.call(&tools, json!({"order": 42})).await;
        assert!(out.is_error);
        assert_eq!(
            text(&out),
            "t: exited with status 3\n[stderr]\norder 42 not found\n[stdout]\npartial"
        );
        let tools = fx.tool("exit 255", "10s");
        let out = fx.call(&tools, json!({})).await;
        assert!(out.is_error);
        assert_eq!(text(&out), "t: exited with status 255");
    }

    // Under RLIMIT_NPROC the tool's own words are the sign of a refused start (T5). The value
    // is this process's own hard limit, so the spawn works for any uid and limits nothing new.
    #[tokio::test]
    async fn a_refused_start_under_rlimit_nproc_is_said_in_plain_words() {
        let fx = Fixture::new();
        let hard = rustix::process::getrlimit(rustix::process::Resource::Nproc)
            .maximum
            .unwrap_or(u64::MAX);
        let nproc = Rlimits {
            nproc: Some(hard),
            ..Rlimits::default()
        };
        let refused = "echo 'sh: fork: retry: Resource temporarily unavailable' >&2; exit 2";
        let tools = fx
            .tool(refused, "10s")
            .with_isolation(EnvPolicy::default(), nproc.clone());
        let out = fx.call(&tools, json!({})).await;
        assert!(
            out.is_error
                && text(&out).ends_with(&format!(
                    "[resource limit: a process could not be started, most likely because this worker's user reached its limit of {hard} processes and threads (RLIMIT_NPROC), which counts every session's tools and the worker itself; what this command left running is killed when the call ends]"
                )),
            "{}",
            text(&out)
        );
        // A tool that succeeded, EAGAIN without a process start (a `cat` of a log, a
        // non-blocking read), or no RLIMIT_NPROC in force: no note.
        for (script, is_error) in [
            ("echo done", false),
            (
                "echo 'bash: fork: retry: Resource temporarily unavailable'",
                false,
            ),
            (
                "echo 'BlockingIOError: [Errno 11] Resource temporarily unavailable' >&2; exit 1",
                true,
            ),
        ] {
            let tools = fx
                .tool(script, "10s")
                .with_isolation(EnvPolicy::default(), nproc.clone());
            let out = fx.call(&tools, json!({})).await;
            assert_eq!(out.is_error, is_error, "{script}");
            assert!(!text(&out).contains("[resource limit"), "{}", text(&out));
        }
        let tools = fx.tool(refused, "10s");
        assert!(!text(&fx.call(&tools, json!({})).await).contains("[resource limit"));
    }

    #[tokio::test]
    async fn death_by_signal_is_reported_as_such() {
        let fx = Fixture::new();
        let tools = fx.tool("kill -SEGV $$", "10s");
        let out = fx.call(&tools, json!({})).await;
        assert!(out.is_error);
        assert_eq!(text(&out), "t: killed by signal 11");
    }

    #[tokio::test]
    async fn timeout_kills_the_tree_including_a_grandchild_holding_stdout() {
        let fx = Fixture::new();
        let marker = unique_sleep(1);
        let tools = fx.tool(
            &format!("echo started; echo warming >&2; sleep {marker} & sleep {marker}"),
            "1s",
        );
        let out = fx.call(&tools, json!({})).await;
        assert!(out.is_error);
        assert_eq!(
            text(&out),
            "t: timed out after 1s\n[the tool and everything it started were killed]\n\
             [stderr]\nwarming\n[stdout]\nstarted"
        );
        assert_eq!(survivors(&marker), Vec::<i32>::new());
    }

    #[tokio::test]
    async fn an_exited_tool_does_not_wait_for_descendants_holding_its_pipes() {
        // Pitfall 4 and T9: the tool exits at once but leaves a background child holding stdout
        // and stderr, one in a new session; the call ends anyway and neither survives it.
        let fx = Fixture::new();
        let (bg, detached) = (unique_sleep(2), unique_sleep(3));
        let tools = fx.tool(
            &format!("sleep {bg} & setsid sleep {detached} & echo done"),
            "150s",
        );
        let out = fx.call(&tools, json!({})).await;
        assert!(!out.is_error, "{}", text(&out));
        assert_eq!(text(&out), "done");
        assert_eq!(survivors(&bg), Vec::<i32>::new());
        assert_eq!(survivors(&detached), Vec::<i32>::new());
    }

    #[tokio::test]
    async fn cancellation_kills_the_tree() {
        let fx = Fixture::new();
        let marker = unique_sleep(4);
        let tools = fx.tool(
            &format!("sleep {marker} & touch started; sleep {marker}"),
            "150s",
        );
        let cancel = CancellationToken::new();
        let started = fx.path().join("started");
        let canceller = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                while !started.exists() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                cancel.cancel();
            })
        };
        let out = tools.call("t", json!({}), &fx.path(), &cancel).await;
        canceller.await.unwrap();
        assert!(out.is_error);
        assert_eq!(
            text(&out),
            "t: cancelled; the tool and everything it started were killed"
        );
        assert_eq!(survivors(&marker), Vec::<i32>::new());
    }

    #[tokio::test]
    async fn output_is_capped_to_its_tail() {
        let fx = Fixture::new();
        let tools = fx.tool(
            "head -c 300000 /dev/zero | tr '\\0' a; echo; echo END; head -c 100000 /dev/zero >&2",
            "30s",
        );
        let out = fx.call(&tools, json!({})).await;
        assert!(!out.is_error);
        let t = text(&out);
        assert!(t.starts_with(TRUNCATED_PREFIX), "{}", &t[..40]);
        assert!(t.ends_with("a\nEND"));
        assert_eq!(t.len(), TRUNCATED_PREFIX.len() + OUTPUT_BYTES - 1);
    }

    #[tokio::test]
    async fn invalid_utf8_is_shown_lossily_with_a_note() {
        let fx = Fixture::new();
        let tools = fx.tool("printf 'ok \\377\\376 done'", "10s");
        let out = fx.call(&tools, json!({})).await;
        assert!(!out.is_error);
        assert_eq!(
            text(&out),
            format!("ok \u{fffd}\u{fffd} done\n{LOSSY_NOTE}")
        );
    }

    #[tokio::test]
    async fn a_tool_that_ignores_a_large_input_still_finishes() {
        let fx = Fixture::new();
        let tools = fx.tool("echo ignored", "30s");
        let out = fx.call(&tools, json!({"blob": "x".repeat(4 << 20)})).await;
        assert_eq!((out.is_error, text(&out)), (false, "ignored".to_owned()));
    }

    #[tokio::test]
    async fn unknown_names_and_vanished_programs_are_error_results() {
        let fx = Fixture::new();
        let tools = fx.tool("true", "10s");
        let out = tools
            .call("nope", json!({}), &fx.path(), &CancellationToken::new())
            .await;
        assert!(out.is_error);
        assert_eq!(text(&out), "unknown custom tool: nope");
        std::fs::remove_file(fx.path().join("t.sh")).unwrap();
        let out = fx.call(&tools, json!({})).await;
        assert!(out.is_error);
        assert!(
            text(&out).starts_with("t: could not start "),
            "{}",
            text(&out)
        );
    }

    /// Makes a file with `mktemp`, shows it and where it is, checks the three variables agree,
    /// and tries to write into `/tmp` itself.
    const MKTEMP: &str = r#"f=$(mktemp) && echo data > "$f" && cat "$f" && dirname "$f"
[ "$TMP" = "$TMPDIR" ] && [ "$TEMP" = "$TMPDIR" ] && echo same
if (echo x > /tmp/hands-custom-tmp-probe-$$) 2>/dev/null; then
    rm -f /tmp/hands-custom-tmp-probe-$$; echo tmp-writable
else
    echo tmp-refused
fi"#;

    /// A session's private temporary directory (canonical, as `SessionTmp` makes it).
    fn session_tmp() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::Builder::new()
            .prefix("hands-custom-tmp-")
            .tempdir()
            .unwrap();
        let path = std::fs::canonicalize(dir.path()).unwrap();
        (dir, path)
    }

    async fn call_in_session(
        fx: &Fixture,
        tools: &CustomTools,
        tmp_dir: &Path,
        input: serde_json::Value,
    ) -> ToolOutput {
        let workdir = fx.path();
        let session = SessionSide {
            workdir: &workdir,
            tmp_dir: Some(tmp_dir),
            env: &[],
        };
        tools
            .call_in("t", input, &session, &CancellationToken::new())
            .await
    }

    #[tokio::test]
    async fn a_tool_makes_its_temporary_files_in_the_session_directory() {
        let fx = Fixture::new();
        let (_keep, tmp) = session_tmp();
        let tools = fx.tool(MKTEMP, "10s");
        let out = call_in_session(&fx, &tools, &tmp, json!({})).await;
        assert!(!out.is_error, "{}", text(&out));
        // Tier 0: `/tmp` stays writable, but the tool's files go to the session's directory.
        assert_eq!(
            text(&out),
            format!("data\n{}\nsame\ntmp-writable", tmp.display())
        );
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 1);
        // A tool that fails on a disk with room gets no disk note.
        let tools = fx.tool("echo 'bad input' >&2; exit 1", "10s");
        let out = call_in_session(&fx, &tools, &tmp, json!({})).await;
        assert_eq!(text(&out), "t: exited with status 1\n[stderr]\nbad input");
    }

    /// A custom tool writes to the workspace and the session temp dir, which other work may
    /// share: a full one is said to be full and maybe shared, never that files must be removed.
    #[test]
    fn a_custom_tools_disk_note_does_not_ask_for_deletions() {
        let places = disk_places(
            Path::new("/srv/ws"),
            Some(Path::new("/tmp/hands-tmp-0123456789abcdef")),
        );
        let notes: Vec<String> = places.iter().map(|p| p.no_space_note(1 << 30)).collect();
        assert_eq!(
            notes,
            [
                "[resource limit: the filesystem of the workspace /srv/ws is full (1 GiB in all; it may be shared with other work on this host)]",
                "[resource limit: the filesystem of the temporary directory /tmp/hands-tmp-0123456789abcdef is full (1 GiB in all; it may be shared with other work on this host)]",
            ]
        );
        assert!(
            places
                .iter()
                .all(|p| !p.no_inodes_note(10).contains("removed"))
        );
        assert_eq!(disk_places(Path::new("/srv/ws"), None).len(), 1);
    }

    /// Tier 1 (Landlock + seccomp) as the tier-1 suite gets it: `None` after printing why it
    /// cannot run here, a failure with `REQUIRE_ISOLATION=1`.
    fn tier1() -> Option<hands_sandbox::Tier1Sandbox> {
        use hands_sandbox::{HostProbe, IsolationMode, Tier, Tier1Options};
        let probe = HostProbe::run();
        match probe.select(IsolationMode::Tier(Tier::Landlock), true) {
            Ok(_) => probe.tier1_sandbox(Tier1Options::default()),
            Err(e) if std::env::var("REQUIRE_ISOLATION").is_ok_and(|v| v == "1") => {
                panic!("REQUIRE_ISOLATION=1 but tier 1 cannot engage: {e}")
            }
            Err(e) => {
                eprintln!("skipping: {e}");
                None
            }
        }
    }

    #[tokio::test]
    async fn at_tier1_a_tool_writes_temporary_files_in_the_session_directory_only() {
        let Some(sandbox) = tier1() else {
            return;
        };
        let fx = Fixture::new();
        let (_keep, tmp) = session_tmp();
        let tools = fx
            .tool(MKTEMP, "10s")
            .with_sandbox(Isolation::Landlock(sandbox));
        let out = call_in_session(&fx, &tools, &tmp, json!({})).await;
        assert!(!out.is_error, "{}", text(&out));
        // `/tmp` itself is refused: the sandbox is in force, and `mktemp` works all the same.
        assert_eq!(
            text(&out),
            format!("data\n{}\nsame\ntmp-refused", tmp.display())
        );
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 1);
    }

    const CANARY_CHILD: &str = "HANDS_CUSTOM_TOOLS_CANARY_CHILD";
    const CANARY: &str = "canary-custom-tool-3f9d1a";

    /// T1: a variable in the worker's environment never reaches a custom tool. The canary must
    /// be in the environment the process started with, so this test re-runs the test binary.
    #[test]
    fn the_worker_environment_never_reaches_a_tool() {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "custom_tools::tests::canary_child",
                "--include-ignored",
                "--test-threads=1",
            ])
            .env(CANARY_CHILD, "1")
            .env("SERVICE_KEY", CANARY)
            .env("ANTHROPIC_ENVIRONMENT_KEY", CANARY)
            .env("AWS_SECRET_ACCESS_KEY", CANARY)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // A filtered-out child would "pass" with nothing run.
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child failed:\n{stdout}\n{stderr}"
        );
    }

    #[test]
    #[ignore = "run by the_worker_environment_never_reaches_a_tool, with canaries in its environment"]
    fn canary_child() {
        assert_eq!(std::env::var(CANARY_CHILD).as_deref(), Ok("1"));
        assert_eq!(std::env::var("SERVICE_KEY").as_deref(), Ok(CANARY));
        let fx = Fixture::new();
        let tools = fx.tool("env; tr '\\0' '\\n' < /proc/self/environ", "10s");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let out = rt.block_on(fx.call(&tools, json!({})));
        let t = text(&out);
        assert!(!out.is_error && t.contains("PATH="), "{t}");
        assert!(!t.contains(CANARY) && !t.contains("SERVICE_KEY"), "{t}");
    }
}
