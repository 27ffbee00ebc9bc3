//! The workers under test as child processes, and their memory from `/proc`: the worker's own
//! RSS, and the total of everything it started (the shells), sampled from another thread.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The logs the workers write in [`Launch::logs`], appended to by every start within one
/// invocation of the benchmark, and removed at the start of the next ([`Launch::clear_logs`]).
const HANDS_POLL_LOG: &str = "hands-poll.log";
const NULL_WORKER_LOG: &str = "null-worker.log";
const HANDS_SERVE_LOG: &str = "hands-serve.log";
const SDK_WEBHOOK_LOG: &str = "sdk-webhook.log";
const SDK_WORKER_LOG: &str = "sdk-worker.log";
const LOGS: [&str; 5] = [
    HANDS_POLL_LOG,
    NULL_WORKER_LOG,
    HANDS_SERVE_LOG,
    SDK_WEBHOOK_LOG,
    SDK_WORKER_LOG,
];

/// Which worker, and how to start it.
#[derive(Clone, Debug)]
pub struct Launch {
    pub hands: PathBuf,
    pub python: PathBuf,
    pub sdk_worker: PathBuf,
    /// `sdk_webhook.py`: the SDK's webhook path (verify, drain, `handle_item`).
    pub sdk_webhook: PathBuf,
    /// `--isolation` for `hands` (None: its default).
    pub isolation: Option<String>,
    /// CPU list for `taskset -c` (the worker and what it starts), if pinning.
    pub cpu: Option<String>,
    pub logs: PathBuf,
}

/// Where the control plane is.
pub struct Target<'a> {
    pub base_url: &'a str,
    pub environment_id: &'a str,
    pub environment_key: &'a str,
    /// devplane's API key, which the SDK client wants (hands needs none).
    pub api_key: &'a str,
}

impl Launch {
    /// `program` under this launch's `taskset`, if any.
    pub fn command(&self, program: &Path) -> Command {
        match &self.cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Removes the logs an earlier invocation left (only the files named in [`LOGS`]): kept,
    /// they grew by a line per call of every run (256 MB after a day of runs here).
    pub fn clear_logs(&self) -> anyhow::Result<()> {
        for name in LOGS {
            let path = self.logs.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("removing {}", path.display()));
                }
            }
        }
        Ok(())
    }

    fn log(&self, name: &str) -> anyhow::Result<Stdio> {
        let path = self.logs.join(name);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Stdio::from(f))
    }

    /// `--isolation X` when one is asked for.
    fn isolation(&self, c: &mut Command) {
        if let Some(i) = &self.isolation {
            c.arg("--isolation").arg(i);
        }
    }

    fn env(c: &mut Command, t: &Target<'_>) {
        for (k, _) in std::env::vars_os() {
            // The caller's HANDS_* (HANDS_ISOLATION, ...) would change what "the default" means.
            let k_str = k.to_string_lossy();
            if k_str.starts_with("ANTHROPIC_") || k_str.starts_with("HANDS_") {
                c.env_remove(k);
            }
        }
        c.env("ANTHROPIC_ENVIRONMENT_ID", t.environment_id)
            .env("ANTHROPIC_ENVIRONMENT_KEY", t.environment_key)
            .env("ANTHROPIC_BASE_URL", t.base_url)
            .stdin(Stdio::null());
    }

    /// `hands poll` serving up to `sessions` at once in `workdir`.
    pub fn hands_poll(
        &self,
        t: &Target<'_>,
        workdir: &Path,
        sessions: usize,
    ) -> anyhow::Result<Child> {
        let mut c = self.command(&self.hands);
        c.arg("poll")
            .arg("--workdir")
            .arg(workdir)
            .arg("--max-sessions")
            .arg(sessions.max(1).to_string())
            .arg("--max-idle")
            .arg("1s");
        self.isolation(&mut c);
        Self::env(&mut c, t);
        c.stdout(self.log(HANDS_POLL_LOG)?)
            .stderr(self.log(HANDS_POLL_LOG)?);
        c.spawn().context("starting hands poll")
    }

    /// The null worker (this benchmark's own binary, `null-worker N`), the floor.
    pub fn null_worker(&self, t: &Target<'_>, sessions: usize) -> anyhow::Result<Child> {
        let me = std::env::current_exe().context("finding the benchmark's own binary")?;
        let mut c = self.command(&me);
        c.arg("null-worker").arg(sessions.max(1).to_string());
        Self::env(&mut c, t);
        c.stdout(self.log(NULL_WORKER_LOG)?)
            .stderr(self.log(NULL_WORKER_LOG)?);
        c.spawn().context("starting the null worker")
    }

    /// `hands serve` on `listen`, woken by webhooks signed with `secret`.
    pub fn hands_serve(
        &self,
        t: &Target<'_>,
        listen: &str,
        secret: &str,
        workdir: &str,
    ) -> anyhow::Result<Child> {
        let mut c = self.command(&self.hands);
        c.arg("serve")
            .arg("--listen")
            .arg(listen)
            .arg("--workdir")
            .arg(workdir)
            .arg("--drain-interval")
            .arg("0")
            // Finished sessions linger for --max-idle; room for all of them, so no delivery
            // finds the worker saturated (its item would wait for a drain that never comes).
            .arg("--max-sessions")
            .arg("64")
            .arg("--max-idle")
            .arg("1s");
        self.isolation(&mut c);
        Self::env(&mut c, t);
        c.env("ANTHROPIC_WEBHOOK_SIGNING_KEY", secret);
        c.stdout(self.log(HANDS_SERVE_LOG)?)
            .stderr(self.log(HANDS_SERVE_LOG)?);
        c.spawn().context("starting hands serve")
    }

    /// The SDK's webhook path (`sdk_webhook.py`) on `listen`, verifying with `secret`.
    pub fn sdk_webhook(
        &self,
        t: &Target<'_>,
        listen: &str,
        secret: &str,
        workdir: &Path,
    ) -> anyhow::Result<Child> {
        let mut c = self.command(&self.python);
        c.arg(&self.sdk_webhook)
            .arg("--listen")
            .arg(listen)
            .arg("--workdir")
            .arg(workdir);
        Self::env(&mut c, t);
        c.env("ANTHROPIC_API_KEY", t.api_key)
            .env("ANTHROPIC_WEBHOOK_SIGNING_KEY", secret);
        c.stdout(self.log(SDK_WEBHOOK_LOG)?)
            .stderr(self.log(SDK_WEBHOOK_LOG)?);
        c.spawn().context("starting the SDK webhook receiver")
    }

    /// The official SDK worker (`sdk_worker.py`): `sessions` concurrent `EnvironmentWorker.run()`
    /// loops in one process, since one loop serves one item at a time.
    pub fn sdk(&self, t: &Target<'_>, workdir: &Path, sessions: usize) -> anyhow::Result<Child> {
        let mut c = self.command(&self.python);
        c.arg(&self.sdk_worker)
            .arg("--workdir")
            .arg(workdir)
            .arg("--concurrency")
            .arg(sessions.max(1).to_string());
        Self::env(&mut c, t);
        c.env("ANTHROPIC_API_KEY", t.api_key);
        c.stdout(self.log(SDK_WORKER_LOG)?)
            .stderr(self.log(SDK_WORKER_LOG)?);
        c.spawn().context("starting the SDK worker")
    }
}

/// SIGTERM, then SIGKILL if it has not exited within `grace`.
pub fn stop(child: &mut Child, grace: Duration) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `VmRSS` of a process in KiB (0 if it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Summed `VmRSS` of every descendant of `root` (not `root` itself), in KiB.
pub fn descendants_rss_kib(root: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let parents: std::collections::HashMap<u32, u32> = pids
        .iter()
        .filter_map(|&p| Some((p, parent_of(p)?)))
        .collect();
    let mut total = 0;
    for &p in &pids {
        let mut cur = p;
        // Walk up; a bounded walk, since pids can be reused while we read.
        for _ in 0..64 {
            match parents.get(&cur) {
                Some(&pp) if pp == root => {
                    total += rss_kib(p);
                    break;
                }
                Some(&pp) if pp > 1 => cur = pp,
                _ => break,
            }
        }
    }
    total
}

/// Peak RSS of a worker and of its descendants, sampled every `every` until dropped.
pub struct Sampler {
    pub worker_peak_kib: Arc<AtomicU64>,
    pub children_peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(pid: u32, every: Duration, with_children: bool) -> Sampler {
        let worker_peak_kib = Arc::new(AtomicU64::new(0));
        let children_peak_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (w, c, s) = (
                worker_peak_kib.clone(),
                children_peak_kib.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    w.fetch_max(rss_kib(pid), Ordering::Relaxed);
                    if with_children {
                        c.fetch_max(descendants_rss_kib(pid), Ordering::Relaxed);
                    }
                    std::thread::sleep(every);
                }
            })
        };
        Sampler {
            worker_peak_kib,
            children_peak_kib,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; returns (worker peak, descendants' peak) in KiB.
    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            self.worker_peak_kib.load(Ordering::Relaxed),
            self.children_peak_kib.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
