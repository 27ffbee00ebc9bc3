//! Reading a [`SecretSource`]: the file or the AWS call. Holds the AWS configuration so several
//! secrets share one credential chain and one region lookup.

#[cfg(feature = "aws")]
use std::sync::Arc;

use crate::error::SecretError;
use crate::source::SecretSource;
use crate::value::SecretValue;

/// Resolves sources into values. Cheap to clone; clones share the AWS configuration, which is
/// loaded on the first AWS source (never when every secret comes from env or files), once per
/// region an ARN names (the region of a plain SSM name comes from the default chain).
#[derive(Clone, Default)]
pub struct Resolver {
    #[cfg(feature = "aws")]
    aws: Arc<crate::aws::AwsConfigs>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl Resolver {
    /// A resolver that loads aws-config's default chain (env, profile, web identity, ECS and
    /// EC2 metadata; `AWS_ENDPOINT_URL*` honoured) the first time it meets an AWS source.
    pub fn new() -> Self {
        Self::default()
    }

    /// A resolver using this AWS configuration (a Lambda function that has loaded one already,
    /// a test pointed at a fake).
    #[cfg(feature = "aws")]
    pub fn with_aws_config(config: aws_config::SdkConfig) -> Self {
        Resolver {
            aws: Arc::new(crate::aws::AwsConfigs::preset(config)),
        }
    }

    /// Reads the source. A file or an AWS source is read again on every call, so a caller that
    /// wants rotation calls this again (or uses [`crate::Refresher`]).
    pub async fn resolve(&self, source: &SecretSource) -> Result<SecretValue, SecretError> {
        match source {
            SecretSource::Value { var, value } => {
                crate::value_from_text(var, var, value.expose_secret().to_owned())
            }
            SecretSource::File { var, path } => crate::file::read_secret_file(var, path),
            #[cfg(feature = "aws")]
            SecretSource::Aws { var, reference } => {
                let config = self.aws.for_region(reference.region()).await;
                crate::aws::fetch(&config, var, reference).await
            }
            // `SecretSource::select` refuses AWS sources without the feature; one built by hand
            // gets the same error.
            #[cfg(not(feature = "aws"))]
            SecretSource::Aws { var, .. } => Err(SecretError::NoAwsSupport {
                var: var.clone(),
                name: var
                    .trim_end_matches("_SECRET_ARN")
                    .trim_end_matches("_SSM_PARAMETER")
                    .to_owned(),
            }),
        }
    }

    /// Resolves `name` from the process environment: `Ok(None)` when none of its variables is
    /// set.
    pub async fn resolve_env(&self, name: &str) -> Result<Option<SecretValue>, SecretError> {
        match SecretSource::from_env(name)? {
            Some(source) => self.resolve(&source).await.map(Some),
            None => Ok(None),
        }
    }

    /// As [`Resolver::resolve_env`] for a secret that must be there: none of its variables set
    /// is [`SecretError::NotSet`], which names all four.
    pub async fn require_env(&self, name: &str) -> Result<SecretValue, SecretError> {
        self.resolve_env(name)
            .await?
            .ok_or_else(|| SecretError::NotSet {
                name: name.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SecretVars;

    #[tokio::test]
    async fn a_value_and_a_file_resolve_and_are_trimmed() {
        let r = Resolver::new();
        let vars = SecretVars {
            value: Some(SecretValue::new("sk-value\n")),
            ..SecretVars::default()
        };
        let s = SecretSource::select("K", vars).unwrap().unwrap();
        assert_eq!(r.resolve(&s).await.unwrap().expose_secret(), "sk-value");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "sk-file\n").unwrap();
        let vars = SecretVars {
            file: Some(path.clone()),
            ..SecretVars::default()
        };
        let s = SecretSource::select("K", vars).unwrap().unwrap();
        assert_eq!(r.resolve(&s).await.unwrap().expose_secret(), "sk-file");
        // Read on every call: a rotated file gives the new value.
        std::fs::write(&path, "sk-rotated").unwrap();
        assert_eq!(r.resolve(&s).await.unwrap().expose_secret(), "sk-rotated");
    }

    #[tokio::test]
    async fn a_required_secret_that_is_not_set_names_its_four_variables() {
        // A name no environment sets.
        let name = "HANDS_SECRETS_TEST_NEVER_SET_4F2A";
        let err = Resolver::new().require_env(name).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{name} is not set (nor {name}_FILE, {name}_SECRET_ARN or {name}_SSM_PARAMETER)"
            )
        );
        assert!(Resolver::new().resolve_env(name).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_blank_value_is_empty_not_unset() {
        let vars = SecretVars {
            value: Some(SecretValue::new("  ")),
            ..SecretVars::default()
        };
        let s = SecretSource::select("K", vars).unwrap().unwrap();
        let err = Resolver::new().resolve(&s).await.unwrap_err();
        assert!(err.is_empty_value());
        assert_eq!(err.to_string(), "K: the secret (K) is empty");
    }
}
