//! Which traces are kept: the SDK's built-in samplers, as `OTEL_TRACES_SAMPLER` names
//! them, and a cap on how many per second ([`RateLimit`]), so that callers, who choose
//! their trace ids and `sampled` flags, cannot choose the cost.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::TraceId;
use crate::error::ConfigError;

/// `OTEL_TRACES_SAMPLER` (with its `_ARG`), parsed.
#[derive(Clone, Copy)]
pub struct Sampler {
    /// The share of traces kept by their id (always_on: 1, always_off: 0).
    ratio: f64,
    /// `parentbased_*`: a caller's `sampled` flag decides for its trace.
    follow_parent: bool,
}

impl Sampler {
    /// A sampler's name and its argument, which only the ratio samplers read (the spec).
    pub fn parse(name: &str, arg: Option<&str>) -> Result<Sampler, ConfigError> {
        let root = name.strip_prefix("parentbased_");
        let (follow_parent, root) = (root.is_some(), root.unwrap_or(name));
        let ratio = match (root, arg) {
            ("always_on", _) | ("traceidratio", None) => 1.0,
            ("always_off", _) => 0.0,
            ("traceidratio", Some(text)) => {
                let ratio = text.parse().ok().filter(|ratio| (0.0..=1.0).contains(ratio));
                let reason = || format!("'{text}' is not a ratio from 0 to 1");
                ratio.ok_or_else(|| ConfigError::invalid("OTEL_TRACES_SAMPLER_ARG", reason()))?
            }
            _ => {
                let reason = format!(
                    "'{name}' is not one of always_on, always_off, traceidratio, \
                     parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
                );
                return Err(ConfigError::invalid("OTEL_TRACES_SAMPLER", reason));
            }
        };
        Ok(Sampler { ratio, follow_parent })
    }

    /// Whether a server span of `trace_id` is recorded, given the caller's `sampled` flag
    /// if any. The ratio is the spec's TraceIdRatioBased, the same in every service: kept
    /// when the id's last 56 bits (its randomness, W3C) reach `(1 - ratio) * 2^56`.
    pub fn samples(&self, trace_id: TraceId, parent_sampled: Option<bool>) -> bool {
        if let (true, Some(sampled)) = (self.follow_parent, parent_sampled) {
            return sampled;
        }
        let threshold = ((1.0 - self.ratio) * (1u64 << 56) as f64).ceil() as u64;
        ((trace_id.0 as u64) & ((1 << 56) - 1)) >= threshold
    }
}

// As the variable names it, for the configuration logged at start.
impl fmt::Debug for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parent = if self.follow_parent { "parentbased_" } else { "" };
        match self.ratio {
            1.0 => write!(f, "{parent}always_on"),
            0.0 => write!(f, "{parent}always_off"),
            ratio => write!(f, "{parent}traceidratio({ratio})"),
        }
    }
}

/// At most `per_second` admissions a second, and a burst of as many: the generic cell
/// rate algorithm, one atomic word (the time at which the bucket would be empty).
pub struct RateLimit {
    /// Nanoseconds one admission costs.
    cost: u64,
    /// When the bucket would be empty, in nanoseconds since `epoch`.
    empty_at: AtomicU64,
    epoch: Instant,
}

/// What the bucket holds: one second's worth, in nanoseconds.
const WINDOW: u64 = 1_000_000_000;

impl RateLimit {
    /// A limit of `per_second` (at least 1).
    pub fn new(per_second: usize) -> RateLimit {
        let cost = WINDOW / per_second.max(1) as u64;
        RateLimit { cost, empty_at: AtomicU64::new(0), epoch: Instant::now() }
    }

    /// Whether one more is admitted now.
    pub fn admit(&self) -> bool {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let admitted = |empty_at: u64| {
            Some(empty_at.max(now) + self.cost).filter(|next| *next <= now + WINDOW)
        };
        self.empty_at.fetch_update(Ordering::Relaxed, Ordering::Relaxed, admitted).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samplers_keep_by_the_callers_flag_or_the_last_56_bits_of_the_id() {
        let (low, high) = ((1 << 55) - 1, 1 << 55); // the ratio 0.5 keeps from `high` up
        // The top byte of the last eight is not random: it does not count.
        let top = 0xff00_0000_0000_0000;
        for (name, arg, random, parent, kept) in [
            ("always_on", Some("x"), 0, Some(false), true),
            ("traceidratio", None, 0, Some(false), true),
            ("traceidratio", Some("0.5"), low, None, false),
            ("traceidratio", Some("0.5"), high, None, true),
            ("traceidratio", Some("0.5"), top, None, false),
            ("parentbased_traceidratio", Some("0"), u64::MAX, None, false),
            ("parentbased_traceidratio", Some("0"), 0, Some(true), true),
        ] {
            let sampler = Sampler::parse(name, arg).unwrap();
            let id = TraceId(0xabab_abab_abab_abab << 64 | u128::from(random));
            assert_eq!(sampler.samples(id, parent), kept, "{name} {arg:?} {random:#x}");
        }
    }

    #[test]
    fn the_rate_limit_admits_a_seconds_worth_then_refills() {
        let limit = RateLimit::new(50);
        let admitted = (0..1000).filter(|_| limit.admit()).count();
        assert!((50..=51).contains(&admitted), "{admitted}");
        std::thread::sleep(std::time::Duration::from_millis(100));
        let refilled = (0..1000).filter(|_| limit.admit()).count();
        assert!((4..=7).contains(&refilled), "{refilled}");
    }
}
