//! Where `{secret:NAME}` comes from: the seam between the policy and the worker's secrets.
//!
//! The proxy only asks a [`SecretSource`] for a value by name, in the worker process. Env and
//! `*_FILE` are implemented here; Secrets Manager / SSM belong to the `shared/secrets` crate,
//! which plugs in by implementing this trait. Nothing here reads anything tool code can touch:
//! the worker's own environment is cleared before tools start, and `*_FILE` paths are the
//! operator's (tier 2 masks them inside the sandbox).

use std::collections::HashMap;

use secrecy::SecretString;

/// A secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {name:?} is not set: set {env} or {env}_FILE in the worker's environment")]
    Missing { name: String, env: String },
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

/// `{secret:github}` reads `GITHUB`, or the file named by `GITHUB_FILE` (trailing whitespace
/// trimmed), from the worker's environment: the same names `shared/secrets` uses.
#[derive(Debug, Default, Clone, Copy)]
pub struct EnvSecrets;

impl EnvSecrets {
    /// The variable that holds secret `name`.
    pub fn variable(name: &str) -> String {
        name.to_ascii_uppercase()
    }
}

impl SecretSource for EnvSecrets {
    fn resolve<'a>(&'a self, name: &'a str) -> SecretFuture<'a> {
        Box::pin(std::future::ready(self.resolve_now(name)))
    }
}

impl EnvSecrets {
    fn resolve_now(&self, name: &str) -> Result<SecretString, SecretError> {
        let env = EnvSecrets::variable(name);
        let value = if let Some(v) = std::env::var_os(&env) {
            v.into_string().map_err(|_| SecretError::Other {
                name: name.to_string(),
                message: format!("{env} is not UTF-8"),
            })?
        } else if let Some(path) = std::env::var_os(format!("{env}_FILE")) {
            let text = std::fs::read_to_string(&path).map_err(|error| SecretError::Unreadable {
                name: name.to_string(),
                path: path.to_string_lossy().into_owned(),
                error,
            })?;
            // files usually end in a newline; trailing whitespace is never part of a token
            text.trim_end().to_string()
        } else {
            return Err(SecretError::Missing {
                name: name.to_string(),
                env,
            });
        };
        if value.is_empty() {
            return Err(SecretError::Empty {
                name: name.to_string(),
            });
        }
        Ok(SecretString::from(value))
    }
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
                env: EnvSecrets::variable(name),
            });
        Box::pin(std::future::ready(found))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    // Env-var tests use names no other test touches; set_var is unsafe in edition 2024 because
    // other threads may read the environment, and these names are read by this test only.
    #[test]
    fn env_then_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tok");
        std::fs::write(&file, "from-file\n").unwrap();
        // SAFETY: the variables are unique to this test; nothing else reads them.
        unsafe {
            std::env::set_var("HANDS_EGRESS_T_FILEONLY_FILE", &file);
            std::env::set_var("HANDS_EGRESS_T_DIRECT", "direct");
        }
        let s = EnvSecrets;
        assert_eq!(
            s.resolve_now("hands_egress_t_fileonly")
                .unwrap()
                .expose_secret(),
            "from-file"
        );
        assert_eq!(
            s.resolve_now("hands_egress_t_direct")
                .unwrap()
                .expose_secret(),
            "direct"
        );
        let e = s.resolve_now("hands_egress_t_absent").unwrap_err();
        assert_eq!(
            e.to_string(),
            "secret \"hands_egress_t_absent\" is not set: set HANDS_EGRESS_T_ABSENT or HANDS_EGRESS_T_ABSENT_FILE in the worker's environment"
        );
    }
}
