//! A workspace snapshot's round trip through S3 (moto's server on loopback) does not hold the
//! workspace in memory: a counting allocator measures the heap's peak growth while a 12 MiB
//! incompressible workspace is saved (multipart, 5 MiB parts) and restored, and that peak must
//! stay a small fraction of the workspace. Building the archive in a `Vec` or collecting the
//! download, as before, would put the whole 12 MiB on the heap.
//!
//! One test in this binary, so no other test allocates while it measures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use hands_lambda::S3WorkspaceStore;
use hands_secrets::moto::MotoServer;
use hands_worker::WorkspaceStore as _;

/// Live heap bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract, which `System` has too.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                    - layout.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and gives the heap's peak growth above where it started.
async fn peak_growth<T>(f: impl std::future::Future<Output = T>) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f.await;
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

const MIB: usize = 1024 * 1024;
const WORKSPACE: usize = 12 * MIB;

/// Writes `n` pseudo-random (incompressible) bytes to `path` in 64 KiB pieces.
fn write_noise(path: &std::path::Path, n: usize, seed: u64) {
    use std::io::Write as _;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = seed | 1;
    let mut piece = vec![0u8; 64 * 1024];
    for _ in 0..n / piece.len() {
        for b in piece.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 24) as u8;
        }
        f.write_all(&piece).unwrap();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_large_workspace_goes_through_s3_without_being_held_in_memory() {
    let Some(moto) = MotoServer::start().unwrap() else {
        return;
    };
    let sdk = moto.sdk_config().await;
    let client = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    client
        .create_bucket()
        .bucket("snapshots")
        .send()
        .await
        .unwrap();
    let store =
        S3WorkspaceStore::new(client.clone(), "snapshots".into()).with_part_size(5 * MIB as u64);

    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("data/deep")).unwrap();
    write_noise(&work.path().join("data/a.bin"), WORKSPACE / 2, 7);
    write_noise(&work.path().join("data/deep/b.bin"), WORKSPACE / 2, 11);
    std::fs::write(work.path().join("notes.txt"), "kept\n").unwrap();

    let (saved, save_peak) = peak_growth(store.save("sesn_big", work.path())).await;
    saved.unwrap();
    let head = client
        .head_object()
        .bucket("snapshots")
        .key(S3WorkspaceStore::key("sesn_big"))
        .send()
        .await
        .unwrap();
    let stored = head.content_length().unwrap() as usize;
    assert!(stored > WORKSPACE, "incompressible: {stored} bytes");
    // A multipart object's ETag ends in -<parts>: 12 MiB in 5 MiB parts is 3 parts.
    assert!(
        head.e_tag().unwrap().ends_with("-3\""),
        "{:?}",
        head.e_tag()
    );

    let back = tempfile::tempdir().unwrap();
    let (restored, restore_peak) = peak_growth(store.restore("sesn_big", back.path())).await;
    assert!(restored.unwrap());
    for f in ["data/a.bin", "data/deep/b.bin", "notes.txt"] {
        assert_eq!(
            std::fs::read(back.path().join(f)).unwrap(),
            std::fs::read(work.path().join(f)).unwrap(),
            "{f}"
        );
    }
    eprintln!(
        "workspace {WORKSPACE} bytes, archive {stored} bytes; heap peak growth: save {save_peak} bytes, restore {restore_peak} bytes"
    );
    // Memory that scaled with the workspace would put at least the 12 MiB archive on the heap.
    assert!(save_peak < WORKSPACE / 4, "save peak {save_peak} bytes");
    assert!(
        restore_peak < WORKSPACE / 4,
        "restore peak {restore_peak} bytes"
    );

    // Over the cap: not saved, the log says why, and the older snapshot is gone with it.
    let capped = S3WorkspaceStore::new(client, "snapshots".into()).with_max_bytes(MIB as u64);
    let err = capped
        .save("sesn_big", work.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("HANDS_WORKSPACE_MAX_BYTES"), "{err}");
    let none = tempfile::tempdir().unwrap();
    assert!(!store.restore("sesn_big", none.path()).await.unwrap());
}
