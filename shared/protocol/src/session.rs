//! The session object a worker fetches once per item (PROTOCOL.md §6.3, §7.1, §9.6, §9.7):
//! status, the agent's skills and tools, resources (memory stores) and metadata.
//!
//! Only the fields a worker reads are typed; the session carries many more (usage, stats,
//! budget...) which are ignored on input.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `status` of a session.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SessionStatus {
    Rescheduling,
    Running,
    Idle,
    /// Also covers archived sessions; a worker runs nothing for them.
    Terminated,
    Other(String),
}

impl SessionStatus {
    pub fn as_str(&self) -> &str {
        match self {
            SessionStatus::Rescheduling => "rescheduling",
            SessionStatus::Running => "running",
            SessionStatus::Idle => "idle",
            SessionStatus::Terminated => "terminated",
            SessionStatus::Other(s) => s,
        }
    }
}

impl Serialize for SessionStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SessionStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match String::deserialize(d)?.as_str() {
            "rescheduling" => SessionStatus::Rescheduling,
            "running" => SessionStatus::Running,
            "idle" => SessionStatus::Idle,
            "terminated" => SessionStatus::Terminated,
            other => SessionStatus::Other(other.to_owned()),
        })
    }
}

/// One entry of `agent.skills`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillRef {
    /// `anthropic` or `custom`.
    #[serde(rename = "type")]
    pub kind: String,
    pub skill_id: String,
    /// A version id or `latest`.
    pub version: String,
}

/// The agent snapshot inside a session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionAgent {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub skills: Vec<SkillRef>,
    /// Tool definitions (toolset entries, custom tools), kept raw: the worker only looks at them.
    #[serde(default)]
    pub tools: Vec<Value>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A `memory_store` session resource (§9.7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStoreResource {
    pub memory_store_id: String,
    /// `read_write` or `read_only`.
    pub access: String,
    pub mount_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
}

impl MemoryStoreResource {
    pub fn read_only(&self) -> bool {
        self.access == "read_only"
    }
}

/// A session resource: memory stores are the only kind a self-hosted session can have; any
/// other kind is kept raw.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionResource {
    MemoryStore(MemoryStoreResource),
    Other(Value),
}

impl Serialize for SessionResource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SessionResource::MemoryStore(m) => {
                let mut v = serde_json::to_value(m).map_err(serde::ser::Error::custom)?;
                if let Value::Object(map) = &mut v {
                    map.insert("type".to_owned(), Value::String("memory_store".to_owned()));
                }
                v.serialize(s)
            }
            SessionResource::Other(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for SessionResource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        if v.get("type").and_then(Value::as_str) == Some("memory_store")
            && let Ok(m) = MemoryStoreResource::deserialize(&v)
        {
            return Ok(SessionResource::MemoryStore(m));
        }
        Ok(SessionResource::Other(v))
    }
}

/// `BetaManagedAgentsSession`, the fields a worker uses plus the rest kept raw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    #[serde(rename = "type", default = "session_type")]
    pub kind: String,
    pub status: SessionStatus,
    pub agent: SessionAgent,
    #[serde(default)]
    pub resources: Vec<SessionResource>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub environment_id: String,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

fn session_type() -> String {
    "session".to_owned()
}

impl Session {
    pub fn memory_stores(&self) -> impl Iterator<Item = &MemoryStoreResource> {
        self.resources.iter().filter_map(|r| match r {
            SessionResource::MemoryStore(m) => Some(m),
            SessionResource::Other(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wire() -> Value {
        json!({"id":"sesn_1","type":"session","status":"running","environment_id":"env_1",
            "agent":{"id":"agent_1","name":"coder","type":"agent","version":1,
                "skills":[{"type":"custom","skill_id":"skill_1","version":"latest"}],
                "tools":[{"type":"agent_toolset_20260401"}]},
            "resources":[{"type":"memory_store","memory_store_id":"memstore_1","access":"read_only",
                          "mount_path":"/mnt/memory/notes"},
                         {"type":"file","file_id":"f_1"}],
            "metadata":{"repo":"x"},"created_at":"2026-01-01T00:00:00Z"})
    }

    #[test]
    fn session_round_trips_and_exposes_what_workers_read() {
        let s: Session = serde_json::from_value(wire()).unwrap();
        assert_eq!(s.status, SessionStatus::Running);
        assert_eq!(s.agent.skills[0].version, "latest");
        let stores: Vec<_> = s.memory_stores().collect();
        assert_eq!(stores.len(), 1);
        assert!(stores[0].read_only());
        assert!(matches!(s.resources[1], SessionResource::Other(_)));
        assert_eq!(serde_json::to_value(&s).unwrap(), wire());
    }

    #[test]
    fn unknown_status_is_kept() {
        let mut w = wire();
        w["status"] = json!("hibernating");
        let s: Session = serde_json::from_value(w).unwrap();
        assert_eq!(s.status, SessionStatus::Other("hibernating".into()));
    }
}
