//! ETags and conditional requests (RFC 9110 §8.8.3, §13): a task's strong ETag names
//! its version (`updated_at`, which moves exactly when the task changes);
//! `If-None-Match` on `GET /tasks/{id}` (weak comparison), `If-Match` on `PATCH` and
//! `DELETE` (strong comparison, checked by the statement that writes: store/sql.rs).
//! Either header holds at most [`MAX_TAGS`] entity tags (spec §2); more, or a value
//! that is not a list of entity tags, is a 400 naming the header.

use hyper::header::{HeaderMap, HeaderName, HeaderValue, IF_MATCH, IF_NONE_MATCH};
use jiff::Timestamp;

use super::error::ApiError;
use crate::store::Precondition;
use crate::tasks::Task;

/// The most distinct entity tags `If-Match` or `If-None-Match` may list: each one is
/// a comparison in the statement that writes, for every row of its batch.
pub const MAX_TAGS: usize = 16;

/// The strong ETag of `task`: `"<updated_at in microseconds since 1970, in hex>"`.
pub fn etag(task: &Task) -> HeaderValue {
    HeaderValue::try_from(format!("\"{}\"", opaque(task.updated_at)))
        .expect("a quoted hex number is a valid header value")
}

/// What goes between an ETag's quotes, for the version `at`.
fn opaque(at: Timestamp) -> String {
    format!("{:x}", at.as_microsecond())
}

/// `If-Match` as a store precondition: `*` is "exists"; a list, the versions its
/// strong tags name, compared byte for byte with the tags this server writes (a weak
/// tag, or one that differs from ours in case or padding, matches nothing).
pub fn if_match(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    Ok(match tags(headers, &IF_MATCH)? {
        None => Precondition::None,
        Some(Tags::Any) => Precondition::Exists,
        Some(Tags::List(list)) => Precondition::UpdatedAt(
            list.iter()
                .filter(|tag| !tag.weak)
                .filter_map(|tag| version(&tag.opaque))
                .collect(),
        ),
    })
}

/// `If-None-Match`, parsed; `None` when the request has none.
pub fn if_none_match(headers: &HeaderMap) -> Result<Option<Tags>, ApiError> {
    tags(headers, &IF_NONE_MATCH)
}

/// Whether an `If-None-Match` list matches `task` (weak comparison), so a GET gets 304.
pub fn none_match(tags: &Tags, task: &Task) -> bool {
    match tags {
        Tags::Any => true,
        Tags::List(list) => {
            let current = opaque(task.updated_at);
            list.iter().any(|tag| tag.opaque == current)
        }
    }
}

/// An entity-tag list, as `If-Match` and `If-None-Match` carry it.
#[derive(Debug, PartialEq)]
pub enum Tags {
    /// `*`
    Any,
    /// `#entity-tag`, each distinct tag once.
    List(Vec<Tag>),
}

/// One entity tag.
#[derive(Debug, PartialEq)]
pub struct Tag {
    weak: bool,
    /// Between the quotes.
    opaque: String,
}

/// Parses every line of header `name` as one list: `"*" / #entity-tag`, where
/// `entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE`. `None` when there is no such header;
/// a 400 naming it when it is not that grammar or lists more than [`MAX_TAGS`] tags.
fn tags(headers: &HeaderMap, name: &HeaderName) -> Result<Option<Tags>, ApiError> {
    let mut values = headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let malformed = || ApiError::BadRequest(format!("{name}: not a list of entity tags"));
    let mut list: Vec<Tag> = Vec::new();
    for value in values {
        let text = value.to_str().map_err(|_| malformed())?;
        if text.trim() == "*" {
            return Ok(Some(Tags::Any));
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
            let quoted = tagged.strip_prefix('"').ok_or_else(malformed)?;
            let end = quoted.find('"').ok_or_else(malformed)?;
            let opaque = &quoted[..end];
            if !opaque
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b))
            {
                return Err(malformed());
            }
            if !list
                .iter()
                .any(|tag| tag.weak == weak && tag.opaque == opaque)
            {
                if list.len() == MAX_TAGS {
                    return Err(ApiError::BadRequest(format!(
                        "{name}: more than {MAX_TAGS} entity tags"
                    )));
                }
                list.push(Tag {
                    weak,
                    opaque: opaque.to_owned(),
                });
            }
            rest = quoted[end + 1..].trim_start_matches([' ', '\t']);
            if !(rest.is_empty() || rest.starts_with(',')) {
                return Err(malformed());
            }
        }
    }
    Ok(Some(Tags::List(list)))
}

/// The version an ETag of ours names: only the exact text [`etag`] writes for it.
fn version(text: &str) -> Option<Timestamp> {
    let at = Timestamp::from_microsecond(i64::from_str_radix(text, 16).ok()?).ok()?;
    (opaque(at) == text).then_some(at)
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

    fn parse(values: &[&str]) -> Result<Option<Tags>, String> {
        tags(&headers(&IF_MATCH, values), &IF_MATCH).map_err(|err| err.to_string())
    }

    #[test]
    fn entity_tag_lists_follow_rfc_9110_and_drop_duplicates() {
        let tag = |weak, opaque: &str| Tag {
            weak,
            opaque: opaque.to_owned(),
        };
        assert_eq!(parse(&[]), Ok(None));
        assert_eq!(parse(&["*"]), Ok(Some(Tags::Any)));
        assert_eq!(
            parse(&[r#""a", W/"b""#, r#""c", "a""#]),
            Ok(Some(Tags::List(vec![
                tag(false, "a"),
                tag(true, "b"),
                tag(false, "c")
            ])))
        );
        assert_eq!(
            parse(&[r#" , "a" ,, "#]),
            Ok(Some(Tags::List(vec![tag(false, "a")])))
        );
        for bad in ["a", r#""a"b"#, r#""a"#, r#"w/"a""#, r#""a b""#, r#""a""b""#] {
            assert_eq!(
                parse(&[bad]),
                Err("if-match: not a list of entity tags".into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn sixteen_distinct_tags_pass_and_a_seventeenth_is_refused() {
        let list = |n: usize| (0..n).map(|i| format!("\"{i}\"")).collect::<Vec<_>>();
        let sixteen = list(16).join(", ");
        let with_repeats = format!("{sixteen}, {sixteen}");
        assert!(matches!(parse(&[&with_repeats]), Ok(Some(Tags::List(l))) if l.len() == 16));
        let seventeen = list(17).join(", ");
        assert_eq!(
            parse(&[&seventeen]),
            Err("if-match: more than 16 entity tags".into())
        );
    }

    #[test]
    fn if_match_counts_only_strong_tags_written_exactly_as_ours() {
        let at = Timestamp::from_microsecond(0x1234ab).unwrap();
        let precondition = |value: &str| if_match(&headers(&IF_MATCH, &[value])).unwrap();
        assert_eq!(precondition("*"), Precondition::Exists);
        assert_eq!(
            precondition(r#""1234ab""#),
            Precondition::UpdatedAt(vec![at])
        );
        for other in [
            r#"W/"1234ab""#,
            r#""1234AB""#,
            r#""001234ab""#,
            r#""+1234ab""#,
        ] {
            assert_eq!(
                precondition(other),
                Precondition::UpdatedAt(vec![]),
                "{other}"
            );
        }
        assert_eq!(
            precondition(r#""zz", "1234ab""#),
            Precondition::UpdatedAt(vec![at])
        );
        assert_eq!(if_match(&HeaderMap::new()).unwrap(), Precondition::None);
    }
}
