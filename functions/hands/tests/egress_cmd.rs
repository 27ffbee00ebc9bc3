//! `hands egress check` and `hands egress test` as an operator runs them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn hands(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hands"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn example() -> String {
    format!(
        "{}/../../events/egress-policy.example.toml",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn check_lists_rules_and_points_at_a_bad_line() {
    let (code, out, _) = hands(&["egress", "check", &example()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("secrets used: github_token, internal_api_token"),
        "{out}"
    );
    assert!(
        out.contains("line  10: inject  github.com -> authorization (basic)"),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("policy.toml");
    std::fs::write(&bad, "[[rule]]\nhost = \"a.com\"\naction = \"allow\"\n\n[[rule]]\nhost = \"*.b.com\"\nprivate = true\naction = \"allow\"\n").unwrap();
    let (code, _, err) = hands(&["egress", "check", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("policy.toml:7:11: `private = true` needs an exact host"),
        "{err}"
    );
}

#[test]
fn test_says_what_happens_to_a_request() {
    let (code, out, _) = hands(&[
        "egress",
        "test",
        &example(),
        "https://github.com/o/r.git/info/refs",
        "--no-resolve",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("rule: line 10 injects authorization (basic) (secret github_token)"),
        "{out}"
    );
    let (code, out, _) = hands(&[
        "egress",
        "test",
        &example(),
        "http://169.254.169.254/latest/meta-data/",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "refused: 403 \"egress to 169.254.169.254 is not allowed by this environment's policy\""
        ),
        "{out}"
    );
    let (code, out, _) = hands(&[
        "egress",
        "test",
        &example(),
        "https://api.internal.example.com/v1/x",
        "--method",
        "DELETE",
        "--no-resolve",
    ]);
    assert_eq!(code, 1, "{out}");
}

#[test]
fn a_worker_with_a_bad_egress_policy_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("policy.toml");
    std::fs::write(&bad, "[[rule]]\nhost = \"a.com\"\naction = \"permit\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hands"))
        .args([
            "poll",
            "--environment-id",
            "env_x",
            "--environment-key",
            "k",
            "--base-url",
            "http://127.0.0.1:9",
        ])
        .arg("--egress-policy")
        .arg(&bad)
        .env_remove("HANDS_EGRESS_POLICY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("policy.toml:3:10: unknown action \"permit\""),
        "{err}"
    );
}

/// `{secret:NAME}` is read like every other `hands` secret: a name set twice stops the start
/// with a sentence naming both variables, and never the value.
#[test]
fn a_doubly_configured_egress_secret_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[[rule]]\nhost = \"api.example.com\"\naction = \"inject\"\nheaders = { Authorization = \"Bearer {secret:hands_t_conflict}\" }\n",
    )
    .unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "from-the-file-0123456789\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hands"))
        .args([
            "poll",
            "--environment-id",
            "env_x",
            "--environment-key",
            "k",
            "--base-url",
            "http://127.0.0.1:9",
        ])
        .arg("--egress-policy")
        .arg(&policy)
        .env("HANDS_T_CONFLICT", "direct-value-0123456789")
        .env("HANDS_T_CONFLICT_FILE", &file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(
            "both HANDS_T_CONFLICT and HANDS_T_CONFLICT_FILE are set; set exactly one of them"
        ),
        "{err}"
    );
    assert!(
        !err.contains("direct-value") && !err.contains("from-the-file"),
        "{err}"
    );

    // The four variables are named when none is set.
    let out = Command::new(env!("CARGO_BIN_EXE_hands"))
        .args([
            "poll",
            "--environment-id",
            "env_x",
            "--environment-key",
            "k",
            "--base-url",
            "http://127.0.0.1:9",
        ])
        .arg("--egress-policy")
        .arg(&policy)
        .env_remove("HANDS_T_CONFLICT")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("HANDS_T_CONFLICT is not set (nor HANDS_T_CONFLICT_FILE, HANDS_T_CONFLICT_SECRET_ARN or HANDS_T_CONFLICT_SSM_PARAMETER)"),
        "{err}"
    );
}
