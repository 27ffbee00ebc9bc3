//! Directory listings kept between `grep` and `glob` calls, so a search or a glob of an
//! unchanged tree does not read every directory again (on ext4 a `getdents64` pass over a
//! hashed directory builds a tree of all its entries: ~20 µs for 50 entries, most of the
//! walk's cost). A listing holds every entry with its type; grep keeps the directories and
//! regular files of it, glob lists the rest too.
//!
//! A listing is trusted on the same terms as cached file content (`cache`): keyed by the
//! directory's `(st_dev, st_ino)`, used only while an `fstat` of the directory just opened
//! gives the same stamp (size, mtime and ctime to the nanosecond), and kept only once the
//! directory's ctime is older than the settle time when it is read. Creating, removing or
//! renaming an entry changes the directory's mtime and ctime, so a changed directory is read
//! again; what its entries hold is checked file by file as before. Only complete listings are
//! kept (a directory read up to the entry cap is read again next time), and one is used only
//! when all its entries fit in what is left of the cap, so the cap counts exactly as without it.
//! The memory held (entries, names and their allocations, counted by [`cost`]) is bounded by
//! [`LISTING_BYTES`]; past it everything is dropped and the cache fills again.
//!
//! What this cannot see, as for cached content (`cache`): directories on file systems whose
//! ctime this kernel does not maintain (a network or FUSE file system changed on the other
//! side) can be listed from a stale listing, and so can any directory after the system clock
//! is set backwards past its ctime.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::cache::Stamp;
use super::walk::{DirEntries, DirEntry};

/// What the listings may hold at most, as counted by [`cost`].
const LISTING_BYTES: usize = 4 << 20;

struct Cached {
    stamp: Stamp,
    entries: Vec<DirEntry>,
    /// Entries the directory had (every kind, also those not kept).
    read: usize,
}

#[derive(Default)]
struct Held {
    map: HashMap<(u64, u64), Cached>,
    bytes: usize,
}

#[derive(Default)]
pub(crate) struct ListingCache {
    held: Mutex<Held>,
}

/// What an allocation of `bytes` takes from glibc's malloc: an 8-byte header, rounded up to
/// 16 bytes, 32 at least.
fn block(bytes: usize) -> usize {
    if bytes == 0 {
        return 0;
    }
    (bytes + 8).next_multiple_of(16).max(32)
}

/// The heap a kept listing takes: its map slot, its entry vector (every slot of its capacity)
/// and every name's buffer (its capacity), each as the allocator's block. An entry whose name
/// has up to 24 bytes costs 72 bytes: a 40-byte slot (name, type and inode number) and a
/// 32-byte block.
fn cost(entries: &Vec<DirEntry>) -> usize {
    let names: usize = entries
        .iter()
        .map(|(name, _, _)| block(name.capacity()))
        .sum();
    size_of::<((u64, u64), Cached)>() + block(entries.capacity() * size_of::<DirEntry>()) + names
}

impl ListingCache {
    /// The listing of the directory stamped `stamp`, if kept and if its entries fit in
    /// `budget`. A listing of the same directory with another stamp is dropped. A copy: the
    /// walk takes every file's name into its result anyway, so sharing the kept entries would
    /// save only the copies of the subdirectories' names.
    pub(crate) fn get(&self, stamp: &Stamp, budget: usize) -> Option<DirEntries> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (stamp.dev, stamp.ino);
        let cached = held.map.get(&key)?;
        if cached.stamp != *stamp {
            if let Some(stale) = held.map.remove(&key) {
                held.bytes -= cost(&stale.entries);
            }
            return None;
        }
        (cached.read <= budget).then(|| DirEntries {
            entries: cached.entries.clone(),
            dev: Some(stamp.dev),
            read: cached.read,
            truncated: false,
        })
    }

    /// Keeps the complete listing `listing` of the directory stamped `stamp`.
    pub(crate) fn insert(&self, stamp: Stamp, listing: &DirEntries) {
        if listing.truncated {
            return;
        }
        let entries = listing.entries.clone();
        let need = cost(&entries);
        if need > LISTING_BYTES {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (stamp.dev, stamp.ino);
        if let Some(old) = held.map.remove(&key) {
            held.bytes -= cost(&old.entries);
        }
        if held.bytes + need > LISTING_BYTES {
            held.map.clear();
            held.bytes = 0;
        }
        held.bytes += need;
        held.map.insert(
            key,
            Cached {
                stamp,
                entries,
                read: listing.read,
            },
        );
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .len()
    }
}
