//! The helper modes of the worker's binary: the worker starts its own executable with a marker
//! as the first argument, and [`run_if_requested`], called first thing in `main`, turns the
//! process into that helper instead of the worker. Today there is one mode, tier 1 (see
//! [`crate::tier1`]); each mode is one arm of the match in `dispatch`.
//!
//! A helper never returns to `main`: it `exec`s its program or exits. Its failures exit with
//! [`HELPER_EXIT_CODE`] and one line on stderr starting with [`HELPER_ERROR_PREFIX`], which the
//! worker turns into a tool error.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;

use crate::tier1::{CHECK_OK, HELPER_ERROR_PREFIX, HELPER_EXIT_CODE, Policy};

/// Becomes a helper when the process's arguments ask for one; returns normally otherwise. Call
/// it first in `main`, before any thread or runtime exists: Landlock and seccomp apply to the
/// calling thread only.
pub fn run_if_requested() {
    dispatch(std::env::args_os().collect());
}

/// As [`run_if_requested`], reading the arguments from `/proc/self/cmdline`: for test harnesses
/// that call it from a constructor, before the standard library has set up `args_os`.
pub fn run_if_requested_from_proc() {
    let Ok(raw) = std::fs::read("/proc/self/cmdline") else {
        return;
    };
    use std::os::unix::ffi::OsStringExt as _;
    let args: Vec<OsString> = raw
        .split(|&b| b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    // The kernel ends the list with a NUL, which leaves one empty word at the end.
    let args = match args.split_last() {
        Some((last, rest)) if last.is_empty() => rest.to_vec(),
        _ => args,
    };
    dispatch(args);
}

fn dispatch(args: Vec<OsString>) {
    match args.get(1) {
        Some(marker) if crate::tier1::is_marker(marker) => tier1_main(&args[2..]),
        _ => {}
    }
}

fn fail(reason: impl std::fmt::Display) -> ! {
    eprintln!("{HELPER_ERROR_PREFIX}{reason}");
    std::process::exit(HELPER_EXIT_CODE)
}

/// The tier-1 helper: restrict, then exec the program (or, for the probe, check and exit).
fn tier1_main(args: &[OsString]) -> ! {
    let (policy, program) = Policy::parse(args).unwrap_or_else(|e| fail(e));
    let abi = crate::probe::landlock_abi().unwrap_or_else(|e| fail(format!("Landlock: {e}")));
    let level = crate::fs_rules::restrict(&policy, abi).unwrap_or_else(|e| fail(e));
    crate::syscall_filter::install(policy.proxy_port.is_some()).unwrap_or_else(|e| fail(e));
    if policy.check {
        match self_check(&policy) {
            Ok(()) => {
                println!("{CHECK_OK} (Landlock ABI {level}, seccomp)");
                std::process::exit(0)
            }
            Err(e) => fail(e),
        }
    }
    let Some((prog, rest)) = program.split_first() else {
        fail("no program to run")
    };
    // `exec` only returns on failure. The environment and working directory are the ones the
    // worker gave this process.
    let err = std::process::Command::new(prog).args(rest).exec();
    fail(format!("cannot run {}: {err}", prog.to_string_lossy()))
}

/// The probe's trial: the restrictions are in place, not merely accepted.
fn self_check(policy: &Policy) -> Result<(), String> {
    // SAFETY: `socket` with integer arguments; the descriptor, if any, is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd >= 0 {
        // SAFETY: `fd` was just returned by `socket` and is closed once.
        unsafe { libc::close(fd) };
        return Err("seccomp did not stop a UDP socket".into());
    }
    let errno = std::io::Error::last_os_error().raw_os_error();
    if errno != Some(libc::EAFNOSUPPORT) {
        return Err(format!(
            "a UDP socket failed with {errno:?}, not EAFNOSUPPORT"
        ));
    }
    // Nothing is writable in the trial's policy: a directory in the temporary directory must be
    // refused by Landlock.
    if !policy.read_write.is_empty() {
        return Err("the trial policy must have no writable root".into());
    }
    let probe = std::env::temp_dir().join(format!("hands-tier1-check-{}", std::process::id()));
    match std::fs::create_dir(&probe) {
        Ok(()) => {
            let _ = std::fs::remove_dir(&probe);
            Err(format!(
                "Landlock did not stop creating {}",
                probe.display()
            ))
        }
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => Ok(()),
        Err(e) => Err(format!(
            "creating {} failed with {e}, not EACCES",
            probe.display()
        )),
    }
}

/// Installs [`run_if_requested_from_proc`] as a constructor of the test binary it is expanded
/// in, so that a libtest harness, whose `main` cannot be changed, serves as the tier-1 helper
/// of the tests it runs (`/proc/self/exe` is the test binary there). Production binaries call
/// [`run_if_requested`] from `main` instead.
#[macro_export]
macro_rules! helper_dispatch_for_tests {
    () => {
        #[used]
        #[unsafe(link_section = ".init_array")]
        static HANDS_SANDBOX_HELPER_DISPATCH: extern "C" fn() = {
            extern "C" fn dispatch() {
                $crate::helper::run_if_requested_from_proc();
            }
            dispatch
        };
    };
}
