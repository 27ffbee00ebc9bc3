//! The real `hands` binary taking its secrets from AWS: the environment key from moto's Secrets
//! Manager (a JSON key of the secret, as ECS's `valueFrom` selects it) and the webhook signing
//! key from moto's SSM Parameter Store, with only the SDK's standard variables pointing it at
//! the fake. Without moto installed these skip with a printed reason, except under CI where
//! they fail (see `hands_secrets::moto`).

// Test helpers panic on setup failures; that is what a test wants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hands_secrets::moto::MotoServer;

const HANDS: &str = env!("CARGO_BIN_EXE_hands");
/// A hang guard, not a measurement.
const GUARD: Duration = Duration::from_secs(90);

/// `hands` with none of the caller's `ANTHROPIC_*`, `HANDS_*` or `AWS_*` variables.
fn hands() -> Command {
    let mut cmd = Command::new(HANDS);
    for (k, _) in std::env::vars() {
        if k.starts_with("ANTHROPIC_") || k.starts_with("HANDS_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// devplane playing `script`; gives the process and its announcement.
fn devplane(dir: &Path, script: &serde_json::Value) -> (Killed, serde_json::Value) {
    let path = dir.join("script.json");
    std::fs::write(&path, script.to_string()).unwrap();
    let mut child = hands()
        .args([
            "devplane",
            "--listen",
            "127.0.0.1:0",
            "--exit-when-done",
            "--script",
        ])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("devplane.log")).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    (Killed(child), info)
}

fn wait(child: &mut Killed, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + GUARD;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "{what} did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn hands_poll_serves_a_session_with_the_environment_key_from_secrets_manager() {
    let Some(moto) = MotoServer::start().unwrap() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = serde_json::json!({
        "name": "key-from-secrets-manager",
        "steps": [
            {"step": "tool_use", "name": "bash", "input": {"command": "echo served"},
             "expect": {"is_error": false, "text_equals": "served"}}
        ]
    });
    let (mut dp, info) = devplane(dir.path(), &script);
    let key = info["environment_key"].as_str().unwrap();
    let secret = serde_json::json!({"environment_key": key, "unrelated": "x"}).to_string();
    let arn = moto
        .create_secret("hands/test/worker", &secret)
        .await
        .unwrap();

    let poll = hands()
        .args(["poll", "--max-idle", "1s", "--workdir"])
        .arg(format!(
            "{}/{{session_id}}",
            dir.path().join("work").display()
        ))
        .env(
            "ANTHROPIC_ENVIRONMENT_ID",
            info["environment_id"].as_str().unwrap(),
        )
        .env("ANTHROPIC_BASE_URL", info["base_url"].as_str().unwrap())
        .env(
            "ANTHROPIC_ENVIRONMENT_KEY_SECRET_ARN",
            format!("{arn}:environment_key::"),
        )
        .envs(moto.env())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("poll.err")).unwrap())
        .spawn()
        .unwrap();
    let _poll = Killed(poll);
    // devplane exits 0 only if the call was answered as expected: the worker authenticated
    // with the key it read from Secrets Manager.
    let status = wait(&mut dp, "devplane");
    let log = std::fs::read_to_string(dir.path().join("poll.err")).unwrap();
    assert!(
        status.success(),
        "the session failed; hands poll said:\n{log}"
    );
    assert!(!log.contains(key), "the key reached the log");
}

fn stats_with(env: &[(&str, &str)], moto: &MotoServer, base_url: &str) -> Output {
    hands()
        .args(["stats", "--json"])
        .env("ANTHROPIC_ENVIRONMENT_ID", "env_secrets_test")
        .env("ANTHROPIC_BASE_URL", base_url)
        .envs(moto.env())
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_wrong_missing_or_doubly_configured_key_stops_the_binary_with_a_clear_error() {
    let Some(moto) = MotoServer::start().unwrap() else {
        return;
    };
    // No control plane is needed to fail before it: these never get that far, except the
    // wrong key, which the control plane (an unbound port) never sees either.
    let base_url = "http://127.0.0.1:9";
    let canary = "sk-ant-oat01-canary-from-ssm";
    let param = moto.put_parameter("/hands/test/key", canary).await.unwrap();

    let out = stats_with(
        &[
            ("ANTHROPIC_ENVIRONMENT_KEY", canary),
            ("ANTHROPIC_ENVIRONMENT_KEY_SSM_PARAMETER", &param),
        ],
        &moto,
        base_url,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "both ANTHROPIC_ENVIRONMENT_KEY and ANTHROPIC_ENVIRONMENT_KEY_SSM_PARAMETER are set"
        ),
        "{err}"
    );
    assert!(!err.contains("canary"), "{err}");

    let gone = "arn:aws:secretsmanager:us-east-1:123456789012:secret:hands/none-AbCdEf";
    let out = stats_with(
        &[("ANTHROPIC_ENVIRONMENT_KEY_SECRET_ARN", gone)],
        &moto,
        base_url,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("ANTHROPIC_ENVIRONMENT_KEY_SECRET_ARN")
            && err.contains(gone)
            && err.contains("ResourceNotFound"),
        "{err}"
    );

    // Read from SSM, then refused by an unreachable control plane: the error is about the
    // connection, and the key read from SSM is not in it.
    let out = stats_with(
        &[("ANTHROPIC_ENVIRONMENT_KEY_SSM_PARAMETER", "/hands/test/key")],
        &moto,
        base_url,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!err.contains("canary") && !err.contains("SSM"), "{err}");
}

#[tokio::test]
async fn hands_verify_reads_the_signing_key_from_ssm() {
    let Some(moto) = MotoServer::start().unwrap() else {
        return;
    };
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/webhooks/example_c_production_shape.json"
    );
    let delivery = std::fs::read(fixture).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&delivery).unwrap();
    let secret = v["secret"].as_str().unwrap();
    moto.put_parameter("/hands/test/signing", &format!("{secret}\n"))
        .await
        .unwrap();
    let verify = |param: &str| {
        let mut child = hands()
            .arg("verify")
            .env("ANTHROPIC_WEBHOOK_SIGNING_KEY_SSM_PARAMETER", param)
            .envs(moto.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(&delivery).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = verify("/hands/test/signing");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("valid:"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = verify("/hands/test/absent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("ParameterNotFound"),
        "{err}"
    );
}
