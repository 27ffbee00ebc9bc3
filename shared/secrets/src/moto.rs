//! Test support (feature `test-support`): moto's AWS fake on loopback, seeded through the SDK.
//!
//! The server is `moto_server` from a virtualenv: `HANDS_MOTO_SERVER` names it, else
//! `target/moto-venv/bin/moto_server` in the workspace (what `tests/moto/install.sh` creates).
//! When neither exists, [`MotoServer::start`] gives `Ok(None)` and the test skips with the
//! printed reason, except under CI (`CI` set and not `false`/`0`), where it is an error: CI
//! installs moto, so a missing one means the AWS tests would silently not run.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};

/// The region and dummy credentials the fake is used with.
pub const REGION: &str = "us-east-1";
const ACCESS_KEY: &str = "testing";
const SECRET_KEY: &str = "testing";
/// A hang guard for the server to listen, not a measurement.
const START_GUARD: Duration = Duration::from_secs(60);

/// A running `moto_server`, killed on drop.
pub struct MotoServer {
    child: Child,
    endpoint: String,
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn locate() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("HANDS_MOTO_SERVER") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "HANDS_MOTO_SERVER={} is not a file",
                path.display()
            ))
        };
    }
    let default =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/moto-venv/bin/moto_server");
    if default.is_file() {
        return Ok(default);
    }
    Err(format!(
        "moto is not installed: run tests/moto/install.sh or set HANDS_MOTO_SERVER (looked for {})",
        default.display()
    ))
}

impl MotoServer {
    /// Starts a fresh server on a free loopback port and waits until it listens. `Ok(None)`:
    /// moto is not installed and this is not CI (the reason is printed); `Err`: moto is
    /// required or installed but would not start.
    pub fn start() -> Result<Option<MotoServer>, String> {
        let bin = match locate() {
            Ok(bin) => bin,
            Err(why) if in_ci() => return Err(format!("{why} (required under CI)")),
            Err(why) => {
                eprintln!("skipping the AWS part of this test: {why}");
                return Ok(None);
            }
        };
        // A port picked by the OS; the tiny race with another process is retried below.
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("picking a port: {e}"))?
                .port();
            let child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting {}: {e}", bin.display()))?;
            let mut server = MotoServer {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
            };
            let deadline = Instant::now() + START_GUARD;
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(Some(server));
                }
                if let Ok(Some(_)) = server.child.try_wait() {
                    break; // exited: the port was taken, try another
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "{} did not listen on port {port} within {START_GUARD:?}",
                        bin.display()
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Err(format!("{} exited at start three times", bin.display()))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The variables that point a child process's AWS SDK at this server.
    pub fn env(&self) -> [(&'static str, String); 4] {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", REGION.into()),
        ]
    }

    /// An SDK configuration pointed at this server, independent of the process environment.
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                ACCESS_KEY, SECRET_KEY, None, None, "moto",
            ))
            .load()
            .await
    }

    /// Creates a Secrets Manager secret holding `value`; gives its ARN.
    pub async fn create_secret(&self, name: &str, value: &str) -> Result<String, String> {
        let client = aws_sdk_secretsmanager::Client::new(&self.sdk_config().await);
        let out = client
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .map_err(|e| aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string())?;
        out.arn.ok_or_else(|| "CreateSecret gave no ARN".to_owned())
    }

    /// Puts a new current version of a secret (a rotation).
    pub async fn put_secret_value(&self, secret_id: &str, value: &str) -> Result<(), String> {
        let client = aws_sdk_secretsmanager::Client::new(&self.sdk_config().await);
        client
            .put_secret_value()
            .secret_id(secret_id)
            .secret_string(value)
            .send()
            .await
            .map_err(|e| aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string())?;
        Ok(())
    }

    /// Creates (or overwrites) a `SecureString` parameter; gives its ARN.
    pub async fn put_parameter(&self, name: &str, value: &str) -> Result<String, String> {
        let client = aws_sdk_ssm::Client::new(&self.sdk_config().await);
        client
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| aws_sdk_ssm::error::DisplayErrorContext(e).to_string())?;
        let out = client
            .get_parameter()
            .name(name)
            .send()
            .await
            .map_err(|e| aws_sdk_ssm::error::DisplayErrorContext(e).to_string())?;
        out.parameter
            .and_then(|p| p.arn)
            .ok_or_else(|| "GetParameter gave no ARN".to_owned())
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
