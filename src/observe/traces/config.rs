//! The OpenTelemetry environment variables → [`TraceConfig`], as the spec defines them
//! (opentelemetry.io, "Environment Variable Specification" and "OTLP Exporter
//! Configuration"). Called by config.rs with its lookup, so every error names its
//! variable there too; nothing here reads the environment itself.

use std::fmt;
use std::time::Duration;

use hyper::Uri;
use hyper::header::{HeaderName, HeaderValue};
use percent_encoding::percent_decode_str;

use super::sampler::{self, Sampler};
use crate::error::ConfigError;
use crate::pg::tls::{self, Roots};

/// The spec's defaults.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(10_000);
const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_millis(5_000);
const DEFAULT_MAX_QUEUE: usize = 2_048;
const DEFAULT_MAX_BATCH: usize = 512;
/// Longest attribute value kept, in characters: a URL path or user agent may be as
/// long as a request head (16 KiB), and the spec's default (no limit) would let
/// clients decide how large spans are.
const DEFAULT_VALUE_LIMIT: usize = 1024;
/// Requests traced per second at most, whatever the sampler and the callers'
/// `traceparent` say.
const DEFAULT_MAX_PER_SECOND: u32 = 100;
/// `service.name` when neither variable gives one.
const DEFAULT_SERVICE_NAME: &str = "task-api";

/// Where and how spans are exported, and which are kept.
pub struct TraceConfig {
    /// Where spans are posted.
    pub endpoint: Endpoint,
    /// `OTEL_EXPORTER_OTLP_HEADERS`: sent with every export (API keys, often).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`: how long one export may take.
    pub timeout: Duration,
    /// `OTEL_TRACES_SAMPLER` and `_ARG`.
    pub sampler: Sampler,
    /// The resource's attributes: `service.name` first, then `service.version`, then
    /// the rest of `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource: Vec<(String, String)>,
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE`: the roots an https:// collector must chain to.
    pub roots: Roots,
    /// `OTEL_BSP_SCHEDULE_DELAY`: most time between exports.
    pub schedule_delay: Duration,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`: spans waiting for export, past which new ones are dropped.
    pub max_queue: usize,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: most spans in one export.
    pub max_batch: usize,
    /// `OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT` (or `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`):
    /// longer text values are cut to this many characters.
    pub value_limit: usize,
    /// `TRACES_MAX_PER_SECOND`: requests sampled per second at most (a burst of one
    /// second's worth allowed); the rest are not traced, and counted.
    pub max_per_second: u32,
}

/// An OTLP/HTTP collector's URL, and where to connect for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// What is posted to.
    pub uri: Uri,
    /// https://, not http://.
    pub tls: bool,
    /// The host to connect to (an IPv6 address without its brackets).
    pub host: String,
    /// The port: given, or the scheme's.
    pub port: u16,
}

impl Endpoint {
    /// Parses `http[s]://host[:port][/path][?query]`, with the spec's rule for the path:
    /// a base endpoint (`signal_path`, `OTEL_EXPORTER_OTLP_ENDPOINT`) gets `v1/traces`
    /// appended; a signal's own (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is used as it is.
    pub fn parse(url: &str, signal_path: bool) -> Result<Endpoint, String> {
        let uri: Uri = url.parse().map_err(|err| format!("not a URL: {err}"))?;
        let tls = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err("must be an http:// or https:// URL".into()),
        };
        let authority = uri.authority().ok_or("has no host")?;
        if authority.as_str().contains('@') {
            return Err("must not hold credentials: use OTEL_EXPORTER_OTLP_HEADERS".into());
        }
        let host = authority.host();
        // http::Uri's own port is `None` for one that is not a u16: look at the text.
        let port = match authority.as_str()[host.len()..].strip_prefix(':') {
            None | Some("") if tls => 443,
            None | Some("") => 80,
            Some(port) => match port.parse() {
                Ok(port) if port > 0 => port,
                _ => return Err(format!("'{port}' is not a port")),
            },
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let path = match signal_path {
            true => format!("{}/v1/traces", uri.path().trim_end_matches('/')),
            false => uri.path().to_owned(),
        };
        let query = uri
            .query()
            .map_or(String::new(), |query| format!("?{query}"));
        let uri = Uri::builder()
            .scheme(if tls { "https" } else { "http" })
            .authority(authority.as_str())
            .path_and_query(format!("{path}{query}"))
            .build()
            .map_err(|err| format!("not a URL: {err}"))?;
        Ok(Endpoint {
            uri,
            tls,
            host: host.to_owned(),
            port,
        })
    }
}

/// The tracing settings, or `None` when tracing is off: no OTLP endpoint, or
/// `OTEL_SDK_DISABLED=true`, or `OTEL_TRACES_EXPORTER=none`.
pub fn parse(env: &impl Fn(&str) -> Option<String>) -> Result<Option<TraceConfig>, ConfigError> {
    let disabled = match env("OTEL_SDK_DISABLED").map(|v| v.trim().to_ascii_lowercase()) {
        None => false,
        Some(value) if value == "true" => true,
        Some(value) if value == "false" => false,
        Some(_) => {
            return Err(ConfigError::invalid(
                "OTEL_SDK_DISABLED",
                "must be true or false",
            ));
        }
    };
    match env("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(_) => {
            return Err(ConfigError::invalid(
                "OTEL_TRACES_EXPORTER",
                "must be otlp or none: task-api exports OTLP only",
            ));
        }
    }
    let endpoint = match (
        env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        env("OTEL_EXPORTER_OTLP_ENDPOINT"),
    ) {
        _ if disabled => return Ok(None),
        // The signal's own endpoint is used as it is; the base gets the signal's path.
        (Some(url), _) => Endpoint::parse(url.trim(), false)
            .map_err(|reason| ConfigError::invalid("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", reason))?,
        (None, Some(url)) => Endpoint::parse(url.trim(), true)
            .map_err(|reason| ConfigError::invalid("OTEL_EXPORTER_OTLP_ENDPOINT", reason))?,
        (None, None) => return Ok(None),
    };
    let (var, protocol) = signal_or_base(
        env,
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    );
    if let Some(protocol) = protocol
        && protocol.trim() != "http/protobuf"
    {
        return Err(ConfigError::invalid(
            var,
            "must be http/protobuf: task-api sends no gRPC or JSON",
        ));
    }
    let (var, headers) = signal_or_base(
        env,
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_HEADERS",
    );
    let headers = match headers {
        None => Vec::new(),
        Some(text) => headers_of(&text).map_err(|reason| ConfigError::invalid(var, reason))?,
    };
    let (var, timeout) = signal_or_base(
        env,
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    );
    let timeout = match timeout {
        None => DEFAULT_TIMEOUT,
        Some(text) => Duration::from_millis(positive(var, &text)?),
    };
    let (var, certificate) = signal_or_base(
        env,
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
    );
    let roots = match certificate {
        None => Roots::Default,
        Some(path) => {
            let roots = Roots::File(path.trim().to_owned());
            // Read now, so a missing or empty file stops start-up, naming the variable.
            tls::root_store(&roots).map_err(|reason| ConfigError::invalid(var, reason))?;
            roots
        }
    };
    let sampler = match env("OTEL_TRACES_SAMPLER") {
        None => sampler::DEFAULT,
        Some(name) => {
            let arg = env("OTEL_TRACES_SAMPLER_ARG");
            Sampler::parse(&name, arg.as_deref()).map_err(|(bad_arg, reason)| {
                let var = match bad_arg {
                    true => "OTEL_TRACES_SAMPLER_ARG",
                    false => "OTEL_TRACES_SAMPLER",
                };
                ConfigError::invalid(var, reason)
            })?
        }
    };
    let max_queue = count(env, "OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_MAX_QUEUE)?;
    let max_batch = count(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_MAX_BATCH)?;
    if max_batch > max_queue {
        return Err(ConfigError::invalid(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            "must not be more than OTEL_BSP_MAX_QUEUE_SIZE",
        ));
    }
    let schedule_delay = match env("OTEL_BSP_SCHEDULE_DELAY") {
        None => DEFAULT_SCHEDULE_DELAY,
        Some(text) => Duration::from_millis(positive("OTEL_BSP_SCHEDULE_DELAY", &text)?),
    };
    let (var, value_limit) = signal_or_base(
        env,
        "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    );
    let value_limit = match value_limit {
        None => DEFAULT_VALUE_LIMIT,
        Some(_) => count(env, var, DEFAULT_VALUE_LIMIT)?,
    };
    let max_per_second = count(
        env,
        "TRACES_MAX_PER_SECOND",
        DEFAULT_MAX_PER_SECOND as usize,
    )?;
    Ok(Some(TraceConfig {
        value_limit,
        max_per_second: u32::try_from(max_per_second).unwrap_or(u32::MAX),
        endpoint,
        headers,
        timeout,
        sampler,
        resource: resource(env)?,
        roots,
        schedule_delay,
        max_queue,
        max_batch,
    }))
}

/// The signal's own variable when set (the spec: it wins), else the base one; with
/// the name of the one read, for errors.
fn signal_or_base(
    env: &impl Fn(&str) -> Option<String>,
    signal: &'static str,
    base: &'static str,
) -> (&'static str, Option<String>) {
    match env(signal) {
        Some(value) => (signal, Some(value)),
        None => (base, env(base)),
    }
}

/// `service.name` from `OTEL_SERVICE_NAME`, else `OTEL_RESOURCE_ATTRIBUTES`, else
/// task-api; `service.version` the binary's unless given; then the rest.
fn resource(env: &impl Fn(&str) -> Option<String>) -> Result<Vec<(String, String)>, ConfigError> {
    let var = "OTEL_RESOURCE_ATTRIBUTES";
    let mut given = match env(var) {
        None => Vec::new(),
        Some(text) => pairs(&text).map_err(|reason| ConfigError::invalid(var, reason))?,
    };
    let mut take = |key: &str| {
        let at = given.iter().rposition(|(k, _)| k == key)?;
        let value = given.remove(at).1;
        given.retain(|(k, _)| k != key);
        Some(value)
    };
    let from_attributes = take("service.name");
    let version = take("service.version");
    let name = env("OTEL_SERVICE_NAME")
        .map(|name| name.trim().to_owned())
        .or(from_attributes)
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    let mut resource = vec![
        ("service.name".to_owned(), name),
        (
            "service.version".to_owned(),
            version.unwrap_or_else(|| crate::VERSION.to_owned()),
        ),
    ];
    resource.extend(given);
    Ok(resource)
}

/// The W3C Baggage-like list both variables use: `key=value` pairs separated by commas,
/// each key and value percent-decoded and trimmed. Errors never quote a value (a header
/// may hold a secret).
fn pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for (n, entry) in text.split(',').enumerate() {
        if entry.trim().is_empty() {
            continue;
        }
        let bad = |why: &str| format!("entry {}: {why}", n + 1);
        let (key, value) = entry.split_once('=').ok_or_else(|| bad("not key=value"))?;
        let decode = |part: &str| {
            percent_decode_str(part.trim())
                .decode_utf8()
                .map(|text| text.into_owned())
                .map_err(|_| bad("not UTF-8 once percent-decoded"))
        };
        let key = decode(key)?;
        if key.is_empty() {
            return Err(bad("the key is empty"));
        }
        pairs.push((key, decode(value)?));
    }
    Ok(pairs)
}

fn headers_of(text: &str) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    pairs(text)?
        .into_iter()
        .enumerate()
        .map(|(n, (key, value))| {
            let name = HeaderName::try_from(key.as_str())
                .map_err(|_| format!("header {}: not a valid header name", n + 1))?;
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|_| format!("header {} ({name}): not a valid header value", n + 1))?;
            Ok((name, value))
        })
        .collect()
}

fn positive(var: &'static str, text: &str) -> Result<u64, ConfigError> {
    match text.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ConfigError::invalid(
            var,
            format!(
                "'{}' is not a positive whole number of milliseconds",
                text.trim()
            ),
        )),
    }
}

fn count(
    env: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: usize,
) -> Result<usize, ConfigError> {
    match env(var) {
        None => Ok(default),
        Some(text) => match text.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ConfigError::invalid(
                var,
                format!("'{}' is not a whole number of at least 1", text.trim()),
            )),
        },
    }
}

// Hand-written: header values are often API keys, so only their names are shown.
impl fmt::Debug for TraceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("TraceConfig")
            .field("endpoint", &self.endpoint.uri.to_string())
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .field("sampler", &format_args!("{}", self.sampler))
            .field("resource", &self.resource)
            .field("roots", &self.roots)
            .field("schedule_delay", &self.schedule_delay)
            .field("max_queue", &self.max_queue)
            .field("max_batch", &self.max_batch)
            .field("value_limit", &self.value_limit)
            .field("max_per_second", &self.max_per_second)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(vars: &[(&str, &str)]) -> Result<Option<TraceConfig>, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(&|name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    const BASE: (&str, &str) = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");

    #[test]
    fn off_without_an_endpoint_or_when_disabled() {
        assert!(parse_with(&[]).unwrap().is_none());
        assert!(parse_with(&[("OTEL_SERVICE_NAME", "x")]).unwrap().is_none());
        assert!(
            parse_with(&[BASE, ("OTEL_SDK_DISABLED", "TRUE")])
                .unwrap()
                .is_none()
        );
        assert!(
            parse_with(&[BASE, ("OTEL_TRACES_EXPORTER", "none")])
                .unwrap()
                .is_none()
        );
        assert!(parse_with(&[BASE]).unwrap().is_some());
    }

    #[test]
    fn defaults_follow_the_spec() {
        let config = parse_with(&[BASE]).unwrap().unwrap();
        assert_eq!(config.endpoint.uri, "http://collector:4318/v1/traces");
        assert_eq!(config.timeout, Duration::from_secs(10));
        assert_eq!(config.sampler, sampler::DEFAULT);
        assert_eq!(config.schedule_delay, Duration::from_secs(5));
        assert_eq!((config.max_queue, config.max_batch), (2048, 512));
        assert_eq!((config.value_limit, config.max_per_second), (1024, 100));
        assert_eq!(
            config.resource[0],
            ("service.name".into(), "task-api".into())
        );
        assert_eq!(
            config.resource[1],
            ("service.version".into(), crate::VERSION.into())
        );
    }

    #[test]
    fn the_base_endpoint_gets_the_signal_path_and_the_signal_endpoint_is_used_as_is() {
        for (url, signal_path, tls, host, port, uri) in [
            (
                "http://c:4318",
                true,
                false,
                "c",
                4318,
                "http://c:4318/v1/traces",
            ),
            (
                "https://c/otlp/",
                true,
                true,
                "c",
                443,
                "https://c/otlp/v1/traces",
            ),
            (
                "http://[::1]:4318",
                true,
                false,
                "::1",
                4318,
                "http://[::1]:4318/v1/traces",
            ),
            ("http://c:4318", false, false, "c", 4318, "http://c:4318/"),
            (
                "HTTP://c/x/traces?k=v",
                false,
                false,
                "c",
                80,
                "http://c/x/traces?k=v",
            ),
        ] {
            let endpoint = Endpoint::parse(url, signal_path).unwrap();
            let got = (endpoint.tls, endpoint.host.as_str(), endpoint.port);
            assert_eq!(got, (tls, host, port), "{url}");
            assert_eq!(endpoint.uri, uri, "{url}");
        }
    }

    #[test]
    fn the_signal_endpoint_wins_over_the_base_one() {
        let config = parse_with(&[
            BASE,
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://other:9999/traces",
            ),
        ]);
        assert_eq!(
            config.unwrap().unwrap().endpoint.uri,
            "http://other:9999/traces"
        );
    }

    #[test]
    fn service_name_comes_from_its_variable_then_the_resource_attributes() {
        let config = parse_with(&[
            BASE,
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=from%20attrs, deployment.environment.name = prod,k=a%2Cb%3Dc",
            ),
        ]);
        let resource = config.unwrap().unwrap().resource;
        assert_eq!(resource[0], ("service.name".into(), "from attrs".into()));
        assert!(resource.contains(&("deployment.environment.name".into(), "prod".into())));
        assert!(resource.contains(&("k".into(), "a,b=c".into())));
        let config = parse_with(&[
            BASE,
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=attrs,service.version=9",
            ),
            ("OTEL_SERVICE_NAME", "own"),
        ]);
        let resource = config.unwrap().unwrap().resource;
        assert_eq!(
            resource[..2],
            [
                ("service.name".into(), "own".into()),
                ("service.version".into(), "9".into())
            ]
        );
        assert_eq!(resource.len(), 2);
    }

    #[test]
    fn headers_are_percent_decoded_and_never_shown() {
        let config = parse_with(&[
            BASE,
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=s3cr%3Dt, x-team = a b",
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(config.headers[0].0, "api-key");
        assert_eq!(config.headers[0].1, "s3cr=t");
        assert_eq!(config.headers[1].1, "a b");
        assert!(!format!("{config:?}").contains("s3cr"));
    }

    #[test]
    fn every_error_names_its_variable() {
        for (vars, var) in [
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:99999")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "grpc://c")],
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ),
            (
                vec![BASE, ("OTEL_EXPORTER_OTLP_HEADERS", "novalue")],
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            (
                vec![BASE, ("OTEL_EXPORTER_OTLP_HEADERS", "bad key=v")],
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            (
                vec![BASE, ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "=v")],
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            ),
            (
                vec![BASE, ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")],
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ),
            (
                vec![BASE, ("OTEL_EXPORTER_OTLP_TIMEOUT", "0")],
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ),
            (
                vec![BASE, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                vec![BASE, ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent.pem")],
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
            ),
            (
                vec![BASE, ("OTEL_TRACES_SAMPLER", "sometimes")],
                "OTEL_TRACES_SAMPLER",
            ),
            (
                vec![
                    BASE,
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "2"),
                ],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            (
                vec![BASE, ("OTEL_RESOURCE_ATTRIBUTES", "a=b,c")],
                "OTEL_RESOURCE_ATTRIBUTES",
            ),
            (
                vec![BASE, ("OTEL_RESOURCE_ATTRIBUTES", "a=%ff")],
                "OTEL_RESOURCE_ATTRIBUTES",
            ),
            (
                vec![BASE, ("OTEL_SDK_DISABLED", "yes")],
                "OTEL_SDK_DISABLED",
            ),
            (
                vec![BASE, ("OTEL_TRACES_EXPORTER", "zipkin")],
                "OTEL_TRACES_EXPORTER",
            ),
            (
                vec![BASE, ("OTEL_BSP_MAX_QUEUE_SIZE", "0")],
                "OTEL_BSP_MAX_QUEUE_SIZE",
            ),
            (
                vec![BASE, ("OTEL_BSP_MAX_QUEUE_SIZE", "8")],
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            ),
            (
                vec![BASE, ("OTEL_BSP_SCHEDULE_DELAY", "soon")],
                "OTEL_BSP_SCHEDULE_DELAY",
            ),
            (
                vec![BASE, ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "0")],
                "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
            ),
            (
                vec![BASE, ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "x")],
                "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
            ),
            (
                vec![BASE, ("TRACES_MAX_PER_SECOND", "-1")],
                "TRACES_MAX_PER_SECOND",
            ),
        ] {
            assert_eq!(
                parse_with(&vars).err().map(|e| e.var),
                Some(var),
                "{vars:?}"
            );
        }
    }
}
