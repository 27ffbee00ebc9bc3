//! Change notification for the content cache (`cache`), so that a search of an unchanged tree
//! needs no system call per file.
//!
//! Without it, a cached file is trusted only after an `fstatat` shows its stamp unchanged: on a
//! cached search of a 2,000-file tree that stat is four fifths of the CPU (2-3 µs per file on
//! a virtual machine whose system calls are slow). With it, each cached file carries an inotify
//! watch on its inode, added when its content is cached, and a file is served without a stat
//! while it is *trusted*: stated unchanged (or just read) with its watch in place, nobody had
//! it open then, and no event has come for it since. Every search reads the pending events
//! first (`Watcher::drain`), so a change made before the search began is seen by it.
//!
//! Why a watch on each file's inode and not one per directory: a watch on an inode sees every
//! change to that inode through any path (a hard link made outside the workspace, a bind mount,
//! a sandbox's own view of the workspace), and a directory watch would not.
//!
//! What the events do:
//! - `IN_MODIFY` and `IN_CLOSE_WRITE`: the cached content is dropped, not just distrusted. A
//!   close after writing is also how writes through a shared writable `mmap` show: the kernel
//!   sends no event for those writes, and does not even update the times for a page that is
//!   already dirty, but a mapping holds its file open, so the close comes after the last write
//!   through it. This closes a gap the stat alone leaves open.
//! - `IN_OPEN`: distrusted while anyone has the file open (opens are counted against closes):
//!   an open file may be mapped and written without an event. A file trusted again is stated
//!   first.
//! - `IN_ATTRIB`, `IN_MOVE_SELF`, `IN_DELETE_SELF`: distrusted (the next search states it).
//! - `IN_IGNORED` (the inode is gone or the watch was removed): the watch is forgotten.
//! - `IN_Q_OVERFLOW`: events were lost, so the cache is emptied and the inotify instance made
//!   anew (the next search reads the tree and watches it again).
//!
//! A file's directory entry names its inode: the walk takes `(st_dev of the directory, d_ino)`
//! from a listing that is itself validated by the directory's stamp (`listings`), so renames,
//! creations and removals are seen as before. What a name resolves to can also change without
//! touching its directory when something is mounted over it: every search polls
//! `/proc/self/mountinfo`, and any change to this process's mount table voids all trust.
//!
//! What this cannot see, besides what the stat cannot (`cache`): a process that had the file
//! open for writing before its content was cached, and writes to it through a shared mapping
//! afterwards without closing it. Against that (and anything else unforeseen) trust lasts
//! [`crate::Limits::grep_watch_trust`] at most; after that the file is stated again, as
//! without watches, and the stat sees such a write when it faulted a clean page. Watches are
//! used only on local file systems whose every change goes through this kernel (ext2/3/4,
//! XFS, Btrfs, tmpfs, F2FS), at most [`MAX_WATCHES`] per process; elsewhere, and wherever
//! inotify is unavailable or out of watches, every file is stated as before.

use std::collections::HashMap;
use std::fs::File;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use rustix::event::{PollFd, PollFlags};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;

use super::cache::{ContentCache, Stamp};

/// Watches one process keeps at most (each is a few hundred bytes of kernel memory and counts
/// against the user's `fs.inotify.max_user_watches`).
pub(crate) const MAX_WATCHES: usize = 65_536;

/// What a watch asks to hear about.
fn events() -> WatchFlags {
    WatchFlags::OPEN
        | WatchFlags::MODIFY
        | WatchFlags::ATTRIB
        | WatchFlags::CLOSE_WRITE
        | WatchFlags::CLOSE_NOWRITE
        | WatchFlags::MOVE_SELF
        | WatchFlags::DELETE_SELF
}

/// File systems whose files change only through this kernel (`statfs` magic numbers).
const LOCAL_FILE_SYSTEMS: [i64; 6] = [
    0xEF53,      // ext2, ext3, ext4
    0x5846_5342, // XFS
    0x9123_683E, // Btrfs
    0x0102_1994, // tmpfs
    0xF2F5_2010, // F2FS
    0x2FC1_2FC1, // ZFS
];

/// Whether files on the file system of `fd` get watches (`LOCAL_FILE_SYSTEMS`).
pub(crate) fn watched_file_system(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fstatfs(fd).is_ok_and(|fs| {
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        let kind = i64::from(fs.f_type as i64);
        LOCAL_FILE_SYSTEMS.contains(&kind)
    })
}

/// A cached file's watch, as its cache entry holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Watch {
    /// The inotify instance it belongs to (a new one after an overflow).
    instance: u64,
    wd: i32,
    /// Which attachment of the watch this is: the entry that replaced another for the same
    /// inode took the watch over, and the old entry's removal must not remove it.
    token: u64,
}

/// What the events of one watch have said.
struct WatchState {
    key: (u64, u64),
    token: u64,
    /// Opens seen and not yet closed.
    opens: u32,
    /// Closes still to come of descriptors that were open before the watch was added (the one
    /// this process read the content through): they have no open event to match.
    own_closes: u32,
    /// A close came with no open to match it: someone had the file open before the watch, so
    /// whether it is still open cannot be known. Never trusted again while watched.
    unbalanced: bool,
}

struct Inner {
    fd: OwnedFd,
    instance: u64,
    states: HashMap<i32, WatchState>,
    /// Whether watches are used on each `st_dev` (by its file system type).
    devices: HashMap<u64, bool>,
    next_token: u64,
    buf: Vec<MaybeUninit<u8>>,
}

pub(crate) struct Watcher {
    inner: Mutex<Inner>,
    /// `/proc/self/mountinfo`, polled for changes to the mount table.
    mounts: File,
    /// Bumped whenever all trust is void (a mount table change, an overflow).
    epoch: AtomicU64,
}

/// What a search reads from the watcher once, before its first file.
#[derive(Clone, Copy)]
pub(crate) struct Trust<'a> {
    pub watcher: &'a Watcher,
    pub epoch: u64,
    pub now: Instant,
    /// How long a file stays trusted after it was last stated (`Limits::grep_watch_trust`).
    pub lifetime: std::time::Duration,
}

/// What one event does to its file's cache entry.
#[derive(Debug, PartialEq, Eq)]
enum Effect {
    None,
    Distrust,
    Drop,
}

impl WatchState {
    fn new(key: (u64, u64), token: u64, own_closes: u32) -> WatchState {
        WatchState {
            key,
            token,
            opens: 0,
            own_closes,
            unbalanced: false,
        }
    }

    fn close(&mut self) {
        if self.own_closes > 0 {
            self.own_closes -= 1;
        } else if self.opens > 0 {
            self.opens -= 1;
        } else {
            self.unbalanced = true;
        }
    }

    /// Applies one event's flags; the strongest effect wins.
    fn apply(&mut self, flags: ReadFlags) -> Effect {
        let mut effect = Effect::None;
        if flags.contains(ReadFlags::OPEN) {
            self.opens = self.opens.saturating_add(1);
            effect = Effect::Distrust;
        }
        if flags.intersects(ReadFlags::CLOSE_NOWRITE | ReadFlags::CLOSE_WRITE) {
            self.close();
            if self.unbalanced {
                effect = Effect::Distrust;
            }
        }
        if flags.intersects(ReadFlags::ATTRIB | ReadFlags::MOVE_SELF | ReadFlags::DELETE_SELF) {
            effect = Effect::Distrust;
        }
        if flags.intersects(ReadFlags::MODIFY | ReadFlags::CLOSE_WRITE) {
            effect = Effect::Drop;
        }
        effect
    }

    fn trustworthy(&self) -> bool {
        self.opens == 0 && !self.unbalanced
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // Every update below leaves the maps consistent with the kernel's view between steps.
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

fn new_instance() -> rustix::io::Result<OwnedFd> {
    inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)
}

impl Watcher {
    /// A watcher with its own inotify instance; `None` where inotify is unavailable, or the
    /// mount table cannot be watched for changes (every file is then stated, as before).
    pub(crate) fn new() -> Option<Watcher> {
        let fd = match new_instance() {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(error = %e, "grep: no inotify instance; cached files are stated at every search");
                return None;
            }
        };
        let mounts = match File::open("/proc/self/mountinfo") {
            Ok(mounts) => mounts,
            Err(e) => {
                tracing::warn!(error = %e, "grep: /proc/self/mountinfo unreadable; cached files are stated at every search");
                return None;
            }
        };
        Some(Watcher {
            inner: Mutex::new(Inner {
                fd,
                instance: 0,
                states: HashMap::new(),
                devices: HashMap::new(),
                next_token: 0,
                buf: vec![MaybeUninit::uninit(); 16 * 1024],
            }),
            mounts,
            epoch: AtomicU64::new(0),
        })
    }

    /// Reads every pending event and applies it to `cache`, and looks for a change to the mount
    /// table; returns the epoch trust is now valid in. Called by each search before its first
    /// file, so every change completed before the search began is accounted for.
    pub(crate) fn drain(&self, cache: &ContentCache) -> u64 {
        let mut inner = lock(&self.inner);
        if self.mount_table_changed() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        let mut events: Vec<(i32, ReadFlags)> = Vec::new();
        let mut overflow = false;
        {
            let Inner { fd, buf, .. } = &mut *inner;
            let mut reader = inotify::Reader::new(fd.as_fd(), buf);
            loop {
                match reader.next() {
                    Ok(event) => {
                        if event.events().contains(ReadFlags::QUEUE_OVERFLOW) {
                            overflow = true;
                        } else {
                            events.push((event.wd(), event.events()));
                        }
                    }
                    Err(Errno::INTR) => {}
                    // EAGAIN: nothing more pending. Anything else: treat as lost events.
                    Err(Errno::AGAIN) => break,
                    Err(_) => {
                        overflow = true;
                        break;
                    }
                }
            }
        }
        if overflow {
            self.start_over(&mut inner, cache);
            return self.epoch.load(Ordering::Acquire);
        }
        for (wd, flags) in events {
            let Some(state) = inner.states.get_mut(&wd) else {
                continue;
            };
            let key = state.key;
            if flags.contains(ReadFlags::IGNORED) {
                inner.states.remove(&wd);
                cache.distrust(key);
                continue;
            }
            match state.apply(flags) {
                Effect::None => {}
                Effect::Distrust => cache.distrust(key),
                // The entry goes; the watch stays, still counting who has the file open, for
                // the inode's next entry to take over.
                Effect::Drop => cache.drop_entry(key),
            }
        }
        self.epoch.load(Ordering::Acquire)
    }

    /// Events were lost: every entry and watch goes, and a new inotify instance replaces the
    /// old one (closing it removes all its watches at once).
    fn start_over(&self, inner: &mut Inner, cache: &ContentCache) {
        tracing::warn!("grep: the inotify queue overflowed; the content cache starts over");
        self.epoch.fetch_add(1, Ordering::AcqRel);
        cache.clear();
        inner.states.clear();
        if let Ok(fd) = new_instance() {
            inner.fd = fd;
        }
        inner.instance += 1;
    }

    fn mount_table_changed(&self) -> bool {
        let mut fds = [PollFd::new(&self.mounts, PollFlags::PRI)];
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // A poll that fails cannot say the table is unchanged.
        match rustix::event::poll(&mut fds, Some(&zero)) {
            Ok(0) => false,
            Ok(_) => fds[0].revents().intersects(PollFlags::PRI | PollFlags::ERR),
            Err(_) => true,
        }
    }

    /// Watches the file `file` (open, read-only) whose content was just cached under `stamp`,
    /// and trusts the entry when nobody else has the file open as far as can be known. The
    /// watch is added after the content was read, so the file is stated again through `file`
    /// once the watch is in place: a change between the read and the watch shows there (its
    /// ctime, see `cache`), and any change after it shows as an event.
    pub(crate) fn attach(&self, cache: &ContentCache, file: BorrowedFd<'_>, stamp: &Stamp) {
        let mut inner = lock(&self.inner);
        if inner.states.len() >= MAX_WATCHES || !Self::local(&mut inner, file, stamp.dev) {
            return;
        }
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        let Ok(wd) = inotify::add_watch(&inner.fd, path.as_str(), events()) else {
            return;
        };
        let key = (stamp.dev, stamp.ino);
        inner.next_token += 1;
        let token = inner.next_token;
        match inner.states.get_mut(&wd) {
            // Already watched (an earlier entry for the same inode): this entry takes the
            // watch over. The open this content was read through came after the watch, so it
            // has its own open event.
            Some(state) if state.key == key => state.token = token,
            // A watch whose inode went and whose number was handed out again before its
            // IGNORED event was read: leave both alone, untrusted.
            Some(_) => return,
            // A new watch: `file` was opened before it, so its close has no open event.
            None => {
                inner.states.insert(wd, WatchState::new(key, token, 1));
            }
        }
        let watch = Watch {
            instance: inner.instance,
            wd,
            token,
        };
        let unchanged = rustix::fs::fstat(file).is_ok_and(|st| Stamp::of(&st) == *stamp);
        let trusted = unchanged && inner.states.get(&wd).is_some_and(WatchState::trustworthy);
        let epoch = self.epoch.load(Ordering::Acquire);
        cache.attach(stamp, watch, trusted.then(|| (epoch, Instant::now())));
    }

    /// Trusts again the entry of `stamp`, which a stat just showed unchanged, if its watch is
    /// still in place and nobody has the file open.
    pub(crate) fn retrust(&self, cache: &ContentCache, stamp: &Stamp, now: Instant) {
        let inner = lock(&self.inner);
        let epoch = self.epoch.load(Ordering::Acquire);
        cache.retrust(stamp, epoch, now, |watch| {
            watch.instance == inner.instance
                && inner
                    .states
                    .get(&watch.wd)
                    .is_some_and(|s| s.token == watch.token && s.trustworthy())
        });
    }

    /// Removes the watches of entries evicted from the cache (unless another entry took them
    /// over, or they belong to an instance since replaced). An entry dropped because its file
    /// changed leaves its watch in place: the inode's next entry takes it over, with the count
    /// of who has the file open, which a new watch could not know.
    pub(crate) fn detach(&self, watches: &[Watch]) {
        if watches.is_empty() {
            return;
        }
        let mut inner = lock(&self.inner);
        for watch in watches {
            if watch.instance != inner.instance {
                continue;
            }
            if inner
                .states
                .get(&watch.wd)
                .is_some_and(|s| s.token == watch.token)
            {
                inner.states.remove(&watch.wd);
                let _ = inotify::remove_watch(&inner.fd, watch.wd);
            }
        }
    }

    /// Whether watches are used on device `dev` (asked of the file system once per device).
    fn local(inner: &mut Inner, file: BorrowedFd<'_>, dev: u64) -> bool {
        *inner
            .devices
            .entry(dev)
            .or_insert_with(|| watched_file_system(file))
    }

    /// The watches in use.
    #[cfg(test)]
    pub(crate) fn watches(&self) -> usize {
        lock(&self.inner).states.len()
    }

    /// What an overflow of the event queue does.
    #[cfg(test)]
    pub(crate) fn overflowed(&self, cache: &ContentCache) {
        self.start_over(&mut lock(&self.inner), cache);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_and_closes_are_counted_and_a_write_drops() {
        let mut s = WatchState::new((1, 2), 1, 1);
        assert!(s.trustworthy());
        // The close of the descriptor the content was read through.
        assert_eq!(s.apply(ReadFlags::CLOSE_NOWRITE), Effect::None);
        assert!(s.trustworthy());
        assert_eq!(s.apply(ReadFlags::OPEN), Effect::Distrust);
        assert!(!s.trustworthy());
        assert_eq!(s.apply(ReadFlags::CLOSE_NOWRITE), Effect::None);
        assert!(s.trustworthy());
        // Opened for writing: distrusted while open, dropped at the close.
        assert_eq!(s.apply(ReadFlags::OPEN), Effect::Distrust);
        assert_eq!(s.apply(ReadFlags::MODIFY), Effect::Drop);
        assert_eq!(s.apply(ReadFlags::CLOSE_WRITE), Effect::Drop);
        assert!(s.trustworthy());
        assert_eq!(s.apply(ReadFlags::ATTRIB), Effect::Distrust);
    }

    #[test]
    fn a_close_without_an_open_is_never_trusted_again() {
        // Our own close is expected once; a second close means someone opened it before.
        let mut s = WatchState::new((1, 2), 1, 1);
        s.apply(ReadFlags::CLOSE_NOWRITE);
        assert_eq!(s.apply(ReadFlags::CLOSE_NOWRITE), Effect::Distrust);
        assert!(!s.trustworthy());
        s.apply(ReadFlags::OPEN);
        s.apply(ReadFlags::CLOSE_NOWRITE);
        assert!(!s.trustworthy());
    }

    /// Our own close may come after another process's open and close: it is counted first,
    /// which can only keep the file distrusted longer, never trust it while open.
    #[test]
    fn the_own_close_is_matched_conservatively() {
        let mut s = WatchState::new((1, 2), 1, 1);
        s.apply(ReadFlags::OPEN);
        s.apply(ReadFlags::CLOSE_NOWRITE);
        assert!(!s.trustworthy(), "one open may still be outstanding");
        s.apply(ReadFlags::CLOSE_NOWRITE);
        assert!(s.trustworthy());
    }
}
