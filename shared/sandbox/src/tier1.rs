//! Tier 1: Landlock and seccomp, applied by a helper mode of the worker's own binary.
//!
//! The worker does not restrict itself (it must keep writing its outbox, talking to the control
//! plane, reading its secrets). Instead every tool process is started as
//! `/proc/self/exe --hands-tier1-helper <policy> -- <program> <args>`: the same binary, which
//! [`crate::helper::run_if_requested`] turns into the helper before anything else runs. The
//! helper sets `no_new_privs`, applies the Landlock ruleset and the seccomp filters the policy
//! describes to itself, and then `exec`s the tool program in place (same pid, so the sweep and
//! the process group see the tool, not a wrapper). Restrictions of both kinds are inherited by
//! everything the tool starts and can never be lifted.
//!
//! `/proc/self/exe` is used literally rather than resolved: in the forked child it names the
//! worker's own executable even when the file on disk was replaced or deleted by an upgrade, so
//! the helper always speaks the same policy format as the worker that wrote it.
//!
//! What it must never do: run the tool when any restriction failed to apply (the helper exits
//! with [`HELPER_EXIT_CODE`] and one line on stderr instead), or pass a path through a shell.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::bwrap::{Binds, DEFAULT_HIDDEN};

/// The first argument that turns the binary into the tier-1 helper. It starts with `--` so that a
/// binary without the dispatch (a test harness, an older build) rejects it as an unknown option
/// instead of treating it as something to run.
pub const TIER1_MARKER: &str = "--hands-tier1-helper";

/// The exit status of a helper that could not apply the policy or start the program. A shell
/// that exits with it never ran a command.
pub const HELPER_EXIT_CODE: i32 = 121;

/// What stderr's one line starts with when the helper fails.
pub const HELPER_ERROR_PREFIX: &str = "hands-tier1: ";

/// What the helper prints on stdout when asked to check itself (the probe's trial run).
pub(crate) const CHECK_OK: &str = "hands-tier1 check: restrictions hold";

/// The oldest Landlock ABI tier 1 accepts: ABI 3 (Linux 6.2) is the first that can stop
/// `truncate(2)` on files outside the writable roots.
pub const MIN_LANDLOCK_ABI: u32 = 3;

/// The first Landlock ABI with TCP port rules (Linux 6.7).
pub const NET_LANDLOCK_ABI: u32 = 4;

/// Operator settings of tier 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tier1Options {
    /// Paths tools may not read (the worker's config and secret files, credential directories).
    /// Landlock is an allow-list, so the helper grants read access to everything else instead.
    /// Paths that do not exist are skipped.
    pub hide: Vec<PathBuf>,
    /// The egress proxy's loopback port. When set, tools may create TCP sockets (IPv4 and IPv6
    /// stream sockets only: no UDP, no raw sockets) and Landlock lets them connect to this port
    /// and no other, and bind none; it needs Landlock ABI 4. When unset, no socket but `AF_UNIX`
    /// can be created at all.
    pub proxy_port: Option<u16>,
}

impl Default for Tier1Options {
    fn default() -> Self {
        Tier1Options {
            hide: DEFAULT_HIDDEN.iter().map(PathBuf::from).collect(),
            proxy_port: None,
        }
    }
}

/// Tier 1 as the worker uses it: which binary holds the helper, and the options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tier1Sandbox {
    /// The binary started with [`TIER1_MARKER`]; `/proc/self/exe` unless a test says otherwise.
    pub helper: PathBuf,
    pub options: Tier1Options,
}

impl Tier1Sandbox {
    /// The helper of this very binary.
    pub fn this_binary(options: Tier1Options) -> Tier1Sandbox {
        Tier1Sandbox {
            helper: PathBuf::from("/proc/self/exe"),
            options,
        }
    }

    /// The helper's arguments that run `program args` under the policy: `binds.read_write`
    /// (the workspace first) writable, `binds.read_only` readable only.
    pub fn args(&self, binds: &Binds, program: &Path, program_args: &[OsString]) -> Vec<OsString> {
        let policy = Policy {
            read_write: binds.read_write.clone(),
            read_only: binds.read_only.clone(),
            hide: self.options.hide.clone(),
            proxy_port: self.options.proxy_port,
            check: false,
        };
        let mut out = policy.to_args();
        out.push(program.into());
        out.extend(program_args.iter().cloned());
        out
    }
}

/// What the helper applies, as carried on its command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Policy {
    pub read_write: Vec<PathBuf>,
    pub read_only: Vec<PathBuf>,
    pub hide: Vec<PathBuf>,
    pub proxy_port: Option<u16>,
    /// The probe's trial: verify the restrictions hold, print [`CHECK_OK`], run nothing.
    pub check: bool,
}

impl Policy {
    /// `MARKER [rw P]... [ro P]... [hide P]... [port N] [check] --`: one argument per word, so
    /// any path the kernel accepts (spaces, newlines, non-UTF-8 bytes) passes unchanged.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = vec![TIER1_MARKER.into()];
        for (word, paths) in [
            ("rw", &self.read_write),
            ("ro", &self.read_only),
            ("hide", &self.hide),
        ] {
            for p in paths {
                out.push(word.into());
                out.push(p.into());
            }
        }
        if let Some(port) = self.proxy_port {
            out.push("port".into());
            out.push(port.to_string().into());
        }
        if self.check {
            out.push("check".into());
        }
        out.push("--".into());
        out
    }

    /// Parses what follows the marker: the policy, and the program with its arguments.
    pub fn parse(args: &[OsString]) -> Result<(Policy, Vec<OsString>), String> {
        let mut policy = Policy::default();
        let mut it = args.iter();
        loop {
            let Some(word) = it.next() else {
                return Err("the policy does not end with --".into());
            };
            let mut value = |what: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{what} needs a value"))
            };
            match word.to_str() {
                Some("--") => break,
                Some("rw") => policy.read_write.push(absolute(value("rw")?)?),
                Some("ro") => policy.read_only.push(absolute(value("ro")?)?),
                Some("hide") => policy.hide.push(absolute(value("hide")?)?),
                Some("port") => {
                    let v = value("port")?;
                    let port = v
                        .to_str()
                        .and_then(|s| s.parse::<u16>().ok())
                        .filter(|&p| p != 0)
                        .ok_or_else(|| format!("bad port {v:?}"))?;
                    policy.proxy_port = Some(port);
                }
                Some("check") => policy.check = true,
                _ => return Err(format!("unknown policy word {word:?}")),
            }
        }
        let program: Vec<OsString> = it.cloned().collect();
        if !policy.check && program.is_empty() {
            return Err("no program to run".into());
        }
        Ok((policy, program))
    }
}

fn absolute(p: OsString) -> Result<PathBuf, String> {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(format!("{} is not an absolute path", p.display()))
    }
}

/// Whether `arg` (the first after the program name) asks for the tier-1 helper.
pub(crate) fn is_marker(arg: &OsStr) -> bool {
    arg == TIER1_MARKER
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn the_policy_survives_its_command_line_whatever_the_paths() {
        use std::os::unix::ffi::OsStringExt;
        let odd = PathBuf::from(OsString::from_vec(b"/ws/with space\n\xff".to_vec()));
        let policy = Policy {
            read_write: vec!["/ws".into(), odd.clone()],
            read_only: vec!["/mem/ro".into()],
            hide: vec!["/etc/hands".into()],
            proxy_port: Some(3128),
            check: false,
        };
        let mut args = policy.to_args();
        assert_eq!(args[0], TIER1_MARKER);
        args.extend(["/bin/bash".into(), "--".into(), "-c".into()]);
        let (back, program) = Policy::parse(&args[1..]).unwrap();
        assert_eq!(back, policy);
        assert_eq!(program, ["/bin/bash", "--", "-c"]);
    }

    #[test]
    fn a_malformed_policy_is_refused_with_its_reason() {
        let parse = |words: &[&str]| {
            let args: Vec<OsString> = words.iter().map(OsString::from).collect();
            Policy::parse(&args).map(|_| ()).unwrap_err()
        };
        assert_eq!(parse(&["rw", "/ws"]), "the policy does not end with --");
        assert_eq!(
            parse(&["rw", "ws", "--", "/bin/true"]),
            "ws is not an absolute path"
        );
        assert_eq!(parse(&["port", "0", "--", "/bin/true"]), "bad port \"0\"");
        assert_eq!(parse(&["rw"]), "rw needs a value");
        assert_eq!(parse(&["wr", "/ws", "--"]), "unknown policy word \"wr\"");
        assert_eq!(parse(&["--"]), "no program to run");
    }

    /// Runs `script` with bash under tier 1 in a fresh workspace; `None` when tier 1 cannot
    /// run here (a failure instead under `REQUIRE_ISOLATION=1`).
    fn run(script: &str, options: Tier1Options, binds: Binds) -> Option<(Option<i32>, String)> {
        let probe = crate::HostProbe::run();
        let sandbox = match probe.select(crate::IsolationMode::Tier(crate::Tier::Landlock), true) {
            Ok(_) => probe.tier1_sandbox(options)?,
            Err(e) if std::env::var("REQUIRE_ISOLATION").as_deref() == Ok("1") => {
                panic!("REQUIRE_ISOLATION=1 but tier 1 cannot engage: {e}")
            }
            Err(e) => {
                eprintln!("skipping: {e}");
                return None;
            }
        };
        let ws = tempdir();
        let spec = crate::OneShotSpec {
            program: "/bin/bash".into(),
            args: vec!["-c".into(), script.into()],
            cwd: ws.clone(),
            env: crate::EnvPolicy::default().build(std::env::vars_os()),
            rlimits: crate::Rlimits::default(),
            isolation: crate::Isolation::Landlock(sandbox),
            binds,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let out = rt.block_on(async {
            use tokio::io::AsyncReadExt as _;
            let mut p = crate::spawn_oneshot(&spec).await.unwrap();
            drop(p.stdin);
            let mut out = String::new();
            let mut err = String::new();
            p.stdout.read_to_string(&mut out).await.unwrap();
            p.stderr.read_to_string(&mut err).await.unwrap();
            let status = p.child.wait().await.unwrap();
            (status.code(), out + &err)
        });
        std::fs::remove_dir_all(&ws).unwrap();
        Some(out)
    }

    /// A fresh directory under the temporary directory (its canonical path).
    pub(crate) fn tempdir() -> PathBuf {
        let mut bytes = [0u8; 8];
        rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).unwrap();
        let name: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("hands-tier1-{name}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::canonicalize(&dir).unwrap()
    }

    #[test]
    fn the_workspace_is_writable_and_nothing_else() {
        let script = "echo in > inside.txt && cat inside.txt; echo out > ../escape.txt; \
                      echo rc=$?; echo x > /dev/null && echo devnull-ok";
        let Some((code, out)) = run(script, Tier1Options::default(), Binds::default()) else {
            return;
        };
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("in\n"), "{out}");
        assert!(out.contains("../escape.txt: Permission denied"), "{out}");
        assert!(out.contains("rc=1") && out.contains("devnull-ok"), "{out}");
    }

    // Issue 9's seam: with the proxy port set, TCP connects to that port and to no other
    // (EACCES from Landlock), and UDP sockets are still refused by seccomp.
    #[test]
    fn with_a_proxy_port_tcp_reaches_that_port_only() {
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (p, o) = (
            proxy.local_addr().unwrap().port(),
            other.local_addr().unwrap().port(),
        );
        let accepted = std::thread::spawn(move || {
            let (mut s, _) = proxy.accept().unwrap();
            let mut buf = String::new();
            std::io::Read::read_to_string(&mut s, &mut buf).unwrap();
            buf
        });
        let script = format!(
            "echo via-proxy > /dev/tcp/127.0.0.1/{p} && echo proxy-ok; \
             echo leak > /dev/tcp/127.0.0.1/{o}; echo leak > /dev/udp/127.0.0.1/{o}; true"
        );
        let options = Tier1Options {
            proxy_port: Some(p),
            ..Tier1Options::default()
        };
        let Some((code, out)) = run(&script, options, Binds::default()) else {
            return;
        };
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("proxy-ok"), "{out}");
        assert_eq!(accepted.join().unwrap(), "via-proxy\n");
        assert!(
            out.contains(&format!("/dev/tcp/127.0.0.1/{o}: Permission denied")),
            "{out}"
        );
        assert!(
            out.contains("Address family not supported by protocol"),
            "{out}"
        );
        other.set_nonblocking(true).unwrap();
        assert!(other.accept().is_err(), "the other port was reached");
        // Without the port, no TCP socket at all.
        let script = format!("echo leak > /dev/tcp/127.0.0.1/{p}");
        let (_, out) = run(&script, Tier1Options::default(), Binds::default()).unwrap();
        assert!(
            out.contains("Address family not supported by protocol"),
            "{out}"
        );
    }

    #[test]
    fn a_policy_the_helper_cannot_apply_fails_with_its_code_and_reason() {
        // A writable root that does not exist cannot be granted.
        let binds = Binds {
            read_write: vec!["/nonexistent/hands-ws".into()],
            read_only: Vec::new(),
        };
        let Some((code, out)) = run("echo ran", Tier1Options::default(), binds) else {
            return;
        };
        assert_eq!(code, Some(HELPER_EXIT_CODE), "{out}");
        assert!(
            out.starts_with(HELPER_ERROR_PREFIX) && out.contains("/nonexistent/hands-ws"),
            "{out}"
        );
        assert!(!out.contains("ran"), "{out}");
    }
}
