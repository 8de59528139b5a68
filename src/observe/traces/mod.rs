//! OpenTelemetry traces, off unless an OTLP endpoint is configured: a server span per
//! request (http/router.rs starts it), a client span per database statement (the
//! store's pool), and the task-local [`Scope`] that carries a request's span to its
//! statements, through a batch too. Ids and the caller's `traceparent` are context.rs's;
//! which traces are kept, sampler.rs's; the spans, span.rs's; queueing and batching them,
//! export.rs's; the wire, otlp.rs's; the environment, config.rs's.

pub mod config;
pub mod context;
mod export;
mod otlp;
pub mod sampler;
mod span;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::registry::Registry;

pub use config::TraceConfig;
pub use context::{SpanContext, SpanId, TraceId};
pub use span::{Span, Statement};

use export::Exporter;
use span::{Kind, Name, Value};

/// What a server span describes: an HTTP request as the semantic conventions name it.
pub struct ServerRequest {
    /// `http.request.method`: a known method, or `_OTHER`.
    pub method: &'static str,
    /// `http.route`, the route template; `None` when no route matched.
    pub route: Option<&'static str>,
    /// `url.path`.
    pub path: String,
    /// `network.protocol.version`: `1.0` or `1.1`.
    pub protocol: &'static str,
    /// `user_agent.original`, if the client sent one.
    pub user_agent: Option<String>,
}

/// Starts spans and hands finished ones to the exporter. Cheap to clone.
#[derive(Clone)]
pub struct Tracer(Arc<Exporter>);

impl Tracer {
    /// Starts the exporter task for `config`, so it must be called inside the tokio
    /// runtime.
    pub fn start(config: TraceConfig) -> Tracer {
        Tracer(Arc::new(Exporter::start(config)))
    }

    /// The server span of a request whose caller sent `parent` (a valid `traceparent`),
    /// or `None` when the sampler drops it, or it would pass `TRACES_MAX_PER_SECOND`.
    pub fn server_span(&self, parent: Option<SpanContext>, request: ServerRequest) -> Option<Span> {
        let trace_id = parent.map_or_else(TraceId::random, |parent| parent.trace_id);
        let sampled = self.0.sampler.samples(trace_id, parent.map(|p| p.sampled));
        if !sampled || !self.0.admit() {
            return None;
        }
        let text = |value: String| Value::Owned(span::truncated(value, self.0.value_limit));
        let mut attributes = vec![
            ("http.request.method", Value::Static(request.method)),
            ("url.scheme", Value::Static("http")),
            ("url.path", text(request.path)),
            ("network.protocol.version", Value::Static(request.protocol)),
        ];
        if let Some(route) = request.route {
            attributes.push(("http.route", Value::Static(route)));
        }
        if let Some(agent) = request.user_agent {
            attributes.push(("user_agent.original", text(agent)));
        }
        let name = Name::Http {
            method: request.method,
            route: request.route,
        };
        let parent = parent.map(|parent| (parent.span_id, true));
        let started = (trace_id, parent, Kind::Server, name);
        Some(Span::start(self.clone(), started, attributes, Vec::new()))
    }

    /// Registers the exporter's counters: `trace_spans_dropped{reason}` and
    /// `trace_spans_exported`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.0.register_metrics(registry);
    }

    /// Exports every span finished so far; gives up at `deadline` (the shutdown timeout).
    pub async fn flush(&self, deadline: Instant) {
        self.0.flush(deadline).await;
    }
}

tokio::task_local! {
    /// The span the current task's database statements belong to. Set only while
    /// tracing is on and the request is sampled.
    static CURRENT: Scope;
}

/// What a task works for: the span its statements are children of and, for a batched
/// statement, every traced request it serves.
#[derive(Clone)]
pub struct Scope {
    tracer: Tracer,
    parent: SpanContext,
    batch: Option<Batch>,
}

#[derive(Clone)]
struct Batch {
    /// The spans of the traced requests served, each a link.
    links: Vec<SpanContext>,
    /// Requests served, traced or not.
    size: usize,
}

impl Scope {
    /// The scope of a batched statement that serves `size` requests, `traced` being the
    /// scopes of those that are traced: a child of the first (so it shows in a trace),
    /// linked to each. `None` when none of them is traced.
    pub fn batch(traced: Vec<Scope>, size: usize) -> Option<Scope> {
        let first = traced.first()?;
        Some(Scope {
            tracer: first.tracer.clone(),
            parent: first.parent,
            batch: Some(Batch {
                links: traced.iter().map(|scope| scope.parent).collect(),
                size,
            }),
        })
    }

    fn statement(&self, statement: Statement) -> Span {
        let mut attributes = vec![
            ("db.system.name", Value::Static("postgresql")),
            ("db.operation.name", Value::Static(statement.operation)),
        ];
        if let Some(collection) = statement.collection {
            attributes.push(("db.collection.name", Value::Static(collection)));
        }
        let mut links = Vec::new();
        if let Some(batch) = &self.batch {
            // Semantic conventions: a batch size is never 1.
            if batch.size > 1 {
                let size = i64::try_from(batch.size).unwrap_or(i64::MAX);
                attributes.push(("db.operation.batch.size", Value::Int(size)));
            }
            links.clone_from(&batch.links);
        }
        let parent = Some((self.parent.span_id, false));
        let started = (
            self.parent.trace_id,
            parent,
            Kind::Client,
            Name::Db(statement),
        );
        Span::start(self.tracer.clone(), started, attributes, links)
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
