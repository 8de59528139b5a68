//! The OpenTelemetry environment variables → [`TraceConfig`], as opentelemetry.io's
//! "Environment Variable Specification" and "OTLP Exporter Configuration" define them,
//! and `TRACES_MAX_PER_SECOND`, read through config.rs's lookup; each error names its variable.

use std::fmt;
use std::time::Duration;

use hyper::Uri;
use hyper::header::{HeaderName, HeaderValue};
use percent_encoding::percent_decode_str;

use super::sampler::Sampler;
use crate::env::Env;
use crate::error::ConfigError;
use crate::pg::tls::{self, Roots};

/// Longest attribute value kept, in characters: the spec's default (no limit) would let
/// clients decide how large spans are (a path may take a 16 KiB head).
const DEFAULT_VALUE_LIMIT: usize = 1024;
/// Requests traced a second at most, whatever the sampler and callers' `traceparent` say.
const DEFAULT_MAX_PER_SECOND: usize = 100;

/// Where and how spans are exported, and which are kept.
#[derive(Debug)]
pub struct TraceConfig {
    /// Where spans are posted.
    pub endpoint: Uri,
    /// `OTEL_EXPORTER_OTLP_HEADERS`: sent with every export.
    pub headers: Headers,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`: how long one export may take.
    pub timeout: Duration,
    /// `OTEL_TRACES_SAMPLER` and `_ARG`.
    pub sampler: Sampler,
    /// The resource: `service.name`, `service.version`, then the rest.
    pub resource: Vec<(String, String)>,
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE`: the roots an https:// collector must chain to.
    pub roots: Roots,
    /// `OTEL_BSP_SCHEDULE_DELAY`: most time between exports.
    pub schedule_delay: Duration,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`: most spans waiting for export.
    pub max_queue: usize,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: most spans in one export.
    pub max_batch: usize,
    /// `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`: longer text values are cut to this many chars.
    pub value_limit: usize,
    /// `TRACES_MAX_PER_SECOND`: requests traced a second at most; the rest are counted.
    pub max_per_second: usize,
}

/// The signal's own variable when it is set (the spec: it wins), else the base one.
fn either(env: &Env, signal: &'static str, base: &'static str) -> &'static str {
    env.get(signal).map_or(base, |_| signal)
}

/// The tracing settings, or `None` when tracing is off: no OTLP endpoint, or
/// `OTEL_SDK_DISABLED=true`, or `OTEL_TRACES_EXPORTER=none`.
pub fn parse(env: &Env) -> Result<Option<TraceConfig>, ConfigError> {
    // `only(why)`: a refused choice, with why there is no other.
    let only = |why| {
        move |err: ConfigError| ConfigError { reason: format!("{}: {why}", err.reason), ..err }
    };
    // The spec's booleans ignore case.
    let boolean =
        |v: &str| v.to_ascii_lowercase().parse().map_err(|_| "must be true or false".into());
    let disabled = env.read("OTEL_SDK_DISABLED", boolean)?.unwrap_or(false);
    let exporting = env.one_of("OTEL_TRACES_EXPORTER", true, &[("otlp", true), ("none", false)]);
    if !exporting.map_err(only("task-api exports OTLP only"))? || disabled {
        return Ok(None);
    }
    let base = "OTEL_EXPORTER_OTLP_ENDPOINT";
    let var = either(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", base);
    // The signal's own endpoint is used as it is; the base gets the signal's path.
    let Some(endpoint) = env.read(var, |url| endpoint(url, var == base))? else { return Ok(None) };
    let var = either(env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL");
    env.one_of(var, (), &[("http/protobuf", ())])
        .map_err(only("task-api sends no gRPC or JSON"))?;
    let headers = either(env, "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS");
    let timeout = either(env, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT");
    let roots =
        either(env, "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE");
    // Read now, so a missing or empty file stops start-up, naming the variable.
    let file = |path: &str| {
        let roots = Roots::File(path.into());
        tls::root_store(&roots).map(|_| roots)
    };
    let sampler = env.get("OTEL_TRACES_SAMPLER").unwrap_or("parentbased_always_on".into());
    let limit =
        either(env, "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT");
    let config = TraceConfig {
        endpoint,
        headers: env.read(headers, headers_of)?.unwrap_or(Headers(Vec::new())),
        timeout: Duration::from_millis(env.count(timeout, 10_000)?),
        roots: env.read(roots, file)?.unwrap_or(Roots::Default),
        sampler: Sampler::parse(&sampler, env.get("OTEL_TRACES_SAMPLER_ARG").as_deref())?,
        max_queue: env.count("OTEL_BSP_MAX_QUEUE_SIZE", 2048)?,
        max_batch: env.count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)?,
        max_per_second: env.count("TRACES_MAX_PER_SECOND", DEFAULT_MAX_PER_SECOND)?,
        value_limit: env.count(limit, DEFAULT_VALUE_LIMIT)?,
        resource: resource(env)?,
        schedule_delay: Duration::from_millis(env.count("OTEL_BSP_SCHEDULE_DELAY", 5_000)?),
    };
    if config.max_batch > config.max_queue {
        let reason = "must not be more than OTEL_BSP_MAX_QUEUE_SIZE";
        return Err(ConfigError::invalid("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", reason));
    }
    Ok(Some(config))
}

/// A collector's URL, `http[s]://host[:port][/path][?query]`; with `signal_path` (the spec's rule
/// for `OTEL_EXPORTER_OTLP_ENDPOINT`) it gets `v1/traces` appended.
fn endpoint(url: &str, signal_path: bool) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("must be an http:// or https:// URL".into());
    }
    let authority = uri.authority().ok_or("has no host")?;
    if authority.as_str().contains('@') {
        return Err("must not hold credentials: use OTEL_EXPORTER_OTLP_HEADERS".into());
    }
    // http::Uri takes any port text (its port `None` if not a u16): the text says if one was given.
    let port = &authority.as_str()[authority.host().len()..];
    if port.len() > 1 && authority.port_u16().is_none_or(|port| port == 0) {
        return Err(format!("'{}' is not a port", &port[1..]));
    }
    if !signal_path {
        return Ok(uri);
    }
    let (scheme, path) = (uri.scheme_str().unwrap_or_default(), uri.path().trim_end_matches('/'));
    let query = uri.query().map_or(String::new(), |q| format!("?{q}"));
    let url = format!("{scheme}://{authority}{path}/v1/traces{query}");
    url.parse().map_err(|e| format!("not a URL: {e}"))
}

/// `service.name` from `OTEL_SERVICE_NAME`, else `OTEL_RESOURCE_ATTRIBUTES`, else
/// task-api; `service.version` the binary's unless given; then the rest.
fn resource(env: &Env) -> Result<Vec<(String, String)>, ConfigError> {
    let mut given = env.read("OTEL_RESOURCE_ATTRIBUTES", pairs)?.unwrap_or_default();
    let mut take = |key: &str, default: String| {
        let last = given.iter().rfind(|(k, _)| k == key).map(|(_, value)| value.clone());
        given.retain(|(k, _)| k != key);
        (key.to_owned(), last.unwrap_or(default))
    };
    let (name, version) =
        (take("service.name", "task-api".into()), take("service.version", crate::VERSION.into()));
    let name = (name.0, env.get("OTEL_SERVICE_NAME").unwrap_or(name.1));
    Ok([name, version].into_iter().chain(given).collect())
}

/// The W3C Baggage-like list both variables use: `key=value,…`, percent-decoded and trimmed.
/// Errors never quote a value (a header may hold a secret).
fn pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for (n, entry) in text.split(',').enumerate().filter(|(_, e)| !e.trim().is_empty()) {
        let bad = |why: &str| format!("entry {}: {why}", n + 1);
        let (key, value) = entry.split_once('=').ok_or_else(|| bad("not key=value"))?;
        let decode = |part: &str| match percent_decode_str(part.trim()).decode_utf8() {
            Ok(text) => Ok(text.into_owned()),
            Err(_) => Err(bad("not UTF-8 once percent-decoded")),
        };
        let key = decode(key)?;
        if key.is_empty() {
            return Err(bad("the key is empty"));
        }
        pairs.push((key, decode(value)?));
    }
    Ok(pairs)
}

fn headers_of(text: &str) -> Result<Headers, String> {
    let header = |(n, (key, value)): (usize, (String, String))| {
        let name = HeaderName::try_from(key.as_str())
            .map_err(|_| format!("header {}: not a valid header name", n + 1))?;
        let value = HeaderValue::try_from(value.as_str())
            .map_err(|_| format!("header {} ({name}): not a valid header value", n + 1))?;
        Ok((name, value))
    };
    let headers = pairs(text)?.into_iter().enumerate().map(header);
    Ok(Headers(headers.collect::<Result<_, String>>()?))
}

/// Headers sent with every export: API keys, often, so `{:?}` shows their names only.
pub struct Headers(pub Vec<(HeaderName, HeaderValue)>);

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.0.iter().map(|(name, _)| name);
        f.debug_list().entries(names).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_endpoint_gets_the_signal_path_and_the_signal_endpoint_is_used_as_is() {
        for (url, signal_path, expected) in [
            ("http://c:4318", true, "http://c:4318/v1/traces"),
            ("https://c/otlp/", true, "https://c/otlp/v1/traces"),
            ("http://[::1]:4318", true, "http://[::1]:4318/v1/traces"),
            ("http://c:4318", false, "http://c:4318/"),
            ("HTTP://c/x/traces?k=v", false, "http://c/x/traces?k=v"),
        ] {
            assert_eq!(endpoint(url, signal_path).unwrap(), expected, "{url}");
        }
    }

    // The rest of this file is checked through the binary, in tests/api/tracing.rs.
    #[test]
    fn off_without_an_endpoint_or_when_disabled_and_the_spec_defaults_otherwise() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        let parse_with = |vars: &[(&str, &str)]| {
            let vars: std::collections::HashMap<_, _> = vars.iter().copied().collect();
            parse(&Env(&|name| vars.get(name).map(|v| v.to_string()))).unwrap()
        };
        for off in [
            &[("OTEL_SERVICE_NAME", "x")][..],
            &[base, ("OTEL_SDK_DISABLED", "TRUE")],
            &[base, ("OTEL_TRACES_EXPORTER", "none")],
        ] {
            assert!(parse_with(off).is_none(), "{off:?}");
        }
        // As the start-up line shows it.
        let expected = format!(
            "TraceConfig {{ endpoint: http://collector:4318/v1/traces, headers: [], \
             timeout: 10s, sampler: parentbased_always_on, resource: [(\"service.name\", \
             \"task-api\"), (\"service.version\", \"{}\")], roots: Default, \
             schedule_delay: 5s, max_queue: 2048, max_batch: 512, value_limit: 1024, \
             max_per_second: 100 }}",
            crate::VERSION
        );
        assert_eq!(format!("{:?}", parse_with(&[base]).unwrap()), expected);
    }
}
