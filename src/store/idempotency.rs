//! Idempotency keys of `POST /tasks` (the IETF httpapi draft): creates with keys as one statement
//! storing each task with its key (sql/V3), the replay of what a key answered, asking again when
//! the connection went with the insert, and the [`Pruner`] of expired keys. The wire is http's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::error::{self, message};
use super::pool::{Deadline, Effect, Failure, Pool};
use super::sql::keys::{self as sql, HeldKey};
use super::sql::{Conn, DELETE_KEYS, INSERT_TASKS, SELECT_TASKS, UPDATE_TASKS};
use super::{Creation, NewCreate, StoreError};
use crate::tasks::Task;

/// The pause before a keyed insert whose connection was lost is asked again once more.
const ASK_AGAIN_AFTER: Duration = Duration::from_millis(100);

/// An Idempotency-Key (1 to 255 printable ASCII characters) and its create's fingerprint: a digest
/// of its canonical JSON (stored), and of the body as written (the release before stored it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub key: String,
    pub fingerprint: Vec<u8>,
    pub as_written: Option<Vec<u8>>,
}

impl Claim {
    /// Whether `stored`, a fingerprint kept with this key, is of the same request.
    fn matches(&self, stored: &[u8]) -> bool {
        self.fingerprint == stored || self.as_written.as_deref() == Some(stored)
    }
}

/// Runs a batch of creates, some with keys, by `deadline`: one statement in the common case.
/// A key twice in the batch goes with its first create; a key held is replayed (or refused,
/// for another body); one held past its TTL is let go, and its create inserted once more.
pub async fn create(
    pool: &Pool,
    deadline: Deadline,
    ttl: Duration,
    creates: &[NewCreate],
) -> Result<Vec<Result<Creation, StoreError>>, Failure> {
    // The first create of each key goes to the database; the others take its answer.
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    let mut sent = Vec::with_capacity(creates.len());
    for (at, create) in creates.iter().enumerate() {
        if create.claim.as_ref().is_none_or(|c| *first_of.entry(&c.key).or_insert(at) == at) {
            sent.push(at);
        }
    }
    let mut answers: Vec<Option<Result<Creation, StoreError>>> = vec![None; creates.len()];
    let mut releasing = false;
    // Set once the connection went with a keyed insert: whether it stored them is unknown.
    let mut lost: Option<StoreError> = None;
    loop {
        let round =
            async |conn: &Conn| attempt(conn, ttl, creates, &sent, &first_of, !releasing).await;
        let failure = match pool.run(INSERT_TASKS, deadline, Effect::Writes, round).await {
            Ok((round, released)) => {
                round.into_iter().for_each(|(at, answer)| answers[at] = Some(answer));
                if released.is_empty() {
                    break;
                }
                // Keys let go past their TTL: those creates once more.
                (releasing, sent, lost) = (true, released, None);
                continue;
            }
            Err(failure) => failure,
        };
        let connection_lost =
            matches!(&failure, Failure::Statement(err) if error::is_connection_lost(err));
        if lost.is_none() && !connection_lost && !releasing {
            return Err(failure);
        }
        // No connection, time or verdict, or shed: the statement's fate is still unknown.
        let err = StoreError::from(failure);
        let unanswered =
            matches!(err, StoreError::Unavailable(_) | StoreError::Busy | StoreError::Unknown(_));
        match lost.as_ref() {
            // Stored or not, only the keys can tell: a keyed create is safe to send again (and
            // gets its own task replayed if it was stored); one without a key is not, and fails.
            None if connection_lost => {
                let unkeyed = sent.iter().filter(|&&at| creates[at].claim.is_none());
                unkeyed.for_each(|&at| answers[at] = Some(Err(err.clone())));
                sent.retain(|&at| creates[at].claim.is_some());
                log::warn!(
                    "the connection was lost with a keyed insert ({err}); asking again for {} keys",
                    sent.len()
                );
                lost = Some(err);
            }
            // Asked again, and no answer yet: wait a little, and ask again.
            Some(_) if unanswered => tokio::time::sleep(ASK_AGAIN_AFTER).await,
            // A later round's failure fails only its creates: the database refused them (so the
            // first round stored none), or their keys were let go and they could not be sent.
            _ => {
                sent.iter().for_each(|&at| answers[at] = Some(Err(err.clone())));
                break;
            }
        }
        if sent.is_empty() {
            break;
        }
        if let Some(err) = &lost
            && !deadline.has_time()
        {
            // Out of time before the truth came back: unknown (no answer), never an error.
            let unknown = StoreError::Unknown(message(format!(
                "the connection was lost with a keyed insert ({err}), and the database could not be asked again in time"
            )));
            sent.iter().for_each(|&at| answers[at] = Some(Err(unknown.clone())));
            break;
        }
    }
    let answer = |(at, create): (usize, &NewCreate)| {
        let first = create.claim.as_ref().map_or(at, |claim| first_of[claim.key.as_str()]);
        match answers[first].clone() {
            // A second create with its batch-mate's key.
            Some(Ok(Creation::Created(task) | Creation::Replayed(task))) if first != at => {
                Ok(same_body(create, &creates[first], task))
            }
            Some(answer) => answer,
            // Its key's first use was undone meanwhile: nothing was written.
            None => Err(StoreError::Unavailable(message("the key was released; try again"))),
        }
    };
    Ok(creates.iter().enumerate().map(answer).collect())
}

/// The creates at `sent` (no key twice) inserted by one statement: an answer for each stored
/// or replayed; and, if `release`, those whose expired keys were let go, to insert again.
async fn attempt(
    conn: &Conn,
    ttl: Duration,
    creates: &[NewCreate],
    sent: &[usize],
    first_of: &HashMap<&str, usize>,
    release: bool,
) -> Result<(Vec<(usize, Result<Creation, StoreError>)>, Vec<usize>), tokio_postgres::Error> {
    let ttl_secs = ttl.as_secs_f64();
    let inputs: Vec<&NewCreate> = sent.iter().map(|&at| &creates[at]).collect();
    let mut answers = Vec::with_capacity(sent.len());
    let mut answered = vec![false; creates.len()];
    for (n, task) in sql::insert_keyed(conn, &inputs, ttl_secs).await? {
        match usize::try_from(n - 1).ok().and_then(|i| sent.get(i)) {
            Some(&at) => {
                answered[at] = true;
                answers.push((at, Ok(Creation::Created(task))));
            }
            None => log::error!("a keyed insert returned row {n} of {}", sent.len()),
        }
    }
    // Keys held before this statement: what did they answer? A failure from here on is theirs.
    let held = |&at: &usize| creates[at].claim.as_ref().filter(|_| !answered[at]);
    let mut asked: Vec<&str> = sent.iter().filter_map(held).map(|c| c.key.as_str()).collect();
    let released = async {
        if asked.is_empty() {
            return Ok(Vec::new());
        }
        for found in sql::find_keys(conn, &asked, ttl_secs).await? {
            let at = first_of[found.key.as_str()];
            answered[at] = true;
            answers.push((at, Ok(replay(&creates[at], found))));
        }
        // Held, but by nobody within the TTL: by a task past it, which lets go of it now.
        asked.retain(|key| !answered[first_of[key]]);
        if !release || asked.is_empty() {
            return Ok(Vec::new());
        }
        sql::release_keys(conn, &asked, ttl_secs).await?;
        Ok::<_, tokio_postgres::Error>(asked.iter().map(|key| first_of[key]).collect())
    };
    match released.await {
        Ok(released) => Ok((answers, released)),
        Err(err) => {
            let err = StoreError::from(err);
            answers.extend(asked.iter().map(|key| (first_of[key], Err(err.clone()))));
            Ok((answers, Vec::new()))
        }
    }
}

/// A create whose key was held: the task it answered, if the body is the same, rebuilt from
/// the body, the id and the time as it was then, whatever happened to the task since.
fn replay(create: &NewCreate, held: HeldKey) -> Creation {
    match create.claim.as_ref() {
        Some(claim) if claim.matches(&held.fingerprint) => Creation::Replayed(Task {
            id: held.task_id,
            title: create.task.title.clone(),
            description: create.task.description.clone(),
            status: create.task.status,
            created_at: held.created_at,
            updated_at: held.created_at,
        }),
        _ => Creation::KeyReused,
    }
}

/// A create in the same batch as `first`, with its key: `first`'s task if the bodies match.
fn same_body(create: &NewCreate, first: &NewCreate, task: Task) -> Creation {
    match (&create.claim, &first.claim) {
        (Some(mine), Some(theirs)) if mine.matches(&theirs.fingerprint) => Creation::Replayed(task),
        _ => Creation::KeyReused,
    }
}

/// The pruner's pause between rounds, at most; less with a short TTL.
const PRUNE_EVERY: Duration = Duration::from_secs(300);
/// How long a stopping pruner may take to finish its statement.
const PRUNE_STOP: Duration = Duration::from_secs(6);

/// Lets go of expired keys until stopped (or dropped), a few at a time, skipping any a request
/// holds. Tasks' keys are found by a walk in id (time) order, so no index every keyed create must
/// keep (sql/V4). Each round ends by counting the keys held (`idempotency_keys_held`).
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
/// letting go of expired keys: how many. A task a request held stops the walk there, for later.
async fn release_expired(
    pool: &Pool,
    ttl_secs: f64,
    walk: &mut Option<i64>,
    stopped: &watch::Receiver<bool>,
) -> Result<u64, StoreError> {
    if walk.is_none() {
        *walk = pool.run(SELECT_TASKS, Deadline::start(), Effect::Reads, sql::first_keyed).await?;
    }
    let Some(mut from) = *walk else { return Ok(0) };
    let mut released = 0;
    while !*stopped.borrow() {
        // Where the next round starts, should this one fail from here on.
        *walk = Some(from);
        let step = async |conn: &Conn| sql::release_expired(conn, ttl_secs, from).await;
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
                Some(last) if last >= from + sql::PRUNE_SPAN => from += sql::PRUNE_SPAN,
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
        let step = async |conn: &Conn| sql::prune_kept_keys(conn, ttl_secs).await;
        let count = pool.run(DELETE_KEYS, Deadline::start(), Effect::Writes, step).await?;
        pruned += count;
        if count < sql::PRUNE_BATCH as u64 {
            return Ok(pruned);
        }
    }
}
