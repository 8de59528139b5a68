//! `Idempotency-Key` on `POST /tasks` (the IETF httpapi draft "The Idempotency-Key HTTP
//! Header Field"): the key read and checked, and the fingerprint of the body it comes
//! with. Keeping keys and replaying what they answered is the store's business.

use hyper::header::{HeaderMap, HeaderName};
use ring::digest::{SHA256, digest};
use serde_json::{Map, Value};

use crate::store::Claim;
use crate::tasks::Invalid;

/// The request header.
pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The response header of an answer replayed for a key seen before.
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// The longest key, in characters.
const MAX_KEY_CHARS: usize = 255;

/// The request's key, if it sent one, with the fingerprint of `body`: a SHA-256 of its
/// canonical JSON (keys sorted, no blanks), so the same object sent with other spacing
/// or key order is the same request. The draft makes the value a structured-field
/// string (`"…"`); a bare token, as most clients send, is taken as it is.
pub fn claim(headers: &HeaderMap, body: &Map<String, Value>) -> Result<Option<Claim>, Invalid> {
    let mut values = headers.get_all(&IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let refused = || Invalid {
        field: "idempotency-key".into(),
        reason: "must be one header of 1 to 255 printable ASCII characters",
    };
    if values.next().is_some() {
        return Err(refused());
    }
    let key = key(value.as_bytes()).ok_or_else(refused)?;
    let canonical = serde_json::to_vec(body).expect("a JSON object serializes");
    Ok(Some(Claim {
        key,
        fingerprint: digest(&SHA256, &canonical).as_ref().to_vec(),
    }))
}

/// The key in `value`: a structured-field string unquoted, or the value as it is; 1 to
/// 255 printable ASCII characters.
fn key(value: &[u8]) -> Option<String> {
    let printable = |b: &u8| (0x20..=0x7e).contains(b);
    let key = match value.strip_prefix(b"\"") {
        // A structured-field string: escapes for `"` and `\` only, closed at the end.
        Some(quoted) => {
            let mut key = Vec::with_capacity(quoted.len());
            let mut bytes = quoted.iter();
            loop {
                match bytes.next()? {
                    b'\\' => match bytes.next()? {
                        &escaped @ (b'"' | b'\\') => key.push(escaped),
                        _ => return None,
                    },
                    b'"' if bytes.as_slice().is_empty() => break key,
                    b'"' => return None,
                    &b => key.push(b),
                }
            }
        }
        None => value.to_vec(),
    };
    let ok = !key.is_empty() && key.len() <= MAX_KEY_CHARS && key.iter().all(printable);
    ok.then(|| String::from_utf8(key).expect("printable ASCII is UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_1_to_255_printable_ascii_quoted_or_not() {
        assert_eq!(key(b"abc-123").as_deref(), Some("abc-123"));
        assert_eq!(key(br#""8e03978e""#).as_deref(), Some("8e03978e"));
        assert_eq!(key(br#""a\"b\\c""#).as_deref(), Some(r#"a"b\c"#));
        assert_eq!(key(&[b'k'; 255]).map(|k| k.len()), Some(255));
        for bad in [
            &b""[..],
            b"\"\"",
            &[b'k'; 256],
            b"caf\xc3\xa9",
            b"a\tb",
            br#""a\x""#,
        ] {
            assert_eq!(key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_same_object_has_the_same_fingerprint_however_written() {
        let mut headers = HeaderMap::new();
        headers.insert(&IDEMPOTENCY_KEY, "k".parse().unwrap());
        let print = |text: &str| {
            let body: Map<String, Value> = serde_json::from_str(text).unwrap();
            claim(&headers, &body).unwrap().unwrap().fingerprint
        };
        assert_eq!(
            print(r#"{"title":"a","status":"pending"}"#),
            print(r#"{ "status": "pending",  "title": "a" }"#)
        );
        assert_ne!(print(r#"{"title":"a"}"#), print(r#"{"title":"b"}"#));
    }
}
