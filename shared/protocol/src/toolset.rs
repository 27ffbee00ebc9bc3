//! The agent toolset `agent_toolset_20260401` as it reaches a self-hosted worker (PROTOCOL.md §8):
//! the input of each built-in tool, and the content blocks a tool result is made of (§7.6).
//!
//! Inputs are deserialized leniently the way the reference workers do: unknown fields are
//! ignored, so a newer server adding a field never breaks a call.

use serde::{Deserialize, Serialize};

/// The built-in tools a self-hosted worker executes (`web_fetch`/`web_search` run server-side).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinTool {
    Bash,
    Read,
    Write,
    Edit,
    Glob,
    Grep,
}

impl BuiltinTool {
    pub const ALL: [BuiltinTool; 6] = [
        BuiltinTool::Bash,
        BuiltinTool::Read,
        BuiltinTool::Write,
        BuiltinTool::Edit,
        BuiltinTool::Glob,
        BuiltinTool::Grep,
    ];

    /// The tool's wire name (`agent.tool_use.name`).
    pub fn name(self) -> &'static str {
        match self {
            BuiltinTool::Bash => "bash",
            BuiltinTool::Read => "read",
            BuiltinTool::Write => "write",
            BuiltinTool::Edit => "edit",
            BuiltinTool::Glob => "glob",
            BuiltinTool::Grep => "grep",
        }
    }

    /// Looks a wire name up; `None` for names this worker does not own (ownership rule §7.5).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// `bash`: run a command in the session's persistent shell, or restart the shell.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BashInput {
    /// Omitted only together with `restart: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<bool>,
    /// `0` or absent means the runner's default (120 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// `read`: a text file (optionally a line range), an image, or a PDF.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadInput {
    pub file_path: String,
    /// `[start_line, end_line]`, 1-indexed and inclusive; `end_line <= 0` means to end of file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view_range: Option<(i64, i64)>,
}

/// `write`: replace a whole file, creating parent directories.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteInput {
    pub file_path: String,
    pub content: String,
}

/// `edit`: replace `old_string` by `new_string`, exactly once unless `replace_all`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditInput {
    pub file_path: String,
    pub old_string: String,
    pub new_string: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_all: Option<bool>,
}

/// `glob`: doublestar pattern, relative to `path` (default: the workdir).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobInput {
    pub pattern: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// `grep`: regular-expression search beneath `path` (default: the workdir).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrepInput {
    pub pattern: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// One content block of a tool result (`user.tool_result.content`, §7.6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    Text {
        text: String,
    },
    Image {
        source: MediaSource,
    },
    Document {
        source: MediaSource,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
    },
    SearchResult {
        source: String,
        title: String,
        content: Vec<SearchResultText>,
    },
}

impl ContentBlock {
    pub fn text(text: impl Into<String>) -> Self {
        ContentBlock::Text { text: text.into() }
    }
}

/// The text blocks inside a `search_result` block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchResultText {
    #[serde(rename = "type")]
    pub kind: TextKind,
    pub text: String,
}

/// The only `type` a nested text block may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextKind {
    Text,
}

/// Where an image's or document's bytes are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MediaSource {
    /// Inline bytes, standard base64 (`image/png`, `application/pdf`, ...).
    Base64 {
        media_type: String,
        data: String,
    },
    /// Inline plain text (documents only).
    Text {
        media_type: String,
        data: String,
    },
    Url {
        url: String,
    },
    File {
        file_id: String,
    },
}

/// What a tool call produced: the blocks to post and whether the call failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolOutput {
    pub content: Vec<ContentBlock>,
    pub is_error: bool,
}

/// The text the reference workers post for an empty result (§7.6).
pub const NO_OUTPUT: &str = "(no output)";

impl ToolOutput {
    /// A successful text result; empty text becomes `(no output)` as in the reference.
    pub fn ok(text: impl Into<String>) -> Self {
        Self::from_text(text.into(), false)
    }

    /// A failed result the model reads (`is_error: true`).
    pub fn error(text: impl Into<String>) -> Self {
        Self::from_text(text.into(), true)
    }

    pub fn blocks(content: Vec<ContentBlock>) -> Self {
        ToolOutput {
            content,
            is_error: false,
        }
    }

    fn from_text(text: String, is_error: bool) -> Self {
        let text = if text.is_empty() {
            NO_OUTPUT.to_owned()
        } else {
            text
        };
        ToolOutput {
            content: vec![ContentBlock::Text { text }],
            is_error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_ignore_unknown_fields_and_take_view_range_as_pair() {
        let read: ReadInput =
            serde_json::from_value(json!({"file_path":"a.txt","view_range":[1,-1],"future":true}))
                .unwrap();
        assert_eq!(read.view_range, Some((1, -1)));
        let bad = serde_json::from_value::<ReadInput>(json!({"file_path":"a","view_range":[1]}));
        assert!(bad.is_err());
    }

    #[test]
    fn content_blocks_have_the_wire_shape() {
        let img = ContentBlock::Image {
            source: MediaSource::Base64 {
                media_type: "image/png".into(),
                data: "AA==".into(),
            },
        };
        assert_eq!(
            serde_json::to_value(&img).unwrap(),
            json!({"type":"image","source":{"type":"base64","media_type":"image/png","data":"AA=="}})
        );
        let out = ToolOutput::ok("");
        assert_eq!(
            serde_json::to_value(&out).unwrap(),
            json!({"content":[{"type":"text","text":"(no output)"}],"is_error":false})
        );
    }

    #[test]
    fn tool_names_round_trip() {
        for t in BuiltinTool::ALL {
            assert_eq!(BuiltinTool::from_name(t.name()), Some(t));
        }
        assert_eq!(BuiltinTool::from_name("repl"), None);
    }
}
