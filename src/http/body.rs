//! Request bodies as JSON objects (spec §2): 415 unless `application/json`, 413 past 64 KiB,
//! 408 unless all of it arrives within [`BODY_TIMEOUT`] (spec §5), 400 unless a JSON object.

use std::time::Duration;

use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderMap};
use serde_json::{Map, Value};

use super::error::ApiError;

/// The largest request body read.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// A body must arrive whole within this of its handler asking, so a stalled client lets go.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a request body as a JSON object.
pub async fn object(headers: &HeaderMap, body: Incoming) -> Result<Map<String, Value>, ApiError> {
    // `application/json`, any case, parameters such as `charset` allowed.
    let essence = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()?.split(';').next());
    if !essence.is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json")) {
        return Err(ApiError::UnsupportedMediaType);
    }
    // spec §2: a declared length over the limit gets 413 before any of it is read.
    if body.size_hint().lower() > MAX_BODY_BYTES as u64 {
        return Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES));
    }
    let read = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY_BYTES).collect());
    let bytes = match read.await.map_err(|_| ApiError::RequestTimeout)? {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<LengthLimitError>() => Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES))?,
        Err(err) => Err(ApiError::BadRequest(format!("could not read the body: {err}")))?,
    };
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::BadRequest("body must be a JSON object".into())),
        Err(err) => Err(ApiError::BadRequest(format!("body is not valid JSON: {err}"))),
    }
}
