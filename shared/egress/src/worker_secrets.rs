//! `{secret:NAME}` of the egress policy, read the way every other `hands` secret is: exactly one
//! of `NAME`, `NAME_FILE`, `NAME_SECRET_ARN` or `NAME_SSM_PARAMETER` (NAME upper-cased), through
//! `hands_secrets`, in the worker process before any tool starts. Shared by the `hands` binary
//! and the Lambda `session` function. (AWS sources need `hands-secrets`' `aws` feature, which
//! the binaries that want them turn on.)

use std::sync::Arc;

use hands_secrets::SecretVars;
use secrecy::SecretString;

use crate::secrets::{SecretError, SecretFuture, SecretSource};

type Lookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The egress proxy's [`SecretSource`] over `hands_secrets`.
pub struct WorkerSecrets {
    resolver: hands_secrets::Resolver,
    lookup: Lookup,
}

impl WorkerSecrets {
    /// Reads the worker's environment; AWS sources use `resolver` (shared, so its configuration
    /// is loaded once).
    pub fn from_env(resolver: hands_secrets::Resolver) -> WorkerSecrets {
        WorkerSecrets {
            resolver,
            lookup: Arc::new(|var| std::env::var(var).ok()),
        }
    }

    /// As [`WorkerSecrets::from_env`], with the variables from `lookup` instead.
    pub fn with_lookup(
        resolver: hands_secrets::Resolver,
        lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> WorkerSecrets {
        WorkerSecrets {
            resolver,
            lookup: Arc::new(lookup),
        }
    }

    /// The variable family of secret `name`: `{secret:github_token}` is `GITHUB_TOKEN*`.
    pub fn variable(name: &str) -> String {
        name.to_ascii_uppercase()
    }

    async fn read(&self, name: &str) -> Result<SecretString, SecretError> {
        let var = WorkerSecrets::variable(name);
        let other = |e: hands_secrets::SecretError| SecretError::Other {
            name: name.to_string(),
            message: e.to_string(),
        };
        let vars = SecretVars::from_lookup(&var, |v| (self.lookup)(v));
        let source = hands_secrets::SecretSource::select(&var, vars)
            .map_err(other)?
            .ok_or_else(|| other(hands_secrets::SecretError::NotSet { name: var.clone() }))?;
        let value = self.resolver.resolve(&source).await.map_err(other)?;
        Ok(SecretString::from(value.expose_secret().to_string()))
    }
}

impl SecretSource for WorkerSecrets {
    fn resolve<'a>(&'a self, name: &'a str) -> SecretFuture<'a> {
        Box::pin(self.read(name))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn with(vars: &[(&str, String)]) -> WorkerSecrets {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        WorkerSecrets {
            resolver: hands_secrets::Resolver::new(),
            lookup: Arc::new(move |k| map.get(k).cloned()),
        }
    }

    #[tokio::test]
    async fn each_source_and_each_mistake() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tok");
        std::fs::write(&file, "from-file\n").unwrap();
        let file = file.display().to_string();

        let s = with(&[("GH", "direct".into()), ("API_FILE", file.clone())]);
        assert_eq!(s.resolve("gh").await.unwrap().expose_secret(), "direct");
        assert_eq!(s.resolve("api").await.unwrap().expose_secret(), "from-file");
        assert_eq!(
            s.resolve("absent").await.unwrap_err().to_string(),
            "secret \"absent\": ABSENT is not set (nor ABSENT_FILE, ABSENT_SECRET_ARN or ABSENT_SSM_PARAMETER)"
        );

        let s = with(&[("GH", "direct".into()), ("GH_FILE", file)]);
        assert_eq!(
            s.resolve("gh").await.unwrap_err().to_string(),
            "secret \"gh\": both GH and GH_FILE are set; set exactly one of them"
        );
    }
}
