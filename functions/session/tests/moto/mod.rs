//! moto's server (`pip install "moto[server]"`) on a loopback port, as S3 for the snapshot
//! test. `HANDS_MOTO_SERVER` names `moto_server` (`.ci/run` sets it from
//! `tests/moto/install.sh`); without it the test runs that script itself. If moto cannot be
//! installed the test is skipped with a message, except under CI (`CI` set), where it fails.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    port: u16,
}

fn moto_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HANDS_MOTO_SERVER").map(PathBuf::from)
        && p.exists()
    {
        return Some(p);
    }
    let script = crate::repo().join("tests/moto/install.sh");
    eprintln!("HANDS_MOTO_SERVER not set; running {}", script.display());
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && path.exists()).then_some(path)
}

impl Moto {
    pub fn start() -> Option<Moto> {
        let Some(server) = moto_server() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "moto could not be installed (CI requires it)"
            );
            eprintln!("SKIPPED: moto could not be installed; the S3 snapshot test did not run");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server did not start");
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while moto.request("GET", "/", "").is_err() {
            assert!(Instant::now() < deadline, "moto_server never answered");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn request(&self, method: &str, path: &str, body: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    pub fn create_bucket(&self, bucket: &str) {
        let r = self.request("PUT", &format!("/{bucket}"), "").unwrap();
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }

    /// The workspace store the function uses, on this bucket, with dummy credentials.
    pub fn store(&self, bucket: &str) -> hands_lambda::S3WorkspaceStore {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "AKIDTEST", "test", None, None, "test",
            ))
            .build();
        hands_lambda::S3WorkspaceStore::new(
            aws_sdk_s3::Client::from_conf(config),
            bucket.to_owned(),
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
