//! The two Prometheus text formats `/metrics` speaks, chosen by `Accept`: OpenMetrics
//! 1.0, as prometheus-client writes it, for a scraper that asks for it (Prometheus
//! does); otherwise the classic text format 0.0.4, derived from it, which every other
//! scraper reads and `promtool check metrics` accepts. What is counted is metrics.rs's
//! business.

use std::collections::HashMap;

use hyper::header::{ACCEPT, HeaderMap};

/// One of the two formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0`
    OpenMetrics,
    /// `text/plain; version=0.0.4`
    Text,
}

impl Format {
    /// The format a request's `Accept` asks for: OpenMetrics when it names it (and not
    /// with `q=0`), else the classic text format.
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
        if asks {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The response's content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The classic text format of an OpenMetrics exposition: a counter family's `HELP` and
/// `TYPE` name its `_total` samples; an info family becomes a gauge named `_info`;
/// `UNIT` lines and the closing `# EOF` go.
pub fn to_text(openmetrics: &str) -> String {
    let types: HashMap<&str, &str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        let meta = line
            .strip_prefix("# HELP ")
            .map(|rest| ("HELP", rest))
            .or_else(|| line.strip_prefix("# TYPE ").map(|rest| ("TYPE", rest)));
        match meta {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let (name, tail) = match (types.get(name).copied(), kind) {
                    (Some("counter"), _) => (format!("{name}_total"), tail),
                    (Some("info"), "TYPE") => (format!("{name}_info"), "gauge"),
                    (Some("info"), _) => (format!("{name}_info"), tail),
                    _ => (name.to_owned(), tail),
                };
                text.push_str(&format!("# {kind} {name} {tail}\n"));
            }
            None if line.starts_with("# UNIT ") || line == "# EOF" => {}
            None => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn prometheus_gets_openmetrics_and_everyone_else_the_text_format() {
        let accept = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT, HeaderValue::from_str(value).unwrap());
            Format::accepted(&headers)
        };
        assert_eq!(
            accept(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            ),
            Format::OpenMetrics
        );
        assert_eq!(accept("text/plain;version=0.0.4"), Format::Text);
        assert_eq!(accept("*/*"), Format::Text);
        assert_eq!(accept("application/openmetrics-text; q=0"), Format::Text);
        assert_eq!(Format::accepted(&HeaderMap::new()), Format::Text);
    }

    #[test]
    fn counters_and_info_are_renamed_and_openmetrics_only_lines_go() {
        let openmetrics = "\
# HELP x_requests Requests.
# TYPE x_requests counter
x_requests_total{a=\"b\"} 3
# HELP x_duration_seconds Time.
# TYPE x_duration_seconds histogram
# UNIT x_duration_seconds seconds
x_duration_seconds_count 1
# HELP x_build The binary.
# TYPE x_build info
x_build_info{version=\"1\"} 1
# EOF
";
        assert_eq!(
            to_text(openmetrics),
            "\
# HELP x_requests_total Requests.
# TYPE x_requests_total counter
x_requests_total{a=\"b\"} 3
# HELP x_duration_seconds Time.
# TYPE x_duration_seconds histogram
x_duration_seconds_count 1
# HELP x_build_info The binary.
# TYPE x_build_info gauge
x_build_info{version=\"1\"} 1
"
        );
    }
}
