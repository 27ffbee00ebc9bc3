//! T18 at length (issue 7): a flipper atomically swaps symbolic links between a target inside
//! the workspace and one outside, for `HANDS_SYMLINK_RACE_SECS` seconds (2 by default; CI sets
//! 10), while the file tools read and write through them as fast as they can. Zero escapes: no
//! read returns the outside secret and no write lands outside. The test also checks the race
//! really ran (some reads saw the inside target, some were refused).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

fn race_duration() -> Duration {
    let secs = std::env::var("HANDS_SYMLINK_RACE_SECS")
        .ok()
        .map(|v| {
            v.parse::<u64>()
                .unwrap_or_else(|_| panic!("HANDS_SYMLINK_RACE_SECS={v:?} is not whole seconds"))
        })
        .unwrap_or(2);
    Duration::from_secs(secs)
}

#[test]
fn t18_symlink_flipper_finds_zero_escapes() {
    let fx = Fixture::new();
    let inside = fx.path("real");
    std::fs::create_dir(&inside).unwrap();
    std::fs::write(inside.join("f"), "inside").unwrap();
    std::fs::write(fx.outside.join("f"), SECRET).unwrap();
    // `dir` flips between ws/real and the outside directory; `file` between ws/real/f and the
    // outside secret (a final-component link).
    let (dir, file) = (fx.path("dir"), fx.path("file"));
    // Relative targets, as a tool would plant them; the outside ones climb out of the workspace.
    std::os::unix::fs::symlink("real", &dir).unwrap();
    std::os::unix::fs::symlink("real/f", &file).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flips = Arc::new(AtomicU64::new(0));
    let flipper = {
        let (stop, flips) = (stop.clone(), flips.clone());
        let (dir, file) = (dir.clone(), file.clone());
        std::thread::spawn(move || {
            let staged = dir.with_file_name(".staged");
            let mut out = false;
            while !stop.load(Ordering::SeqCst) {
                out = !out;
                let (d, f) = if out {
                    ("../outside", "../outside/f")
                } else {
                    ("real", "real/f")
                };
                // Create under a staging name, then rename over: each swap is atomic.
                for (target, link) in [(d, &dir), (f, &file)] {
                    let _ = std::fs::remove_file(&staged);
                    std::os::unix::fs::symlink(target, &staged).unwrap();
                    std::fs::rename(&staged, link).unwrap();
                }
                flips.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut reads, mut inside_reads, mut refused) = (0u64, 0u64, 0u64);
    let deadline = Instant::now() + race_duration();
    rt.block_on(async {
        while Instant::now() < deadline {
            for path in ["dir/f", "file"] {
                let out = fx.call("read", json!({"file_path": path})).await;
                let shown = fx.shown(&out);
                reads += 1;
                assert!(
                    !shown.contains(SECRET),
                    "read of {path} escaped after {reads} reads: {shown}"
                );
                if out.is_error {
                    refused += 1;
                } else if shown.contains("inside") {
                    inside_reads += 1;
                }
            }
            let out = fx
                .call("write", json!({"file_path": "dir/w", "content": "x"}))
                .await;
            assert!(!fx.shown(&out).contains(SECRET));
            assert!(
                !exists(&fx.outside.join("w")),
                "a write escaped after {reads} reads"
            );
        }
    });
    stop.store(true, Ordering::SeqCst);
    flipper.join().unwrap();
    assert_eq!(
        std::fs::read_to_string(fx.outside.join("f")).unwrap(),
        SECRET
    );
    println!(
        "symlink race: {reads} reads, {inside_reads} inside, {refused} refused, {} flips, 0 escapes",
        flips.load(Ordering::SeqCst)
    );
    // The race really ran both ways.
    assert!(
        inside_reads > 0 && refused > 0,
        "{inside_reads} inside, {refused} refused"
    );
}
