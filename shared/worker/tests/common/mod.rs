//! What the worker's integration tests share: devplane in process with a scratch directory,
//! workers configured against it, script helpers, and a `/proc` probe for surviving processes.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hands_client::{ClientConfig, ControlPlane, Credential};
use hands_devplane::{Config, DevPlane, Script, ScriptReport};
use hands_protocol::work::WorkState;
use hands_worker::{NoObserver, WorkdirTemplate, Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

pub struct Harness {
    pub dp: DevPlane,
    _scratch: tempfile::TempDir,
    pub root: PathBuf,
}

impl Harness {
    pub async fn start(config: Config) -> Harness {
        let dp = DevPlane::start(config, "127.0.0.1:0").await.unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().to_path_buf();
        Harness {
            dp,
            _scratch: scratch,
            root,
        }
    }

    /// A worker configuration for this devplane, with a short idle bound so sessions end fast.
    pub fn config(&self, workdir: WorkdirTemplate) -> WorkerConfig {
        let mut config = WorkerConfig::new(self.dp.environment_id(), workdir);
        config.environment_key = Some(Credential::environment_key(self.dp.environment_key()));
        config.max_idle = Some(Duration::from_millis(300));
        config
    }

    /// `<scratch>/<name>/{session_id}`.
    pub fn per_session(&self, name: &str) -> WorkdirTemplate {
        WorkdirTemplate::new(format!("{}/{name}/{{session_id}}", self.root.display()))
    }

    pub fn worker_with(&self, config: WorkerConfig, shutdown: CancellationToken) -> Worker {
        let cp = ControlPlane::new(ClientConfig::with_base_url(self.dp.base_url())).unwrap();
        Worker::new(cp, config, Arc::new(NoObserver), shutdown)
    }

    /// A worker with the default test configuration and its own per-session workdirs.
    pub fn worker(&self, name: &str, shutdown: CancellationToken) -> Worker {
        self.worker_with(self.config(self.per_session(name)), shutdown)
    }

    /// Plays `script` with `workers` pollers running; returns the report after they stopped.
    pub async fn play(&self, script: &Script, workers: usize) -> ScriptReport {
        let shutdown = CancellationToken::new();
        let mut pollers = Vec::new();
        for i in 0..workers {
            let w = self.worker(&format!("w{i}"), shutdown.clone());
            pollers.push(tokio::spawn(async move { w.poll_forever(4).await }));
        }
        let report = self.dp.run_script(script).await;
        shutdown.cancel();
        for p in pollers {
            p.await.unwrap().unwrap();
        }
        report
    }

    /// Every work item: id, state, stored heartbeat token, claiming worker.
    pub fn all_work(&self) -> Vec<(String, WorkState, Option<String>, Option<String>)> {
        let store = self.dp.state().lock();
        store
            .work
            .iter()
            .map(|(id, r)| {
                (
                    id.clone(),
                    r.item.state,
                    r.last_heartbeat.clone(),
                    r.claimed_by.clone(),
                )
            })
            .collect()
    }
}

/// The failed steps of a report, one per line, for assertion messages.
pub fn failures(report: &ScriptReport) -> String {
    report
        .steps
        .iter()
        .filter(|s| !s.passed)
        .map(|s| format!("step {} {} {:?}: {}", s.index, s.step, s.label, s.detail))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn script(json: serde_json::Value) -> Script {
    Script::from_json(&json.to_string(), "test").unwrap()
}

/// devplane with a lease TTL of `secs` (a short one makes the worker heartbeat every second,
/// so stops and 412s are seen fast).
pub fn ttl(secs: u64) -> Config {
    Config {
        default_ttl: Duration::from_secs(secs),
        ..Config::default()
    }
}

/// Whether a process whose command line contains `needle` is alive.
pub fn process_running(needle: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(needle)
            })
            .unwrap_or(false)
    })
}

/// A `sleep` whose command line is unique to this test process and call site.
pub fn marker(secs: u32, tag: u32) -> String {
    format!("sleep {secs}.{}{tag}", std::process::id())
}
