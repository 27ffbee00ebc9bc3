//! Errors: [`ApiError`] is what a handler answers (the §2 body with a `request-id` header);
//! [`DevplaneError`] is what the library API returns to its Rust callers.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hands_protocol::error::{ErrorBody, ErrorType, codes};

use crate::ids;

/// An HTTP error answer in the exact shape of the real API.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Boxed so `Result<_, ApiError>` stays small on the happy path.
    pub body: Box<ErrorBody>,
    /// Extra headers (e.g. `retry-after` on an injected 429).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: ErrorType, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: Box::new(ErrorBody::new(kind, message, ids::new_id("req"))),
            headers: vec![],
        }
    }

    pub fn code(mut self, code: &str) -> Self {
        self.body = Box::new(self.body.with_code(code));
        self
    }

    pub fn detail(mut self, key: &str, value: serde_json::Value) -> Self {
        self.body = Box::new(self.body.detail(key, value));
        self
    }

    pub fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorType::InvalidRequest, message)
            .code(codes::INVALID_PARAMETER)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorType::Authentication, message)
            .code(codes::INVALID_CREDENTIAL)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorType::Permission, message)
            .code(codes::CREDENTIAL_NOT_ALLOWED)
    }

    pub fn not_found(message: impl Into<String>, code: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorType::NotFound, message).code(code)
    }

    pub fn conflict(message: impl Into<String>, code: &str) -> Self {
        Self::new(StatusCode::CONFLICT, ErrorType::Conflict, message).code(code)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = self.body.request_id.clone().unwrap_or_default();
        let mut resp = (self.status, axum::Json(*self.body)).into_response();
        let headers = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            headers.insert("request-id", v);
        }
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
        resp
    }
}

/// Failures of the library API (starting the server, loading scripts, writing reports).
#[derive(Debug, thiserror::Error)]
pub enum DevplaneError {
    /// could not bind the listen address
    #[error("could not bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    /// a session script could not be read
    #[error("could not read script {path}: {source}")]
    ReadScript {
        path: String,
        source: std::io::Error,
    },
    /// a session script is not valid
    #[error("invalid script {path}: {message}")]
    InvalidScript { path: String, message: String },
    /// the report could not be written
    #[error("could not write report {path}: {source}")]
    WriteReport {
        path: String,
        source: std::io::Error,
    },
    /// the webhook signing secret is not usable
    #[error("invalid webhook secret: {0}")]
    WebhookSecret(String),
    /// the session does not exist
    #[error("unknown session {0}")]
    UnknownSession(String),
    /// the skill referenced by a session does not exist
    #[error("unknown skill {0}")]
    UnknownSkill(String),
}
