//! Memory-store objects (PROTOCOL.md §9.7): memories, list items, and the bodies a worker sends
//! to sync a store. The endpoints accept only a sessions token or an API key, never the
//! environment key.
//!
//! `content_sha256` is the lowercase hex SHA-256 of the UTF-8 content; the server normalises
//! nothing, so a worker computes the same digest locally for change detection and preconditions.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Largest memory content the service stores (bytes).
pub const MAX_MEMORY_BYTES: usize = 102_400;
/// Longest memory path (bytes).
pub const MAX_MEMORY_PATH_BYTES: usize = 1024;
/// Most path segments.
pub const MAX_MEMORY_PATH_SEGMENTS: usize = 20;
/// The marker file the reference workers put in each mounted store (never synced).
pub const STORE_MARKER_FILE: &str = ".anthropic-memory-store";

/// `BetaManagedAgentsMemory`: a text document at a path in a store. `content` is `None` in the
/// `basic` view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    pub id: String,
    pub memory_store_id: String,
    pub path: String,
    pub content_sha256: String,
    pub content_size_bytes: u64,
    #[serde(default)]
    pub memory_version_id: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// One item of a list page: a memory, or a directory marker when listing with `depth=1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MemoryListItem {
    Memory(Memory),
    MemoryPrefix { path: String },
}

/// `view=` of memory reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryView {
    Basic,
    Full,
}

/// Body of `POST /v1/memory_stores/{id}/memories`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateMemoryRequest {
    pub path: String,
    pub content: String,
}

/// Body of `POST /v1/memory_stores/{id}/memories/{mem_id}`; omitted fields are unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateMemoryRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precondition: Option<Precondition>,
}

/// The state the stored memory must be in for an update to apply (else 409).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Precondition {
    ContentSha256 { content_sha256: String },
}

/// `DELETE` confirmation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedMemory {
    pub id: String,
}

/// The digest the server reports for `content`.
pub fn content_sha256(content: &[u8]) -> String {
    let digest = Sha256::digest(content);
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// Whether a memory path is one the service accepts: starts with `/`, 1-20 non-empty segments,
/// none `.` or `..`, no control characters, at most 1,024 bytes. A worker refuses anything else
/// before it becomes a local path (CATALOGUE M2).
pub fn is_valid_memory_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if path.len() > MAX_MEMORY_PATH_BYTES || path.chars().any(char::is_control) {
        return false;
    }
    let segments: Vec<&str> = rest.split('/').collect();
    !segments.is_empty()
        && segments.len() <= MAX_MEMORY_PATH_SEGMENTS
        && segments
            .iter()
            .all(|s| !s.is_empty() && *s != "." && *s != "..")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn list_items_and_memories_decode() {
        let page: crate::work::Page<MemoryListItem> = serde_json::from_value(json!({
            "data":[
                {"type":"memory","id":"mem_1","memory_store_id":"memstore_1","path":"/notes/a.md",
                 "content_sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                 "content_size_bytes":0,"memory_version_id":"memver_1","content":null,
                 "created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"},
                {"type":"memory_prefix","path":"/notes/deep/"}],
            "next_page":null}))
        .unwrap();
        assert!(matches!(&page.data[0], MemoryListItem::Memory(m) if m.content.is_none()));
        assert_eq!(
            page.data[1],
            MemoryListItem::MemoryPrefix {
                path: "/notes/deep/".into()
            }
        );
    }

    #[test]
    fn update_body_with_precondition() {
        let body = UpdateMemoryRequest {
            content: Some("x".into()),
            precondition: Some(Precondition::ContentSha256 {
                content_sha256: content_sha256(b""),
            }),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"content":"x","precondition":{"type":"content_sha256",
                "content_sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}})
        );
    }

    #[test]
    fn memory_paths() {
        for ok in ["/a", "/notes/todo.md", "/a/b/c"] {
            assert!(is_valid_memory_path(ok), "{ok}");
        }
        for bad in [
            "", "a", "/", "//a", "/a/../b", "/./a", "/a/", "/a\u{0}b", "/a\nb",
        ] {
            assert!(!is_valid_memory_path(bad), "{bad:?}");
        }
        let deep = format!("/{}", vec!["s"; 21].join("/"));
        assert!(!is_valid_memory_path(&deep));
    }
}
