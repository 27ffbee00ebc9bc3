//! `bash`: one persistent `/bin/bash --noprofile --norc` per session.
//!
//! How a command runs. The shell's stdin is a pipe we own; each command is sent as one line,
//! `eval '<command>' </dev/null 2>&1; __hands_rc=$?; disown -a; printf '\n<marker>%d\n' ...`,
//! where the marker holds a fresh random nonce (split by quotes in what we send, so only the
//! shell's `printf` assembles it). So:
//! - the command's stdin is `/dev/null` (`read x` gets EOF instead of hanging; T8);
//! - stdout and stderr arrive interleaved on the one pipe the shell writes to;
//! - `eval` of a quoted string means a syntax error in the command is an error *result* rather
//!   than the shell waiting forever for the rest of an unclosed quote, while `cd`, `export`
//!   and functions still persist, as they do in the reference. (The reference's `{ cmd\n}`
//!   wrapper is not used: after a syntax error inside `eval`, bash 5.2 no longer parses a
//!   following `{` as a reserved word, which would break every later call.);
//! - `disown -a` drops background jobs from the shell's job table before the sweep kills them,
//!   so the shell does not print "Killed ..." notices into the next call's output;
//! - the call ends when the marker line arrives, not when the pipe closes, so a background
//!   child holding the pipe (`sleep 1000 &`) cannot hold the call (pitfall 4).
//!
//! The output is read into a bounded tail buffer (the last 100 KiB are kept, everything is
//! drained), so a command printing 1 GiB costs bounded memory (T7). After the marker, the
//! descendant sweep (`hands_sandbox::sweep`) kills everything the command left running, and
//! whatever those processes managed to write is drained and dropped so it cannot leak into the
//! next call. On timeout or cancellation the shell's whole tree is killed; after a timeout a new
//! shell is started at once (the reference leaves the session dead until `restart`), and the
//! result says so.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use hands_protocol::toolset::{BashInput, ToolOutput};
use hands_sandbox::{ShellProcess, ShellSpec, SweepScope, kill_group, spawn_shell, sweep};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::disk_full::{DiskPlace, full_disk_note};
use crate::output::shape_tail;

/// Read size from the output pipe.
const CHUNK: usize = 64 * 1024;

/// The session's shell, started on first use.
pub(crate) struct BashState {
    spec: ShellSpec,
    default_timeout: Duration,
    output_limit: usize,
    /// Filesystems a command writes to, looked at when it fails (a full one is named).
    disk: Vec<DiskPlace>,
    shell: Option<Shell>,
}

/// A running shell. Dropping it kills its whole tree (synchronously: a last resort when the
/// owner did not call [`Shell::kill`]).
struct Shell {
    proc: Option<ShellProcess>,
}

impl Drop for Shell {
    fn drop(&mut self) {
        if let Some(proc) = self.proc.take() {
            let _ = kill_group(proc.scope.leader);
            sweep(&proc.scope, false);
        }
    }
}

async fn sweep_blocking(scope: SweepScope, spare_leader: bool) {
    let fallback = scope.clone();
    if tokio::task::spawn_blocking(move || sweep(&scope, spare_leader))
        .await
        .is_err()
    {
        // The blocking pool is gone (runtime shutting down): do it here rather than not at all.
        sweep(&fallback, spare_leader);
    }
}

impl Shell {
    async fn start(spec: &ShellSpec) -> Result<Shell, hands_sandbox::SandboxError> {
        Ok(Shell {
            proc: Some(spawn_shell(spec).await?),
        })
    }

    /// Kills the shell and everything it started, and reaps the shell.
    async fn kill(mut self) {
        if let Some(mut proc) = self.proc.take() {
            // Sweep first, while the shell is alive and the parent links still lead to it;
            // then the group, then sweep again for anything forked in between.
            sweep_blocking(proc.scope.clone(), false).await;
            let _ = kill_group(proc.scope.leader);
            let _ = proc.child.start_kill();
            let _ = proc.child.wait().await;
            sweep_blocking(proc.scope.clone(), false).await;
        }
    }
}

/// The bounded capture of one command's output.
struct Capture {
    buf: Vec<u8>,
    limit: usize,
    truncated: bool,
    total: u64,
}

enum Ended {
    /// The marker arrived: the command's exit status, and where its output ends in `buf`.
    Marker {
        status: i32,
        at: usize,
    },
    /// The output pipe closed: the shell is gone (`exit`, `exec`, killed from inside).
    ShellExited,
    Io(std::io::Error),
}

impl Capture {
    fn new(limit: usize) -> Self {
        Capture {
            buf: Vec::with_capacity(8 * 1024),
            limit,
            truncated: false,
            total: 0,
        }
    }

    /// Keeps at most the last `limit` bytes plus a window for the marker.
    fn bound(&mut self, keep_extra: usize) {
        let keep = self.limit + keep_extra;
        if self.buf.len() > 2 * keep {
            let cut = self.buf.len() - keep;
            self.buf.drain(..cut);
            self.truncated = true;
        }
    }

    /// The command's output as the model reads it.
    fn text(&self, end: usize) -> (String, bool) {
        shape_tail(
            &self.buf[..end.min(self.buf.len())],
            self.limit,
            self.truncated,
        )
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    // Every output byte passes through here: a vectorised search, not a window-by-window one.
    memchr::memmem::find(haystack, needle)
}

fn nonce() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty())?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Single-quotes `s` for bash: inside `'...'` nothing is special but `'` itself.
fn single_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    out.push_str(&s.replace('\'', r"'\''"));
    out.push('\'');
    out
}

/// Sends `command` and reads until its marker (or the end of the pipe) into `cap`.
async fn run_command(proc: &mut ShellProcess, command: &str, cap: &mut Capture) -> Ended {
    let Ok(nonce) = nonce() else {
        return Ended::Io(std::io::Error::other(
            "no randomness for the command marker",
        ));
    };
    let marker = format!("__HANDS_DONE_{nonce}__");
    let script = format!(
        "eval {} </dev/null 2>&1; __hands_rc=$?; disown -a 2>/dev/null; \
         printf '\\n__HANDS_''DONE_{nonce}__%d\\n' \"$__hands_rc\"; unset __hands_rc\n",
        single_quote(command)
    );
    if let Err(e) = proc.stdin.write_all(script.as_bytes()).await {
        return if e.kind() == std::io::ErrorKind::BrokenPipe {
            // The shell died before reading the command (a tier-1 helper that refused to
            // start says why on the pipe): keep what it wrote, without waiting for more.
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = proc.output.try_read(&mut chunk) {
                cap.total += n as u64;
                cap.buf.extend_from_slice(&chunk[..n]);
                cap.bound(CHUNK);
            }
            Ended::ShellExited
        } else {
            Ended::Io(e)
        };
    }
    let marker = marker.as_bytes();
    let mut chunk = vec![0u8; CHUNK];
    // Where the next marker search starts; never before a possible partial marker.
    let mut scan_from = 0usize;
    loop {
        let n = match proc.output.read(&mut chunk).await {
            Ok(0) => return Ended::ShellExited,
            Ok(n) => n,
            Err(e) => return Ended::Io(e),
        };
        cap.total += n as u64;
        cap.buf.extend_from_slice(&chunk[..n]);
        loop {
            let Some(pos) = find(&cap.buf[scan_from..], marker) else {
                scan_from = cap.buf.len().saturating_sub(marker.len());
                break;
            };
            let at = scan_from + pos;
            let after = at + marker.len();
            let line_end = cap.buf[after..].iter().position(|&b| b == b'\n');
            match line_end {
                Some(len) => {
                    // Only digits (and a sign) may follow the real marker; anything else is an
                    // echo of it (`set -x` traces the printf) and the search goes on.
                    let status = std::str::from_utf8(&cap.buf[after..after + len])
                        .ok()
                        .and_then(|s| s.parse::<i32>().ok());
                    match status {
                        Some(status) => return Ended::Marker { status, at },
                        None => scan_from = at + 1,
                    }
                }
                None if cap.buf.len() - after > 16 => scan_from = at + 1,
                None => {
                    scan_from = at;
                    break;
                }
            }
        }
        let before = cap.buf.len();
        cap.bound(CHUNK);
        scan_from = scan_from.saturating_sub(before - cap.buf.len());
    }
}

/// Discards whatever is still readable on the pipe (output of killed background processes).
fn drain(proc: &ShellProcess) {
    let mut chunk = [0u8; 8192];
    while let Ok(n) = proc.output.try_read(&mut chunk) {
        if n == 0 {
            break;
        }
    }
}

/// How the shell ended, as the result says it: `status N`, or `killed by signal N` (T14: the
/// signal exactly, never a vague "a signal"), and in plain words when that was the CPU time
/// limit (issue 7: every limit hit is said as such).
///
/// `pid1_shell`: the shell ran as pid 1 of a tier-2 sandbox, so the status is bubblewrap's,
/// which reports a signal N as status 128+N; and pid 1 ignores SIGXCPU, so a shell burning CPU
/// itself runs on to the hard limit (a second above `cpu_seconds`) and is killed by SIGKILL.
/// A SIGKILL can also come from the OOM killer or from outside, so there it is said to be the
/// CPU limit only when `shell_cpu`, the CPU time the shell itself used as far as it can be
/// known (see [`CpuWatch`]), reached the limit; unknown is not enough.
fn ended_how(
    status: Option<std::process::ExitStatus>,
    cpu_seconds: Option<u64>,
    pid1_shell: bool,
    shell_cpu: Option<Duration>,
) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    const SIGKILL: i32 = 9;
    const SIGXCPU: i32 = 24;
    let (how, signal) = match status.map(|s| (s.code(), s.signal())) {
        Some((Some(code), _)) if pid1_shell && (129..=192).contains(&code) => (
            format!(
                "killed by signal {}, status {code} from the sandbox",
                code - 128
            ),
            Some(code - 128),
        ),
        Some((Some(code), _)) => (format!("status {code}"), None),
        Some((None, Some(signal))) => (format!("killed by signal {signal}"), Some(signal)),
        _ => ("status unknown".to_owned(), None),
    };
    match (cpu_seconds, signal) {
        (Some(n), Some(SIGXCPU)) => format!("{how}: the CPU time limit ({n} s) was reached"),
        (Some(n), Some(SIGKILL))
            if pid1_shell && shell_cpu.is_some_and(|used| used >= Duration::from_secs(n)) =>
        {
            format!("{how}: the CPU time limit ({n} s) was reached")
        }
        _ => how,
    }
}

/// CPU time in clock ticks from a `/proc/<pid>/stat`: the process's own (utime + stime) and its
/// reaped children's (cutime + cstime, which include what those reaped below them).
fn stat_cpu_ticks(raw: &[u8]) -> Option<(u64, u64)> {
    // The command name (field 2) may hold spaces and parentheses: count after the last `)`.
    let close = raw.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(raw.get(close + 1..)?).ok()?;
    // Fields 14 to 17 are the 12th to 15th after the `)`.
    let mut f = rest
        .split_ascii_whitespace()
        .skip(11)
        .map(|v| v.parse::<u64>().ok());
    let (utime, stime, cutime, cstime) = (f.next()??, f.next()??, f.next()??, f.next()??);
    Some((utime + stime, cutime + cstime))
}

/// How often the tier-2 shell's own CPU time is sampled while a command runs under a CPU limit.
const CPU_SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// What tells, once a tier-2 shell under a CPU limit has been killed by SIGKILL, whether its
/// own CPU time reached the limit (the hard limit, one second above it, sends that SIGKILL to
/// pid 1, which ignores SIGXCPU) or the kill came from elsewhere (the OOM killer, an operator).
/// Two figures must both reach the limit:
/// - an upper bound: the dead tree's CPU ([`dead_tree_cpu_ticks`]) minus what the shell's
///   reaped children had used before the command. It also counts the command's own children,
///   so alone it would take a `make -j` burning N CPU-seconds in compilers for the limit;
/// - the last sample of the shell's OWN CPU (utime + stime of `/proc/<shell>/stat`), taken
///   every [`CPU_SAMPLE_EVERY`] while the command runs. The single-threaded shell gains at most
///   one CPU-second per second, and the limit's kill comes at N + 1 s of its own CPU, so a
///   sample from less than a second before a limit kill is at least N s; a kill from outside
///   after children did the burning finds the shell's own figure low.
///
/// Without `/proc/<pid>/task/<tid>/children` (a kernel without `CONFIG_PROC_CHILDREN`) the
/// shell's `/proc` entry cannot be found: nothing is known and the limit is never claimed.
struct CpuWatch {
    /// `/proc/<shell>/stat` (host pid).
    stat: PathBuf,
    /// The shell's reaped children's CPU before the command, in clock ticks.
    children_before: u64,
    /// The shell's own CPU at the last sample, in clock ticks.
    own_last: Option<u64>,
}

impl CpuWatch {
    fn start(scope: &SweepScope) -> Option<CpuWatch> {
        // `/proc/<shell>/root`'s sibling.
        let stat = hands_sandbox::sandbox_root(scope)?.with_file_name("stat");
        let (own, children_before) = stat_cpu_ticks(&std::fs::read(&stat).ok()?)?;
        Some(CpuWatch {
            stat,
            children_before,
            own_last: Some(own),
        })
    }

    /// Reads the shell's own CPU time now, if its `/proc` entry is still there (a zombie's is).
    fn sample(&mut self) {
        if let Some((own, _)) = std::fs::read(&self.stat)
            .ok()
            .and_then(|raw| stat_cpu_ticks(&raw))
        {
            self.own_last = Some(own);
        }
    }

    /// The shell's own CPU time as far as both figures allow (the smaller), once the dead tree's
    /// total is known; `None` when either is unknown.
    fn shell_cpu(&self, dead_tree_total: Option<u64>) -> Option<Duration> {
        let bound = dead_tree_total?.saturating_sub(self.children_before);
        Some(ticks_to_duration(bound.min(self.own_last?)))
    }
}

/// The CPU time the dead tree under bubblewrap (`pid`) used in all, in clock ticks: bubblewrap's
/// own and that of everything reaped below it (the shell, its pid 1, reaps its children and, as
/// it dies, the rest of its namespace). Waits for bubblewrap to exit without reaping it
/// (`WNOWAIT`), so its zombie's counters can be read and the `Child` still reaps it after.
/// Minus what the shell's children had used before the command ([`CpuWatch`]), it bounds from
/// above the CPU time the shell itself used, which is what `RLIMIT_CPU` counts.
async fn dead_tree_cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid?).ok()?)?;
    tokio::task::spawn_blocking(move || {
        use rustix::process::{WaitId, WaitIdOptions};
        loop {
            match rustix::process::waitid(
                WaitId::Pid(pid),
                WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
            ) {
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return None,
            }
        }
        let raw = std::fs::read(format!("/proc/{}/stat", pid.as_raw_nonzero())).ok()?;
        stat_cpu_ticks(&raw).map(|(own, children)| own + children)
    })
    .await
    .ok()?
}

fn ticks_to_duration(ticks: u64) -> Duration {
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Duration::from_secs(ticks / per_second)
        + Duration::from_nanos((ticks % per_second) * 1_000_000_000 / per_second)
}

fn seconds(d: Duration) -> String {
    // Python prints `timeout_ms / 1000.0` with `repr`: `1.0`, `0.5`, `120.0`. Rust's `{:?}`
    // for f64 is the same shortest round-trip form.
    format!("{:?}", d.as_secs_f64())
}

impl BashState {
    pub(crate) fn new(
        spec: ShellSpec,
        default_timeout: Duration,
        output_limit: usize,
        disk: Vec<DiskPlace>,
    ) -> Self {
        BashState {
            spec,
            default_timeout,
            output_limit,
            disk,
            shell: None,
        }
    }

    async fn ensure_shell(&mut self) -> Result<&mut Shell, String> {
        if self.shell.is_none() {
            self.shell = Some(
                Shell::start(&self.spec)
                    .await
                    .map_err(|e| format!("bash: {e}"))?,
            );
        }
        self.shell
            .as_mut()
            .ok_or_else(|| "bash: no shell".to_owned())
    }

    /// Starts the shell ahead of the first command. A start that fails is not kept: the first
    /// command tries again and its result says why.
    pub(crate) async fn warm(&mut self) {
        if let Err(e) = self.ensure_shell().await {
            tracing::debug!(error = %e, "bash: the shell could not be started ahead of use");
        }
    }

    /// Kills the shell and its whole tree; the next command starts a new one.
    pub(crate) async fn shutdown(&mut self) {
        if let Some(shell) = self.shell.take() {
            shell.kill().await;
        }
    }

    pub(crate) async fn call(
        &mut self,
        input: BashInput,
        cancel: &CancellationToken,
    ) -> ToolOutput {
        if input.restart == Some(true) {
            self.shutdown().await;
            return match self.ensure_shell().await {
                Ok(_) => ToolOutput::ok("bash session restarted"),
                Err(e) => ToolOutput::error(e),
            };
        }
        let Some(command) = input.command.filter(|c| !c.is_empty()) else {
            return ToolOutput::error("bash: command is required");
        };
        if command.contains('\0') {
            return ToolOutput::error("bash: command contains a NUL byte");
        }
        let timeout = match input.timeout_ms {
            Some(ms) if ms > 0 => Duration::from_millis(ms),
            _ => self.default_timeout,
        };
        let limit = self.output_limit;
        let watch_cpu = self.spec.rlimits.cpu_seconds.is_some()
            && matches!(self.spec.isolation, hands_sandbox::Isolation::Bwrap(_));
        let shell = match self.ensure_shell().await {
            Ok(s) => s,
            Err(e) => return ToolOutput::error(e),
        };
        let Some(proc) = shell.proc.as_mut() else {
            return ToolOutput::error("bash: no shell");
        };
        let mut cap = Capture::new(limit);
        let refused_before = proc.pids.as_ref().map_or(0, |p| p.refused_forks());
        // At tier 2 with a CPU limit, a SIGKILL of the shell is the limit only if the shell
        // used that much CPU itself: watched while the command runs (see `CpuWatch`).
        let mut cpu_watch = if watch_cpu {
            CpuWatch::start(&proc.scope)
        } else {
            None
        };
        enum Stop {
            Ended(Ended),
            Timeout,
            Cancelled,
        }
        let stop = {
            let run = run_command(proc, &command, &mut cap);
            tokio::pin!(run);
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            let mut tick = tokio::time::interval(CPU_SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    ended = &mut run => break Stop::Ended(ended),
                    () = &mut deadline => break Stop::Timeout,
                    () = cancel.cancelled() => break Stop::Cancelled,
                    _ = tick.tick(), if cpu_watch.is_some() => {
                        if let Some(watch) = cpu_watch.as_mut() {
                            watch.sample();
                        }
                    }
                }
            }
        };
        // Read now: the branches below may kill the shell and remove its cgroup.
        let mut limit_note = proc
            .pids
            .as_ref()
            .and_then(|p| p.limit_note(refused_before));
        // A failed command may have filled a disk: which ones to look at (tier 2's tmpfs mounts
        // through the shell inside, while it is alive).
        let mut disk_check: Option<Vec<DiskPlace>> = None;
        let mut result = match stop {
            Stop::Ended(Ended::Marker { status, at }) => {
                if status != 0 {
                    let root = hands_sandbox::sandbox_root(&proc.scope);
                    disk_check = Some(
                        root.iter()
                            .flat_map(|r| ["/tmp", "/dev/shm"].map(|m| DiskPlace::in_sandbox(r, m)))
                            .collect(),
                    );
                }
                // Fast path: one small read says whether the command left anything behind.
                if hands_sandbox::has_descendants(&proc.scope) != Some(false) {
                    sweep_blocking(proc.scope.clone(), true).await;
                    // What the command left running may have hit the limit until the sweep.
                    limit_note = proc
                        .pids
                        .as_ref()
                        .and_then(|p| p.limit_note(refused_before));
                }
                drain(proc);
                let (text, _) = cap.text(at);
                if status == 0 {
                    ToolOutput::ok(text)
                } else if text.is_empty() {
                    ToolOutput::error(format!("exit {status}"))
                } else {
                    ToolOutput::error(text)
                }
            }
            Stop::Ended(Ended::ShellExited) => {
                let mut shell_cpu = None;
                let status = match self.shell.take() {
                    Some(mut shell) => {
                        let status = match shell.proc.as_mut() {
                            Some(p) => {
                                if let Some(watch) = cpu_watch.as_mut() {
                                    // The shell's zombie may still be there to read.
                                    watch.sample();
                                    shell_cpu =
                                        watch.shell_cpu(dead_tree_cpu_ticks(p.child.id()).await);
                                }
                                p.child.wait().await.ok()
                            }
                            None => None,
                        };
                        shell.kill().await;
                        status
                    }
                    None => None,
                };
                let code = status.and_then(|s| s.code());
                let (mut text, _) = cap.text(cap.buf.len());
                if !text.is_empty() {
                    text.push('\n');
                }
                let helper_failed = code == Some(hands_sandbox::HELPER_EXIT_CODE)
                    && text.starts_with(hands_sandbox::HELPER_ERROR_PREFIX);
                let code = ended_how(
                    status,
                    self.spec.rlimits.cpu_seconds,
                    matches!(self.spec.isolation, hands_sandbox::Isolation::Bwrap(_)),
                    shell_cpu,
                );
                if helper_failed {
                    // The tier-1 helper refused before the shell existed: say so, nothing ran.
                    let _ = write!(
                        text,
                        "[the tier 1 sandbox could not be applied ({code}), so no command ran; the worker's isolation settings need fixing]"
                    );
                } else {
                    let _ = write!(
                        text,
                        "[the shell exited ({code}); the next command starts a new shell (working directory and variables reset)]"
                    );
                }
                ToolOutput::error(text)
            }
            Stop::Ended(Ended::Io(e)) => {
                self.shutdown().await;
                ToolOutput::error(format!(
                    "bash: i/o error talking to the shell: {e}; the shell was killed"
                ))
            }
            Stop::Timeout => {
                // A command that ran out its time may have been stuck on a full disk (or filled
                // it): the session's own places are looked at (a tier-2 sandbox's tmpfs goes
                // with the shell killed below, so not those).
                disk_check = Some(Vec::new());
                self.shutdown().await;
                let restarted = self.ensure_shell().await.is_ok();
                let mut text = format!("bash: bash command timed out after {}s", seconds(timeout));
                text.push_str(if restarted {
                    "\n[the command and everything it started were killed, and the shell was restarted: working directory and variables are reset]"
                } else {
                    "\n[the command and everything it started were killed; a new shell could not be started yet]"
                });
                let (partial, _) = cap.text(cap.buf.len());
                if !partial.is_empty() {
                    let _ = write!(text, "\n[output before the timeout]\n{partial}");
                }
                ToolOutput::error(text)
            }
            Stop::Cancelled => {
                self.shutdown().await;
                ToolOutput::error(
                    "bash: cancelled; the command and everything it started were killed",
                )
            }
        };
        // Under RLIMIT_NPROC (no pids cgroup here) a failed command's output is the only sign
        // of the limit.
        let limit_note =
            limit_note.or_else(|| crate::output::nproc_note(&self.spec.rlimits, &result));
        if let Some(note) = limit_note {
            crate::output::append_note(&mut result, &note);
        }
        if let Some(mut places) = disk_check {
            places.splice(0..0, self.disk.iter().cloned());
            if let Some(note) = full_disk_note(&places) {
                crate::output::append_note(&mut result, &note);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::{CpuWatch, ended_how, stat_cpu_ticks, ticks_to_duration};
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::ExitStatus;
    use std::time::Duration;

    /// A wait status: exited with `code`, or killed by `signal`.
    fn exited(code: i32) -> Option<ExitStatus> {
        Some(ExitStatus::from_raw(code << 8))
    }
    fn killed(signal: i32) -> Option<ExitStatus> {
        Some(ExitStatus::from_raw(signal))
    }

    #[test]
    fn the_end_of_the_shell_is_said_with_the_cpu_limit_in_plain_words() {
        let burnt = Some(Duration::from_secs(6));
        assert_eq!(ended_how(exited(3), None, false, None), "status 3");
        assert_eq!(
            ended_how(killed(9), None, false, None),
            "killed by signal 9"
        );
        assert_eq!(ended_how(None, Some(1), false, None), "status unknown");
        // Tiers 0 and 1: the shell itself dies of SIGXCPU.
        assert_eq!(
            ended_how(killed(24), Some(5), false, None),
            "killed by signal 24: the CPU time limit (5 s) was reached"
        );
        // Without a CPU limit SIGXCPU came from elsewhere; SIGKILL outside tier 2 is no limit.
        assert_eq!(
            ended_how(killed(24), None, false, None),
            "killed by signal 24"
        );
        assert_eq!(
            ended_how(killed(9), Some(5), false, burnt),
            "killed by signal 9"
        );
        // Tier 2: bubblewrap's status 128+N; pid 1 ignores SIGXCPU and meets the hard limit,
        // having used at least the limit's CPU time.
        assert_eq!(
            ended_how(exited(137), Some(5), true, burnt),
            "killed by signal 9, status 137 from the sandbox: the CPU time limit (5 s) was reached"
        );
        assert_eq!(
            ended_how(exited(137), Some(5), true, Some(Duration::from_secs(5))),
            "killed by signal 9, status 137 from the sandbox: the CPU time limit (5 s) was reached"
        );
        // A SIGKILL with less CPU used (the OOM killer, a kill from outside), or with the CPU
        // time unknown, is said as it is.
        for used in [
            Some(Duration::from_millis(4990)),
            Some(Duration::ZERO),
            None,
        ] {
            assert_eq!(
                ended_how(exited(137), Some(5), true, used),
                "killed by signal 9, status 137 from the sandbox",
                "{used:?}"
            );
        }
        assert_eq!(
            ended_how(exited(137), None, true, burnt),
            "killed by signal 9, status 137 from the sandbox"
        );
        assert_eq!(ended_how(exited(1), Some(5), true, burnt), "status 1");
        assert_eq!(ended_how(exited(200), Some(5), true, burnt), "status 200");
    }

    /// The shell's own CPU is the smaller of the dead tree's bound and the last sample: a
    /// command's children burning (a large bound) with the shell idle (a small sample) is not
    /// the shell's CPU, and either figure unknown is unknown.
    #[test]
    fn the_shells_cpu_needs_both_the_bound_and_the_sample() {
        let watch = |own_last| CpuWatch {
            stat: "/nonexistent".into(),
            children_before: 100,
            own_last,
        };
        assert_eq!(
            watch(Some(20)).shell_cpu(Some(1_000)),
            Some(ticks_to_duration(20))
        );
        assert_eq!(
            watch(Some(5_000)).shell_cpu(Some(1_000)),
            Some(ticks_to_duration(900))
        );
        assert_eq!(watch(None).shell_cpu(Some(1_000)), None);
        assert_eq!(watch(Some(20)).shell_cpu(None), None);
        // A vanished entry keeps the last sample.
        let mut w = watch(Some(20));
        w.sample();
        assert_eq!(w.own_last, Some(20));
    }

    #[test]
    fn cpu_times_are_read_after_the_command_name() {
        // A command name with spaces and parentheses; utime 150, stime 50, cutime 7, cstime 3.
        let raw = b"4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 50 7 3 20 0 1 0 99 0 0";
        assert_eq!(stat_cpu_ticks(raw), Some((200, 10)));
        assert_eq!(
            stat_cpu_ticks(b"4242 (sh) S 1 4242 4242 0 -1 0 1 2 3 4 5"),
            None
        );
        assert_eq!(stat_cpu_ticks(b"garbage"), None);
        // This process's own file parses.
        assert!(stat_cpu_ticks(&std::fs::read("/proc/self/stat").unwrap()).is_some());
    }
}
