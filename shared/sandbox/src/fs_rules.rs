//! Tier 1's Landlock ruleset: write beneath the writable roots only, read and execute
//! everywhere else except the hidden paths, TCP only to the egress proxy's port, no signals to
//! processes outside the sandbox, no abstract unix sockets of the outside.
//!
//! Landlock is an allow-list whose grants cover a whole hierarchy, so "read everywhere but X"
//! is built by walking down from `/` towards each hidden path: every directory on the way gets no
//! read grant of its own, and each of its other entries is granted whole. Symbolic links met on
//! the way are never granted (a grant opens its path, which would follow the link, possibly into
//! a hidden tree); what they point to is covered where it lives. Listing directories is granted
//! on all of `/` apart from that, so `ls /` and `find /` keep working: a hidden directory shows
//! the names of its files, never their contents.
//!
//! The handled rights are those of the kernel's ABI, capped at the newest ABI this code was
//! tested with ([`VETTED_ABI`]), so the ruleset is always fully enforced where it applies at all,
//! and behaves the same on a newer kernel. The compatibility level is a hard requirement: the
//! crate never drops a right silently.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};
use rustix::fs::{FileType, Mode, OFlags};

use crate::tier1::{MIN_LANDLOCK_ABI, NET_LANDLOCK_ABI, Policy};

/// The newest Landlock ABI whose rights this ruleset handles (Linux 6.15). A newer kernel gets
/// this ABI's ruleset, fully enforced.
pub(crate) const VETTED_ABI: u32 = 7;

/// The first ABI with scopes (signals, abstract unix sockets).
const SCOPE_ABI: u32 = 6;

/// Device files tools may open for writing: what shells and build tools redirect to.
const WRITABLE_DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/tty"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grant {
    /// Read, list, execute.
    Read,
    /// List directories only (all of `/`).
    List,
    /// Everything, beneath a writable root.
    ReadWrite,
    /// Open for reading and writing (a device file).
    Device,
}

/// The paths to grant and how, before any file descriptor is opened. Fails when the policy
/// cannot be expressed: a read-only or hidden path beneath a writable root (Landlock grants
/// cannot be narrowed beneath a grant).
pub(crate) fn plan(policy: &Policy) -> Result<Vec<(PathBuf, Grant)>, String> {
    let hidden: Vec<PathBuf> = policy
        .hide
        .iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .map(|p| std::fs::canonicalize(p).map_err(|e| format!("hidden path {}: {e}", p.display())))
        .collect::<Result<_, _>>()?;
    if hidden.iter().any(|h| h == Path::new("/")) {
        return Err("the hidden paths include /".into());
    }
    for rw in &policy.read_write {
        for (what, inner) in policy
            .read_only
            .iter()
            .map(|p| ("read-only", p))
            .chain(hidden.iter().map(|p| ("hidden", p)))
        {
            if inner.starts_with(rw) {
                return Err(format!(
                    "the {what} path {} lies beneath the writable {}: Landlock cannot narrow a \
                     grant beneath it",
                    inner.display(),
                    rw.display()
                ));
            }
        }
    }
    let mut out = vec![(PathBuf::from("/"), Grant::List)];
    grant_read_except(Path::new("/"), &hidden, &mut out);
    out.extend(policy.read_only.iter().map(|p| (p.clone(), Grant::Read)));
    out.extend(
        policy
            .read_write
            .iter()
            .map(|p| (p.clone(), Grant::ReadWrite)),
    );
    out.extend(
        WRITABLE_DEVICES
            .iter()
            .map(Path::new)
            .filter(|p| p.exists())
            .map(|p| (p.to_path_buf(), Grant::Device)),
    );
    Ok(out)
}

/// Grants `dir` whole when no hidden path lies beneath it; otherwise walks into it.
fn grant_read_except(dir: &Path, hidden: &[PathBuf], out: &mut Vec<(PathBuf, Grant)>) {
    if !hidden.iter().any(|h| h.starts_with(dir)) {
        out.push((dir.to_path_buf(), Grant::Read));
        return;
    }
    // An unreadable directory on the way stays ungranted: fail closed.
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if hidden.contains(&path) {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_symlink() => {}
            Ok(t) if t.is_dir() => grant_read_except(&path, hidden, out),
            Ok(_) => out.push((path, Grant::Read)),
            Err(_) => {}
        }
    }
}

/// Opens `path` for a rule without following a final symbolic link, and says whether it is a
/// directory (from the opened descriptor, so nothing can be swapped in between).
fn open_for_rule(path: &Path) -> Result<(OwnedFd, bool), String> {
    let fd = rustix::fs::open(
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| format!("{}: {e}", path.display()))?;
    let is_dir = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
    Ok((fd, is_dir))
}

/// Applies the ruleset to the calling thread (which must be the only one: the helper is).
pub(crate) fn restrict(policy: &Policy, kernel_abi: u32) -> Result<u32, String> {
    if kernel_abi < MIN_LANDLOCK_ABI {
        return Err(format!(
            "Landlock ABI {kernel_abi} is older than {MIN_LANDLOCK_ABI} (Linux 6.2) and cannot \
             stop truncating files outside the workspace"
        ));
    }
    if policy.proxy_port.is_some() && kernel_abi < NET_LANDLOCK_ABI {
        return Err(format!(
            "the egress proxy port needs Landlock ABI {NET_LANDLOCK_ABI} (Linux 6.7) for TCP \
             rules; this kernel has ABI {kernel_abi}"
        ));
    }
    let level = kernel_abi.min(VETTED_ABI);
    let abi = ABI::from(i32::try_from(level).map_err(|_| "Landlock ABI out of range")?);
    let all = AccessFs::from_all(abi);
    let read = AccessFs::from_read(abi);
    let file_rights = AccessFs::from_file(abi);
    let err = |e: landlock::RulesetError| format!("Landlock: {e}");

    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(all)
        .map_err(err)?;
    if level >= NET_LANDLOCK_ABI {
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(err)?;
    }
    if level >= SCOPE_ABI {
        ruleset = ruleset.scope(Scope::from_all(ABI::V6)).map_err(err)?;
    }
    let mut created = ruleset.create().map_err(err)?;
    for (path, grant) in plan(policy)? {
        let (fd, is_dir) = match open_for_rule(&path) {
            Ok(v) => v,
            // A path that vanished since the walk needs no grant; a writable root must exist.
            Err(_) if grant == Grant::Read && !path.exists() => continue,
            Err(e) => return Err(e),
        };
        let wanted: BitFlags<AccessFs> = match grant {
            Grant::Read => read,
            Grant::List => BitFlags::from(AccessFs::ReadDir),
            Grant::ReadWrite => all,
            Grant::Device => file_rights & !AccessFs::Execute,
        };
        let rights = if is_dir { wanted } else { wanted & file_rights };
        created = created
            .add_rule(PathBeneath::new(fd, rights))
            .map_err(|e| format!("Landlock rule for {}: {e}", path.display()))?;
    }
    if let Some(port) = policy.proxy_port {
        created = created
            .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
            .map_err(err)?;
    }
    let status = created.restrict_self().map_err(err)?;
    if status.ruleset != RulesetStatus::FullyEnforced {
        return Err(format!(
            "the Landlock ruleset is {:?}, not fully enforced",
            status.ruleset
        ));
    }
    if !status.no_new_privs {
        return Err("no_new_privs could not be set".into());
    }
    Ok(level)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rw: &[&Path], ro: &[&Path], hide: &[&Path]) -> Policy {
        Policy {
            read_write: rw.iter().map(|p| p.to_path_buf()).collect(),
            read_only: ro.iter().map(|p| p.to_path_buf()).collect(),
            hide: hide.iter().map(|p| p.to_path_buf()).collect(),
            proxy_port: None,
            check: false,
        }
    }

    #[test]
    fn hidden_paths_leave_their_ancestors_ungranted_and_their_siblings_granted() {
        let dir = tempfile_dir();
        let secret = dir.join("a/secret");
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(&secret, "s").unwrap();
        std::fs::write(dir.join("a/c.txt"), "c").unwrap();
        std::os::unix::fs::symlink(&secret, dir.join("a/link")).unwrap();
        let plan = plan(&policy(&[], &[], &[&secret, Path::new("/no/such/path")])).unwrap();
        let reads: Vec<&PathBuf> = plan
            .iter()
            .filter(|(_, g)| *g == Grant::Read)
            .map(|(p, _)| p)
            .collect();
        assert!(reads.contains(&&dir.join("a/b")) && reads.contains(&&dir.join("a/c.txt")));
        for never in [
            secret.clone(),
            dir.join("a/link"),
            dir.join("a"),
            dir.clone(),
            PathBuf::from("/"),
        ] {
            assert!(!reads.contains(&&never), "{} granted", never.display());
        }
        // Nothing beneath a granted path is hidden.
        for p in &reads {
            assert!(!secret.starts_with(p), "{} covers the secret", p.display());
        }
        // No hidden path that exists: `/` is granted whole.
        let plan = super::plan(&policy(&[], &[], &[Path::new("/no/such/path")])).unwrap();
        assert!(plan.contains(&(PathBuf::from("/"), Grant::Read)));
        // Listing is granted on `/` either way.
        assert!(plan.contains(&(PathBuf::from("/"), Grant::List)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_read_only_or_hidden_path_beneath_a_writable_root_is_refused() {
        let dir = tempfile_dir();
        std::fs::create_dir(dir.join("ro")).unwrap();
        let err = plan(&policy(&[&dir], &[&dir.join("ro")], &[])).unwrap_err();
        assert!(
            err.contains("read-only path") && err.contains("beneath the writable"),
            "{err}"
        );
        let err = plan(&policy(&[&dir], &[], &[&dir.join("ro")])).unwrap_err();
        assert!(err.contains("hidden path"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let mut bytes = [0u8; 8];
        rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).unwrap();
        let name: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("hands-fsrules-{name}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::canonicalize(&dir).unwrap()
    }
}
