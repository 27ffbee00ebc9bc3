//! Tier 2: the command line that runs a tool process inside bubblewrap.
//!
//! The sandbox gets new user, pid, network, ipc, uts and cgroup namespaces (`--unshare-all`
//! plus an explicit `--unshare-user`, so that `--disable-userns` can forbid nested ones), no
//! capabilities, a fresh `/proc` that shows only the sandbox's own processes, a read-only view
//! of the host's root with the workspace bound read-write over it, a size-capped tmpfs on
//! `/tmp` and `/dev/shm` (a read-only `/dev` otherwise), and the worker's secret files masked.
//!
//! The tool program runs as pid 1 of its pid namespace (`--as-pid-1`): it reaps the orphans of
//! the namespace itself (the bash tool's shell already does), every descendant stays in its
//! process tree where the sweep finds it, and when it dies the kernel kills everything left in
//! the namespace. `--die-with-parent` ties that to bubblewrap's own life.
//!
//! What it must never do: pass the caller's environment (bubblewrap does unless `--clearenv`
//! is given: pitfall 6), or bind anything writable but the workspace, the roots the toolset
//! names and a unix socket the operator names ([`SocketBind`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::relay::EgressBridge;

/// Where the sandbox may write, and what else it must see that the read-only root would not
/// show (anything under `/tmp`, which is a fresh tmpfs inside).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Binds {
    /// Bound read-write (the workspace first).
    pub read_write: Vec<PathBuf>,
    /// Bound read-only.
    pub read_only: Vec<PathBuf>,
}

/// One unix socket of the host bound into the sandbox (writable), for a host service tools may
/// reach by path. The egress proxy does not use it: it comes in through [`EgressBridge`], a
/// listener on the sandbox's own loopback (see `relay`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketBind {
    pub host: PathBuf,
    pub sandbox: PathBuf,
}

/// Operator settings of tier 2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tier2Options {
    /// Size of the tmpfs on `/tmp` and on `/dev/shm`, in bytes: what a tool can write outside
    /// the workspace (T6). Writes beyond it fail with ENOSPC.
    pub tmp_bytes: u64,
    /// Paths made unreadable inside (opening them fails with EACCES): a file is covered by the
    /// host's `/dev/null` on a mount without device nodes, a directory by an empty read-only
    /// tmpfs with mode 0000. The worker's config and secret files, `/run/secrets`, cloud
    /// credential directories. Paths that do not exist are skipped.
    pub hide: Vec<PathBuf>,
    /// A host unix socket bound in (see [`SocketBind`]).
    pub socket: Option<SocketBind>,
    /// The egress proxy's way in: a listener on the sandbox's own loopback, relayed by the
    /// worker to the proxy (see `relay`).
    pub egress: Option<EgressBridge>,
    /// Host paths every sandbox sees read-only where they are (after the fresh `/tmp`, so a
    /// directory under the host's `/tmp` shows too): the egress proxy's CA bundle directory.
    pub read_only: Vec<PathBuf>,
}

/// Paths hidden from every tier-2 sandbox whatever the operator adds: where container runtimes
/// and clouds put credentials.
pub const DEFAULT_HIDDEN: &[&str] = &[
    "/run/secrets",
    "/var/run/secrets",
    "/root/.aws",
    "/root/.config/gcloud",
    "/root/.azure",
    "/root/.docker",
    "/root/.netrc",
    "/root/.git-credentials",
    "/root/.ssh",
    "/etc/hands",
];

impl Default for Tier2Options {
    fn default() -> Self {
        Tier2Options {
            tmp_bytes: 256 * 1024 * 1024,
            hide: DEFAULT_HIDDEN.iter().map(PathBuf::from).collect(),
            socket: None,
            egress: None,
            read_only: Vec::new(),
        }
    }
}

/// A working bubblewrap (found and trial-run by the probe) and how to use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BwrapSandbox {
    /// Absolute path of `bwrap`.
    pub program: PathBuf,
    pub options: Tier2Options,
}

fn push(out: &mut Vec<OsString>, items: &[&str]) {
    out.extend(items.iter().map(OsString::from));
}

fn push_path(out: &mut Vec<OsString>, flag: &str, a: &Path, b: &Path) {
    out.push(flag.into());
    out.push(a.into());
    out.push(b.into());
}

/// The masks over the hidden paths, looked at anew for each sandbox (a secret may have been
/// rotated since the worker started). A hidden path that is a symlink is masked by its whole
/// directory: Kubernetes mounts a secret as `token -> ..data/token -> ..<timestamp>/token`
/// and on rotation repoints `..data` at a new directory (deleting the old one), so a mask over
/// the target seen at start would leave the new secret readable through the link. Directories
/// become an empty read-only tmpfs of mode 0000, files the host's `/dev/null` (unopenable on a
/// mount without device nodes); missing paths need no mask.
fn push_masks(out: &mut Vec<OsString>, hide: &[PathBuf]) {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut singles: Vec<PathBuf> = Vec::new();
    for p in hide {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.file_type().is_symlink() => match link_directory(p) {
                Some(dir) => dirs.push(dir),
                // A link directly under `/`: `/` cannot be masked, so its current target is.
                None => singles.extend(std::fs::canonicalize(p)),
            },
            Ok(_) => singles.push(p.clone()),
            Err(_) => {}
        }
    }
    dirs.sort();
    dirs.dedup_by(|later, earlier| later.starts_with(earlier));
    // A path inside a masked directory is hidden by that mask, and bwrap could not mount over
    // it anyway (the empty tmpfs does not have it).
    let covered = |p: &Path| {
        let real = std::fs::canonicalize(p).ok();
        dirs.iter()
            .any(|d| p.starts_with(d) || real.as_ref().is_some_and(|r| r.starts_with(d)))
    };
    for p in singles.iter().filter(|p| !covered(p)) {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => push_dir_mask(out, p),
            Ok(m) if m.is_file() => push_path(out, "--ro-bind", Path::new("/dev/null"), p),
            // Special files are left to the read-only root.
            _ => {}
        }
    }
    for d in &dirs {
        push_dir_mask(out, d);
    }
}

/// The directory holding the link `p`, resolved (bwrap mounts at the resolved path), unless
/// that is `/`.
fn link_directory(p: &Path) -> Option<PathBuf> {
    let parent = std::path::absolute(p).ok()?.parent()?.to_path_buf();
    let dir = std::fs::canonicalize(parent).ok()?;
    (dir.parent().is_some()).then_some(dir)
}

fn push_dir_mask(out: &mut Vec<OsString>, p: &Path) {
    push(out, &["--perms", "0000", "--size", "4096"]);
    out.push("--tmpfs".into());
    out.push(p.into());
    out.push("--remount-ro".into());
    out.push(p.into());
}

impl BwrapSandbox {
    /// The arguments of `bwrap` that run `program args` in `cwd` inside the sandbox, with
    /// exactly the environment `env`.
    pub fn args(
        &self,
        binds: &Binds,
        env: &[(OsString, OsString)],
        cwd: &Path,
        program: &Path,
        program_args: &[OsString],
    ) -> Vec<OsString> {
        let mut out: Vec<OsString> = Vec::with_capacity(64 + 3 * env.len());
        push(
            &mut out,
            &[
                "--unshare-all",
                "--unshare-user",
                "--disable-userns",
                "--die-with-parent",
                "--new-session",
                "--as-pid-1",
                "--cap-drop",
                "ALL",
                // Pitfall 6: without this, bwrap hands the sandbox its whole environment.
                "--clearenv",
            ],
        );
        for (k, v) in env {
            out.push("--setenv".into());
            out.push(k.clone());
            out.push(v.clone());
        }
        if let Some(EgressBridge {
            spawn_fds: Some([info, block]),
            ..
        }) = &self.options.egress
        {
            // The relay's handshake with the worker (see `relay`).
            out.push("--info-fd".into());
            out.push(info.to_string().into());
            out.push("--block-fd".into());
            out.push(block.to_string().into());
        }
        push(&mut out, &["--ro-bind", "/", "/", "--proc", "/proc"]);
        // A fresh /dev with the usual nodes, read-only but for a capped /dev/shm.
        let size = self.options.tmp_bytes.to_string();
        push(
            &mut out,
            &[
                "--dev",
                "/dev",
                "--size",
                &size,
                "--tmpfs",
                "/dev/shm",
                "--remount-ro",
                "/dev",
                "--size",
                &size,
                "--tmpfs",
                "/tmp",
            ],
        );
        for p in binds.read_only.iter().chain(&self.options.read_only) {
            push_path(&mut out, "--ro-bind", p, p);
        }
        for p in &binds.read_write {
            push_path(&mut out, "--bind", p, p);
        }
        if let Some(socket) = &self.options.socket {
            push_path(&mut out, "--bind", &socket.host, &socket.sandbox);
        }
        // Masks last, so no bind above can show what they hide.
        push_masks(&mut out, &self.options.hide);
        out.push("--chdir".into());
        out.push(cwd.into());
        out.push("--".into());
        out.push(program.into());
        out.extend(program_args.iter().cloned());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_command_line_clears_the_environment_and_binds_only_the_workspace_writable() {
        let dir = tempfile_dir();
        let secret = dir.join("key");
        std::fs::write(&secret, "k").unwrap();
        let sandbox = BwrapSandbox {
            program: "/usr/bin/bwrap".into(),
            options: Tier2Options {
                tmp_bytes: 1024,
                hide: vec![secret.clone(), dir.join("missing")],
                socket: Some(SocketBind {
                    host: "/run/hands/egress.sock".into(),
                    sandbox: "/run/egress.sock".into(),
                }),
                egress: Some(EgressBridge {
                    spawn_fds: Some([7, 9]),
                    ..EgressBridge::new(3128, "127.0.0.1:3128".parse().unwrap())
                }),
                read_only: vec!["/tmp/hands-egress-1".into()],
            },
        };
        let args = strings(&sandbox.args(
            &Binds {
                read_write: vec!["/ws".into()],
                read_only: vec!["/ro".into()],
            },
            &[("PATH".into(), "/bin".into())],
            Path::new("/ws"),
            Path::new("/bin/bash"),
            &["--norc".into()],
        ));
        let joined = args.join(" ");
        for needle in [
            "--unshare-all --unshare-user --disable-userns --die-with-parent --new-session --as-pid-1 --cap-drop ALL --clearenv --setenv PATH /bin",
            "--info-fd 7 --block-fd 9 --ro-bind / / --proc /proc",
            "--size 1024 --tmpfs /tmp",
            "--ro-bind /ro /ro --ro-bind /tmp/hands-egress-1 /tmp/hands-egress-1 --bind /ws /ws --bind /run/hands/egress.sock /run/egress.sock",
            &format!("--ro-bind /dev/null {}", secret.display()),
            "--chdir /ws -- /bin/bash --norc",
        ] {
            assert!(joined.contains(needle), "{needle:?} missing from {joined}");
        }
        assert!(!joined.contains("missing"), "{joined}");
        // `--clearenv` comes before every `--setenv`.
        let clear = args.iter().position(|a| a == "--clearenv").unwrap();
        let first_set = args.iter().position(|a| a == "--setenv").unwrap();
        assert!(clear < first_set);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A Kubernetes-style secret mount: `token -> ..data/token`, `..data -> ..v1`.
    fn k8s_secret(dir: &Path, version: &str, value: &str) {
        std::fs::create_dir(dir.join(version)).unwrap();
        std::fs::write(dir.join(version).join("token"), value).unwrap();
        // kubelet's update: a new link renamed over `..data`, then the old directory deleted.
        let next = dir.join("..data_tmp");
        std::os::unix::fs::symlink(version, &next).unwrap();
        std::fs::rename(&next, dir.join("..data")).unwrap();
        if !dir.join("token").exists() {
            std::os::unix::fs::symlink("..data/token", dir.join("token")).unwrap();
        }
    }

    #[test]
    fn a_hidden_symlink_masks_its_whole_directory() {
        let dir = tempfile_dir();
        let secrets = dir.join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        k8s_secret(&secrets, "..v1", "one");
        let file = dir.join("plain");
        std::fs::write(&file, "k").unwrap();
        let mut out = Vec::new();
        // The link, its target read at start, and a file elsewhere.
        let hide = [
            secrets.join("token"),
            std::fs::canonicalize(secrets.join("token")).unwrap(),
            file.clone(),
        ];
        push_masks(&mut out, &hide);
        let real = std::fs::canonicalize(&secrets).unwrap();
        let joined = strings(&out).join(" ");
        assert_eq!(
            joined,
            format!(
                "--ro-bind /dev/null {file} --perms 0000 --size 4096 --tmpfs {d} --remount-ro {d}",
                file = file.display(),
                d = real.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Tier 2 after a rotation: neither the link, nor `..data`, nor the new version's file can
    /// be read, while a file beside the secrets' directory can (so the mask, not a missing
    /// path, is what fails the reads).
    #[tokio::test]
    async fn a_rotated_secret_stays_hidden_at_tier_2() {
        use tokio::io::AsyncReadExt as _;
        // Outside /tmp: tier 2 has its own.
        let base = std::env::current_exe().unwrap();
        let dir = base
            .parent()
            .unwrap()
            .join(format!("hands-rotation-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let secrets = dir.join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        k8s_secret(&secrets, "..v1", "first-canary");
        std::fs::write(dir.join("visible"), "visible").unwrap();
        // What the worker remembers after reading the secret at start.
        let hide = vec![
            secrets.join("token"),
            std::fs::canonicalize(secrets.join("token")).unwrap(),
        ];
        k8s_secret(&secrets, "..v2", "second-canary");
        std::fs::remove_dir_all(secrets.join("..v1")).unwrap();
        assert_eq!(
            std::fs::read_to_string(secrets.join("token")).unwrap(),
            "second-canary"
        );
        let probe = crate::HostProbe::run();
        let sandbox = match probe.select(crate::IsolationMode::Tier(crate::Tier::Bwrap), true) {
            Ok(_) => probe.bwrap_sandbox(Tier2Options {
                hide,
                ..Tier2Options::default()
            }),
            Err(e) if std::env::var("REQUIRE_ISOLATION").as_deref() == Ok("1") => {
                panic!("REQUIRE_ISOLATION=1 but tier 2 cannot engage: {e}")
            }
            Err(e) => {
                eprintln!("skipping: {e}");
                None
            }
        };
        let Some(sandbox) = sandbox else {
            std::fs::remove_dir_all(&dir).unwrap();
            return;
        };
        let script = format!(
            "cat {d}/visible; echo; cat {s}/token {s}/..data/token {s}/..v2/token 2>&1; ls {s} 2>&1; exit 0",
            d = dir.display(),
            s = secrets.display()
        );
        let spec = crate::OneShotSpec {
            program: "/bin/bash".into(),
            args: vec!["-c".into(), script.into()],
            cwd: dir.clone(),
            env: crate::EnvPolicy::default().build(std::env::vars_os()),
            rlimits: crate::Rlimits::default(),
            isolation: crate::Isolation::Bwrap(sandbox),
            binds: Binds::default(),
        };
        let mut p = crate::spawn_oneshot(&spec).await.unwrap();
        drop(p.stdin);
        let mut out = String::new();
        p.stdout.read_to_string(&mut out).await.unwrap();
        p.child.wait().await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(out.starts_with("visible\n"), "{out}");
        assert!(!out.contains("canary"), "{out}");
        assert_eq!(out.matches("Permission denied").count(), 4, "{out}");
    }

    fn tempfile_dir() -> PathBuf {
        let mut bytes = [0u8; 8];
        rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).unwrap();
        let name: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("hands-bwrap-{name}"));
        std::fs::create_dir(&dir).unwrap();
        dir
    }
}
