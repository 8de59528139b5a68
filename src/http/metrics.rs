//! Prometheus metrics for `GET /metrics`: requests by method, route template and
//! status, a latency histogram, requests in flight, the pool, migrations and build
//! info, and the store's own (batch sizes). prometheus-client keeps and encodes them;
//! this file decides what is counted.

use std::time::Duration;

use hyper::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::conn::Cut;
use crate::store::PoolState;

/// The git revision the binary was built from, when the build said (`make build` does).
pub const REVISION: &str = match option_env!("TASK_API_REVISION") {
    Some(revision) => revision,
    None => "unknown",
};

/// Latency buckets, in seconds: 250 µs to 5 s (the database budget).
const LATENCY_BUCKETS: [f64; 14] = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CutLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: &'static str,
}

/// Every metric the server keeps, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    connections_open: Gauge,
    connections_cut: Family<CutLabels, Counter>,
    unanswered: Counter,
    pool_size: Gauge,
    pool_available: Gauge,
    pool_waiting: Gauge,
}

/// Counts one request (or connection) as open until dropped, so one that is
/// cancelled is uncounted too.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// Registers everything of the server's; `migrations_applied` is how many this
    /// process applied at start-up, `pool_max` the pool's `DATABASE_POOL_SIZE`.
    pub fn new(migrations_applied: usize, pool_max: usize) -> Metrics {
        let mut registry = Registry::with_prefix("task_api");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        let latency =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(|| {
                Histogram::new(LATENCY_BUCKETS)
            });
        registry.register_with_unit(
            "http_request_duration",
            "Time from request head to response, by route",
            prometheus_client::registry::Unit::Seconds,
            latency.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "http_requests_in_flight",
            "Requests being served now",
            in_flight.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "http_connections_open",
            "Client connections open now",
            connections_open.clone(),
        );
        let connections_cut = Family::<CutLabels, Counter>::default();
        registry.register(
            "http_connections_closed",
            "Client connections the server ended, by reason: a deadline, MAX_CONNECTIONS, or a \
             request head it could not parse (malformed) or over 16 KiB (head_too_large)",
            connections_cut.clone(),
        );
        let unanswered = Counter::default();
        registry.register(
            "http_unanswered",
            "Writes answered by closing the connection: the database gave no verdict in time",
            unanswered.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str, value: i64| {
            let gauge = Gauge::default();
            gauge.set(value);
            registry.register(name, help, gauge.clone());
            gauge
        };
        let pool_size = gauge(
            &mut registry,
            "db_pool_connections",
            "Open database connections",
            0,
        );
        let pool_available = gauge(
            &mut registry,
            "db_pool_available",
            "Idle database connections",
            0,
        );
        let pool_waiting = gauge(
            &mut registry,
            "db_pool_waiting",
            "Requests waiting for a connection",
            0,
        );
        gauge(
            &mut registry,
            "db_pool_max",
            "DATABASE_POOL_SIZE",
            gauge_value(pool_max),
        );
        gauge(
            &mut registry,
            "migrations_applied",
            "Migrations this process applied at start-up",
            gauge_value(migrations_applied),
        );
        registry.register(
            "build",
            "The running binary",
            Info::new(vec![("version", crate::VERSION), ("revision", REVISION)]),
        );
        Metrics {
            registry,
            requests,
            latency,
            in_flight,
            connections_open,
            connections_cut,
            unanswered,
            pool_size,
            pool_available,
            pool_waiting,
        }
    }

    /// Where other parts (the store) register metrics of their own, before serving.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Marks a request in flight for as long as the guard lives.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Marks a client connection open for as long as the guard lives.
    pub fn connection_open(&self) -> InFlight {
        self.connections_open.inc();
        InFlight(self.connections_open.clone())
    }

    /// Counts a connection the server ended, and why.
    pub fn cut(&self, cut: Cut) {
        self.connections_cut
            .get_or_create(&CutLabels {
                reason: cut.label(),
            })
            .inc();
    }

    /// Counts a request whose connection was closed unanswered.
    pub fn unanswered(&self) {
        self.unanswered.inc();
    }

    /// Counts an answered request. `route` is a template (`/tasks/{id}`), never a raw path.
    pub fn record(&self, method: &Method, route: &'static str, status: StatusCode, took: Duration) {
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status: status.as_u16(),
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { method, route })
            .observe(took.as_secs_f64());
    }

    /// The text exposition, with the pool's state as of now.
    pub fn render(&self, pool: PoolState) -> String {
        self.pool_size.set(gauge_value(pool.size));
        self.pool_available.set(gauge_value(pool.available));
        self.pool_waiting.set(gauge_value(pool.waiting));
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

/// A count as a gauge holds it (saturating: a pool never nears i64::MAX).
fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Methods outside the API's own become "other", so clients cannot mint label values.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_template_and_shows_build_info() {
        let metrics = Metrics::new(1, 8);
        let _busy = metrics.in_flight();
        metrics.record(
            &Method::GET,
            "/tasks/{id}",
            StatusCode::OK,
            Duration::from_millis(3),
        );
        metrics.record(
            &Method::from_bytes(b"BREW").unwrap(),
            "unmatched",
            StatusCode::NOT_FOUND,
            Duration::ZERO,
        );
        let text = metrics.render(PoolState {
            max_size: 8,
            size: 2,
            available: 1,
            waiting: 0,
        });
        assert!(
            text.contains(
                r#"task_api_http_requests_total{method="GET",route="/tasks/{id}",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"method="other",route="unmatched",status="404""#),
            "{text}"
        );
        assert!(
            text.contains("task_api_http_requests_in_flight 1"),
            "{text}"
        );
        assert!(text.contains("task_api_db_pool_connections 2"), "{text}");
        assert!(
            text.contains(&format!(
                r#"task_api_build_info{{version="{}",revision=""#,
                crate::VERSION
            )),
            "{text}"
        );
        assert!(
            text.contains("task_api_http_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
