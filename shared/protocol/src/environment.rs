//! The environment resource (PROTOCOL.md §3). A worker never creates environments; these types
//! serve ops tooling and devplane, and let a worker check it was pointed at a self-hosted one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `config` of an environment, discriminated on `type`. `{"type":"self_hosted"}` is the whole
/// self-hosted config; cloud configs carry fields this crate does not model.
#[derive(Clone, Debug, PartialEq)]
pub enum EnvironmentConfig {
    SelfHosted,
    /// `cloud` or anything newer, kept verbatim.
    Other(Value),
}

impl EnvironmentConfig {
    pub fn is_self_hosted(&self) -> bool {
        matches!(self, EnvironmentConfig::SelfHosted)
    }
}

impl Serialize for EnvironmentConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            EnvironmentConfig::SelfHosted => {
                serde_json::json!({"type": "self_hosted"}).serialize(s)
            }
            EnvironmentConfig::Other(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for EnvironmentConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(match v.get("type").and_then(Value::as_str) {
            Some("self_hosted") => EnvironmentConfig::SelfHosted,
            _ => EnvironmentConfig::Other(v),
        })
    }
}

/// `BetaEnvironment`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub id: String,
    #[serde(rename = "type", default = "environment_type")]
    pub kind: String,
    pub name: String,
    pub config: EnvironmentConfig,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// `organization`, `account`, or absent.
    #[serde(default)]
    pub scope: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub archived_at: Option<String>,
}

fn environment_type() -> String {
    "environment".to_owned()
}

/// Body of `POST /v1/environments`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreateEnvironmentRequest {
    pub name: String,
    pub config: EnvironmentConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn self_hosted_environment_round_trips() {
        let wire = json!({"id":"env_01","type":"environment","name":"self-hosted",
            "config":{"type":"self_hosted"},"description":null,"metadata":{},
            "scope":"organization","created_at":"2026-03-18T14:05:20Z",
            "updated_at":"2026-03-18T14:05:20Z","archived_at":null});
        let env: Environment = serde_json::from_value(wire.clone()).unwrap();
        assert!(env.config.is_self_hosted());
        assert_eq!(serde_json::to_value(&env).unwrap(), wire);
    }

    #[test]
    fn cloud_configs_are_kept_verbatim() {
        let c: EnvironmentConfig =
            serde_json::from_value(json!({"type":"cloud","networking":{"type":"unrestricted"}}))
                .unwrap();
        assert!(!c.is_self_hosted());
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"type":"cloud","networking":{"type":"unrestricted"}})
        );
    }
}
