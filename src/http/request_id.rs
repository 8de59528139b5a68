//! `x-request-id` (spec §2): keep the caller's when it is sane, mint one otherwise.
//! The access-log line that names it is access.rs's.

use hyper::Response;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};

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

/// Stamps the id on the response.
pub fn stamp<B>(response: &mut Response<B>, id: HeaderValue) {
    response.headers_mut().insert(X_REQUEST_ID.clone(), id);
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
