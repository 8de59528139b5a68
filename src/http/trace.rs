//! W3C Trace Context (https://www.w3.org/TR/trace-context/): the caller's
//! `traceparent`, validated, so its trace id can join the access line to the caller's
//! trace, and its span can be our server span's parent. An invalid header is ignored,
//! as the spec says.

use hyper::header::{HeaderMap, HeaderName};

use crate::trace::{SpanContext, SpanId, TraceId};

/// The request header.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

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
    decode_hex(fields.trace_id, &mut trace_id)?;
    decode_hex(fields.parent_id, &mut span_id)?;
    let mut flags = [0u8; 1];
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
        let digit = |b: u8| (b as char).to_digit(16);
        *byte = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Option<String> {
        let mut headers = HeaderMap::new();
        headers.insert(&TRACEPARENT, value.parse().unwrap());
        trace_id(&headers).map(str::to_owned)
    }

    #[test]
    fn a_valid_traceparent_gives_its_trace_id_and_an_invalid_one_nothing() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            parse(&format!("00-{id}-00f067aa0ba902b7-01")).as_deref(),
            Some(id)
        );
        // A later version, with a field this one does not know.
        assert_eq!(
            parse(&format!("01-{id}-00f067aa0ba902b7-01-what-comes")).as_deref(),
            Some(id)
        );
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
            assert_eq!(parse(&bad), None, "{bad}");
        }
    }

    #[test]
    fn the_parent_holds_the_callers_ids_and_sampled_flag() {
        let parent = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(&TRACEPARENT, value.parse().unwrap());
            super::parent(&headers)
        };
        let sampled = parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            sampled.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sampled.span_id.to_string(), "00f067aa0ba902b7");
        assert!(sampled.sampled);
        let not = parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!not.sampled);
        // Other flags (random, 02) do not mean sampled.
        assert!(
            !parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02")
                .unwrap()
                .sampled
        );
        assert!(
            parent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-x")
                .unwrap()
                .sampled
        );
        assert_eq!(
            parent("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            None
        );
    }
}
