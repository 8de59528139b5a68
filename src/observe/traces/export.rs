//! Sending spans, never in a request's way: a finished span goes into a queue bounded
//! in spans and in bytes with `try_send` (when full, it is dropped and counted), and a
//! task of its own posts them to the collector in batches over OTLP/HTTP, each export
//! at most [`MAX_EXPORT_BYTES`] and bounded by the OTLP timeout. A failed export drops
//! its batch (counted; a warning at most every 30 s): a dead or slow collector costs
//! the requests nothing, and the memory it can hold up is bounded. The messages are
//! opentelemetry-proto's.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Link;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, SpanFlags, Status};

use super::config::{Endpoint, TraceConfig};
use super::sampler::{RateLimit, Sampler};
use super::span::{Finished, Value};
use crate::error::describe;

/// Export failures are logged at most this often; the ones between are counted.
const WARN_EVERY: Duration = Duration::from_secs(30);
/// The most of a collector's answer that is read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Spans waiting for export, or being exported, hold at most about this much
/// ([`Finished::size`]); past it, new ones are dropped as if the queue were full.
const MAX_QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// One export's spans hold at most about this much (a batch is split past it), well
/// under what collectors take in one request (the OpenTelemetry Collector: 20 MiB).
const MAX_EXPORT_BYTES: usize = 1024 * 1024;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: &'static str,
}

/// Why spans were dropped, as `/metrics` labels them.
#[derive(Clone, Copy)]
enum Dropped {
    /// The queue was full: the exporter is behind (a slow or dead collector).
    QueueFull,
    /// The export failed or timed out.
    ExportFailed,
    /// The collector took the export but refused these spans (a partial success).
    Rejected,
    /// A sampled request past `TRACES_MAX_PER_SECOND`: its span was never started.
    RateLimited,
}

impl Dropped {
    fn label(self) -> &'static str {
        match self {
            Dropped::QueueFull => "queue_full",
            Dropped::ExportFailed => "export_failed",
            Dropped::Rejected => "rejected",
            Dropped::RateLimited => "rate_limited",
        }
    }
}

#[derive(Clone, Default)]
struct Counters {
    dropped: Family<DropLabels, Counter>,
    exported: Counter,
}

impl Counters {
    fn dropped(&self, why: Dropped, spans: usize) {
        self.dropped
            .get_or_create(&DropLabels {
                reason: why.label(),
            })
            .inc_by(spans as u64);
    }
}

/// The request side of the exporter: the sampler and its rate limit, the queue and
/// the bytes it holds, and the counters.
pub(super) struct Exporter {
    pub(super) sampler: Sampler,
    rate: RateLimit,
    /// `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`.
    pub(super) value_limit: usize,
    spans: mpsc::Sender<Finished>,
    queued_bytes: Arc<AtomicUsize>,
    flushes: mpsc::UnboundedSender<oneshot::Sender<()>>,
    counters: Counters,
}

impl Exporter {
    /// Spawns the export task for `config`.
    pub(super) fn start(config: TraceConfig) -> Exporter {
        let (spans, queue) = mpsc::channel(config.max_queue);
        let (flushes, flush_requests) = mpsc::unbounded_channel();
        let counters = Counters::default();
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let exporter = Exporter {
            sampler: config.sampler,
            rate: RateLimit::new(config.max_per_second),
            value_limit: config.value_limit,
            spans,
            queued_bytes: queued_bytes.clone(),
            flushes,
            counters: counters.clone(),
        };
        tokio::spawn(run(config, queue, flush_requests, counters, queued_bytes));
        exporter
    }

    /// Whether one more request may be traced now (`TRACES_MAX_PER_SECOND`); if not,
    /// it is counted.
    pub(super) fn admit(&self) -> bool {
        let admitted = self.rate.admit();
        if !admitted {
            self.counters.dropped(Dropped::RateLimited, 1);
        }
        admitted
    }

    /// Queues a finished span, or drops and counts it if the queue is full, in spans
    /// or in bytes.
    pub(super) fn queue(&self, span: Finished) {
        let size = span.size();
        let before = self.queued_bytes.fetch_add(size, Ordering::Relaxed);
        if before + size > MAX_QUEUE_BYTES || self.spans.try_send(span).is_err() {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            self.counters.dropped(Dropped::QueueFull, 1);
        }
    }

    pub(super) fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "trace_spans_dropped",
            "Spans not exported, by reason: queue_full (the exporter is behind), \
             export_failed, rejected by the collector, or rate_limited (not started: past \
             TRACES_MAX_PER_SECOND)",
            self.counters.dropped.clone(),
        );
        registry.register(
            "trace_spans_exported",
            "Spans the collector accepted",
            self.counters.exported.clone(),
        );
    }

    /// Asks the export task to send everything queued now, and waits for it until
    /// `deadline`.
    pub(super) async fn flush(&self, deadline: std::time::Instant) {
        let (done, flushed) = oneshot::channel();
        if self.flushes.send(done).is_err() {
            return;
        }
        if tokio::time::timeout_at(deadline.into(), flushed)
            .await
            .is_err()
        {
            log::warn!("some spans were not exported before the shutdown timeout");
        }
    }
}

/// The export task: a batch goes out when it is full, when the schedule delay has
/// passed since the last, or when a flush asks. One export at a time; meanwhile
/// spans wait in the queue, or are dropped when it is full.
async fn run(
    config: TraceConfig,
    mut queue: mpsc::Receiver<Finished>,
    mut flushes: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    counters: Counters,
    queued_bytes: Arc<AtomicUsize>,
) {
    let mut export = Export {
        resource: resource(&config),
        client: Client::new(&config),
        timeout: config.timeout,
        counters,
        queued_bytes,
        warned: None,
        unlogged: 0,
    };
    let max = config.max_batch;
    let mut batch = Vec::with_capacity(max);
    let mut due = Instant::now() + config.schedule_delay;
    loop {
        let room = max - batch.len();
        tokio::select! {
            taken = queue.recv_many(&mut batch, room) => {
                if taken == 0 {
                    // Every sender is gone: nothing more will come.
                    export.send(std::mem::take(&mut batch)).await;
                    return;
                }
                if batch.len() < max {
                    continue;
                }
            }
            () = tokio::time::sleep_until(due) => {}
            Some(done) = flushes.recv() => {
                loop {
                    while batch.len() < max {
                        match queue.try_recv() {
                            Ok(span) => batch.push(span),
                            Err(_) => break,
                        }
                    }
                    if batch.is_empty() {
                        break;
                    }
                    export.send(std::mem::replace(&mut batch, Vec::with_capacity(max))).await;
                }
                let _ = done.send(());
                continue;
            }
        }
        due = Instant::now() + config.schedule_delay;
        if !batch.is_empty() {
            export
                .send(std::mem::replace(&mut batch, Vec::with_capacity(max)))
                .await;
        }
    }
}

/// One export after another: the client, what goes with every batch, and the counts.
struct Export {
    resource: Resource,
    client: Client,
    timeout: Duration,
    counters: Counters,
    /// What the queue and the spans being exported hold (see [`MAX_QUEUE_BYTES`]).
    queued_bytes: Arc<AtomicUsize>,
    /// When a failure was last logged, and how many have not been since.
    warned: Option<Instant>,
    unlogged: u64,
}

impl Export {
    /// Exports `spans`, in parts of at most [`MAX_EXPORT_BYTES`].
    async fn send(&mut self, spans: Vec<Finished>) {
        let mut part = Vec::new();
        let mut bytes = 0;
        for span in spans {
            let size = span.size();
            if bytes + size > MAX_EXPORT_BYTES && !part.is_empty() {
                self.post(std::mem::take(&mut part), bytes).await;
                bytes = 0;
            }
            bytes += size;
            part.push(span);
        }
        self.post(part, bytes).await;
    }

    /// Exports `spans`, which hold `bytes` of the queue's count, and lets go of them.
    async fn post(&mut self, spans: Vec<Finished>, bytes: usize) {
        if spans.is_empty() {
            return;
        }
        self.export(spans).await;
        self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    async fn export(&mut self, spans: Vec<Finished>) {
        let count = spans.len();
        let body = request(&self.resource, spans).encode_to_vec();
        let failure = match tokio::time::timeout(self.timeout, self.client.post(body)).await {
            Ok(Ok(rejected)) => {
                let rejected = rejected.min(count);
                self.counters.exported.inc_by((count - rejected) as u64);
                if rejected == 0 {
                    return;
                }
                self.counters.dropped(Dropped::Rejected, rejected);
                format!("the collector rejected {rejected} of {count} spans")
            }
            Ok(Err(err)) => {
                self.client.reset();
                self.counters.dropped(Dropped::ExportFailed, count);
                format!("could not export {count} spans: {err}")
            }
            Err(_) => {
                self.client.reset();
                self.counters.dropped(Dropped::ExportFailed, count);
                format!(
                    "could not export {count} spans: no answer within {:?}",
                    self.timeout
                )
            }
        };
        self.warn(failure);
    }

    fn warn(&mut self, failure: String) {
        if self.warned.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            self.unlogged += 1;
            return;
        }
        let endpoint = &self.client.endpoint.uri;
        match std::mem::take(&mut self.unlogged) {
            0 => log::warn!("traces to {endpoint}: {failure}"),
            n => log::warn!(
                "traces to {endpoint}: {failure} ({n} more failures since the last warning)"
            ),
        }
        self.warned = Some(Instant::now());
    }
}

/// An HTTP/1.1 client of one collector, over one kept-alive connection.
struct Client {
    endpoint: Endpoint,
    headers: Vec<(HeaderName, HeaderValue)>,
    user_agent: HeaderValue,
    tls: Option<Result<TlsConnector, String>>,
    connection: Option<(SendRequest<Full<Bytes>>, Driver)>,
}

/// The task that drives a connection; aborted when dropped, so an export given up
/// midway (the timeout) closes its connection rather than leave it to the collector.
struct Driver(JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Client {
    fn new(config: &TraceConfig) -> Client {
        let tls = config.endpoint.tls.then(|| connector(config));
        Client {
            endpoint: config.endpoint.clone(),
            headers: config.headers.clone(),
            user_agent: HeaderValue::from_static(concat!("task-api/", env!("CARGO_PKG_VERSION"))),
            tls,
            connection: None,
        }
    }

    /// Posts one export; how many spans the collector rejected, or why it failed.
    async fn post(&mut self, body: Vec<u8>) -> Result<usize, String> {
        let (mut sender, driver) = match self.connection.take() {
            Some((mut sender, driver)) => match sender.ready().await {
                Ok(()) => (sender, driver),
                // Closed by the collector since the last export.
                Err(_) => self.connect().await?,
            },
            None => self.connect().await?,
        };
        let target = self
            .endpoint
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str());
        let authority = self.endpoint.uri.authority().map_or("", |a| a.as_str());
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(target)
            .header(HOST, authority)
            .header(CONTENT_TYPE, "application/x-protobuf")
            .header(USER_AGENT, self.user_agent.clone())
            .body(Full::new(Bytes::from(body)))
            .map_err(|err| format!("request: {err}"))?;
        for (name, value) in &self.headers {
            request.headers_mut().append(name.clone(), value.clone());
        }
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| describe(&err))?;
        let status = response.status();
        let answer = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|err| format!("reading the answer: {err}"))?
            .to_bytes();
        self.connection = Some((sender, driver));
        if !status.is_success() {
            let text = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
            return Err(format!("the collector answered {status}: {text:?}"));
        }
        // An empty or undecodable answer is a full success: the status says so.
        let rejected = ExportTraceServiceResponse::decode(answer)
            .ok()
            .and_then(|response| response.partial_success)
            .map_or(0, |partial| partial.rejected_spans.max(0));
        Ok(usize::try_from(rejected).unwrap_or(usize::MAX))
    }

    async fn connect(&self) -> Result<(SendRequest<Full<Bytes>>, Driver), String> {
        let (host, port) = (self.endpoint.host.as_str(), self.endpoint.port);
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|err| format!("connecting to {host}:{port}: {err}"))?;
        tcp.set_nodelay(true).ok();
        match &self.tls {
            None => handshake(tcp).await,
            Some(Err(err)) => Err(err.clone()),
            Some(Ok(tls)) => {
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|_| format!("'{host}' is not a TLS server name"))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|err| format!("TLS with {host}: {}", describe(&err)))?;
                handshake(stream).await
            }
        }
    }

    /// Forgets the connection (after a failure or a timeout): the next export opens a
    /// new one.
    fn reset(&mut self) {
        self.connection = None;
    }
}

async fn handshake<T>(io: T) -> Result<(SendRequest<Full<Bytes>>, Driver), String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|err| describe(&err))?;
    let driver = tokio::spawn(async move {
        if let Err(err) = connection.await {
            log::debug!("collector connection ended: {}", describe(&err));
        }
    });
    Ok((sender, Driver(driver)))
}

/// rustls for an https:// collector: the compiled-in roots, or
/// `OTEL_EXPORTER_OTLP_CERTIFICATE`'s.
fn connector(config: &TraceConfig) -> Result<TlsConnector, String> {
    let roots = crate::pg::tls::root_store(&config.roots)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS set-up: {err}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(tls)))
}

/// `SpanFlags`: the low byte holds the W3C trace flags (01: sampled); the next bits say
/// whether the parent's or link's remoteness is known, and that it is remote.
const SAMPLED: u32 = 0x01;
const HAS_IS_REMOTE: u32 = SpanFlags::ContextHasIsRemoteMask as u32;
const IS_REMOTE: u32 = SpanFlags::ContextIsRemoteMask as u32;

/// The resource every export carries: `OTEL_RESOURCE_ATTRIBUTES` and the rest.
fn resource(config: &TraceConfig) -> Resource {
    Resource {
        attributes: config
            .resource
            .iter()
            .map(|(key, value)| text(key.clone(), value.clone()))
            .collect(),
        ..Resource::default()
    }
}

/// One export request holding `spans`, under `resource`.
fn request(resource: &Resource, spans: Vec<Finished>) -> ExportTraceServiceRequest {
    let scope = InstrumentationScope {
        name: "task-api".to_owned(),
        version: crate::VERSION.to_owned(),
        ..InstrumentationScope::default()
    };
    let scope_spans = ScopeSpans {
        scope: Some(scope),
        spans: spans.into_iter().map(span).collect(),
        schema_url: String::new(),
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![scope_spans],
            schema_url: String::new(),
        }],
    }
}

fn span(finished: Finished) -> Span {
    let (parent_span_id, flags) = match finished.parent {
        None => (Vec::new(), SAMPLED),
        Some((id, remote)) => {
            let remote = if remote { IS_REMOTE } else { 0 };
            (id.0.to_vec(), SAMPLED | HAS_IS_REMOTE | remote)
        }
    };
    let attribute = |(key, value): (&str, Value)| match value {
        Value::Static(value) => text(key.to_owned(), value.to_owned()),
        Value::Owned(value) => text(key.to_owned(), value),
        Value::Int(n) => KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(n)),
            }),
            ..KeyValue::default()
        },
    };
    let link = |to: &super::SpanContext| Link {
        trace_id: to.trace_id.0.to_vec(),
        span_id: to.span_id.0.to_vec(),
        // A request's span, in this process: not remote.
        flags: SAMPLED | HAS_IS_REMOTE,
        ..Link::default()
    };
    Span {
        trace_id: finished.context.trace_id.0.to_vec(),
        span_id: finished.context.span_id.0.to_vec(),
        parent_span_id,
        flags,
        name: finished.name.text(),
        kind: finished.kind as i32,
        start_time_unix_nano: finished.start_unix_nanos,
        end_time_unix_nano: finished.end_unix_nanos,
        attributes: finished.attributes.into_iter().map(attribute).collect(),
        links: finished.links.iter().map(link).collect(),
        status: finished.error.map(|message| Status {
            message,
            code: opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32,
        }),
        ..Span::default()
    }
}

fn text(key: String, value: String) -> KeyValue {
    KeyValue {
        key,
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..KeyValue::default()
    }
}
