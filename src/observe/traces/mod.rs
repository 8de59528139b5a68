//! OpenTelemetry traces, off unless an OTLP endpoint is configured: a server span per request,
//! a client span per statement, and the task-local [`Scope`] that links them. A [`Span`] is its
//! OTLP message and ends when dropped, so a cancelled request or statement still exports it.

pub mod config;
pub mod context;
mod export;
mod sampler;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::span::{Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{self as proto, SpanFlags, Status};

pub use config::TraceConfig;
pub use context::{SpanContext, SpanId, TraceId};
pub use export::Tracer;

/// What a server span describes: an HTTP request as the semantic conventions name it.
pub struct ServerRequest {
    /// `http.request.method`: a known method, or `_OTHER`.
    pub method: &'static str,
    /// `http.route`, the route template, if one matched.
    pub route: Option<&'static str>,
    /// `url.path`.
    pub path: String,
    /// `network.protocol.version`: `1.0` or `1.1`.
    pub protocol: &'static str,
    /// `user_agent.original`, if the client sent one.
    pub user_agent: Option<String>,
}

impl Tracer {
    /// The server span of a request whose caller sent `parent` (a valid `traceparent`),
    /// or `None` when the sampler drops it, or it would pass `TRACES_MAX_PER_SECOND`.
    pub fn server_span(&self, parent: Option<SpanContext>, request: ServerRequest) -> Option<Span> {
        // All of a new id random: the ratio sampler reads its last 56 bits.
        let random = || TraceId(rand::random::<std::num::NonZeroU128>().get());
        let trace_id = parent.map_or_else(random, |parent| parent.trace_id);
        let sampled = self.0.sampler.samples(trace_id, parent.map(|p| p.sampled));
        if !sampled || !self.admit() {
            return None;
        }
        let limit = self.0.value_limit;
        let mut attributes = vec![
            text("http.request.method", request.method),
            text("url.scheme", "http"),
            text("url.path", truncated(request.path, limit)),
            text("network.protocol.version", request.protocol),
        ];
        attributes.extend(request.route.map(|route| text("http.route", route)));
        if let Some(agent) = request.user_agent {
            attributes.push(text("user_agent.original", truncated(agent, limit)));
        }
        // Semantic conventions: `_OTHER` methods name the span `HTTP`; never the raw path.
        let method = Some(request.method).filter(|m| *m != "_OTHER");
        let span = proto::Span {
            name: name(method.unwrap_or("HTTP"), request.route),
            kind: SpanKind::Server as i32,
            attributes,
            ..proto::Span::default()
        };
        let parent = parent.map(|parent| (parent.span_id, true));
        Some(Span::start(self.clone(), trace_id, parent, span))
    }
}

tokio::task_local! {
    /// The current task's scope: set only for a sampled request, and its batches.
    static CURRENT: Scope;
}

/// What a task works for: its statements' parent span and, for a batch, every traced request.
#[derive(Clone)]
pub struct Scope {
    tracer: Tracer,
    parent: SpanContext,
    /// A batch's traced requests, each a link.
    links: Vec<SpanContext>,
    /// A batch's requests, traced or not; 0 outside a batch.
    batch_size: usize,
}

impl Scope {
    /// The scope of a batch of `size` requests: a child of the first `traced`, linked to each.
    pub fn batch(traced: Vec<Scope>, size: usize) -> Option<Scope> {
        let first = traced.first()?;
        Some(Scope {
            tracer: first.tracer.clone(),
            parent: first.parent,
            links: traced.iter().map(|scope| scope.parent).collect(),
            batch_size: size,
        })
    }

    fn statement(&self, statement: Statement) -> Span {
        let mut attributes = vec![
            text("db.system.name", "postgresql"),
            text("db.operation.name", statement.operation),
        ];
        attributes.extend(statement.collection.map(|c| text("db.collection.name", c)));
        // Semantic conventions: a batch size is never 1.
        if self.batch_size > 1 {
            let size = i64::try_from(self.batch_size).unwrap_or(i64::MAX);
            attributes.push(attribute("db.operation.batch.size", Value::IntValue(size)));
        }
        let span = proto::Span {
            name: name(statement.operation, statement.collection),
            kind: SpanKind::Client as i32,
            attributes,
            links: self.links.iter().map(link).collect(),
            ..proto::Span::default()
        };
        let parent = Some((self.parent.span_id, false));
        Span::start(self.tracer.clone(), self.parent.trace_id, parent, span)
    }
}

/// The current task's scope, if it has one (to hand to another task).
pub fn current() -> Option<Scope> {
    CURRENT.try_with(Scope::clone).ok()
}

/// Runs `work` within `scope`, if there is one.
pub async fn within<F: Future>(scope: Option<Scope>, work: F) -> F::Output {
    match scope {
        Some(scope) => CURRENT.scope(scope, work).await,
        None => work.await,
    }
}

/// A client span for `statement`, if the current task has a scope.
pub fn statement(statement: Statement) -> Option<Span> {
    CURRENT.try_with(|scope| scope.statement(statement)).ok()
}

/// `SpanFlags`: the W3C trace flags (01: sampled) in the low byte, then remoteness bits.
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
    /// Starts `span` in `trace_id`, a child of `parent` (and whether that is remote).
    fn start(
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
        let context = SpanContext { trace_id, span_id, sampled: true };
        Span { tracer, context, started: Instant::now(), span }
    }

    /// Its place in the trace.
    pub fn context(&self) -> SpanContext {
        self.context
    }

    /// A scope in which database statements are children of this span.
    pub fn scope(&self) -> Scope {
        let tracer = self.tracer.clone();
        Scope { tracer, parent: self.context, links: Vec::new(), batch_size: 0 }
    }

    /// Ends a server span with the response's status: status `Error` and `error.type`
    /// for a 5xx (semantic conventions: a 4xx is the client's error, not the server's).
    pub fn answered(mut self, status: u16) {
        let code = Value::IntValue(status.into());
        self.span.attributes.push(attribute("http.response.status_code", code));
        if status >= 500 {
            self.failed(status.to_string(), format!("answered {status}"));
        }
    }

    /// Marks the span failed: status `Error` with `description`, `error.type` `kind`.
    pub fn failed(&mut self, kind: String, description: String) {
        self.set_text("error.type", kind);
        let message = truncated(description, self.tracer.0.value_limit);
        self.span.status = Some(Status { message, code: StatusCode::Error as i32 });
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
fn name(verb: &str, target: Option<&str>) -> String {
    target.map_or_else(|| verb.to_owned(), |target| format!("{verb} {target}"))
}

/// A link to a request's span, in this process: not remote.
fn link(to: &SpanContext) -> Link {
    Link {
        trace_id: to.trace_id.0.to_be_bytes().to_vec(),
        span_id: to.span_id.0.to_be_bytes().to_vec(),
        flags: SAMPLED | HAS_IS_REMOTE,
        ..Link::default()
    }
}

/// `text` cut to at most `limit` characters (`OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`).
fn truncated(mut text: String, limit: usize) -> String {
    if let Some((at, _)) = text.char_indices().nth(limit) {
        text.truncate(at);
    }
    text
}

/// An attribute whose value is text.
fn text(key: &str, value: impl Into<String>) -> KeyValue {
    attribute(key, Value::StringValue(value.into()))
}

fn attribute(key: &str, value: Value) -> KeyValue {
    let value = Some(AnyValue { value: Some(value) });
    KeyValue { key: key.to_owned(), value, ..KeyValue::default() }
}
