//! Reads past one database (`DATABASE_READ_URL`): a probe follows each standby's replay against
//! the primary, and a read with a consistency token goes to a standby replayed past it (waiting
//! [`TOKEN_WAIT`] at most), one without to one `READ_MAX_LAG` behind at most, else the primary.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::pool::{Deadline, Effect, Pool};
use super::sql::{self, Conn};

/// How often the probe looks at the primary and every standby.
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// How long one look may take: a standby that does not answer by then is down.
const PROBE_BUDGET: Duration = Duration::from_millis(500);
/// How far back the probe remembers the primary's positions, to tell a standby's lag.
const HISTORY: Duration = Duration::from_secs(600);
/// How long a read with a token waits for a standby to replay past it.
const TOKEN_WAIT: Duration = Duration::from_millis(100);

/// Where a read goes: the primary, or standby `n`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    Primary,
    Standby(usize),
}

/// The primary's place in its WAL, as the probe last saw it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Primary {
    system: u64,
    timeline: u64,
    lsn: u64,
}

/// What the probe last saw: the primary, and each standby's replayed position and lag
/// (`None`: down, promoted, or of another database).
#[derive(Clone, Debug, Default)]
struct Seen {
    primary: Option<Primary>,
    standbys: Vec<Option<(u64, Duration)>>,
}

/// A standby's lag in seconds, NaN while it is down.
type Lag = Gauge<f64, AtomicU64>;

/// The standbys, their probe, and the counts `/metrics` shows.
pub struct Standbys {
    primary: Arc<Pool>,
    /// The furthest the primary is known to have inserted, from tokens checked against it.
    known: AtomicU64,
    max_lag: Duration,
    seen: watch::Receiver<Seen>,
    next: AtomicUsize,
    probe: JoinHandle<()>,
    reads: Family<[(&'static str, &'static str); 1], Counter>,
    waited: Counter,
    lag: Family<[(&'static str, String); 1], Lag>,
}

impl Standbys {
    /// Starts probing `pools` (standbys, named by `names`) against `primary`.
    pub fn start(
        primary: Arc<Pool>,
        pools: Vec<Arc<Pool>>,
        names: Vec<String>,
        max_lag: Duration,
    ) -> Standbys {
        let (tell, seen) = watch::channel(Seen::default());
        let lag: Family<_, Lag> = Family::default();
        let gauges =
            names.into_iter().map(|standby| lag.get_or_create(&[("standby", standby)]).clone());
        let probe = tokio::spawn(probe(primary.clone(), pools, gauges.collect(), max_lag, tell));
        let (next, reads, waited) = (AtomicUsize::new(0), Family::default(), Counter::default());
        let known = AtomicU64::new(0);
        Standbys { primary, known, max_lag, seen, next, probe, reads, waited, lag }
    }

    /// Counts a read `target` answered.
    pub fn served(&self, target: Target) {
        let label = if target == Target::Primary { "primary" } else { "standby" };
        self.reads.get_or_create(&[("target", label)]).inc();
    }

    /// Where a read with `token` goes ([`Standbys::past`]); without one, to a standby at most
    /// `READ_MAX_LAG` behind, in turn, else the primary.
    pub async fn choose(&self, token: Option<&str>) -> Target {
        if let Some(token) = token {
            return self.past(token).await;
        }
        let seen = self.seen.borrow();
        let fresh: Vec<usize> = (seen.standbys.iter().enumerate())
            .filter(|(_, standby)| standby.is_some_and(|(_, lag)| lag <= self.max_lag))
            .map(|(n, _)| n)
            .collect();
        match fresh.len() {
            0 => Target::Primary,
            len => Target::Standby(fresh[self.next.fetch_add(1, Ordering::Relaxed) % len]),
        }
    }

    /// A standby that has replayed past `token`, waiting at most [`TOKEN_WAIT`] for one;
    /// the primary for a token that cannot be honoured.
    async fn past(&self, token: &str) -> Target {
        let Some(lsn) = self.honoured(token).await else { return Target::Primary };
        let replayed = |seen: &Seen| {
            let past = |standby: &Option<(u64, Duration)>| standby.is_some_and(|(at, _)| at >= lsn);
            seen.standbys.iter().position(past)
        };
        if let Some(n) = replayed(&self.seen.borrow()) {
            return Target::Standby(n);
        }
        self.waited.inc();
        let mut seen = self.seen.clone();
        let wait = seen.wait_for(|seen| replayed(seen).is_some());
        match tokio::time::timeout(TOKEN_WAIT, wait).await {
            Ok(Ok(seen)) => replayed(&seen).map_or(Target::Primary, Target::Standby),
            _ => Target::Primary,
        }
    }

    /// The position `token` names, when it is one of this database's, on the primary's
    /// timeline, and not ahead of the primary: else `None` (then the primary serves it). A
    /// write made since the last probe is ahead of what it saw: the primary is asked once.
    async fn honoured(&self, token: &str) -> Option<u64> {
        let primary = self.seen.borrow().primary?;
        let fields = token.split('-').map(|field| u64::from_str_radix(field, 16).ok());
        let fields: Vec<u64> = fields.collect::<Option<_>>()?;
        let [system, timeline, lsn] = fields[..] else { return None };
        if system != primary.system || timeline != primary.timeline {
            return None;
        }
        let known = (self.known.load(Ordering::Relaxed).max(primary.lsn))
            .max(self.primary.written().unwrap_or(0));
        if lsn <= known {
            return Some(lsn);
        }
        let insert = async |conn: &Conn| Ok(sql::insert_position(conn).await);
        let now = look(&self.primary, TOKEN_WAIT, insert).await.flatten()?;
        self.known.fetch_max(now, Ordering::Relaxed);
        (lsn <= now).then_some(lsn)
    }

    /// The token of a write the primary committed at or before `lsn`.
    pub fn token(&self, lsn: u64) -> Option<String> {
        let primary = self.seen.borrow().primary?;
        Some(format!("{:x}-{:x}-{lsn:x}", primary.system, primary.timeline))
    }

    /// Registers `db_reads{target}`, `db_reads_waited` and `db_standby_lag_seconds{standby}`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let reads = "Reads of tasks, by the database that answered them";
        registry.register("db_reads", reads, self.reads.clone());
        let waited = "Reads with a consistency token that waited for a standby to replay past it";
        registry.register("db_reads_waited", waited, self.waited.clone());
        let lag = "How far behind the primary each standby was at the last probe (NaN: down)";
        registry.register("db_standby_lag_seconds", lag, self.lag.clone());
    }

    /// Stops the probe.
    pub fn stop(&self) {
        self.probe.abort();
    }
}

/// The probe: every [`PROBE_EVERY`], the primary's system, timeline and position, then each
/// standby's replayed one. A standby's lag is how long ago the primary was last seen at or
/// before it, so a standby with nothing to replay is never behind.
async fn probe(
    primary: Arc<Pool>,
    standbys: Vec<Arc<Pool>>,
    gauges: Vec<Lag>,
    max_lag: Duration,
    tell: watch::Sender<Seen>,
) {
    let mut history: VecDeque<(u64, Instant)> = VecDeque::new();
    let keep =
        (max_lag + Duration::from_secs(2)).max(HISTORY).as_millis() / PROBE_EVERY.as_millis();
    loop {
        let at = look(&primary, PROBE_BUDGET, sql::primary_position).await.flatten();
        let seen_primary = at.map(|(system, timeline, lsn)| Primary { system, timeline, lsn });
        if let Some(now) = seen_primary
            && history.back().is_none_or(|(lsn, _)| *lsn != now.lsn)
        {
            history.push_back((now.lsn, Instant::now()));
            history.drain(..history.len().saturating_sub(keep as usize));
        }
        let mut seen = Seen { primary: seen_primary, standbys: Vec::with_capacity(standbys.len()) };
        for (pool, gauge) in standbys.iter().zip(&gauges) {
            let replay = look(pool, PROBE_BUDGET, sql::standby_position).await.flatten();
            let standby = replay.zip(seen_primary).and_then(|((system, replayed), primary)| {
                // Behind all the history holds: at least as far behind as its oldest entry.
                let full = history.len() == keep as usize;
                let oldest = history.front().filter(|_| full);
                let since = history.iter().rev().find(|(lsn, _)| *lsn <= replayed).or(oldest)?.1;
                let caught_up = replayed >= primary.lsn;
                (system == primary.system)
                    .then(|| (replayed, if caught_up { Duration::ZERO } else { since.elapsed() }))
            });
            gauge.set(standby.map_or(f64::NAN, |(_, lag)| lag.as_secs_f64()));
            seen.standbys.push(standby);
        }
        tell.send_replace(seen);
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// One look through `pool`, within `budget`; `None` when it fails.
async fn look<T>(
    pool: &Pool,
    budget: Duration,
    work: impl AsyncFnOnce(&Conn) -> Result<T, tokio_postgres::Error> + Clone,
) -> Option<T> {
    let deadline = Deadline::after(budget);
    pool.run(sql::SHOW, deadline, Effect::Reads, work).await.ok()
}
