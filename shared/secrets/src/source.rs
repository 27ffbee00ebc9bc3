//! Which of a secret's four variables is set, and what that source gives when read.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::SecretError;
use crate::reference::{AwsReference, parse_secret_arn, parse_ssm_parameter};
use crate::value::SecretValue;

/// How often a file source is re-read by [`crate::Refresher`]: cheap, and a mounted secret
/// (Kubernetes, Docker) changes in place.
pub const FILE_REFRESH: Duration = Duration::from_secs(10);
/// How often an AWS source is re-read: rotation takes effect within minutes at a cost of about
/// 300 API calls a day per secret.
pub const AWS_REFRESH: Duration = Duration::from_secs(300);

/// The raw settings for one secret `NAME`, from the process environment or from parsed flags
/// (a CLI whose flags fall back to these variables builds this from its arguments).
#[derive(Clone, Debug, Default)]
pub struct SecretVars {
    /// `NAME`: the value itself.
    pub value: Option<SecretValue>,
    /// `NAME_FILE`: a file holding it.
    pub file: Option<PathBuf>,
    /// `NAME_SECRET_ARN`: a Secrets Manager secret or an SSM parameter ARN.
    pub secret_arn: Option<String>,
    /// `NAME_SSM_PARAMETER`: an SSM parameter name or ARN.
    pub ssm_parameter: Option<String>,
}

impl SecretVars {
    /// Reads `NAME`, `NAME_FILE`, `NAME_SECRET_ARN` and `NAME_SSM_PARAMETER` from the process
    /// environment. An empty variable counts as unset (compose files and templates leave them so).
    pub fn from_env(name: &str) -> Self {
        Self::from_lookup(name, |var| std::env::var(var).ok())
    }

    /// As [`SecretVars::from_env`], with another lookup (a test's map, a config file).
    pub fn from_lookup(name: &str, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |suffix: &str| lookup(&format!("{name}{suffix}")).filter(|v| !v.is_empty());
        SecretVars {
            value: get("").map(SecretValue::new),
            file: get("_FILE").map(PathBuf::from),
            secret_arn: get("_SECRET_ARN"),
            ssm_parameter: get("_SSM_PARAMETER"),
        }
    }
}

/// Where one named secret comes from. `Display` names the variable and, for files and AWS,
/// the path or ARN; never the value.
#[derive(Clone, Debug)]
pub enum SecretSource {
    /// `NAME`: given directly.
    Value { var: String, value: SecretValue },
    /// `NAME_FILE`.
    File { var: String, path: PathBuf },
    /// `NAME_SECRET_ARN` or `NAME_SSM_PARAMETER`.
    Aws {
        var: String,
        reference: AwsReference,
    },
}

impl SecretSource {
    /// The source for `name` from the process environment; `Ok(None)` when none is set.
    pub fn from_env(name: &str) -> Result<Option<SecretSource>, SecretError> {
        Self::select(name, SecretVars::from_env(name))
    }

    /// Chooses the one source set in `vars`. Two or more set is an error naming two of them;
    /// a malformed ARN or parameter name is refused here, before anything is fetched; so is an
    /// AWS source in a build without the `aws` feature.
    pub fn select(name: &str, vars: SecretVars) -> Result<Option<SecretSource>, SecretError> {
        let set: Vec<String> = [
            vars.value.is_some().then(|| name.to_owned()),
            vars.file.is_some().then(|| format!("{name}_FILE")),
            vars.secret_arn
                .is_some()
                .then(|| format!("{name}_SECRET_ARN")),
            vars.ssm_parameter
                .is_some()
                .then(|| format!("{name}_SSM_PARAMETER")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if let [first, second, ..] = set.as_slice() {
            return Err(SecretError::Conflict {
                first: first.clone(),
                second: second.clone(),
            });
        }
        let Some(var) = set.into_iter().next() else {
            return Ok(None);
        };
        let bad = |reason: String| SecretError::BadReference {
            var: var.clone(),
            reason,
        };
        let reference = if let Some(value) = vars.value {
            return Ok(Some(SecretSource::Value { var, value }));
        } else if let Some(path) = vars.file {
            return Ok(Some(SecretSource::File { var, path }));
        } else if let Some(arn) = &vars.secret_arn {
            parse_secret_arn(arn).map_err(bad)?
        } else if let Some(p) = &vars.ssm_parameter {
            AwsReference::SsmParameter(parse_ssm_parameter(p).map_err(bad)?)
        } else {
            return Ok(None);
        };
        if !cfg!(feature = "aws") {
            return Err(SecretError::NoAwsSupport {
                var,
                name: name.to_owned(),
            });
        }
        Ok(Some(SecretSource::Aws { var, reference }))
    }

    /// The variable that selected this source (`NAME`, `NAME_FILE`, ...).
    pub fn var(&self) -> &str {
        match self {
            SecretSource::Value { var, .. }
            | SecretSource::File { var, .. }
            | SecretSource::Aws { var, .. } => var,
        }
    }

    /// The file, for a file source: a sandbox should hide it from tool code.
    pub fn file_path(&self) -> Option<&Path> {
        match self {
            SecretSource::File { path, .. } => Some(path),
            _ => None,
        }
    }

    /// How often re-reading is worthwhile: `None` for a value given directly, which cannot
    /// change; [`FILE_REFRESH`] for a file; [`AWS_REFRESH`] for Secrets Manager and SSM.
    pub fn refresh_interval(&self) -> Option<Duration> {
        match self {
            SecretSource::Value { .. } => None,
            SecretSource::File { .. } => Some(FILE_REFRESH),
            SecretSource::Aws { .. } => Some(AWS_REFRESH),
        }
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Value { var, .. } => f.write_str(var),
            SecretSource::File { var, path } => write!(f, "{var} ({})", path.display()),
            SecretSource::Aws {
                var,
                reference: AwsReference::SecretsManager(r),
            } => write!(f, "{var} (Secrets Manager {r})"),
            SecretSource::Aws {
                var,
                reference: AwsReference::SsmParameter(r),
            } => write!(f, "{var} (SSM parameter {r})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const NAME: &str = "HANDS_TEST_KEY";
    const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:k-AbCdEf";

    fn select(vars: &[(&str, &str)]) -> Result<Option<SecretSource>, SecretError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (format!("{NAME}{k}"), (*v).to_owned()))
            .collect();
        SecretSource::select(NAME, SecretVars::from_lookup(NAME, |k| map.get(k).cloned()))
    }

    #[test]
    fn none_set_is_none_and_empty_variables_count_as_unset() {
        assert!(select(&[]).unwrap().is_none());
        assert!(select(&[("", ""), ("_FILE", "")]).unwrap().is_none());
    }

    #[test]
    fn each_variable_selects_its_source() {
        let s = select(&[("", "sk-canary")]).unwrap().unwrap();
        assert_eq!(s.to_string(), NAME);
        assert!(!format!("{s:?}").contains("canary"));
        assert_eq!(s.refresh_interval(), None);

        let s = select(&[("_FILE", "/run/secrets/k")]).unwrap().unwrap();
        assert_eq!(s.var(), "HANDS_TEST_KEY_FILE");
        assert_eq!(s.file_path(), Some(Path::new("/run/secrets/k")));
        assert_eq!(s.to_string(), "HANDS_TEST_KEY_FILE (/run/secrets/k)");
        assert_eq!(s.refresh_interval(), Some(FILE_REFRESH));

        let arn = select(&[("_SECRET_ARN", ARN)]);
        let ssm = select(&[("_SSM_PARAMETER", "/hands/k")]);
        if cfg!(feature = "aws") {
            let s = arn.unwrap().unwrap();
            assert_eq!(
                s.to_string(),
                format!("HANDS_TEST_KEY_SECRET_ARN (Secrets Manager {ARN})")
            );
            assert_eq!(s.refresh_interval(), Some(AWS_REFRESH));
            let s = ssm.unwrap().unwrap();
            assert_eq!(
                s.to_string(),
                "HANDS_TEST_KEY_SSM_PARAMETER (SSM parameter /hands/k)"
            );
        } else {
            let err = arn.unwrap_err().to_string();
            assert!(
                err.starts_with(
                    "HANDS_TEST_KEY_SECRET_ARN is set but this binary was built without AWS support"
                ),
                "{err}"
            );
            assert!(ssm.unwrap_err().to_string().contains("without AWS support"));
        }
    }

    #[test]
    fn two_sources_are_a_conflict_naming_both_variables() {
        let err = select(&[("", "sk-canary"), ("_FILE", "/k")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "both HANDS_TEST_KEY and HANDS_TEST_KEY_FILE are set; set exactly one of them"
        );
        let err = select(&[("_FILE", "/k"), ("_SECRET_ARN", ARN)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("HANDS_TEST_KEY_FILE and HANDS_TEST_KEY_SECRET_ARN"),
            "{err}"
        );
        let err = select(&[("_SECRET_ARN", ARN), ("_SSM_PARAMETER", "/p")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("HANDS_TEST_KEY_SECRET_ARN and HANDS_TEST_KEY_SSM_PARAMETER"),
            "{err}"
        );
    }

    #[test]
    fn a_malformed_reference_is_refused_before_any_fetch() {
        let err = select(&[("_SECRET_ARN", "my-secret")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("HANDS_TEST_KEY_SECRET_ARN: not an ARN (it does not start with arn:)")
                && !err.contains("my-secret"),
            "{err}"
        );
        let err = select(&[("_SSM_PARAMETER", ARN)]).unwrap_err().to_string();
        assert!(err.contains("Secrets Manager ARN"), "{err}");
    }
}
