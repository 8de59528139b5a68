//! Admission to a batcher's queue: past capacity, newcomers are turned away at once (503,
//! `retry-after`) by how long the queue makes requests wait, not by how many wait. The
//! queue itself is batcher.rs's.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a request may wait in the queue before newcomers are turned away, once more
/// than a batch per lane is queued: a queue the database drains fast may be long; one it
/// drains slowly turns newcomers away before anyone waits out a budget in it. Not less:
/// 4,096 clients in a closed loop wait ~90 ms here, and shedding at 50 ms served a fifth
/// as many (9.7k/s against 44k/s in `make bench`'s overload run, docs/decisions.md).
const SHED_AFTER: Duration = Duration::from_millis(250);

/// How the queue moves: how many wait, how long the oldest of the last batch had waited,
/// and since when the queue has not moved, both as microseconds since `epoch`.
pub struct Pace {
    /// Queued requests past which admission looks at the pace: a full batch per lane.
    busy: usize,
    /// Queued requests past which the next is turned away whatever the pace.
    full: usize,
    queued: AtomicUsize,
    waited: AtomicU64,
    still_since: AtomicU64,
    epoch: Instant,
}

impl Pace {
    /// A pace that looks at waits past `busy` queued, and turns everyone away past `full`.
    pub fn new(busy: usize, full: usize) -> Self {
        Pace {
            busy,
            full,
            queued: AtomicUsize::new(0),
            waited: AtomicU64::new(0),
            still_since: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// Counts a newcomer in, or turns it away: the queue is full, or longer than a
    /// batch per lane and either its last batch waited past [`SHED_AFTER`] or it has
    /// not moved for that long.
    pub fn admit(&self, now: Instant) -> bool {
        let before = self.queued.fetch_add(1, Ordering::Relaxed);
        if before == 0 {
            self.still_since.store(self.micros(now), Ordering::Relaxed);
        }
        let shed = before >= self.full
            || (before > self.busy && {
                let limit = SHED_AFTER.as_micros() as u64;
                let since = self.still_since.load(Ordering::Relaxed);
                let still = self.micros(now).saturating_sub(since);
                self.waited.load(Ordering::Relaxed) > limit || still > limit
            });
        if shed {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        !shed
    }

    /// A lane took `taken` jobs `now`, the oldest queued at `oldest`.
    pub fn took(&self, taken: usize, oldest: Instant, now: Instant) {
        self.queued.fetch_sub(taken, Ordering::Relaxed);
        let waited = now.saturating_duration_since(oldest).as_micros() as u64;
        self.waited.store(waited, Ordering::Relaxed);
        self.still_since.store(self.micros(now), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_sheds_by_how_long_the_queue_waits_and_how_long_it_is() {
        // As for the writes: 2 lanes of 128, and 64 batches queued at most.
        let (batch, busy, full) = (128, 2 * 128, 64 * 128);
        let pace = Pace::new(busy, full);
        let now = pace.epoch + Duration::from_secs(1);
        // Fast-moving: a long queue is fine, up to `full`.
        pace.took(0, now, now);
        assert!((0..full).all(|_| pace.admit(now)));
        assert!(!pace.admit(now), "past full");
        // Its last batch waited too long: past a batch per lane, newcomers are shed ...
        pace.took(full - busy - 1, now - SHED_AFTER * 2, now);
        assert!(!pace.admit(now));
        // ... but a short queue is never shed.
        pace.took(batch, now, now);
        pace.waited.store(u64::MAX, Ordering::Relaxed);
        assert!(pace.admit(now));
        // Not moved for longer than SHED_AFTER, with a long queue: shed.
        let pace = Pace::new(busy, full);
        let start = pace.epoch + Duration::from_secs(1);
        assert!((0..=busy).all(|_| pace.admit(start)));
        assert!(pace.admit(start + SHED_AFTER / 2));
        assert!(!pace.admit(start + SHED_AFTER * 2));
    }
}
