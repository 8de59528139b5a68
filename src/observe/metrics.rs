//! The metrics of `GET /metrics`: the server's own and what other parts register.
//! prometheus-client keeps them and writes OpenMetrics; the text format 0.0.4 is derived from it.

use std::collections::HashMap;
use std::time::Duration;

use hyper::header::{ACCEPT, HeaderMap};
use hyper::{Method, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// The git revision the binary was built from, when the build said (`make build` does).
pub const REVISION: &str = match option_env!("TASK_API_REVISION") {
    Some(revision) => revision,
    None => "unknown",
};

/// Latency buckets, in seconds: 250 µs to 5 s (the database budget).
const LATENCY_BUCKETS: [f64; 14] =
    [0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// `method` and `route`.
type RouteLabels = [(&'static str, &'static str); 2];
/// `method`, `route` and `status`.
type RequestLabels = (RouteLabels, [(&'static str, u16); 1]);

/// The pool as of now: open connections, idle ones, and requests waiting for one.
#[derive(Debug)]
pub struct PoolState {
    pub size: usize,
    pub available: usize,
    pub waiting: usize,
}

/// Every metric the server keeps, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    connections_open: Gauge,
    connections_cut: Family<[(&'static str, &'static str); 1], Counter>,
    unanswered: Counter,
    pool: [Gauge; 3],
}

/// Counts a request (or connection) as open until dropped: cancelled, it is uncounted too.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// The server's metrics; `migrations_applied` at start-up, `pool_max` the pool's size.
    pub fn new(migrations_applied: usize, pool_max: usize) -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("task_api"),
            requests: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            in_flight: Gauge::default(),
            connections_open: Gauge::default(),
            connections_cut: Family::default(),
            unanswered: Counter::default(),
            pool: Default::default(),
        };
        let registry = &mut m.registry;
        registry.register("http_requests", "HTTP requests answered", m.requests.clone());
        let (name, help) =
            ("http_request_duration", "Time from request head to response, by route");
        registry.register_with_unit(name, help, Unit::Seconds, m.latency.clone());
        let help = "Client connections the server ended, by reason: a deadline, MAX_CONNECTIONS, \
            or a request head it could not parse (malformed) or over 16 KiB (head_too_large)";
        registry.register("http_connections_closed", help, m.connections_cut.clone());
        let help =
            "Writes answered by closing the connection: the database gave no verdict in time";
        registry.register("http_unanswered", help, m.unanswered.clone());
        let (max, applied) = (Gauge::default(), Gauge::default());
        set(&max, pool_max);
        set(&applied, migrations_applied);
        for (name, help, gauge) in [
            ("http_requests_in_flight", "Requests being served now", &m.in_flight),
            ("http_connections_open", "Client connections open now", &m.connections_open),
            ("db_pool_connections", "Open database connections", &m.pool[0]),
            ("db_pool_available", "Idle database connections", &m.pool[1]),
            ("db_pool_waiting", "Requests waiting for a connection", &m.pool[2]),
            ("db_pool_max", "DATABASE_POOL_SIZE", &max),
            ("migrations_applied", "Migrations this process applied at start-up", &applied),
        ] {
            registry.register(name, help, gauge.clone());
        }
        let build = Info::new(vec![("version", crate::VERSION), ("revision", REVISION)]);
        registry.register("build", "The running binary", build);
        m
    }

    /// Where other parts register their own metrics, at start-up.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Counts a request as being served until the guard drops.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Counts a client connection as open until the guard drops.
    pub fn connection_open(&self) -> InFlight {
        self.connections_open.inc();
        InFlight(self.connections_open.clone())
    }

    /// Counts a connection the server ended, and why (a label such as `idle_timeout`).
    pub fn cut(&self, reason: &'static str) {
        self.connections_cut.get_or_create(&[("reason", reason)]).inc();
    }

    /// Counts a request whose connection was closed unanswered.
    pub fn unanswered(&self) {
        self.unanswered.inc();
    }

    /// Counts an answered request. `route` is a template (`/tasks/{id}`), never a raw path.
    pub fn record(&self, method: &Method, route: &'static str, status: StatusCode, took: Duration) {
        let method = method_name(method).unwrap_or("other");
        let labels = [("method", method), ("route", route)];
        let status = [("status", status.as_u16())];
        self.requests.get_or_create(&(labels, status)).inc();
        self.latency.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// Everything, with the pool as of now, in `format`.
    pub fn render(&self, pool: PoolState, format: Format) -> String {
        let counts = [pool.size, pool.available, pool.waiting];
        for (gauge, count) in self.pool.iter().zip(counts) {
            set(gauge, count);
        }
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        match format {
            Format::OpenMetrics => text,
            Format::Text => to_text(&text),
        }
    }
}

fn set(gauge: &Gauge, count: usize) {
    gauge.set(i64::try_from(count).unwrap_or(i64::MAX));
}

/// A standard method's name; `None` for others, so clients mint no labels or span names.
pub fn method_name(method: &Method) -> Option<&'static str> {
    const STANDARD: [&str; 9] =
        ["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS", "TRACE", "CONNECT"];
    STANDARD.into_iter().find(|name| *name == method.as_str())
}

/// The two Prometheus text formats `/metrics` speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0`, for a scraper that asks (Prometheus).
    OpenMetrics,
    /// `text/plain; version=0.0.4`, which every scraper reads and promtool accepts.
    Text,
}

impl Format {
    /// OpenMetrics when a request's `Accept` names it (not with `q=0`), else text.
    pub fn accepted(headers: &HeaderMap) -> Format {
        let asks = headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next().unwrap_or_default();
                let refused = parts.any(|p| matches!(p, "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            });
        [Format::Text, Format::OpenMetrics][usize::from(asks)]
    }

    /// The response's content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The text format of an OpenMetrics exposition: a counter's `HELP` and `TYPE` name its
/// `_total` samples, an info family is an `_info` gauge, `UNIT` and `# EOF` go.
fn to_text(openmetrics: &str) -> String {
    let types: HashMap<&str, &str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        let meta = line.strip_prefix("# ").and_then(|m| m.split_once(' '));
        let Some((kind @ ("HELP" | "TYPE"), rest)) = meta else {
            if !line.starts_with("# UNIT ") && line != "# EOF" {
                text.extend([line, "\n"]);
            }
            continue;
        };
        let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        let (name, tail) = match (types.get(name).copied(), kind) {
            (Some("counter"), _) => (format!("{name}_total"), tail),
            (Some("info"), "TYPE") => (format!("{name}_info"), "gauge"),
            (Some("info"), _) => (format!("{name}_info"), tail),
            _ => (name.to_owned(), tail),
        };
        text.extend(["# ", kind, " ", &name, " ", tail, "\n"]);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn prometheus_gets_openmetrics_and_everyone_else_the_text_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,\
            application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for (accept, expected) in [
            (Some(prometheus), Format::OpenMetrics),
            (Some("text/plain;version=0.0.4"), Format::Text),
            (Some("*/*"), Format::Text),
            (Some("application/openmetrics-text; q=0"), Format::Text),
            (None, Format::Text),
        ] {
            let mut headers = HeaderMap::new();
            headers.extend(accept.map(|value| (ACCEPT, HeaderValue::from_static(value))));
            assert_eq!(Format::accepted(&headers), expected, "{accept:?}");
        }
    }

    #[test]
    fn the_text_format_names_counters_by_their_samples_makes_info_a_gauge_and_drops_the_rest() {
        let openmetrics = "# HELP x_requests Requests.\n# TYPE x_requests counter\n\
            x_requests_total{method=\"GET\"} 1\n# HELP x_build The binary.\n# TYPE x_build info\n\
            x_build_info{version=\"1\"} 1\n# TYPE x_took_seconds histogram\n\
            # UNIT x_took_seconds seconds\nx_took_seconds_count 0\n# EOF\n";
        let text = "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\n\
            x_requests_total{method=\"GET\"} 1\n# HELP x_build_info The binary.\n\
            # TYPE x_build_info gauge\nx_build_info{version=\"1\"} 1\n\
            # TYPE x_took_seconds histogram\nx_took_seconds_count 0\n";
        assert_eq!(to_text(openmetrics), text);
    }
}
