//! Secrets Manager and SSM Parameter Store reads (`aws` feature).

use std::collections::HashMap;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig, timeout::TimeoutConfig};

use crate::error::SecretError;
use crate::reference::{AwsReference, SecretsManagerRef, SsmParameterRef};
use crate::value::SecretValue;

/// The AWS configurations a [`crate::Resolver`] has loaded, by the region a reference names.
pub(crate) struct AwsConfigs {
    preset: Option<SdkConfig>,
    loaded: tokio::sync::Mutex<HashMap<Option<String>, SdkConfig>>,
}

impl Default for AwsConfigs {
    fn default() -> Self {
        AwsConfigs {
            preset: None,
            loaded: tokio::sync::Mutex::new(HashMap::new()),
        }
    }
}

impl AwsConfigs {
    pub(crate) fn preset(config: SdkConfig) -> Self {
        AwsConfigs {
            preset: Some(config),
            ..AwsConfigs::default()
        }
    }

    /// The configuration for a reference in `region` (`None`: the default chain's region).
    pub(crate) async fn for_region(&self, region: Option<&str>) -> SdkConfig {
        if let Some(config) = &self.preset {
            return config.clone();
        }
        let mut loaded = self.loaded.lock().await;
        let key = region.map(str::to_owned);
        if let Some(config) = loaded.get(&key) {
            return config.clone();
        }
        let config = load_config(region).await;
        loaded.insert(key, config.clone());
        config
    }
}

/// aws-config's default chain. A region named by the ARN is given to the loader, which then
/// does not look for one (on a host without `AWS_REGION` that lookup asks the EC2 instance
/// metadata service, a network call). The timeouts bound a start-up that waits on a secret:
/// without an operation timeout a black-holed endpoint would hang the process; the SDK's
/// standard retries (3 attempts) still apply within it.
async fn load_config(region: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    loader
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(15))
                .build(),
        )
        .load()
        .await
}

pub(crate) async fn fetch(
    config: &SdkConfig,
    var: &str,
    reference: &AwsReference,
) -> Result<SecretValue, SecretError> {
    match reference {
        AwsReference::SecretsManager(r) => secrets_manager(config, var, r).await,
        AwsReference::SsmParameter(r) => ssm_parameter(config, var, r).await,
    }
}

async fn secrets_manager(
    config: &SdkConfig,
    var: &str,
    r: &SecretsManagerRef,
) -> Result<SecretValue, SecretError> {
    // The ARN names the region; a secret in another region than the default is still found.
    let conf = aws_sdk_secretsmanager::config::Builder::from(config)
        .region(Region::new(r.region.clone()))
        .build();
    let client = aws_sdk_secretsmanager::Client::from_conf(conf);
    let out = client
        .get_secret_value()
        .secret_id(&r.secret_id)
        .set_version_stage(r.version_stage.clone())
        .set_version_id(r.version_id.clone())
        .send()
        .await
        .map_err(|e| SecretError::Aws {
            var: var.to_owned(),
            what: "Secrets Manager GetSecretValue of",
            reference: r.to_string(),
            message: aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string(),
        })?;
    let from = format!("Secrets Manager {r}");
    // A binary secret that is UTF-8 text is as good as a string one.
    let text = match (out.secret_string, out.secret_binary) {
        (Some(s), _) => s,
        (None, Some(b)) => String::from_utf8(b.into_inner()).map_err(|_| SecretError::NotText {
            var: var.to_owned(),
            from: from.clone(),
        })?,
        (None, None) => String::new(),
    };
    let text = match &r.json_key {
        Some(key) => crate::json_key(var, &r.secret_id, &text, key)?,
        None => text,
    };
    crate::value_from_text(var, &from, text)
}

async fn ssm_parameter(
    config: &SdkConfig,
    var: &str,
    r: &SsmParameterRef,
) -> Result<SecretValue, SecretError> {
    let mut conf = aws_sdk_ssm::config::Builder::from(config);
    if let Some(region) = &r.region {
        conf = conf.region(Region::new(region.clone()));
    } else if config.region().is_none() {
        return Err(SecretError::BadReference {
            var: var.to_owned(),
            reason: format!(
                "no AWS region for SSM parameter {r}: set AWS_REGION, or give the parameter's ARN"
            ),
        });
    }
    let client = aws_sdk_ssm::Client::from_conf(conf.build());
    let out = client
        .get_parameter()
        .name(&r.name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| SecretError::Aws {
            var: var.to_owned(),
            what: "SSM GetParameter of",
            reference: r.to_string(),
            message: aws_sdk_ssm::error::DisplayErrorContext(&e).to_string(),
        })?;
    let text = out.parameter.and_then(|p| p.value).unwrap_or_default();
    crate::value_from_text(var, &format!("SSM parameter {r}"), text)
}

/// Against moto's server on loopback (see [`crate::moto`] for when these skip).
#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::moto::MotoServer;
    use crate::{Refresher, Resolver, SecretSource, SecretVars};

    fn moto() -> Option<MotoServer> {
        MotoServer::start().unwrap()
    }

    fn source(vars: &[(&str, &str)]) -> SecretSource {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (format!("K{k}"), (*v).to_owned()))
            .collect();
        SecretSource::select("K", SecretVars::from_lookup("K", |k| map.get(k).cloned()))
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn secrets_manager_whole_string_json_key_and_version_stage() {
        let Some(moto) = moto() else { return };
        let resolver = Resolver::with_aws_config(moto.sdk_config().await);
        let plain = moto
            .create_secret("hands/plain", "sk-plain\n")
            .await
            .unwrap();
        let got = resolver
            .resolve(&source(&[("_SECRET_ARN", &plain)]))
            .await
            .unwrap();
        assert_eq!(got.expose_secret(), "sk-plain");

        let json = r#"{"environment_key": "sk-json-1", "n": 2}"#;
        let arn = moto.create_secret("hands/json", json).await.unwrap();
        let whole = resolver
            .resolve(&source(&[("_SECRET_ARN", &arn)]))
            .await
            .unwrap();
        assert_eq!(whole.expose_secret(), json);
        let keyed = source(&[("_SECRET_ARN", &format!("{arn}:environment_key::"))]);
        assert_eq!(
            resolver.resolve(&keyed).await.unwrap().expose_secret(),
            "sk-json-1"
        );

        // A rotation: the current version changes, the previous stays reachable by stage.
        moto.put_secret_value(&arn, r#"{"environment_key": "sk-json-2"}"#)
            .await
            .unwrap();
        assert_eq!(
            resolver.resolve(&keyed).await.unwrap().expose_secret(),
            "sk-json-2"
        );
        let previous = source(&[(
            "_SECRET_ARN",
            &format!("{arn}:environment_key:AWSPREVIOUS:"),
        )]);
        assert_eq!(
            resolver.resolve(&previous).await.unwrap().expose_secret(),
            "sk-json-1"
        );

        let missing_key = source(&[("_SECRET_ARN", &format!("{arn}:nope"))]);
        let err = resolver
            .resolve(&missing_key)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"nope\"") && err.contains("no such key"),
            "{err}"
        );
        assert!(!err.contains("sk-json"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_secret_names_the_variable_and_the_arn_without_any_value() {
        let Some(moto) = moto() else { return };
        let resolver = Resolver::with_aws_config(moto.sdk_config().await);
        let arn = moto
            .create_secret("hands/exists", "sk-canary")
            .await
            .unwrap();
        let gone = "arn:aws:secretsmanager:us-east-1:123456789012:secret:hands/gone-AbCdEf";
        let err = resolver
            .resolve(&source(&[("_SECRET_ARN", gone)]))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "K_SECRET_ARN: Secrets Manager GetSecretValue of {gone}: "
            )),
            "{err}"
        );
        assert!(err.contains("ResourceNotFound"), "{err}");
        assert!(!err.contains("canary") && !arn.is_empty());
    }

    #[tokio::test]
    async fn ssm_secure_string_by_name_by_arn_and_through_secret_arn() {
        let Some(moto) = moto() else { return };
        let resolver = Resolver::with_aws_config(moto.sdk_config().await);
        let arn = moto
            .put_parameter("/hands/test/key", "sk-ssm\n")
            .await
            .unwrap();
        assert!(arn.starts_with("arn:aws:ssm:us-east-1:"), "{arn}");
        for vars in [
            [("_SSM_PARAMETER", "/hands/test/key")],
            [("_SSM_PARAMETER", arn.as_str())],
            [("_SECRET_ARN", arn.as_str())],
        ] {
            let got = resolver.resolve(&source(&vars)).await.unwrap();
            assert_eq!(got.expose_secret(), "sk-ssm", "{vars:?}");
        }
        let err = resolver
            .resolve(&source(&[("_SSM_PARAMETER", "/hands/test/absent")]))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("K_SSM_PARAMETER: SSM GetParameter of /hands/test/absent: "),
            "{err}"
        );
        assert!(err.contains("ParameterNotFound"), "{err}");
    }

    #[tokio::test]
    async fn a_refresher_sees_a_rotated_secret() {
        let Some(moto) = moto() else { return };
        let resolver = Resolver::with_aws_config(moto.sdk_config().await);
        let arn = moto
            .create_secret("hands/rotating", "sk-old")
            .await
            .unwrap();
        let source = source(&[("_SECRET_ARN", &arn)]);
        let first = resolver.resolve(&source).await.unwrap();
        let mut refresher =
            Refresher::new(source, resolver, Some(first)).every(Duration::from_millis(20));
        moto.put_secret_value(&arn, "sk-new").await.unwrap();
        let changed = tokio::time::timeout(Duration::from_secs(30), refresher.changed())
            .await
            .expect("the rotation was not seen")
            .unwrap();
        assert_eq!(changed.expose_secret(), "sk-new");
    }
}
