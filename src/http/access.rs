//! A request's `x-request-id` and its one access line (spec §2, §6), never a body: the client's
//! values [`Quoted`], and the same as fields, which `LOG_FORMAT=json` writes as keys.

use std::fmt::Display;
use std::time::Instant;

use hyper::StatusCode;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use log::kv::Value;
use log::{Level, Record};

use crate::observe::logs::Quoted;

/// The request id header, in both directions.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id: the caller's if it is printable ASCII of at most 128 bytes, else a UUID.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    let sane = |id: &&HeaderValue| {
        (1..=128).contains(&id.len()) && id.as_bytes().iter().all(|b| (0x20..=0x7e).contains(b))
    };
    match headers.get(&X_REQUEST_ID).filter(sane) {
        Some(id) => id.clone(), // the head is the request's own (router::detached)
        None => HeaderValue::try_from(uuid::Uuid::new_v4().to_string())
            .expect("a UUID is a valid header value"),
    }
}

/// A request, as its access line names it: `method` is `-` for an unparsable head, `path` has
/// no query, `trace_id` is the caller's (`traceparent`) if valid, `started` when the head came.
pub struct Access<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub request_id: &'a HeaderValue,
    pub trace_id: Option<&'a str>,
    pub started: Instant,
}

impl Access<'_> {
    /// Logs the line of a request answered with `status`, at `info`.
    pub fn answered(&self, status: StatusCode) {
        self.log(Level::Info, Some(status.as_u16()), &"");
    }

    /// Logs, at `error`, the line of a request whose write's outcome is unknown, so it was
    /// answered with a closed connection, and why.
    pub fn unanswered(&self, cause: &(dyn std::error::Error + 'static)) {
        let cause = crate::error::describe(cause);
        let why = format!(" outcome unknown, connection closed unanswered: {cause}");
        self.log(Level::Error, None, &why);
    }

    fn log(&self, level: Level, status: Option<u16>, tail: &dyn Display) {
        if !log::log_enabled!(target: "access", level) {
            return;
        }
        let micros = self.started.elapsed().as_micros();
        let request_id = self.request_id.to_str().unwrap_or("-");
        let fields = [
            Some(("method", Value::from(self.method))),
            Some(("path", Value::from(self.path))),
            status.map(|status| ("status", Value::from(status))),
            Some(("duration_ms", Value::from(micros as f64 / 1000.0))),
            Some(("request_id", Value::from(request_id))),
            self.trace_id.map(|id| ("trace_id", Value::from(id))),
        ];
        // The trace id is validated lowercase hex: nothing to quote.
        let trace = self.trace_id.map(|id| format!(" trace_id={id}"));
        // Borrowed, not formatted: this runs for every request.
        let status: &dyn Display = status.as_ref().map_or(&"-", |status| status);
        log::logger().log(
            &Record::builder()
                .target("access")
                .level(level)
                .key_values(&fields)
                .args(format_args!(
                    "{} {} {} {}.{:03}ms request_id={}{}{tail}",
                    Quoted(self.method),
                    Quoted(self.path),
                    status,
                    micros / 1000,
                    micros % 1000,
                    Quoted(request_id),
                    trace.unwrap_or_default(),
                ))
                .build(),
        );
    }
}
