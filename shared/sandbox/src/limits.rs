//! The operator's limit settings (`--limit-*` flags, `HANDS_LIMIT_*` variables) and the safe
//! defaults they start from, turned into the [`Rlimits`] every tool process gets.
//!
//! The defaults must bound a hostile command without breaking normal agent work:
//! - file size 4 GiB per file (T6): a runaway `yes > f` stops there instead of filling the disk,
//!   and no build artefact an agent makes in a session comes near it;
//! - open files 4096 (or the worker's own hard limit when lower, which could not be raised):
//!   more than most hosts' default soft limit of 1024, so nothing that ran before breaks;
//! - CPU time off: the wall-clock timeout of every call already bounds the CPU a command can
//!   use, and a compiler or test run legitimately burns many CPU seconds;
//! - address space off: `RLIMIT_AS` counts reserved, not used, memory, and JVMs, Go programs and
//!   node reserve gigabytes up front, so any cap low enough to matter breaks them;
//! - processes `auto`: [`DEFAULT_PROCESSES`] tasks per tool process tree, by the best mechanism
//!   this host allows (a pids cgroup, else `RLIMIT_NPROC` for a worker the kernel does not
//!   exempt from it, else none, with a warning): see [`crate::process_limit`]. A fork bomb is
//!   contained wherever the host allows it, and the start says plainly where it cannot be.

use rustix::process::{Resource, getrlimit};

use crate::Rlimits;
use crate::process_limit::{
    DEFAULT_PROCESSES, NprocTrial, ProcessLimitMechanism, WORKER_THREAD_RESERVE, nproc_trial,
    nproc_value, process_limit_mechanism,
};

/// Default `RLIMIT_FSIZE` of tool processes.
pub const DEFAULT_FILE_SIZE_BYTES: u64 = 4 << 30;
/// Default `RLIMIT_NOFILE` of tool processes (lowered to the worker's hard limit if that is
/// lower).
pub const DEFAULT_OPEN_FILES: u64 = 4096;

/// One limit as the operator gave it: `off`, or a value (or `auto`, for the process limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitSetting {
    Off,
    Value(u64),
    /// The default, chosen by what the host allows; only the process limit parses it (see
    /// [`LimitSetting::parse_processes`]), and for the others it is their default.
    Auto,
}

impl LimitSetting {
    /// A count or number of seconds: `4096`, or `off`.
    pub fn parse_count(s: &str) -> Result<LimitSetting, String> {
        Self::parse_with(s, |n| {
            n.parse::<u64>()
                .map_err(|_| format!("{n:?} is not a whole number (or `off`)"))
        })
    }

    /// The process limit: `auto` (the default), a count, or `off`.
    pub fn parse_processes(s: &str) -> Result<LimitSetting, String> {
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(LimitSetting::Auto);
        }
        Self::parse_count(s).map_err(|e| e.replace("(or `off`)", "(or `auto` or `off`)"))
    }

    /// A byte count: `1048576`, `512KiB`, `100MiB`, `4GiB`, or `off`.
    pub fn parse_bytes(s: &str) -> Result<LimitSetting, String> {
        Self::parse_with(s, |v| {
            let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
            let (num, unit) = v.split_at(split);
            let scale: u64 = match unit.trim() {
                "" | "B" => 1,
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                "GiB" => 1 << 30,
                _ => {
                    return Err(format!(
                        "{v:?} is not a size like 4GiB (units: none, KiB, MiB, GiB; or `off`)"
                    ));
                }
            };
            num.parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(scale))
                .ok_or_else(|| format!("{v:?} is not a size like 4GiB (or `off`)"))
        })
    }

    fn parse_with(
        s: &str,
        value: impl FnOnce(&str) -> Result<u64, String>,
    ) -> Result<LimitSetting, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(LimitSetting::Off);
        }
        match value(s)? {
            // Zero would make every tool fail at once (no file, no descriptor, no CPU): never
            // what an operator means, and `off` says "no limit".
            0 => Err("0 would stop every tool at once; use `off` for no limit".to_owned()),
            n => Ok(LimitSetting::Value(n)),
        }
    }
}

/// The limit settings; `None` is "not given": the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitSettings {
    pub file_size: Option<LimitSetting>,
    pub open_files: Option<LimitSetting>,
    pub cpu_seconds: Option<LimitSetting>,
    pub memory: Option<LimitSetting>,
    pub processes: Option<LimitSetting>,
}

impl LimitSettings {
    /// The limits tool processes get, checked against this worker's own hard limits: a tool
    /// process cannot be given more than the worker has (the spawn would fail with EPERM on
    /// every call), so an explicit value above it fails here, at start, naming the flag. The
    /// process limit goes to the mechanism [`process_limit_mechanism`] found (probed on the
    /// first call); an `RLIMIT_NPROC` value is tried once ([`nproc_trial`]). `auto` where
    /// nothing works logs one warning saying why, an explicit count fails.
    pub fn rlimits(&self) -> Result<Rlimits, String> {
        let mechanism = process_limit_mechanism();
        let mut rlimits = self.rlimits_under(|r| getrlimit(r).maximum, mechanism)?;
        let auto = matches!(self.processes, None | Some(LimitSetting::Auto));
        let mut dropped = None;
        if let Some(nproc) = rlimits.nproc {
            match after_trial(nproc, !auto, &nproc_trial(nproc))? {
                Ok(()) => {}
                Err(why) => {
                    rlimits.nproc = None;
                    dropped = Some(why);
                }
            }
        }
        if auto
            && let Some(warning) = process_limit_warning(mechanism, &rlimits, dropped.as_deref())
        {
            tracing::warn!(process_limit = %mechanism, "{warning}");
        }
        Ok(rlimits)
    }

    /// [`Self::rlimits`] with the worker's hard limits and the process-limit mechanism given.
    fn rlimits_under(
        &self,
        hard: impl Fn(Resource) -> Option<u64>,
        mechanism: &ProcessLimitMechanism,
    ) -> Result<Rlimits, String> {
        let pick = |setting: Option<LimitSetting>,
                    default: Option<u64>,
                    resource: Option<(Resource, &str)>|
         -> Result<Option<u64>, String> {
            let host = resource.and_then(|(r, _)| hard(r));
            match setting {
                Some(LimitSetting::Off) => Ok(None),
                None | Some(LimitSetting::Auto) => {
                    Ok(default.map(|d| host.map_or(d, |h| d.min(h))))
                }
                Some(LimitSetting::Value(v)) => match (host, resource) {
                    (Some(h), Some((_, flag))) if v > h => Err(format!(
                        "{flag}: {v} is above this worker's own hard limit {h}, which tool processes cannot exceed; raise the worker's limit or give a lower value"
                    )),
                    _ => Ok(Some(v)),
                },
            }
        };
        let cpu_seconds = pick(
            self.cpu_seconds,
            None,
            Some((
                Resource::Cpu,
                "--limit-cpu-seconds (HANDS_LIMIT_CPU_SECONDS)",
            )),
        )?;
        // The hard limit of RLIMIT_CPU is set a second above the value (see `Rlimits`), so the
        // value must stay below the worker's own.
        if let (Some(s), Some(h)) = (cpu_seconds, hard(Resource::Cpu))
            && s >= h
        {
            return Err(format!(
                "--limit-cpu-seconds (HANDS_LIMIT_CPU_SECONDS): {s} must be below this worker's own hard CPU limit {h}"
            ));
        }
        let (max_pids, nproc) = process_limit(self.processes, mechanism)?;
        Ok(Rlimits {
            file_size_bytes: pick(
                self.file_size,
                Some(DEFAULT_FILE_SIZE_BYTES),
                Some((Resource::Fsize, "--limit-file-size (HANDS_LIMIT_FILE_SIZE)")),
            )?,
            max_open_files: pick(
                self.open_files,
                Some(DEFAULT_OPEN_FILES),
                Some((
                    Resource::Nofile,
                    "--limit-open-files (HANDS_LIMIT_OPEN_FILES)",
                )),
            )?,
            cpu_seconds,
            address_space_bytes: pick(
                self.memory,
                None,
                Some((Resource::As, "--limit-memory (HANDS_LIMIT_MEMORY)")),
            )?,
            max_pids,
            nproc,
            ..Rlimits::default()
        })
    }
}

/// The flag the process limit comes from, for errors.
const PROCESSES_FLAG: &str = "--limit-processes (HANDS_LIMIT_PROCESSES)";

/// What the start does after the trial of the `RLIMIT_NPROC` value `nproc`: keep it (`Ok(Ok)`),
/// drop it for `auto`, saying why (`Ok(Err)`), or fail an `explicit` count (`Err`). A refused
/// trial fork means the uid already runs that many tasks (others' containers sharing the uid
/// and user namespace count too): every fork of every tool would fail.
fn after_trial(
    nproc: u64,
    explicit: bool,
    trial: &NprocTrial,
) -> Result<Result<(), String>, String> {
    let why = match trial {
        NprocTrial::Forks => return Ok(Ok(())),
        NprocTrial::Refused => format!(
            "a trial process under RLIMIT_NPROC {nproc} could not fork: this user already runs \
             that many processes and threads, counting ones outside this container (the kernel \
             counts every container sharing the uid), so tools could start nothing"
        ),
        NprocTrial::Failed(e) => format!("RLIMIT_NPROC {nproc} could not be tried: {e}"),
    };
    if explicit {
        Err(format!(
            "{PROCESSES_FLAG}: cannot be enforced here: {why}; use `auto` or `off`, run the \
             worker as a uid of its own, or bound it from outside (see the README, Isolation)"
        ))
    } else {
        Ok(Err(why))
    }
}

/// Where the pids cgroup is used, and what bounds a fork bomb elsewhere, for the warnings.
const PIDS_CGROUP_HOSTS: &str = "a pids cgroup per tool is used only where the worker can \
     create one: the cgroup v1 `pids` hierarchy writable by the worker, or a cgroup v2 cgroup \
     whose cgroup.subtree_control already lists pids (e.g. the v2 root); not yet on other cgroup \
     v2 hosts (most current distributions, systemd `Delegate=`). There, bound the worker from \
     outside: the container runtime's pids limit (`docker run --pids-limit 4096`), the \
     Kubernetes pod pids limit, systemd `TasksMax=` on the unit";

/// The start's warning when `auto` gives tools no process limit, or less than the default:
/// why, and what to do, in words fitting the worker (root or not). `dropped`: why the trial
/// dropped the `RLIMIT_NPROC` value.
fn process_limit_warning(
    mechanism: &ProcessLimitMechanism,
    rlimits: &Rlimits,
    dropped: Option<&str>,
) -> Option<String> {
    if rlimits.max_pids.is_some() {
        return None;
    }
    match (mechanism, rlimits.nproc) {
        (ProcessLimitMechanism::Nproc { uid_tasks, .. }, Some(nproc))
            if nproc.saturating_sub(*uid_tasks) < DEFAULT_PROCESSES =>
        {
            Some(format!(
                "the fork-bomb limit is RLIMIT_NPROC {nproc}, which leaves tools room for only {} \
                 processes and threads (the default is {DEFAULT_PROCESSES}): the worker's own \
                 RLIMIT_NPROC less {WORKER_THREAD_RESERVE} kept for the worker allows no more; \
                 raise the worker's limit (`ulimit -u`, systemd `LimitNPROC=`) for more. Also: \
                 {PIDS_CGROUP_HOSTS}",
                nproc.saturating_sub(*uid_tasks)
            ))
        }
        (_, Some(_)) => None,
        (ProcessLimitMechanism::Nproc { .. }, None) => Some(format!(
            "no fork-bomb limit for tool processes: a tool can start processes until the host \
             runs out. RLIMIT_NPROC cannot be used: {}. {PIDS_CGROUP_HOSTS}; or raise the \
             worker's own RLIMIT_NPROC (`ulimit -u`, systemd `LimitNPROC=`), or run it as a uid \
             of its own",
            dropped.unwrap_or(
                "the worker's own RLIMIT_NPROC, less the part kept for the worker, leaves no room"
            )
        )),
        (_, None) => Some(format!(
            "no fork-bomb limit for tool processes: a tool can start processes until the host \
             runs out. {PIDS_CGROUP_HOSTS}; or run the worker as a user other than root, for \
             RLIMIT_NPROC"
        )),
    }
}

/// The process limit as (`max_pids`, `nproc`): a pids cgroup's count, or the
/// `RLIMIT_NPROC` of tool processes. `auto` takes [`DEFAULT_PROCESSES`] by whatever `mechanism`
/// allows (none where nothing does, and less than the default where the worker's own hard
/// `RLIMIT_NPROC` leaves less room); an explicit count that cannot be enforced as asked fails
/// the start, naming the flag, rather than every tool call later.
fn process_limit(
    setting: Option<LimitSetting>,
    mechanism: &ProcessLimitMechanism,
) -> Result<(Option<u64>, Option<u64>), String> {
    let (per_tree, explicit) = match setting {
        Some(LimitSetting::Off) => return Ok((None, None)),
        None | Some(LimitSetting::Auto) => (DEFAULT_PROCESSES, false),
        Some(LimitSetting::Value(n)) => (n, true),
    };
    match mechanism {
        ProcessLimitMechanism::Cgroup => Ok((Some(per_tree), None)),
        ProcessLimitMechanism::Nproc { uid_tasks, own, .. } => {
            match nproc_value(*uid_tasks, per_tree, *own) {
                Ok(nproc) => Ok((None, Some(nproc))),
                // `auto` takes what room there is (Lambda: its 1024 less the worker's reserve).
                Err(ceiling) if !explicit && ceiling.room > 0 => {
                    Ok((None, Some(uid_tasks + ceiling.room)))
                }
                // The uid already runs within the reserve of its hard limit: nothing to give tools
                // (the start's warning names the mechanism, with the count and the limit).
                Err(_) if !explicit => Ok((None, None)),
                Err(ceiling) => Err(format!(
                    "{PROCESSES_FLAG}: {per_tree} tasks cannot be enforced here: with no pids cgroup it is RLIMIT_NPROC, which counts every task of this worker's user ({uid_tasks} at start), and this worker's own limit {} less {WORKER_THREAD_RESERVE} kept for the worker leaves room for {}; give at most that, `auto`, or raise the worker's limit",
                    ceiling.own, ceiling.room
                )),
            }
        }
        ProcessLimitMechanism::Unavailable(why) if explicit => Err(format!(
            "{PROCESSES_FLAG}: {per_tree} cannot be enforced on this host: {why}; give the worker a writable pids cgroup (the cgroup v1 pids hierarchy, or a cgroup v2 cgroup whose cgroup.subtree_control lists pids), run it as a user other than root, or use `auto` or `off` and bound the worker from outside (`docker run --pids-limit`, the Kubernetes pod pids limit, systemd `TasksMax=`)"
        )),
        ProcessLimitMechanism::Unavailable(_) => Ok((None, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CGROUP: &ProcessLimitMechanism = &ProcessLimitMechanism::Cgroup;

    #[test]
    fn settings_parse_with_units_and_off() {
        assert_eq!(
            LimitSetting::parse_bytes("4GiB"),
            Ok(LimitSetting::Value(4 << 30))
        );
        assert_eq!(
            LimitSetting::parse_bytes("512KiB"),
            Ok(LimitSetting::Value(512 << 10))
        );
        assert_eq!(
            LimitSetting::parse_bytes("1000"),
            Ok(LimitSetting::Value(1000))
        );
        assert_eq!(LimitSetting::parse_bytes(" OFF "), Ok(LimitSetting::Off));
        assert_eq!(LimitSetting::parse_count("64"), Ok(LimitSetting::Value(64)));
        for bad in ["4GB", "lots", "", "-1", "99999999999999999999GiB"] {
            assert!(LimitSetting::parse_bytes(bad).is_err(), "{bad}");
        }
        assert!(LimitSetting::parse_count("1.5").is_err());
        let zero = LimitSetting::parse_count("0").unwrap_err();
        assert!(zero.contains("off"), "{zero}");
        // The process limit also takes `auto`; the others do not.
        assert_eq!(
            LimitSetting::parse_processes(" Auto "),
            Ok(LimitSetting::Auto)
        );
        assert_eq!(
            LimitSetting::parse_processes("512"),
            Ok(LimitSetting::Value(512))
        );
        assert_eq!(LimitSetting::parse_processes("off"), Ok(LimitSetting::Off));
        let bad = LimitSetting::parse_processes("many").unwrap_err();
        assert!(bad.contains("`auto`"), "{bad}");
        assert!(LimitSetting::parse_processes("0").is_err());
        assert!(LimitSetting::parse_count("auto").is_err());
    }

    #[test]
    fn defaults_bound_file_size_open_files_and_processes() {
        let r = LimitSettings::default()
            .rlimits_under(|_| None, CGROUP)
            .unwrap();
        assert_eq!(r.file_size_bytes, Some(DEFAULT_FILE_SIZE_BYTES));
        assert_eq!(r.max_open_files, Some(DEFAULT_OPEN_FILES));
        assert_eq!(
            (r.cpu_seconds, r.address_space_bytes, r.nproc),
            (None, None, None)
        );
        assert_eq!(r.max_pids, Some(DEFAULT_PROCESSES));
        assert_eq!(r.core_bytes, Rlimits::default().core_bytes);
    }

    fn nproc(uid_tasks: u64, own: Option<u64>) -> ProcessLimitMechanism {
        ProcessLimitMechanism::Nproc {
            uid: 1000,
            uid_tasks,
            own,
        }
    }

    fn processes(
        setting: Option<LimitSetting>,
        mechanism: &ProcessLimitMechanism,
    ) -> Result<(Option<u64>, Option<u64>), String> {
        LimitSettings {
            processes: setting,
            ..LimitSettings::default()
        }
        .rlimits_under(|_| None, mechanism)
        .map(|r| (r.max_pids, r.nproc))
    }

    #[test]
    fn the_process_limit_goes_to_the_mechanism_the_host_allows() {
        let none = ProcessLimitMechanism::Unavailable("root, no cgroup".into());
        let auto = [None, Some(LimitSetting::Auto)];
        for setting in auto {
            assert_eq!(processes(setting, CGROUP), Ok((Some(1024), None)));
            // Not root: RLIMIT_NPROC on top of the uid's tasks at start.
            assert_eq!(processes(setting, &nproc(30, None)), Ok((None, Some(1054))));
            // Below the worker's hard limit less the reserve (Lambda's 1024).
            assert_eq!(
                processes(setting, &nproc(30, Some(1024))),
                Ok((None, Some(1024 - WORKER_THREAD_RESERVE)))
            );
            // No room left at all, or no mechanism: no limit (and a warning), not a failure.
            assert_eq!(
                processes(setting, &nproc(1000, Some(1024))),
                Ok((None, None))
            );
            assert_eq!(processes(setting, &none), Ok((None, None)));
        }
        let n = Some(LimitSetting::Value(64));
        assert_eq!(processes(n, CGROUP), Ok((Some(64), None)));
        assert_eq!(processes(n, &nproc(30, Some(1024))), Ok((None, Some(94))));
        for mechanism in [CGROUP, &nproc(30, Some(1024)), &none] {
            assert_eq!(
                processes(Some(LimitSetting::Off), mechanism),
                Ok((None, None))
            );
        }
        // An explicit count that cannot be enforced fails the start, naming the flag.
        let err = processes(n, &none).unwrap_err();
        assert!(
            err.starts_with("--limit-processes (HANDS_LIMIT_PROCESSES): 64 cannot be enforced")
                && err.contains("root, no cgroup"),
            "{err}"
        );
        let err = processes(Some(LimitSetting::Value(1024)), &nproc(30, Some(1024))).unwrap_err();
        let room = 1024 - WORKER_THREAD_RESERVE - 30;
        assert!(
            err.starts_with("--limit-processes (HANDS_LIMIT_PROCESSES): 1024")
                && err.contains(&format!("leaves room for {room}")),
            "{err}"
        );
    }

    #[test]
    fn a_refused_trial_drops_auto_and_fails_an_explicit_count() {
        assert_eq!(after_trial(1054, false, &NprocTrial::Forks), Ok(Ok(())));
        assert_eq!(after_trial(1054, true, &NprocTrial::Forks), Ok(Ok(())));
        let why = after_trial(1054, false, &NprocTrial::Refused)
            .unwrap()
            .unwrap_err();
        assert!(
            why.contains("RLIMIT_NPROC 1054 could not fork")
                && why.contains("outside this container"),
            "{why}"
        );
        let err = after_trial(94, true, &NprocTrial::Refused).unwrap_err();
        assert!(err.starts_with(PROCESSES_FLAG), "{err}");
        let why = after_trial(94, false, &NprocTrial::Failed("no fork".into()))
            .unwrap()
            .unwrap_err();
        assert!(why.contains("no fork"), "{why}");
    }

    #[test]
    fn the_warning_says_why_and_fits_the_worker() {
        let none = ProcessLimitMechanism::Unavailable("root, no cgroup".into());
        let with = |max_pids, nproc| Rlimits {
            max_pids,
            nproc,
            ..Rlimits::default()
        };
        assert_eq!(
            process_limit_warning(CGROUP, &with(Some(1024), None), None),
            None
        );
        assert_eq!(
            process_limit_warning(&nproc(30, None), &with(None, Some(1054)), None),
            None
        );
        // Root without a cgroup: where the cgroup works and what bounds the worker otherwise.
        let root = process_limit_warning(&none, &with(None, None), None).unwrap();
        for words in [
            "cgroup v1 `pids` hierarchy",
            "subtree_control",
            "--pids-limit",
            "TasksMax=",
            "other than root",
        ] {
            assert!(root.contains(words), "{words}: {root}");
        }
        // Not root: no advice to stop being root; the reason (no room, or the refused trial).
        let full =
            process_limit_warning(&nproc(1000, Some(1024)), &with(None, None), None).unwrap();
        assert!(
            full.contains("leaves no room")
                && full.contains("LimitNPROC")
                && !full.contains("other than root"),
            "{full}"
        );
        let refused =
            process_limit_warning(&nproc(30, None), &with(None, None), Some("could not fork"))
                .unwrap();
        assert!(refused.contains("could not fork"), "{refused}");
        // Room below the default (Lambda): said, not silent.
        let lambda = process_limit_warning(
            &nproc(30, Some(1024)),
            &with(None, Some(1024 - WORKER_THREAD_RESERVE)),
            None,
        )
        .unwrap();
        assert!(
            lambda.contains(&format!(
                "room for only {}",
                1024 - WORKER_THREAD_RESERVE - 30
            )),
            "{lambda}"
        );
    }

    #[test]
    fn a_default_above_the_workers_hard_limit_is_lowered_to_it() {
        let hard = |r| (r == Resource::Nofile).then_some(1024);
        let r = LimitSettings::default()
            .rlimits_under(hard, CGROUP)
            .unwrap();
        assert_eq!(r.max_open_files, Some(1024));
        assert_eq!(r.file_size_bytes, Some(DEFAULT_FILE_SIZE_BYTES));
    }

    #[test]
    fn explicit_values_are_taken_or_refused_above_the_workers_hard_limit() {
        let settings = LimitSettings {
            file_size: Some(LimitSetting::Off),
            open_files: Some(LimitSetting::Value(256)),
            cpu_seconds: Some(LimitSetting::Value(30)),
            memory: Some(LimitSetting::Value(1 << 30)),
            processes: Some(LimitSetting::Value(128)),
        };
        let r = settings.rlimits_under(|_| None, CGROUP).unwrap();
        assert_eq!(r.file_size_bytes, None);
        assert_eq!(r.max_open_files, Some(256));
        assert_eq!(r.cpu_seconds, Some(30));
        assert_eq!(r.address_space_bytes, Some(1 << 30));
        assert_eq!(r.max_pids, Some(128));

        let high = LimitSettings {
            open_files: Some(LimitSetting::Value(5000)),
            ..LimitSettings::default()
        };
        let err = high
            .rlimits_under(|r| (r == Resource::Nofile).then_some(4096), CGROUP)
            .unwrap_err();
        assert!(
            err.contains("--limit-open-files (HANDS_LIMIT_OPEN_FILES): 5000")
                && err.contains("4096"),
            "{err}"
        );
        // The CPU hard limit goes a second above the value, so the value must stay below.
        let cpu = LimitSettings {
            cpu_seconds: Some(LimitSetting::Value(60)),
            ..LimitSettings::default()
        };
        let err = cpu
            .rlimits_under(|r| (r == Resource::Cpu).then_some(60), CGROUP)
            .unwrap_err();
        assert!(err.contains("HANDS_LIMIT_CPU_SECONDS): 60"), "{err}");
        assert!(
            cpu.rlimits_under(|r| (r == Resource::Cpu).then_some(61), CGROUP)
                .is_ok()
        );
    }
}
