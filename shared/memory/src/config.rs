//! Operator settings (`--memory`, `--memory-sync-interval`, `--memory-sync-deletions`) and the
//! reference's constants.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The reference's default sync cadence.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(15);
/// Anything faster would list every store too often.
pub const MIN_SYNC_INTERVAL: Duration = Duration::from_secs(5);
/// Bound on each teardown pass (final sync, then flush).
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a file must stay missing before its server delete goes out.
pub const DELETE_CORROBORATION: Duration = Duration::from_secs(30);
/// At most this many stores per session (§9.7).
pub const MAX_STORES: usize = 8;

/// Whether a locally deleted file may delete its server memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeleteMode {
    #[default]
    Enabled,
    /// The same checks, but only a log line instead of the delete.
    LogOnly,
    Disabled,
}

impl FromStr for DeleteMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "enabled" => Ok(DeleteMode::Enabled),
            "log_only" => Ok(DeleteMode::LogOnly),
            "disabled" => Ok(DeleteMode::Disabled),
            other => Err(format!(
                "expected enabled, log_only or disabled, got {other:?}"
            )),
        }
    }
}

impl fmt::Display for DeleteMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeleteMode::Enabled => "enabled",
            DeleteMode::LogOnly => "log_only",
            DeleteMode::Disabled => "disabled",
        })
    }
}

/// How the worker handles memory stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryConfig {
    /// `--memory off`: sessions run without their stores (logged).
    pub enabled: bool,
    pub sync_interval: Duration,
    pub deletions: DeleteMode,
    /// Tests shorten it; operators have no flag for it (the reference has none either).
    pub delete_corroboration: Duration,
    pub flush_timeout: Duration,
    /// Entries looked at per walk of a store folder ([`crate::MAX_WALK_ENTRIES`]); tests
    /// shorten it, operators have no flag for it.
    pub walk_cap: usize,
    /// Whether tool code runs at isolation tier 0, where only file modes keep it from writing
    /// into a read-only store and a root worker's tools ignore them: a root worker then warns
    /// about each read-only store. Tiers 1 and 2 make read-only stores read-only themselves
    /// (Landlock, a read-only bind), so the worker clears it there. On by default: warn when the
    /// tier is unknown.
    pub file_modes_only: bool,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            enabled: true,
            sync_interval: DEFAULT_SYNC_INTERVAL,
            deletions: DeleteMode::Enabled,
            delete_corroboration: DELETE_CORROBORATION,
            flush_timeout: FLUSH_TIMEOUT,
            walk_cap: crate::scan::MAX_WALK_ENTRIES,
            file_modes_only: true,
        }
    }
}

/// Parses a sync interval (`15s`, `500ms`, `2m`, plain seconds), refusing anything below the
/// 5 s floor.
pub fn parse_sync_interval(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (use e.g. 15s)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("unknown unit in {s:?} (use ms, s or m)")),
    };
    // NaN is neither finite nor at least the floor.
    if !secs.is_finite() || secs < MIN_SYNC_INTERVAL.as_secs_f64() {
        return Err(format!(
            "the memory sync interval must be at least {}s, got {s}",
            MIN_SYNC_INTERVAL.as_secs()
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_and_modes() {
        assert_eq!(parse_sync_interval("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_sync_interval("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_sync_interval("1m"), Ok(Duration::from_secs(60)));
        for bad in ["4s", "4999ms", "0", "x", "5h", "NaN"] {
            assert!(parse_sync_interval(bad).is_err(), "{bad}");
        }
        assert_eq!("log_only".parse(), Ok(DeleteMode::LogOnly));
        assert!("yes".parse::<DeleteMode>().is_err());
        assert_eq!(DeleteMode::Disabled.to_string(), "disabled");
    }
}
