//! Where `{secret:NAME}` comes from: the seam between the policy and the worker's secrets.
//!
//! The proxy only asks a [`SecretSource`] for a value by name, in the worker process. The
//! `hands` binary implements it over `shared/secrets` (`NAME`, `NAME_FILE`, `NAME_SECRET_ARN`
//! or `NAME_SSM_PARAMETER`); [`StaticSecrets`] holds fixed values for tests and embedders. The
//! worker's own environment is cleared before tools start, so tool code never sees the
//! variables.

use std::collections::HashMap;

use secrecy::SecretString;

/// A secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {name:?} is not set")]
    Missing { name: String },
    #[error("secret {name:?}: cannot read {path}: {error}")]
    Unreadable {
        name: String,
        path: String,
        error: std::io::Error,
    },
    #[error("secret {name:?} is empty")]
    Empty { name: String },
    #[error("secret {name:?}: {message}")]
    Other { name: String, message: String },
}

/// The future a [`SecretSource`] returns (boxed: sources are used as trait objects).
pub type SecretFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<SecretString, SecretError>> + Send + 'a>,
>;

/// Resolves a secret by the name used in `{secret:NAME}`. Asynchronous because the AWS sources
/// (Secrets Manager, SSM) of `shared/secrets` are network calls; the proxy resolves every name
/// once, at start, and refuses to start when one is missing.
pub trait SecretSource: Send + Sync {
    fn resolve<'a>(&'a self, name: &'a str) -> SecretFuture<'a>;
}

/// Fixed values: tests, and callers that resolved secrets elsewhere.
#[derive(Default)]
pub struct StaticSecrets(HashMap<String, SecretString>);

impl StaticSecrets {
    pub fn new() -> StaticSecrets {
        StaticSecrets::default()
    }

    pub fn with(mut self, name: &str, value: &str) -> StaticSecrets {
        self.0
            .insert(name.to_string(), SecretString::from(value.to_string()));
        self
    }
}

impl SecretSource for StaticSecrets {
    fn resolve<'a>(&'a self, name: &'a str) -> SecretFuture<'a> {
        let found = self
            .0
            .get(name)
            .cloned()
            .ok_or_else(|| SecretError::Missing {
                name: name.to_string(),
            });
        Box::pin(std::future::ready(found))
    }
}
