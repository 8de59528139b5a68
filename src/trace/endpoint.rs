//! An OTLP/HTTP collector's URL, split as a client needs it, with the spec's rule for
//! the path: a base endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`) gets `v1/traces` appended,
//! a signal's own (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is used as it is. Which variable
//! holds it is config.rs's business.

use std::fmt;

/// An OTLP/HTTP endpoint, split as a client needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// https://, not http://.
    pub tls: bool,
    /// The host to connect to (an IPv6 address without its brackets).
    pub host: String,
    /// The port: given, or the scheme's.
    pub port: u16,
    /// `host[:port]` as written, for the `host` header.
    pub authority: String,
    /// The path and query to post to.
    pub path: String,
}

impl Endpoint {
    /// Parses `http[s]://host[:port][/path][?query]`. A base endpoint (`signal_path`)
    /// gets `v1/traces` appended to its path; a signal's own is used as it is.
    pub fn parse(url: &str, signal_path: bool) -> Result<Endpoint, String> {
        let lower = url.to_ascii_lowercase();
        let (tls, rest) = if lower.starts_with("http://") {
            (false, &url["http://".len()..])
        } else if lower.starts_with("https://") {
            (true, &url["https://".len()..])
        } else {
            return Err("must be an http:// or https:// URL".into());
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.contains('@') {
            return Err("must not hold credentials: use OTEL_EXPORTER_OTLP_HEADERS".into());
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or("an unclosed [ in the host")?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return Err("has no host".into());
        }
        let port = match port {
            None => match tls {
                true => 443,
                false => 80,
            },
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(format!("'{port}' is not a port")),
            },
        };
        let path = path.split('#').next().unwrap_or_default();
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        let mut full = match (signal_path, path) {
            (true, path) => format!("{}/v1/traces", path.trim_end_matches('/')),
            (false, "") => "/".to_owned(),
            (false, path) => path.to_owned(),
        };
        if let Some(query) = query {
            full.push('?');
            full.push_str(query);
        }
        Ok(Endpoint {
            tls,
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            path: full,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_endpoint_gets_the_signal_path_and_the_signal_endpoint_is_used_as_is() {
        for (url, signal_path, tls, host, port, path) in [
            ("http://c:4318", true, false, "c", 4318, "/v1/traces"),
            ("http://c:4318/", true, false, "c", 4318, "/v1/traces"),
            ("https://c/otlp/", true, true, "c", 443, "/otlp/v1/traces"),
            ("http://[::1]:4318", true, false, "::1", 4318, "/v1/traces"),
            ("http://c:4318", false, false, "c", 4318, "/"),
            (
                "HTTP://c:4318/x/traces?k=v",
                false,
                false,
                "c",
                4318,
                "/x/traces?k=v",
            ),
            ("http://c", false, false, "c", 80, "/"),
        ] {
            let endpoint = Endpoint::parse(url, signal_path).unwrap();
            assert_eq!(
                (
                    endpoint.tls,
                    endpoint.host.as_str(),
                    endpoint.port,
                    endpoint.path.as_str()
                ),
                (tls, host, port, path),
                "{url}"
            );
        }
    }
}
