//! The path policy of the file tools (PROTOCOL.md §8.3): a path is taken relative to the
//! workdir, `.`/`..` are collapsed lexically, then every symlink on it — the leaf too, even a
//! dangling one — is followed, and the result must lie inside the workdir or an allowed root.
//!
//! The reference does this with `realpath` and then opens the resulting *string*, so a symlink
//! swapped in between the check and the open is followed (CATALOGUE T18). Here resolution is a
//! walk over directory descriptors: each component is looked up with `fstatat(AT_SYMLINK_NOFOLLOW)`
//! relative to the descriptor of its parent, directories are opened `O_PATH | O_NOFOLLOW`, and
//! symlinks are read with `readlinkat` and spliced in by hand. The caller gets the descriptor of
//! the deepest existing directory plus the remaining names, and opens the leaf relative to that
//! descriptor with `O_NOFOLLOW`: a symlink swapped in at any point makes the open fail instead of
//! being followed out of the root.
//!
//! Why not `openat2(RESOLVE_BENEATH)` alone: the reference semantics accept an *absolute*
//! symlink that points back inside the root (`ws/l -> /work/ws/x`), which `RESOLVE_BENEATH`
//! refuses, and they resolve `..` lexically before following links. The walk gives exactly those
//! semantics on every kernel; `openat2` is still used where a whole relative path is opened at
//! once (grep's per-file opens).

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};

use crate::output::{fs_reason, py_repr};

/// Symlinks followed before giving up, as the reference (`_MAX_SYMLINK_HOPS`) and Linux.
const MAX_SYMLINK_HOPS: usize = 40;
/// `PATH_MAX`: longer inputs are refused before any lookup (T17).
const MAX_PATH_BYTES: usize = 4096;

/// Why a path was refused; `Display` is the reference's text after the `<tool>: ` prefix.
#[derive(Debug)]
pub enum PathError {
    Outside { shown: String, other_roots: bool },
    Fs { shown: String, err: io::Error },
    Nul { shown: String },
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::Outside {
                shown,
                other_roots: false,
            } => {
                write!(f, "path {shown} is outside the session's working directory")
            }
            PathError::Outside {
                shown,
                other_roots: true,
            } => write!(
                f,
                "path {shown} is outside the session's working directory and its other permitted directories"
            ),
            PathError::Fs { shown, err } => write!(f, "path {shown}: {}", fs_reason(err)),
            PathError::Nul { shown } => write!(f, "path {shown}: embedded null byte"),
        }
    }
}

/// A directory the file tools may reach, held open so that its own path is looked up once.
#[derive(Debug)]
pub struct Root {
    pub path: PathBuf,
    comps: Vec<OsString>,
    fd: OwnedFd,
}

impl Root {
    /// Canonicalises `path` (it must exist and be a directory) and opens it.
    pub fn open(path: &Path) -> io::Result<Root> {
        let path = std::fs::canonicalize(path)?;
        let fd = rustix::fs::open(
            &path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            comps: components(&path),
            path,
            fd,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A directory write and edit refuse to modify, and how it was spelled in the configuration
/// (the reference's message shows the configured spelling).
#[derive(Debug)]
struct ReadOnlyRoot {
    comps: Vec<OsString>,
    shown: String,
}

/// The roots of one session's file tools.
#[derive(Debug)]
pub struct Roots {
    pub workdir: Root,
    pub allowed: Vec<Root>,
    read_only: Vec<ReadOnlyRoot>,
}

/// A resolved path: its canonical spelling, the deepest existing directory on it (held open),
/// and the names below that directory — exactly the leaf's name when the target exists, several
/// names when directories are missing, none when the target is that directory itself.
#[derive(Debug)]
pub struct Resolved {
    pub path: PathBuf,
    pub dir: OwnedFd,
    pub rest: Vec<OsString>,
}

impl Resolved {
    /// The leaf name when the target exists in `dir` (or may be created there directly).
    pub fn leaf(&self) -> Option<&OsStr> {
        match self.rest.as_slice() {
            [leaf] => Some(leaf),
            _ => None,
        }
    }
}

fn components(path: &Path) -> Vec<OsString> {
    path.as_os_str()
        .as_bytes()
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| OsString::from_vec(c.to_vec()))
        .collect()
}

/// Lexical normalisation (`os.path.normpath`): `.` and empty parts dropped, `..` cancels the
/// part before it; leading `..` that cannot cancel anything are kept for the caller.
fn normalize(parts: impl IntoIterator<Item = OsString>) -> VecDeque<OsString> {
    let mut out: VecDeque<OsString> = VecDeque::new();
    for p in parts {
        let b = p.as_bytes();
        if b.is_empty() || b == b"." {
            continue;
        }
        if b == b".." && out.back().is_some_and(|last| last.as_bytes() != b"..") {
            out.pop_back();
        } else {
            out.push_back(p);
        }
    }
    out
}

fn split_bytes(b: &[u8]) -> impl Iterator<Item = OsString> + '_ {
    b.split(|&c| c == b'/')
        .map(|c| OsString::from_vec(c.to_vec()))
}

fn within(path: &[OsString], root: &[OsString]) -> bool {
    path.starts_with(root)
}

fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn open_fs_root() -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        CWD,
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// The directory stack of a walk: `fds[i]` is the directory named by `comps[..i]`; `None`
/// where a root's ancestors were skipped and must be reopened if `..` climbs back to them.
struct Walk {
    comps: Vec<OsString>,
    fds: Vec<Option<OwnedFd>>,
}

impl Walk {
    fn at_fs_root() -> io::Result<Walk> {
        Ok(Walk {
            comps: Vec::new(),
            fds: vec![Some(open_fs_root()?)],
        })
    }

    fn at(root: &Root) -> io::Result<Walk> {
        let mut fds: Vec<Option<OwnedFd>> = (0..root.comps.len()).map(|_| None).collect();
        fds.push(Some(root.fd.try_clone()?));
        Ok(Walk {
            comps: root.comps.clone(),
            fds,
        })
    }

    fn up(&mut self) {
        if !self.comps.is_empty() {
            self.comps.pop();
            self.fds.pop();
        }
    }

    fn push(&mut self, name: OsString, fd: OwnedFd) {
        self.comps.push(name);
        self.fds.push(Some(fd));
    }

    /// The current directory's descriptor, reopening it from `/` (without following links)
    /// when `..` climbed above the root the walk started from.
    fn current(&mut self) -> io::Result<BorrowedFd<'_>> {
        if matches!(self.fds.last(), Some(None)) {
            let mut fd = open_fs_root()?;
            for name in &self.comps {
                fd = open_dir(fd.as_fd(), name)?;
            }
            if let Some(slot) = self.fds.last_mut() {
                *slot = Some(fd);
            }
        }
        match self.fds.last() {
            Some(Some(fd)) => Ok(fd.as_fd()),
            _ => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }

    fn into_current(mut self) -> io::Result<OwnedFd> {
        self.current()?;
        match self.fds.pop() {
            Some(Some(fd)) => Ok(fd),
            _ => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }
}

impl Roots {
    /// Opens the workdir and every allowed root (each must exist). Read-only roots need not
    /// exist: they are matched by their canonical spelling where it can be had, and lexically
    /// otherwise, so a read-only directory created later is still protected.
    pub fn new(workdir: &Path, allowed: &[PathBuf], read_only: &[PathBuf]) -> io::Result<Roots> {
        let workdir = Root::open(workdir)?;
        let allowed = allowed
            .iter()
            .map(|p| Root::open(p))
            .collect::<io::Result<Vec<_>>>()?;
        let read_only = read_only
            .iter()
            .map(|p| {
                let abs = if p.is_absolute() {
                    p.clone()
                } else {
                    workdir.path.join(p)
                };
                let canonical = std::fs::canonicalize(&abs).unwrap_or_else(|_| {
                    let parts = normalize(components(&abs));
                    let mut out = PathBuf::from("/");
                    out.extend(parts.iter().filter(|c| c.as_bytes() != b".."));
                    out
                });
                ReadOnlyRoot {
                    comps: components(&canonical),
                    shown: p.display().to_string(),
                }
            })
            .collect();
        Ok(Roots {
            workdir,
            allowed,
            read_only,
        })
    }

    /// The configured spelling of the read-only root `path` lies in, if any.
    pub fn read_only_root_of(&self, path: &Path) -> Option<&str> {
        let comps = components(path);
        self.read_only
            .iter()
            .find(|r| within(&comps, &r.comps))
            .map(|r| r.shown.as_str())
    }

    /// Whether a canonical path lies inside the workdir or an allowed root.
    pub fn permits(&self, path: &Path) -> bool {
        let comps = components(path);
        std::iter::once(&self.workdir)
            .chain(&self.allowed)
            .any(|r| within(&comps, &r.comps))
    }

    /// Resolves `input` (as the model sent it) under the policy described in the module docs.
    pub fn resolve(&self, input: &str) -> Result<Resolved, PathError> {
        self.resolve_with(input, true)
    }

    /// [`Roots::resolve`], with the common case's shortcut ([`direct`]) or, for tests that
    /// compare the two, the walk alone.
    fn resolve_with(&self, input: &str, shortcut: bool) -> Result<Resolved, PathError> {
        let shown = || py_repr(input);
        let fs = |err: io::Error| PathError::Fs {
            shown: shown(),
            err,
        };
        if input.contains('\0') {
            return Err(PathError::Nul { shown: shown() });
        }
        if input.len() > MAX_PATH_BYTES {
            return Err(fs(io::Error::from_raw_os_error(libc::ENAMETOOLONG)));
        }
        let joined = if input.starts_with('/') {
            PathBuf::from(input)
        } else {
            self.workdir.path.join(input)
        };
        let mut wanted: Vec<OsString> = normalize(split_bytes(joined.as_os_str().as_bytes()))
            .into_iter()
            .skip_while(|c| c.as_bytes() == b"..")
            .collect();

        // Start from the root that the lexical path is under, so the common case looks up only
        // the components below the root.
        let start = std::iter::once(&self.workdir)
            .chain(&self.allowed)
            .filter(|r| within(&wanted, &r.comps))
            .max_by_key(|r| r.comps.len());
        let mut walk = match start {
            Some(root) => {
                wanted.drain(..root.comps.len());
                if shortcut && let Some(resolved) = direct(root, &wanted) {
                    return Ok(resolved);
                }
                Walk::at(root).map_err(fs)?
            }
            None => Walk::at_fs_root().map_err(fs)?,
        };
        let mut pending: VecDeque<OsString> = wanted.into();
        let mut rest: Vec<OsString> = Vec::new();
        let mut hops = 0;
        while let Some(name) = pending.pop_front() {
            if name.as_bytes() == b".." {
                // Only spliced symlink targets still hold `..` here; the prefix is physical.
                walk.up();
                continue;
            }
            let dir = walk.current().map_err(fs)?;
            let stat = match rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => {
                    rest.push(name);
                    rest.extend(pending.drain(..));
                    break;
                }
                Err(e) => return Err(fs(e.into())),
            };
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::Symlink => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(fs(io::Error::from_raw_os_error(libc::ELOOP)));
                    }
                    let target =
                        rustix::fs::readlinkat(dir, &name, Vec::new()).map_err(|e| fs(e.into()))?;
                    let target = target.as_bytes();
                    if target.starts_with(b"/") {
                        walk = Walk::at_fs_root().map_err(fs)?;
                    }
                    let spliced: Vec<OsString> =
                        split_bytes(target).chain(pending.drain(..)).collect();
                    pending = normalize(spliced);
                }
                FileType::Directory if !pending.is_empty() => {
                    let fd = open_dir(dir, &name).map_err(fs)?;
                    walk.push(name, fd);
                }
                _ if pending.is_empty() => rest.push(name),
                // A non-directory in the middle: keep the rest as spelled, as the reference does;
                // the operation then fails with "not a directory".
                _ => {
                    rest.push(name);
                    rest.extend(pending.drain(..));
                    break;
                }
            }
        }

        let mut path = PathBuf::from("/");
        path.extend(walk.comps.iter().chain(&rest));
        if !self.permits(&path) {
            return Err(PathError::Outside {
                shown: shown(),
                other_roots: !self.allowed.is_empty(),
            });
        }
        let dir = walk.into_current().map_err(fs)?;
        Ok(Resolved { path, dir, rest })
    }
}

/// The common case of [`Roots::resolve`] in two system calls instead of two per component: a
/// path below `root` (`below`, normalised, no `..`) whose directories all exist and hold no
/// symlink, and whose leaf is not a symlink. The leaf's directory is opened in one
/// `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (one component at a time with `O_NOFOLLOW`
/// where `openat2` is missing), and the leaf is stated without following it. For such a path
/// the walk would find the same directory and the same leaf; anything else (a symlink on the
/// way or at the leaf, a missing directory, an error) returns `None`, and the walk resolves the
/// path with its full rules, so a symlink swapped in meanwhile is never followed here.
fn direct(root: &Root, below: &[OsString]) -> Option<Resolved> {
    let (leaf, parents) = below.split_last()?;
    if parents.is_empty() {
        // A name in the root itself: the walk costs the same.
        return None;
    }
    let rel: PathBuf = parents.iter().collect();
    let dir = crate::grep::walk::open_dir(root.fd(), &rel, true).ok()?;
    match rustix::fs::statat(&dir, leaf, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) != FileType::Symlink => {}
        Err(rustix::io::Errno::NOENT) => {}
        _ => return None,
    }
    let mut path = PathBuf::from("/");
    path.extend(root.comps.iter().chain(below));
    Some(Resolved {
        path,
        dir,
        rest: vec![leaf.clone()],
    })
}

/// Creates the missing directories of `resolved` (all of `rest` but the last name) and returns
/// the directory the leaf goes in, each step opened with `O_NOFOLLOW` so a symlink raced in
/// cannot redirect it.
pub fn make_parents(resolved: &Resolved) -> io::Result<(OwnedFd, &OsStr)> {
    let Some((leaf, parents)) = resolved.rest.split_last() else {
        return Err(io::Error::from_raw_os_error(libc::EISDIR));
    };
    let mut dir = resolved.dir.try_clone()?;
    for name in parents {
        match rustix::fs::mkdirat(&dir, name.as_os_str(), Mode::from_bits_truncate(0o777)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        dir = open_dir(dir.as_fd(), name)?;
    }
    Ok((dir, leaf.as_os_str()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::os::unix::fs::symlink;

    use super::*;

    /// The shortcut answers exactly as the walk does wherever it answers, and leaves every
    /// path with a symlink on it, or a missing directory, to the walk.
    #[test]
    fn the_shortcut_resolves_as_the_walk_does() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path().join("ws");
        let outside = tmp.path().join("outside");
        for d in ["ws/a/b/sub", "ws/c", "outside"] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        std::fs::write(ws.join("a/b/f.txt"), "f").unwrap();
        std::fs::write(outside.join("secret"), "s").unwrap();
        symlink("b", ws.join("a/lb")).unwrap();
        symlink(ws.join("c"), ws.join("a/abs")).unwrap();
        symlink("f.txt", ws.join("a/b/lf")).unwrap();
        symlink(&outside, ws.join("a/out")).unwrap();
        symlink("nowhere", ws.join("a/b/dangling")).unwrap();
        let roots = Roots::new(&ws, &[], &[]).unwrap();
        let canon = std::fs::canonicalize(&ws).unwrap();

        let inputs = [
            "a/b/f.txt",
            "a/b/new.txt",
            "a/b",
            "a/b/",
            "./a/./b/../b/f.txt",
            "a/b/f.txt/x",
            "a/missing/x.txt",
            "a/lb/f.txt",
            "a/lb/sub/g.txt",
            "a/abs/n.txt",
            "a/b/lf",
            "a/b/dangling",
            "a/out/secret",
            "c/x",
            "f.txt",
        ];
        let mut direct_answers = 0;
        for input in inputs {
            let abs = format!("{}/{input}", canon.display());
            for spelled in [input, abs.as_str()] {
                let shortcut = roots.resolve_with(spelled, true);
                let walked = roots.resolve_with(spelled, false);
                match (shortcut, walked) {
                    (Ok(s), Ok(w)) => {
                        assert_eq!(s.path, w.path, "{spelled}");
                        assert_eq!(s.rest, w.rest, "{spelled}");
                        let (sd, wd) = (
                            rustix::fs::fstat(&s.dir).unwrap(),
                            rustix::fs::fstat(&w.dir).unwrap(),
                        );
                        assert_eq!((sd.st_dev, sd.st_ino), (wd.st_dev, wd.st_ino), "{spelled}");
                    }
                    (Err(s), Err(w)) => assert_eq!(s.to_string(), w.to_string(), "{spelled}"),
                    (s, w) => panic!("{spelled}: shortcut {s:?}, walk {w:?}"),
                }
                let mut below = normalize(split_bytes(input.as_bytes()));
                if direct(&roots.workdir, below.make_contiguous()).is_some() {
                    direct_answers += 1;
                }
            }
        }
        // Six inputs, each spelled relative and absolute, go the short way: `a/b/f.txt` and
        // `a/b` (two spellings each), `a/b/new.txt` and `c/x`. `a/b/f.txt/x` does not (its
        // "directory" is a file), nor does any path with a link on it.
        assert_eq!(
            direct_answers,
            2 * 6,
            "the shortcut was taken too rarely or too often"
        );
        assert!(
            roots.resolve("a/out/secret").is_err(),
            "a link out of the root is refused"
        );
    }

    #[test]
    fn normalize_is_lexical() {
        let n = |s: &str| -> Vec<String> {
            normalize(split_bytes(s.as_bytes()))
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(n("a/./b/../c"), ["a", "c"]);
        assert_eq!(n("../../x"), ["..", "..", "x"]);
        assert_eq!(n("a/../../x"), ["..", "x"]);
        assert_eq!(n("//a//"), ["a"]);
    }
}
