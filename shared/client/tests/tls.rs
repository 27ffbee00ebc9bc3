//! CATALOGUE C14: DNS and TLS failures fail closed. Certificate verification is never disabled:
//! a server with a certificate no trusted authority signed is refused before any request byte
//! (and the bearer) reaches it, and the failure is a transport error, retried like C4.
//!
//! The untrusted server is `openssl s_server` with a fresh self-signed certificate (Debian's
//! `openssl`, installed by `.ci/run` if missing).

// Test helpers panic on setup failures; that is what a test wants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hands_client::{ApiError, ClientConfig, ControlPlane, Credential, PollOptions};

const KEY: &str = "sk-ant-oat01-canary-c14-0123456789abcdef";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TLS server on loopback with a self-signed certificate for `localhost`; returns its port.
fn untrusted_tls_server(dir: &std::path::Path) -> (Server, u16) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is needed for this test (apt-get install openssl)");
    assert!(made.success(), "openssl could not make a certificate");
    // Bound by openssl a moment later: a port outside the ephemeral range (see child_port).
    let port = hands_test_support::child_port();
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept", &port.to_string()])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    // Wait until it accepts connections (a hang guard, not a measurement).
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (server, port);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("openssl s_server did not start");
}

fn poll_error(base: &str) -> ApiError {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cp = ControlPlane::new(ClientConfig::with_base_url(base)).unwrap();
        let res = tokio::time::timeout(
            Duration::from_secs(30),
            cp.poll(
                &Credential::environment_key(KEY),
                "env_x",
                &PollOptions::default(),
            ),
        )
        .await
        .expect("the call hung");
        res.expect_err("the call must fail")
    })
}

#[test]
fn c14_an_untrusted_certificate_is_refused_as_a_transport_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, port) = untrusted_tls_server(dir.path());
    let err = poll_error(&format!("https://localhost:{port}"));
    // `s_server -www` answers any request that gets through with an HTML status page, which
    // would surface as a decode error: a transport error proves the handshake was refused.
    assert!(matches!(err, ApiError::Transport(_)), "{err:?}");
    assert!(
        err.is_transient(),
        "retried like any transport failure (C4)"
    );
    let text = format!("{err} {err:?}");
    assert!(!text.contains(KEY), "{text}");
}

#[test]
fn c14_a_name_that_does_not_resolve_is_a_transport_error() {
    let err = poll_error("https://hands-c14-test.invalid");
    assert!(matches!(err, ApiError::Transport(_)), "{err:?}");
    assert!(err.is_transient());
}
