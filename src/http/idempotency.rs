//! `Idempotency-Key` on `POST /tasks` (an IETF httpapi draft): the key read and checked, and
//! the fingerprint of its body. Keeping keys and replaying answers is the store's business.

use hyper::header::{HeaderMap, HeaderName};
use ring::digest::{SHA256, digest};
use serde_json::{Map, Value};

use crate::store::Claim;
use crate::tasks::{Invalid, NewTask, Status};

/// The request header.
static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The response header of an answer replayed for a key seen before.
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The request's key, if any, with its create's fingerprint: a SHA-256 of `task` as canonical
/// JSON (keys sorted, no blanks, no defaults), so a retry that differs only in spacing, order,
/// escapes or spelled-out defaults matches. The release before stored the digest of the body
/// as written: that goes along when it differs ([`Claim::as_written`]), to match either way.
pub fn claim(
    headers: &HeaderMap,
    task: &NewTask,
    body: &Map<String, Value>,
) -> Result<Option<Claim>, Invalid> {
    let mut values = headers.get_all(&IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else { return Ok(None) };
    let refused = || Invalid {
        field: "idempotency-key".into(),
        reason: "must be one header of 1 to 255 printable ASCII characters",
    };
    let key = key(value.as_bytes()).filter(|_| values.next().is_none()).ok_or_else(refused)?;
    let (status, description) = (task.status.as_str(), task.description.as_deref());
    let status = (task.status != Status::Pending).then_some(status);
    let fields = [("title", Some(&*task.title)), ("description", description), ("status", status)];
    let fields = fields.into_iter().filter_map(|(k, v)| Some((k.into(), v?.into())));
    let canonical: Map<String, Value> = fields.collect();
    let sha256 = |object| {
        let json = serde_json::to_vec(object).expect("a JSON object serializes");
        digest(&SHA256, &json).as_ref().to_vec()
    };
    let (fingerprint, as_written) = (sha256(&canonical), sha256(body));
    let as_written = (as_written != fingerprint).then_some(as_written);
    Ok(Some(Claim { key, as_written, fingerprint }))
}

/// The key in `value`, 1 to 255 printable ASCII characters: a structured-field string
/// (`"…"`, as the draft has it) unquoted, or a bare token as most clients send it.
fn key(value: &[u8]) -> Option<String> {
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
    let printable = key.iter().all(|b| (0x20..=0x7e).contains(b));
    let ok = !key.is_empty() && key.len() <= 255 && printable;
    ok.then(|| String::from_utf8(key).expect("printable ASCII is UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_1_to_255_printable_ascii_quoted_or_not() {
        let longest = "k".repeat(255);
        for (value, expected) in [
            (&b"abc-123"[..], Some("abc-123")),
            (br#""8e03978e""#, Some("8e03978e")),
            (br#""a\"b\\c""#, Some(r#"a"b\c"#)),
            (longest.as_bytes(), Some(longest.as_str())),
            (b"", None),
            (b"\"\"", None),
            (&[b'k'; 256], None),
            (b"caf\xc3\xa9", None),
            (b"a\tb", None),
            (br#""a\x""#, None),
        ] {
            assert_eq!(key(value).as_deref(), expected, "{value:?}");
        }
    }

    #[test]
    fn a_create_keeps_the_digest_the_release_before_stored_for_its_body() {
        let headers = HeaderMap::from_iter([(IDEMPOTENCY_KEY.clone(), "k".parse().unwrap())]);
        let plain = digest(&SHA256, br#"{"title":"a"}"#);
        for (text, spells_out_a_default) in [
            (r#"{"title":"a"}"#, false),
            (r#"{ "status": "pending",  "title": "a" }"#, true),
            (r#"{"title":"\u0061","description":null}"#, true),
        ] {
            let body: Map<String, Value> = serde_json::from_str(text).unwrap();
            let task = NewTask::decode(&body).unwrap();
            let claim = claim(&headers, &task, &body).unwrap().unwrap();
            assert_eq!(claim.fingerprint, plain.as_ref(), "{text}");
            assert_eq!(claim.as_written.is_some(), spells_out_a_default, "{text}");
        }
    }
}
