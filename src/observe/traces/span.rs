//! A span being recorded, and what it becomes when it ends: [`Span`] ends when dropped,
//! so a request or statement that is cancelled still ends its span, and it is handed to
//! the exporter's queue then. Text values are cut to the attribute limit as they are
//! set. Which spans start is mod.rs's business.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::{Scope, SpanContext, SpanId, TraceId, Tracer};

/// A database statement as its span names it: `{operation} {collection}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Statement {
    /// `db.operation.name`: `SELECT`, `INSERT`, …
    pub operation: &'static str,
    /// `db.collection.name`: the table, when the statement has one.
    pub collection: Option<&'static str>,
}

/// SpanKind, as OTLP numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Server = opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as isize,
    Client = opentelemetry_proto::tonic::trace::v1::span::SpanKind::Client as isize,
}

/// A span's name, kept in parts until export (no string built on the request's path).
#[derive(Clone, Copy, Debug)]
pub(super) enum Name {
    /// `{method} {route}`, or `{method}` alone when no route matched (semantic
    /// conventions: never the raw path).
    Http {
        method: &'static str,
        route: Option<&'static str>,
    },
    /// `{operation} {collection}`.
    Db(Statement),
}

impl Name {
    pub(super) fn text(self) -> String {
        let (verb, target) = match self {
            Name::Http { method, route } => {
                // `_OTHER` methods name the span `HTTP` (semantic conventions).
                let method = if method == "_OTHER" { "HTTP" } else { method };
                (method, route)
            }
            Name::Db(statement) => (statement.operation, statement.collection),
        };
        match target {
            Some(target) => format!("{verb} {target}"),
            None => verb.to_owned(),
        }
    }
}

/// An attribute's value.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Value {
    Static(&'static str),
    Owned(String),
    Int(i64),
}

/// `text` cut to at most `limit` characters (`OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`).
pub(super) fn truncated(mut text: String, limit: usize) -> String {
    if let Some((at, _)) = text.char_indices().nth(limit) {
        text.truncate(at);
    }
    text
}

/// What a span's fields add up to, besides its texts: ids, times, kind, numbers.
const SPAN_BYTES: usize = 128;

/// A span that has ended, as the exporter takes it.
#[derive(Debug)]
pub(super) struct Finished {
    pub context: SpanContext,
    /// The parent's id, and whether it is remote (the caller's).
    pub parent: Option<(SpanId, bool)>,
    pub kind: Kind,
    pub name: Name,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: Vec<(&'static str, Value)>,
    pub links: Vec<SpanContext>,
    /// Status `Error`, and why.
    pub error: Option<String>,
}

impl Finished {
    /// About how many bytes it holds, and its export will: what the exporter's
    /// queue counts against its byte limit.
    pub(super) fn size(&self) -> usize {
        let texts: usize = self
            .attributes
            .iter()
            .map(|(key, value)| {
                key.len()
                    + match value {
                        Value::Static(text) => text.len(),
                        Value::Owned(text) => text.len(),
                        Value::Int(_) => 8,
                    }
            })
            .sum();
        SPAN_BYTES + texts + self.links.len() * 32 + self.error.as_ref().map_or(0, String::len)
    }
}

/// A span being recorded; it ends when dropped.
pub struct Span {
    tracer: Tracer,
    started: Instant,
    /// Taken when the span ends.
    span: Option<Finished>,
}

/// A span's place and kind as it starts: its trace, its parent (and whether that is
/// the caller's), its kind and its name.
pub(super) type Start = (TraceId, Option<(SpanId, bool)>, Kind, Name);

impl Span {
    pub(super) fn start(
        tracer: Tracer,
        (trace_id, parent, kind, name): Start,
        attributes: Vec<(&'static str, Value)>,
        links: Vec<SpanContext>,
    ) -> Span {
        let context = SpanContext {
            trace_id,
            span_id: SpanId::random(),
            sampled: true,
        };
        Span {
            tracer,
            started: Instant::now(),
            span: Some(Finished {
                context,
                parent,
                kind,
                name,
                start_unix_nanos: unix_nanos(SystemTime::now()),
                end_unix_nanos: 0,
                attributes,
                links,
                error: None,
            }),
        }
    }

    /// Its place in the trace.
    pub fn context(&self) -> SpanContext {
        self.recording().context
    }

    /// A scope in which database statements are children of this span.
    pub fn scope(&self) -> Scope {
        Scope {
            tracer: self.tracer.clone(),
            parent: self.context(),
            batch: None,
        }
    }

    /// Ends a server span with the response's status: status `Error` and `error.type`
    /// for a 5xx (semantic conventions: a 4xx is the client's error, not the server's).
    pub fn answered(mut self, status: u16) {
        let span = self.recording_mut();
        span.attributes
            .push(("http.response.status_code", Value::Int(status.into())));
        if status >= 500 {
            span.attributes
                .push(("error.type", Value::Owned(status.to_string())));
            span.error = Some(format!("answered {status}"));
        }
    }

    /// Marks the span failed: status `Error`, `error.type` set to `kind`, and
    /// `description` as the status message.
    pub fn failed(&mut self, kind: String, description: String) {
        let limit = self.tracer.0.value_limit;
        let span = self.recording_mut();
        span.attributes
            .push(("error.type", Value::Owned(truncated(kind, limit))));
        span.error = Some(truncated(description, limit));
    }

    /// Adds an attribute whose value is text.
    pub fn set_text(&mut self, key: &'static str, value: String) {
        let value = truncated(value, self.tracer.0.value_limit);
        self.recording_mut()
            .attributes
            .push((key, Value::Owned(value)));
    }

    fn recording(&self) -> &Finished {
        self.span.as_ref().expect("taken only when the span ends")
    }

    fn recording_mut(&mut self) -> &mut Finished {
        self.span.as_mut().expect("taken only when the span ends")
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let Some(mut span) = self.span.take() else {
            return;
        };
        // The end from the monotonic clock: a wall clock stepped meanwhile cannot
        // make a span end before it started.
        let took = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        span.end_unix_nanos = span.start_unix_nanos.saturating_add(took);
        self.tracer.0.queue(span);
    }
}

fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    })
}
