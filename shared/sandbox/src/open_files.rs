//! The worker's own open-files limit, raised at start.
//!
//! A worker holds descriptors for other processes' connections: every connection tool code makes
//! through the egress proxy costs it two (tiers 0 and 1: the proxy's accepted socket and its
//! connection upstream) or four (tier 2, plus the relay's accepted socket and its connection to
//! the proxy), on top of each session's pipes and files. Many hosts start processes with a soft
//! `RLIMIT_NOFILE` of 1024 and a much higher hard limit, kept low only for old programs that
//! `select()` on descriptors below 1024; the worker uses none. So it raises its soft limit to
//! the hard one, as most servers do, and never fails the start over it (a lower limit only means
//! fewer connections at once). Tool processes do not inherit the raised limit where the toolset
//! sets its own (`Rlimits::max_open_files`).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The worker's soft open-files limit after [`raise_open_files_limit`], and why it is not
/// higher when it could not be raised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenFilesLimit {
    /// `None`: unlimited.
    pub soft: Option<u64>,
    /// Set when raising was tried and refused.
    pub not_raised: Option<String>,
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (to the kernel's `nr_open` when
/// the hard limit is unlimited, which `setrlimit` would refuse) and logs the result at debug.
/// Call once at start, after logging is set up.
pub fn raise_open_files_limit() -> OpenFilesLimit {
    let before = getrlimit(Resource::Nofile);
    let nr_open = || {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
    };
    let result = match raised_soft(before.current, before.maximum, nr_open) {
        None => OpenFilesLimit {
            soft: before.current,
            not_raised: None,
        },
        Some(soft) => match setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(soft),
                maximum: before.maximum,
            },
        ) {
            Ok(()) => OpenFilesLimit {
                soft: Some(soft),
                not_raised: None,
            },
            Err(e) => OpenFilesLimit {
                soft: before.current,
                not_raised: Some(format!("raising it to {soft} was refused: {e}")),
            },
        },
    };
    tracing::debug!(
        soft = ?result.soft,
        hard = ?before.maximum,
        not_raised = result.not_raised.as_deref().unwrap_or(""),
        "open-files limit of the worker"
    );
    result
}

/// The soft limit to set, if any: the hard limit when the soft one is below it; with an
/// unlimited hard limit, `nr_open` (the most the kernel allows) when it is known and higher.
/// `None` (unlimited) soft limits are left alone.
fn raised_soft(
    soft: Option<u64>,
    hard: Option<u64>,
    nr_open: impl FnOnce() -> Option<u64>,
) -> Option<u64> {
    let soft = soft?;
    let target = match hard {
        Some(hard) => hard,
        None => nr_open()?,
    };
    (target > soft).then_some(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_goes_up_to_the_hard_one_and_never_down() {
        let never = || -> Option<u64> { panic!("nr_open read with a finite hard limit") };
        assert_eq!(raised_soft(Some(1024), Some(524_288), never), Some(524_288));
        assert_eq!(raised_soft(Some(4096), Some(4096), never), None);
        // A soft limit above the hard one cannot exist, but is never lowered either.
        assert_eq!(raised_soft(Some(8192), Some(4096), never), None);
        // Unlimited soft: left alone.
        assert_eq!(raised_soft(None, None, || Some(1 << 20)), None);
        // Unlimited hard: nr_open, when readable and higher.
        assert_eq!(
            raised_soft(Some(1024), None, || Some(1 << 20)),
            Some(1 << 20)
        );
        assert_eq!(raised_soft(Some(1024), None, || None), None);
        assert_eq!(raised_soft(Some(1 << 20), None, || Some(1024)), None);
    }

    /// On this process: the soft limit ends at the hard one (the test harness runs each test in
    /// a thread of one process, and every test that opens files only gains from this).
    #[test]
    fn this_process_ends_at_its_hard_limit() {
        let got = raise_open_files_limit();
        let now = getrlimit(Resource::Nofile);
        assert_eq!(got.soft, now.current);
        if now.maximum.is_some() && got.not_raised.is_none() {
            assert_eq!(now.current, now.maximum);
        }
    }
}
