//! JSON in and out (spec §2): 415 unless the body says `application/json`, 413 past
//! 64 KiB (before reading a byte when the length is declared), 400 unless the body
//! is a JSON object. What the object must hold is tasks.rs's business.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::ApiError;

/// Every response body: small, and whole before it is sent.
pub type Body = Full<Bytes>;

/// The largest request body read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Reads a request body as a JSON object.
pub async fn object(headers: &HeaderMap, body: Incoming) -> Result<Map<String, Value>, ApiError> {
    if !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    // spec §2: a declared length over the limit gets 413 before any of it is read.
    if body.size_hint().lower() > MAX_BODY_BYTES as u64 {
        return Err(ApiError::PayloadTooLarge);
    }
    let bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<LengthLimitError>() => return Err(ApiError::PayloadTooLarge),
        Err(err) => {
            return Err(ApiError::BadRequest(format!(
                "could not read the body: {err}"
            )));
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::BadRequest("body must be a JSON object".into())),
        Err(err) => Err(ApiError::BadRequest(format!(
            "body is not valid JSON: {err}"
        ))),
    }
}

/// `application/json`, any case, parameters such as `charset` allowed.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// A JSON response.
pub fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(value).expect("our response types have string keys only");
    text(status, "application/json", bytes)
}

/// A response of ready-made text, `/metrics` and `/openapi.json`.
pub fn text(
    status: StatusCode,
    content_type: &'static str,
    text: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(text.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A response with no body (204).
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::default());
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        headers
    }

    #[test]
    fn json_content_type_allows_parameters_and_any_case() {
        assert!(is_json(&headers("application/json")));
        assert!(is_json(&headers("Application/JSON; charset=utf-8")));
        assert!(!is_json(&headers("text/plain")));
        assert!(!is_json(&headers("application/jsonp")));
        assert!(!is_json(&HeaderMap::new()));
    }
}
