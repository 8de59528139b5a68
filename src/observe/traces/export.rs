//! The [`Tracer`]'s queue, bounded in spans and bytes (past them a span is dropped and
//! counted), and the task that empties it in exports of at most [`MAX_EXPORT_BYTES`], each
//! within the OTLP timeout. A failed export drops its spans, counted and warned of at most
//! every 30 s: a dead collector costs requests nothing. Posting is otlp.rs's business.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::Span;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::config::TraceConfig;
use super::otlp::Collector;
use super::sampler::{RateLimit, Sampler};

/// Export failures are logged at most this often; the ones between are counted.
const WARN_EVERY: Duration = Duration::from_secs(30);
/// Bytes (encoded) that spans queued or being exported hold at most; past it, the queue is full.
const MAX_QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Bytes one export's spans hold at most: well under what collectors take (OpenTelemetry
/// Collector: 20 MiB).
const MAX_EXPORT_BYTES: usize = 1024 * 1024;

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
        let labels = [("reason", reason)];
        self.dropped.get_or_create(&labels).inc_by(spans as u64);
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
        let export = Export {
            collector: Collector::new(&config),
            max_batch: config.max_batch,
            timeout: config.timeout,
            counters: Counters::default(),
            warned: None,
            unlogged: 0,
        };
        let shared = Shared {
            sampler: config.sampler,
            rate: RateLimit::new(config.max_per_second),
            value_limit: config.value_limit,
            spans,
            flushes,
            counters: export.counters.clone(),
        };
        tokio::spawn(export.run(config.schedule_delay, queue, flush_requests));
        Tracer(Arc::new(shared))
    }

    /// Whether one more request may be traced now (`TRACES_MAX_PER_SECOND`), else counts it.
    pub(super) fn admit(&self) -> bool {
        let admitted = self.0.rate.admit();
        if !admitted {
            self.0.counters.dropped("rate_limited", 1);
        }
        admitted
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
        let counters = &self.0.counters;
        registry.register(
            "trace_spans_dropped",
            "Spans not exported, by reason: queue_full (the exporter is behind), \
             export_failed, rejected by the collector, or rate_limited (not started: past \
             TRACES_MAX_PER_SECOND)",
            counters.dropped.clone(),
        );
        let (name, help) = ("trace_spans_exported", "Spans the collector accepted");
        registry.register(name, help, counters.exported.clone());
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

/// The export task's side: the collector, and the counts.
struct Export {
    collector: Collector,
    max_batch: usize,
    timeout: Duration,
    counters: Counters,
    /// When a failure was last logged, and how many have not been since.
    warned: Option<Instant>,
    unlogged: u64,
}

impl Export {
    /// A batch goes out when it is full, `delay` after the last, or when a flush asks;
    /// one export at a time, while spans wait in the queue.
    async fn run(
        mut self,
        delay: Duration,
        mut queue: mpsc::Receiver<Span>,
        mut flushes: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    ) {
        let mut batch = Vec::new();
        let mut due = Instant::now() + delay;
        loop {
            let (room, mut flushed) = (self.max_batch - batch.len(), None);
            tokio::select! {
                taken = queue.recv_many(&mut batch, room) => {
                    if taken == 0 {
                        // Every sender is gone: nothing more will come.
                        return self.send(batch).await;
                    }
                    if batch.len() < self.max_batch {
                        continue;
                    }
                }
                () = tokio::time::sleep_until(due) => {}
                Some(done) = flushes.recv() => {
                    while let Ok(span) = queue.try_recv() {
                        batch.push(span);
                    }
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
    async fn send(&mut self, spans: Vec<Span>) {
        let (mut part, mut bytes) = (Vec::new(), 0);
        for span in spans {
            let size = span.encoded_len();
            if !part.is_empty() && (part.len() == self.max_batch || bytes + size > MAX_EXPORT_BYTES)
            {
                self.export(std::mem::take(&mut part), std::mem::take(&mut bytes)).await;
            }
            bytes += size;
            part.push(span);
        }
        if !part.is_empty() {
            self.export(part, bytes).await;
        }
    }

    /// Exports `spans`, then lets go of the queue's `bytes` they held.
    async fn export(&mut self, spans: Vec<Span>, bytes: usize) {
        let count = spans.len();
        let posted = tokio::time::timeout(self.timeout, self.collector.post(spans)).await;
        self.counters.queued_bytes.fetch_sub(bytes, Relaxed);
        let failure = match posted {
            Ok(Ok(rejected)) => {
                let rejected = rejected.min(count);
                self.counters.exported.inc_by((count - rejected) as u64);
                if rejected == 0 {
                    return;
                }
                self.counters.dropped("rejected", rejected);
                format!("the collector rejected {rejected} of {count} spans")
            }
            Ok(Err(err)) => {
                self.counters.dropped("export_failed", count);
                format!("could not export {count} spans: {err}")
            }
            Err(_) => {
                self.counters.dropped("export_failed", count);
                let timeout = self.timeout;
                format!("could not export {count} spans: no answer within {timeout:?}")
            }
        };
        if self.warned.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            self.unlogged += 1;
            return;
        }
        let endpoint = &self.collector.endpoint;
        match std::mem::take(&mut self.unlogged) {
            0 => log::warn!("traces to {endpoint}: {failure}"),
            n => log::warn!(
                "traces to {endpoint}: {failure} ({n} more failures since the last warning)"
            ),
        }
        self.warned = Some(Instant::now());
    }
}
