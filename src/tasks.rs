//! The task resource (spec §1): its types, and the rules input must keep. No SQL, no HTTP.

use jiff::Timestamp;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

/// Longest title, in Unicode scalar values.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest description, in Unicode scalar values.
pub const MAX_DESCRIPTION_CHARS: usize = 5000;
/// `GET /tasks` returns at most this many per page.
pub const MAX_LIMIT: i64 = 1000;
const DEFAULT_LIMIT: i64 = 100;
const FIELDS: [&str; 3] = ["title", "description", "status"];
const STATUS_CHOICES: &str = "must be one of pending, in_progress, completed";

/// A stored task, as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Task {
    pub id: i64,
    pub title: String,
    pub description: Option<String>,
    pub status: Status,
    #[serde(serialize_with = "rfc3339_micros")]
    pub created_at: Timestamp,
    #[serde(serialize_with = "rfc3339_micros")]
    pub updated_at: Timestamp,
}

/// Where a task stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    InProgress,
    Completed,
}

/// The body of `POST /tasks`, validated.
#[derive(Debug, PartialEq)]
pub struct NewTask {
    pub title: String,
    pub description: Option<String>,
    pub status: Status,
}

/// The body of `PATCH /tasks/{id}`: `None` leaves a field alone, `Some(None)` clears a description.
#[derive(Debug, Default, PartialEq)]
pub struct TaskPatch {
    pub title: Option<String>,
    pub description: Option<Option<String>>,
    pub status: Option<Status>,
}

/// The query of `GET /tasks`.
#[derive(Debug, PartialEq)]
pub struct ListQuery {
    pub status: Option<Status>,
    pub limit: i64,
    pub offset: i64,
}

/// Input that breaks a rule; shown to the client as `"<field>: <reason>"` (a 422).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: String,
    pub reason: &'static str,
}

fn invalid<T>(field: &str, reason: &'static str) -> Result<T, Invalid> {
    Err(Invalid { field: field.to_owned(), reason })
}

impl Status {
    /// The spelling in JSON, in queries and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
        }
    }

    /// The status spelled `text`, if it is one.
    pub fn parse(text: &str) -> Option<Status> {
        let all = [Status::Pending, Status::InProgress, Status::Completed];
        all.into_iter().find(|status| status.as_str() == text)
    }

    fn decode(value: &Value) -> Result<Status, Invalid> {
        value.as_str().and_then(Status::parse).map_or_else(|| invalid("status", STATUS_CHOICES), Ok)
    }
}

impl NewTask {
    /// Validates a `POST` body, a patch that must hold a title: unknown fields are refused
    /// first, then a missing title, then each field's rules.
    pub fn decode(body: &Map<String, Value>) -> Result<NewTask, Invalid> {
        reject_unknown_fields(body)?;
        if !body.contains_key("title") {
            return invalid("title", "field required");
        }
        let patch = TaskPatch::decode(body)?;
        Ok(NewTask {
            title: patch.title.unwrap_or_default(),
            description: patch.description.flatten(),
            status: patch.status.unwrap_or(Status::Pending),
        })
    }
}

impl TaskPatch {
    /// Validates a `PATCH` body, keeping absent apart from `null`.
    pub fn decode(body: &Map<String, Value>) -> Result<TaskPatch, Invalid> {
        reject_unknown_fields(body)?;
        Ok(TaskPatch {
            title: body.get("title").map(title).transpose()?,
            description: body.get("description").map(description).transpose()?,
            status: body.get("status").map(Status::decode).transpose()?,
        })
    }

    /// `{}`: nothing to change.
    pub fn is_empty(&self) -> bool {
        *self == TaskPatch::default()
    }
}

impl ListQuery {
    /// Parses `status`, `limit` and `offset`; others are ignored; a repeated one, the last wins.
    pub fn parse(query: Option<&str>) -> Result<ListQuery, Invalid> {
        let mut list = ListQuery { status: None, limit: DEFAULT_LIMIT, offset: 0 };
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*key {
                "status" => list.status = Some(Status::decode(&Value::from(&*value))?),
                "limit" => match digits(&value) {
                    Some(n) if (1..=MAX_LIMIT).contains(&n) => list.limit = n,
                    _ => return invalid("limit", "must be an integer from 1 to 1000"),
                },
                "offset" => match digits(&value) {
                    Some(n) => list.offset = n,
                    None => return invalid("offset", "must be a non-negative integer"),
                },
                _ => {}
            }
        }
        Ok(list)
    }
}

/// Parses the `{id}` of `/tasks/{id}`: a positive 64-bit integer, digits only.
pub fn parse_id(text: &str) -> Result<i64, Invalid> {
    match digits(text) {
        Some(id) if id > 0 => Ok(id),
        _ => invalid("id", "must be a positive 64-bit integer"),
    }
}

/// A non-negative i64 written as plain digits: no sign, space or exponent.
fn digits(text: &str) -> Option<i64> {
    text.bytes().all(|b| b.is_ascii_digit()).then(|| text.parse().ok()).flatten()
}

fn reject_unknown_fields(body: &Map<String, Value>) -> Result<(), Invalid> {
    match body.keys().find(|key| !FIELDS.contains(&key.as_str())) {
        // Cut what we echo back: the name is the client's, its length is not our problem.
        Some(key) => invalid(&key.chars().take(64).collect::<String>(), "unknown field"),
        None => Ok(()),
    }
}

fn title(value: &Value) -> Result<String, Invalid> {
    match value.as_str() {
        None => invalid("title", "must be a string"),
        Some(text) if text.trim().is_empty() => invalid("title", "must not be empty"),
        Some(text) => stored("title", text, MAX_TITLE_CHARS, "must be at most 200 characters"),
    }
}

fn description(value: &Value) -> Result<Option<String>, Invalid> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => {
            let too_long = "must be at most 5000 characters";
            stored("description", text, MAX_DESCRIPTION_CHARS, too_long).map(Some)
        }
        _ => invalid("description", "must be a string or null"),
    }
}

/// `text` if it fits: at most `max` characters (else `too_long`), no U+0000 (spec §1: what
/// PostgreSQL text cannot hold is a 422, not a 500).
fn stored(field: &str, text: &str, max: usize, too_long: &'static str) -> Result<String, Invalid> {
    match text {
        _ if text.chars().count() > max => invalid(field, too_long),
        _ if text.contains('\0') => invalid(field, "must not contain NUL characters"),
        _ => Ok(text.to_owned()),
    }
}

fn rfc3339_micros<S: Serializer>(at: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
    // PostgreSQL keeps microseconds; the spec shows all six digits and a Z.
    serializer.collect_str(&format_args!("{at:.6}"))
}
