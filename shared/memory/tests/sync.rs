//! Memory stores against devplane: download, uploads, deletes with and without corroboration,
//! conflicts (also the race between listing and update), read-only stores, a failing flush, an
//! upload whose answer was lost, a sync cut off mid-way, a teardown cut by a deadline, a walk
//! capped by a flood of entries, the download's bounded buffering, and the hostile cases of
//! CATALOGUE M1-M7.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hands_client::{ClientConfig, ControlPlane, Credential};
use hands_devplane::faults::{
    FailMemoryReads, FailMemoryWrites, LoseMemoryWriteAnswers, RaceMemoryUpdates, ResetMode,
};
use hands_devplane::{Config, DevPlane, Faults, SessionSpec};
use hands_memory::{
    AFTER_CALL_SYNC_BOUND, DeleteMode, Disposal, FLUSH_TIMEOUT, LiveMemory, MemoryConfig,
    MountError, SessionStores,
};
use hands_protocol::secret::SessionsToken;
use hands_protocol::session::MemoryStoreResource;
use serde_json::json;

struct Env {
    dp: DevPlane,
    cp: ControlPlane,
    token: Credential,
    _scratch: tempfile::TempDir,
    mnt: PathBuf,
    resources: Vec<MemoryStoreResource>,
}

/// devplane with a session attaching `stores` (`(id, access)`), mounted under a scratch dir.
async fn env(stores: &[(&str, &str)]) -> Env {
    let dp = DevPlane::start(Config::default(), "127.0.0.1:0")
        .await
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mnt = scratch.path().join("mnt/memory");
    let resources: Vec<MemoryStoreResource> = stores
        .iter()
        .map(|(id, access)| MemoryStoreResource {
            memory_store_id: (*id).to_owned(),
            access: (*access).to_owned(),
            mount_path: mnt.join(id).display().to_string(),
            name: Some((*id).to_owned()),
            description: None,
            instructions: None,
        })
        .collect();
    let spec = SessionSpec {
        resources: resources
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap();
                v["type"] = json!("memory_store");
                v
            })
            .collect(),
        ..SessionSpec::default()
    };
    let session = dp.create_session(&spec).unwrap();
    let work = dp.current_work(&session).unwrap();
    let token = Credential::sessions_token(&SessionsToken::new(dp.sessions_token(&work).unwrap()));
    let cp = ControlPlane::new(ClientConfig::with_base_url(dp.base_url())).unwrap();
    Env {
        dp,
        cp,
        token,
        _scratch: scratch,
        mnt,
        resources,
    }
}

fn config() -> MemoryConfig {
    MemoryConfig {
        delete_corroboration: Duration::ZERO,
        ..MemoryConfig::default()
    }
}

impl Env {
    async fn mount(&self, config: MemoryConfig) -> SessionStores {
        SessionStores::mount(self.cp.clone(), self.token.clone(), config, &self.resources)
            .await
            .unwrap()
    }

    fn root(&self, id: &str) -> PathBuf {
        self.mnt.join(id)
    }

    fn writes(&self) -> BTreeMap<String, u32> {
        self.dp.counters().memory_writes_by_path
    }
}

fn files(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    out.remove(".anthropic-memory-store");
    out
}

fn server(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(p, c)| ((*p).to_owned(), (*c).to_owned()))
        .collect()
}

#[tokio::test]
async fn download_writes_every_memory_and_the_marker_and_teardown_removes_the_folder() {
    let e = env(&[("memstore_a", "read_write")]).await;
    for i in 0..45 {
        e.dp.put_memory(
            "memstore_a",
            &format!("/notes/n{i:02}.md"),
            &format!("note {i}"),
        );
    }
    e.dp.put_memory("memstore_a", "/top.md", "top");
    let stores = e.mount(config()).await;
    let root = e.root("memstore_a");
    let marker = std::fs::read_to_string(root.join(".anthropic-memory-store")).unwrap();
    assert_eq!(marker, "version 1\nmemstore_a");
    let local = files(&root);
    assert_eq!(local.len(), 46);
    assert_eq!(local["notes/n07.md"], "note 7");
    assert_eq!(
        local,
        e.dp.memories("memstore_a")
            .into_iter()
            .map(|(p, c)| (p[1..].to_owned(), c))
            .collect()
    );
    // Full pages hold 20: three pages for 46 memories.
    assert!(e.dp.counters().memory_lists >= 3);
    stores.teardown(true, None).await;
    assert!(!root.exists());
    // Nothing was uploaded: the download pushes nothing.
    assert!(e.writes().is_empty());
}

#[tokio::test]
async fn creates_and_edits_are_uploaded_once_with_preconditions() {
    let e = env(&[("memstore_a", "read_write")]).await;
    e.dp.put_memory("memstore_a", "/keep.md", "v1");
    let mut stores = e.mount(config()).await;
    let root = e.root("memstore_a");
    std::fs::write(root.join("keep.md"), "v2").unwrap();
    std::fs::create_dir_all(root.join("new/deep")).unwrap();
    std::fs::write(root.join("new/deep/learned.md"), "fact").unwrap();
    stores.sync_all().await;
    assert_eq!(
        e.dp.memories("memstore_a"),
        server(&[("/keep.md", "v2"), ("/new/deep/learned.md", "fact")])
    );
    // An unchanged folder uploads nothing more.
    stores.sync_all().await;
    stores.teardown(true, None).await;
    let w = e.writes();
    assert_eq!(w["memstore_a:/keep.md"], 1);
    assert_eq!(w["memstore_a:/new/deep/learned.md"], 1);
    assert_eq!(e.dp.counters().memory_conflicts, 0);
}

#[tokio::test]
async fn remote_changes_and_remote_deletes_reach_the_folder() {
    let e = env(&[("memstore_a", "read_write")]).await;
    e.dp.put_memory("memstore_a", "/a.md", "a1");
    e.dp.put_memory("memstore_a", "/b.md", "b1");
    let mut stores = e.mount(config()).await;
    let root = e.root("memstore_a");
    e.dp.put_memory("memstore_a", "/a.md", "a2");
    e.dp.put_memory("memstore_a", "/c.md", "c1");
    assert!(e.dp.remove_memory("memstore_a", "/b.md"));
    stores.sync_all().await;
    assert_eq!(files(&root), server(&[("a.md", "a2"), ("c.md", "c1")]));
    assert!(e.writes().is_empty());
    stores.teardown(true, None).await;
}

#[tokio::test]
async fn a_local_delete_waits_for_corroboration_and_the_final_pass_waives_the_window() {
    let e = env(&[("memstore_a", "read_write")]).await;
    for p in ["/a.md", "/b.md", "/c.md"] {
        e.dp.put_memory("memstore_a", p, "x");
    }
    // Window zero: the first pass that sees the file missing only records it.
    let mut stores = e.mount(config()).await;
    let root = e.root("memstore_a");
    std::fs::remove_file(root.join("a.md")).unwrap();
    stores.sync_all().await;
    assert!(e.dp.memories("memstore_a").contains_key("/a.md"));
    stores.sync_all().await;
    assert!(!e.dp.memories("memstore_a").contains_key("/a.md"));

    // A long window: cadence passes never delete; the final pass does.
    std::fs::remove_file(root.join("b.md")).unwrap();
    stores.teardown(true, None).await;
    assert_eq!(e.dp.memories("memstore_a"), server(&[("/c.md", "x")]));

    let e = env(&[("memstore_a", "read_write")]).await;
    for p in ["/a.md", "/b.md"] {
        e.dp.put_memory("memstore_a", p, "x");
    }
    let long = MemoryConfig {
        delete_corroboration: Duration::from_secs(3600),
        ..MemoryConfig::default()
    };
    let mut stores = e.mount(long).await;
    std::fs::remove_file(e.root("memstore_a").join("a.md")).unwrap();
    for _ in 0..3 {
        stores.sync_all().await;
    }
    assert!(e.dp.memories("memstore_a").contains_key("/a.md"));
    // A file re-created before the window ends is not deleted.
    std::fs::write(e.root("memstore_a").join("a.md"), "x").unwrap();
    stores.teardown(true, None).await;
    assert_eq!(e.dp.memories("memstore_a").len(), 2);
}

#[tokio::test]
async fn log_only_and_disabled_never_delete() {
    for mode in [DeleteMode::LogOnly, DeleteMode::Disabled] {
        let e = env(&[("memstore_a", "read_write")]).await;
        for p in ["/a.md", "/b.md"] {
            e.dp.put_memory("memstore_a", p, "x");
        }
        let mut stores = e
            .mount(MemoryConfig {
                deletions: mode,
                ..config()
            })
            .await;
        std::fs::remove_file(e.root("memstore_a").join("a.md")).unwrap();
        stores.sync_all().await;
        stores.sync_all().await;
        stores.teardown(true, None).await;
        assert_eq!(e.dp.memories("memstore_a").len(), 2, "{mode}");
        assert_eq!(e.dp.counters().memory_deletes, 0, "{mode}");
    }
}

#[tokio::test]
async fn a_wiped_store_is_re_downloaded_and_deletes_are_capped_per_pass() {
    let e = env(&[("memstore_a", "read_write")]).await;
    for i in 0..40 {
        e.dp.put_memory("memstore_a", &format!("/m{i:02}.md"), "x");
    }
    let mut stores = e.mount(config()).await;
    let root = e.root("memstore_a");
    // Every file gone at once (M4): re-downloaded, nothing deleted on the server.
    for i in 0..40 {
        std::fs::remove_file(root.join(format!("m{i:02}.md"))).unwrap();
    }
    stores.sync_all().await;
    stores.sync_all().await;
    assert_eq!(files(&root).len(), 40);
    assert_eq!(e.dp.memories("memstore_a").len(), 40);
    assert_eq!(e.dp.counters().memory_deletes, 0);
    // Half of them deleted: at most max(8, min(50, 40/4)) = 10 deletes per pass.
    for i in 0..20 {
        std::fs::remove_file(root.join(format!("m{i:02}.md"))).unwrap();
    }
    stores.sync_all().await; // records
    stores.sync_all().await; // first 10
    assert_eq!(e.dp.memories("memstore_a").len(), 30);
    // The cap follows the baseline: 30 / 4 is under the floor of 8.
    stores.sync_all().await;
    assert_eq!(e.dp.memories("memstore_a").len(), 22);
    stores.teardown(true, None).await;
    // The final pass sends the last two.
    assert_eq!(e.dp.memories("memstore_a").len(), 20);
}

#[tokio::test]
async fn a_concurrent_server_edit_wins_and_the_agent_is_told() {
    let e = env(&[("memstore_a", "read_write")]).await;
    e.dp.put_memory("memstore_a", "/plan.md", "base");
    let mut stores = e.mount(config()).await;
    let root = e.root("memstore_a");
    std::fs::write(root.join("plan.md"), "agent edit").unwrap();
    e.dp.put_memory("memstore_a", "/plan.md", "server edit");
    stores.sync_all().await;
    assert_eq!(
        std::fs::read_to_string(root.join("plan.md")).unwrap(),
        "server edit"
    );
    assert_eq!(e.dp.memories("memstore_a")["/plan.md"], "server edit");
    let notes = stores.take_notes();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("plan.md") && notes[0].contains("replaced your edit"));
    // Deleted here, changed there: restored, and told.
    std::fs::remove_file(root.join("plan.md")).unwrap();
    e.dp.put_memory("memstore_a", "/plan.md", "server again");
    stores.sync_all().await;
    assert_eq!(
        std::fs::read_to_string(root.join("plan.md")).unwrap(),
        "server again"
    );
    assert!(stores.take_notes()[0].contains("restored"));
    stores.teardown(true, None).await;
    assert_eq!(e.writes().len(), 0);
}

#[tokio::test]
async fn devplane_answers_preconditions_like_the_service() {
    let e = env(&[("memstore_a", "read_write"), ("memstore_r", "read_only")]).await;
    let m = e.dp.put_memory("memstore_a", "/x.md", "one");
    let wrong = hands_protocol::memory::content_sha256(b"other");
    let err =
        e.cp.update_memory(&e.token, "memstore_a", &m.id, "two".into(), &wrong)
            .await
            .unwrap_err();
    assert_eq!(err.status().unwrap().as_u16(), 409);
    assert_eq!(
        err.body().unwrap().error.kind.as_str(),
        "memory_precondition_failed_error"
    );
    let err =
        e.cp.delete_memory(&e.token, "memstore_a", &m.id, &wrong)
            .await
            .unwrap_err();
    assert_eq!(err.status().unwrap().as_u16(), 409);
    let err =
        e.cp.create_memory(&e.token, "memstore_a", "/x.md", "dup".into())
            .await
            .unwrap_err();
    assert_eq!(
        err.body().unwrap().error.kind.as_str(),
        "memory_path_conflict_error"
    );
    let big = "a".repeat(102_401);
    let err =
        e.cp.create_memory(&e.token, "memstore_a", "/big.md", big)
            .await
            .unwrap_err();
    assert_eq!(err.status().unwrap().as_u16(), 400);
    let ok =
        e.cp.update_memory(
            &e.token,
            "memstore_a",
            &m.id,
            "two".into(),
            &m.content_sha256,
        )
        .await
        .unwrap();
    assert_eq!(
        ok.content_sha256,
        hands_protocol::memory::content_sha256(b"two")
    );
    // The environment key is rejected; a read-only attachment refuses writes; another
    // session's store is out of reach.
    let env_key = Credential::environment_key(e.dp.environment_key());
    let err =
        e.cp.list_memories(
            &env_key,
            "memstore_a",
            hands_protocol::memory::MemoryView::Basic,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.status().unwrap().as_u16(), 403);
    let err =
        e.cp.create_memory(&e.token, "memstore_r", "/w.md", "w".into())
            .await
            .unwrap_err();
    assert_eq!(err.status().unwrap().as_u16(), 403);
    let err =
        e.cp.list_memories(
            &e.token,
            "memstore_other",
            hands_protocol::memory::MemoryView::Basic,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.status().unwrap().as_u16(), 403);
}

#[tokio::test]
async fn a_read_only_store_is_locked_and_its_writes_are_reported_never_uploaded() {
    use std::os::unix::fs::PermissionsExt;
    let e = env(&[("memstore_r", "read_only")]).await;
    e.dp.put_memory("memstore_r", "/rules.md", "be nice");
    let mut stores = e.mount(config()).await;
    let root = e.root("memstore_r");
    assert_eq!(stores.read_only_roots(), vec![root.clone()]);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&root), 0o555);
    assert_eq!(mode(&root.join("rules.md")), 0o444);
    // Tool code running as root (as here) passes file modes: the write lands on disk, and
    // sync must still never upload it.
    if rustix::process::geteuid().is_root() {
        std::fs::write(root.join("rules.md"), "be mean").unwrap();
        std::fs::write(root.join("new.md"), "sneaky").unwrap();
        stores.sync_all().await;
        let notes = stores.take_notes();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes.iter().all(|n| n.contains("read-only")));
        // A server change still comes down over the local write.
        e.dp.put_memory("memstore_r", "/rules.md", "be kind");
        stores.sync_all().await;
        assert_eq!(
            std::fs::read_to_string(root.join("rules.md")).unwrap(),
            "be kind"
        );
        assert_eq!(mode(&root.join("rules.md")), 0o444);
    } else {
        assert!(std::fs::write(root.join("rules.md"), "be mean").is_err());
        assert!(std::fs::write(root.join("new.md"), "sneaky").is_err());
    }
    stores.teardown(true, None).await;
    assert!(e.writes().is_empty());
    assert_eq!(e.dp.memories("memstore_r").len(), 1);
    assert!(!root.exists());
}

#[tokio::test]
async fn a_5xx_during_the_flush_is_retried_and_nothing_is_lost() {
    let e = env(&[("memstore_a", "read_write")]).await;
    let stores = e.mount(config()).await;
    let root = e.root("memstore_a");
    for i in 0..5 {
        std::fs::write(root.join(format!("f{i}.md")), format!("{i}")).unwrap();
    }
    e.dp.set_faults(Faults {
        fail_memory_writes: Some(FailMemoryWrites {
            count: 3,
            status: 503,
        }),
        ..Faults::default()
    });
    // An unclean end: only the push-only flush runs.
    stores.teardown(false, None).await;
    assert_eq!(e.dp.counters().injected_memory_failures, 3);
    assert_eq!(e.dp.memories("memstore_a").len(), 5);
    assert!(e.writes().values().all(|n| *n == 1));
}

#[tokio::test]
async fn transient_read_failures_are_retried_and_a_lasting_one_fails_the_download() {
    let e = env(&[("memstore_a", "read_write")]).await;
    for i in 0..45 {
        e.dp.put_memory("memstore_a", &format!("/n{i:02}.md"), &format!("{i}"));
    }
    // A 429 with retry-after on the first listing page: the download waits and goes on.
    e.dp.set_faults(Faults {
        fail_memory_reads: Some(FailMemoryReads {
            count: 1,
            status: 429,
            retry_after_s: Some(1),
            gets_only: false,
        }),
        ..Faults::default()
    });
    let mut stores = e.mount(config()).await;
    assert_eq!(e.dp.counters().injected_memory_failures, 1);
    assert_eq!(files(&e.root("memstore_a")).len(), 45);

    // A sync whose listing and first fetch each fail once still pulls the server's change.
    e.dp.put_memory("memstore_a", "/n07.md", "changed on the server");
    e.dp.set_faults(Faults {
        fail_memory_reads: Some(FailMemoryReads {
            count: 2,
            status: 503,
            retry_after_s: None,
            gets_only: false,
        }),
        ..Faults::default()
    });
    stores.sync_all().await;
    assert_eq!(e.dp.counters().injected_memory_failures, 3);
    assert_eq!(
        std::fs::read_to_string(e.root("memstore_a").join("n07.md")).unwrap(),
        "changed on the server"
    );
    stores.teardown(true, None).await;
    assert!(e.writes().is_empty());

    // A control plane that keeps failing still fails the download, after a bounded few tries.
    let e = env(&[("memstore_b", "read_write")]).await;
    e.dp.put_memory("memstore_b", "/x.md", "x");
    e.dp.set_faults(Faults {
        fail_memory_reads: Some(FailMemoryReads {
            count: 100,
            status: 500,
            retry_after_s: None,
            gets_only: false,
        }),
        ..Faults::default()
    });
    let err = SessionStores::mount(e.cp.clone(), e.token.clone(), config(), &e.resources)
        .await
        .err()
        .expect("a lasting 500 must fail the download");
    assert!(matches!(err, MountError::Download { .. }), "{err}");
    let tries = e.dp.counters().injected_memory_failures;
    assert!((2..=10).contains(&tries), "{tries} tries");
    assert!(!e.root("memstore_b").exists());
}

#[tokio::test]
async fn a_slow_after_call_sync_does_not_hold_the_result_and_finishes_in_the_background() {
    let e = env(&[("memstore_a", "read_write")]).await;
    let live = LiveMemory::start(e.mount(config()).await);
    // Every request now takes twice the bound, so the sync cannot be done when it runs out.
    e.dp.set_faults(Faults {
        slow_ms: Some(2 * AFTER_CALL_SYNC_BOUND.as_millis() as u64),
        ..Faults::default()
    });
    live.call_started();
    std::fs::write(e.root("memstore_a").join("new.md"), "fact").unwrap();
    let notes = live.after_call().await;
    assert!(notes.is_empty(), "{notes:?}");
    assert!(
        e.writes().is_empty(),
        "the result waited for the upload: {:?}",
        e.writes()
    );
    e.dp.set_faults(Faults::default());
    // The sync left running is neither cancelled nor repeated: teardown waits for it, and the
    // file goes up exactly once.
    live.teardown(true, None).await;
    assert_eq!(
        e.writes().into_iter().collect::<Vec<_>>(),
        vec![("memstore_a:/new.md".to_owned(), 1)]
    );
    assert_eq!(e.dp.memories("memstore_a")["/new.md"], "fact");
}

#[tokio::test]
async fn a_sync_killed_mid_way_loses_nothing_flushed_and_uploads_nothing_twice() {
    let e = env(&[("memstore_a", "read_write")]).await;
    let mut stores = e.mount(config()).await;
    let root = e.root("memstore_a");
    for i in 0..60 {
        std::fs::write(root.join(format!("f{i:02}.md")), format!("{i}")).unwrap();
    }
    e.dp.set_faults(Faults {
        slow_ms: Some(200),
        ..Faults::default()
    });
    // The worker dies part-way through its sync: the task is dropped mid-request.
    let task = tokio::spawn(async move {
        stores.sync_all().await;
        stores
    });
    while e.dp.counters().memory_writes < 10 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
    let _ = task.await;
    e.dp.set_faults(Faults::default());
    let landed = e.dp.memories("memstore_a");
    assert!(!landed.is_empty() && landed.len() < 60, "{}", landed.len());
    // The dead worker's folder stays behind; its successor mounts on a fresh host.
    std::fs::remove_dir_all(&root).unwrap();
    let mut successor = e.mount(config()).await;
    assert_eq!(files(&root).len(), landed.len());
    successor.sync_all().await;
    successor.teardown(true, None).await;
    assert_eq!(e.dp.memories("memstore_a"), landed);
    assert!(e.writes().values().all(|n| *n == 1), "{:?}", e.writes());
}

#[tokio::test]
async fn hostile_files_and_paths_stay_inside() {
    let e = env(&[("memstore_a", "read_write")]).await;
    // Server paths that could escape (M2), and the reserved marker path.
    for p in [
        "/../escaped.md",
        "/a/../../escaped.md",
        "//abs.md",
        "/.anthropic-memory-store",
        "/ok.md",
    ] {
        e.dp.put_memory("memstore_a", p, "x");
    }
    let mut stores = e.mount(config()).await;
    let root = e.root("memstore_a");
    assert_eq!(files(&root), server(&[("ok.md", "x")]));
    assert!(!e.mnt.join("escaped.md").exists());
    assert_eq!(
        std::fs::read_to_string(root.join(".anthropic-memory-store")).unwrap(),
        "version 1\nmemstore_a"
    );
    // Tool code plants links, a FIFO, a huge sparse file and binary content (M1, M2).
    let outside = e.mnt.parent().unwrap().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "top secret").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("link.md")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("dir")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("pipe.md"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let huge = std::fs::File::create(root.join("huge.md")).unwrap();
    huge.set_len(256 << 20).unwrap();
    drop(huge);
    std::fs::write(root.join("over.md"), "a".repeat(102_401)).unwrap();
    std::fs::write(root.join("bin.md"), [0xffu8, 0xfe, 0x00]).unwrap();
    std::fs::write(root.join("fine.md"), "fine").unwrap();
    let rss_before = rss_kib();
    for _ in 0..3 {
        stores.sync_all().await;
    }
    let grown = rss_kib().saturating_sub(rss_before);
    // Reading the sparse file whole would cost 256 MiB.
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    stores.teardown(true, None).await;
    assert_eq!(
        e.dp.memories("memstore_a")
            .keys()
            .filter(|p| p.as_str() != "/ok.md"
                && !p.contains("..")
                && !p.starts_with("//")
                && p.as_str() != "/.anthropic-memory-store")
            .cloned()
            .collect::<Vec<_>>(),
        vec!["/fine.md".to_owned()]
    );
    let w = e.writes();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w["memstore_a:/fine.md"], 1);
    // The target of the links is untouched and was never uploaded.
    assert_eq!(
        std::fs::read_to_string(outside.join("secret.txt")).unwrap(),
        "top secret"
    );
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn unusable_mount_paths_refuse_that_store_only() {
    let mut e = env(&[
        ("memstore_a", "read_write"),
        ("memstore_b", "read_write"),
        ("memstore_c", "read_write"),
    ])
    .await;
    e.dp.put_memory("memstore_a", "/a.md", "a");
    e.resources[1].mount_path = "relative/path".into();
    e.resources[2].mount_path = format!("{}/x/../memstore_c", e.mnt.display());
    let stores = e.mount(config()).await;
    assert_eq!(stores.roots(), vec![e.root("memstore_a")]);
    assert_eq!(files(&e.root("memstore_a")), server(&[("a.md", "a")]));
    stores.teardown(true, None).await;
    assert!(e.writes().is_empty());
}

#[tokio::test]
async fn an_existing_mount_path_fails_the_mount_and_is_left_as_found() {
    let e = env(&[("memstore_a", "read_write"), ("memstore_d", "read_write")]).await;
    e.dp.put_memory("memstore_a", "/a.md", "a");
    std::fs::create_dir_all(e.root("memstore_d")).unwrap();
    std::fs::write(e.root("memstore_d").join("leftover.md"), "old").unwrap();
    let err = SessionStores::mount(e.cp.clone(), e.token.clone(), config(), &e.resources)
        .await
        .err()
        .expect("an existing mount path must fail the mount");
    assert!(
        matches!(&err, MountError::MountPathExists { store, .. } if store == "memstore_d"),
        "{err}"
    );
    assert!(err.to_string().contains("already exists"), "{err}");
    // The store mounted before the refused one is removed again; the pre-existing folder is
    // left exactly as found and nothing of it was uploaded.
    assert!(!e.root("memstore_a").exists());
    assert_eq!(
        files(&e.root("memstore_d")),
        server(&[("leftover.md", "old")])
    );
    assert!(e.writes().is_empty());
}

#[tokio::test]
async fn two_sessions_mounting_one_path_at_once_cannot_share_it() {
    let e = env(&[("memstore_a", "read_write"), ("memstore_b", "read_write")]).await;
    e.dp.put_memory("memstore_a", "/a.md", "from a");
    e.dp.put_memory("memstore_b", "/b.md", "from b");
    // Two sessions of one agent name the same folder for their (different) stores.
    let shared_path = e.resources[0].mount_path.clone();
    let first = vec![e.resources[0].clone()];
    let mut second = vec![e.resources[1].clone()];
    second[0].mount_path = shared_path.clone();
    let (r1, r2) = tokio::join!(
        SessionStores::mount(e.cp.clone(), e.token.clone(), config(), &first),
        SessionStores::mount(e.cp.clone(), e.token.clone(), config(), &second),
    );
    let (winner, loser, winner_file) = match (r1, r2) {
        (Ok(w), Err(l)) => (w, l, ("a.md", "from a")),
        (Err(l), Ok(w)) => (w, l, ("b.md", "from b")),
        (Ok(_), Ok(_)) => panic!("both sessions mounted the same folder"),
        (Err(a), Err(b)) => panic!("neither session mounted: {a}; {b}"),
    };
    assert!(
        matches!(&loser, MountError::MountPathExists { mount_path, .. } if *mount_path == shared_path),
        "{loser}"
    );
    // The loser's failure left the winner's folder alone: only the winner's store is in it.
    let root = PathBuf::from(&shared_path);
    assert_eq!(files(&root), server(&[winner_file]));
    assert_eq!(winner.roots(), vec![root.clone()]);
    winner.teardown(true, None).await;
    assert!(!root.exists());
    assert!(e.writes().is_empty());
}

#[tokio::test]
async fn a_download_writes_page_by_page_and_holds_at_most_two_pages() {
    let e = env(&[("memstore_a", "read_write")]).await;
    const N: usize = 400;
    const SIZE: usize = 8 * 1024;
    for i in 0..N {
        e.dp.put_memory(
            "memstore_a",
            &format!("/m{i:04}.md"),
            &format!("{i:04}").repeat(SIZE / 4),
        );
    }
    let stores = e.mount(config()).await;
    assert_eq!(files(&e.root("memstore_a")).len(), N);
    let peak = stores.peak_buffered_bytes();
    let page = hands_client::MEMORY_LIST_PAGE_FULL as usize * SIZE;
    // The gauge saw the pages go through, and never more than the page being written plus
    // the one being fetched: the store's 3.2 MiB were never held at once.
    assert!(peak >= page, "peak {peak} bytes, one page is {page}");
    assert!(peak <= 2 * page, "peak {peak} bytes, one page is {page}");
    stores.teardown(true, None).await;
    assert!(e.writes().is_empty());
}

#[tokio::test]
async fn a_walk_capped_by_a_flood_of_entries_syncs_known_memories_and_deletes_nothing_unseen() {
    let e = env(&[("memstore_a", "read_write")]).await;
    for i in 0..30 {
        e.dp.put_memory("memstore_a", &format!("/k{i:02}.md"), &format!("v{i}"));
    }
    // A cap of 40 entries against 30 memories and 200 directories a tool created: most known
    // files are beyond what any one walk sees.
    let cfg = MemoryConfig {
        walk_cap: 40,
        ..config()
    };
    let mut stores = e.mount(cfg).await;
    let root = e.root("memstore_a");
    for i in 0..200 {
        std::fs::create_dir(root.join(format!("junk{i:03}"))).unwrap();
    }
    std::fs::write(root.join("k05.md"), "edited").unwrap();
    std::fs::remove_file(root.join("k07.md")).unwrap();
    std::fs::write(root.join("new.md"), "fresh").unwrap();
    // The first pass records k07 as missing, the second deletes it (corroborated).
    stores.sync_all().await;
    stores.sync_all().await;
    let on_server = e.dp.memories("memstore_a");
    assert_eq!(on_server["/k05.md"], "edited");
    assert!(!on_server.contains_key("/k07.md"));
    for i in (0..30).filter(|i| *i != 5 && *i != 7) {
        assert_eq!(
            on_server[&format!("/k{i:02}.md")],
            format!("v{i}"),
            "k{i:02}"
        );
    }
    assert_eq!(e.dp.counters().memory_deletes, 1);
    // The flood gone, the file the capped walks may have missed goes up.
    for i in 0..200 {
        std::fs::remove_dir(root.join(format!("junk{i:03}"))).unwrap();
    }
    stores.sync_all().await;
    assert_eq!(e.dp.memories("memstore_a")["/new.md"], "fresh");
    // Flooded again, the push-only flush of an unclean end (no listing first) still finds an
    // edit of a known file wherever the walk stopped.
    for i in 0..200 {
        std::fs::create_dir(root.join(format!("junk{i:03}"))).unwrap();
    }
    std::fs::write(root.join("k10.md"), "edited too").unwrap();
    stores.teardown(false, None).await;
    let on_server = e.dp.memories("memstore_a");
    assert_eq!(on_server.len(), 30);
    assert_eq!(on_server["/k10.md"], "edited too");
    assert!(e.writes().values().all(|n| *n == 1), "{:?}", e.writes());
}

#[tokio::test]
async fn a_server_edit_between_listing_and_update_wins_and_the_agent_is_told_once() {
    let e = env(&[("memstore_a", "read_write")]).await;
    e.dp.put_memory("memstore_a", "/plan.md", "base");
    let mut stores = e.mount(config()).await;
    let root = e.root("memstore_a");
    std::fs::write(root.join("plan.md"), "agent edit").unwrap();
    // Another client writes the memory after our listing, just before our update.
    e.dp.set_faults(Faults {
        race_memory_updates: Some(RaceMemoryUpdates {
            count: 1,
            content: "other client".into(),
        }),
        ..Faults::default()
    });
    stores.sync_all().await;
    let c = e.dp.counters();
    assert_eq!((c.injected_memory_failures, c.memory_conflicts), (1, 1));
    assert_eq!(e.dp.memories("memstore_a")["/plan.md"], "other client");
    let notes = stores.take_notes();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("plan.md") && notes[0].contains("replace your edit"));
    // The next pass pulls the store's version over the file, as the reference does, without
    // telling the agent twice about the same edit.
    stores.sync_all().await;
    assert_eq!(
        std::fs::read_to_string(root.join("plan.md")).unwrap(),
        "other client"
    );
    assert!(stores.take_notes().is_empty());
    stores.teardown(true, None).await;
    assert_eq!(e.dp.memories("memstore_a")["/plan.md"], "other client");
    assert!(e.writes().is_empty(), "{:?}", e.writes());
}

#[tokio::test]
async fn an_upload_whose_answer_was_lost_is_recognised_not_repeated_or_lost() {
    for mode in [ResetMode::Drop, ResetMode::Error500] {
        let e = env(&[("memstore_a", "read_write")]).await;
        e.dp.put_memory("memstore_a", "/a.md", "one");
        let mut stores = e.mount(config()).await;
        let root = e.root("memstore_a");
        std::fs::write(root.join("a.md"), "two").unwrap();
        std::fs::write(root.join("b.md"), "new").unwrap();
        // Both writes are stored, and both answers lost.
        e.dp.set_faults(Faults {
            lose_memory_write_answers: Some(LoseMemoryWriteAnswers { count: 2, mode }),
            ..Faults::default()
        });
        stores.sync_all().await;
        assert_eq!(e.dp.counters().injected_memory_failures, 2, "{mode:?}");
        assert_eq!(
            e.dp.memories("memstore_a"),
            server(&[("/a.md", "two"), ("/b.md", "new")])
        );
        // The retried update met its own content (the precondition no longer held): no
        // conflict, nothing told, nothing pulled over the file.
        assert!(stores.take_notes().is_empty(), "{mode:?}");
        stores.sync_all().await;
        assert_eq!(files(&root), server(&[("a.md", "two"), ("b.md", "new")]));
        assert!(
            e.writes().values().all(|n| *n == 1),
            "{mode:?}: {:?}",
            e.writes()
        );
        // The same in the push-only flush of an unclean end.
        std::fs::write(root.join("a.md"), "three").unwrap();
        e.dp.set_faults(Faults {
            lose_memory_write_answers: Some(LoseMemoryWriteAnswers { count: 1, mode }),
            ..Faults::default()
        });
        stores.teardown(false, None).await;
        assert_eq!(
            e.dp.memories("memstore_a"),
            server(&[("/a.md", "three"), ("/b.md", "new")])
        );
        assert_eq!(e.writes()["memstore_a:/a.md"], 2, "{mode:?}");
        // One 409 per lost update: the retry meeting its own content.
        assert_eq!(e.dp.counters().memory_conflicts, 2, "{mode:?}");
    }
}

#[tokio::test]
async fn a_retried_update_whose_check_read_fails_is_never_reported_as_a_conflict() {
    // 1: the read that checks "is this our own content?" fails once (retried, then Stored);
    // 2: it keeps failing (the outcome is unknown; the next listing settles it).
    for failing_gets in [1, 100] {
        let e = env(&[("memstore_a", "read_write")]).await;
        e.dp.put_memory("memstore_a", "/a.md", "one");
        let mut stores = e.mount(config()).await;
        let root = e.root("memstore_a");
        std::fs::write(root.join("a.md"), "two").unwrap();
        // The update is stored and its answer lost; its retry meets a 409; the get that
        // tells whether that 409 is our own content fails.
        e.dp.set_faults(Faults {
            lose_memory_write_answers: Some(LoseMemoryWriteAnswers {
                count: 1,
                mode: ResetMode::Error500,
            }),
            fail_memory_reads: Some(FailMemoryReads {
                count: failing_gets,
                status: 503,
                retry_after_s: None,
                gets_only: true,
            }),
            ..Faults::default()
        });
        stores.sync_all().await;
        assert_eq!(e.dp.counters().memory_conflicts, 1, "{failing_gets}");
        assert!(
            e.dp.counters().injected_memory_failures >= 2,
            "{failing_gets}"
        );
        assert!(stores.take_notes().is_empty(), "{failing_gets}");
        e.dp.set_faults(Faults::default());
        stores.sync_all().await;
        // Nothing pulled over the file, nothing told, nothing sent again.
        assert!(stores.take_notes().is_empty(), "{failing_gets}");
        assert_eq!(files(&root), server(&[("a.md", "two")]));
        assert_eq!(e.dp.memories("memstore_a"), server(&[("/a.md", "two")]));
        assert_eq!(e.writes()["memstore_a:/a.md"], 1, "{failing_gets}");
        stores.teardown(true, None).await;
        assert_eq!(e.writes()["memstore_a:/a.md"], 1, "{failing_gets}");
    }
}

#[tokio::test]
async fn a_teardown_with_a_deadline_stops_in_time_and_the_successor_gets_the_server_state() {
    let e = env(&[("memstore_a", "read_write")]).await;
    e.dp.put_memory("memstore_a", "/kept.md", "kept");
    let live = LiveMemory::start(e.mount(config()).await);
    let root = e.root("memstore_a");
    std::fs::write(root.join("late.md"), "not flushed").unwrap();
    // Every memory answer now takes far longer than the deadline leaves.
    e.dp.set_faults(Faults {
        slow_memory_ms: Some(120_000),
        ..Faults::default()
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    // Only a hang fails on time here.
    let report = tokio::time::timeout(FLUSH_TIMEOUT * 2, live.teardown(true, Some(deadline)))
        .await
        .expect("the teardown hung");
    // Every wait shares the deadline (without it the final sync and the flush would each
    // have had the 30 s bound), and the flush was cut by it.
    assert_eq!(report.budget_end, deadline);
    assert!(
        report.waits.iter().all(|w| w.until <= deadline),
        "{report:?}"
    );
    assert!(
        report.waits.iter().any(|w| w.what == "flush" && w.cut),
        "{report:?}"
    );
    assert!(!root.exists(), "the folder is removed all the same");
    e.dp.set_faults(Faults::default());
    assert!(e.writes().is_empty(), "{:?}", e.writes());
    // The successor downloads the store as the server has it: the edit the flush could not
    // send is not there (the folder is outside the workspace snapshot).
    let successor = e.mount(config()).await;
    assert_eq!(files(&root), server(&[("kept.md", "kept")]));
    successor.teardown(true, None).await;
    assert_eq!(e.dp.memories("memstore_a"), server(&[("/kept.md", "kept")]));
}

#[tokio::test]
async fn edits_a_cut_off_sync_had_not_uploaded_yet_go_up_with_the_flush() {
    let e = env(&[("memstore_a", "read_write")]).await;
    for i in 0..60 {
        e.dp.put_memory("memstore_a", &format!("/f{i:02}.md"), "old");
    }
    let mut stores = e.mount(config()).await;
    let root = e.root("memstore_a");
    for i in 0..60 {
        std::fs::write(root.join(format!("f{i:02}.md")), format!("new {i}")).unwrap();
    }
    e.dp.set_faults(Faults {
        slow_ms: Some(200),
        ..Faults::default()
    });
    // The sync is dropped part-way through its uploads (a teardown bound running out).
    tokio::select! {
        () = stores.sync_all() => panic!("the sync was meant to be cut off"),
        () = async {
            while e.dp.counters().memory_writes < 10 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        } => {}
    }
    e.dp.set_faults(Faults::default());
    assert!(e.dp.counters().memory_writes < 60);
    // The flush sees the remaining edits as edits of unchanged memories, not as conflicts.
    stores.teardown(false, None).await;
    let on_server = e.dp.memories("memstore_a");
    for i in 0..60 {
        assert_eq!(
            on_server[&format!("/f{i:02}.md")],
            format!("new {i}"),
            "f{i:02}"
        );
    }
    assert!(e.writes().values().all(|n| *n == 1), "{:?}", e.writes());
    assert_eq!(e.dp.counters().memory_conflicts, 0);
}

#[tokio::test]
async fn the_folder_removal_reads_nothing_and_never_outlasts_the_deadline() {
    let e = env(&[("memstore_a", "read_write")]).await;
    e.dp.put_memory("memstore_a", "/kept.md", "kept");
    let mut stores = e.mount(config()).await;
    let root = e.root("memstore_a");
    // Many files (the old teardown read and hashed each before removing anything).
    for d in 0..50 {
        std::fs::create_dir_all(root.join(format!("d{d}"))).unwrap();
        for f in 0..100 {
            std::fs::write(root.join(format!("d{d}/f{f}.md")), "x").unwrap();
        }
    }
    // No time left: the mount path is free at once, the tree goes in the background.
    let done = stores
        .dispose(Some(tokio::time::Instant::now() - Duration::from_millis(1)))
        .await;
    assert_eq!(done, vec![Disposal::InBackground]);
    assert!(!root.exists());
    let hidden = |mnt: &Path| -> Vec<String> {
        std::fs::read_dir(mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("hands-removing"))
            .collect()
    };
    // Only a hang fails here: the background removal ends.
    let mut waited = Duration::ZERO;
    while !hidden(&e.mnt).is_empty() {
        assert!(waited < Duration::from_secs(60), "{:?}", hidden(&e.mnt));
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    // The same store mounts again at once (the successor on the same host).
    let mut again = e.mount(config()).await;
    assert_eq!(files(&root), server(&[("kept.md", "kept")]));
    // Time enough: removed before dispose returns.
    let far = tokio::time::Instant::now() + Duration::from_secs(600);
    assert_eq!(again.dispose(Some(far)).await, vec![Disposal::Removed]);
    assert!(!root.exists() && hidden(&e.mnt).is_empty());
    // A folder whose marker is gone while it holds files is left as found.
    let mut third = e.mount(config()).await;
    std::fs::remove_file(root.join(".anthropic-memory-store")).unwrap();
    assert_eq!(third.dispose(None).await, vec![Disposal::LeftAsFound]);
    assert_eq!(files(&root), server(&[("kept.md", "kept")]));
}

#[tokio::test]
async fn every_wait_of_a_teardown_shares_one_flush_budget() {
    let e = env(&[("memstore_a", "read_write")]).await;
    e.dp.put_memory("memstore_a", "/kept.md", "kept");
    let budget = Duration::from_secs(2);
    let live = LiveMemory::start(
        e.mount(MemoryConfig {
            flush_timeout: budget,
            ..config()
        })
        .await,
    );
    let root = e.root("memstore_a");
    // A sync after a tool call that is still running at teardown (the memory service now
    // answers in 120 s), then a final sync and a flush that would meet the same service.
    e.dp.set_faults(Faults {
        slow_memory_ms: Some(120_000),
        ..Faults::default()
    });
    live.call_started();
    std::fs::write(root.join("late.md"), "late").unwrap();
    let _ = live.after_call().await;
    // Only a hang fails on time here: four waits of the budget each would take 4 x 2 s.
    let report = tokio::time::timeout(Duration::from_secs(60), live.teardown(true, None))
        .await
        .expect("the teardown hung");
    assert_eq!(report.budget_end, report.started + budget);
    let waits: Vec<(&str, bool)> = report.waits.iter().map(|w| (w.what, w.cut)).collect();
    assert_eq!(
        waits,
        vec![
            ("timer sync", false),
            ("after-call sync", true),
            ("final sync", true),
            ("flush", true)
        ],
        "{report:?}"
    );
    // Every one of them had to end within the one budget.
    assert!(
        report.waits.iter().all(|w| w.until <= report.budget_end),
        "{report:?}"
    );
    assert_eq!(report.folders, vec![Disposal::Removed]);
    assert!(!root.exists());
    e.dp.set_faults(Faults::default());
    assert!(e.writes().is_empty(), "{:?}", e.writes());
}

/// Runs the test `name` of this binary again as uid/gid 65534 when this process is root (root
/// bypasses file modes, so a permission test run as root would pass without testing anything)
/// and returns `false`; returns `true` when the caller is the unprivileged one and should run
/// the scenario itself. Fails loudly if privileges cannot be dropped.
fn unprivileged(name: &str) -> bool {
    use hands_test_support::{NOBODY, is_rerun, rerun_as};
    if is_rerun() || !rustix::process::geteuid().is_root() {
        return true;
    }
    rerun_as(NOBODY, name, &[]);
    false
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn unreadable_files_and_folders_are_skipped_never_deleted_and_removed_at_teardown() {
    if !unprivileged(
        "unreadable_files_and_folders_are_skipped_never_deleted_and_removed_at_teardown",
    ) {
        return;
    }
    assert!(!rustix::process::geteuid().is_root());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let e = env(&[("memstore_a", "read_write")]).await;
            for (p, c) in [
                ("/a.md", "a"),
                ("/c.md", "c"),
                ("/d/b.md", "b"),
                ("/x/y.md", "y"),
            ] {
                e.dp.put_memory("memstore_a", p, c);
            }
            let mut stores = e.mount(config()).await;
            let root = e.root("memstore_a");
            // Tool code takes the worker's rights away: a file it may not open, a folder it
            // may not list, a folder it may list but not look into.
            chmod(&root.join("a.md"), 0o000);
            chmod(&root.join("d"), 0o000);
            chmod(&root.join("x"), 0o600);
            std::fs::write(root.join("c.md"), "c2").unwrap();
            std::fs::write(root.join("new.md"), "new").unwrap();
            e.dp.put_memory("memstore_a", "/a.md", "a2");
            // Two passes with a zero window: a file taken as deleted would be deleted.
            stores.sync_all().await;
            stores.sync_all().await;
            assert_eq!(
                e.dp.memories("memstore_a"),
                server(&[
                    ("/a.md", "a2"),
                    ("/c.md", "c2"),
                    ("/d/b.md", "b"),
                    ("/new.md", "new"),
                    ("/x/y.md", "y"),
                ])
            );
            let w = e.writes();
            assert_eq!(w.len(), 2, "{w:?}");
            assert_eq!(w["memstore_a:/c.md"], 1);
            assert_eq!(w["memstore_a:/new.md"], 1);
            // The server's edit was not written over the unreadable file; once readable it
            // is synced again (unchanged here, so the server's version comes down).
            chmod(&root.join("a.md"), 0o600);
            assert_eq!(std::fs::read_to_string(root.join("a.md")).unwrap(), "a");
            stores.sync_all().await;
            assert_eq!(std::fs::read_to_string(root.join("a.md")).unwrap(), "a2");
            // The whole folder unreadable: no pass does anything (no re-download, no delete).
            chmod(&root, 0o000);
            stores.sync_all().await;
            stores.sync_all().await;
            chmod(&root, 0o700);
            assert_eq!(e.writes().len(), 2, "{:?}", e.writes());
            assert_eq!(e.dp.memories("memstore_a").len(), 5);
            // The final pass waives the window: still nothing deleted; the folder goes whole.
            std::fs::write(root.join("c.md"), "c3").unwrap();
            stores.teardown(true, None).await;
            let on_server = e.dp.memories("memstore_a");
            assert_eq!(on_server.len(), 5, "{on_server:?}");
            assert_eq!(on_server["/c.md"], "c3");
            assert!(!root.exists(), "the store folder is left behind");
        });
}
