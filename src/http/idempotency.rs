//! `Idempotency-Key` on `POST /tasks` (the IETF httpapi draft "The Idempotency-Key HTTP
//! Header Field"): the key read and checked, and the fingerprint of the body it comes
//! with. Keeping keys and replaying what they answered is the store's business.

use hyper::header::{HeaderMap, HeaderName};
use ring::digest::{SHA256, digest};
use serde_json::{Map, Value};

use crate::store::Claim;
use crate::tasks::{Invalid, NewTask, Status};

/// The request header.
pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The response header of an answer replayed for a key seen before.
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// The longest key, in characters.
const MAX_KEY_CHARS: usize = 255;

/// The request's key, if it sent one, with the fingerprint of the create it asks for:
/// a SHA-256 of `task` as canonical JSON (keys sorted, no blanks, a default value left
/// out), so a retry that differs only in spacing, key order, escapes, a default status
/// or a `null` description is the same request. That is also the digest of the body
/// itself whenever it spells out no default, which is what the release before this one stored: a retry
/// crossing the two versions is recognised either way. For a body that does spell one
/// out, the digest of the body as written goes along too ([`Claim::as_written`]), to
/// match what the release before this one stored for it. The draft makes the value a structured-field
/// string (`"…"`); a bare token, as most clients send, is taken as it is.
pub fn claim(
    headers: &HeaderMap,
    task: &NewTask,
    body: &Map<String, Value>,
) -> Result<Option<Claim>, Invalid> {
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
    let mut canonical = Map::new();
    canonical.insert("title".into(), task.title.clone().into());
    if let Some(description) = &task.description {
        canonical.insert("description".into(), description.clone().into());
    }
    if task.status != Status::Pending {
        canonical.insert("status".into(), task.status.as_str().into());
    }
    let fingerprint = sha256(&canonical);
    let as_written = sha256(body);
    Ok(Some(Claim {
        key,
        as_written: (as_written != fingerprint).then_some(as_written),
        fingerprint,
    }))
}

fn sha256(object: &Map<String, Value>) -> Vec<u8> {
    let canonical = serde_json::to_vec(object).expect("a JSON object serializes");
    digest(&SHA256, &canonical).as_ref().to_vec()
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
    fn the_same_create_has_the_same_fingerprint_however_written() {
        let mut headers = HeaderMap::new();
        headers.insert(&IDEMPOTENCY_KEY, "k".parse().unwrap());
        let print = |text: &str| {
            let body: Map<String, Value> = serde_json::from_str(text).unwrap();
            let task = NewTask::decode(&body).unwrap();
            claim(&headers, &task, &body).unwrap().unwrap()
        };
        let plain = print(r#"{"title":"a"}"#);
        for same in [
            r#"{ "status": "pending",  "title": "a" }"#,
            r#"{"title":"\u0061","description":null}"#,
        ] {
            assert_eq!(print(same).fingerprint, plain.fingerprint, "{same}");
            assert!(print(same).as_written.is_some(), "{same}");
        }
        // A body with no default spelled out: the digest the release before stored for it.
        let body = r#"{"title":"a"}"#.as_bytes();
        assert_eq!(plain.fingerprint, digest(&SHA256, body).as_ref());
        assert_eq!(plain.as_written, None);
        assert_ne!(plain.fingerprint, print(r#"{"title":"b"}"#).fingerprint);
        assert_ne!(
            plain.fingerprint,
            print(r#"{"title":"a","status":"completed"}"#).fingerprint
        );
    }
}
