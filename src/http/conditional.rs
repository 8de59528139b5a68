//! ETags and conditional requests (RFC 9110 §8.8.3, §13): a task's strong ETag names
//! its version (`updated_at`, which moves exactly when the task changes);
//! `If-None-Match` on `GET /tasks/{id}` (weak comparison), `If-Match` on `PATCH` and
//! `DELETE` (strong comparison, checked by the statement that writes: store.rs).

use hyper::header::{HeaderMap, HeaderName, HeaderValue, IF_MATCH, IF_NONE_MATCH};
use jiff::Timestamp;

use crate::store::Precondition;
use crate::tasks::Task;

/// The strong ETag of `task`: `"<updated_at in microseconds since 1970, in hex>"`.
pub fn etag(task: &Task) -> HeaderValue {
    HeaderValue::try_from(format!("\"{:x}\"", task.updated_at.as_microsecond()))
        .expect("a quoted hex number is a valid header value")
}

/// `If-Match` as a store precondition: `*` is "exists"; a list, the versions it names
/// with strong tags (a weak tag, or one not ours, matches nothing). A malformed list
/// matches nothing either: the write is refused with 412, never done unchecked.
pub fn if_match(headers: &HeaderMap) -> Precondition {
    match tags(headers, &IF_MATCH) {
        None => Precondition::None,
        Some(Tags::Any) => Precondition::Exists,
        Some(Tags::List(list)) => Precondition::UpdatedAt(
            list.iter()
                .filter(|tag| !tag.weak)
                .filter_map(|tag| version(tag.opaque))
                .collect(),
        ),
        Some(Tags::Malformed) => Precondition::UpdatedAt(Vec::new()),
    }
}

/// Whether `If-None-Match` matches `task` (weak comparison), so a GET gets 304. A
/// malformed list matches nothing.
pub fn none_match(headers: &HeaderMap, task: &Task) -> bool {
    match tags(headers, &IF_NONE_MATCH) {
        Some(Tags::Any) => true,
        Some(Tags::List(list)) => {
            let current = etag(task);
            let current = current.as_bytes();
            list.iter()
                .any(|tag| current.get(1..current.len() - 1) == Some(tag.opaque.as_bytes()))
        }
        None | Some(Tags::Malformed) => false,
    }
}

/// An entity-tag list, as `If-Match` and `If-None-Match` carry it.
#[derive(Debug, PartialEq)]
enum Tags<'a> {
    /// `*`
    Any,
    /// `#entity-tag`
    List(Vec<Tag<'a>>),
    /// Not the header's grammar.
    Malformed,
}

#[derive(Debug, PartialEq)]
struct Tag<'a> {
    weak: bool,
    /// Between the quotes.
    opaque: &'a str,
}

/// Parses every line of header `name` as one list: `"*" / #entity-tag`, where
/// `entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE`. `None` when there is no such header.
fn tags<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<Tags<'a>> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let mut list = Vec::new();
    for value in values {
        let Ok(text) = value.to_str() else {
            return Some(Tags::Malformed);
        };
        if text.trim() == "*" {
            return Some(Tags::Any);
        }
        let mut rest = text;
        loop {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            if rest.is_empty() {
                break;
            }
            let (weak, tagged) = match rest.strip_prefix("W/") {
                Some(tagged) => (true, tagged),
                None => (false, rest),
            };
            let Some(quoted) = tagged.strip_prefix('"') else {
                return Some(Tags::Malformed);
            };
            let Some(end) = quoted.find('"') else {
                return Some(Tags::Malformed);
            };
            let opaque = &quoted[..end];
            if !opaque
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b))
            {
                return Some(Tags::Malformed);
            }
            list.push(Tag { weak, opaque });
            rest = quoted[end + 1..].trim_start_matches([' ', '\t']);
            if !(rest.is_empty() || rest.starts_with(',')) {
                return Some(Tags::Malformed);
            }
        }
    }
    Some(Tags::List(list))
}

/// The version an ETag of ours names.
fn version(opaque: &str) -> Option<Timestamp> {
    let micros = i64::from_str_radix(opaque, 16).ok()?;
    Timestamp::from_microsecond(micros).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &HeaderName, values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn entity_tag_lists_follow_rfc_9110() {
        let parse = |values: &[&str]| {
            let headers = headers(&IF_MATCH, values);
            format!("{:?}", tags(&headers, &IF_MATCH))
        };
        assert_eq!(parse(&[]), "None");
        assert_eq!(parse(&["*"]), "Some(Any)");
        assert_eq!(
            parse(&[r#""a", W/"b""#, r#""c""#]),
            r#"Some(List([Tag { weak: false, opaque: "a" }, Tag { weak: true, opaque: "b" }, Tag { weak: false, opaque: "c" }]))"#
        );
        assert_eq!(
            parse(&[r#" , "a" ,, "#]),
            r#"Some(List([Tag { weak: false, opaque: "a" }]))"#
        );
        for bad in ["a", r#""a"b"#, r#""a"#, r#"w/"a""#, r#""a b""#, r#""a""b""#] {
            assert_eq!(parse(&[bad]), "Some(Malformed)", "{bad}");
        }
    }

    #[test]
    fn if_match_counts_only_strong_tags_of_ours() {
        let at = Timestamp::from_microsecond(0x1234).unwrap();
        let precondition = |value: &str| if_match(&headers(&IF_MATCH, &[value]));
        assert_eq!(precondition("*"), Precondition::Exists);
        assert_eq!(precondition(r#""1234""#), Precondition::UpdatedAt(vec![at]));
        assert_eq!(precondition(r#"W/"1234""#), Precondition::UpdatedAt(vec![]));
        assert_eq!(
            precondition(r#""zz", "1234""#),
            Precondition::UpdatedAt(vec![at])
        );
        assert_eq!(precondition("1234"), Precondition::UpdatedAt(vec![]));
        assert_eq!(if_match(&HeaderMap::new()), Precondition::None);
    }
}
