//! Where a span sits in a trace: [`TraceId`], [`SpanId`], [`SpanContext`], and the
//! caller's W3C `traceparent` (https://www.w3.org/TR/trace-context/), validated, so its
//! trace id can join the access line to the caller's trace and its span can be our
//! server span's parent. An invalid header is ignored, as the spec says.

use std::fmt;

use hyper::header::{HeaderMap, HeaderName};

/// The request header.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A trace's id: 16 bytes, never all zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceId(pub [u8; 16]);

/// A span's id: 8 bytes, never all zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanId(pub [u8; 8]);

/// Where a span sits: its trace, its own id, and whether its trace is sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanContext {
    /// The trace it belongs to.
    pub trace_id: TraceId,
    /// The span itself.
    pub span_id: SpanId,
    /// The `sampled` trace flag.
    pub sampled: bool,
}

impl TraceId {
    /// A fresh random id (W3C Trace Context: the rightmost 7 bytes random, which the
    /// ratio sampler relies on).
    pub fn random() -> TraceId {
        TraceId(rand::random::<std::num::NonZeroU128>().get().to_be_bytes())
    }
}

impl SpanId {
    /// A fresh random id.
    pub fn random() -> SpanId {
        SpanId(rand::random::<std::num::NonZeroU64>().get().to_be_bytes())
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

/// The 32 lowercase hex digits of the caller's trace id, when it sent one valid
/// `traceparent`: `version-traceid-parentid-flags`, lowercase hex; version not `ff`, and
/// for version `00` nothing more; ids not all zeros.
pub fn trace_id(headers: &HeaderMap) -> Option<&str> {
    traceparent(headers).map(|fields| fields.trace_id)
}

/// The caller's span, from the same valid `traceparent`: its trace id, its span id (the
/// parent of our server span) and its `sampled` flag (which parent-based samplers follow).
pub fn parent(headers: &HeaderMap) -> Option<SpanContext> {
    let fields = traceparent(headers)?;
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    let mut flags = [0u8; 1];
    decode_hex(fields.trace_id, &mut trace_id)?;
    decode_hex(fields.parent_id, &mut span_id)?;
    decode_hex(&fields.flags[..2], &mut flags)?;
    Some(SpanContext {
        trace_id: TraceId(trace_id),
        span_id: SpanId(span_id),
        sampled: flags[0] & 0x01 == 0x01,
    })
}

/// A valid `traceparent`'s fields, as written.
struct Fields<'a> {
    trace_id: &'a str,
    parent_id: &'a str,
    /// The flags, and for a later version what follows them.
    flags: &'a str,
}

fn traceparent(headers: &HeaderMap) -> Option<Fields<'_>> {
    let mut values = headers.get_all(&TRACEPARENT).iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None; // two parents: neither can be trusted
    }
    let hex = |text: &str, len: usize| {
        text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let mut fields = value.splitn(5, '-');
    let (version, trace_id, parent_id, flags) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let rest = fields.next();
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        // A later version may add fields after the flags; version 00 may not.
        && (hex(flags, 2) || (version != "00" && flags.len() > 2 && hex(&flags[..2], 2)))
        && (rest.is_none() || version != "00");
    valid.then_some(Fields {
        trace_id,
        parent_id,
        flags,
    })
}

/// Lowercase hex (already checked) into `out`.
fn decode_hex(text: &str, out: &mut [u8]) -> Option<()> {
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(&TRACEPARENT, value.parse().unwrap());
        headers
    }

    #[test]
    fn a_valid_traceparent_gives_the_callers_span_and_an_invalid_one_nothing() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let sampled = parent(&headers(&format!("00-{id}-00f067aa0ba902b7-01"))).unwrap();
        assert_eq!(sampled.trace_id.to_string(), id);
        assert_eq!(sampled.span_id.to_string(), "00f067aa0ba902b7");
        assert!(sampled.sampled);
        for (flags, is_sampled) in [("00", false), ("02", false), ("03-x", true)] {
            let version = if flags.len() > 2 { "01" } else { "00" };
            let value = format!("{version}-{id}-00f067aa0ba902b7-{flags}");
            assert_eq!(
                parent(&headers(&value)).unwrap().sampled,
                is_sampled,
                "{value}"
            );
        }
        // A later version, with a field this one does not know.
        let later = format!("01-{id}-00f067aa0ba902b7-01-what-comes");
        assert_eq!(trace_id(&headers(&later)), Some(id));
        for bad in [
            format!("00-{id}-00f067aa0ba902b7-01-extra"),
            format!("ff-{id}-00f067aa0ba902b7-01"),
            format!("00-{}-00f067aa0ba902b7-01", id.to_uppercase()),
            format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            format!("00-{id}-0000000000000000-01"),
            format!("00-{id}-00f067aa0ba902b7"),
            format!("00-{id}-00f067aa0ba902b7-1"),
            "garbage".to_owned(),
        ] {
            assert_eq!(trace_id(&headers(&bad)), None, "{bad}");
            assert_eq!(parent(&headers(&bad)), None, "{bad}");
        }
    }
}
