//! The [`Pruner`]: lets go of Idempotency-Keys past their TTL, now and then, for as long as
//! the store lives. What keys answer is idempotency.rs's business.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::StoreError;
use super::pool::{Deadline, Effect, Pool};
use super::sql::keys as sql;
use super::sql::{Conn, DELETE_KEYS, SELECT_TASKS, UPDATE_TASKS};

/// Keys pruned by one statement: short, so the rows it locks are few and brief.
const PRUNE_BATCH: i64 = 1000;
/// Tasks the pruner's walk looks at per statement, by id.
const PRUNE_SPAN: i64 = 10_000;
/// The pruner's pause between rounds, at most; less with a short TTL.
const PRUNE_EVERY: Duration = Duration::from_secs(300);
/// How long a stopping pruner may take to finish its statement.
const PRUNE_STOP: Duration = Duration::from_secs(6);

/// Lets go of expired keys now and then until stopped (or dropped), a few at a time and
/// skipping any a request holds, so no request waits on it. Tasks' keys are found by a walk
/// in id order, which is time order, from where the last round stopped: no index every keyed
/// create would have to keep (sql/V4). Deleted tasks' keys go by their time. Each round ends
/// by counting the keys held (`idempotency_keys_held`).
pub struct Pruner {
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Pruner {
    /// Starts pruning keys older than `ttl`, counting those held into `held`.
    pub fn start(pool: Arc<Pool>, ttl: Duration, held: Gauge) -> Pruner {
        let (stop, mut stopped) = watch::channel(false);
        let pause = (ttl / 2).clamp(Duration::from_secs(1), PRUNE_EVERY);
        let ttl_secs = ttl.as_secs_f64();
        let task = tokio::spawn(async move {
            let mut walk = None;
            loop {
                tokio::select! {
                    _ = stopped.changed() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                let pruned = async {
                    let released = release_expired(&pool, ttl_secs, &mut walk, &stopped).await?;
                    Ok::<_, StoreError>(released + prune_kept(&pool, ttl_secs).await?)
                };
                match pruned.await {
                    Ok(0) => {}
                    Ok(pruned) => log::info!("pruned {pruned} expired idempotency keys"),
                    Err(err) => log::warn!("could not prune expired idempotency keys: {err}"),
                }
                let due = Deadline::start();
                let count = pool.run(SELECT_TASKS, due, Effect::Reads, sql::count_keys).await;
                match count.map_err(StoreError::from) {
                    Ok(count) => drop(held.set(count)),
                    Err(err) => log::warn!("could not count idempotency keys: {err}"),
                }
            }
        });
        Pruner { stop, task: Mutex::new(Some(task)) }
    }

    /// Stops pruning: between rounds at once, or once the statement running ends.
    pub async fn stop(&self) {
        self.stop.send_replace(true);
        let task = self.task.lock().expect("never poisoned: no panics under it").take();
        if let Some(task) = task
            && tokio::time::timeout(PRUNE_STOP, task).await.is_err()
        {
            log::warn!("the idempotency key pruner did not stop within {PRUNE_STOP:?}");
        }
    }
}

impl Drop for Pruner {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// Walks the tasks from `walk` (at first, the first keyed task) to the first within the TTL,
/// letting go of expired keys: how many. A task a request held stops the walk there, so
/// the next round looks at it again.
async fn release_expired(
    pool: &Pool,
    ttl_secs: f64,
    walk: &mut Option<i64>,
    stopped: &watch::Receiver<bool>,
) -> Result<u64, StoreError> {
    if walk.is_none() {
        *walk = pool.run(SELECT_TASKS, Deadline::start(), Effect::Reads, sql::first_keyed).await?;
    }
    let Some(mut from) = *walk else {
        return Ok(0);
    };
    let mut released = 0;
    while !*stopped.borrow() {
        // Where the next round starts, should this one fail from here on.
        *walk = Some(from);
        let step = async |conn: &Conn| {
            sql::release_expired(conn, ttl_secs, from, PRUNE_SPAN, PRUNE_BATCH).await
        };
        let walked = pool.run(UPDATE_TASKS, Deadline::start(), Effect::Writes, step).await?;
        released += walked.released;
        match walked.fresh.into_iter().chain(walked.left).min() {
            // Keys past the batch's limit before the first task within the TTL.
            Some(left) if walked.left == Some(left) && walked.released > 0 => from = left,
            Some(stop) => {
                from = stop;
                break;
            }
            None => match walked.last {
                Some(last) if last >= from + PRUNE_SPAN => from += PRUNE_SPAN,
                last => {
                    from = from.max(last.map_or(from, |last| last + 1));
                    break;
                }
            },
        }
    }
    *walk = Some(from);
    Ok(released)
}

/// Deletes the expired keys of deleted tasks: how many.
async fn prune_kept(pool: &Pool, ttl_secs: f64) -> Result<u64, StoreError> {
    let mut pruned = 0;
    loop {
        let step = async |conn: &Conn| sql::prune_kept_keys(conn, ttl_secs, PRUNE_BATCH).await;
        let count = pool.run(DELETE_KEYS, Deadline::start(), Effect::Writes, step).await?;
        pruned += count;
        if count < PRUNE_BATCH as u64 {
            return Ok(pruned);
        }
    }
}
