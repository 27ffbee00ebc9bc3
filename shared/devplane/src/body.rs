//! Request-body decoding that answers mistakes with the §2 error body (axum's own `Json`
//! extractor would answer 415/422 in plain text, which no real client expects).

use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Parses a JSON body; an empty body is read as `{}`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hands_protocol::work::StopRequest;

    #[test]
    fn empty_is_an_empty_object_and_garbage_is_400() {
        let s: StopRequest = parse_json(b"").unwrap();
        assert_eq!(s.force, None);
        let e = parse_json::<StopRequest>(b"{\"force\":").unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(parse_json::<StopRequest>(b"{\"force\":\"yes\"}").is_err());
    }
}
