//! The content cache of `grep`: file contents kept in memory between calls, so a search of an
//! unchanged tree costs one `fstatat` per file instead of open, fstat, reads and close.
//!
//! An entry is keyed by the file's `(st_dev, st_ino)` and trusted only while its stamp — size,
//! `mtime` and `ctime`, both to the nanosecond — is what `fstatat` reports now. Every write
//! through any path (a hard link from outside the workspace included), every truncate, chmod,
//! rename or replacement changes the inode's `ctime` (or the inode itself), and `ctime` cannot be
//! set by a user, unlike `mtime` (`touch -d`). One gap remains: a file system stamps times from a
//! clock with coarse granularity (one timer tick, ~4 ms; whole seconds on some file systems), so
//! a change in the same tick as the one before could leave the stamp as it was. Content is
//! therefore cached only once its `ctime` is older than [`crate::Limits::grep_cache_settle`]
//! when it is read (git's "racily clean" rule): any later change then gets a later `ctime`.
//! What this cannot see (the residual risk): the system clock set backwards past a cached
//! file's `ctime`, writes through a shared writable `mmap` to a page that is already dirty (the
//! kernel updates the times on the first write fault only; the shell's processes do not survive
//! a call, others could), and file systems whose `ctime` is not maintained by this kernel (a
//! network or FUSE file system changed on the other side).
//!
//! On local file systems each entry also carries an inotify watch on its file's inode
//! (`watch`): while no event has come for it since it was last stated, a search serves it
//! without the stat, and the events drop content written through a shared mapping, which the
//! stat alone can miss.
//!
//! The cache is one per process (per worker, shared by its sessions: an entry is found only
//! through a stat of the same inode or a directory entry naming it, which a session can reach
//! only inside its own roots),
//! bounded by [`CACHE_BYTES`] split evenly over [`SHARDS`] shards by inode number; files over
//! [`CACHE_FILE_MAX`] are never cached. When a shard is full, its least recently used entries
//! not used by the call inserting are evicted; when every entry belongs to that call, new
//! content is not cached (a tree larger than the cache keeps its first part cached, instead of
//! each search evicting what the next one needs first).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use super::grams::Grams;
use super::listings::ListingCache;
use super::watch::{Trust, Watch, Watcher};

/// The bytes of file content the process keeps in memory at most (plus [`ENTRY_OVERHEAD`] per
/// file). 32 MiB holds a 2,000-file, 20 MB tree whole.
pub(crate) const CACHE_BYTES: usize = 32 << 20;
/// Larger files are searched from disk on every call and never cached.
pub(crate) const CACHE_FILE_MAX: u64 = 1 << 20;
/// What one entry costs besides its content (map slot, stamp, allocation headers), counted
/// against the budget so that many tiny files cannot exceed it.
pub(crate) const ENTRY_OVERHEAD: usize = 128;

/// What identifies one version of a file's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub dev: u64,
    pub ino: u64,
    pub size: i64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl Stamp {
    // The field types of `struct stat` differ between architectures; these casts only widen.
    #[allow(clippy::unnecessary_cast)]
    pub(crate) fn of(st: &rustix::fs::Stat) -> Stamp {
        Stamp {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            size: st.st_size as i64,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
        }
    }

    /// Whether the content was last changed at least `settle` before `now`, so that a later
    /// change is certain to get a different `ctime`. A `ctime` in the future (clock skew) is
    /// never settled.
    pub(crate) fn settled(&self, settle: Duration, now: SystemTime) -> bool {
        let (secs, nanos) = self.ctime;
        let (Ok(secs), Ok(nanos)) = (u64::try_from(secs), u32::try_from(nanos)) else {
            return false;
        };
        let Some(changed) = SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos)) else {
            return false;
        };
        now.duration_since(changed).is_ok_and(|age| age > settle)
    }
}

/// A file's content as read.
pub(crate) struct Content {
    pub bytes: Box<[u8]>,
    /// No NUL byte and no byte-order-mark lead byte at the start: a search of the slice in
    /// memory is then exactly the search of the file (no binary detection, no transcoding).
    pub plain: bool,
    /// No byte is above 0x7F: the search then uses the pattern's ASCII matcher (`matchers`).
    pub ascii: bool,
}

impl Content {
    pub(crate) fn new(bytes: Vec<u8>) -> Content {
        let plain = !matches!(bytes.first(), Some(0xEF | 0xFE | 0xFF))
            && memchr::memchr(0, &bytes).is_none();
        let ascii = bytes.is_ascii();
        Content {
            bytes: bytes.into_boxed_slice(),
            plain,
            ascii,
        }
    }

    /// The filter of cached content (`grams`), built when the content is searched the second
    /// time and asked by every later search of it; only plain content gets one (module doc of
    /// `grams`). Not at the first search: building it costs several times what searching the
    /// content once does, so a tree searched once (the first look at a repository) is
    /// searched at the speed of reading it, and the cost goes only to files searched again.
    pub(crate) fn filter(&self) -> Option<Grams> {
        self.plain.then(|| Grams::of(&self.bytes))
    }
}

/// What a lookup found.
pub(crate) enum Cached {
    /// Not cached, or changed since.
    Miss,
    /// Cached and unchanged, but not wanted: the caller's filter rules it out.
    RuledOut,
    Content(Arc<Content>),
    /// Cached plain content that has no filter yet (searched once so far): the caller builds
    /// it ([`Content::filter`]) and hands it back with [`ContentCache::add_filter`]. Handed to
    /// one caller only: the others that find it meanwhile get [`Cached::Content`] and search
    /// it whole (cheaper than building the filter again), so a hundred sessions searching one
    /// tree at once build each file's filter once, not a hundred times.
    Unfiltered(Arc<Content>),
}

struct Slot {
    stamp: Stamp,
    content: Arc<Content>,
    /// The content's filter, held in the slot itself: a lookup asks it without touching the
    /// content's allocation (a cache miss per file, most of a lookup's cost when the filter
    /// rules the file out).
    filter: Option<Grams>,
    /// A caller was handed the content to build its filter ([`Cached::Unfiltered`]).
    filter_claimed: bool,
    /// The call that last used it.
    used: u64,
    /// The inotify watch on the file's inode (`watch`), when it has one.
    watch: Option<Watch>,
    /// Served without a stat: in which epoch of the watcher, and since when (`watch`).
    trusted: Option<(u64, Instant)>,
}

/// Hashes `(st_dev, st_ino)` keys: inode numbers are not chosen by an adversary in a way that
/// matters here (a collision costs a probe, never a wrong answer: the key is compared), so a
/// multiply-and-rotate is enough and a fifth of SipHash's cost.
#[derive(Default, Clone, Copy)]
struct InodeHasher(u64);

impl std::hash::Hasher for InodeHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type InodeMap = HashMap<(u64, u64), Slot, std::hash::BuildHasherDefault<InodeHasher>>;

/// One part of the cache: the entries whose inode number falls to it, and their cost.
#[derive(Default)]
struct Shard {
    map: InodeMap,
    bytes: usize,
}

/// The cache is split by inode number so that the threads of one search (and concurrent
/// searches) rarely wait for the same lock: one shared lock cost a tenth of a cached search.
const SHARDS: usize = 16;

pub(crate) struct ContentCache {
    /// The listings of directories, kept on the same terms (`listings`).
    pub listings: ListingCache,
    /// Made at the first search (`watch`); holds `None` where inotify is unavailable.
    watcher: OnceLock<Option<Watcher>>,
    /// Each shard's share of the budget.
    shard_budget: usize,
    shards: [Mutex<Shard>; SHARDS],
    calls: AtomicU64,
    /// Files stated by searches through this cache (what the watches save, counted).
    #[cfg(test)]
    pub stated: std::sync::atomic::AtomicUsize,
}

/// The shard of the file `(st_dev, st_ino)`: the top bits of a multiplicative hash, so that
/// the files of one tree spread evenly over the shards whatever pattern their inode numbers
/// follow. (The inode number modulo the shard count did not: the toolbench tree put 1.1 to
/// 3.5 MB in shards of a 2 MiB share, and the files over a full shard's share were read from
/// disk at every search; hashed, 1.25-1.5 MB each.)
fn shard_index((dev, ino): (u64, u64)) -> usize {
    const BITS: u32 = SHARDS.trailing_zeros();
    ((ino ^ dev.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BITS)) as usize
}

/// Whether an entry trusted as `trusted` (epoch, since) may be served unstated in `trust`.
fn trusted_in(trusted: Option<(u64, Instant)>, trust: &Trust<'_>) -> bool {
    trusted.is_some_and(|(epoch, since)| {
        epoch == trust.epoch && trust.now.saturating_duration_since(since) < trust.lifetime
    })
}

fn cost(content: &Content, filter: Option<&Grams>) -> usize {
    content.bytes.len() + filter.map_or(0, Grams::size) + ENTRY_OVERHEAD
}

impl ContentCache {
    pub(crate) fn new(budget: usize) -> ContentCache {
        ContentCache {
            listings: ListingCache::default(),
            watcher: OnceLock::new(),
            shard_budget: budget / SHARDS,
            shards: std::array::from_fn(|_| Mutex::default()),
            calls: AtomicU64::new(0),
            #[cfg(test)]
            stated: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The process's cache.
    pub(crate) fn global() -> &'static ContentCache {
        static CACHE: LazyLock<ContentCache> = LazyLock::new(|| ContentCache::new(CACHE_BYTES));
        &CACHE
    }

    fn shard(&self, stamp: &Stamp) -> std::sync::MutexGuard<'_, Shard> {
        self.shard_of((stamp.dev, stamp.ino))
    }

    fn shard_of(&self, key: (u64, u64)) -> std::sync::MutexGuard<'_, Shard> {
        let i = shard_index(key);
        // Nothing a panic could interrupt leaves an entry inconsistent with its file.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The watcher of this cache's entries, made on first use (`None`: no inotify).
    pub(crate) fn watcher(&self) -> Option<&Watcher> {
        self.watcher.get_or_init(Watcher::new).as_ref()
    }

    /// Removes the watches of entries that left the cache.
    fn forget(&self, watches: &[Watch]) {
        if let Some(Some(watcher)) = self.watcher.get() {
            watcher.detach(watches);
        }
    }

    /// A number for one search call, recorded on the entries it uses.
    pub(crate) fn begin_call(&self) -> u64 {
        self.calls.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The content of the file whose stamp is `stamp`, if cached and `wanted` by its filter
    /// (asked under the shard's lock, so it should be quick). An entry for the same inode
    /// with another stamp is stale and dropped.
    pub(crate) fn lookup(
        &self,
        stamp: &Stamp,
        call: u64,
        wanted: impl FnOnce(Option<&Grams>) -> bool,
    ) -> Cached {
        let mut shard = self.shard(stamp);
        let key = (stamp.dev, stamp.ino);
        let Some(slot) = shard.map.get_mut(&key) else {
            return Cached::Miss;
        };
        if slot.stamp == *stamp {
            return Self::found(slot, call, wanted);
        }
        // Its watch stays: it is on the same inode, whose next entry takes it over.
        if let Some(stale) = shard.map.remove(&key) {
            shard.bytes -= cost(&stale.content, stale.filter.as_ref());
        }
        Cached::Miss
    }

    /// What [`ContentCache::lookup`] finds for the file `key` (`(st_dev, st_ino)`) without
    /// a stat: `None` unless its entry is trusted in `trust`'s epoch and was last stated
    /// within its lifetime (`watch`); then the entry's stamp and what it holds.
    pub(crate) fn lookup_trusted(
        &self,
        key: (u64, u64),
        trust: &Trust<'_>,
        call: u64,
        wanted: impl FnOnce(Option<&Grams>) -> bool,
    ) -> Option<(Stamp, Cached)> {
        let mut shard = self.shard_of(key);
        let slot = shard.map.get_mut(&key)?;
        if !trusted_in(slot.trusted, trust) {
            return None;
        }
        Some((slot.stamp, Self::found(slot, call, wanted)))
    }

    /// The stamp of the file `key` (`(st_dev, st_ino)`), without a stat, if its entry is
    /// trusted in `trust` (`glob` takes its modification time from it).
    pub(crate) fn trusted_stamp(&self, key: (u64, u64), trust: &Trust<'_>) -> Option<Stamp> {
        let shard = self.shard_of(key);
        let slot = shard.map.get(&key)?;
        trusted_in(slot.trusted, trust).then_some(slot.stamp)
    }

    /// What a lookup that found `slot` unchanged gives.
    fn found(slot: &mut Slot, call: u64, wanted: impl FnOnce(Option<&Grams>) -> bool) -> Cached {
        slot.used = slot.used.max(call);
        if slot.filter.is_none() && slot.content.plain && !slot.filter_claimed {
            slot.filter_claimed = true;
            return Cached::Unfiltered(Arc::clone(&slot.content));
        }
        if !wanted(slot.filter.as_ref()) {
            return Cached::RuledOut;
        }
        Cached::Content(Arc::clone(&slot.content))
    }

    /// Whether the entry of `stamp` has a watch but is not trusted in `trust` (so a stat that
    /// found it unchanged may trust it again).
    pub(crate) fn watched_untrusted(&self, stamp: &Stamp, trust: &Trust<'_>) -> bool {
        self.shard(stamp)
            .map
            .get(&(stamp.dev, stamp.ino))
            .is_some_and(|slot| slot.watch.is_some() && !trusted_in(slot.trusted, trust))
    }

    /// The entry of `key` is no longer served without a stat.
    pub(crate) fn distrust(&self, key: (u64, u64)) {
        if let Some(slot) = self.shard_of(key).map.get_mut(&key) {
            slot.trusted = None;
        }
    }

    /// Drops the entry of `key` (its watch stays, for the inode's next entry).
    pub(crate) fn drop_entry(&self, key: (u64, u64)) {
        let mut shard = self.shard_of(key);
        if let Some(gone) = shard.map.remove(&key) {
            shard.bytes -= cost(&gone.content, gone.filter.as_ref());
        }
    }

    /// Drops every entry (its watcher starts over).
    pub(crate) fn clear(&self) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.map.clear();
            shard.bytes = 0;
        }
    }

    /// Gives the entry of `stamp`, if still there unchanged, its watch, and trust from
    /// `trusted` (epoch and time) if any.
    pub(crate) fn attach(&self, stamp: &Stamp, watch: Watch, trusted: Option<(u64, Instant)>) {
        if let Some(slot) = self.shard(stamp).map.get_mut(&(stamp.dev, stamp.ino))
            && slot.stamp == *stamp
        {
            slot.watch = Some(watch);
            slot.trusted = trusted;
        }
    }

    /// Trusts the entry of `stamp` (just stated unchanged) again from `now`, if it has a
    /// watch that `watched` says is in place and undisturbed.
    pub(crate) fn retrust(
        &self,
        stamp: &Stamp,
        epoch: u64,
        now: Instant,
        watched: impl FnOnce(&Watch) -> bool,
    ) {
        if let Some(slot) = self.shard(stamp).map.get_mut(&(stamp.dev, stamp.ino))
            && slot.stamp == *stamp
            && slot.watch.as_ref().is_some_and(watched)
        {
            slot.trusted = Some((epoch, now));
        }
    }

    /// The content of the file whose stamp is `stamp`, if cached.
    #[cfg(test)]
    pub(crate) fn get(&self, stamp: &Stamp, call: u64) -> Option<Arc<Content>> {
        match self.lookup(stamp, call, |_| true) {
            Cached::Content(content) | Cached::Unfiltered(content) => Some(content),
            Cached::Miss | Cached::RuledOut => None,
        }
    }

    /// Keeps `filter` as the filter of the content cached for `stamp`, if that entry is still
    /// there unchanged and has none, and it fits the budget (otherwise the content stays
    /// unfiltered and is searched whole each time, as before).
    pub(crate) fn add_filter(&self, stamp: &Stamp, filter: Grams) {
        let budget = self.shard_budget;
        let mut shard = self.shard(stamp);
        let size = filter.size();
        if shard.bytes + size > budget {
            return;
        }
        let Some(slot) = shard.map.get_mut(&(stamp.dev, stamp.ino)) else {
            return;
        };
        if slot.stamp != *stamp || slot.filter.is_some() {
            return;
        }
        slot.filter = Some(filter);
        shard.bytes += size;
    }

    /// Caches `content` (without a filter: [`ContentCache::add_filter`]) as the content of
    /// the file stamped `stamp`, evicting the entries other calls used least recently if
    /// needed; nothing is cached when that would not make room. Returns whether it was.
    pub(crate) fn insert(&self, stamp: Stamp, content: Arc<Content>, call: u64) -> bool {
        let need = cost(&content, None);
        let budget = self.shard_budget;
        if need > budget {
            return false;
        }
        // The watches of entries evicted, removed once the shard's lock is let go.
        let mut gone_watches = Vec::new();
        let inserted = {
            let mut shard = self.shard(&stamp);
            let key = (stamp.dev, stamp.ino);
            // An older entry of the same inode: its watch is taken over (`attach`).
            if let Some(old) = shard.map.remove(&key) {
                shard.bytes -= cost(&old.content, old.filter.as_ref());
            }
            let mut remove = |shard: &mut Shard, key: &(u64, u64)| {
                if let Some(gone) = shard.map.remove(key) {
                    shard.bytes -= cost(&gone.content, gone.filter.as_ref());
                    gone_watches.extend(gone.watch);
                }
            };
            if shard.bytes + need > budget {
                // Evict down to three quarters of the budget, so that eviction (a sort) is
                // rare.
                let target = (budget / 4 * 3).min(budget - need);
                let mut old: Vec<(u64, (u64, u64))> = shard
                    .map
                    .iter()
                    .filter(|(_, s)| s.used < call)
                    .map(|(k, s)| (s.used, *k))
                    .collect();
                old.sort_unstable();
                for (_, key) in old {
                    if shard.bytes <= target {
                        break;
                    }
                    remove(&mut shard, &key);
                }
            }
            let fits = shard.bytes + need <= budget;
            if fits {
                shard.bytes += need;
                shard.map.insert(
                    key,
                    Slot {
                        stamp,
                        content,
                        filter: None,
                        filter_claimed: false,
                        used: call,
                        watch: None,
                        trusted: None,
                    },
                );
            }
            fits
        };
        self.forget(&gone_watches);
        inserted
    }

    #[cfg(test)]
    fn totals(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(n, b), s| {
            let s = s.lock().unwrap_or_else(PoisonError::into_inner);
            (n + s.map.len(), b + s.bytes)
        })
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.totals().1
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.totals().0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn stamp(ino: u64, size: i64, ctime: i64) -> Stamp {
        Stamp {
            dev: 1,
            ino,
            size,
            mtime: (ctime, 0),
            ctime: (ctime, 0),
        }
    }

    fn content(n: usize) -> Arc<Content> {
        Arc::new(Content::new(vec![b'a'; n]))
    }

    #[test]
    fn a_changed_stamp_is_a_miss_and_drops_the_entry() {
        let cache = ContentCache::new(1 << 20);
        let call = cache.begin_call();
        cache.insert(stamp(7, 10, 100), content(10), call);
        assert!(cache.get(&stamp(7, 10, 100), call).is_some());
        let mut changed = stamp(7, 10, 100);
        changed.ctime.1 = 1;
        assert!(cache.get(&changed, call).is_none());
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
        assert!(cache.get(&stamp(7, 10, 100), call).is_none());
    }

    /// Content is cached without a filter; the second use finds it unfiltered, and a filter
    /// handed back is kept (and counted) only for the entry it was built for.
    #[test]
    fn a_filter_comes_with_the_second_use_and_only_for_its_own_entry() {
        let cache = ContentCache::new(1 << 20);
        let call = cache.begin_call();
        let s = stamp(7, 100, 100);
        cache.insert(s, content(100), call);
        let before = cache.bytes();
        let Cached::Unfiltered(found) = cache.lookup(&s, call, |_| true) else {
            panic!("expected the content without a filter");
        };
        // Claimed by that lookup: another one meanwhile searches the content whole.
        let mut asked = false;
        let hit = cache.lookup(&s, call, |f| {
            asked = true;
            f.is_none()
        });
        assert!(matches!(hit, Cached::Content(_)) && asked);
        let filter = found.filter().unwrap();
        let size = filter.size();
        // For another version of the file: not kept.
        let mut other = s;
        other.ctime.1 = 1;
        cache.add_filter(&other, found.filter().unwrap());
        assert_eq!(cache.bytes(), before);
        cache.add_filter(&s, filter);
        assert_eq!(cache.bytes(), before + size);
        let mut asked = false;
        let hit = cache.lookup(&s, call, |f| {
            asked = f.is_some();
            true
        });
        assert!(matches!(hit, Cached::Content(_)) && asked);
        // Content that is not plain (a NUL byte) never gets one: it is a plain hit.
        let binary = stamp(8, 3, 100);
        cache.insert(binary, Arc::new(Content::new(b"a\0b".to_vec())), call);
        assert!(matches!(
            cache.lookup(&binary, call, |_| true),
            Cached::Content(_)
        ));
    }

    #[test]
    fn the_budget_is_never_exceeded_and_the_current_call_keeps_its_entries() {
        // The k-th inode number of shard 0, whose budget is ten entries.
        let per = 1000 + ENTRY_OVERHEAD;
        let cache = ContentCache::new(per * 10 * SHARDS);
        let shard0: Vec<u64> = (0..)
            .filter(|&i| shard_index((1, i)) == 0)
            .take(201)
            .collect();
        let ino = |k: u64| shard0[k as usize];
        let elsewhere = (0..).find(|&i| shard_index((1, i)) != 0).unwrap();
        let first = cache.begin_call();
        for k in 0..20 {
            cache.insert(stamp(ino(k), 1000, 5), content(1000), first);
            assert!(cache.bytes() <= per * 10);
        }
        // The first call filled the shard; its own later files were not admitted.
        assert_eq!(cache.len(), 10);
        assert!(cache.get(&stamp(ino(0), 1000, 5), first).is_some());
        assert!(cache.get(&stamp(ino(15), 1000, 5), first).is_none());
        // A later call evicts the least recently used entries of earlier calls.
        let second = cache.begin_call();
        assert!(cache.get(&stamp(ino(9), 1000, 5), second).is_some());
        cache.insert(stamp(ino(100), 1000, 5), content(1000), second);
        assert!(cache.get(&stamp(ino(100), 1000, 5), second).is_some());
        assert!(cache.get(&stamp(ino(9), 1000, 5), second).is_some());
        assert!(cache.bytes() <= per * 10);
        assert!(cache.len() < 10);
        // Other shards have their own room.
        cache.insert(stamp(elsewhere, 1000, 5), content(1000), second);
        assert!(cache.get(&stamp(elsewhere, 1000, 5), second).is_some());
        // Content larger than a shard's budget is never cached.
        cache.insert(stamp(ino(200), 0, 5), content(per * 10), second);
        assert!(cache.get(&stamp(ino(200), 0, 5), second).is_none());
    }

    /// Inode numbers in a pattern (every 16th, as a tree's files can be) still spread evenly.
    #[test]
    fn patterned_inode_numbers_spread_over_the_shards() {
        for step in [1, 2, 16, 64, 4096] {
            let mut counts = [0usize; SHARDS];
            for k in 0..16_000u64 {
                counts[shard_index((2049, 1_000_000 + k * step))] += 1;
            }
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(*min > 850 && *max < 1150, "step {step}: {counts:?}");
        }
    }

    #[test]
    fn only_settled_content_counts_as_settled() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let s = |secs| stamp(1, 1, secs);
        assert!(s(997).settled(Duration::from_secs(2), now));
        assert!(!s(998).settled(Duration::from_secs(2), now));
        assert!(!s(1001).settled(Duration::ZERO, now));
        assert!(!s(-5).settled(Duration::ZERO, now));
    }

    #[test]
    fn plain_content_has_no_nul_and_no_bom_lead() {
        assert!(Content::new(b"text\n".to_vec()).plain);
        assert!(Content::new(Vec::new()).plain);
        assert!(!Content::new(b"te\0xt".to_vec()).plain);
        assert!(!Content::new(b"\xEF\xBB\xBFtext".to_vec()).plain);
        assert!(!Content::new(b"\xFF\xFEt\0".to_vec()).plain);
    }
}
