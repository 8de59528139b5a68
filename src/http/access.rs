//! The one access-log line per request (spec §6): method, path, status, duration, request
//! id, and the caller's trace id when it sent one. Written as text (the client's values
//! [`Quoted`]), and carrying the same as fields, which `LOG_FORMAT=json` writes as keys.
//! Never a body.

use std::time::Instant;

use hyper::StatusCode;
use hyper::header::HeaderValue;
use log::kv::{self, Key, Value, VisitSource};
use log::{Level, Record};

use crate::observe::logs::Quoted;

/// A request, as its access line will name it.
pub struct Access<'a> {
    /// Its method (`-` for a head that could not be parsed).
    pub method: &'a str,
    /// Its path, without the query string.
    pub path: &'a str,
    /// Its `x-request-id`.
    pub request_id: &'a HeaderValue,
    /// The caller's trace id (`traceparent`), if valid.
    pub trace_id: Option<&'a str>,
    /// When its head arrived.
    pub started: Instant,
}

impl Access<'_> {
    /// Logs the line of a request answered with `status`, at `info`.
    pub fn answered(&self, status: StatusCode) {
        if !log::log_enabled!(target: "access", Level::Info) {
            return;
        }
        let fields = self.fields(Some(status.as_u16()));
        let micros = fields.micros;
        log::logger().log(
            &Record::builder()
                .target("access")
                .level(Level::Info)
                .key_values(&fields)
                .args(format_args!(
                    "{} {} {} {}.{:03}ms request_id={}{}",
                    Quoted(self.method),
                    Quoted(self.path),
                    status.as_u16(),
                    micros / 1000,
                    micros % 1000,
                    Quoted(fields.request_id),
                    TraceSuffix(self.trace_id),
                ))
                .build(),
        );
    }

    /// Logs the line of a request answered with a closed connection instead of a status
    /// (its write's outcome is unknown), with why, at `error`.
    pub fn unanswered(&self, cause: &(dyn std::error::Error + 'static)) {
        let fields = self.fields(None);
        let micros = fields.micros;
        log::logger().log(
            &Record::builder()
                .target("access")
                .level(Level::Error)
                .key_values(&fields)
                .args(format_args!(
                    "{} {} - {}.{:03}ms request_id={}{} outcome unknown, connection closed \
                     unanswered: {}",
                    Quoted(self.method),
                    Quoted(self.path),
                    micros / 1000,
                    micros % 1000,
                    Quoted(fields.request_id),
                    TraceSuffix(self.trace_id),
                    crate::error::describe(cause),
                ))
                .build(),
        );
    }

    fn fields(&self, status: Option<u16>) -> Fields<'_> {
        Fields {
            method: self.method,
            path: self.path,
            status,
            micros: self.started.elapsed().as_micros(),
            request_id: self.request_id.to_str().unwrap_or("-"),
            trace_id: self.trace_id,
        }
    }
}

/// ` trace_id=…`, or nothing.
struct TraceSuffix<'a>(Option<&'a str>);

impl std::fmt::Display for TraceSuffix<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            // Validated lowercase hex: nothing to quote.
            Some(id) => write!(f, " trace_id={id}"),
            None => Ok(()),
        }
    }
}

/// The access line's fields, for formats that write them as such.
struct Fields<'a> {
    method: &'a str,
    path: &'a str,
    status: Option<u16>,
    micros: u128,
    request_id: &'a str,
    trace_id: Option<&'a str>,
}

impl kv::Source for Fields<'_> {
    fn visit<'kvs>(&'kvs self, visitor: &mut dyn VisitSource<'kvs>) -> Result<(), kv::Error> {
        visitor.visit_pair(Key::from("method"), Value::from(self.method))?;
        visitor.visit_pair(Key::from("path"), Value::from(self.path))?;
        if let Some(status) = self.status {
            visitor.visit_pair(Key::from("status"), Value::from(status))?;
        }
        let duration_ms = self.micros as f64 / 1000.0;
        visitor.visit_pair(Key::from("duration_ms"), Value::from(duration_ms))?;
        visitor.visit_pair(Key::from("request_id"), Value::from(self.request_id))?;
        if let Some(trace_id) = self.trace_id {
            visitor.visit_pair(Key::from("trace_id"), Value::from(trace_id))?;
        }
        Ok(())
    }
}
