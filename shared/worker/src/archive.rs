//! Safe installation of skill archives (PROTOCOL.md §9.6).
//!
//! A skill version's content arrives as a zip, a tar or a gzipped tar, told apart by its first
//! bytes and never by its name. [`install_skill`] extracts it into a fresh staging directory
//! beside the destination, strips a single wrapping top-level directory, and renames the result
//! to `<workdir>/skills/<name>`, so a reader sees the previous skill or the new one, never a
//! half-written tree.
//!
//! The archive is hostile input. This module must never write outside its staging directory,
//! never create a symlink, hardlink, device or FIFO, never keep setuid/setgid/sticky bits, never
//! trust a size written in a header, never use the archive crates' own `unpack`/`extract`
//! helpers (their path rules are not ours), and never leave a partial skill or a staging
//! directory behind when it fails. It is synchronous: callers run it on a blocking thread.

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;

/// Bounds on what one skill archive may expand to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Members of any kind (files, directories, skipped links, metadata records).
    pub max_entries: usize,
    /// Bytes actually written for all files together.
    pub max_total_bytes: u64,
    /// Bytes actually written for one file.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_total_bytes: 256 * 1024 * 1024,
            max_file_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What an installation produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    /// Regular files written.
    pub files: usize,
    /// Directories created inside the skill (the skill directory itself and a stripped wrapper
    /// are not counted).
    pub dirs: usize,
    /// Members that were deliberately not extracted, in archive order.
    pub skipped: Vec<Skipped>,
}

/// A member left out of the installed skill, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The member's name as written in the archive (lossily decoded).
    pub member: String,
    pub why: SkipReason,
}

/// Kinds of members that are never materialised (PROTOCOL.md §9.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    Symlink,
    Hardlink,
    Device,
    Fifo,
    /// Anything else that is neither a regular file nor a directory (sockets, sparse files,
    /// volume labels, unknown tar types).
    Other,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Symlink => "symlink",
            Self::Hardlink => "hardlink",
            Self::Device => "device",
            Self::Fifo => "fifo",
            Self::Other => "not a regular file or directory",
        })
    }
}

/// Archive formats, as recognised by their magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Zip,
    Tar,
    TarGz,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Zip => "zip",
            Self::Tar => "tar",
            Self::TarGz => "gzipped tar",
        })
    }
}

/// Why a skill could not be installed. Member names are printed with `{:?}` so control
/// characters in hostile names cannot forge log lines.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("could not read skill archive {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("skill archive {} is empty", path.display())]
    Empty { path: PathBuf },
    #[error(
        "skill archive is not a valid {format} archive (format told by its first bytes): {}",
        printable(.source)
    )]
    Malformed { format: Format, source: io::Error },
    #[error("skill archive is not a valid zip archive: {}", printable(.source))]
    Zip { source: zip::result::ZipError },
    #[error("refused archive member {member:?}: {reason}")]
    UnsafePath {
        member: String,
        reason: &'static str,
    },
    #[error("skill archive has more than {limit} entries")]
    TooManyEntries { limit: usize },
    #[error("archive member {member:?} is larger than the per-file limit of {limit} bytes")]
    FileTooLarge { member: String, limit: u64 },
    #[error(
        "skill archive expands to more than {limit} bytes (limit reached at member {member:?})"
    )]
    TotalTooLarge { member: String, limit: u64 },
    #[error("skill archive stream is longer than {limit} bytes once decompressed")]
    StreamTooLarge { limit: u64 },
    #[error("archive member {member:?} appears twice (duplicate files are refused)")]
    Duplicate { member: String },
    #[error("archive member {member:?} collides with an earlier member of another type")]
    Conflict { member: String },
    #[error("could not extract archive member {member:?}: {source}")]
    Member { member: String, source: io::Error },
    #[error("could not read archive member {member:?}: {source}")]
    ZipMember {
        member: String,
        source: zip::result::ZipError,
    },
    #[error("skill destination {} must end in a name and contain no `..`", path.display())]
    InvalidDestination { path: PathBuf },
    #[error("could not {action} {}: {source}", path.display())]
    Filesystem {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// A parser's message, which may quote hostile header bytes, made safe and short for a log
/// line: control characters escaped, undecodable bytes shown as `?`, about 160 bytes at most.
fn printable(err: &dyn fmt::Display) -> String {
    const MAX_LEN: usize = 160;
    let mut out = String::new();
    for c in err.to_string().chars() {
        if out.len() >= MAX_LEN {
            out.push('…');
            break;
        }
        match c {
            char::REPLACEMENT_CHARACTER => out.push('?'),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

/// Extracts the skill archive at `archive` and installs it as the directory `dest`, replacing
/// any previous `dest`. On error, `dest` is untouched and no staging files remain.
///
/// Decisions beyond PROTOCOL.md §9.6:
/// - A regular file that appears twice (also after normalisation, `a` and `./a`) fails the
///   skill: a silent "later wins" would let the second copy hide behind the first in any
///   listing. (Byte-identical zip names are collapsed by the `zip` crate's index before we see
///   them; there the later central-directory record wins.) Repeated directories merge.
/// - A wrapper is stripped when every member (skipped ones included) has the same first path
///   component and that component is a directory (it has members below it, or is itself a
///   directory member). Only one level is stripped.
/// - A directory member naming the root itself (`./`, as written by `tar -C dir .`) is
///   accepted and ignored; any other member that is empty after normalisation is refused.
pub fn install_skill(
    archive: &Path,
    dest: &Path,
    limits: &Limits,
) -> Result<Installed, ArchiveError> {
    let parent = destination_parent(dest)?;
    fs::create_dir_all(&parent).map_err(filesystem("create the skills directory", &parent))?;
    // Same directory as `dest`, hence the same filesystem, so the final `rename` is atomic.
    // The name is random and the guard removes the directory (and anything extracted so far)
    // when dropped on error.
    let staging = tempfile::Builder::new()
        .prefix(".hands-skill-staging-")
        .tempdir_in(&parent)
        .map_err(filesystem("create a staging directory in", &parent))?;
    // It may become `dest` itself (no wrapper), so it gets the reference directory mode; it is
    // created with the umask's default, which is usually 0755.
    fs::set_permissions(staging.path(), Permissions::from_mode(0o700))
        .map_err(filesystem("restrict the staging directory", staging.path()))?;

    let mut stage = Stage::new(staging.path(), limits);
    extract(archive, &mut stage)?;
    let (tree, installed) = stage.finish();

    put_in_place(&tree, dest, &parent)?;
    if tree == staging.path() {
        // The staging directory *is* `dest` now; dropping the guard must not touch that path.
        let _ = staging.keep();
    } else if let Err(err) = staging.close() {
        // The skill is installed; only an empty staging directory is left over.
        tracing::warn!(error = %err, "could not remove the emptied skill staging directory");
    }
    Ok(installed)
}

fn destination_parent(dest: &Path) -> Result<PathBuf, ArchiveError> {
    let invalid = || ArchiveError::InvalidDestination {
        path: dest.to_owned(),
    };
    // Skill names come from the server; a `..` here would move the install elsewhere.
    if dest.file_name().is_none() || dest.components().any(|c| c == Component::ParentDir) {
        return Err(invalid());
    }
    match dest.parent() {
        Some(parent) if parent.as_os_str().is_empty() => Ok(PathBuf::from(".")),
        Some(parent) => Ok(parent.to_owned()),
        None => Err(invalid()),
    }
}

fn filesystem(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = path.to_owned();
    move |source| ArchiveError::Filesystem {
        action,
        path,
        source,
    }
}

/// Moves the extracted `tree` to `dest`. An existing `dest` is first renamed aside (into a
/// private directory, whatever its type: a planted symlink is moved, never followed), then
/// removed once the new tree is in place, so readers never see a half-written skill.
fn put_in_place(tree: &Path, dest: &Path, parent: &Path) -> Result<(), ArchiveError> {
    match fs::symlink_metadata(dest) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return fs::rename(tree, dest).map_err(filesystem("move the new skill to", dest));
        }
        Err(err) => return Err(filesystem("inspect", dest)(err)),
        Ok(_) => {}
    }
    let aside = tempfile::Builder::new()
        .prefix(".hands-skill-old-")
        .tempdir_in(parent)
        .map_err(filesystem(
            "create a directory for the previous skill in",
            parent,
        ))?;
    let old = aside.path().join("previous");
    fs::rename(dest, &old).map_err(filesystem("move the previous skill aside from", dest))?;
    if let Err(err) = fs::rename(tree, dest) {
        // Put the previous skill back so a failed replacement changes nothing.
        if let Err(back) = fs::rename(&old, dest) {
            let kept = aside.keep();
            tracing::error!(error = %back, kept = %kept.display(),
                "could not restore the previous skill; it was kept aside");
        }
        return Err(filesystem("move the new skill to", dest)(err));
    }
    // std's `remove_dir_all` (used by `close`) does not follow symlinks.
    if let Err(err) = aside.close() {
        tracing::warn!(error = %err, "could not remove the previous version of a skill");
    }
    Ok(())
}

fn extract(archive: &Path, stage: &mut Stage<'_>) -> Result<(), ArchiveError> {
    let open = |source| ArchiveError::Open {
        path: archive.to_owned(),
        source,
    };
    let mut file = File::open(archive).map_err(open)?;
    let Some(format) = sniff(&mut file).map_err(open)? else {
        return Err(ArchiveError::Empty {
            path: archive.to_owned(),
        });
    };
    match format {
        Format::Zip => extract_zip(BufReader::new(file), stage),
        Format::Tar => extract_tar(BufReader::new(file), format, stage),
        Format::TarGz => extract_tar(MultiGzDecoder::new(BufReader::new(file)), format, stage),
    }
}

/// Recognises the format by magic bytes and rewinds; `None` for an empty file.
fn sniff(file: &mut File) -> io::Result<Option<Format>> {
    let mut magic = [0u8; 4];
    let mut len = 0;
    while len < magic.len() {
        match file.read(&mut magic[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    file.seek(SeekFrom::Start(0))?;
    let magic = &magic[..len];
    Ok(if magic.is_empty() {
        None
    } else if magic == b"PK\x03\x04" || magic == b"PK\x05\x06" {
        Some(Format::Zip)
    } else if magic.starts_with(b"\x1f\x8b") {
        Some(Format::TarGz)
    } else {
        // tar has no magic at offset 0 (and v7 archives none at all); its header checksums
        // reject anything else with a clear error.
        Some(Format::Tar)
    })
}

fn extract_zip<R: Read + Seek>(reader: R, stage: &mut Stage<'_>) -> Result<(), ArchiveError> {
    let mut archive =
        zip::ZipArchive::new(reader).map_err(|source| ArchiveError::Zip { source })?;
    // The central directory gives the count up front: refuse before writing anything.
    if archive.len() > stage.limits.max_entries {
        return Err(ArchiveError::TooManyEntries {
            limit: stage.limits.max_entries,
        });
    }
    for index in 0..archive.len() {
        stage.count_entry()?;
        let member = archive.name_for_index(index).unwrap_or_default().to_owned();
        let mut file = archive
            .by_index(index)
            .map_err(|source| ArchiveError::ZipMember { member, source })?;
        let name = file.name().as_bytes().to_vec();
        let kind = zip_kind(&file);
        stage.add(&name, kind, &mut file)?;
    }
    Ok(())
}

const S_IFMT: u32 = 0o170_000;
const S_IFSOCK: u32 = 0o140_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFREG: u32 = 0o100_000;
const S_IFBLK: u32 = 0o060_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFIFO: u32 = 0o010_000;

fn zip_kind<R: Read>(file: &zip::read::ZipFile<'_, R>) -> Kind {
    let mode = file.unix_mode().unwrap_or(0);
    // The file-type bits decide when present; archives made on DOS/Windows (or with no
    // attributes) only say "directory" through a trailing slash.
    match mode & S_IFMT {
        S_IFLNK => Kind::Skip(SkipReason::Symlink),
        S_IFCHR | S_IFBLK => Kind::Skip(SkipReason::Device),
        S_IFIFO => Kind::Skip(SkipReason::Fifo),
        S_IFSOCK => Kind::Skip(SkipReason::Other),
        S_IFDIR => Kind::Dir,
        _ if file.is_dir() => Kind::Dir,
        0 | S_IFREG => Kind::File {
            mode,
            declared: file.size(),
        },
        _ => Kind::Skip(SkipReason::Other),
    }
}

/// Slack for tar headers, long-name and pax records, padding and end-of-archive blocks.
const TAR_OVERHEAD_PER_ENTRY: u64 = 8 * 1024;
const TAR_OVERHEAD_FIXED: u64 = 64 * 1024;

fn extract_tar<R: Read>(
    reader: R,
    format: Format,
    stage: &mut Stage<'_>,
) -> Result<(), ArchiveError> {
    // The tar crate reads GNU long names and pax records into memory and silently skips the
    // data of members we do not extract, so bound the (decompressed) stream itself: a gzip
    // bomb or a gigabyte "long name" stops here, not after filling memory or burning CPU.
    let limit = stage
        .limits
        .max_total_bytes
        .saturating_add(
            u64::try_from(stage.limits.max_entries)
                .unwrap_or(u64::MAX)
                .saturating_mul(TAR_OVERHEAD_PER_ENTRY),
        )
        .saturating_add(TAR_OVERHEAD_FIXED);
    let exceeded = Cell::new(false);
    let mut archive = tar::Archive::new(StreamBudget {
        inner: reader,
        left: limit,
        exceeded: &exceeded,
    });
    let malformed = |source| {
        if exceeded.get() {
            ArchiveError::StreamTooLarge { limit }
        } else {
            ArchiveError::Malformed { format, source }
        }
    };
    for entry in archive.entries().map_err(malformed)? {
        let mut entry = entry.map_err(malformed)?;
        stage.count_entry()?;
        let name = entry.path_bytes().into_owned();
        let Some(kind) = tar_kind(&entry, &name)? else {
            continue;
        };
        stage.add(&name, kind, &mut entry).map_err(|err| {
            if exceeded.get() {
                ArchiveError::StreamTooLarge { limit }
            } else {
                err
            }
        })?;
    }
    Ok(())
}

/// `None` for records that describe the archive rather than a member.
fn tar_kind<R: Read>(entry: &tar::Entry<'_, R>, name: &[u8]) -> Result<Option<Kind>, ArchiveError> {
    use tar::EntryType;
    let header = entry.header();
    Ok(Some(match header.entry_type() {
        // A pax global header (`git archive` writes one named `pax_global_header`) is
        // metadata; treating it as a member would defeat wrapper stripping.
        EntryType::XGlobalHeader => return Ok(None),
        EntryType::Directory => Kind::Dir,
        // Pre-POSIX archives mark directories only with a trailing slash.
        EntryType::Regular if name.ends_with(b"/") => Kind::Dir,
        EntryType::Regular | EntryType::Continuous => Kind::File {
            mode: header.mode().map_err(|source| ArchiveError::Member {
                member: String::from_utf8_lossy(name).into_owned(),
                source,
            })?,
            declared: entry.size(),
        },
        EntryType::Symlink => Kind::Skip(SkipReason::Symlink),
        EntryType::Link => Kind::Skip(SkipReason::Hardlink),
        EntryType::Char | EntryType::Block => Kind::Skip(SkipReason::Device),
        EntryType::Fifo => Kind::Skip(SkipReason::Fifo),
        _ => Kind::Skip(SkipReason::Other),
    }))
}

/// A reader that fails once more than `left` bytes would be read, and records that it did so
/// (the tar crate wraps our error in its own).
struct StreamBudget<'a, R> {
    inner: R,
    left: u64,
    exceeded: &'a Cell<bool>,
}

impl<R: Read> Read for StreamBudget<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // A stream that ends exactly at the budget is fine; one more byte is not.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.exceeded.set(true);
                    Err(io::Error::other("archive stream exceeds its size budget"))
                }
            };
        }
        let room = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..room])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// How a member is to be treated.
enum Kind {
    Dir,
    /// `mode` as written in the archive; `declared` is the header's size, used only to refuse
    /// early (the bytes actually written are what is bounded).
    File {
        mode: u32,
        declared: u64,
    },
    Skip(SkipReason),
}

/// The first path component shared by every member so far.
enum Top {
    NoMembers,
    One { name: OsString, is_dir: bool },
    Several,
}

/// Extraction state for one archive, writing beneath `root` (the staging directory).
///
/// Confinement: every path written is `root` joined with components that [`normalise`] has
/// reduced to plain names (no `..`, no root, no prefix), so it names a location beneath `root`
/// unless some component on the way is a symlink. None can be: `root` is fresh and private,
/// this code never creates a symlink (links are skipped), and every directory beneath `root`
/// was created here by `mkdir` (recorded in `dirs`), so a name that already exists and is not
/// in `dirs` is a regular file we wrote, which is reported as a conflict, never traversed.
/// Files are opened with `O_CREAT|O_EXCL`, which also refuses to follow a symlink.
/// (A process of the same user could race us here, but such a process can rewrite the
/// installed skill anyway; it gains nothing.)
struct Stage<'a> {
    root: &'a Path,
    limits: &'a Limits,
    entries: usize,
    written: u64,
    files: usize,
    /// Relative paths of every directory created beneath `root`.
    dirs: HashSet<PathBuf>,
    skipped: Vec<Skipped>,
    top: Top,
}

impl<'a> Stage<'a> {
    fn new(root: &'a Path, limits: &'a Limits) -> Self {
        Self {
            root,
            limits,
            entries: 0,
            written: 0,
            files: 0,
            dirs: HashSet::new(),
            skipped: Vec::new(),
            top: Top::NoMembers,
        }
    }

    fn count_entry(&mut self) -> Result<(), ArchiveError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    fn add<R: Read>(
        &mut self,
        name: &[u8],
        kind: Kind,
        content: &mut R,
    ) -> Result<(), ArchiveError> {
        let member = String::from_utf8_lossy(name).into_owned();
        let rel = match normalise(name) {
            Ok(Some(rel)) => rel,
            // `./` names the skill root, which the staging directory already is.
            Ok(None) if matches!(kind, Kind::Dir) => return Ok(()),
            Ok(None) => {
                return Err(ArchiveError::UnsafePath {
                    member,
                    reason: "the name is empty once `.` and empty components are removed",
                });
            }
            Err(reason) => return Err(ArchiveError::UnsafePath { member, reason }),
        };
        self.note_top(&rel, &kind);
        match kind {
            Kind::Skip(why) => {
                self.skipped.push(Skipped { member, why });
                Ok(())
            }
            Kind::Dir => self.make_dirs(&rel, &member),
            Kind::File { mode, declared } => self.write_file(&rel, member, mode, declared, content),
        }
    }

    fn note_top(&mut self, rel: &Path, kind: &Kind) {
        let mut parts = rel.components();
        let first = parts
            .next()
            .map(|c| c.as_os_str().to_owned())
            .unwrap_or_default();
        let is_dir = parts.next().is_some() || matches!(kind, Kind::Dir);
        self.top = match std::mem::replace(&mut self.top, Top::Several) {
            Top::NoMembers => Top::One {
                name: first,
                is_dir,
            },
            Top::One { name, is_dir: was } if name == first => Top::One {
                name,
                is_dir: was && is_dir,
            },
            _ => Top::Several,
        };
    }

    /// Creates `rel` and its missing ancestors, each 0700.
    fn make_dirs(&mut self, rel: &Path, member: &str) -> Result<(), ArchiveError> {
        let mut at = PathBuf::new();
        for part in rel.components() {
            at.push(part);
            if self.dirs.contains(&at) {
                continue;
            }
            let full = self.root.join(&at);
            let failed = |source| ArchiveError::Member {
                member: member.to_owned(),
                source,
            };
            match DirBuilder::new().mode(0o700).create(&full) {
                Ok(()) => {}
                // Not in `dirs`, so it is a file this archive wrote (see `Stage`).
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(ArchiveError::Conflict {
                        member: member.to_owned(),
                    });
                }
                Err(err) => return Err(failed(err)),
            }
            // The umask may have cleared owner bits we need; set the reference mode exactly.
            fs::set_permissions(&full, Permissions::from_mode(0o700)).map_err(failed)?;
            self.dirs.insert(at.clone());
        }
        Ok(())
    }

    fn write_file<R: Read>(
        &mut self,
        rel: &Path,
        member: String,
        mode: u32,
        declared: u64,
        content: &mut R,
    ) -> Result<(), ArchiveError> {
        let limits = self.limits;
        let too_large = |member| ArchiveError::FileTooLarge {
            member,
            limit: limits.max_file_bytes,
        };
        if declared > limits.max_file_bytes {
            return Err(too_large(member));
        }
        if let Some(parent) = rel.parent() {
            self.make_dirs(parent, &member)?;
        }
        let full = self.root.join(rel);
        // Created 0600 and only opened up once complete, so nothing runs a half-written file.
        let mut out = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&full)
        {
            Ok(out) => out,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                return Err(if self.dirs.contains(rel) {
                    ArchiveError::Conflict { member }
                } else {
                    ArchiveError::Duplicate { member }
                });
            }
            Err(source) => return Err(ArchiveError::Member { member, source }),
        };
        // Headers can lie (zip bombs do): count what the decoder actually produces, and read
        // at most one byte past what either limit allows.
        let room = limits
            .max_file_bytes
            .min(limits.max_total_bytes.saturating_sub(self.written));
        let copied = match io::copy(&mut content.take(room.saturating_add(1)), &mut out) {
            Ok(copied) => copied,
            Err(source) => return Err(ArchiveError::Member { member, source }),
        };
        if copied > room {
            return Err(if copied > limits.max_file_bytes {
                too_large(member)
            } else {
                ArchiveError::TotalTooLarge {
                    member,
                    limit: limits.max_total_bytes,
                }
            });
        }
        self.written += copied;
        // Only the execute bits carry over; setuid/setgid/sticky and group/other write never do.
        let final_mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
        if let Err(source) = out.set_permissions(Permissions::from_mode(final_mode)) {
            return Err(ArchiveError::Member { member, source });
        }
        self.files += 1;
        Ok(())
    }

    /// The directory to install (the staging root, or the wrapper inside it) and the summary.
    fn finish(self) -> (PathBuf, Installed) {
        let mut dirs = self.dirs.len();
        let tree = match &self.top {
            Top::One { name, is_dir: true } if self.dirs.contains(Path::new(name)) => {
                dirs -= 1;
                self.root.join(name)
            }
            // A wrapper holding only skipped members was never created: the skill is empty.
            _ => self.root.to_owned(),
        };
        let installed = Installed {
            files: self.files,
            dirs,
            skipped: self.skipped,
        };
        (tree, installed)
    }
}

/// Reduces a member name to plain path components: `Ok(None)` if nothing is left, `Err` with
/// the reason if the name is unsafe anywhere (even for members that would be skipped).
fn normalise(name: &[u8]) -> Result<Option<PathBuf>, &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.contains(&0) {
        return Err("the name contains a NUL byte");
    }
    // Refused outright rather than read as a separator: `..\\x` or `C:\\x` mean escapes on
    // Windows-made archives, and no skill needs a backslash in a file name.
    if name.contains(&b'\\') {
        return Err("the name contains a backslash");
    }
    if name.starts_with(b"/") {
        return Err("the path is absolute");
    }
    if name.len() >= 2 && name[0].is_ascii_alphabetic() && name[1] == b':' {
        return Err("the path starts with a Windows drive letter");
    }
    let mut rel = PathBuf::new();
    for part in name.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("the path contains a `..` component"),
            part => rel.push(OsStr::from_bytes(part)),
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::{Cursor, Write};

    use pretty_assertions::assert_eq;
    use tempfile::TempDir;
    use zip::write::SimpleFileOptions;

    /// A member to put into a test archive.
    #[derive(Clone, Copy)]
    enum M<'a> {
        Dir(&'a str),
        File(&'a str, &'a [u8], u32),
        Symlink(&'a str, &'a str),
        Hardlink(&'a str, &'a str),
        Fifo(&'a str),
        CharDevice(&'a str),
    }

    fn tar_bytes(members: &[M<'_>]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for member in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_mode(0o755);
            let done = match *member {
                M::Dir(path) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    builder.append_data(&mut h, path, io::empty())
                }
                M::File(path, data, mode) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(mode);
                    h.set_size(data.len() as u64);
                    builder.append_data(&mut h, path, data)
                }
                M::Symlink(path, target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    builder.append_link(&mut h, path, target)
                }
                M::Hardlink(path, target) => {
                    h.set_entry_type(tar::EntryType::Link);
                    builder.append_link(&mut h, path, target)
                }
                M::Fifo(path) => {
                    h.set_entry_type(tar::EntryType::Fifo);
                    builder.append_data(&mut h, path, io::empty())
                }
                M::CharDevice(path) => {
                    h.set_entry_type(tar::EntryType::Char);
                    builder.append_data(&mut h, path, io::empty())
                }
            };
            done.unwrap();
        }
        builder.into_inner().unwrap()
    }

    /// A tar whose member names are written verbatim into the header (the builder's own path
    /// checks would refuse the hostile ones we need).
    fn raw_tar(members: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            h.set_cksum();
            builder.append(&h, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn zip_bytes(members: &[M<'_>]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = |mode| {
            SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(mode)
        };
        for member in members {
            match *member {
                M::Dir(path) => writer.add_directory(path, opts(0o755)).unwrap(),
                M::File(path, data, mode) => {
                    writer.start_file(path, opts(mode)).unwrap();
                    writer.write_all(data).unwrap();
                }
                M::Symlink(path, target) => writer.add_symlink(path, target, opts(0o777)).unwrap(),
                _ => panic!("zip archives cannot hold this member kind"),
            }
        }
        writer.finish().unwrap().into_inner()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// Offsets of every central-directory record of a zip written by `zip_bytes`.
    fn central_records(zip: &[u8]) -> Vec<usize> {
        let start = zip.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
        let mut at = start;
        let mut found = Vec::new();
        while zip[at..].starts_with(b"PK\x01\x02") {
            found.push(at);
            let field =
                |off: usize| u16::from_le_bytes([zip[at + off], zip[at + off + 1]]) as usize;
            at += 46 + field(28) + field(30) + field(32);
        }
        found
    }

    /// Rewrites the unix mode (file type included) of every member, which `ZipWriter` masks
    /// to the permission bits.
    fn set_zip_modes(zip: &mut [u8], mode: u32) {
        for at in central_records(zip) {
            let attrs = (mode << 16).to_le_bytes();
            zip[at + 38..at + 42].copy_from_slice(&attrs);
        }
    }

    /// A skills directory with room for a destination and an archive file outside it.
    struct Fx {
        tmp: TempDir,
        skills: PathBuf,
        dest: PathBuf,
    }

    impl Fx {
        fn new() -> Self {
            let tmp = TempDir::new().unwrap();
            let skills = tmp.path().join("work/skills");
            let dest = skills.join("my-skill");
            Self { tmp, skills, dest }
        }

        fn install(&self, bytes: &[u8], limits: &Limits) -> Result<Installed, ArchiveError> {
            let archive = self.tmp.path().join("download.bin");
            fs::write(&archive, bytes).unwrap();
            install_skill(&archive, &self.dest, limits)
        }

        /// A previous version of the skill at `dest`.
        fn plant_old_skill(&self) -> BTreeMap<String, String> {
            fs::create_dir_all(self.dest.join("old")).unwrap();
            fs::write(self.dest.join("old/SKILL.md"), "old").unwrap();
            snapshot(&self.dest)
        }

        /// Names in the skills directory other than the destination: staging leftovers.
        fn leftovers(&self) -> Vec<String> {
            let Ok(dir) = fs::read_dir(&self.skills) else {
                return Vec::new();
            };
            dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name != "my-skill")
                .collect()
        }
    }

    /// Every path beneath `root` with its type, mode and content.
    fn snapshot(root: &Path) -> BTreeMap<String, String> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = fs::symlink_metadata(&path).unwrap();
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let mode = meta.permissions().mode() & 0o7777;
                let ty = meta.file_type();
                let value = if ty.is_dir() {
                    walk(root, &path, out);
                    format!("dir {mode:o}")
                } else if ty.is_file() {
                    let body = String::from_utf8_lossy(&fs::read(&path).unwrap()).into_owned();
                    format!("file {mode:o} {body}")
                } else {
                    format!("special {:?}", ty)
                };
                out.insert(rel, value);
            }
        }
        let mut out = BTreeMap::new();
        walk(root, root, &mut out);
        out
    }

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn wrapped() -> Vec<M<'static>> {
        vec![
            M::Dir("my-skill-1.0/"),
            M::File("my-skill-1.0/SKILL.md", b"# skill", 0o644),
            M::Dir("my-skill-1.0/scripts/"),
            M::File("my-skill-1.0/scripts/run.sh", b"#!/bin/sh", 0o775),
        ]
    }

    fn expected_tree() -> BTreeMap<String, String> {
        map(&[
            ("SKILL.md", "file 644 # skill"),
            ("scripts", "dir 700"),
            ("scripts/run.sh", "file 755 #!/bin/sh"),
        ])
    }

    #[test]
    fn wrapped_zip_wrapped_tar_gz_and_plain_tar_install_the_same_tree() {
        let plain = [
            M::File("SKILL.md", b"# skill", 0o644),
            M::File("scripts/run.sh", b"#!/bin/sh", 0o775),
        ];
        let archives = [
            ("zip", zip_bytes(&wrapped())),
            ("tar.gz", gzip(&tar_bytes(&wrapped()))),
            ("tar", tar_bytes(&plain)),
        ];
        for (label, bytes) in archives {
            let fx = Fx::new();
            let installed = fx.install(&bytes, &Limits::default()).unwrap();
            assert_eq!(snapshot(&fx.dest), expected_tree(), "{label}");
            let want = Installed {
                files: 2,
                dirs: 1,
                skipped: vec![],
            };
            assert_eq!(installed, want, "{label}");
            let root_mode = fs::metadata(&fx.dest).unwrap().permissions().mode() & 0o7777;
            assert_eq!(root_mode, 0o700, "{label}");
            assert_eq!(fx.leftovers(), Vec::<String>::new(), "{label}");
        }
    }

    #[test]
    fn wrapper_is_stripped_only_when_there_is_exactly_one_top_level_directory() {
        let f = |p| M::File(p, b"x", 0o644);
        let cases: Vec<(&str, Vec<M<'_>>, Vec<&str>)> = vec![
            ("implicit wrapper", vec![f("w/a"), f("w/b")], vec!["a", "b"]),
            (
                "one level only",
                vec![f("w/inner/a")],
                vec!["inner", "inner/a"],
            ),
            (
                "two top dirs",
                vec![f("a/x"), f("b/y")],
                vec!["a", "a/x", "b", "b/y"],
            ),
            (
                "dir beside a file",
                vec![f("w/x"), f("README")],
                vec!["README", "w", "w/x"],
            ),
            ("single top file", vec![f("SKILL.md")], vec!["SKILL.md"]),
            ("dot-slash names", vec![M::Dir("./"), f("./w/x")], vec!["x"]),
            (
                "skipped member at top",
                vec![f("w/x"), M::Symlink("link", "w/x")],
                vec!["w", "w/x"],
            ),
            ("only an empty wrapper", vec![M::Dir("w/")], vec![]),
            (
                "top name is also a link",
                vec![f("w/x"), M::Symlink("w", "elsewhere")],
                vec!["w", "w/x"],
            ),
        ];
        for (label, members, want) in cases {
            let fx = Fx::new();
            fx.install(&tar_bytes(&members), &Limits::default())
                .unwrap();
            let got: Vec<String> = snapshot(&fx.dest).into_keys().collect();
            assert_eq!(got, want, "{label}");
        }
        // The same rule for zip.
        let fx = Fx::new();
        fx.install(&zip_bytes(&[f("a/x"), f("b/y")]), &Limits::default())
            .unwrap();
        let got: Vec<String> = snapshot(&fx.dest).into_keys().collect();
        assert_eq!(got, vec!["a", "a/x", "b", "b/y"]);
    }

    #[test]
    fn execute_bits_give_0755_other_files_0644_and_directories_0700() {
        let members = [
            M::Dir("d/"),
            M::File("d/owner-exec", b"", 0o700),
            M::File("d/group-exec-only", b"", 0o610),
            M::File("d/private", b"", 0o600),
            M::File("d/world-writable", b"", 0o666),
            M::Dir("d/open/"),
        ];
        let want = map(&[
            ("owner-exec", "file 755 "),
            ("group-exec-only", "file 755 "),
            ("private", "file 644 "),
            ("world-writable", "file 644 "),
            ("open", "dir 700"),
        ]);
        for (label, bytes) in [("tar", tar_bytes(&members)), ("zip", zip_bytes(&members))] {
            let fx = Fx::new();
            fx.install(&bytes, &Limits::default()).unwrap();
            assert_eq!(snapshot(&fx.dest), want, "{label}");
        }
    }

    #[test]
    fn setuid_setgid_and_sticky_bits_are_dropped() {
        let tar = tar_bytes(&[
            M::File("suid", b"", 0o4755),
            M::File("sgid", b"", 0o2644),
            M::File("sticky", b"", 0o1777),
        ]);
        let fx = Fx::new();
        fx.install(&tar, &Limits::default()).unwrap();
        let want = map(&[
            ("suid", "file 755 "),
            ("sgid", "file 644 "),
            ("sticky", "file 755 "),
        ]);
        assert_eq!(snapshot(&fx.dest), want);

        let mut zip = zip_bytes(&[M::File("suid", b"", 0o755)]);
        set_zip_modes(&mut zip, S_IFREG | 0o6755);
        let fx = Fx::new();
        fx.install(&zip, &Limits::default()).unwrap();
        assert_eq!(snapshot(&fx.dest), map(&[("suid", "file 755 ")]));
    }

    #[test]
    fn unsafe_member_names_are_refused_and_nothing_is_left_behind() {
        let good: (&[u8], &[u8]) = (b"w/SKILL.md", b"fine");
        let tar_cases: [&[u8]; 9] = [
            b"../evil",
            b"w/../../evil",
            b"/tmp/evil",
            b"..\\evil",
            b"w\\..\\..\\evil",
            b"C:\\evil",
            b"C:/evil",
            b".",
            b"./.",
        ];
        let mut cases: Vec<(String, Vec<u8>)> = tar_cases
            .iter()
            .map(|name| {
                // A good member first, so the staging directory is not empty when we refuse.
                let bytes = raw_tar(&[good, (name, b"evil")]);
                (String::from_utf8_lossy(name).into_owned(), bytes)
            })
            .collect();
        for name in ["../evil", "/evil", "a\0b"] {
            let bytes = zip_bytes(&[
                M::File("w/SKILL.md", b"fine", 0o644),
                M::File(name, b"evil", 0o644),
            ]);
            cases.push((name.to_owned(), bytes));
        }
        for (name, bytes) in cases {
            let fx = Fx::new();
            let before = fx.plant_old_skill();
            let err = fx.install(&bytes, &Limits::default()).unwrap_err();
            assert!(
                matches!(&err, ArchiveError::UnsafePath { member, .. } if *member == name),
                "{name:?}: {err}"
            );
            assert!(err.to_string().contains(&format!("{name:?}")), "{err}");
            assert_eq!(snapshot(&fx.dest), before, "{name:?}");
            assert_eq!(fx.leftovers(), Vec::<String>::new(), "{name:?}");
            for escaped in ["evil", "work/evil", "work/skills/evil", "tmp/evil"] {
                assert!(
                    !fx.tmp.path().join(escaped).exists(),
                    "{name:?} wrote {escaped}"
                );
            }
        }
    }

    #[test]
    fn links_devices_and_fifos_are_skipped_and_reported() {
        let tar = tar_bytes(&[
            M::File("s/SKILL.md", b"ok", 0o644),
            M::Symlink("s/link", "/etc/passwd"),
            M::Hardlink("s/hard", "s/SKILL.md"),
            M::Fifo("s/pipe"),
            M::CharDevice("s/null"),
        ]);
        let fx = Fx::new();
        let installed = fx.install(&tar, &Limits::default()).unwrap();
        let skipped = |member: &str, why| Skipped {
            member: member.to_owned(),
            why,
        };
        let want = Installed {
            files: 1,
            dirs: 0,
            skipped: vec![
                skipped("s/link", SkipReason::Symlink),
                skipped("s/hard", SkipReason::Hardlink),
                skipped("s/pipe", SkipReason::Fifo),
                skipped("s/null", SkipReason::Device),
            ],
        };
        assert_eq!(installed, want);
        assert_eq!(snapshot(&fx.dest), map(&[("SKILL.md", "file 644 ok")]));

        let mut fifo = zip_bytes(&[M::File("pipe", b"", 0o644)]);
        set_zip_modes(&mut fifo, S_IFIFO | 0o644);
        let zips = [
            (
                zip_bytes(&[
                    M::File("SKILL.md", b"ok", 0o644),
                    M::Symlink("link", "../../x"),
                ]),
                "link",
                SkipReason::Symlink,
            ),
            (fifo, "pipe", SkipReason::Fifo),
        ];
        for (bytes, member, why) in zips {
            let fx = Fx::new();
            let installed = fx.install(&bytes, &Limits::default()).unwrap();
            assert_eq!(installed.skipped, vec![skipped(member, why)]);
            assert!(
                fs::symlink_metadata(fx.dest.join(member)).is_err(),
                "{member}"
            );
        }
    }

    fn small_file_limit() -> Limits {
        Limits {
            max_file_bytes: 64 * 1024,
            ..Limits::default()
        }
    }

    #[test]
    fn deflated_file_larger_than_max_file_bytes_fails() {
        let big = vec![0u8; 1024 * 1024];
        let zip = zip_bytes(&[M::File("w/big.bin", &big, 0o644)]);
        assert!(zip.len() < 64 * 1024, "the archive itself is small");
        let fx = Fx::new();
        let before = fx.plant_old_skill();
        let err = fx.install(&zip, &small_file_limit()).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::FileTooLarge { member, limit: 65536 } if member == "w/big.bin"),
            "{err}"
        );
        assert_eq!(snapshot(&fx.dest), before);
        assert_eq!(fx.leftovers(), Vec::<String>::new());
    }

    #[test]
    fn zip_size_header_that_lies_is_caught_by_counting_written_bytes() {
        let big = vec![7u8; 1024 * 1024];
        let mut zip = zip_bytes(&[M::File("big.bin", &big, 0o644)]);
        // Claim 100 bytes in the local header and the central directory.
        let lie = 100u32.to_le_bytes();
        assert!(zip.starts_with(b"PK\x03\x04"));
        zip[22..26].copy_from_slice(&lie);
        for at in central_records(&zip) {
            zip[at + 24..at + 28].copy_from_slice(&lie);
        }
        let fx = Fx::new();
        let err = fx.install(&zip, &small_file_limit()).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::FileTooLarge { member, .. } if member == "big.bin"),
            "{err}"
        );
        assert_eq!(fx.leftovers(), Vec::<String>::new());
        assert!(!fx.dest.exists());
    }

    #[test]
    fn total_written_bytes_are_bounded() {
        let data = [1u8; 40];
        let tar = tar_bytes(&[
            M::File("a", &data, 0o644),
            M::File("b", &data, 0o644),
            M::File("c", &data, 0o644),
        ]);
        let limits = Limits {
            max_total_bytes: 100,
            ..Limits::default()
        };
        let fx = Fx::new();
        let err = fx.install(&tar, &limits).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::TotalTooLarge { member, limit: 100 } if member == "c"),
            "{err}"
        );
        assert!(!fx.dest.exists());
        assert_eq!(fx.leftovers(), Vec::<String>::new());
    }

    #[test]
    fn too_many_entries_fails() {
        let members: Vec<M<'_>> = ["a", "b", "c", "d", "e"]
            .into_iter()
            .map(|p| M::File(p, b"", 0o644))
            .collect();
        let limits = Limits {
            max_entries: 4,
            ..Limits::default()
        };
        for (label, bytes) in [("tar", tar_bytes(&members)), ("zip", zip_bytes(&members))] {
            let fx = Fx::new();
            let err = fx.install(&bytes, &limits).unwrap_err();
            assert!(
                matches!(err, ArchiveError::TooManyEntries { limit: 4 }),
                "{label}: {err}"
            );
            assert!(!fx.dest.exists(), "{label}");
            assert_eq!(fx.leftovers(), Vec::<String>::new(), "{label}");
        }
        // Exactly at the limit is fine.
        let fx = Fx::new();
        fx.install(&tar_bytes(&members[..4]), &limits).unwrap();
    }

    #[test]
    fn oversized_tar_stream_is_cut_off_before_it_is_buffered() {
        // A 2 MiB GNU long name is read into memory by the tar crate; it compresses to a few KiB.
        let long_name = "a/".repeat(1024 * 1024) + "x";
        let members = [M::File(&long_name, b"", 0o644)];
        let bomb = gzip(&tar_bytes(&members));
        assert!(bomb.len() < 64 * 1024);
        let limits = Limits {
            max_entries: 4,
            max_total_bytes: 1024,
            max_file_bytes: 1024,
        };
        let fx = Fx::new();
        let err = fx.install(&bomb, &limits).unwrap_err();
        assert!(matches!(err, ArchiveError::StreamTooLarge { .. }), "{err}");
        assert_eq!(fx.leftovers(), Vec::<String>::new());
    }

    #[test]
    fn replacing_an_existing_skill_swaps_in_the_new_tree() {
        let fx = Fx::new();
        fx.plant_old_skill();
        let installed = fx
            .install(&zip_bytes(&wrapped()), &Limits::default())
            .unwrap();
        assert_eq!(installed.files, 2);
        assert_eq!(snapshot(&fx.dest), expected_tree());
        assert_eq!(fx.leftovers(), Vec::<String>::new());

        // A planted symlink at `dest` is replaced, and its target is neither used nor removed.
        let fx = Fx::new();
        let outside = fx.tmp.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("keep"), "keep").unwrap();
        fs::create_dir_all(&fx.skills).unwrap();
        std::os::unix::fs::symlink(&outside, &fx.dest).unwrap();
        fx.install(&tar_bytes(&wrapped()), &Limits::default())
            .unwrap();
        assert!(fs::symlink_metadata(&fx.dest).unwrap().is_dir());
        assert_eq!(snapshot(&fx.dest), expected_tree());
        assert_eq!(snapshot(&outside), map(&[("keep", "file 644 keep")]));
        assert_eq!(fx.leftovers(), Vec::<String>::new());
    }

    #[test]
    fn garbage_gives_a_clear_error() {
        let noise: Vec<u8> = (0..2000u32).map(|i| (i * 31 % 251) as u8 + 1).collect();
        let with_magic = |magic: &[u8]| [magic, &noise].concat();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("noise", noise.clone(), "not a valid tar archive"),
            ("short noise", b"hello".to_vec(), "not a valid tar archive"),
            (
                "zip magic",
                with_magic(b"PK\x03\x04"),
                "not a valid zip archive",
            ),
            (
                "gzip magic",
                with_magic(b"\x1f\x8b"),
                "not a valid gzipped tar archive",
            ),
            ("empty", Vec::new(), "is empty"),
        ];
        for (label, bytes, message) in cases {
            let fx = Fx::new();
            let before = fx.plant_old_skill();
            let err = fx.install(&bytes, &Limits::default()).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(message), "{label}: {text}");
            // Parsers quote header bytes; none may reach a log line raw or unbounded.
            assert!(!text.chars().any(char::is_control), "{label}: {text:?}");
            assert!(text.len() < 400, "{label}: {text}");
            assert_eq!(snapshot(&fx.dest), before, "{label}");
            assert_eq!(fx.leftovers(), Vec::<String>::new(), "{label}");
        }
        let truncated = gzip(&tar_bytes(&wrapped()));
        let fx = Fx::new();
        let err = fx
            .install(&truncated[..truncated.len() / 2], &Limits::default())
            .unwrap_err();
        assert!(
            matches!(
                err,
                ArchiveError::Malformed {
                    format: Format::TarGz,
                    ..
                } | ArchiveError::Member { .. }
            ),
            "{err}"
        );
        assert!(!fx.dest.exists());
    }

    #[test]
    fn duplicate_files_are_refused_and_repeated_directories_merge() {
        for members in [
            vec![M::File("a", b"1", 0o644), M::File("a", b"2", 0o644)],
            vec![M::File("a", b"1", 0o644), M::File("./a", b"2", 0o644)],
        ] {
            let fx = Fx::new();
            let err = fx
                .install(&tar_bytes(&members), &Limits::default())
                .unwrap_err();
            assert!(matches!(err, ArchiveError::Duplicate { .. }), "{err}");
            assert!(!fx.dest.exists());
        }
        let fx = Fx::new();
        let members = [
            M::Dir("d/"),
            M::File("d/x", b"1", 0o644),
            M::Dir("d/"),
            M::File("e", b"2", 0o644),
        ];
        let installed = fx
            .install(&tar_bytes(&members), &Limits::default())
            .unwrap();
        assert_eq!((installed.files, installed.dirs), (2, 1));
    }

    #[test]
    fn a_file_and_a_directory_of_the_same_name_conflict() {
        for members in [
            vec![M::File("x", b"", 0o644), M::File("x/y", b"", 0o644)],
            vec![M::Dir("x/"), M::File("x", b"", 0o644)],
            vec![M::File("x", b"", 0o644), M::Dir("x/")],
        ] {
            let fx = Fx::new();
            let err = fx
                .install(&tar_bytes(&members), &Limits::default())
                .unwrap_err();
            assert!(matches!(err, ArchiveError::Conflict { .. }), "{err}");
            assert!(!fx.dest.exists());
            assert_eq!(fx.leftovers(), Vec::<String>::new());
        }
    }

    #[test]
    fn empty_zip_installs_an_empty_skill() {
        let zip = zip_bytes(&[]);
        assert!(zip.starts_with(b"PK\x05\x06"));
        let fx = Fx::new();
        assert_eq!(
            fx.install(&zip, &Limits::default()).unwrap(),
            Installed::default()
        );
        assert_eq!(snapshot(&fx.dest), BTreeMap::new());
        assert!(fs::metadata(&fx.dest).unwrap().is_dir());
    }

    #[test]
    fn pax_global_header_does_not_block_wrapper_stripping() {
        let mut builder = tar::Builder::new(Vec::new());
        let record = b"15 comment=abc\n";
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XGlobalHeader);
        h.set_size(record.len() as u64);
        builder
            .append_data(&mut h, "pax_global_header", &record[..])
            .unwrap();
        let mut bytes = builder.into_inner().unwrap();
        // Drop the builder's end-of-archive blocks before appending the members.
        bytes.truncate(bytes.len() - 1024);
        bytes.extend(tar_bytes(&wrapped()));
        let fx = Fx::new();
        let installed = fx.install(&bytes, &Limits::default()).unwrap();
        assert_eq!(snapshot(&fx.dest), expected_tree());
        assert_eq!(installed.skipped, vec![]);
    }

    #[test]
    fn destination_with_a_parent_component_is_refused() {
        let fx = Fx::new();
        let archive = fx.tmp.path().join("a.tar");
        fs::write(&archive, tar_bytes(&wrapped())).unwrap();
        let err =
            install_skill(&archive, &fx.skills.join("../escape"), &Limits::default()).unwrap_err();
        assert!(
            matches!(err, ArchiveError::InvalidDestination { .. }),
            "{err}"
        );
        assert!(!fx.tmp.path().join("work/escape").exists());
    }
}
