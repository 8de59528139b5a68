//! A span being recorded, as the OTLP message it is exported as. [`Span`] ends when
//! dropped, so a cancelled request or statement still ends its span and queues it.
//! Which spans start is mod.rs's business.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{self as proto, SpanFlags, Status, span::Link};

use super::{Scope, SpanContext, SpanId, TraceId, Tracer};

/// `SpanFlags`: the low byte holds the W3C trace flags (01: sampled); the next bits
/// say whether the parent's or link's remoteness is known, and that it is remote.
const SAMPLED: u32 = 0x01;
const HAS_IS_REMOTE: u32 = SpanFlags::ContextHasIsRemoteMask as u32;
const IS_REMOTE: u32 = SpanFlags::ContextIsRemoteMask as u32;

/// A database statement as its span names it: `{operation} {collection}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Statement {
    /// `db.operation.name`: `SELECT`, `INSERT`, …
    pub operation: &'static str,
    /// `db.collection.name`: the table, when the statement has one.
    pub collection: Option<&'static str>,
}

/// A span being recorded; it ends when dropped.
pub struct Span {
    tracer: Tracer,
    context: SpanContext,
    started: Instant,
    /// All but its end time.
    span: proto::Span,
}

impl Span {
    /// Starts `span` (name, kind, attributes, links) in `trace_id`, a child of `parent`
    /// (and whether that is remote: the caller's).
    pub(super) fn start(
        tracer: Tracer,
        trace_id: TraceId,
        parent: Option<(SpanId, bool)>,
        span: proto::Span,
    ) -> Span {
        let span_id = SpanId(rand::random::<std::num::NonZeroU64>().get());
        let remote = parent.map(|(_, remote)| HAS_IS_REMOTE | if remote { IS_REMOTE } else { 0 });
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH);
        let span = proto::Span {
            trace_id: trace_id.0.to_be_bytes().to_vec(),
            span_id: span_id.0.to_be_bytes().to_vec(),
            parent_span_id: parent.map_or(Vec::new(), |(id, _)| id.0.to_be_bytes().to_vec()),
            flags: SAMPLED | remote.unwrap_or(0),
            start_time_unix_nano: since_epoch.map_or(0, |since| nanos(since.as_nanos())),
            ..span
        };
        Span {
            tracer,
            context: SpanContext { trace_id, span_id, sampled: true },
            started: Instant::now(),
            span,
        }
    }

    /// Its place in the trace.
    pub fn context(&self) -> SpanContext {
        self.context
    }

    /// A scope in which database statements are children of this span.
    pub fn scope(&self) -> Scope {
        Scope {
            tracer: self.tracer.clone(),
            parent: self.context,
            links: Vec::new(),
            batch_size: 0,
        }
    }

    /// Ends a server span with the response's status: status `Error` and `error.type`
    /// for a 5xx (semantic conventions: a 4xx is the client's error, not the server's).
    pub fn answered(mut self, status: u16) {
        let (attributes, code) = (&mut self.span.attributes, Value::IntValue(status.into()));
        attributes.push(attribute("http.response.status_code", code));
        if status >= 500 {
            attributes.push(text("error.type", status.to_string()));
            self.span.status = Some(error(format!("answered {status}")));
        }
    }

    /// Marks the span failed: status `Error` with `description`, `error.type` `kind`.
    pub fn failed(&mut self, kind: String, description: String) {
        self.set_text("error.type", kind);
        self.span.status = Some(error(truncated(description, self.tracer.0.value_limit)));
    }

    /// Adds an attribute whose value is text.
    pub fn set_text(&mut self, key: &'static str, value: String) {
        let value = truncated(value, self.tracer.0.value_limit);
        self.span.attributes.push(text(key, value));
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let mut span = std::mem::take(&mut self.span);
        // The end by the monotonic clock: a stepped wall clock cannot end it before it began.
        let took = nanos(self.started.elapsed().as_nanos());
        span.end_time_unix_nano = span.start_time_unix_nano.saturating_add(took);
        self.tracer.queue(span);
    }
}

fn nanos(nanos: u128) -> u64 {
    u64::try_from(nanos).unwrap_or(u64::MAX)
}

/// A span's name: `{verb} {target}`, or the verb alone.
pub(super) fn name(verb: &str, target: Option<&str>) -> String {
    target.map_or_else(|| verb.to_owned(), |target| format!("{verb} {target}"))
}

/// A link to a request's span, in this process: not remote.
pub(super) fn link(to: &SpanContext) -> Link {
    Link {
        trace_id: to.trace_id.0.to_be_bytes().to_vec(),
        span_id: to.span_id.0.to_be_bytes().to_vec(),
        flags: SAMPLED | HAS_IS_REMOTE,
        ..Link::default()
    }
}

/// `text` cut to at most `limit` characters (`OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`).
pub(super) fn truncated(mut text: String, limit: usize) -> String {
    if let Some((at, _)) = text.char_indices().nth(limit) {
        text.truncate(at);
    }
    text
}

/// An attribute whose value is text.
pub(super) fn text(key: &str, value: impl Into<String>) -> KeyValue {
    attribute(key, Value::StringValue(value.into()))
}

pub(super) fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn error(message: String) -> Status {
    Status { message, code: StatusCode::Error as i32 }
}
