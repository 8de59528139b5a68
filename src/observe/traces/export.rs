//! The [`Tracer`]'s queue, bounded in spans and bytes (past them a span is dropped and counted),
//! and the task that posts it to the collector: OTLP/HTTP of at most [`MAX_EXPORT_BYTES`], a
//! connection each. A failed export drops its spans, counted and warned of at most every 30 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::config::TraceConfig;
use super::sampler::{RateLimit, Sampler};
use super::text;
use crate::error::describe;
use crate::pg::tls::{self, Roots};

/// Export failures are logged at most this often; the ones between are counted.
const WARN_EVERY: Duration = Duration::from_secs(30);
/// Bytes (encoded) that spans queued or being exported hold at most; past it, the queue is full.
const MAX_QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Bytes one export's spans hold at most: well under collectors' limits (the Collector's: 20 MiB).
const MAX_EXPORT_BYTES: usize = 1024 * 1024;
/// The most of a collector's answer that is read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What both sides count: spans dropped by reason and exported (for `/metrics`), and
/// the bytes that spans queued or being exported hold (see [`MAX_QUEUE_BYTES`]).
#[derive(Clone, Default)]
struct Counters {
    dropped: Family<[(&'static str, &'static str); 1], Counter>,
    exported: Counter,
    queued_bytes: Arc<AtomicUsize>,
}

impl Counters {
    fn dropped(&self, reason: &'static str, spans: usize) {
        self.dropped.get_or_create(&[("reason", reason)]).inc_by(spans as u64);
    }
}

/// Starts spans (mod.rs) and queues them as they end. Cheap to clone.
#[derive(Clone)]
pub struct Tracer(pub(super) Arc<Shared>);

/// The request side: the sampler and its rate limit, the queue's sending end, the counts.
pub(super) struct Shared {
    pub(super) sampler: Sampler,
    rate: RateLimit,
    /// `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`.
    pub(super) value_limit: usize,
    spans: mpsc::Sender<Span>,
    flushes: mpsc::UnboundedSender<oneshot::Sender<()>>,
    counters: Counters,
}

impl Tracer {
    /// Spawns the export task for `config`, so it must be called inside the runtime.
    pub fn start(config: TraceConfig) -> Tracer {
        let (spans, queue) = mpsc::channel(config.max_queue);
        let (flushes, flush_requests) = mpsc::unbounded_channel();
        let attributes = config.resource.iter().map(|(key, value)| text(key, value)).collect();
        let (name, version) = ("task-api".to_owned(), crate::VERSION.to_owned());
        let scope = Some(InstrumentationScope { name, version, ..Default::default() });
        let https = config.endpoint.scheme_str() == Some("https");
        let shared = Shared {
            sampler: config.sampler,
            rate: RateLimit::new(config.max_per_second),
            value_limit: config.value_limit,
            spans,
            flushes,
            counters: Counters::default(),
        };
        let export = Export {
            template: ResourceSpans {
                resource: Some(Resource { attributes, ..Resource::default() }),
                scope_spans: vec![ScopeSpans { scope, ..ScopeSpans::default() }],
                schema_url: String::new(),
            },
            tls: https.then(|| connector(&config.roots)),
            config,
            counters: shared.counters.clone(),
            warned: None,
            unlogged: 0,
        };
        tokio::spawn(export.run(queue, flush_requests));
        Tracer(Arc::new(shared))
    }

    /// Whether one more request may be traced now (`TRACES_MAX_PER_SECOND`), else counts it.
    pub(super) fn admit(&self) -> bool {
        self.0.rate.admit() || {
            self.0.counters.dropped("rate_limited", 1);
            false
        }
    }

    /// Queues a span that ended, or drops and counts it: the queue is full.
    pub(super) fn queue(&self, span: Span) {
        let (shared, size) = (&self.0, span.encoded_len());
        let queued_bytes = &shared.counters.queued_bytes;
        let before = queued_bytes.fetch_add(size, Relaxed);
        if before + size > MAX_QUEUE_BYTES || shared.spans.try_send(span).is_err() {
            queued_bytes.fetch_sub(size, Relaxed);
            shared.counters.dropped("queue_full", 1);
        }
    }

    /// Registers `trace_spans_dropped{reason}` and `trace_spans_exported`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let help = "Spans not exported, by reason: queue_full (the exporter is behind), \
            export_failed, rejected by the collector, or rate_limited (not started: past \
            TRACES_MAX_PER_SECOND)";
        registry.register("trace_spans_dropped", help, self.0.counters.dropped.clone());
        let help = "Spans the collector accepted";
        registry.register("trace_spans_exported", help, self.0.counters.exported.clone());
    }

    /// Exports every span finished so far; gives up at `deadline` (the shutdown timeout).
    pub async fn flush(&self, deadline: std::time::Instant) {
        let (done, flushed) = oneshot::channel();
        let sent = self.0.flushes.send(done).is_ok();
        let flushed = tokio::time::timeout_at(deadline.into(), flushed);
        if sent && flushed.await.is_err() {
            log::warn!("some spans were not exported before the shutdown timeout");
        }
    }
}

/// The export task's side: the collector, what goes with every export, and the counts.
struct Export {
    config: TraceConfig,
    /// rustls for https://; the error of a certificate file that went bad since start.
    tls: Option<Result<TlsConnector, String>>,
    /// What every export holds but its spans.
    template: ResourceSpans,
    counters: Counters,
    /// When a failure was last logged, and how many have not been since.
    warned: Option<Instant>,
    unlogged: u64,
}

impl Export {
    /// A batch goes out when it is full, `OTEL_BSP_SCHEDULE_DELAY` after the last, or when
    /// a flush asks; one export at a time, while spans wait in the queue.
    async fn run(
        mut self,
        mut queue: mpsc::Receiver<Span>,
        mut flushes: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    ) {
        let (mut batch, max_batch, delay) =
            (Vec::new(), self.config.max_batch, self.config.schedule_delay);
        let mut due = Instant::now() + delay;
        loop {
            let (room, mut flushed) = (max_batch - batch.len(), None);
            tokio::select! {
                taken = queue.recv_many(&mut batch, room) => {
                    if taken == 0 {
                        // Every sender is gone: nothing more will come.
                        return self.send(batch).await;
                    }
                    if batch.len() < max_batch {
                        continue;
                    }
                }
                () = tokio::time::sleep_until(due) => {}
                Some(done) = flushes.recv() => {
                    batch.extend(std::iter::from_fn(|| queue.try_recv().ok()));
                    flushed = Some(done);
                }
            }
            due = Instant::now() + delay;
            self.send(std::mem::take(&mut batch)).await;
            if let Some(done) = flushed {
                let _ = done.send(());
            }
        }
    }

    /// Exports `spans`, in parts of at most `max_batch` spans and [`MAX_EXPORT_BYTES`].
    async fn send(&mut self, mut spans: Vec<Span>) {
        while !spans.is_empty() {
            let mut bytes = 0;
            let fits = |span: &&Span| {
                bytes += span.encoded_len();
                bytes <= MAX_EXPORT_BYTES
            };
            let count = spans.iter().take(self.config.max_batch).take_while(fits).count();
            self.export(spans.drain(..count.max(1)).collect()).await;
        }
    }

    /// Exports `spans`, then lets go of the queue's bytes they held.
    async fn export(&mut self, spans: Vec<Span>) {
        let (count, bytes) = (spans.len(), spans.iter().map(Span::encoded_len).sum());
        let timeout = self.config.timeout;
        let posted = tokio::time::timeout(timeout, self.post(spans)).await;
        self.counters.queued_bytes.fetch_sub(bytes, Relaxed);
        let timed_out = |_| Err(format!("no answer within {timeout:?}"));
        let failure = match posted.unwrap_or_else(timed_out) {
            Ok(rejected) => {
                let rejected = rejected.min(count);
                self.counters.exported.inc_by((count - rejected) as u64);
                if rejected == 0 {
                    return;
                }
                self.counters.dropped("rejected", rejected);
                format!("the collector rejected {rejected} of {count} spans")
            }
            Err(err) => {
                self.counters.dropped("export_failed", count);
                format!("could not export {count} spans: {err}")
            }
        };
        if self.warned.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            self.unlogged += 1;
            return;
        }
        let since = match std::mem::take(&mut self.unlogged) {
            0 => String::new(),
            n => format!(" ({n} more failures since the last warning)"),
        };
        log::warn!("traces to {}: {failure}{since}", self.config.endpoint);
        self.warned = Some(Instant::now());
    }

    /// Posts `spans` as one export; how many the collector rejected, or why it failed.
    async fn post(&self, spans: Vec<Span>) -> Result<usize, String> {
        // An IPv6 address without its brackets; the port checked at start, or the scheme's.
        let uri = &self.config.endpoint;
        let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|err| format!("connecting to {host}:{port}: {err}"))?;
        tcp.set_nodelay(true).ok();
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(Err(err)) => return Err(err.clone()),
            Some(Ok(tls)) => {
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|_| format!("'{host}' is not a TLS server name"))?;
                let tls = tls.connect(name, tcp).await;
                Box::new(tls.map_err(|err| format!("TLS with {host}: {}", describe(&err)))?)
            }
        };
        let handshake = hyper::client::conn::http1::handshake(TokioIo::new(io)).await;
        let (mut sender, connection) = handshake.map_err(|err| describe(&err))?;
        let mut export = self.template.clone();
        export.scope_spans[0].spans = spans;
        let body = ExportTraceServiceRequest { resource_spans: vec![export] }.encode_to_vec();
        let mut request = Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(HOST, uri.authority().map_or("", |a| a.as_str()))
            .header(CONTENT_TYPE, "application/x-protobuf")
            .header(USER_AGENT, concat!("task-api/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(body)))
            .map_err(|err| format!("request: {err}"))?;
        let headers = self.config.headers.0.iter().cloned();
        request.headers_mut().extend(headers.map(|(name, value)| (Some(name), value)));
        // `sender` moved in, so that the connection ends once the answer is read.
        let exchange = async move {
            let response = sender.send_request(request).await.map_err(|err| describe(&err))?;
            let status = response.status();
            let answer = Limited::new(response.into_body(), MAX_ANSWER_BYTES).collect().await;
            let answer = answer.map_err(|err| format!("reading the answer: {err}"))?;
            Ok((status, answer.to_bytes()))
        };
        // Polled together; a timeout drops both, which closes the connection.
        let (answer, ended) = tokio::join!(exchange, connection);
        let (status, answer) = answer.map_err(|err| ended.err().map_or(err, |e| describe(&e)))?;
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
}

/// A connection to the collector: TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// rustls for an https:// collector: the compiled-in roots or `OTEL_EXPORTER_OTLP_CERTIFICATE`'s.
fn connector(roots: &Roots) -> Result<TlsConnector, String> {
    let roots = tls::root_store(roots)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS set-up: {err}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(tls)))
}
