//! For tests only (a dev-dependency): loopback ports for child processes ([`child_port`]), and
//! running one test of the running test binary again as another uid ([`rerun_as`]). Root
//! bypasses file modes and `RLIMIT_NPROC`, so a test of either that runs as root would pass
//! without testing anything; as root, such a test runs itself again as a uid the limits bind,
//! and the parent checks the child ran that test and passed.

mod ports;
pub use ports::child_port;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::time::Duration;

/// Set (to the uid) in the child [`rerun_as`] starts: a test that finds it runs its scenario.
pub const RERUN_VAR: &str = "HANDS_TEST_RERUN_AS";

/// The uid of `nobody`, for tests of file modes.
pub const NOBODY: u32 = 65534;

/// Whether this process is the child [`rerun_as`] started. Panics if it is, yet still root:
/// the switch did not happen, and the scenario would test nothing.
pub fn is_rerun() -> bool {
    let rerun = std::env::var_os(RERUN_VAR).is_some();
    assert!(
        !(rerun && rustix::process::geteuid().is_root()),
        "the child meant to run as uid {:?} is still root",
        std::env::var_os(RERUN_VAR)
    );
    rerun
}

/// What the child printed.
#[derive(Debug)]
pub struct Rerun {
    pub stdout: String,
    pub stderr: String,
}

/// Runs the test `name` (its full path in this binary, e.g. `module::tests::name`) again,
/// alone, as `uid` (and gid), with [`RERUN_VAR`] and `envs` set, `TMPDIR=/tmp` and `/` as its
/// directory; from a copy of this binary in a directory that uid can enter (the target
/// directory may be under a path only root may traverse, a CI checkout in `/root` for one).
/// Panics, with the child's output, unless it ran exactly that one test and it passed.
pub fn rerun_as(uid: u32, name: &str, envs: &[(&str, &OsStr)]) -> Rerun {
    let copy_dir = tempfile::Builder::new()
        .prefix("hands-rerun-as-")
        .tempdir()
        .unwrap_or_else(|e| panic!("no directory for the copy of the test binary: {e}"));
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("no current exe: {e}"));
    let copy = copy_dir
        .path()
        .join(exe.file_name().unwrap_or(OsStr::new("test")));
    let open = |path: &std::path::Path| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    };
    open(copy_dir.path());
    std::fs::copy(&exe, &copy).unwrap_or_else(|e| panic!("copying {}: {e}", exe.display()));
    open(&copy);
    let run = || {
        std::process::Command::new(&copy)
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(RERUN_VAR, uid.to_string())
            .envs(envs.iter().copied())
            .env("TMPDIR", "/tmp")
            .current_dir("/")
            .uid(uid)
            .gid(uid)
            .output()
    };
    // A process another test forks while the copy is being written holds it open for writing
    // until that process execs: ETXTBSY, for a moment.
    let mut out = run();
    for _ in 0..50 {
        match &out {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(Duration::from_millis(100));
                out = run();
            }
            _ => break,
        }
    }
    let out = out.unwrap_or_else(|e| {
        panic!(
            "cannot run {} as uid {uid} (it must be executable by that user): {e}",
            copy.display()
        )
    });
    let rerun = Rerun {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        out.status.success(),
        "{name} as uid {uid}: {}\n{}\n{}",
        out.status,
        rerun.stdout,
        rerun.stderr
    );
    // The child ran exactly that test, not zero tests.
    assert!(
        rerun.stdout.contains("1 passed"),
        "{name} as uid {uid} ran no test:\n{}",
        rerun.stdout
    );
    rerun
}
