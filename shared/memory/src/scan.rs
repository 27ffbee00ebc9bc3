//! One look at a store folder: every regular file's content digest, the marker check, and
//! what was skipped and why. Files are never read when their size is over the service limit,
//! and a file whose size, times and inode have not changed since an earlier scan is not read
//! again (the reference's hash cache, with its 2 s trust margin for coarse file-system clocks).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use hands_protocol::memory::{
    MAX_MEMORY_BYTES, MAX_MEMORY_PATH_SEGMENTS, STORE_MARKER_FILE, content_sha256,
    is_valid_memory_path,
};

use crate::fsops::{self, ReadOutcome, Stamp};

/// At most this many entries (files, directories, anything skipped) are looked at per walk of
/// a store folder. The service's stores are text notes; a legitimate store holds tens to a few
/// thousand memories, while tool code can create a million files in seconds, and an uncapped
/// walk would then cost every pass (and every after-call check) time and memory in proportion.
/// Past the cap the walk stops: files it did not reach are neither uploaded in that pass nor
/// taken as deleted. Paths the store already knows (the baseline and the server's listing) are
/// looked up one by one instead, so their edits and deletions are still seen.
pub const MAX_WALK_ENTRIES: usize = 10_000;

/// Files younger than this are hashed again next time: a rewrite within one clock tick can
/// keep the same stamps.
const TRUST_MARGIN_NS: i128 = 2_000_000_000;

/// What a file was found to be at a given stamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hashed {
    Sha(String),
    TooLarge(u64),
    NotUtf8,
    NotRegular,
    /// Never cached: a `chmod` back changes the stamp anyway, and the file must be read then.
    Unreadable,
}

/// Digests remembered between scans.
pub type HashCache = HashMap<String, (Stamp, Hashed)>;

/// The marker's content for a store.
pub fn marker_content(store_id: &str) -> String {
    format!("version 1\n{store_id}")
}

/// One scan.
#[derive(Debug, Default)]
pub struct Scan {
    /// Syncable files: relative path -> digest.
    pub files: BTreeMap<String, String>,
    pub marker_ok: bool,
    pub marker_present: bool,
    /// Everything left out, with the reason: `(key for log-once, path, reason)`.
    pub skipped: Vec<(String, String, String)>,
    /// The walk stopped at its cap ([`MAX_WALK_ENTRIES`]): a path missing from `files` may still exist
    /// (see [`lookup`]).
    pub truncated: bool,
    /// Paths (and directories, ending with `/`; the root is `""`) the worker may not read:
    /// their content is unknown this pass, so they are neither uploaded, pulled over nor
    /// taken as deleted (see [`Scan::is_unknown`]).
    pub unknown: BTreeSet<String>,
    /// The marker exists but cannot be read.
    pub marker_unreadable: bool,
}

impl Scan {
    /// Whether `rel` could not be looked at in this scan (it, or a directory above it, is
    /// unreadable): absent from `files` does not mean deleted then.
    pub fn is_unknown(&self, rel: &str) -> bool {
        fsops::is_below_any(&self.unknown, rel)
    }
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// A fingerprint of the folder from metadata alone (no file is read).
pub fn fingerprint(root: &Path, cap: usize) -> u64 {
    match fsops::walk(root, MAX_MEMORY_PATH_SEGMENTS + 1, cap) {
        Ok(w) => fingerprint_of(&w),
        Err(_) => 0,
    }
}

fn fingerprint_of(w: &fsops::Walk) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    w.root_missing.hash(&mut h);
    w.files.hash(&mut h);
    w.skipped.hash(&mut h);
    w.truncated.hash(&mut h);
    w.unreadable.hash(&mut h);
    h.finish()
}

/// Scans `root`, looking at no more than `cap` entries; `cache` is updated in place.
pub fn scan(
    root: &Path,
    store_id: &str,
    cache: &mut HashCache,
    cap: usize,
) -> std::io::Result<Scan> {
    let walk_start = now_ns();
    let w = fsops::walk(root, MAX_MEMORY_PATH_SEGMENTS + 1, cap)?;
    let mut out = Scan {
        truncated: w.truncated,
        ..Scan::default()
    };
    for (rel, why) in &w.skipped {
        out.skipped
            .push((format!("skip:{rel}:{why}"), rel.clone(), (*why).to_owned()));
    }
    for rel in &w.unreadable {
        out.skipped.push((
            format!("unreadable:{rel}"),
            rel.clone(),
            "the worker may not read it (its permissions were changed); neither synced nor taken as deleted while so".into(),
        ));
    }
    out.unknown = w.unreadable;
    // A truncated walk did not see every file: keep the digests of the others for lookups.
    if !w.truncated {
        cache.retain(|rel, _| w.files.contains_key(rel));
    }
    for (rel, stamp) in &w.files {
        if rel == STORE_MARKER_FILE {
            continue;
        }
        hash_one(root, rel, stamp, cache, walk_start, &mut out)?;
    }
    // The marker is read directly: a truncated walk may not have reached it.
    match fsops::read_file(root, STORE_MARKER_FILE, 4096)? {
        ReadOutcome::Absent => {}
        ReadOutcome::Content(c) => {
            out.marker_present = true;
            out.marker_ok = c == marker_content(store_id);
        }
        ReadOutcome::Unreadable => {
            out.marker_present = true;
            out.marker_unreadable = true;
        }
        _ => out.marker_present = true,
    }
    Ok(out)
}

/// Completes a truncated scan with the given paths (the ones the store knows of), looked up
/// one by one: a path found is hashed into `scan.files`, one absent is really absent.
pub fn lookup<'a>(
    root: &Path,
    rels: impl IntoIterator<Item = &'a String>,
    cache: &mut HashCache,
    scan: &mut Scan,
) -> std::io::Result<()> {
    let walk_start = now_ns();
    for rel in rels {
        if rel == STORE_MARKER_FILE || scan.files.contains_key(rel) {
            continue;
        }
        match fsops::lookup(root, rel)? {
            fsops::Lookup::Absent => {
                cache.remove(rel);
            }
            fsops::Lookup::Unreadable => {
                scan.skipped.push((
                    format!("unreadable:{rel}"),
                    rel.clone(),
                    "the worker may not read it (its permissions were changed); neither synced nor taken as deleted while so".into(),
                ));
                scan.unknown.insert(rel.clone());
            }
            fsops::Lookup::NotRegular => scan.skipped.push((
                format!("irregular:{rel}"),
                rel.clone(),
                "not a regular file".into(),
            )),
            fsops::Lookup::File(stamp) => {
                if is_valid_memory_path(&format!("/{rel}")) {
                    hash_one(root, rel, &stamp, cache, walk_start, scan)?;
                }
            }
        }
    }
    Ok(())
}

/// Hashes one file (or takes its digest from the cache) into `out`.
fn hash_one(
    root: &Path,
    rel: &str,
    stamp: &Stamp,
    cache: &mut HashCache,
    walk_start: i128,
    out: &mut Scan,
) -> std::io::Result<()> {
    if !is_valid_memory_path(&format!("/{rel}")) {
        out.skipped.push((
            format!("badpath:{rel}"),
            rel.to_owned(),
            "not a valid memory path (segments, length or characters)".into(),
        ));
        return Ok(());
    }
    let max = MAX_MEMORY_BYTES as u64;
    let hashed = match cache.get(rel) {
        Some((s, h)) if s == stamp => h.clone(),
        _ => {
            // The size check comes first: an oversized file is never opened.
            let h = if stamp.size > max {
                Hashed::TooLarge(stamp.size)
            } else {
                match fsops::read_file(root, rel, max)? {
                    ReadOutcome::Absent => return Ok(()),
                    ReadOutcome::Content(c) => Hashed::Sha(content_sha256(c.as_bytes())),
                    ReadOutcome::TooLarge(n) => Hashed::TooLarge(n),
                    ReadOutcome::NotUtf8 => Hashed::NotUtf8,
                    ReadOutcome::NotRegular => Hashed::NotRegular,
                    ReadOutcome::Unreadable => Hashed::Unreadable,
                }
            };
            if h != Hashed::Unreadable
                && stamp.mtime_ns.max(stamp.ctime_ns) < walk_start - TRUST_MARGIN_NS
            {
                cache.insert(rel.to_owned(), (*stamp, h.clone()));
            }
            h
        }
    };
    match hashed {
        Hashed::Sha(sha) => {
            out.files.insert(rel.to_owned(), sha);
        }
        Hashed::TooLarge(n) => out.skipped.push((
            format!("large:{rel}:{n}:{}", stamp.mtime_ns),
            rel.to_owned(),
            format!("{n} bytes, over the service's limit of {max} bytes (not read)"),
        )),
        Hashed::NotUtf8 => out.skipped.push((
            format!("utf8:{rel}:{}", stamp.mtime_ns),
            rel.to_owned(),
            "not valid UTF-8 (memories are text)".into(),
        )),
        Hashed::NotRegular => out.skipped.push((
            format!("irregular:{rel}"),
            rel.to_owned(),
            "not a regular file".into(),
        )),
        Hashed::Unreadable => {
            out.skipped.push((
                format!("unreadable:{rel}:{}", stamp.ctime_ns),
                rel.to_owned(),
                "the worker may not read it (its permissions were changed); neither synced nor taken as deleted while so".into(),
            ));
            out.unknown.insert(rel.to_owned());
        }
    }
    Ok(())
}
