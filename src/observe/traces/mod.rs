//! OpenTelemetry traces, off unless an OTLP endpoint is configured: a server span per
//! request (http/router.rs asks), a client span per database statement (the store's
//! pool asks), and the task-local [`Scope`] that takes a request's span to its statements.

pub mod config;
pub mod context;
mod export;
mod sampler;
mod span;

use std::future::Future;

use opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue;
use opentelemetry_proto::tonic::trace::v1::{self as proto, span::SpanKind};

pub use config::TraceConfig;
pub use context::{SpanContext, SpanId, TraceId};
pub use export::Tracer;
pub use span::{Span, Statement};

use span::{attribute, text};

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
            text("url.path", span::truncated(request.path, limit)),
            text("network.protocol.version", request.protocol),
        ];
        attributes.extend(request.route.map(|route| text("http.route", route)));
        if let Some(agent) = request.user_agent {
            attributes.push(text("user_agent.original", span::truncated(agent, limit)));
        }
        // Semantic conventions: `_OTHER` methods name the span `HTTP`; never the raw path.
        let method = Some(request.method).filter(|m| *m != "_OTHER");
        let span = proto::Span {
            name: span::name(method.unwrap_or("HTTP"), request.route),
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

/// What a task works for: the span its statements are children of and, for a batched
/// statement, every traced request it serves.
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
    /// The scope of a statement serving `size` requests, `traced` the scopes of those
    /// traced: a child of the first (so it shows in a trace), linked to each.
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
            attributes.push(attribute("db.operation.batch.size", IntValue(size)));
        }
        let span = proto::Span {
            name: span::name(statement.operation, statement.collection),
            kind: SpanKind::Client as i32,
            attributes,
            links: self.links.iter().map(span::link).collect(),
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

/// Runs `work` within `scope`.
pub async fn within<F: Future>(scope: Scope, work: F) -> F::Output {
    CURRENT.scope(scope, work).await
}

/// A client span for `statement`, if the current task has a scope.
pub fn statement(statement: Statement) -> Option<Span> {
    CURRENT.try_with(|scope| scope.statement(statement)).ok()
}
