//! Memory-store benchmark: download and first-sync time of `hands-memory` and of the official
//! SDK's `SessionMemoryStores` (anthropic 2.14.0), side by side against the same in-process
//! devplane, on the same seeded stores, in the same run. Prints figures; asserts nothing.
//!
//! Scenarios:
//! - `small`: a store of 1,000 memories of ~200 bytes; the edit changes every tenth file and
//!   adds 100 new ones (200 uploads).
//! - `big`: the issue asks for 50 files of 1 MiB, but the service refuses content over
//!   100 KiB, so the store holds 50 memories of 100 KiB (the largest it can) and the edit
//!   overwrites each with a 1 MiB file, as an agent might: the sync then meets 50 files the
//!   service would refuse (hands skips them by size without reading; the reference reads and
//!   sends each one, and is refused).
//!
//! ```sh
//! cargo run --release -p hands-memory --example memorybench -- \
//!     --python /tmp/confvenv/bin/python --runs 3
//! ```
//!
//! Also printed: the most memory content hands held in RAM at once during each download
//! (`SessionStores::peak_buffered_bytes`) next to the store's size.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hands_client::{ClientConfig, ControlPlane, Credential};
use hands_devplane::{Config, DevPlane, SessionSpec};
use hands_memory::{MemoryConfig, SessionStores};
use hands_protocol::secret::SessionsToken;
use hands_protocol::session::MemoryStoreResource;
use serde_json::json;

const SMALL_FILES: usize = 1000;
const BIG_FILES: usize = 50;
const BIG_SEED_BYTES: usize = 102_400;

fn apply_edit(root: &Path, scenario: &str) -> std::io::Result<()> {
    // Must match `apply_edit` in tests/bench/memory/sdk_memory.py.
    if scenario == "small" {
        for i in (0..SMALL_FILES).step_by(10) {
            std::fs::write(
                root.join(format!("notes/n{i:04}.md")),
                format!("note {i} edited\n{}", "x".repeat(180)),
            )?;
        }
        std::fs::create_dir_all(root.join("new"))?;
        for i in 0..100 {
            std::fs::write(
                root.join(format!("new/m{i:03}.md")),
                format!("new {i}\n{}", "y".repeat(180)),
            )?;
        }
    } else {
        let block = format!("{}\n", "z".repeat(1023)).repeat(1024);
        for i in 0..BIG_FILES {
            std::fs::write(root.join(format!("big/b{i:02}.md")), &block)?;
        }
    }
    Ok(())
}

fn seed(dp: &DevPlane, store: &str, scenario: &str) {
    if scenario == "small" {
        for i in 0..SMALL_FILES {
            dp.put_memory(
                store,
                &format!("/notes/n{i:04}.md"),
                &format!("note {i}\n{}", "a".repeat(190)),
            );
        }
    } else {
        let content = "b".repeat(BIG_SEED_BYTES);
        for i in 0..BIG_FILES {
            dp.put_memory(store, &format!("/big/b{i:02}.md"), &content);
        }
    }
}

fn resource(store: &str, mount: &Path) -> MemoryStoreResource {
    MemoryStoreResource {
        memory_store_id: store.to_owned(),
        access: "read_write".into(),
        mount_path: mount.display().to_string(),
        name: Some(store.to_owned()),
        description: None,
        instructions: None,
    }
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

struct Sample {
    download: Duration,
    sync: Duration,
}

fn fmt(samples: &[Duration]) -> String {
    let mut v: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    v.sort_by(f64::total_cmp);
    let med = v[v.len() / 2];
    format!("{med:.1} ms ({:.1}-{:.1})", v[0], v[v.len() - 1])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let python = flag("--python").unwrap_or_else(|| "python3".into());
    let runs: usize = flag("--runs").map(|r| r.parse()).transpose()?.unwrap_or(3);
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/bench/memory/sdk_memory.py");
    let dp = DevPlane::start(Config::default(), "127.0.0.1:0").await?;
    let cp = ControlPlane::new(ClientConfig::with_base_url(dp.base_url()))?;
    let scratch = tempfile::tempdir()?;
    let mut hwm_sync_growth = Vec::new();
    // (scenario, most content bytes hands held during a download, the store's content bytes)
    let mut held = Vec::new();
    for scenario in ["small", "big"] {
        let mut hands: Vec<Sample> = Vec::new();
        let mut sdk: Vec<Sample> = Vec::new();
        let mut sdk_rss = Vec::new();
        let mut sdk_growth = Vec::new();
        for run in 0..runs {
            let (hs, ss) = (
                format!("memstore_h_{scenario}_{run}"),
                format!("memstore_s_{scenario}_{run}"),
            );
            seed(&dp, &hs, scenario);
            seed(&dp, &ss, scenario);
            let (hm, sm) = (scratch.path().join(&hs), scratch.path().join(&ss));
            let spec = SessionSpec {
                resources: [resource(&hs, &hm), resource(&ss, &sm)]
                    .iter()
                    .map(|r| {
                        let mut v = serde_json::to_value(r).unwrap_or_default();
                        v["type"] = json!("memory_store");
                        v
                    })
                    .collect(),
                ..SessionSpec::default()
            };
            let session = dp.create_session(&spec)?;
            let work = dp.current_work(&session).ok_or("no work item")?;
            let token = dp.sessions_token(&work).ok_or("no token")?;
            let credential = Credential::sessions_token(&SessionsToken::new(token.clone()));

            let t0 = Instant::now();
            let mut stores = SessionStores::mount(
                cp.clone(),
                credential,
                MemoryConfig::default(),
                &[resource(&hs, &hm)],
            )
            .await?;
            let download = t0.elapsed();
            let store_bytes: usize = dp.memories(&hs).values().map(String::len).sum();
            held.push((scenario, stores.peak_buffered_bytes(), store_bytes));
            apply_edit(&hm, scenario)?;
            let hwm_before = vm_hwm_kib();
            let t1 = Instant::now();
            stores.sync_all().await;
            let sync = t1.elapsed();
            hwm_sync_growth.push((scenario, vm_hwm_kib().saturating_sub(hwm_before)));
            stores.dispose(None).await;
            hands.push(Sample { download, sync });

            let out = Command::new(&python)
                .arg(&script)
                .args([
                    "--base-url",
                    &dp.base_url(),
                    "--token",
                    &token,
                    "--store",
                    &ss,
                ])
                .args(["--mount", &sm.display().to_string(), "--scenario", scenario])
                .output()?;
            if !out.status.success() {
                return Err(
                    format!("SDK side failed: {}", String::from_utf8_lossy(&out.stderr)).into(),
                );
            }
            let line: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            let secs = |k: &str| Duration::from_secs_f64(line[k].as_f64().unwrap_or(0.0));
            sdk.push(Sample {
                download: secs("download_s"),
                sync: secs("sync_s"),
            });
            sdk_rss.push(line["max_rss_kib"].as_u64().unwrap_or(0));
            sdk_growth.push(line["sync_rss_growth_kib"].as_u64().unwrap_or(0));
            // Both sides must have synced the same edit.
            let (h, s) = (dp.memories(&hs), dp.memories(&ss));
            if h != s {
                eprintln!(
                    "warning: {scenario} run {run}: the two stores differ after the sync ({} vs {} memories)",
                    h.len(),
                    s.len()
                );
            }
        }
        println!(
            "{scenario:<5}  hands  download {:<28} first sync {}",
            fmt(&hands.iter().map(|s| s.download).collect::<Vec<_>>()),
            fmt(&hands.iter().map(|s| s.sync).collect::<Vec<_>>())
        );
        println!(
            "{scenario:<5}  sdk    download {:<28} first sync {}   (SDK process max RSS {} MiB)",
            fmt(&sdk.iter().map(|s| s.download).collect::<Vec<_>>()),
            fmt(&sdk.iter().map(|s| s.sync).collect::<Vec<_>>()),
            sdk_rss.iter().max().copied().unwrap_or(0) / 1024
        );
        // Like for like with hands' line below: peak-RSS growth during the sync.
        println!(
            "sdk peak-RSS growth during a {scenario} sync: {} KiB (max of {} runs)",
            sdk_growth.iter().max().copied().unwrap_or(0),
            sdk_growth.len()
        );
    }
    for (scenario, kib) in hwm_sync_growth {
        println!("hands peak-RSS growth during a {scenario} sync: {kib} KiB");
    }
    for (scenario, peak, total) in held {
        println!(
            "hands content held at once during a {scenario} download: {} KiB of the store's {} KiB",
            peak / 1024,
            total / 1024
        );
    }
    let c = dp.counters();
    println!(
        "devplane: {} memory writes stored, {} lists, {} single fetches",
        c.memory_writes, c.memory_lists, c.memory_gets
    );
    Ok(())
}
