//! The error body every endpoint answers with (PROTOCOL.md §2), its `error.type` values, and the
//! stable `error.details.error_code` strings clients branch on.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `error.type` (§2). Unknown values are kept so a newer server never breaks a client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorType {
    InvalidRequest,
    Authentication,
    Billing,
    Permission,
    NotFound,
    RateLimit,
    Timeout,
    Api,
    Overloaded,
    Conflict,
    MemoryPreconditionFailed,
    MemoryPathConflict,
    Other(String),
}

impl ErrorType {
    pub fn as_str(&self) -> &str {
        match self {
            ErrorType::InvalidRequest => "invalid_request_error",
            ErrorType::Authentication => "authentication_error",
            ErrorType::Billing => "billing_error",
            ErrorType::Permission => "permission_error",
            ErrorType::NotFound => "not_found_error",
            ErrorType::RateLimit => "rate_limit_error",
            ErrorType::Timeout => "timeout_error",
            ErrorType::Api => "api_error",
            ErrorType::Overloaded => "overloaded_error",
            ErrorType::Conflict => "conflict_error",
            ErrorType::MemoryPreconditionFailed => "memory_precondition_failed_error",
            ErrorType::MemoryPathConflict => "memory_path_conflict_error",
            ErrorType::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "invalid_request_error" => ErrorType::InvalidRequest,
            "authentication_error" => ErrorType::Authentication,
            "billing_error" => ErrorType::Billing,
            "permission_error" => ErrorType::Permission,
            "not_found_error" => ErrorType::NotFound,
            "rate_limit_error" => ErrorType::RateLimit,
            "timeout_error" => ErrorType::Timeout,
            "api_error" => ErrorType::Api,
            "overloaded_error" => ErrorType::Overloaded,
            "conflict_error" => ErrorType::Conflict,
            "memory_precondition_failed_error" => ErrorType::MemoryPreconditionFailed,
            "memory_path_conflict_error" => ErrorType::MemoryPathConflict,
            other => ErrorType::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(ErrorType::parse(&s))
    }
}

/// Stable `error.details.error_code` values. The ones marked *devplane* are the emulator's
/// choice where the real service's code is unpublished (§14); workers must not depend on them.
pub mod codes {
    /// Heartbeat CAS mismatch; `details.current_state` holds the lease (§4.4). Published.
    pub const HEARTBEAT_PRECONDITION_FAILED: &str = "heartbeat_precondition_failed";
    /// Published (§3).
    pub const ENVIRONMENT_NOT_FOUND: &str = "environment_not_found";
    /// Published (§3).
    pub const ENVIRONMENT_ARCHIVED: &str = "environment_archived";
    /// *devplane*: unknown work item.
    pub const WORK_NOT_FOUND: &str = "work_not_found";
    /// *devplane*: ack of an item that is no longer claimable (already acked or stopped).
    pub const WORK_ALREADY_ACKNOWLEDGED: &str = "work_already_acknowledged";
    /// *devplane*: stop of an item that is already stopped.
    pub const WORK_ALREADY_STOPPED: &str = "work_already_stopped";
    /// *devplane*: heartbeat on an item that was never acked (still queued).
    pub const WORK_NOT_ACKNOWLEDGED: &str = "work_not_acknowledged";
    /// *devplane*: unknown session.
    pub const SESSION_NOT_FOUND: &str = "session_not_found";
    /// *devplane*: a result names a tool-use id the session never emitted (or of the wrong kind).
    pub const UNKNOWN_TOOL_USE_ID: &str = "unknown_tool_use_id";
    /// *devplane*: a result names a tool-use id that already has a result.
    pub const TOOL_USE_ALREADY_ANSWERED: &str = "tool_use_already_answered";
    /// *devplane*: `user.message` while tool calls are open.
    pub const WAITING_ON_RESPONSES: &str = "waiting_on_responses";
    /// *devplane*: query or body failed validation.
    pub const INVALID_PARAMETER: &str = "invalid_parameter";
    /// *devplane*: credential not recognised.
    pub const INVALID_CREDENTIAL: &str = "invalid_credential";
    /// *devplane*: credential valid but not accepted by this endpoint or for this resource.
    pub const CREDENTIAL_NOT_ALLOWED: &str = "credential_not_allowed";
    /// *devplane*: skill or skill version unknown.
    pub const SKILL_NOT_FOUND: &str = "skill_not_found";
    /// *devplane*: an injected fault.
    pub const INJECTED_FAULT: &str = "injected_fault";
}

/// The `error` member of the body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: ErrorType,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ErrorDetail {
    /// `details.error_code`, if any.
    pub fn error_code(&self) -> Option<&str> {
        self.details.as_ref()?.get("error_code")?.as_str()
    }
}

/// Constant `type` tag of the body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    #[default]
    Error,
}

/// `{"type":"error","error":{...},"request_id":"req_..."}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "type", default)]
    pub kind: ErrorKind,
    pub error: ErrorDetail,
    #[serde(default)]
    pub request_id: Option<String>,
}

impl ErrorBody {
    pub fn new(kind: ErrorType, message: impl Into<String>, request_id: impl Into<String>) -> Self {
        ErrorBody {
            kind: ErrorKind::Error,
            error: ErrorDetail {
                kind,
                message: message.into(),
                details: None,
            },
            request_id: Some(request_id.into()),
        }
    }

    /// Adds `details.error_code`.
    pub fn with_code(self, code: &str) -> Self {
        self.detail("error_code", serde_json::Value::String(code.to_owned()))
    }

    /// Adds one `details` entry.
    pub fn detail(mut self, key: &str, value: serde_json::Value) -> Self {
        self.error
            .details
            .get_or_insert_with(Default::default)
            .insert(key.to_owned(), value);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn body_round_trips_with_code_and_details() {
        let wire = json!({"type":"error","error":{"type":"invalid_request_error","message":"bad",
            "details":{"error_code":"heartbeat_precondition_failed",
                       "current_state":{"last_heartbeat":null,"lease_extended":false,"state":"queued","ttl_seconds":0}}},
            "request_id":"req_1"});
        let body: ErrorBody = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(
            body.error.error_code(),
            Some(codes::HEARTBEAT_PRECONDITION_FAILED)
        );
        assert_eq!(serde_json::to_value(&body).unwrap(), wire);
    }

    #[test]
    fn builder_and_unknown_types() {
        let b = ErrorBody::new(ErrorType::Permission, "no", "req_2").with_code("x");
        assert_eq!(b.error.error_code(), Some("x"));
        assert_eq!(
            serde_json::to_value(&b).unwrap()["error"]["type"],
            "permission_error"
        );
        let t: ErrorType = serde_json::from_value(json!("teapot_error")).unwrap();
        assert_eq!(t, ErrorType::Other("teapot_error".into()));
        for s in [
            "invalid_request_error",
            "memory_path_conflict_error",
            "overloaded_error",
        ] {
            assert_eq!(ErrorType::parse(s).as_str(), s);
        }
    }
}
