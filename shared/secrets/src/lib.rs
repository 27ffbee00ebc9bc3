//! Where a named secret comes from, resolved into a value that never prints.
//!
//! Every secret `NAME` the `hands` entry points take (`ANTHROPIC_ENVIRONMENT_KEY`,
//! `ANTHROPIC_WEBHOOK_SIGNING_KEY`, a `{secret:NAME}` of the egress proxy) may come from exactly
//! one of four variables:
//!
//! | variable | source |
//! |---|---|
//! | `NAME` | the value itself |
//! | `NAME_FILE` | a file, at most 64 KiB of UTF-8; a file other users can read is logged as a warning |
//! | `NAME_SECRET_ARN` | AWS Secrets Manager (`GetSecretValue`) or, given an `arn:...:ssm:...:parameter/...`, SSM Parameter Store |
//! | `NAME_SSM_PARAMETER` | SSM Parameter Store (`GetParameter` with decryption), by name or ARN |
//!
//! Setting two of them is a configuration error naming both; an empty variable counts as unset.
//! Trailing whitespace is trimmed from every value, whatever its source (files and
//! `--secret-string file://...` usually end in a newline); a value that is only whitespace is
//! [`SecretError::Empty`]. The Secrets Manager reference may select a JSON key and a version
//! the way Amazon ECS's `valueFrom` does; see [`reference`].
//!
//! AWS needs the `aws` cargo feature. It is a default feature of this crate, but the
//! workspace's `hands-secrets` dependency turns default features off (so `hands` can be built
//! without AWS): a crate that wants AWS sources asks for
//! `hands-secrets = { workspace = true, features = ["aws"] }`. Without it, `NAME_SECRET_ARN` and
//! `NAME_SSM_PARAMETER` are refused with [`SecretError::NoAwsSupport`]. With it, credentials,
//! region and endpoints come from aws-config's default chain, so the SDK's `AWS_ENDPOINT_URL`
//! and `AWS_ENDPOINT_URL_SECRETS_MANAGER` / `AWS_ENDPOINT_URL_SSM` point it at a local fake.
//! IAM: `secretsmanager:GetSecretValue` on the secret, or `ssm:GetParameter` on the parameter
//! plus `kms:Decrypt` on its key for a `SecureString` under a customer-managed key.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hands_secrets::SecretError> {
//! use hands_secrets::{Resolver, SecretSource};
//! let resolver = Resolver::new(); // share it: AWS configuration is loaded once, lazily
//! if let Some(source) = SecretSource::from_env("ANTHROPIC_ENVIRONMENT_KEY")? {
//!     let key = resolver.resolve(&source).await?;
//!     // key.expose_secret() where it is used; `{key:?}` prints `SecretValue(<redacted>)`
//! }
//! # Ok(()) }
//! ```
//!
//! This crate must never put a secret value into an error, a log line or a `Debug` string:
//! errors name variables, paths, ARNs and JSON keys only.

mod error;
mod file;
pub mod reference;
mod refresh;
mod resolver;
mod source;
mod value;

#[cfg(feature = "aws")]
mod aws;
#[cfg(all(feature = "aws", any(test, feature = "test-support")))]
pub mod moto;

pub use error::SecretError;
pub use file::{MAX_SECRET_BYTES, read_secret_file, secret_files};
pub use reference::{AwsReference, SecretsManagerRef, SsmParameterRef};
pub use refresh::Refresher;
pub use resolver::Resolver;
pub use source::{AWS_REFRESH, FILE_REFRESH, SecretSource, SecretVars};
pub use value::SecretValue;

/// Resolves `name` from the process environment with a fresh [`Resolver`]: `Ok(None)` when
/// none of its four variables is set. Several secrets should share one resolver instead.
pub async fn resolve_env(name: &str) -> Result<Option<SecretValue>, SecretError> {
    match SecretSource::from_env(name)? {
        Some(source) => Resolver::new().resolve(&source).await.map(Some),
        None => Ok(None),
    }
}

/// The one normalisation every source gets: trailing whitespace off, and nothing left is an
/// error.
fn value_from_text(var: &str, from: &str, mut text: String) -> Result<SecretValue, SecretError> {
    text.truncate(text.trim_end().len());
    if text.is_empty() {
        return Err(SecretError::Empty {
            var: var.to_owned(),
            from: from.to_owned(),
        });
    }
    Ok(SecretValue::new(text))
}

/// The string at `key` of a JSON object secret (ECS's `json-key`). The error says what was
/// wrong with the shape, never what the text was: serde_json's syntax errors carry only a line
/// and column, and are reduced to those anyway.
// Only Secrets Manager references select a JSON key.
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
fn json_key(var: &str, reference: &str, text: &str, key: &str) -> Result<String, SecretError> {
    let problem = |problem: String| SecretError::JsonKey {
        var: var.to_owned(),
        reference: reference.to_owned(),
        key: key.to_owned(),
        problem,
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        problem(format!(
            "the secret is not JSON (syntax error at line {} column {})",
            e.line(),
            e.column()
        ))
    })?;
    let serde_json::Value::Object(mut map) = value else {
        return Err(problem("the secret is JSON but not an object".into()));
    };
    match map.remove(key) {
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(_) => Err(problem("the key's value is not a string".into())),
        None => Err(problem("the secret has no such key".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keys_select_a_string_and_errors_never_echo_the_text() {
        let text = r#"{"environment_key":"sk-canary","n":1}"#;
        assert_eq!(
            json_key("V", "arn", text, "environment_key").unwrap(),
            "sk-canary"
        );
        for (text, key, want) in [
            (text, "missing", "no such key"),
            (text, "n", "not a string"),
            ("[\"sk-canary\"]", "k", "not an object"),
            (
                "sk-canary",
                "k",
                "not JSON (syntax error at line 1 column 1)",
            ),
            ("{\"k\": \"sk-canary", "k", "not JSON"),
        ] {
            let err = json_key("V", "arn", text, key).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
            assert!(!err.contains("canary"), "{err}");
            assert!(
                err.starts_with(&format!("V: JSON key {key:?} of arn:")),
                "{err}"
            );
        }
    }

    #[test]
    fn trailing_whitespace_is_trimmed_everywhere_and_blank_is_empty() {
        assert_eq!(
            value_from_text("V", "x", "  a b\t\n".into())
                .unwrap()
                .expose_secret(),
            "  a b"
        );
        assert!(
            value_from_text("V", "x", " \n".into())
                .unwrap_err()
                .is_empty_value()
        );
    }
}
