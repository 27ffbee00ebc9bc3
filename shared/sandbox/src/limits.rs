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
//! - processes off: the only per-tree mechanism is a pids cgroup ([`crate::PidsCgroup`]), which
//!   needs a delegated cgroup the worker can write (not on Lambda, nor in most unprivileged
//!   containers) and fails every spawn closed where there is none. (`RLIMIT_NPROC` is never
//!   used for this: it counts every task of the uid, the worker's own threads included, and
//!   does not apply to root.)

use rustix::process::{Resource, getrlimit};

use crate::Rlimits;

/// Default `RLIMIT_FSIZE` of tool processes.
pub const DEFAULT_FILE_SIZE_BYTES: u64 = 4 << 30;
/// Default `RLIMIT_NOFILE` of tool processes (lowered to the worker's hard limit if that is
/// lower).
pub const DEFAULT_OPEN_FILES: u64 = 4096;

/// One limit as the operator gave it: `off`, or a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitSetting {
    Off,
    Value(u64),
}

impl LimitSetting {
    /// A count or number of seconds: `4096`, or `off`.
    pub fn parse_count(s: &str) -> Result<LimitSetting, String> {
        Self::parse_with(s, |n| {
            n.parse::<u64>()
                .map_err(|_| format!("{n:?} is not a whole number (or `off`)"))
        })
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
    /// every call), so an explicit value above it fails here, at start, naming the flag.
    pub fn rlimits(&self) -> Result<Rlimits, String> {
        self.rlimits_under(|r| getrlimit(r).maximum)
    }

    /// [`Self::rlimits`] with the worker's hard limits given (`None` = unlimited).
    fn rlimits_under(&self, hard: impl Fn(Resource) -> Option<u64>) -> Result<Rlimits, String> {
        let pick = |setting: Option<LimitSetting>,
                    default: Option<u64>,
                    resource: Option<(Resource, &str)>|
         -> Result<Option<u64>, String> {
            let host = resource.and_then(|(r, _)| hard(r));
            match setting {
                Some(LimitSetting::Off) => Ok(None),
                None => Ok(default.map(|d| host.map_or(d, |h| d.min(h)))),
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
            // A pids cgroup, not an rlimit: the worker's own limits say nothing about it.
            max_pids: pick(self.processes, None, None)?,
            ..Rlimits::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn defaults_bound_file_size_and_open_files_only() {
        let r = LimitSettings::default().rlimits_under(|_| None).unwrap();
        assert_eq!(r.file_size_bytes, Some(DEFAULT_FILE_SIZE_BYTES));
        assert_eq!(r.max_open_files, Some(DEFAULT_OPEN_FILES));
        assert_eq!(
            (
                r.cpu_seconds,
                r.address_space_bytes,
                r.max_pids,
                r.max_processes
            ),
            (None, None, None, None)
        );
        assert_eq!(r.core_bytes, Rlimits::default().core_bytes);
    }

    #[test]
    fn a_default_above_the_workers_hard_limit_is_lowered_to_it() {
        let hard = |r| (r == Resource::Nofile).then_some(1024);
        let r = LimitSettings::default().rlimits_under(hard).unwrap();
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
        let r = settings.rlimits_under(|_| None).unwrap();
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
            .rlimits_under(|r| (r == Resource::Nofile).then_some(4096))
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
            .rlimits_under(|r| (r == Resource::Cpu).then_some(60))
            .unwrap_err();
        assert!(err.contains("HANDS_LIMIT_CPU_SECONDS): 60"), "{err}");
        assert!(
            cpu.rlimits_under(|r| (r == Resource::Cpu).then_some(61))
                .is_ok()
        );
    }
}
