//! `x-request-id` (spec §2): keep the caller's when it is sane, mint one otherwise;
//! and the one access-log line per request (spec §6), which never holds a body.

use std::time::Instant;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Response};

use crate::logging::Quoted;

/// The header, in both directions.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const MAX_ID_BYTES: usize = 128;

/// The request's id: the caller's if it is printable ASCII of at most 128 bytes.
pub fn of(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&X_REQUEST_ID) {
        Some(id) if is_sane(id.as_bytes()) => id.clone(),
        _ => HeaderValue::try_from(uuid::Uuid::new_v4().to_string())
            .expect("a UUID is a valid header value"),
    }
}

fn is_sane(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_BYTES && id.iter().all(|b| (0x20..=0x7e).contains(b))
}

/// Stamps the id on the response and writes the access-log line. The method, path
/// and id are the client's: written [`Quoted`], a line cannot be broken or forged.
pub fn finish<B>(
    response: &mut Response<B>,
    id: HeaderValue,
    method: &Method,
    path: &str,
    started: Instant,
) {
    let micros = started.elapsed().as_micros();
    log::info!(
        target: "access",
        "{} {} {} {}.{:03}ms request_id={}",
        Quoted(method.as_str()),
        Quoted(path),
        response.status().as_u16(),
        micros / 1000,
        micros % 1000,
        Quoted(id.to_str().unwrap_or("-")),
    );
    response.headers_mut().insert(X_REQUEST_ID.clone(), id);
}

/// The access-log line of a request answered with a closed connection instead of a
/// status (its write's outcome is unknown), with why, at `error`.
pub fn unanswered(
    id: &HeaderValue,
    method: &Method,
    path: &str,
    started: Instant,
    cause: &(dyn std::error::Error + 'static),
) {
    let micros = started.elapsed().as_micros();
    log::error!(
        target: "access",
        "{} {} - {}.{:03}ms request_id={} outcome unknown, connection closed unanswered: {}",
        Quoted(method.as_str()),
        Quoted(path),
        micros / 1000,
        micros % 1000,
        Quoted(id.to_str().unwrap_or("-")),
        crate::error::describe(cause),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_the_rest() {
        let mut headers = HeaderMap::new();
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123 x"));
        assert_eq!(of(&headers), "abc-123 x");
        for bad in [
            &b""[..],
            &[b'a'; 129][..],
            &b"caf\xc3\xa9"[..],
            &b"a\tb"[..],
        ] {
            headers.insert(&X_REQUEST_ID, HeaderValue::from_bytes(bad).unwrap());
            let minted = of(&headers);
            assert_eq!(minted.len(), 36, "{bad:?}");
        }
    }
}
