//! A function-URL (HTTP API payload 2.0) event through the axum Router and back: the request
//! is rebuilt with `lambda_http`'s own parser (raw path, headers, base64 bodies), the response
//! written in the shape a function URL expects.

use axum::Router;
use base64::Engine as _;
use http_body_util::BodyExt as _;
use lambda_http::Body;
use serde_json::{Map, Value, json};
use tower::ServiceExt as _;

/// Answers one HTTP event with the Router.
pub async fn answer(router: &Router, event: &Value) -> Result<Value, lambda_runtime::Error> {
    let request = lambda_http::request::from_str(&event.to_string())
        .map_err(|e| format!("not an HTTP event: {e}"))?;
    let (parts, body) = request.into_parts();
    let bytes: Vec<u8> = match body {
        Body::Empty => Vec::new(),
        Body::Text(t) => t.into_bytes(),
        Body::Binary(b) => b,
        _ => Vec::new(),
    };
    let request = http::Request::from_parts(parts, axum::body::Body::from(bytes));
    let response = match router.clone().oneshot(request).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let (parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|e| format!("response body: {e}"))?
        .to_bytes();
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        if let Ok(v) = value.to_str() {
            headers.insert(name.as_str().to_owned(), Value::String(v.to_owned()));
        }
    }
    let (body, base64) = match std::str::from_utf8(&bytes) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(&bytes),
            true,
        ),
    };
    Ok(json!({
        "statusCode": parts.status.as_u16(),
        "headers": headers,
        "body": body,
        "isBase64Encoded": base64,
    }))
}
