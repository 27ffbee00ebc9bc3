//! Each session's private temporary directory. Tier 1 makes `/tmp` and `/dev/shm` read-only
//! for tools (Landlock grants writes beneath the workspace only), so `mktemp`, pip and
//! compilers would fail; tier 0 shares the host's `/tmp` with every other session. The worker
//! creates one directory per session, mode 0700, outside the workspace (so it is neither
//! snapshotted nor listed by the file tools), grants it to the shell and to custom tools like a
//! writable store, and points `TMPDIR`, `TMP` and `TEMP` at it. It is removed when the session's
//! toolset is dropped. Tier 2 has its own private tmpfs on `/tmp` and does not use it.
//!
//! A worker killed by SIGKILL or the OOM killer never drops its toolsets, so their directories
//! stay behind (CATALOGUE P3, P4). The startup sweep ([`sweep_leftover_tmp_dirs`]) removes them, but
//! two workers may share `/tmp`, and one's live sessions must survive the other's start. So
//! liveness is held, not guessed: each directory is locked (`flock`, exclusive) through a
//! descriptor its [`SessionTmp`] keeps open for its whole life, and the kernel drops the lock
//! when the process dies however it dies. The sweep removes only a directory whose lock it can
//! take without waiting. The descriptor is close-on-exec, so no tool process inherits the lock.
//! That is all it guarantees: a process of the same user (a tool left running after its worker
//! died) can still open the directory and `flock` it itself, and the sweep then keeps it.
//!
//! The sweep acts on what it checked, never on whatever a name points to later: a process of
//! the same user can swap the name between the check and the removal. The checked directory is
//! renamed to a fresh tombstone name in the same parent (no replacing), the tombstone is
//! verified to be the very inode the sweep opened and locked (else it is renamed back and
//! kept; if even that fails, to a `hands-tmp-swapped-<random>` name no sweep ever matches, and
//! logged), its contents are removed through that descriptor, and the last step by name, a
//! `rmdir`, can only ever remove an empty directory. A sweep that dies midway leaves a
//! tombstone, which the next sweep takes like any leftover.
//!
//! Some file systems cannot `flock` (NFS without a lock daemon: ENOLCK, often only for a
//! while; some FUSE file systems: EOPNOTSUPP or ENOSYS; EBADF or EINVAL for unusual
//! descriptors). There a session's directory is renamed, right after its creation, to
//! `hands-tmp-unlocked-<random>`, a name the sweep never matches, so no later sweep (another
//! worker's, or one after locks started working) can take a live session's directory for a
//! leftover; it is removed only by its own session (logged once, naming the file system and how
//! to find what a killed worker left). The sweep also never removes a directory of the locked
//! form whose lock it could not take for such a reason: it cannot tell a live session from a
//! dead one, so it leaves the directory and logs.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

/// The variables programs read for their temporary directory.
pub const TMP_VARS: [&str; 3] = ["TMPDIR", "TMP", "TEMP"];

/// What every session directory's name starts with; 16 lowercase hex digits follow.
const PREFIX: &str = "hands-tmp-";
/// What a directory the sweep is removing is renamed to first; 16 lowercase hex digits follow.
const TOMBSTONE_PREFIX: &str = "hands-tmp-gone-";
/// What a session's directory is named when its file system cannot lock it; never swept.
const UNLOCKED_PREFIX: &str = "hands-tmp-unlocked-";
/// Where the sweep puts an entry swapped in under a session name that it could not put back;
/// never swept.
const SWAPPED_PREFIX: &str = "hands-tmp-swapped-";

/// The directory; removed on drop.
#[derive(Debug)]
pub struct SessionTmp {
    path: PathBuf,
    /// The open directory holding the exclusive `flock` that marks it live (unlocked on a file
    /// system without `flock`); closed after the directory is removed.
    _lock: OwnedFd,
}

/// Takes an exclusive `flock` without waiting; the seam through which tests inject the errors
/// of file systems without locks.
type LockFn = fn(BorrowedFd<'_>) -> rustix::io::Result<()>;

fn flock_exclusive(fd: BorrowedFd<'_>) -> rustix::io::Result<()> {
    rustix::fs::flock(fd, FlockOperation::NonBlockingLockExclusive)
}

/// What trying the lock found.
#[derive(Debug, PartialEq, Eq)]
enum Lock {
    /// Taken: no one else holds the directory.
    Taken,
    /// Held by another open description: a live session, or a sweep removing the directory.
    Busy,
    /// The file system (or the descriptor) cannot be locked at all: nothing can be known.
    Unsupported(Errno),
}

/// Maps the result of a `flock` attempt: the errors by which a file system says it has no locks
/// (NFS without lockd: ENOLCK; FUSE: EOPNOTSUPP, ENOSYS; EBADF, EINVAL for descriptors it
/// cannot lock) are [`Lock::Unsupported`]; any other error stays an error. The descriptor
/// locked must be a plain open one: `flock` on an `O_PATH` descriptor fails with EBADF, which
/// this mapping would misread as a file system without locks.
fn lock_outcome(result: rustix::io::Result<()>) -> std::io::Result<Lock> {
    match result {
        Ok(()) => Ok(Lock::Taken),
        Err(Errno::WOULDBLOCK) => Ok(Lock::Busy),
        Err(e @ (Errno::NOLCK | Errno::OPNOTSUPP | Errno::NOSYS | Errno::BADF | Errno::INVAL)) => {
            Ok(Lock::Unsupported(e))
        }
        Err(e) => Err(e.into()),
    }
}

/// The type of the file system `fd` is on, for a log line: its usual name when it is one of the
/// common ones, else the magic number.
fn fs_name(fd: BorrowedFd<'_>) -> String {
    let Ok(st) = rustix::fs::fstatfs(fd) else {
        return "unknown".to_owned();
    };
    // From linux/magic.h (and fuse's, smb's own headers).
    #[allow(clippy::unnecessary_cast)] // `f_type`'s width differs between architectures.
    let magic = st.f_type as i64 as u64 & 0xffff_ffff;
    match magic {
        0x6969 => "nfs".to_owned(),
        0x6573_5546 => "fuse".to_owned(),
        0x0102_1997 => "9p".to_owned(),
        0xff53_4d42 => "cifs".to_owned(),
        0xfe53_4d42 => "smb2".to_owned(),
        0x0102_1994 => "tmpfs".to_owned(),
        0x794c_7630 => "overlayfs".to_owned(),
        0xef53 => "ext2/3/4".to_owned(),
        0x5846_5342 => "xfs".to_owned(),
        0x9123_683e => "btrfs".to_owned(),
        other => format!("type 0x{other:x}"),
    }
}

/// Set once a session has run unlocked, so the warning is logged once per process.
static UNLOCKED_LOGGED: AtomicBool = AtomicBool::new(false);

/// Opens `name` under `parent` as a directory without following a symlink, close-on-exec.
fn open_dir_at(parent: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Whether `name` under `parent` still names the directory open at `fd` (not removed, not
/// replaced).
fn still_at(fd: &OwnedFd, parent: BorrowedFd<'_>, name: &OsStr) -> bool {
    let Ok(open) = rustix::fs::fstat(fd.as_fd()) else {
        return false;
    };
    rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|now| now.st_dev == open.st_dev && now.st_ino == open.st_ino)
}

/// 16 random lowercase hex digits.
fn random_hex() -> std::io::Result<String> {
    let mut bytes = [0u8; 8];
    rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty())?;
    Ok(format!("{:016x}", u64::from_le_bytes(bytes)))
}

/// Renames `from` to `to` in `parent` without replacing an entry at `to`. A file system without
/// `RENAME_NOREPLACE` (NFS answers EINVAL for any flag; FUSE without rename2: ENOSYS) gets a
/// plain rename when nothing is at `to` a moment before: for the random names used here nobody
/// can have guessed, for a name put back a narrow window remains (an entry made at `to` in
/// between would be replaced), which only such file systems have.
fn rename_noreplace(parent: BorrowedFd<'_>, from: &OsStr, to: &OsStr) -> rustix::io::Result<()> {
    match rustix::fs::renameat_with(parent, from, parent, to, RenameFlags::NOREPLACE) {
        Err(Errno::INVAL | Errno::NOSYS) => {
            match rustix::fs::statat(parent, to, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(_) => Err(Errno::EXIST),
                Err(Errno::NOENT) => rustix::fs::renameat(parent, from, parent, to),
                Err(e) => Err(e),
            }
        }
        other => other,
    }
}

/// Renames `name` in `parent` to `prefix` and 16 random hex digits, without replacing anything;
/// `None` when `name` is gone.
fn rename_to_random(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    prefix: &str,
) -> std::io::Result<Option<OsString>> {
    for _ in 0..8 {
        let to = OsString::from(format!("{prefix}{}", random_hex()?));
        match rename_noreplace(parent, name, &to) {
            Ok(()) => return Ok(Some(to)),
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(std::io::Error::other(format!("no free {prefix}* name")))
}

impl SessionTmp {
    /// Creates a fresh directory under `parent` (the worker's own temporary directory) and
    /// locks it. The name is random and `mkdir` is exclusive, so a name planted in advance is
    /// never reused.
    pub fn create(parent: &Path) -> std::io::Result<SessionTmp> {
        Self::create_with(parent, flock_exclusive)
    }

    fn create_with(parent: &Path, lock_fn: LockFn) -> std::io::Result<SessionTmp> {
        let parent = std::fs::canonicalize(parent)?;
        let parent_fd = hands_sandbox::open_dir_path(&parent)?;
        let mut last = None;
        for _ in 0..8 {
            let name = OsString::from(format!("{PREFIX}{}", random_hex()?));
            let path = parent.join(&name);
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            }
            // Until the lock is taken, another worker's startup sweep may take the directory
            // for a leftover and remove it: then the name is given up (the sweep finishes the
            // removal) and another one tried. Once locked and still in place, it is ours.
            let lock = match open_dir_at(parent_fd.as_fd(), &name) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            match lock_outcome(lock_fn(lock.as_fd())) {
                Ok(Lock::Taken) if still_at(&lock, parent_fd.as_fd(), &name) => {
                    return Ok(SessionTmp { path, _lock: lock });
                }
                // No locks on this file system (perhaps only for now: NFS's ENOLCK): the session
                // runs unlocked under a name no sweep matches, since a later sweep that can lock
                // would take the directory for a dead session's.
                Ok(Lock::Unsupported(e)) if still_at(&lock, parent_fd.as_fd(), &name) => {
                    let unlocked = match rename_to_random(parent_fd.as_fd(), &name, UNLOCKED_PREFIX)
                    {
                        Ok(Some(unlocked)) => unlocked,
                        // Taken by a sweep that could lock it after all: another name.
                        Ok(None) => continue,
                        Err(e) => {
                            let _ = std::fs::remove_dir(&path);
                            return Err(e);
                        }
                    };
                    if !still_at(&lock, parent_fd.as_fd(), &unlocked) {
                        continue;
                    }
                    if !UNLOCKED_LOGGED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(parent = %parent.display(), filesystem = %fs_name(lock.as_fd()),
                            error = %std::io::Error::from(e),
                            "the file system of the temporary directory cannot lock (flock): sessions' temporary directories there run unlocked as hands-tmp-unlocked-<random>, which the startup sweep never removes; a worker killed (SIGKILL, OOM) leaves them behind: find them with find PARENT -maxdepth 1 -name 'hands-tmp-unlocked-*' and remove those no running worker uses");
                    }
                    return Ok(SessionTmp {
                        path: parent.join(unlocked),
                        _lock: lock,
                    });
                }
                Ok(_) => continue,
                Err(e) => {
                    let _ = std::fs::remove_dir(&path);
                    return Err(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free temporary directory name")))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the temporary-directory variables of `env` with this directory.
    pub fn apply(&self, env: &mut Vec<(OsString, OsString)>) {
        set_tmp_vars(&self.path, env);
    }
}

/// Replaces the temporary-directory variables of `env` with `dir`.
pub fn set_tmp_vars(dir: &Path, env: &mut Vec<(OsString, OsString)>) {
    env.retain(|(k, _)| !TMP_VARS.iter().any(|v| k == v));
    for var in TMP_VARS {
        env.push((var.into(), dir.as_os_str().to_owned()));
    }
}

impl Drop for SessionTmp {
    fn drop(&mut self) {
        // Removed here and now: a removal left to the blocking pool was lost whenever the
        // runtime shut down first (one directory per session left in /tmp). The directory holds
        // what the session's tools put in it, usually little; `remove_tree` never follows a
        // symlink a tool left inside and reopens directories a tool closed with `chmod`. The
        // lock is released after (the field drops last), so no sweep can start on a
        // half-removed live directory.
        if let Err(e) = hands_sandbox::remove_tree(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove a session's temporary directory");
        }
    }
}

/// Whether `name` is one [`SessionTmp::create`] makes (the prefix and 16 lowercase hex digits)
/// or a tombstone a sweep left (the tombstone prefix and 16 of them). Unlocked sessions' and
/// swapped-in entries' names never match.
fn is_session_tmp_name(name: &str) -> bool {
    let hex16 =
        |hex: &str| hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    name.strip_prefix(TOMBSTONE_PREFIX).is_some_and(hex16)
        || name.strip_prefix(PREFIX).is_some_and(hex16)
}

/// What the sweep did with one entry.
#[derive(Debug, PartialEq, Eq)]
enum Swept {
    Removed,
    /// Locked by a live session, not this user's, not a directory, or replaced meanwhile.
    Kept,
    /// Its lock cannot be taken on this file system, so it may be live: left alone.
    Unlockable(Errno),
}

/// Where the sweep is when it runs the test hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Checked (owner, type, lock), not yet renamed.
    Checked,
    /// Renamed to its tombstone, not yet verified.
    Renamed,
}

/// Runs between the sweep's check of an entry and its removal, with the entry's original name;
/// tests swap the name there.
type BetweenHook<'a> = &'a mut dyn FnMut(Step, &OsStr);

fn sweep_one(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    uid: u32,
    lock_fn: LockFn,
    between: BetweenHook<'_>,
) -> std::io::Result<Swept> {
    let meta = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if meta.st_uid != uid {
        // Another user's: not ours to judge (and a sticky /tmp would refuse anyway).
        return Ok(Swept::Kept);
    }
    match FileType::from_raw_mode(meta.st_mode) {
        FileType::Symlink => {
            // Never made by a session (they are directories made by an exclusive `mkdir`): a
            // planted link. The name goes; what a link points to is never looked at. If a file
            // or another link was swapped in since the look above, that is unlinked instead (a
            // directory swapped in makes the `unlink` fail): only names of the session form
            // are ever touched, and nothing is followed.
            rustix::fs::unlinkat(parent, name, AtFlags::empty())?;
            return Ok(Swept::Removed);
        }
        FileType::Directory => {}
        _ => return Ok(Swept::Kept),
    }
    let lock = match open_dir_at(parent, name) {
        Ok(fd) => fd,
        // Replaced by a link or a file, or removed, since the look above: left to the next sweep.
        Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => return Ok(Swept::Kept),
        // Closed with `chmod 000` (or 0300): given owner rights through an `O_PATH` descriptor
        // on the very inode and reopened through it; the lock goes on that plain descriptor.
        Err(Errno::ACCESS) => match hands_sandbox::open_dir_for_emptying(parent, name) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => return Ok(Swept::Kept),
            Err(e) => return Err(e.into()),
        },
        Err(e) => return Err(e.into()),
    };
    match lock_outcome(lock_fn(lock.as_fd()))? {
        Lock::Taken => {}
        Lock::Busy => return Ok(Swept::Kept),
        Lock::Unsupported(e) => return Ok(Swept::Unlockable(e)),
    }
    if !still_at(&lock, parent, name) {
        return Ok(Swept::Kept);
    }
    between(Step::Checked, name);
    // From here on the lock is held (a worker that made this directory a moment ago and has not
    // locked it yet finds it locked, or gone, and takes another name), and nothing is done by
    // the old name: it may name something else by now.
    let Some(tombstone) = rename_to_random(parent, name, TOMBSTONE_PREFIX)? else {
        return Ok(Swept::Kept);
    };
    between(Step::Renamed, name);
    if !still_at(&lock, parent, &tombstone) {
        put_back(parent, &tombstone, name);
        return Ok(Swept::Kept);
    }
    hands_sandbox::empty_dir(lock.as_fd())?;
    // Only an empty directory can be removed this way, whatever the name points to by now.
    rustix::fs::unlinkat(parent, &tombstone, AtFlags::REMOVEDIR)?;
    Ok(Swept::Removed)
}

/// Something else was swapped in under `name` before the sweep renamed it to `tombstone`: it
/// goes back, untouched. If that fails (something was made at `name` meanwhile), it must not
/// stay under a tombstone name, which the next sweep would empty: it goes to a name no sweep
/// matches, and either way the log says where it is.
fn put_back(parent: BorrowedFd<'_>, tombstone: &OsStr, name: &OsStr) {
    let Err(e) = rename_noreplace(parent, tombstone, name) else {
        return;
    };
    match rename_to_random(parent, tombstone, SWAPPED_PREFIX) {
        Ok(Some(kept)) => {
            tracing::warn!(name = ?name, kept_as = ?kept, error = %std::io::Error::from(e),
                "the sweep found another entry swapped in under a session directory's name and could not put it back; it was moved, untouched, to a name the sweep never removes");
        }
        Ok(None) => {}
        Err(e2) => {
            tracing::warn!(name = ?name, tombstone = ?tombstone, error = %std::io::Error::from(e), error_moving = %e2,
                "the sweep found another entry swapped in under a session directory's name and could neither put it back nor move it off the tombstone name: the next sweep may empty it");
        }
    }
}

/// Removes the session directories under `parent` that no live process holds: those of
/// workers that died without dropping their sessions, tombstones of sweeps that died, and links
/// planted under such names. A directory held by a live [`SessionTmp`], in this process or
/// another, is never touched, nor is anything of another user or anything else in `parent`, nor
/// a directory whose lock cannot be taken on its file system. Returns the paths removed (by the
/// names they had when found); entries that could not be removed are logged and left.
pub fn sweep_leftover_tmp_dirs(parent: &Path) -> Vec<PathBuf> {
    sweep_with(parent, flock_exclusive, &mut |_, _| {})
}

fn sweep_with(parent: &Path, lock_fn: LockFn, between: BetweenHook<'_>) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let (Ok(entries), Ok(parent_fd)) = (
        std::fs::read_dir(parent),
        hands_sandbox::open_dir_path(parent),
    ) else {
        return removed;
    };
    let uid = rustix::process::geteuid().as_raw();
    let mut unlockable = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(is_session_tmp_name) {
            continue;
        }
        let path = entry.path();
        match sweep_one(parent_fd.as_fd(), &name, uid, lock_fn, between) {
            Ok(Swept::Removed) => removed.push(path),
            Ok(Swept::Kept) => {}
            Ok(Swept::Unlockable(e)) => unlockable.push((path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "cannot remove a leftover session temporary directory");
            }
        }
    }
    if let Some((first, e)) = unlockable.first() {
        tracing::warn!(parent = %parent.display(), filesystem = %fs_name(parent_fd.as_fd()),
            count = unlockable.len(), first = %first.display(), error = %std::io::Error::from(*e),
            "session temporary directories left in place: their file system cannot lock (flock), so a live session's cannot be told from a dead one's");
    }
    removed
}

#[cfg(test)]
mod tests {
    use std::io::BufRead as _;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn created_private_set_in_the_environment_and_removed_on_drop() {
        let parent = tempfile::tempdir().unwrap();
        let tmp = SessionTmp::create(parent.path()).unwrap();
        let path = tmp.path().to_path_buf();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::create_dir(path.join("sub")).unwrap();
        std::fs::write(path.join("sub/f"), "x").unwrap();
        // A link to something outside: removing the directory must not follow it.
        let outside = parent.path().join("keep");
        std::fs::write(&outside, "kept").unwrap();
        std::os::unix::fs::symlink(&outside, path.join("link")).unwrap();

        let mut env = vec![
            ("PATH".into(), "/bin".into()),
            ("TMPDIR".into(), "/somewhere".into()),
        ];
        tmp.apply(&mut env);
        let get = |k: &str| {
            env.iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        for var in TMP_VARS {
            assert_eq!(get(var), vec![path.clone().into_os_string()], "{var}");
        }
        assert_eq!(get("PATH").len(), 1);

        let other = SessionTmp::create(parent.path()).unwrap();
        assert_ne!(other.path(), tmp.path());
        drop(tmp);
        assert!(!path.exists());
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "kept");
    }

    #[test]
    fn only_names_the_worker_makes_are_candidates() {
        assert!(is_session_tmp_name("hands-tmp-0123456789abcdef"));
        for name in [
            "hands-tmp-unlocked-0123456789abcdef",
            "hands-tmp-swapped-0123456789abcdef",
            "hands-tmp-0123456789ABCDEF",
            "hands-tmp-0123456789abcde",
            "hands-tmp-0123456789abcdef0",
            "hands-tmp-",
            "hands-tmp-notours",
            "xhands-tmp-0123456789abcdef",
        ] {
            assert!(!is_session_tmp_name(name), "{name}");
        }
    }

    #[test]
    fn tombstones_are_candidates_too() {
        assert!(is_session_tmp_name("hands-tmp-gone-0123456789abcdef"));
        assert!(!is_session_tmp_name("hands-tmp-gone-0123456789abcde"));
        assert!(!is_session_tmp_name("hands-tmp-gone-"));
    }

    /// A dead session's directory with content, under `parent`.
    fn dead_session(parent: &Path, hex: &str) -> PathBuf {
        let dead = parent.join(format!("{PREFIX}{hex}"));
        std::fs::create_dir_all(dead.join("deep")).unwrap();
        std::fs::write(dead.join("deep/file"), "x").unwrap();
        dead
    }

    /// Another process of the same user swaps the name between the sweep's check (owner, type,
    /// lock) and the removal: what is swapped in survives, content and all, back under its
    /// name, and the checked directory (moved away by the swapper) is not touched either.
    #[test]
    fn a_name_swapped_after_the_check_is_not_removed() {
        let parent = tempfile::tempdir().unwrap();
        let parent_path = std::fs::canonicalize(parent.path()).unwrap();
        let dead = dead_session(&parent_path, "00000000000000aa");
        let moved = parent_path.join("moved-away");
        let mut swaps = 0;
        let removed = sweep_with(&parent_path, flock_exclusive, &mut |step, name| {
            if step != Step::Checked {
                return;
            }
            let at = parent_path.join(name);
            std::fs::rename(&at, &moved).unwrap();
            std::fs::create_dir(&at).unwrap();
            std::fs::write(at.join("precious"), "kept").unwrap();
            swaps += 1;
        });
        assert_eq!(swaps, 1);
        assert_eq!(removed, Vec::<PathBuf>::new());
        assert_eq!(
            std::fs::read_to_string(dead.join("precious")).unwrap(),
            "kept"
        );
        assert!(moved.join("deep/file").is_file());
        // Nothing else is left behind (no tombstone).
        let mut names: Vec<_> = std::fs::read_dir(&parent_path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                OsString::from("hands-tmp-00000000000000aa"),
                "moved-away".into()
            ]
        );

        // A link swapped in is not followed either, and goes back as it was.
        std::fs::remove_dir_all(&dead).unwrap();
        let dead = dead_session(&parent_path, "00000000000000bb");
        let target = tempfile::tempdir().unwrap();
        std::fs::write(target.path().join("keep"), "kept").unwrap();
        let removed = sweep_with(&parent_path, flock_exclusive, &mut |step, name| {
            if step != Step::Checked {
                return;
            }
            let at = parent_path.join(name);
            std::fs::remove_dir_all(&at).unwrap();
            std::os::unix::fs::symlink(target.path(), &at).unwrap();
        });
        assert_eq!(removed, Vec::<PathBuf>::new());
        assert_eq!(std::fs::read_link(&dead).unwrap(), target.path());
        assert_eq!(
            std::fs::read_to_string(target.path().join("keep")).unwrap(),
            "kept"
        );
    }

    /// The entry swapped in cannot go back because something was made under the name after the
    /// sweep renamed the swapped-in entry to its tombstone: it is moved to a name no sweep
    /// matches, and a second sweep leaves its content alone.
    #[test]
    fn a_swapped_entry_that_cannot_go_back_never_stays_a_tombstone() {
        let parent = tempfile::tempdir().unwrap();
        let parent_path = std::fs::canonicalize(parent.path()).unwrap();
        let dead = dead_session(&parent_path, "00000000000000aa");
        let moved = parent_path.join("moved-away");
        let removed = sweep_with(&parent_path, flock_exclusive, &mut |step, name| {
            let at = parent_path.join(name);
            match step {
                Step::Checked => {
                    std::fs::rename(&at, &moved).unwrap();
                    std::fs::create_dir(&at).unwrap();
                    std::fs::write(at.join("precious"), "kept").unwrap();
                }
                // The swapped-in entry is the tombstone now; the name is taken again.
                Step::Renamed => {
                    std::fs::create_dir(&at).unwrap();
                    std::fs::write(at.join("second"), "also kept").unwrap();
                }
            }
        });
        assert_eq!(removed, Vec::<PathBuf>::new());
        assert_eq!(
            std::fs::read_to_string(dead.join("second")).unwrap(),
            "also kept"
        );
        let swapped: Vec<PathBuf> = std::fs::read_dir(&parent_path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_str().unwrap().contains(SWAPPED_PREFIX))
            .collect();
        assert_eq!(swapped.len(), 1, "{swapped:?}");
        assert_eq!(
            std::fs::read_to_string(swapped[0].join("precious")).unwrap(),
            "kept"
        );
        // No tombstone is left for the next sweep to empty. That sweep finds `dead` (what the
        // swapper made second, unlocked) a leftover like any other; the swapped-in entry and
        // the moved-away directory survive it.
        assert!(std::fs::read_dir(&parent_path).unwrap().all(|e| {
            !e.unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .starts_with(TOMBSTONE_PREFIX)
        }));
        assert_eq!(sweep_leftover_tmp_dirs(&parent_path), vec![dead]);
        assert_eq!(
            std::fs::read_to_string(swapped[0].join("precious")).unwrap(),
            "kept"
        );
        assert!(moved.join("deep/file").is_file());
    }

    /// A leftover whose own directory was closed with `chmod 000` is swept all the same: opened
    /// through an `O_PATH` descriptor, given owner rights, reopened, locked, emptied. Root opens
    /// a 000 directory anyway, so as root the test runs itself again as uid 65534, the way a
    /// worker that is not root meets it.
    #[test]
    fn a_leftover_closed_with_mode_000_is_swept() {
        if hands_test_support::is_rerun() || !rustix::process::geteuid().is_root() {
            let parent = tempfile::tempdir().unwrap();
            let parent_path = std::fs::canonicalize(parent.path()).unwrap();
            let dead = dead_session(&parent_path, "00000000000000aa");
            std::fs::set_permissions(&dead, std::fs::Permissions::from_mode(0o000)).unwrap();
            assert!(
                std::fs::read_dir(&dead).is_err(),
                "the 000 directory is readable"
            );
            assert_eq!(sweep_leftover_tmp_dirs(&parent_path), vec![dead]);
            assert_eq!(std::fs::read_dir(&parent_path).unwrap().count(), 0);
            println!("SWEPT AS {}", rustix::process::geteuid().as_raw());
            return;
        }
        let rerun = hands_test_support::rerun_as(
            hands_test_support::NOBODY,
            "tmp_dir::tests::a_leftover_closed_with_mode_000_is_swept",
            &[],
        );
        assert!(rerun.stdout.contains("SWEPT AS 65534"), "{}", rerun.stdout);
    }

    /// A sweep that died midway left a tombstone: the next sweep removes it, and a directory
    /// closed with `chmod 0500` inside is emptied through its descriptor all the same.
    #[test]
    fn a_tombstone_is_swept_and_closed_directories_emptied() {
        let parent = tempfile::tempdir().unwrap();
        let parent_path = std::fs::canonicalize(parent.path()).unwrap();
        let tomb = parent_path.join("hands-tmp-gone-00000000000000aa");
        std::fs::create_dir_all(tomb.join("closed/sub")).unwrap();
        std::fs::write(tomb.join("closed/sub/file"), "x").unwrap();
        std::fs::set_permissions(tomb.join("closed"), std::fs::Permissions::from_mode(0o500))
            .unwrap();
        std::fs::set_permissions(&tomb, std::fs::Permissions::from_mode(0o500)).unwrap();
        assert_eq!(sweep_leftover_tmp_dirs(&parent_path), vec![tomb.clone()]);
        assert_eq!(std::fs::read_dir(&parent_path).unwrap().count(), 0);
    }

    #[test]
    fn lock_errors_of_file_systems_without_locks_are_unsupported() {
        assert_eq!(lock_outcome(Ok(())).unwrap(), Lock::Taken);
        assert_eq!(lock_outcome(Err(Errno::WOULDBLOCK)).unwrap(), Lock::Busy);
        for e in [
            Errno::NOLCK,
            Errno::OPNOTSUPP,
            Errno::NOSYS,
            Errno::BADF,
            Errno::INVAL,
        ] {
            assert_eq!(lock_outcome(Err(e)).unwrap(), Lock::Unsupported(e), "{e}");
        }
        assert_eq!(
            lock_outcome(Err(Errno::IO)).unwrap_err().raw_os_error(),
            Some(Errno::IO.raw_os_error())
        );
    }

    fn no_locks(_: BorrowedFd<'_>) -> rustix::io::Result<()> {
        Err(Errno::NOLCK)
    }
    fn no_lock_op(_: BorrowedFd<'_>) -> rustix::io::Result<()> {
        Err(Errno::OPNOTSUPP)
    }
    fn no_lock_call(_: BorrowedFd<'_>) -> rustix::io::Result<()> {
        Err(Errno::NOSYS)
    }
    fn io_error(_: BorrowedFd<'_>) -> rustix::io::Result<()> {
        Err(Errno::IO)
    }

    /// On a file system that cannot lock, a session still gets its directory (unlocked, under
    /// a name no sweep matches), and the sweep, which cannot tell a live session from a dead one
    /// there, removes nothing. Once locks work (NFS's ENOLCK is often temporary), a sweep takes
    /// the dead session's directory and still leaves the live unlocked one alone.
    #[test]
    fn without_locks_sessions_run_and_the_sweep_removes_nothing() {
        for lock_fn in [no_locks as LockFn, no_lock_op, no_lock_call] {
            let parent = tempfile::tempdir().unwrap();
            let parent_path = std::fs::canonicalize(parent.path()).unwrap();
            let live = SessionTmp::create_with(&parent_path, lock_fn).unwrap();
            assert!(live.path().is_dir());
            let live_name = live
                .path()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            assert!(live_name.starts_with(UNLOCKED_PREFIX), "{live_name}");
            std::fs::write(live.path().join("work"), "in use").unwrap();
            let dead = dead_session(&parent_path, "00000000000000aa");
            let removed = sweep_with(&parent_path, lock_fn, &mut |_, _| {
                panic!("nothing may be removed without a lock")
            });
            assert_eq!(removed, Vec::<PathBuf>::new());
            assert!(live.path().is_dir() && dead.join("deep/file").is_file());
            // Locks work now: the dead directory goes, the live session's stays, content and
            // all, and its own drop removes it.
            assert_eq!(sweep_leftover_tmp_dirs(&parent_path), vec![dead]);
            assert_eq!(
                std::fs::read_to_string(live.path().join("work")).unwrap(),
                "in use"
            );
            let path = live.path().to_path_buf();
            drop(live);
            assert!(!path.exists());
            assert_eq!(std::fs::read_dir(&parent_path).unwrap().count(), 0);
        }
        // Any other error fails the session's creation, and its directory is not left behind.
        let parent = tempfile::tempdir().unwrap();
        let err = SessionTmp::create_with(parent.path(), io_error).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(Errno::IO.raw_os_error()));
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
    }

    const HOLDER: &str = "HANDS_SESSION_TMP_HOLDER_PARENT";

    /// Run by `the_startup_sweep_removes_dead_sessions_only` in a child process (another
    /// worker): creates a session directory under the given parent, says where, and holds it
    /// until killed.
    #[test]
    #[ignore = "run by the_startup_sweep_removes_dead_sessions_only"]
    fn hold_a_session_tmp() {
        let parent = std::env::var(HOLDER).expect("run by the sweep test");
        let tmp = SessionTmp::create(Path::new(&parent)).unwrap();
        println!("HELD {}", tmp.path().display());
        std::thread::sleep(std::time::Duration::from_secs(600));
    }

    /// The holder is killed however the test ends.
    struct KillOnDrop(std::process::Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn the_startup_sweep_removes_dead_sessions_only() {
        let parent = tempfile::tempdir().unwrap();
        let parent_path = std::fs::canonicalize(parent.path()).unwrap();
        // Another worker process with a live session.
        let other = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "tmp_dir::tests::hold_a_session_tmp",
                "--ignored",
                "--nocapture",
            ])
            .env(HOLDER, &parent_path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut other = KillOnDrop(other);
        let held = std::io::BufReader::new(other.0.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("HELD ").map(PathBuf::from))
            .expect("the holder never said where");
        // A live session of this process.
        let mine = SessionTmp::create(&parent_path).unwrap();
        // Leftovers: a dead session's directory with content (its lock went with it), a link
        // planted under a session name, and things that only look similar.
        let dead = parent_path.join("hands-tmp-00000000000000aa");
        std::fs::create_dir_all(dead.join("deep/er")).unwrap();
        std::fs::write(dead.join("deep/er/file"), "x").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), "kept").unwrap();
        let link = parent_path.join("hands-tmp-00000000000000bb");
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        let unrelated = parent_path.join("hands-tmp-notours");
        std::fs::create_dir(&unrelated).unwrap();
        let file = parent_path.join("hands-tmp-00000000000000cc");
        std::fs::write(&file, "a file").unwrap();

        let mut removed = sweep_leftover_tmp_dirs(&parent_path);
        removed.sort();
        assert_eq!(removed, vec![dead.clone(), link.clone()]);
        assert!(held.is_dir(), "the other worker's live session was removed");
        assert!(mine.path().is_dir());
        assert!(unrelated.is_dir() && file.is_file());
        assert!(std::fs::symlink_metadata(&link).is_err());
        assert_eq!(
            std::fs::read_to_string(outside.path().join("keep")).unwrap(),
            "kept"
        );

        // The other worker dies as an OOM kill would end it: no destructor runs, and its
        // directory becomes a leftover.
        other.0.kill().unwrap();
        other.0.wait().unwrap();
        assert!(held.is_dir());
        assert_eq!(sweep_leftover_tmp_dirs(&parent_path), vec![held.clone()]);
        assert!(!held.exists());
        assert!(mine.path().is_dir());
        assert!(sweep_leftover_tmp_dirs(&parent_path).is_empty());
    }
}
