//! What isolation this host allows, and which tier to use (DESIGN.md, "Isolation tiers").
//!
//! The probe runs once at worker start and is logged. It looks at the kernel (Landlock ABI,
//! seccomp filters, user namespaces) and at bubblewrap, which it finds by absolute path in fixed
//! directories (never through `PATH`, which a deployment's environment could point anywhere) and
//! then *runs once* with the exact flags tier 2 uses: a `bwrap` binary that exists but cannot
//! create its namespaces (a container without user namespaces, a seccomp profile that forbids
//! `unshare`) is reported as unusable, with bwrap's own words.
//!
//! The two trial runs (bwrap's and the tier-1 helper's) are process starts, the largest part of a
//! worker's start-up, so [`HostProbe::run_for`] makes only those the asked mode can use: `auto`
//! tries tier 2, and tier 1 only when tier 2 failed; `none` tries neither. A trial not made
//! at start is made the first time a check needs it (a [`Trial`]), so no answer is ever guessed.
//!
//! Selection fails closed: when the operator requires isolation, a tier that cannot be fully
//! enforced is an error, never a warning.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::OnceLock;

use crate::bwrap::{Binds, BwrapSandbox, Tier2Options};
use crate::tier1::{CHECK_OK, MIN_LANDLOCK_ABI, Policy, Tier1Options, Tier1Sandbox};

/// The directories searched for `bwrap`, in order.
pub const BWRAP_DIRS: &[&str] = &["/usr/bin", "/usr/local/bin", "/bin"];

/// An isolation tier, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Tier 0: cleared environment, own process group, sweep, rlimits, a non-dumpable worker.
    None,
    /// Tier 1: Landlock and seccomp applied by a helper that then execs the tool.
    Landlock,
    /// Tier 2: bubblewrap (new user, pid, net, ipc, uts namespaces; read-only root).
    Bwrap,
}

impl Tier {
    /// The number DESIGN.md gives the tier.
    pub fn number(self) -> u8 {
        match self {
            Tier::None => 0,
            Tier::Landlock => 1,
            Tier::Bwrap => 2,
        }
    }

    /// The name used by `--isolation`.
    pub fn name(self) -> &'static str {
        match self {
            Tier::None => "none",
            Tier::Landlock => "landlock",
            Tier::Bwrap => "bwrap",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tier {} ({})", self.number(), self.name())
    }
}

/// What the operator asked for (`--isolation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IsolationMode {
    /// The strongest tier this host allows.
    #[default]
    Auto,
    /// Exactly this tier.
    Tier(Tier),
}

impl FromStr for IsolationMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(IsolationMode::Auto),
            "none" | "0" => Ok(IsolationMode::Tier(Tier::None)),
            "landlock" | "1" => Ok(IsolationMode::Tier(Tier::Landlock)),
            "bwrap" | "bubblewrap" | "2" => Ok(IsolationMode::Tier(Tier::Bwrap)),
            other => Err(format!(
                "unknown isolation {other:?} (use auto, none, landlock or bwrap)"
            )),
        }
    }
}

impl fmt::Display for IsolationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IsolationMode::Auto => f.write_str("auto"),
            IsolationMode::Tier(t) => f.write_str(t.name()),
        }
    }
}

/// Why the asked isolation cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsolationError {
    /// The operator required a tier this host cannot fully enforce.
    #[error("isolation {tier} was required but cannot be fully enforced on this host: {reason}")]
    Unavailable { tier: Tier, reason: String },
    /// `auto` with isolation required, and nothing stronger than tier 0 is available.
    #[error(
        "isolation was required but no tier above 0 can be enforced on this host ({probe}); \
         install bubblewrap (apt-get install bubblewrap) or allow user namespaces"
    )]
    NothingAvailable { probe: String },
    /// Isolation was required, and the tier cannot keep tools to the egress proxy (see
    /// [`crate::route_to_proxy`]); the text says why and what to do.
    #[error("isolation was required, but {0}")]
    NoProxyRoute(String),
    /// An egress policy is set, no tier above 0 can keep tools to its proxy, and tier 0 was not
    /// asked for by name (see [`crate::route_to_proxy`]); the text says what is missing and what
    /// to do.
    #[error("{0}")]
    OnlyTier0Left(String),
}

/// The tier chosen, and why it is weaker than asked when it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub tier: Tier,
    /// Set when an explicitly asked tier was unavailable and isolation was not required: the
    /// worker logs it as a warning.
    pub fell_back: Option<String>,
}

/// One trial run's outcome: made when the probe ran it, else the first time it is asked for, and
/// at most once either way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trial<T>(OnceLock<Result<T, String>>);

impl<T> Default for Trial<T> {
    /// Not made yet.
    fn default() -> Self {
        Trial(OnceLock::new())
    }
}

impl<T> Trial<T> {
    /// A trial whose outcome is already known (tests force what the host has).
    pub fn done(outcome: Result<T, String>) -> Self {
        Trial(OnceLock::from(outcome))
    }

    /// The outcome, if the trial was made.
    pub fn made(&self) -> Option<&Result<T, String>> {
        self.0.get()
    }

    fn get_or_make(&self, make: impl FnOnce() -> Result<T, String>) -> &Result<T, String> {
        self.0.get_or_init(make)
    }
}

/// What the host allows, as found by [`HostProbe::run`] or [`HostProbe::run_for`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostProbe {
    /// The Landlock ABI version, or why there is none.
    pub landlock_abi: Result<u32, String>,
    /// Whether seccomp filters can be installed (`SECCOMP_MODE_FILTER`).
    pub seccomp_filter: bool,
    /// Whether this process may create user namespaces, or why not.
    pub user_namespaces: Result<(), String>,
    /// The bubblewrap binary, after a successful trial run, or why it cannot be used.
    pub bwrap: Trial<PathBuf>,
    /// Whether the tier-1 helper of this binary ran its trial (Landlock and seccomp applied,
    /// a write and a UDP socket refused), or why not.
    pub tier1: Trial<()>,
}

impl HostProbe {
    /// What the kernel offers, without any trial run (microseconds).
    fn kernel() -> HostProbe {
        HostProbe {
            landlock_abi: landlock_abi(),
            seccomp_filter: probe_seccomp(),
            user_namespaces: probe_user_namespaces(),
            bwrap: Trial::default(),
            tier1: Trial::default(),
        }
    }

    /// Probes the host with both trial runs, at the same time (a few milliseconds each): what
    /// tests and tools that show every tier use. A worker calls [`HostProbe::run_for`].
    pub fn run() -> HostProbe {
        let probe = HostProbe::kernel();
        std::thread::scope(|scope| {
            let tier1 = scope.spawn(|| {
                probe.tier1_trial();
            });
            probe.bwrap_trial();
            if tier1.join().is_err() {
                // A panic in the trial itself: tier 1 is unusable, as before there were trials
                // made on demand (a check must not run it again on a runtime's thread).
                let _ = probe.tier1.0.set(Err("the tier 1 trial panicked".into()));
            }
        });
        probe
    }

    /// Probes the host with the trial runs that choosing a tier for `mode` needs, one after the
    /// other: tier 2's for `auto` and `bwrap`, then tier 1's only if tier 2 failed (the only
    /// case in which [`HostProbe::select`] can pick it); tier 1's alone for `landlock`; none for
    /// `none`. A trial left out is made later if a check asks for it (an egress route falling
    /// back from tier 2 to tier 1).
    pub fn run_for(mode: IsolationMode) -> HostProbe {
        let probe = HostProbe::kernel();
        match mode {
            IsolationMode::Auto | IsolationMode::Tier(Tier::Bwrap) => {
                if probe.bwrap_trial().is_err() {
                    probe.tier1_trial();
                }
            }
            IsolationMode::Tier(Tier::Landlock) => {
                probe.tier1_trial();
            }
            IsolationMode::Tier(Tier::None) => {}
        }
        probe
    }

    /// bwrap's trial run, made now if it was not yet.
    fn bwrap_trial(&self) -> &Result<PathBuf, String> {
        self.bwrap.get_or_make(probe_bwrap)
    }

    /// The tier-1 helper's trial run, made now if it was not yet (not at all without the kernel
    /// features it needs).
    fn tier1_trial(&self) -> &Result<(), String> {
        self.tier1.get_or_make(|| match &self.landlock_abi {
            Ok(abi) if *abi < MIN_LANDLOCK_ABI => Err(format!(
                "Landlock ABI {abi} is older than {MIN_LANDLOCK_ABI} (Linux 6.2)"
            )),
            Ok(_) if !self.seccomp_filter => Err("seccomp filters are not available".into()),
            Ok(_) => probe_tier1(Path::new("/proc/self/exe")),
            Err(e) => Err(format!("Landlock: {e}")),
        })
    }

    /// Whether `tier` can be fully enforced here, or why not.
    pub fn check(&self, tier: Tier) -> Result<(), String> {
        match tier {
            Tier::None => Ok(()),
            Tier::Landlock => self.tier1_trial().clone(),
            Tier::Bwrap => self
                .bwrap_trial()
                .as_ref()
                .map(|_| ())
                .map_err(Clone::clone),
        }
    }

    /// The strongest tier that [`HostProbe::check`] accepts.
    pub fn strongest(&self) -> Tier {
        [Tier::Bwrap, Tier::Landlock]
            .into_iter()
            .find(|&t| self.check(t).is_ok())
            .unwrap_or(Tier::None)
    }

    /// Chooses the tier for `mode`. With `required`, a tier that cannot be fully enforced is an
    /// error (and `auto` must find something above tier 0); without it, an unavailable tier
    /// falls back to the strongest one below it, and the selection says why.
    pub fn select(&self, mode: IsolationMode, required: bool) -> Result<Selection, IsolationError> {
        match mode {
            IsolationMode::Auto => {
                let tier = self.strongest();
                if required && tier == Tier::None {
                    return Err(IsolationError::NothingAvailable {
                        probe: self.to_string(),
                    });
                }
                Ok(Selection {
                    tier,
                    fell_back: None,
                })
            }
            IsolationMode::Tier(tier) => match self.check(tier) {
                Ok(()) => Ok(Selection {
                    tier,
                    fell_back: None,
                }),
                Err(reason) if required => Err(IsolationError::Unavailable { tier, reason }),
                Err(reason) => {
                    let below = [Tier::Landlock, Tier::None]
                        .into_iter()
                        .find(|&t| t < tier && self.check(t).is_ok())
                        .unwrap_or(Tier::None);
                    Ok(Selection {
                        tier: below,
                        fell_back: Some(format!(
                            "{tier} was asked but cannot be used ({reason}); using {below}"
                        )),
                    })
                }
            },
        }
    }

    /// Whether tier 1 can also limit TCP to the egress proxy's port (Landlock ABI 4).
    pub fn tier1_net_rules(&self) -> bool {
        self.tier1_trial().is_ok()
            && self
                .landlock_abi
                .as_ref()
                .is_ok_and(|&abi| abi >= crate::tier1::NET_LANDLOCK_ABI)
    }

    /// The tier-1 sandbox of this binary, when its trial run passed.
    pub fn tier1_sandbox(&self, options: Tier1Options) -> Option<Tier1Sandbox> {
        self.tier1_trial()
            .as_ref()
            .ok()
            .map(|()| Tier1Sandbox::this_binary(options))
    }

    /// The bubblewrap sandbox to run tools in, when the probe found a working one.
    pub fn bwrap_sandbox(&self, options: Tier2Options) -> Option<BwrapSandbox> {
        self.bwrap_trial()
            .as_ref()
            .ok()
            .map(|program| BwrapSandbox {
                program: program.clone(),
                options,
            })
    }
}

impl fmt::Display for HostProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.landlock_abi {
            Ok(abi) => write!(f, "landlock: ABI {abi}")?,
            Err(e) => write!(f, "landlock: no ({e})")?,
        }
        write!(
            f,
            "; seccomp filters: {}",
            if self.seccomp_filter { "yes" } else { "no" }
        )?;
        match &self.user_namespaces {
            Ok(()) => write!(f, "; user namespaces: yes")?,
            Err(e) => write!(f, "; user namespaces: no ({e})")?,
        }
        match self.bwrap.made() {
            Some(Ok(p)) => write!(f, "; bwrap: {} (trial run passed)", p.display())?,
            Some(Err(e)) => write!(f, "; bwrap: unusable ({e})")?,
            None => match find_bwrap() {
                Some(p) => write!(f, "; bwrap: {} (trial run not needed)", p.display())?,
                None => write!(f, "; bwrap: not found")?,
            },
        }
        match self.tier1.made() {
            Some(Ok(())) => write!(f, "; tier 1 helper: trial run passed"),
            Some(Err(e)) => write!(f, "; tier 1 helper: unusable ({e})"),
            None => write!(f, "; tier 1 helper: trial run not needed"),
        }
    }
}

/// The kernel's Landlock ABI version, or why there is none.
pub fn landlock_abi() -> Result<u32, String> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_ulong = 1;
    // SAFETY: `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)` only returns
    // the ABI version (or an error); no memory is passed and no file descriptor is created.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if abi < 0 {
        let err = std::io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::ENOSYS) => "the kernel has no Landlock support".into(),
            Some(libc::EOPNOTSUPP) => "Landlock is disabled at boot (lsm=)".into(),
            _ => err.to_string(),
        });
    }
    u32::try_from(abi).map_err(|_| format!("unexpected Landlock ABI {abi}"))
}

fn probe_seccomp() -> bool {
    // The kernel lists the filter actions it supports only when it has SECCOMP_FILTER.
    std::fs::metadata("/proc/sys/kernel/seccomp/actions_avail").is_ok()
}

fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn probe_user_namespaces() -> Result<(), String> {
    if read_number("/proc/sys/user/max_user_namespaces") == Some(0) {
        return Err("user.max_user_namespaces is 0".into());
    }
    let root = rustix::process::geteuid().is_root();
    if !root && read_number("/proc/sys/kernel/unprivileged_userns_clone") == Some(0) {
        return Err("kernel.unprivileged_userns_clone is 0".into());
    }
    if !root && read_number("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == Some(1) {
        return Err("AppArmor restricts unprivileged user namespaces".into());
    }
    Ok(())
}

/// The first `bwrap` in [`BWRAP_DIRS`] that is a regular executable file.
pub fn find_bwrap() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    BWRAP_DIRS
        .iter()
        .map(|d| Path::new(d).join("bwrap"))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The program the trial run executes inside the sandbox.
fn true_program() -> Option<PathBuf> {
    ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Runs `helper` in tier-1 check mode: it applies a policy with nothing writable, checks that a
/// write and a UDP socket are refused, and prints [`CHECK_OK`]. A binary without the helper
/// dispatch (a test harness) rejects the marker as an unknown option and fails here.
fn probe_tier1(helper: &Path) -> Result<(), String> {
    let policy = Policy {
        check: true,
        ..Policy::default()
    };
    let out = Command::new(helper)
        .args(policy.to_args())
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{}: {e}", helper.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && stdout.starts_with(CHECK_OK) {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or("").trim();
    Err(format!(
        "the helper in {} failed its trial run ({}): {}",
        helper.display(),
        out.status,
        if first.is_empty() {
            "no output (is the helper dispatch missing from this binary?)"
        } else {
            first
        }
    ))
}

fn probe_bwrap() -> Result<PathBuf, String> {
    let program = find_bwrap().ok_or_else(|| {
        format!(
            "no bwrap in {} (apt-get install bubblewrap)",
            BWRAP_DIRS.join(", ")
        )
    })?;
    let truth = true_program().ok_or("no /bin/true to run as a trial")?;
    let sandbox = BwrapSandbox {
        program: program.clone(),
        options: Tier2Options::default(),
    };
    let cwd = std::env::temp_dir();
    let args = sandbox.args(
        &Binds {
            read_write: vec![cwd.clone()],
            read_only: Vec::new(),
        },
        &[],
        &cwd,
        &truth,
        &[],
    );
    let out = Command::new(&program)
        .args(&args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    if out.status.success() {
        Ok(program)
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or("").trim();
        Err(format!(
            "{} failed its trial run ({}): {first}",
            program.display(),
            out.status
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(bwrap: bool, landlock: bool) -> HostProbe {
        HostProbe {
            landlock_abi: if landlock { Ok(4) } else { Err("no".into()) },
            seccomp_filter: true,
            user_namespaces: Ok(()),
            bwrap: Trial::done(if bwrap {
                Ok("/usr/bin/bwrap".into())
            } else {
                Err("no bwrap".into())
            }),
            tier1: Trial::done(if landlock {
                Ok(())
            } else {
                Err("Landlock: no".into())
            }),
        }
    }

    #[test]
    fn modes_parse_and_print() {
        for (s, m) in [
            ("auto", IsolationMode::Auto),
            ("none", IsolationMode::Tier(Tier::None)),
            ("landlock", IsolationMode::Tier(Tier::Landlock)),
            ("BWRAP", IsolationMode::Tier(Tier::Bwrap)),
        ] {
            assert_eq!(s.parse::<IsolationMode>(), Ok(m));
        }
        assert!("docker".parse::<IsolationMode>().is_err());
        assert_eq!(Tier::Bwrap.to_string(), "tier 2 (bwrap)");
    }

    #[test]
    fn auto_takes_the_strongest_and_fails_closed_when_required() {
        let sel = probe(true, true).select(IsolationMode::Auto, true).unwrap();
        assert_eq!(sel.tier, Tier::Bwrap);
        // Without bwrap, auto takes tier 1; without either, tier 0 (an error when required).
        let sel = probe(false, true)
            .select(IsolationMode::Auto, true)
            .unwrap();
        assert_eq!(sel.tier, Tier::Landlock);
        let sel = probe(false, false)
            .select(IsolationMode::Auto, false)
            .unwrap();
        assert_eq!(sel.tier, Tier::None);
        let err = probe(false, false)
            .select(IsolationMode::Auto, true)
            .unwrap_err();
        assert!(
            matches!(err, IsolationError::NothingAvailable { .. }),
            "{err}"
        );
    }

    #[test]
    fn an_unavailable_tier_is_an_error_when_required_and_a_named_fallback_otherwise() {
        let p = probe(false, false);
        let err = p
            .select(IsolationMode::Tier(Tier::Bwrap), true)
            .unwrap_err();
        assert_eq!(
            err,
            IsolationError::Unavailable {
                tier: Tier::Bwrap,
                reason: "no bwrap".into()
            }
        );
        let sel = p.select(IsolationMode::Tier(Tier::Bwrap), false).unwrap();
        assert_eq!(sel.tier, Tier::None);
        assert!(sel.fell_back.unwrap().contains("no bwrap"));
        // Asked for tier 2 without it, not required: the next tier down that works.
        let sel = probe(false, true)
            .select(IsolationMode::Tier(Tier::Bwrap), false)
            .unwrap();
        assert_eq!(sel.tier, Tier::Landlock);
        let sel = probe(true, true)
            .select(IsolationMode::Tier(Tier::Landlock), true)
            .unwrap();
        assert_eq!(sel.tier, Tier::Landlock);
        let err = probe(true, false)
            .select(IsolationMode::Tier(Tier::Landlock), true)
            .unwrap_err();
        assert!(err.to_string().contains("tier 1 (landlock)"), "{err}");
    }

    #[test]
    fn a_worker_probe_makes_only_the_trials_its_mode_can_use() {
        // auto (and bwrap): tier 2's trial; tier 1's only when tier 2 failed.
        for mode in [IsolationMode::Auto, IsolationMode::Tier(Tier::Bwrap)] {
            let p = HostProbe::run_for(mode);
            let bwrap = p.bwrap.made().expect("tier 2's trial is made").clone();
            assert_eq!(
                p.tier1.made().is_some(),
                bwrap.is_err(),
                "{mode}: tier 1 is tried exactly when tier 2 failed: {p}"
            );
            if bwrap.is_ok() {
                assert!(
                    p.to_string()
                        .contains("tier 1 helper: trial run not needed"),
                    "{p}"
                );
            }
        }
        let p = HostProbe::run_for(IsolationMode::Tier(Tier::Landlock));
        assert!(p.tier1.made().is_some() && p.bwrap.made().is_none(), "{p}");
        let p = HostProbe::run_for(IsolationMode::Tier(Tier::None));
        assert!(p.tier1.made().is_none() && p.bwrap.made().is_none(), "{p}");
        assert!(
            p.to_string()
                .contains("tier 1 helper: trial run not needed"),
            "{p}"
        );
    }

    #[test]
    fn a_trial_left_out_is_made_when_a_check_asks_for_it() {
        let full = HostProbe::run();
        let p = HostProbe::run_for(IsolationMode::Tier(Tier::None));
        assert_eq!(p.check(Tier::Bwrap), full.check(Tier::Bwrap));
        assert_eq!(p.check(Tier::Landlock), full.check(Tier::Landlock));
        assert!(p.bwrap.made().is_some() && p.tier1.made().is_some());
        assert_eq!(p.strongest(), full.strongest());
        // A trial's outcome, once made, is kept: the checks agree without running it again.
        assert_eq!(p, full);
    }

    #[test]
    fn the_host_probe_runs_and_describes_itself() {
        let p = HostProbe::run();
        let text = p.to_string();
        println!("host probe: {text}");
        assert!(
            text.contains("landlock:") && text.contains("bwrap:") && text.contains("tier 1"),
            "{text}"
        );
    }
}
