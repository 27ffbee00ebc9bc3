//! The parent side of the isolation rows (tier 1 in `tier1.rs`, tier 2 in `isolation.rs`): run
//! the rows again in a child process of this test binary holding canary credentials, with an
//! "attacker" listening on every host address, then check that every row passed, that no canary
//! reached the output, and that nothing from the sandbox reached the attacker.

use std::io::Read as _;
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One tier's rows and the canaries its child holds.
pub struct CanaryRows {
    /// The tier, for messages ("tier 1").
    pub tier: &'static str,
    /// The libtest filter selecting the rows ("tier1::row_").
    pub filter: &'static str,
    /// How many rows must pass.
    pub rows: usize,
    /// Set to "1" in the child.
    pub child_var: &'static str,
    /// Carries the attacker's port to the child.
    pub port_var: &'static str,
    /// `ANTHROPIC_ENVIRONMENT_KEY`, `AWS_SECRET_ACCESS_KEY`, `AWS_ACCESS_KEY_ID`, `SERVICE_KEY`.
    pub environment_key: &'static str,
    pub aws_secret: &'static str,
    pub aws_key_id: &'static str,
    pub service_key: &'static str,
}

impl CanaryRows {
    pub fn run(&self) {
        // The attacker: listens on every host address; counts connections and bytes.
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicUsize::new(0));
        {
            let (connections, bytes) = (connections.clone(), bytes.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    connections.fetch_add(1, Ordering::SeqCst);
                    let mut buf = Vec::new();
                    let _ = (&stream).take(1 << 20).read_to_end(&mut buf);
                    bytes.fetch_add(buf.len(), Ordering::SeqCst);
                }
            });
        }
        let out = Command::new(std::env::current_exe().unwrap())
            .args([self.filter, "--include-ignored", "--test-threads=1"])
            .env(self.child_var, "1")
            .env(self.port_var, port.to_string())
            .env("ANTHROPIC_ENVIRONMENT_KEY", self.environment_key)
            .env("AWS_SECRET_ACCESS_KEY", self.aws_secret)
            .env("AWS_ACCESS_KEY_ID", self.aws_key_id)
            .env("SERVICE_KEY", self.service_key)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{stdout}");
        assert!(
            out.status.success() && stdout.contains(&format!("{} passed; 0 failed", self.rows)),
            "{} rows failed:\n{stdout}\n{stderr}",
            self.tier
        );
        for canary in [self.environment_key, self.aws_secret, self.service_key] {
            assert!(
                !stdout.contains(canary) && !stderr.contains(canary),
                "canary {canary} leaked"
            );
        }
        assert_eq!(
            (
                connections.load(Ordering::SeqCst),
                bytes.load(Ordering::SeqCst)
            ),
            (0, 0),
            "the attacker listener was reached from the sandbox"
        );
    }
}
