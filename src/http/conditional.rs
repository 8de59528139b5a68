//! ETags (a task's names its `updated_at`) and conditional requests (RFC 9110 §13): `If-None-Match`
//! compares weakly here; `If-Match` strongly, in the statement that writes (store/sql/tasks.rs).

use hyper::header::{HeaderMap, HeaderName, HeaderValue, IF_MATCH, IF_NONE_MATCH};
use jiff::Timestamp;

use super::error::ApiError;
use crate::store::Precondition;
use crate::tasks::Task;

/// The most distinct entity tags `If-Match` or `If-None-Match` may list (spec §2): each is a
/// comparison in the statement that writes, for every row of its batch.
const MAX_TAGS: usize = 16;

/// The strong ETag of `task`: `"<updated_at in microseconds since 1970, in hex>"`.
pub fn etag(task: &Task) -> HeaderValue {
    HeaderValue::try_from(format!("\"{}\"", opaque(task.updated_at))).expect("quoted hex")
}

/// What goes between an ETag's quotes, for the version `at`.
fn opaque(at: Timestamp) -> String {
    format!("{:x}", at.as_microsecond())
}

/// `If-Match` as a store precondition: `*` is "exists"; a list, the versions its strong tags
/// name, byte for byte as this server writes them (a weak tag, or another spelling, matches none).
pub fn if_match(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    let version = |tag: &Tag| {
        let at = Timestamp::from_microsecond(i64::from_str_radix(&tag.opaque, 16).ok()?).ok()?;
        (!tag.weak && opaque(at) == tag.opaque).then_some(at)
    };
    Ok(match tags(headers, &IF_MATCH)? {
        None => Precondition::None,
        Some(Tags::Any) => Precondition::Exists,
        Some(Tags::List(list)) => {
            Precondition::UpdatedAt(list.iter().filter_map(version).collect())
        }
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
        Tags::List(list) => list.iter().any(|tag| tag.opaque == opaque(task.updated_at)),
    }
}

/// An entity-tag list, as `If-Match` and `If-None-Match` carry it: `*`, or each distinct tag once.
pub enum Tags {
    Any,
    List(Vec<Tag>),
}

/// One entity tag; `opaque` is what is between its quotes.
#[derive(PartialEq)]
pub struct Tag {
    weak: bool,
    opaque: String,
}

/// Parses every line of header `name` as one list, `"*" / #entity-tag`; `None` without one,
/// a 400 naming it when it is not that grammar or lists more than [`MAX_TAGS`] tags.
fn tags(headers: &HeaderMap, name: &HeaderName) -> Result<Option<Tags>, ApiError> {
    let mut values = headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let malformed = || ApiError::BadRequest(format!("{name}: not a list of entity tags"));
    let etagc = |b: u8| b == 0x21 || (0x23..=0x7e).contains(&b);
    let mut list: Vec<Tag> = Vec::new();
    for value in values {
        let text = value.to_str().map_err(|_| malformed())?;
        if text.trim() == "*" {
            return Ok(Some(Tags::Any));
        }
        let mut rest = text.trim_start_matches([' ', '\t', ',']);
        while !rest.is_empty() {
            let weak = rest.starts_with("W/");
            let tagged = rest.strip_prefix("W/").unwrap_or(rest).strip_prefix('"');
            let (opaque, after) = tagged.and_then(|t| t.split_once('"')).ok_or_else(malformed)?;
            if !opaque.bytes().all(etagc) {
                return Err(malformed());
            }
            let tag = Tag { weak, opaque: opaque.to_owned() };
            if !list.contains(&tag) {
                if list.len() == MAX_TAGS {
                    let detail = format!("{name}: more than {MAX_TAGS} entity tags");
                    return Err(ApiError::BadRequest(detail));
                }
                list.push(tag);
            }
            rest = after.trim_start_matches([' ', '\t']);
            if !(rest.is_empty() || rest.starts_with(',')) {
                return Err(malformed());
            }
            rest = rest.trim_start_matches([' ', '\t', ',']);
        }
    }
    Ok(Some(Tags::List(list)))
}
