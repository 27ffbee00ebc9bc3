//! Skill version objects (PROTOCOL.md §9.6): what `GET /v1/skills/{id}/versions/{v}` returns
//! before the archive is fetched from `.../content`.

use serde::{Deserialize, Serialize};

/// Constant `type` tag of a skill version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkillVersionKind {
    #[default]
    SkillVersion,
}

/// A resolved skill version. `name` becomes the directory `<workdir>/skills/<name>/`, so a
/// worker must treat it as hostile (one path component, no `..`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillVersion {
    #[serde(rename = "type", default)]
    pub kind: SkillVersionKind,
    /// The concrete version id (what `latest` resolved to); used in the `/content` path.
    pub id: String,
    pub skill_id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub created_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn skill_version_round_trips() {
        let wire = json!({"type":"skill_version","id":"skver_2","skill_id":"skill_1",
            "name":"pdf-tools","description":"Work with PDFs","created_at":"2026-01-01T00:00:00Z"});
        let v: SkillVersion = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(v.name, "pdf-tools");
        assert_eq!(serde_json::to_value(&v).unwrap(), wire);
    }
}
