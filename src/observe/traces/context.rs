//! Where a span sits in a trace: [`TraceId`], [`SpanId`], [`SpanContext`], and the
//! caller's W3C `traceparent` (https://www.w3.org/TR/trace-context/), validated; an
//! invalid one is ignored, as the spec says.

use std::fmt;

use hyper::header::HeaderMap;

/// A trace's id, never zero; shown as 32 lowercase hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceId(pub u128);

/// A span's id, never zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanId(pub u64);

/// Where a span sits: its trace, its own id, and whether its trace is sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// The caller's trace id as it sent it, from a valid `traceparent`.
pub fn trace_id(headers: &HeaderMap) -> Option<&str> {
    traceparent(headers).map(|(trace_id, _, _)| trace_id)
}

/// The caller's span (our server span's parent), from a valid `traceparent`.
pub fn parent(headers: &HeaderMap) -> Option<SpanContext> {
    let (trace_id, span_id, flags) = traceparent(headers)?;
    Some(SpanContext {
        trace_id: TraceId(u128::from_str_radix(trace_id, 16).ok()?),
        span_id: SpanId(u64::from_str_radix(span_id, 16).ok()?),
        sampled: u8::from_str_radix(&flags[..2], 16).ok()? & 0x01 == 0x01,
    })
}

/// A valid `traceparent`'s trace id, parent id and flags (with, for a later version,
/// what follows them): `version-traceid-parentid-flags` in lowercase hex, the version
/// not `ff` and for `00` nothing more, the ids not all zeros.
fn traceparent(headers: &HeaderMap) -> Option<(&str, &str, &str)> {
    let mut values = headers.get_all("traceparent").iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None; // two parents: neither can be trusted
    }
    let hex = |text: &str, len: usize| {
        text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let fields: Vec<&str> = value.splitn(5, '-').collect();
    let [version, trace_id, parent_id, flags, ref rest @ ..] = fields[..] else {
        return None;
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        // A later version may add to the flags, or fields after them; version 00 may not.
        && ((version == "00" && hex(flags, 2) && rest.is_empty())
            || (version != "00" && flags.get(..2).is_some_and(|flags| hex(flags, 2))));
    valid.then_some((trace_id, parent_id, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_gives_the_callers_span_and_an_invalid_one_nothing() {
        let (id, span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
        for (value, sampled) in [
            (format!("00-{id}-{span}-01"), Some(true)),
            (format!("00-{id}-{span}-00"), Some(false)),
            (format!("00-{id}-{span}-02"), Some(false)),
            // A later version, with fields this one does not know.
            (format!("01-{id}-{span}-03-what-comes"), Some(true)),
            (format!("01-{id}-{span}-01x"), Some(true)),
            (format!("00-{id}-{span}-01-extra"), None),
            (format!("00-{id}-{span}-01x"), None),
            (format!("ff-{id}-{span}-01"), None),
            (format!("00-{}-{span}-01", id.to_uppercase()), None),
            (format!("00-{}-{span}-01", "0".repeat(32)), None),
            (format!("00-{id}-0000000000000000-01"), None),
            (format!("00-{id}-{span}"), None),
            (format!("00-{id}-{span}-1"), None),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert("traceparent", value.parse().unwrap());
            let parent = parent(&headers);
            assert_eq!(parent.map(|p| p.sampled), sampled, "{value}");
            assert_eq!(trace_id(&headers), sampled.map(|_| id), "{value}");
            if let Some(parent) = parent {
                assert_eq!(parent.trace_id.to_string(), id);
                assert_eq!(parent.span_id, SpanId(0x00f0_67aa_0ba9_02b7));
            }
        }
    }
}
