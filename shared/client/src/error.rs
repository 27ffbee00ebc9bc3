//! What can go wrong talking to the control plane, classified the way the reference clients
//! classify it (PROTOCOL.md §2): transport errors, 408, 409, 429 and 5xx are transient; any
//! other 4xx is fatal. `x-should-retry` overrides the status, and `Retry-After` (seconds,
//! milliseconds or an HTTP date) is kept so callers can honour it (CATALOGUE C6).

use std::time::{Duration, SystemTime};

use hands_protocol::error::ErrorBody;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

/// Longest server-requested wait we honour; a huge `Retry-After` must not park a worker for a
/// day (C6). Callers still bound every wait by their own budget.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// An error with every cause under it, `: `-separated. reqwest's own text stops at "error
/// sending request for url (...)"; the reason an operator can act on (connection refused, the
/// certificate's issuer is unknown, DNS) is in the sources.
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some layers repeat their source's text in their own; say it once.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// An error from one control-plane call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Connection refused or reset, DNS or TLS failure, timeout: the request may or may not have
    /// reached the server.
    #[error("transport error: {0}")]
    Transport(String),
    /// The server answered with a non-success status.
    #[error("{method} {path} answered {status}{}", describe(.body))]
    Status {
        method: &'static str,
        path: String,
        status: StatusCode,
        body: Option<Box<ErrorBody>>,
        retry_after: Option<Duration>,
        should_retry: Option<bool>,
    },
    /// A 3xx: never followed, because the bearer must not travel to another origin (C12).
    #[error("{path} answered a redirect ({status}); redirects are never followed")]
    Redirect { path: String, status: StatusCode },
    /// The response body exceeded the cap (C13).
    #[error("{path}: response body larger than {limit} bytes")]
    TooLarge { path: String, limit: usize },
    /// A 2xx whose body is not what the protocol says.
    #[error("{path}: unexpected response body: {message}")]
    Decode { path: String, message: String },
}

fn describe(body: &Option<Box<ErrorBody>>) -> String {
    match body {
        Some(b) => match b.error.error_code() {
            Some(code) => format!(": {} ({code}): {}", b.error.kind.as_str(), b.error.message),
            None => format!(": {}: {}", b.error.kind.as_str(), b.error.message),
        },
        None => String::new(),
    }
}

impl ApiError {
    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ApiError::Status { status, .. } | ApiError::Redirect { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// `error.details.error_code` of the body, if any.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            ApiError::Status { body: Some(b), .. } => b.error.error_code(),
            _ => None,
        }
    }

    /// The parsed error body, if the server sent one.
    pub fn body(&self) -> Option<&ErrorBody> {
        match self {
            ApiError::Status { body: Some(b), .. } => Some(b),
            _ => None,
        }
    }

    /// Whether retrying the same request may succeed (PROTOCOL.md §2 retry classes).
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Transport(_) => true,
            ApiError::Status {
                status,
                should_retry,
                ..
            } => should_retry.unwrap_or_else(|| transient_status(*status)),
            ApiError::Redirect { .. } | ApiError::TooLarge { .. } | ApiError::Decode { .. } => {
                false
            }
        }
    }

    /// The wait the server asked for, capped at [`MAX_RETRY_AFTER`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// 401 or 403: the credential is bad or revoked (C3).
    pub fn is_auth(&self) -> bool {
        matches!(
            self.status(),
            Some(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
        )
    }
}

/// 408, 409, 429 and 5xx are worth retrying.
pub fn transient_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::CONFLICT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// Reads `retry-after-ms`, then `retry-after` (delta seconds or an HTTP date). Malformed values
/// are ignored (the caller falls back to its backoff); huge values are capped.
pub fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(
            (ms / 1000.0).min(MAX_RETRY_AFTER.as_secs_f64()),
        ));
    }
    let value = text("retry-after")?;
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else if let Ok(secs) = value.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64()))
    } else {
        let when = httpdate::parse_http_date(value).ok()?;
        when.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Reads `x-should-retry: true|false`.
pub fn parse_should_retry(headers: &HeaderMap) -> Option<bool> {
    match headers.get("x-should-retry")?.to_str().ok()?.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn retry_classes_follow_the_reference() {
        for s in [408u16, 409, 429, 500, 502, 503, 529] {
            assert!(transient_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400u16, 401, 403, 404, 412, 413, 422] {
            assert!(!transient_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }

    #[test]
    fn c6_retry_after_in_all_its_spellings() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", "3")]), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", "1.5")]), now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after(
                &headers(&[("retry-after-ms", "250"), ("retry-after", "9")]),
                now
            ),
            Some(Duration::from_millis(250))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", &date)]), now),
            Some(Duration::from_secs(7))
        );
        // Huge values are capped, malformed and negative ones ignored.
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", "999999999")]), now),
            Some(MAX_RETRY_AFTER)
        );
        for bad in ["soon", "-5", "NaN", "inf", ""] {
            assert_eq!(
                parse_retry_after(&headers(&[("retry-after", bad)]), now),
                None,
                "{bad}"
            );
        }
        // A date in the past means "now".
        let past = httpdate::fmt_http_date(now - Duration::from_secs(60));
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", &past)]), now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn should_retry_header_overrides_the_status() {
        let e = ApiError::Status {
            method: "GET",
            path: "/x".into(),
            status: StatusCode::BAD_REQUEST,
            body: None,
            retry_after: None,
            should_retry: Some(true),
        };
        assert!(e.is_transient());
        let e = ApiError::Status {
            method: "GET",
            path: "/x".into(),
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: None,
            retry_after: None,
            should_retry: Some(false),
        };
        assert!(!e.is_transient());
        assert_eq!(
            parse_should_retry(&headers(&[("x-should-retry", "maybe")])),
            None
        );
    }
}
