//! A full disk said in plain words (issue 7: "each limit hit is reported in the result text").
//! Without it a filled workspace or `/tmp` shows only as some program's "No space left on
//! device", or as a failure that names nothing at all (a compiler that dies half-way). After a
//! `bash` command or a custom tool fails, the filesystems the call could write to are looked at
//! (`statvfs`, one system call each), and a full one is named in the result with its size.
//!
//! Only a place private to the session (tier 2's own tmpfs mounts) is said to need files
//! removed. The workspace's filesystem and the session temp dir's may be shared with other
//! sessions and other work on the host, and a command may fail for its own reasons (grep finding
//! nothing, a failing test) while another writer fills them: there the note says the filesystem
//! is full and may be shared, and does not push the model to delete its work.
//!
//! No false alarm: only a writable filesystem with (almost) nothing available counts, so a
//! command that fails for any other reason on a roomy disk gets no note, and neither does one
//! on a read-only mount (whose free count is always 0).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::StatVfsMountFlags;

/// Below this many bytes available a filesystem counts as full, or below 1/64 of its size when
/// that is smaller (a 1 MiB tmpfs is not "full" at 900 KiB free). A write that failed with
/// ENOSPC leaves at most a partial block, but other writers may free or take a little.
const FULL_BELOW_BYTES: u64 = 1024 * 1024;

/// A place a tool call could write to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskPlace {
    /// How the model knows it: "the workspace (/srv/ws)", "the sandbox's /tmp".
    pub label: String,
    /// Where the worker looks at it (for a sandbox's own mounts, through `/proc/<pid>/root`).
    pub path: PathBuf,
    /// Only this session writes there (tier 2's tmpfs): what fills it is the session's own.
    pub private: bool,
}

impl DiskPlace {
    pub fn new(label: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        DiskPlace {
            label: label.into(),
            path: path.into(),
            private: false,
        }
    }

    /// The session's workspace.
    pub fn workspace(path: &Path) -> Self {
        DiskPlace::new(
            format!("the filesystem of the workspace {}", path.display()),
            path,
        )
    }

    /// The session's private temporary directory (tiers 0 and 1).
    pub fn tmp_dir(path: &Path) -> Self {
        DiskPlace::new(
            format!(
                "the filesystem of the temporary directory {}",
                path.display()
            ),
            path,
        )
    }

    /// A mount of a tier-2 sandbox (its `/tmp` tmpfs), seen through `root`, the
    /// `/proc/<pid>/root` of a process inside.
    pub fn in_sandbox(root: &Path, mount: &str) -> Self {
        DiskPlace {
            private: true,
            ..DiskPlace::new(
                format!("the sandbox's {mount}"),
                root.join(mount.trim_start_matches('/')),
            )
        }
    }

    /// The note for this place when it has no space left; `size` is the filesystem's, in bytes.
    pub fn no_space_note(&self, size: u64) -> String {
        let (label, size) = (&self.label, size_words(size));
        if self.private {
            format!(
                "[resource limit: no space left on {label} ({size} in all); files must be removed there before anything more can be written]"
            )
        } else {
            format!(
                "[resource limit: {label} is full ({size} in all; it may be shared with other work on this host)]"
            )
        }
    }

    /// The note for this place when it has no free inodes; `inodes` is the filesystem's count.
    pub fn no_inodes_note(&self, inodes: u64) -> String {
        let label = &self.label;
        if self.private {
            format!(
                "[resource limit: no free inodes left on {label} ({inodes} files in all); files must be removed there before more can be created]"
            )
        } else {
            format!(
                "[resource limit: {label} has no free inodes left ({inodes} files in all; it may be shared with other work on this host)]"
            )
        }
    }
}

/// What `statvfs` says, in the units the decision needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Usage {
    size: u64,
    available: u64,
    inodes: u64,
    inodes_available: u64,
    read_only: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Full {
    Space,
    Inodes,
}

impl Usage {
    fn of(path: &Path) -> Option<Usage> {
        let s = rustix::fs::statvfs(path).ok()?;
        // Root may use the blocks reserved for it; everyone else only the available ones.
        let blocks_free = if rustix::process::geteuid().is_root() {
            s.f_bfree
        } else {
            s.f_bavail
        };
        Some(Usage {
            size: s.f_blocks.saturating_mul(s.f_frsize),
            available: blocks_free.saturating_mul(s.f_frsize),
            inodes: s.f_files,
            inodes_available: s.f_favail,
            read_only: s.f_flag.contains(StatVfsMountFlags::RDONLY),
        })
    }

    fn full(&self) -> Option<Full> {
        // `/proc` and friends report no blocks at all; read-only mounts report none free.
        if self.read_only || self.size == 0 {
            return None;
        }
        if self.available < FULL_BELOW_BYTES.min(self.size / 64) {
            return Some(Full::Space);
        }
        // Some filesystems (btrfs) have no inode count: 0 in all.
        if self.inodes > 0 && self.inodes_available == 0 {
            return Some(Full::Inodes);
        }
        None
    }
}

/// `256 MiB`, `19.6 GiB`.
fn size_words(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else if (value - value.round()).abs() < 0.05 {
        format!("{} {}", value.round(), UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn sentence(place: &DiskPlace, usage: &Usage, full: Full) -> String {
    match full {
        Full::Space => place.no_space_note(usage.size),
        Full::Inodes => place.no_inodes_note(usage.inodes),
    }
}

/// One note line per full filesystem among `places` (each filesystem named once, by the first
/// place on it), or `None` when none is full.
pub fn full_disk_note(places: &[DiskPlace]) -> Option<String> {
    let mut seen = Vec::new();
    let mut lines = Vec::new();
    for place in places {
        let Ok(meta) = std::fs::metadata(&place.path) else {
            continue;
        };
        if seen.contains(&meta.dev()) {
            continue;
        }
        seen.push(meta.dev());
        if let Some(usage) = Usage::of(&place.path)
            && let Some(full) = usage.full()
        {
            lines.push(sentence(place, &usage, full));
        }
    }
    (!lines.is_empty()).then(|| lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn usage(size: u64, available: u64) -> Usage {
        Usage {
            size,
            available,
            inodes: 1000,
            inodes_available: 10,
            read_only: false,
        }
    }

    #[test]
    fn only_a_writable_filesystem_with_nothing_left_is_full() {
        assert_eq!(usage(20 * 1024 * MIB, 0).full(), Some(Full::Space));
        assert_eq!(usage(20 * 1024 * MIB, 4096).full(), Some(Full::Space));
        assert_eq!(usage(20 * 1024 * MIB, 2 * MIB).full(), None);
        // A small tmpfs: full means a few blocks, not a MiB.
        assert_eq!(usage(MIB, 0).full(), Some(Full::Space));
        assert_eq!(usage(MIB, 900 * 1024).full(), None);
        let ro = Usage {
            read_only: true,
            ..usage(MIB, 0)
        };
        assert_eq!(ro.full(), None);
        assert_eq!(usage(0, 0).full(), None);
        let no_inodes = Usage {
            inodes_available: 0,
            ..usage(20 * MIB, 10 * MIB)
        };
        assert_eq!(no_inodes.full(), Some(Full::Inodes));
        let uncounted = Usage {
            inodes: 0,
            inodes_available: 0,
            ..usage(20 * MIB, 10 * MIB)
        };
        assert_eq!(uncounted.full(), None);
    }

    #[test]
    fn sizes_read_as_words() {
        assert_eq!(size_words(512), "512 bytes");
        assert_eq!(size_words(256 * MIB), "256 MiB");
        assert_eq!(size_words(MIB + MIB / 2), "1.5 MiB");
        assert_eq!(size_words(20 * 1024 * MIB + 600 * MIB), "20.6 GiB");
    }

    /// The sandbox's own tmpfs mounts are the session's alone: the note says what to do there.
    #[test]
    fn a_private_place_is_named_with_what_to_do() {
        let root = Path::new("/proc/42/root");
        let tmp = DiskPlace::in_sandbox(root, "/tmp");
        assert_eq!(tmp.path, Path::new("/proc/42/root/tmp"));
        assert_eq!(
            sentence(&tmp, &usage(256 * MIB, 0), Full::Space),
            "[resource limit: no space left on the sandbox's /tmp (256 MiB in all); files must be removed there before anything more can be written]"
        );
        let shm = DiskPlace::in_sandbox(root, "/dev/shm");
        assert_eq!(
            sentence(&shm, &usage(MIB, 0), Full::Inodes),
            "[resource limit: no free inodes left on the sandbox's /dev/shm (1000 files in all); files must be removed there before more can be created]"
        );
    }

    /// The workspace's filesystem and the session temp dir's may be shared with other work: the
    /// note says it is full and may be shared, and never asks for files to be removed.
    #[test]
    fn a_shared_place_is_said_full_without_asking_for_deletions() {
        let ws = DiskPlace::workspace(Path::new("/srv/ws"));
        assert_eq!(
            sentence(&ws, &usage(20 * 1024 * MIB, 0), Full::Space),
            "[resource limit: the filesystem of the workspace /srv/ws is full (20 GiB in all; it may be shared with other work on this host)]"
        );
        let tmp = DiskPlace::tmp_dir(Path::new("/tmp/hands-tmp-0123456789abcdef"));
        assert_eq!(
            sentence(&tmp, &usage(512 * MIB, 0), Full::Space),
            "[resource limit: the filesystem of the temporary directory /tmp/hands-tmp-0123456789abcdef is full (512 MiB in all; it may be shared with other work on this host)]"
        );
        assert_eq!(
            sentence(&ws, &usage(20 * MIB, 10 * MIB), Full::Inodes),
            "[resource limit: the filesystem of the workspace /srv/ws has no free inodes left (1000 files in all; it may be shared with other work on this host)]"
        );
        for place in [&ws, &tmp] {
            assert!(!place.private);
            for full in [Full::Space, Full::Inodes] {
                let note = sentence(place, &usage(MIB, 0), full);
                assert!(!note.contains("removed"), "{note}");
            }
        }
    }

    /// The machine running the tests has room in its temporary directory (or the suite would
    /// not get this far), and `/proc` has no blocks: no note either way. A missing path is
    /// skipped.
    #[test]
    fn a_roomy_or_pseudo_filesystem_gets_no_note() {
        let dir = tempfile::tempdir().unwrap();
        let places = [
            DiskPlace::workspace(dir.path()),
            DiskPlace::new("proc", "/proc"),
            DiskPlace::new("gone", dir.path().join("missing")),
        ];
        assert_eq!(full_disk_note(&places), None);
    }
}
