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

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, Mode, OFlags};

/// The variables programs read for their temporary directory.
pub const TMP_VARS: [&str; 3] = ["TMPDIR", "TMP", "TEMP"];

/// What every session directory's name starts with; 16 lowercase hex digits follow.
const PREFIX: &str = "hands-tmp-";

/// The directory; removed on drop.
#[derive(Debug)]
pub struct SessionTmp {
    path: PathBuf,
    /// The open directory holding the exclusive `flock` that marks it live; closed (unlocked)
    /// after the directory is removed.
    _lock: OwnedFd,
}

/// Opens `path` as a directory without following a symlink, close-on-exec.
fn open_dir(path: &Path) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Takes the exclusive lock without waiting: `Ok(false)` when another open description holds
/// it (a live session, or a sweep that is removing the directory).
fn try_lock(fd: &OwnedFd) -> std::io::Result<bool> {
    match rustix::fs::flock(fd.as_fd(), FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether `path` still names the directory open at `fd` (not removed, not replaced).
fn still_at(fd: &OwnedFd, path: &Path) -> bool {
    let Ok(open) = rustix::fs::fstat(fd.as_fd()) else {
        return false;
    };
    std::fs::symlink_metadata(path)
        .is_ok_and(|now| now.dev() == open.st_dev && now.ino() == open.st_ino)
}

impl SessionTmp {
    /// Creates a fresh directory under `parent` (the worker's own temporary directory) and
    /// locks it. The name is random and `mkdir` is exclusive, so a name planted in advance is
    /// never reused.
    pub fn create(parent: &Path) -> std::io::Result<SessionTmp> {
        let parent = std::fs::canonicalize(parent)?;
        let mut last = None;
        for _ in 0..8 {
            let mut bytes = [0u8; 8];
            rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty())?;
            let name = format!("{PREFIX}{:016x}", u64::from_le_bytes(bytes));
            let path = parent.join(name);
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
            let lock = match open_dir(&path) {
                Ok(fd) => fd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            match try_lock(&lock) {
                Ok(true) if still_at(&lock, &path) => {
                    return Ok(SessionTmp { path, _lock: lock });
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

/// Whether `name` is one [`SessionTmp::create`] makes: the prefix and 16 lowercase hex digits.
fn is_session_tmp_name(name: &str) -> bool {
    name.strip_prefix(PREFIX).is_some_and(|hex| {
        hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// What the sweep did with one entry.
#[derive(Debug, PartialEq, Eq)]
enum Swept {
    Removed,
    /// Locked by a live session, or not this user's.
    Kept,
}

fn sweep_one(path: &Path, uid: u32) -> std::io::Result<Swept> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.uid() != uid {
        // Another user's: not ours to judge (and a sticky /tmp would refuse anyway).
        return Ok(Swept::Kept);
    }
    if meta.file_type().is_symlink() {
        // Never made by a session (they are directories made by an exclusive `mkdir`): a
        // planted link. The link goes; what it points to is never looked at.
        std::fs::remove_file(path)?;
        return Ok(Swept::Removed);
    }
    if !meta.is_dir() {
        return Ok(Swept::Kept);
    }
    let lock = match open_dir(path) {
        Ok(fd) => fd,
        // Replaced by a link or removed since the look above: left to the next sweep.
        Err(_) => return Ok(Swept::Kept),
    };
    if !try_lock(&lock)? || !still_at(&lock, path) {
        return Ok(Swept::Kept);
    }
    // Removed with the lock held: a worker that made this directory a moment ago and has not
    // locked it yet finds it locked (or gone) and takes another name.
    hands_sandbox::remove_tree(path)?;
    Ok(Swept::Removed)
}

/// Removes the session directories under `parent` that no live process holds: those of
/// workers that died without dropping their sessions, and links planted under such names.
/// A directory held by a live [`SessionTmp`], in this process or another, is never touched,
/// nor is anything of another user or anything else in `parent`. Returns the paths removed;
/// entries that could not be removed are logged and left.
pub fn sweep_leftover_tmp_dirs(parent: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return removed;
    };
    let uid = rustix::process::geteuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(is_session_tmp_name) {
            continue;
        }
        let path = entry.path();
        match sweep_one(&path, uid) {
            Ok(Swept::Removed) => removed.push(path),
            Ok(Swept::Kept) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "cannot remove a leftover session temporary directory");
            }
        }
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
