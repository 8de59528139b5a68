//! Which traces are kept: the SDK's built-in samplers, as `OTEL_TRACES_SAMPLER` names
//! them, and a cap on how many per second ([`RateLimit`]), so that callers, who
//! choose their trace ids and `sampled` flags, cannot choose the cost. A server span is
//! the only one that is sampled; its statements follow it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::TraceId;

/// `OTEL_TRACES_SAMPLER` (with its `_ARG`), parsed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampler {
    /// What decides for a trace this service starts (no parent), and for every trace
    /// when `follow_parent` is false.
    root: Root,
    /// `parentbased_*`: a caller's `sampled` flag decides for its trace.
    follow_parent: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Root {
    AlwaysOn,
    AlwaysOff,
    /// `traceidratio`: this fraction of traces, by their id.
    Ratio(f64),
}

/// The sampler when `OTEL_TRACES_SAMPLER` is unset.
pub const DEFAULT: Sampler = Sampler {
    root: Root::AlwaysOn,
    follow_parent: true,
};

/// Randomness, as W3C Trace Context level 2 and the OpenTelemetry spec define it: the
/// rightmost 56 bits of the trace id.
const RANDOM_BITS: u32 = 56;

impl Sampler {
    /// Parses a sampler's name and its argument (`OTEL_TRACES_SAMPLER_ARG`, used by the
    /// ratio samplers only; others ignore it, as the spec says). `Err` says which of the
    /// two is wrong, and why.
    pub fn parse(name: &str, arg: Option<&str>) -> Result<Sampler, (bool, String)> {
        let ratio = || match arg {
            None => Ok(Root::Ratio(1.0)),
            Some(text) => match text.trim().parse::<f64>() {
                Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(Root::Ratio(ratio)),
                _ => Err((true, format!("'{text}' is not a ratio from 0 to 1"))),
            },
        };
        let (root, follow_parent) = match name.trim() {
            "always_on" => (Root::AlwaysOn, false),
            "always_off" => (Root::AlwaysOff, false),
            "traceidratio" => (ratio()?, false),
            "parentbased_always_on" => (Root::AlwaysOn, true),
            "parentbased_always_off" => (Root::AlwaysOff, true),
            "parentbased_traceidratio" => (ratio()?, true),
            other => {
                return Err((
                    false,
                    format!(
                        "'{other}' is not one of always_on, always_off, traceidratio, \
                         parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
                    ),
                ));
            }
        };
        Ok(Sampler {
            root,
            follow_parent,
        })
    }

    /// Whether a server span of `trace_id` is recorded; `parent_sampled` is the
    /// caller's flag, if it sent a `traceparent`.
    pub fn samples(&self, trace_id: TraceId, parent_sampled: Option<bool>) -> bool {
        match (self.follow_parent, parent_sampled) {
            (true, Some(sampled)) => sampled,
            _ => match self.root {
                Root::AlwaysOn => true,
                Root::AlwaysOff => false,
                Root::Ratio(ratio) => ratio_samples(ratio, trace_id),
            },
        }
    }
}

/// At most `per_second` admissions a second, and a burst of as many: the generic cell
/// rate algorithm, one atomic word (the time at which the bucket would be empty).
#[derive(Debug)]
pub struct RateLimit {
    /// Nanoseconds one admission costs.
    cost: u64,
    /// Nanoseconds of admissions the bucket holds: one second's worth.
    window: u64,
    /// When the bucket would be empty, in nanoseconds since `epoch`.
    empty_at: AtomicU64,
    epoch: Instant,
}

impl RateLimit {
    /// A limit of `per_second` (at least 1).
    pub fn new(per_second: u32) -> RateLimit {
        let window = Duration::from_secs(1).as_nanos() as u64;
        RateLimit {
            cost: window / u64::from(per_second.max(1)),
            window,
            empty_at: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Whether one more is admitted now.
    pub fn admit(&self) -> bool {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let mut empty_at = self.empty_at.load(Ordering::Relaxed);
        loop {
            let next = empty_at.max(now) + self.cost;
            if next > now + self.window {
                return false;
            }
            match self.empty_at.compare_exchange_weak(
                empty_at,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(current) => empty_at = current,
            }
        }
    }
}

/// The spec's TraceIdRatioBased: kept when the trace id's randomness reaches the
/// threshold `(1 - ratio) * 2^56`. Deterministic by trace id, so every service with the
/// same ratio keeps the same traces.
fn ratio_samples(ratio: f64, trace_id: TraceId) -> bool {
    let scale = (1u64 << RANDOM_BITS) as f64;
    let threshold = ((1.0 - ratio) * scale).ceil() as u64;
    let mut low = [0u8; 8];
    low[1..].copy_from_slice(&trace_id.0[9..]);
    u64::from_be_bytes(low) >= threshold
}

impl fmt::Display for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.follow_parent {
            f.write_str("parentbased_")?;
        }
        match self.root {
            Root::AlwaysOn => f.write_str("always_on"),
            Root::AlwaysOff => f.write_str("always_off"),
            Root::Ratio(ratio) => write!(f, "traceidratio({ratio})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(random: u64) -> TraceId {
        let mut bytes = [0xab; 16];
        bytes[8..].copy_from_slice(&random.to_be_bytes());
        TraceId(bytes)
    }

    #[test]
    fn parent_based_samplers_follow_the_callers_flag_and_others_do_not() {
        let parse = |name| Sampler::parse(name, None).unwrap();
        let any = id(7);
        for (name, none, sampled, unsampled) in [
            ("always_on", true, true, true),
            ("always_off", false, false, false),
            ("parentbased_always_on", true, true, false),
            ("parentbased_always_off", false, true, false),
            ("traceidratio", true, true, true),
        ] {
            let sampler = parse(name);
            assert_eq!(sampler.samples(any, None), none, "{name}, no parent");
            assert_eq!(sampler.samples(any, Some(true)), sampled, "{name}");
            assert_eq!(sampler.samples(any, Some(false)), unsampled, "{name}");
        }
        assert_eq!(Sampler::parse("parentbased_always_on", None), Ok(DEFAULT));
    }

    #[test]
    fn the_ratio_keeps_that_share_of_trace_ids_by_their_last_56_bits() {
        let half = Sampler::parse("traceidratio", Some("0.5")).unwrap();
        assert!(!half.samples(id((1 << 55) - 1), None));
        assert!(half.samples(id(1 << 55), None));
        // The top byte of the last eight is not random: it does not count.
        assert!(!half.samples(id(0xff00_0000_0000_0000), None));
        let none = Sampler::parse("parentbased_traceidratio", Some("0")).unwrap();
        assert!(!none.samples(id(u64::MAX), None));
        assert!(none.samples(id(0), Some(true)));
        let all = Sampler::parse("traceidratio", Some("1")).unwrap();
        assert!(all.samples(id(0), None));
        let kept = (0..10_000)
            .filter(|_| half.samples(TraceId::random(), None))
            .count();
        assert!((4_500..5_500).contains(&kept), "{kept} of 10,000");
    }

    #[test]
    fn the_rate_limit_admits_a_seconds_worth_then_refills() {
        let limit = RateLimit::new(50);
        let admitted = (0..1000).filter(|_| limit.admit()).count();
        assert!((50..=51).contains(&admitted), "{admitted}");
        std::thread::sleep(Duration::from_millis(100));
        let refilled = (0..1000).filter(|_| limit.admit()).count();
        assert!((4..=7).contains(&refilled), "{refilled}");
    }

    #[test]
    fn bad_names_and_ratios_are_refused_naming_which() {
        assert!(matches!(
            Sampler::parse("jaeger_remote", None),
            Err((false, _))
        ));
        for bad in ["1.5", "-0.1", "half", "NaN"] {
            assert!(
                matches!(Sampler::parse("traceidratio", Some(bad)), Err((true, _))),
                "{bad}"
            );
        }
        // Samplers without an argument ignore it.
        assert!(Sampler::parse("always_on", Some("x")).is_ok());
    }
}
