//! The proxy end to end, with real clients (git, curl; pip, npm and cargo in `package_clients`)
//! as child processes that get only what a session's tool environment would: the proxy URL
//! with their credential and the CA bundle.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod package_clients;
mod support;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;

use hands_egress::{EgressConfig, EgressProxy, Policy, Resolver, StaticSecrets, UpstreamRoots};
use secrecy::ExposeSecret;
use support::{TestCa, Upstream, client_config, connect_tunnel, get, https_sender, start_upstream};

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

[[rule]]
host = "tunnel.test"
private = true
action = "allow"

[[rule]]
host = "readonly.test"
methods = ["GET"]
private = true
action = "allow"

[[rule]]
host = "wrongca.test"
private = true
action = "inject"
headers = { Authorization = "Bearer {secret:git_token}" }

[[rule]]
host = "plain.test"
private = true
action = "allow"

[[rule]]
host = "guarded.test"
path_prefix = "/admin"
action = "deny"

[[rule]]
host = "guarded.test"
private = true
action = "inject"
headers = { Authorization = "Bearer {secret:git_token}" }

[[rule]]
host = "plaininject.test"
private = true
action = "inject"
headers = { Authorization = "Bearer {secret:git_token}" }

[[rule]]
host = "cleartext-ok.test"
private = true
action = "inject"
headers = { Authorization = "Bearer {secret:git_token}" }
insecure_http = true

[[rule]]
host = "metadata.test"
private = true
action = "allow"

[[rule]]
host = "metadata6.test"
private = true
action = "allow"

[[rule]]
host = "*.example.com"
action = "allow"
"#;

struct Harness {
    dir: tempfile::TempDir,
    canary: String,
    upstream_ca: TestCa,
    tls_upstream: Upstream,
    plain_upstream: Upstream,
    /// Serves a certificate from a CA the proxy does not trust.
    untrusted_upstream: Upstream,
    proxy: EgressProxy,
}

/// Every log line of this test binary (tests run in parallel; each looks for its own session).
fn captured_log() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).to_string()
}

fn log_buffer() -> &'static std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    static LOG: std::sync::OnceLock<std::sync::Arc<std::sync::Mutex<Vec<u8>>>> =
        std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter("hands_egress=info")
            .with_writer(move || LogWriter(writer.clone()))
            .try_init();
        buf
    })
}

struct LogWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn loopback() -> Vec<IpAddr> {
    vec!["127.0.0.1".parse().unwrap()]
}

impl Harness {
    async fn new() -> Harness {
        log_buffer();
        let dir = tempfile::tempdir().unwrap();
        let canary = format!("canary{:032x}", rand_u128());
        let upstream_ca = TestCa::new(dir.path());
        let repos = dir.path().join("srv");
        std::fs::create_dir_all(&repos).unwrap();
        let tls = upstream_ca.server_config(&[
            "git.test",
            "echo.test",
            "tunnel.test",
            "readonly.test",
            "guarded.test",
        ]);
        let tls_upstream = start_upstream(Some(tls), Some(repos), canary.clone()).await;
        let plain_upstream = start_upstream(None, None, canary.clone()).await;
        let other_dir = dir.path().join("other-ca");
        std::fs::create_dir_all(&other_dir).unwrap();
        let other_ca = TestCa::new(&other_dir);
        let untrusted_upstream = start_upstream(
            Some(other_ca.server_config(&["wrongca.test"])),
            None,
            canary.clone(),
        )
        .await;
        let resolver = Resolver::system()
            .pin("git.test", loopback())
            .pin("echo.test", loopback())
            .pin("tunnel.test", loopback())
            .pin("plain.test", loopback())
            .pin("plaininject.test", loopback())
            .pin("guarded.test", loopback())
            .pin("cleartext-ok.test", loopback())
            .pin("readonly.test", loopback())
            .pin("wrongca.test", loopback())
            .pin("rebind.example.com", loopback())
            .pin("metadata.test", vec!["169.254.169.254".parse().unwrap()])
            .pin("metadata6.test", vec!["fd00:ec2::254".parse().unwrap()]);
        let config = EgressConfig {
            policy: Policy::parse(POLICY, "test-policy.toml").unwrap(),
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream_roots: UpstreamRoots::Only(upstream_ca.pem_path.clone()),
            resolver,
            bundle_dir: dir.path().join("egress-ca"),
        };
        // The secret lives only in this process's memory (not in its environment), so scanning
        // every /proc/*/environ for it means something.
        let secrets = StaticSecrets::new().with("git_token", &canary);
        let proxy = EgressProxy::start(config, &secrets).await.unwrap();
        Harness {
            dir,
            canary,
            upstream_ca,
            tls_upstream,
            plain_upstream,
            untrusted_upstream,
            proxy,
        }
    }

    fn tls_port(&self) -> u16 {
        self.tls_upstream.addr.port()
    }

    /// A command with a cleared environment plus one session's tool environment.
    fn tool_command(&self, program: &str, session: &str, home: &Path) -> Command {
        let grant = self.proxy.sessions().register(session);
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("HOME", home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", "agent")
            .env("GIT_AUTHOR_EMAIL", "agent@example.com")
            .env("GIT_COMMITTER_NAME", "agent")
            .env("GIT_COMMITTER_EMAIL", "agent@example.com");
        for (k, v) in self.proxy.tool_env(&grant) {
            cmd.env(k, v);
        }
        cmd
    }

    /// curl through the proxy as session `session`; returns (HTTP status, headers + body).
    fn curl(&self, session: &str, url: &str, extra: &[&str]) -> (String, String) {
        let home = self.dir.path().join(format!("home-{session}"));
        std::fs::create_dir_all(&home).unwrap();
        let out = self
            .tool_command("curl", session, &home)
            .args(["-sS", "-i", "--max-time", "20", "-w", "\n%{http_code}"])
            .args(extra)
            .arg(url)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", "000"));
        (
            code.to_string(),
            format!("{body}{}", String::from_utf8_lossy(&out.stderr)),
        )
    }
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let a = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish() as u128;
    let b = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish() as u128;
    (a << 64) | b
}

fn git(h: &Harness, session: &str, home: &Path, cwd: &Path, args: &[&str]) -> String {
    let out = h
        .tool_command("git", session, home)
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "git {args:?} failed: {text}");
    text
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p)
            } else {
                out.push(p)
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clone_commit_push_with_the_token_nowhere_in_the_sandbox() {
    let h = Harness::new().await;
    let bare = h.dir.path().join("srv/repo.git");
    let status = Command::new("git")
        .args(["init", "--quiet", "--bare", "-b", "main"])
        .arg(&bare)
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new("git")
        .arg("-C")
        .arg(&bare)
        .args(["config", "http.receivepack", "true"])
        .status()
        .unwrap();
    assert!(status.success());

    let home = h.dir.path().join("home");
    let work = h.dir.path().join("work");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let url = format!("https://git.test:{}/git/repo.git", h.tls_port());
    let (s, w) = ("sesn_git", work.as_path());
    let h2 = &h;
    let run = move |cwd: PathBuf, args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        git(h2, s, &home, &cwd, &args)
    };
    let clone_dir = w.join("clone");
    run(
        w.to_path_buf(),
        vec!["clone".into(), url.clone(), "clone".into()],
    );
    std::fs::write(clone_dir.join("hello.txt"), "hello from the agent\n").unwrap();
    run(clone_dir.clone(), vec!["add".into(), "hello.txt".into()]);
    run(
        clone_dir.clone(),
        vec!["commit".into(), "-q".into(), "-m".into(), "first".into()],
    );
    run(
        clone_dir.clone(),
        vec![
            "push".into(),
            "origin".into(),
            "HEAD:refs/heads/main".into(),
        ],
    );
    // A second clone sees the pushed commit: the push really went through.
    run(
        w.to_path_buf(),
        vec!["clone".into(), url.clone(), "again".into()],
    );
    assert_eq!(
        std::fs::read_to_string(w.join("again/hello.txt")).unwrap(),
        "hello from the agent\n"
    );

    // The upstream received the token on every git request (so the checks below can fail).
    let seen = h.tls_upstream.seen.authorizations.lock().unwrap().clone();
    assert!(seen.len() >= 4, "{seen:?}");
    assert!(seen.iter().all(|a| a.starts_with("Basic ")), "{seen:?}");

    // Nothing the sandbox can read holds the token.
    let canary = h.canary.as_str();
    let env_out = h
        .tool_command("env", s, &h.dir.path().join("home"))
        .output()
        .unwrap();
    let env_text = String::from_utf8_lossy(&env_out.stdout);
    assert!(
        env_text.contains("HTTPS_PROXY=http://s") && env_text.contains("SSL_CERT_FILE="),
        "{env_text}"
    );
    assert!(!env_text.contains(canary));
    let config = run(clone_dir.clone(), vec!["config".into(), "-l".into()]);
    assert!(config.contains("remote.origin.url"), "{config}");
    assert!(!config.contains(canary), "{config}");
    let mut environs = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(bytes) = std::fs::read(entry.path().join("environ")) {
            environs += 1;
            assert!(
                memchr::memmem::find(&bytes, canary.as_bytes()).is_none(),
                "{:?}",
                entry.path()
            );
        }
    }
    assert!(environs > 0);
    let mut bundle_files = 0;
    for f in files_under(h.proxy.ca_bundle().parent().unwrap()) {
        let text = std::fs::read_to_string(&f).unwrap();
        bundle_files += 1;
        assert!(!text.contains(canary), "{f:?}");
        assert!(
            !text.contains("PRIVATE KEY"),
            "the CA key must never be written: {f:?}"
        );
    }
    assert!(bundle_files >= 1);
    let home = h.dir.path().join("home");
    assert!(!home.join(".git-credentials").exists());
    for f in files_under(&home).into_iter().chain(files_under(&work)) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            memchr::memmem::find(&bytes, canary.as_bytes()).is_none(),
            "{f:?}"
        );
    }
    let m = h.proxy.metrics();
    assert!(m.requests_injected.load(Ordering::Relaxed) >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_echoes_the_secret_hands_back_none_of_it() {
    let h = Harness::new().await;
    let (code, text) = h.curl(
        "sesn_echo",
        &format!("https://echo.test:{}/echo", h.tls_port()),
        &[],
    );
    assert_eq!(code, "200", "{text}");
    let seen = h.tls_upstream.seen.authorizations.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![format!("Bearer {}", h.canary)],
        "the upstream got the injected header"
    );
    assert!(!text.contains(&h.canary), "{text}");
    assert!(
        text.contains("x-echo-authorization: [secret removed by hands egress proxy]"),
        "{text}"
    );
    assert!(
        text.contains("\nauthorization: [secret removed by hands egress proxy]"),
        "{text}"
    );
    assert!(h.proxy.metrics().secrets_stripped.load(Ordering::Relaxed) >= 1);

    // One audit line per request, naming the secret but never holding its value.
    let log = captured_log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("session=sesn_echo"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    for want in [
        "host=echo.test",
        "method=GET",
        "path=/echo",
        "status=200",
        "secret=git_token",
        "ok-secret-stripped",
    ] {
        assert!(lines[0].contains(want), "{want}: {}", lines[0]);
    }
    assert!(!log.contains(&h.canary));

    // The client's own Authorization is replaced, not forwarded beside ours.
    let (code, _) = h.curl(
        "sesn_echo",
        &format!("https://echo.test:{}/echo", h.tls_port()),
        &["-H", "Authorization: Bearer mine"],
    );
    assert_eq!(code, "200");
    let seen = h.tls_upstream.seen.authorizations.lock().unwrap().clone();
    assert_eq!(seen.last().unwrap(), &format!("Bearer {}", h.canary));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_or_partial_answers_never_carry_the_secret_back() {
    let h = Harness::new().await;
    // The client asks for gzip (the echo endpoint would compress): the proxy asks upstream for
    // identity instead, so the redactor sees plain bytes. Range is dropped too.
    let (code, text) = h.curl(
        "sesn_gzip",
        &format!("https://echo.test:{}/echo", h.tls_port()),
        &["--compressed", "-H", "Range: bytes=0-40"],
    );
    assert_eq!(code, "200", "{text}");
    assert!(!text.contains(&h.canary), "{text}");
    assert!(text.contains("accept-encoding: identity"), "{text}");
    assert!(!text.contains("content-encoding"), "{text}");
    assert!(!text.to_ascii_lowercase().contains("\nrange:"), "{text}");
    assert!(
        text.contains("\nauthorization: [secret removed by hands egress proxy]"),
        "{text}"
    );

    // An upstream that compresses regardless: refused with a sentence, nothing of it passed on.
    let (code, text) = h.curl(
        "sesn_gzip",
        &format!("https://echo.test:{}/echo-gzip", h.tls_port()),
        &["--compressed"],
    );
    assert_eq!(code, "502", "{text}");
    assert!(!text.contains(&h.canary), "{text}");
    assert!(text.contains("Content-Encoding \"gzip\""), "{text}");
    let log = captured_log();
    assert!(
        log.lines()
            .any(|l| l.contains("session=sesn_gzip") && l.contains("refused-encoding")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_goes_over_plain_http_only_where_the_rule_opts_in() {
    let h = Harness::new().await;
    let port = h.plain_upstream.addr.port();
    let (code, text) = h.curl(
        "sesn_cleartext",
        &format!("http://plaininject.test:{port}/echo"),
        &[],
    );
    assert_eq!(code, "403", "{text}");
    assert!(
        text.contains("egress to plaininject.test over plain http:// is not allowed by this environment's policy because the request would carry a credential in cleartext: use https:// instead"),
        "{text}"
    );
    assert!(
        h.plain_upstream
            .seen
            .authorizations
            .lock()
            .unwrap()
            .is_empty(),
        "nothing reached the upstream"
    );

    let (code, text) = h.curl(
        "sesn_cleartext",
        &format!("http://cleartext-ok.test:{port}/echo"),
        &[],
    );
    assert_eq!(code, "200", "{text}");
    assert!(!text.contains(&h.canary), "{text}");
    let seen = h.plain_upstream.seen.authorizations.lock().unwrap().clone();
    assert_eq!(seen, vec![format!("Bearer {}", h.canary)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_path_prefix_cannot_be_stepped_around() {
    let h = Harness::new().await;
    let base = format!("https://guarded.test:{}", h.tls_port());
    let (code, text) = h.curl("sesn_paths", &format!("{base}/echo"), &[]);
    assert_eq!(code, "200", "the inject rule after the deny works: {text}");
    let before = h.tls_upstream.seen.authorizations.lock().unwrap().len();
    for (path, sentence) in [
        ("/admin", "is not allowed by this environment's policy\n"),
        (
            "/x/../admin",
            "is not allowed by this environment's policy\n",
        ),
        ("/%61dmin", "is not allowed by this environment's policy\n"),
        (
            "/%2e%2e/admin",
            "is not allowed by this environment's policy\n",
        ),
        ("/admin;x", "send the plain path"),
        ("/x/..;/admin", "send the plain path"),
        ("/%2Fadmin", "send the plain path"),
    ] {
        let (code, text) = h.curl("sesn_paths", &format!("{base}{path}"), &["--path-as-is"]);
        assert_eq!(code, "403", "{path}: {text}");
        assert!(
            text.contains("egress to guarded.test is not allowed"),
            "{path}: {text}"
        );
        assert!(text.contains(sentence), "{path}: {text}");
    }
    assert_eq!(
        h.tls_upstream.seen.authorizations.lock().unwrap().len(),
        before,
        "none of them reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_not_proxied() {
    let h = Harness::new().await;
    // No rule names 127.0.0.1: through the proxy this would be refused as a loopback address.
    // A dev server in the workspace must stay reachable, so NO_PROXY sends it direct.
    let (code, text) = h.curl(
        "sesn_loopback",
        &format!("http://127.0.0.1:{}/echo", h.plain_upstream.addr.port()),
        &[],
    );
    assert_eq!(code, "200", "{text}");
    assert!(!text.contains("proxy-authorization"), "{text}");
    assert!(
        !captured_log().contains("session=sesn_loopback"),
        "the proxy never saw it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_host_gets_403_with_a_sentence() {
    let h = Harness::new().await;
    // https: answered inside the tunnel so curl shows the sentence
    let (code, text) = h.curl("sesn_deny", "https://api.nowhere.test/v1/x", &[]);
    assert_eq!(code, "403", "{text}");
    assert!(
        text.contains("egress to api.nowhere.test is not allowed by this environment's policy"),
        "{text}"
    );
    // plain http
    let (code, text) = h.curl("sesn_deny", "http://api.nowhere.test/v1/x", &[]);
    assert_eq!(code, "403", "{text}");
    assert!(
        text.contains("egress to api.nowhere.test is not allowed by this environment's policy"),
        "{text}"
    );
    assert_eq!(
        h.proxy.metrics().denied_by_policy.load(Ordering::Relaxed),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_names_resolving_to_loopback_are_refused() {
    let h = Harness::new().await;
    for (url, needle) in [
        // allowed by `*.example.com`, but resolves to 127.0.0.1
        (
            "https://rebind.example.com/",
            "it resolves to a loopback address (127.0.0.1)",
        ),
        (
            "http://rebind.example.com/",
            "it resolves to a loopback address (127.0.0.1)",
        ),
        // an exact rule with private = true still cannot reach metadata by name
        (
            "http://metadata.test/latest/meta-data/",
            "it resolves to a cloud metadata address (169.254.169.254)",
        ),
        (
            "https://metadata6.test/",
            "it resolves to a cloud metadata address (fd00:ec2::254)",
        ),
        // the IP itself: no rule names it
        (
            "http://169.254.169.254/latest/meta-data/",
            "egress to 169.254.169.254 is not allowed by this environment's policy",
        ),
    ] {
        let (code, text) = h.curl("sesn_ssrf", url, &[]);
        assert_eq!(code, "403", "{url}: {text}");
        assert!(text.contains(needle), "{url}: {text}");
    }
    assert_eq!(h.proxy.metrics().refused_address.load(Ordering::Relaxed), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_and_plain_http_for_allowed_hosts() {
    let h = Harness::new().await;
    // No interception: the client verifies the upstream's own certificate.
    let ca = h.upstream_ca.pem_path.display().to_string();
    let (code, text) = h.curl(
        "sesn_t",
        &format!("https://tunnel.test:{}/echo", h.tls_port()),
        &["--cacert", &ca],
    );
    assert_eq!(code, "200", "{text}");
    assert!(
        text.contains(&format!("host: tunnel.test:{}", h.tls_port())),
        "{text}"
    );
    assert_eq!(h.proxy.metrics().tunnels.load(Ordering::Relaxed), 1);
    let (code, text) = h.curl(
        "sesn_t",
        &format!("http://plain.test:{}/echo", h.plain_upstream.addr.port()),
        &[],
    );
    assert_eq!(code, "200", "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("proxy-authorization"),
        "the credential is not forwarded: {text}"
    );
}

/// One request on a new connection to the proxy as the holder of `auth` (a
/// `Proxy-Authorization` value): the connection (kept open) and the answer's head, or the whole
/// answer where the proxy closes the connection.
async fn ask_on_a_new_connection(
    proxy: std::net::SocketAddr,
    auth: &str,
) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut conn = tokio::net::TcpStream::connect(proxy).await.unwrap();
    conn.write_all(
        format!(
            "GET http://api.nowhere.test/ HTTP/1.1\r\nHost: api.nowhere.test\r\n\
             Proxy-Authorization: {auth}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    if String::from_utf8_lossy(&answer)
        .to_ascii_lowercase()
        .contains("connection: close")
    {
        conn.read_to_end(&mut answer).await.unwrap();
    }
    (conn, String::from_utf8_lossy(&answer).to_string())
}

/// At tiers 0 and 1 tools connect to the proxy itself (no relay in between), so the proxy caps
/// each session's open connections, at the tier-2 relay's number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_has_at_most_the_capped_number_of_connections_open() {
    use hands_egress::MAX_SESSION_CONNECTIONS;
    assert_eq!(
        MAX_SESSION_CONNECTIONS,
        hands_sandbox::MAX_EGRESS_CONNECTIONS
    );
    // Both ends of every connection are in this process.
    hands_sandbox::raise_open_files_limit();
    let h = Harness::new().await;
    let a = h.proxy.sessions().register("sesn_cap_a");
    let b = h.proxy.sessions().register("sesn_cap_b");
    let (a_auth, b_auth) = (a.proxy_authorization(), b.proxy_authorization());
    let mut open = Vec::new();
    for _ in 0..MAX_SESSION_CONNECTIONS {
        let (conn, head) = ask_on_a_new_connection(h.proxy.addr(), a_auth.expose_secret()).await;
        // A denied host: answered by the proxy, and the connection stays open (keep-alive).
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
        open.push(conn);
    }
    let (_, refused) = ask_on_a_new_connection(h.proxy.addr(), a_auth.expose_secret()).await;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert!(
        refused.contains(&format!(
            "this session has {MAX_SESSION_CONNECTIONS} connections open through the egress proxy"
        )),
        "{refused}"
    );
    // Another session's count is its own.
    let (_b_conn, head) = ask_on_a_new_connection(h.proxy.addr(), b_auth.expose_secret()).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    // One closes: once the proxy has seen it go, a new one is admitted.
    drop(open.pop());
    let mut admitted = false;
    for _ in 0..500 {
        let (conn, head) = ask_on_a_new_connection(h.proxy.addr(), a_auth.expose_secret()).await;
        if head.starts_with("HTTP/1.1 403") {
            open.push(conn);
            admitted = true;
            break;
        }
        assert!(head.starts_with("HTTP/1.1 429"), "{head}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(admitted, "no connection admitted after one closed");
    assert!(
        captured_log().contains("the session has the most connections it may have open at once"),
        "the burst is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cannot_use_another_sessions_credential() {
    let h = Harness::new().await;
    let a = h.proxy.sessions().register("sesn_a");
    let b = h.proxy.sessions().register("sesn_b");
    let b_url = b.proxy_url(h.proxy.addr());
    let b_token = b_url
        .expose_secret()
        .rsplit_once('@')
        .unwrap()
        .0
        .rsplit_once(':')
        .unwrap()
        .1
        .to_string();
    let target = format!("http://plain.test:{}/echo", h.plain_upstream.addr.port());
    let try_with = |proxy_url: &str| {
        let out = Command::new("curl")
            .env_clear()
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--proxy",
                proxy_url,
                &target,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let port = h.proxy.addr().port();
    assert_eq!(try_with(a.proxy_url(h.proxy.addr()).expose_secret()), "200");
    assert_eq!(
        try_with(&format!("http://{}:{b_token}@127.0.0.1:{port}", a.user())),
        "407"
    );
    assert_eq!(try_with(&format!("http://127.0.0.1:{port}")), "407");
    h.proxy.sessions().remove("sesn_b");
    assert_eq!(
        try_with(b_url.expose_secret()),
        "407",
        "a finished session's credential is dead"
    );
    assert_eq!(
        h.proxy.metrics().proxy_auth_failed.load(Ordering::Relaxed),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_guard_carries_the_env_and_its_credential_dies_with_it() {
    let h = Harness::new().await;
    let target = format!("http://plain.test:{}/echo", h.plain_upstream.addr.port());
    let session = h.proxy.open_session("sesn_guard");
    let proxy_url = session
        .env
        .iter()
        .find(|(k, _)| k == "HTTPS_PROXY")
        .unwrap()
        .1
        .clone();
    let bundle = session
        .env
        .iter()
        .find(|(k, _)| k == "SSL_CERT_FILE")
        .unwrap()
        .1
        .clone();
    assert_eq!(PathBuf::from(&bundle), h.proxy.ca_bundle());
    for k in [
        "HTTP_PROXY",
        "ALL_PROXY",
        "https_proxy",
        "GIT_SSL_CAINFO",
        "CURL_CA_BUNDLE",
        "REQUESTS_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
    ] {
        assert!(session.env.iter().any(|(n, _)| n == k), "{k}");
    }
    for k in ["NO_PROXY", "no_proxy"] {
        assert!(
            session
                .env
                .iter()
                .any(|(n, v)| n == k && v == "localhost,127.0.0.1,::1"),
            "{k}"
        );
    }
    let code = |url: &str| {
        let out = Command::new("curl")
            .env_clear()
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--proxy",
                url,
                &target,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    session.set_tool_call(Some("toolu_1"));
    assert_eq!(code(&proxy_url), "200");
    drop(session);
    assert_eq!(code(&proxy_url), "407");
    assert!(h.proxy.sessions().is_empty());

    // The session opened again (a new item for it) before the old guard went away: dropping
    // the old guard late leaves the new credential working.
    let proxy_of = |s: &hands_egress::SessionEgress| {
        s.env
            .iter()
            .find(|(k, _)| k == "HTTPS_PROXY")
            .unwrap()
            .1
            .clone()
    };
    let old = h.proxy.open_session("sesn_guard");
    let new = h.proxy.open_session("sesn_guard");
    drop(old);
    assert_eq!(code(&proxy_of(&new)), "200");
    drop(new);
    assert!(h.proxy.sessions().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_rule_is_enforced_inside_https() {
    let h = Harness::new().await;
    let url = format!("https://readonly.test:{}/echo", h.tls_port());
    let (code, text) = h.curl("sesn_ro", &url, &[]);
    assert_eq!(code, "200", "{text}");
    let (code, text) = h.curl("sesn_ro", &url, &["-X", "POST", "-d", "x=1"]);
    assert_eq!(code, "403", "{text}");
    assert!(
        text.contains("egress to readonly.test is not allowed by this environment's policy"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_with_an_untrusted_certificate_never_gets_the_secret() {
    let h = Harness::new().await;
    let url = format!(
        "https://wrongca.test:{}/echo",
        h.untrusted_upstream.addr.port()
    );
    let (code, text) = h.curl("sesn_mitm", &url, &[]);
    assert_eq!(code, "502", "{text}");
    assert!(
        text.contains("egress to wrongca.test failed: TLS with wrongca.test failed"),
        "{text}"
    );
    assert!(
        h.untrusted_upstream
            .seen
            .authorizations
            .lock()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn policy_errors_point_at_the_line() {
    let text = "[[rule]]\nhost = \"github.com\"\naction = \"inject\"\nheaders = { Authorization = \"Bearer {secret:gh\" }\n";
    let e = Policy::parse(text, "policy.toml").unwrap_err();
    assert_eq!(
        e.to_string(),
        "policy.toml:4:11: header \"Authorization\": unterminated {secret:NAME} placeholder"
    );
    // and a missing secret stops the proxy from starting, naming it
    let dir = tempfile::tempdir().unwrap();
    let text = "[[rule]]\nhost = \"github.com\"\naction = \"inject\"\nheaders = { Authorization = \"Bearer {secret:gh}\" }\n";
    let config = EgressConfig {
        policy: Policy::parse(text, "p").unwrap(),
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream_roots: UpstreamRoots::Webpki,
        resolver: Resolver::system(),
        bundle_dir: dir.path().to_path_buf(),
    };
    let err = EgressProxy::start(config, &StaticSecrets::new())
        .await
        .err()
        .unwrap();
    assert_eq!(err.to_string(), "secret \"gh\" is not set");
}

/// The CA bundle's directory is the proxy's own: a fresh `hands-egress-*` directory (mode 0700)
/// per proxy even with the same parent, so one another user made beforehand is never used,
/// and it is removed with the proxy.
#[tokio::test]
async fn each_proxy_writes_its_bundle_in_a_private_directory_of_its_own() {
    use std::os::unix::fs::PermissionsExt as _;
    let parent = tempfile::tempdir().unwrap();
    let config = || EgressConfig {
        policy: Policy::parse("", "p").unwrap(),
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream_roots: UpstreamRoots::Webpki,
        resolver: Resolver::system(),
        bundle_dir: parent.path().to_path_buf(),
    };
    let secrets = StaticSecrets::new();
    let one = EgressProxy::start(config(), &secrets).await.unwrap();
    let two = EgressProxy::start(config(), &secrets).await.unwrap();
    let dir = one.ca_bundle().parent().unwrap().to_path_buf();
    assert_ne!(Some(dir.as_path()), two.ca_bundle().parent());
    assert_eq!(dir.parent(), Some(parent.path()));
    let name = dir.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("hands-egress-"), "{name}");
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert!(one.ca_bundle().is_file());
    drop(one);
    assert!(!dir.exists(), "the bundle's directory outlived its proxy");
}

/// The `Proxy-Authorization` value of a session's proxy URL (`http://USER:TOKEN@HOST:PORT`).
fn proxy_authorization(session: &hands_egress::SessionEgress) -> String {
    use base64::Engine as _;
    let url = &session
        .env
        .iter()
        .find(|(k, _)| k == "HTTPS_PROXY")
        .unwrap()
        .1;
    let pair = url
        .strip_prefix("http://")
        .and_then(|rest| rest.rsplit_once('@'))
        .unwrap()
        .0;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_sessions_open_tunnel_and_intercepted_connection_are_cut() {
    let h = Harness::new().await;
    let session = h.proxy.open_session("sesn_cut");
    let auth = proxy_authorization(&session);
    let port = h.tls_port();
    let proxy_ca = h.dir.path().join("proxy-ca.pem");
    std::fs::write(&proxy_ca, h.proxy.ca_cert_pem()).unwrap();
    // A tunnel (allow-only host) and an intercepted connection (inject host), both working
    // and kept alive.
    let tcp = connect_tunnel(h.proxy.addr(), &auth, "tunnel.test", port).await;
    let mut tunnelled =
        https_sender(tcp, "tunnel.test", client_config(&h.upstream_ca.pem_path)).await;
    let tcp = connect_tunnel(h.proxy.addr(), &auth, "echo.test", port).await;
    let mut intercepted = https_sender(tcp, "echo.test", client_config(&proxy_ca)).await;
    let (tunnel_host, echo_host) = (format!("tunnel.test:{port}"), format!("echo.test:{port}"));
    for _ in 0..2 {
        assert_eq!(
            get(&mut tunnelled, &tunnel_host, "/echo").await.unwrap().0,
            200
        );
        assert_eq!(
            get(&mut intercepted, &echo_host, "/echo").await.unwrap().0,
            200
        );
    }
    let injected = h.tls_upstream.seen.authorizations.lock().unwrap().len();
    assert_eq!(injected, 2);

    drop(session);
    // The proxy closed both: the next request on each fails instead of going upstream (with
    // the secret attached, for the intercepted one). The timeout only bounds a hang.
    let bound = std::time::Duration::from_secs(30);
    let after = tokio::time::timeout(bound, get(&mut tunnelled, &tunnel_host, "/echo"))
        .await
        .expect("the tunnel request hung");
    assert!(after.is_err(), "the tunnel outlived its session: {after:?}");
    let after = tokio::time::timeout(bound, get(&mut intercepted, &echo_host, "/echo"))
        .await
        .expect("the intercepted request hung");
    assert!(
        after.is_err(),
        "the intercepted connection outlived its session: {after:?}"
    );
    assert_eq!(
        h.tls_upstream.seen.authorizations.lock().unwrap().len(),
        injected
    );
}
