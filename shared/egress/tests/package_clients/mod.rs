//! pip, npm and cargo through the proxy. Each downloads one package from a loopback registry
//! (its own test CA; every request must carry a token) with nothing but a session's tool
//! environment (the proxy URL with the session's credential, the CA bundle variables) and a
//! fresh home directory. The proxy injects the token; the client never has it. A test skips,
//! saying why, only when its client is not installed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::Digest as _;
use tokio::net::TcpListener;

use super::support::TestCa;
use super::{files_under, loopback, rand_u128};
use hands_egress::{EgressConfig, EgressProxy, Policy, Resolver, StaticSecrets, UpstreamRoots};

const HOST: &str = "registry.test";

const POLICY: &str = r#"
[[rule]]
host = "registry.test"
private = true
action = "inject"
headers = { Authorization = "Bearer {secret:registry_token}" }
"#;

/// Path -> (content type, body).
type Files = HashMap<String, (&'static str, Bytes)>;

/// A registry on loopback, the proxy in front of it, and a directory for the client.
struct Setup {
    dir: tempfile::TempDir,
    token: String,
    base: String,
    /// Every request the registry got: its path, and whether it carried the token.
    served: Arc<Mutex<Vec<(String, bool)>>>,
    proxy: EgressProxy,
}

impl Setup {
    /// `files` is given the registry's base URL (`https://registry.test:PORT`).
    async fn new(files: impl FnOnce(&str) -> Files) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let token = format!("regtoken{:032x}", rand_u128());
        let ca = TestCa::new(dir.path());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("https://{HOST}:{}", listener.local_addr().unwrap().port());
        let served = Arc::new(Mutex::new(Vec::new()));
        serve(
            listener,
            ca.server_config(&[HOST]),
            Arc::new(files(&base)),
            format!("Bearer {token}"),
            served.clone(),
        );
        let config = EgressConfig {
            policy: Policy::parse(POLICY, "registry-policy.toml").unwrap(),
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream_roots: UpstreamRoots::Only(ca.pem_path.clone()),
            resolver: Resolver::system().pin(HOST, loopback()),
            bundle_dir: dir.path().join("egress-ca"),
        };
        let secrets = StaticSecrets::new().with("registry_token", &token);
        let proxy = EgressProxy::start(config, &secrets).await.unwrap();
        Setup {
            dir,
            token,
            base,
            served,
            proxy,
        }
    }

    /// `program` with a cleared environment plus a fresh session's tool environment, in a
    /// fresh working directory; returns the command, the home and the working directory.
    fn client(&self, program: &Path, session: &str) -> (tokio::process::Command, PathBuf, PathBuf) {
        let home = self.dir.path().join(format!("home-{session}"));
        let work = self.dir.path().join(format!("work-{session}"));
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let grant = self.proxy.sessions().register(session);
        let mut cmd = tokio::process::Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("HOME", &home)
            .current_dir(&work);
        for (k, v) in self.proxy.tool_env(&grant) {
            cmd.env(k, v);
        }
        (cmd, home, work)
    }

    /// Runs `cmd`; its output, after checking it succeeded.
    async fn run(&self, mut cmd: tokio::process::Command, what: &str) -> String {
        let out = cmd.output().await.unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{what} failed: {text}");
        text
    }

    /// The registry served each of `paths`, and every request it got carried the token; the
    /// token is in none of `output` and the files under `dirs`.
    fn check(&self, paths: &[&str], output: &str, dirs: &[&Path]) {
        let served = self.served.lock().unwrap().clone();
        for path in paths {
            assert!(
                served.iter().any(|(p, _)| p == path),
                "{path} was not requested: {served:?}"
            );
        }
        assert!(
            served.iter().all(|(_, authorized)| *authorized),
            "a request reached the registry without the token: {served:?}"
        );
        assert!(!output.contains(&self.token), "the token is in the output");
        for dir in dirs {
            for file in files_under(dir) {
                let bytes = std::fs::read(&file).unwrap_or_default();
                assert!(
                    memchr::memmem::find(&bytes, self.token.as_bytes()).is_none(),
                    "the token is in {}",
                    file.display()
                );
            }
        }
    }
}

/// Serves `files` over TLS; a request without `authorization` gets 401, an unknown path 404.
fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    files: Arc<Files>,
    authorization: String,
    served: Arc<Mutex<Vec<(String, bool)>>>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, files, authorization, served) = (
                acceptor.clone(),
                files.clone(),
                authorization.clone(),
                served.clone(),
            );
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let authorized = req
                        .headers()
                        .get("authorization")
                        .is_some_and(|v| v.as_bytes() == authorization.as_bytes());
                    let path = req.uri().path().to_string();
                    served.lock().unwrap().push((path.clone(), authorized));
                    let (status, ctype, body) = match files.get(&path) {
                        _ if !authorized => (
                            StatusCode::UNAUTHORIZED,
                            "text/plain",
                            "token required\n".into(),
                        ),
                        Some((ctype, body)) => (StatusCode::OK, *ctype, body.clone()),
                        None => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
                    };
                    let mut resp = Response::new(Full::new(body).boxed_unsync());
                    *resp.status_mut() = status;
                    resp.headers_mut()
                        .insert("content-type", ctype.parse().unwrap());
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A gzipped tar of `entries` (path, contents), as npm and cargo packages are.
fn tar_gz(entries: &[(&str, &str)]) -> Bytes {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (path, contents) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        tar.append_data(&mut header, path, contents.as_bytes())
            .unwrap();
    }
    Bytes::from(tar.into_inner().unwrap().finish().unwrap())
}

/// A program on `PATH`, or `None`.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The Python interpreter behind `python3` when it has pip (its real path: a version
/// manager's shim may need variables the cleared environment lacks).
fn python_with_pip() -> Option<PathBuf> {
    let out = std::process::Command::new(on_path("python3")?)
        .args(["-c", "import sys, pip; print(sys.executable)"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pip_downloads_from_a_private_index_through_the_proxy() {
    let Some(python) = python_with_pip() else {
        eprintln!("skipping: no python3 with pip on PATH");
        return;
    };
    // A minimal wheel, zipped by Python itself.
    let scratch = tempfile::tempdir().unwrap();
    let name = "handsprobe-0.1.0-py3-none-any.whl";
    let wheel_path = scratch.path().join(name);
    let made = std::process::Command::new(&python)
        .arg("-c")
        .arg(
            "import sys, zipfile\n\
             z = zipfile.ZipFile(sys.argv[1], 'w')\n\
             z.writestr('handsprobe/__init__.py', '')\n\
             z.writestr('handsprobe-0.1.0.dist-info/METADATA', \
             'Metadata-Version: 2.1\\nName: handsprobe\\nVersion: 0.1.0\\n')\n\
             z.writestr('handsprobe-0.1.0.dist-info/WHEEL', 'Wheel-Version: 1.0\\n\
             Generator: hands-test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n')\n\
             z.writestr('handsprobe-0.1.0.dist-info/RECORD', '')\n\
             z.close()\n",
        )
        .arg(&wheel_path)
        .status()
        .unwrap();
    assert!(made.success());
    let wheel = Bytes::from(std::fs::read(&wheel_path).unwrap());
    let sha = hex(&sha2::Sha256::digest(&wheel));
    let setup = Setup::new(|base| {
        let page = format!(
            "<!DOCTYPE html><html><body>\
             <a href=\"{base}/files/{name}#sha256={sha}\">{name}</a></body></html>"
        );
        HashMap::from([
            (
                "/simple/handsprobe/".into(),
                ("text/html", Bytes::from(page)),
            ),
            (
                format!("/files/{name}"),
                ("application/octet-stream", wheel.clone()),
            ),
        ])
    })
    .await;

    let (mut cmd, home, work) = setup.client(&python, "sesn_pip");
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--no-input",
        "--dest",
        ".",
        "--index-url",
    ])
    .arg(format!("{}/simple/", setup.base))
    .arg("handsprobe");
    let output = setup.run(cmd, "pip download").await;
    assert_eq!(std::fs::read(work.join(name)).unwrap(), wheel);
    setup.check(
        &["/simple/handsprobe/", &format!("/files/{name}")],
        &output,
        &[&home, &work],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_fetches_a_package_from_a_private_registry_through_the_proxy() {
    let Some(npm) = on_path("npm") else {
        eprintln!("skipping: no npm on PATH");
        return;
    };
    let tarball = tar_gz(&[(
        "package/package.json",
        r#"{"name":"handsprobe","version":"0.1.0"}"#,
    )]);
    let integrity = {
        use base64::Engine as _;
        let digest = sha2::Sha512::digest(&tarball);
        format!(
            "sha512-{}",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    };
    let setup = Setup::new(|base| {
        let packument = serde_json::json!({
            "name": "handsprobe",
            "dist-tags": { "latest": "0.1.0" },
            "versions": { "0.1.0": {
                "name": "handsprobe",
                "version": "0.1.0",
                "dist": {
                    "tarball": format!("{base}/handsprobe/-/handsprobe-0.1.0.tgz"),
                    "integrity": integrity,
                },
            }},
        });
        HashMap::from([
            (
                "/handsprobe".into(),
                ("application/json", Bytes::from(packument.to_string())),
            ),
            (
                "/handsprobe/-/handsprobe-0.1.0.tgz".into(),
                ("application/octet-stream", tarball.clone()),
            ),
        ])
    })
    .await;

    let (mut cmd, home, work) = setup.client(&npm, "sesn_npm");
    cmd.args([
        "pack",
        "handsprobe@0.1.0",
        "--update-notifier=false",
        "--audit=false",
        "--fund=false",
        "--loglevel=error",
    ])
    .arg(format!("--registry={}/", setup.base));
    let output = setup.run(cmd, "npm pack").await;
    assert_eq!(
        std::fs::read(work.join("handsprobe-0.1.0.tgz")).unwrap(),
        tarball
    );
    setup.check(
        &["/handsprobe", "/handsprobe/-/handsprobe-0.1.0.tgz"],
        &output,
        &[&home, &work],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cargo_fetches_a_crate_from_a_private_sparse_registry_through_the_proxy() {
    // The cargo running these tests (not a rustup shim, which would look for its toolchains
    // under the fresh home).
    let cargo = PathBuf::from(std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into()));
    if !cargo.is_file() {
        eprintln!("skipping: no cargo at {}", cargo.display());
        return;
    }
    let krate = tar_gz(&[
        (
            "handsprobe-0.1.0/Cargo.toml",
            "[package]\nname = \"handsprobe\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        ),
        ("handsprobe-0.1.0/src/lib.rs", ""),
    ]);
    let cksum = hex(&sha2::Sha256::digest(&krate));
    let setup = Setup::new(|base| {
        let config = serde_json::json!({ "dl": format!("{base}/dl") });
        let entry = serde_json::json!({
            "name": "handsprobe", "vers": "0.1.0", "deps": [], "cksum": cksum,
            "features": {}, "yanked": false,
        });
        HashMap::from([
            (
                "/index/config.json".into(),
                ("application/json", Bytes::from(config.to_string())),
            ),
            (
                "/index/ha/nd/handsprobe".into(),
                ("text/plain", Bytes::from(format!("{entry}\n"))),
            ),
            (
                "/dl/handsprobe/0.1.0/download".into(),
                ("application/octet-stream", krate.clone()),
            ),
        ])
    })
    .await;

    let (mut cmd, home, work) = setup.client(&cargo, "sesn_cargo");
    // The rustc beside it, likewise (cargo asks it for the host's target).
    let rustc = cargo.with_file_name("rustc");
    if rustc.is_file() {
        cmd.env("RUSTC", rustc);
    }
    std::fs::write(
        work.join("Cargo.toml"),
        "[package]\nname = \"uses-handsprobe\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [dependencies]\nhandsprobe = { version = \"0.1.0\", registry = \"handstest\" }\n",
    )
    .unwrap();
    std::fs::create_dir_all(work.join("src")).unwrap();
    std::fs::write(work.join("src/lib.rs"), "").unwrap();
    cmd.arg("fetch")
        .env("CARGO_HOME", home.join(".cargo"))
        .env(
            "CARGO_REGISTRIES_HANDSTEST_INDEX",
            format!("sparse+{}/index/", setup.base),
        )
        .env("CARGO_TERM_COLOR", "never")
        .env("CARGO_NET_RETRY", "0");
    let output = setup.run(cmd, "cargo fetch").await;
    let lock = std::fs::read_to_string(work.join("Cargo.lock")).unwrap();
    assert!(lock.contains(&format!("checksum = \"{cksum}\"")), "{lock}");
    let cached = files_under(&home.join(".cargo/registry/cache"));
    assert!(
        cached
            .iter()
            .any(|f| f.ends_with("handsprobe-0.1.0.crate") && std::fs::read(f).unwrap() == krate),
        "{cached:?}"
    );
    setup.check(
        &[
            "/index/config.json",
            "/index/ha/nd/handsprobe",
            "/dl/handsprobe/0.1.0/download",
        ],
        &output,
        &[&home, &work],
    );
}
