//! What `*_SECRET_ARN` and `*_SSM_PARAMETER` may hold, parsed without any AWS dependency so a
//! mistyped reference is refused the same way with or without the `aws` feature.
//!
//! A Secrets Manager reference uses the form Amazon ECS documents for `valueFrom`:
//!
//! ```text
//! arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME[:JSON_KEY[:VERSION_STAGE[:VERSION_ID]]]
//! ```
//!
//! Empty trailing fields are allowed (`...:secret:prod-AbCdEf:key::`). With a JSON key the
//! secret string must be a JSON object and the key's value (a string) is the secret; without
//! one the whole secret string is. Secret names cannot contain `:`, so the split is unambiguous.
//!
//! An SSM parameter is `arn:PARTITION:ssm:REGION:ACCOUNT:parameter/NAME` (in `*_SECRET_ARN` or
//! `*_SSM_PARAMETER`) or a plain parameter name such as `/hands/prod/environment-key` (in
//! `*_SSM_PARAMETER`, in the default region). It is read with decryption, so `SecureString`
//! parameters work.

use std::fmt;

/// A Secrets Manager secret, and which part of which version of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretsManagerRef {
    /// The secret's ARN without the ECS-style suffixes: what `GetSecretValue` takes.
    pub secret_id: String,
    /// The region named in the ARN; the client is pointed there.
    pub region: String,
    pub json_key: Option<String>,
    pub version_stage: Option<String>,
    pub version_id: Option<String>,
}

/// An SSM Parameter Store parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SsmParameterRef {
    /// A name or an ARN: `GetParameter` takes either (an ARN is required for a parameter
    /// shared from another account).
    pub name: String,
    /// The region named in an ARN; `None` for a plain name (the default region is used).
    pub region: Option<String>,
}

/// Where an AWS-held secret lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AwsReference {
    SecretsManager(SecretsManagerRef),
    SsmParameter(SsmParameterRef),
}

impl AwsReference {
    /// The region the reference names, if it is an ARN.
    pub fn region(&self) -> Option<&str> {
        match self {
            AwsReference::SecretsManager(r) => Some(&r.region),
            AwsReference::SsmParameter(r) => r.region.as_deref(),
        }
    }
}

impl fmt::Display for SecretsManagerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.secret_id)?;
        if let Some(k) = &self.json_key {
            write!(f, " (JSON key {k:?})")?;
        }
        if let Some(s) = &self.version_stage {
            write!(f, " (stage {s})")?;
        }
        if let Some(v) = &self.version_id {
            write!(f, " (version {v})")?;
        }
        Ok(())
    }
}

impl fmt::Display for SsmParameterRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

const ARN_FORMS: &str = "expected arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME[:JSON_KEY[:VERSION_STAGE[:VERSION_ID]]] \
     or arn:PARTITION:ssm:REGION:ACCOUNT:parameter/NAME";

/// Prefixes of the secrets `hands` takes. A reference variable holding one was given the value
/// by mistake; saying so without echoing it keeps the mistake out of the logs.
const VALUE_PREFIXES: &[&str] = &["sk-ant-", "whsec_"];

fn refuse_a_value(text: &str) -> Result<(), String> {
    if VALUE_PREFIXES.iter().any(|p| text.starts_with(p)) {
        return Err(
            "holds what looks like a secret value, not a reference to one (not shown)".into(),
        );
    }
    Ok(())
}

/// Parses a `*_SECRET_ARN` value: a Secrets Manager secret or an SSM parameter ARN. Only text
/// that starts with `arn:` is quoted back in an error: anything else may be a value pasted
/// into the wrong variable.
pub fn parse_secret_arn(text: &str) -> Result<AwsReference, String> {
    let text = text.trim();
    refuse_a_value(text)?;
    let parts: Vec<&str> = text.split(':').collect();
    if parts[0] != "arn" {
        return Err(format!(
            "not an ARN (it does not start with arn:); {ARN_FORMS}"
        ));
    }
    if parts.len() < 6 {
        return Err(format!("{text:?} is not an ARN; {ARN_FORMS}"));
    }
    let (partition, service, region, account) = (parts[1], parts[2], parts[3], parts[4]);
    if partition.is_empty() || region.is_empty() || account.is_empty() {
        return Err(format!(
            "{text:?} lacks a partition, region or account; {ARN_FORMS}"
        ));
    }
    match service {
        "secretsmanager" => {
            if parts[5] != "secret" || parts.len() < 7 || parts[6].is_empty() {
                return Err(format!("{text:?} does not name a secret; {ARN_FORMS}"));
            }
            if parts.len() > 10 {
                return Err(format!(
                    "{text:?} has more than JSON_KEY:VERSION_STAGE:VERSION_ID after the secret name"
                ));
            }
            let field = |i: usize| {
                parts
                    .get(i)
                    .filter(|s| !s.is_empty())
                    .map(|s| (*s).to_owned())
            };
            Ok(AwsReference::SecretsManager(SecretsManagerRef {
                secret_id: parts[..7].join(":"),
                region: region.to_owned(),
                json_key: field(7),
                version_stage: field(8),
                version_id: field(9),
            }))
        }
        "ssm" => ssm_arn(text, &parts).map(AwsReference::SsmParameter),
        other => Err(format!(
            "{text:?} is an ARN of service {other:?}; {ARN_FORMS}"
        )),
    }
}

/// Parses a `*_SSM_PARAMETER` value: a parameter name or an SSM parameter ARN.
pub fn parse_ssm_parameter(text: &str) -> Result<SsmParameterRef, String> {
    let text = text.trim();
    refuse_a_value(text)?;
    if text.starts_with("arn:") {
        return match parse_secret_arn(text)? {
            AwsReference::SsmParameter(p) => Ok(p),
            AwsReference::SecretsManager(_) => Err(format!(
                "{text:?} is a Secrets Manager ARN; put it in the _SECRET_ARN variable instead"
            )),
        };
    }
    // Not quoted back: it is not a name, so it may be a value.
    if text.is_empty() || text.chars().any(char::is_whitespace) {
        return Err("not an SSM parameter name (empty, or it contains whitespace)".into());
    }
    Ok(SsmParameterRef {
        name: text.to_owned(),
        region: None,
    })
}

fn ssm_arn(text: &str, parts: &[&str]) -> Result<SsmParameterRef, String> {
    // A trailing `:N` or `:label` selects a version, as GetParameter allows for names.
    let resource = parts[5];
    let named = resource
        .strip_prefix("parameter/")
        .is_some_and(|n| !n.is_empty());
    if !named || parts.len() > 7 {
        return Err(format!("{text:?} does not name a parameter; {ARN_FORMS}"));
    }
    Ok(SsmParameterRef {
        name: text.to_owned(),
        region: Some(parts[3].to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:hands/prod-AbCdEf";

    fn sm(text: &str) -> SecretsManagerRef {
        match parse_secret_arn(text).unwrap() {
            AwsReference::SecretsManager(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_plain_secret_arn() {
        let r = sm(SECRET);
        assert_eq!(r.secret_id, SECRET);
        assert_eq!(r.region, "eu-west-1");
        assert_eq!(
            (r.json_key, r.version_stage, r.version_id),
            (None, None, None)
        );
    }

    #[test]
    fn the_ecs_suffixes_select_a_key_and_a_version() {
        let r = sm(&format!("{SECRET}:environment_key::"));
        assert_eq!(r.secret_id, SECRET);
        assert_eq!(r.json_key.as_deref(), Some("environment_key"));
        assert_eq!((r.version_stage, r.version_id), (None, None));

        let r = sm(&format!("{SECRET}::AWSPREVIOUS"));
        assert_eq!(r.json_key, None);
        assert_eq!(r.version_stage.as_deref(), Some("AWSPREVIOUS"));

        let r = sm(&format!("{SECRET}:k::0123-abcd"));
        assert_eq!(r.version_id.as_deref(), Some("0123-abcd"));
        assert!(r.to_string().contains("JSON key \"k\""));

        assert!(parse_secret_arn(&format!("{SECRET}:a:b:c:d")).is_err());
    }

    #[test]
    fn ssm_arns_and_names() {
        let arn = "arn:aws:ssm:us-east-2:123456789012:parameter/hands/prod/key";
        assert_eq!(
            parse_secret_arn(arn).unwrap(),
            AwsReference::SsmParameter(SsmParameterRef {
                name: arn.into(),
                region: Some("us-east-2".into())
            })
        );
        assert_eq!(
            parse_ssm_parameter(arn).unwrap().region.as_deref(),
            Some("us-east-2")
        );
        let p = parse_ssm_parameter("/hands/prod/key").unwrap();
        assert_eq!((p.name.as_str(), p.region), ("/hands/prod/key", None));
        assert!(parse_ssm_parameter("").is_err());
        assert!(parse_ssm_parameter("a b").is_err());
        let err = parse_ssm_parameter(SECRET).unwrap_err();
        assert!(err.contains("_SECRET_ARN"), "{err}");
        assert!(parse_secret_arn("arn:aws:ssm:us-east-1:1:document/x").is_err());
    }

    #[test]
    fn a_value_in_a_reference_variable_is_refused_without_being_quoted() {
        for text in [
            "sk-ant-oat01-canary",
            "whsec_canary",
            "canary value",
            "canary",
        ] {
            let err = parse_secret_arn(text).unwrap_err();
            assert!(!err.contains("canary"), "{err}");
        }
        for text in ["sk-ant-oat01-canary", "whsec_canary", "canary value"] {
            let err = parse_ssm_parameter(text).unwrap_err();
            assert!(!err.contains("canary"), "{err}");
        }
    }

    #[test]
    fn malformed_references_are_refused_with_the_expected_forms() {
        for bad in [
            "hands/prod",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:",
            "arn:aws:secretsmanager::123456789012:secret:x",
            "arn:aws:s3:::bucket/key",
        ] {
            let err = parse_secret_arn(bad).unwrap_err();
            assert!(
                err.contains("expected arn:") || err.contains("service"),
                "{bad}: {err}"
            );
        }
    }
}
