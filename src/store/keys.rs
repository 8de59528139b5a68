//! Idempotency keys of `POST /tasks`: a batch of keyed creates as one statement that
//! stores each task with its key (sql.rs), the replay of what a key answered before,
//! and the pruning of expired keys. What a key looks like on the wire is http's
//! business.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use deadpool_postgres::Client;
use prometheus_client::metrics::gauge::Gauge;

use super::budget::{self, Db, Deadline, Effect, Failure};
use super::sql::{self, HeldKey, Keyed};
use super::{Creation, NewCreate, StoreError, outcome, statement};
use crate::observe::traces::Statement;
use crate::tasks::Task;

/// Keys pruned by one statement: short, so the rows it locks are few and brief.
const PRUNE_BATCH: i64 = 1000;
/// Tasks the pruner's walk looks at per statement, by id.
const PRUNE_SPAN: i64 = 10_000;
/// The pruner's pause between rounds, at most; less with a short TTL.
const PRUNE_EVERY: Duration = Duration::from_secs(300);

/// The pause before a keyed insert whose connection was lost is asked again once more.
const ASK_AGAIN_AFTER: Duration = Duration::from_millis(100);

/// How long keyed creates stay careful after a key was found held.
const CAREFUL_FOR: Duration = Duration::from_secs(1);

/// When a key was last found held, in this process: keyed creates expect new keys
/// unless one was found held within [`CAREFUL_FOR`]. Expecting new keys, the insert
/// leaves out `ON CONFLICT`, whose look-up and lock before each row are about a tenth
/// of what a keyed create costs PostgreSQL; a held key then fails it, nothing stored,
/// and it goes again with `ON CONFLICT` (sql.rs). Retries that come often keep the
/// creates careful, so few statements are sent twice.
struct HeldKeys {
    /// Milliseconds from `epoch` to when a key was last found held, plus one (0: never).
    at: AtomicU64,
    epoch: LazyLock<Instant>,
}

static HELD_KEYS: HeldKeys = HeldKeys {
    at: AtomicU64::new(0),
    epoch: LazyLock::new(Instant::now),
};

impl HeldKeys {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn seen(&self) {
        self.at.store(self.now(), Ordering::Relaxed);
    }

    fn seen_lately(&self) -> bool {
        let at = self.at.load(Ordering::Relaxed);
        at != 0 && self.now().saturating_sub(at) < CAREFUL_FOR.as_millis() as u64
    }
}

/// An Idempotency-Key, and the fingerprint of the create it came with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The key, 1 to 255 printable ASCII characters.
    pub key: String,
    /// A digest of the create's canonical JSON: what is stored with the key.
    pub fingerprint: Vec<u8>,
    /// A digest of the body as written, when it differs: what 02cade1 stored for the
    /// same request, also a match.
    pub as_written: Option<Vec<u8>>,
}

impl Claim {
    /// Whether `stored`, a fingerprint kept with this key, is of the same request.
    fn matches(&self, stored: &[u8]) -> bool {
        self.fingerprint == stored || self.as_written.as_deref() == Some(stored)
    }
}

/// An answer per create (`None`: no row came back for it).
pub type KeyedAnswers = Vec<Option<Result<Creation, StoreError>>>;

/// Runs a batch of creates of which some carry keys, within `deadline`: one statement
/// in the common case, answers in input order. A key given twice in the batch is
/// claimed by its first create; a key held already is replayed (or refused, for
/// another body) from what it answered. A key a task held past its TTL is let go, and
/// its create inserted once more.
pub async fn create(
    db: &Db,
    deadline: Deadline,
    ttl: Duration,
    creates: &[NewCreate],
) -> Result<KeyedAnswers, Failure> {
    // Within the batch, the first create of each key goes to the database; the others
    // take its answer.
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    let mut sent = Vec::with_capacity(creates.len());
    for (at, create) in creates.iter().enumerate() {
        match &create.claim {
            Some(claim) if first_of.contains_key(claim.key.as_str()) => {}
            Some(claim) => {
                first_of.insert(&claim.key, at);
                sent.push(at);
            }
            None => sent.push(at),
        }
    }
    let mut answers: Vec<Option<Result<Creation, StoreError>>> = vec![None; creates.len()];
    let mut releasing = false;
    // Set once the connection went with a keyed insert: until the database is asked
    // again and answers, nobody knows whether those creates were stored.
    let mut lost: Option<StoreError> = None;
    loop {
        let round = async |client: &Client| {
            attempt(client, deadline, ttl, creates, &sent, &first_of, !releasing).await
        };
        let failure = match db
            .run(statement::INSERT_TASKS, deadline, Effect::Writes, round)
            .await
        {
            Ok((round, released)) => {
                for (at, answer) in round {
                    answers[at] = Some(answer);
                }
                if released.is_empty() || releasing {
                    break;
                }
                // Keys let go past their TTL: those creates once more.
                releasing = true;
                sent = released;
                lost = None;
                continue;
            }
            Err(failure) => failure,
        };
        let connection_lost =
            matches!(&failure, Failure::Statement(err) if outcome::is_connection_lost(err));
        match lost.as_ref() {
            // The connection went with the statement: stored or not, only the keys can
            // tell. A keyed create is safe to send again, and then gets what the database
            // holds (its own task, replayed, if the first one was stored); one without a
            // key is not, and fails as before.
            None if connection_lost => {
                let err = StoreError::from(failure);
                sent.retain(|&at| {
                    let keyed = creates[at].claim.is_some();
                    if !keyed {
                        answers[at] = Some(Err(err.clone()));
                    }
                    keyed
                });
                log::warn!(
                    "the connection was lost with a keyed insert ({err}); asking again for {} keys",
                    sent.len()
                );
                lost = Some(err);
            }
            None if !releasing => return Err(failure),
            // Asked again, and no answer yet (no connection, or lost once more): wait a
            // little, and ask again.
            Some(_) if could_not_ask(&failure) => tokio::time::sleep(ASK_AGAIN_AFTER).await,
            // A later round's failure fails only the creates it was for: the database
            // said no to them, so the first round could not have stored them either; or
            // the keys were let go, and the database could not be asked to insert them.
            _ => {
                let err = StoreError::from(failure);
                for &at in &sent {
                    answers[at] = Some(Err(err.clone()));
                }
                break;
            }
        }
        if sent.is_empty() {
            break;
        }
        if let Some(err) = &lost
            && !deadline.has_time()
        {
            // Out of time before the truth came back: its outcome stays unknown, and
            // it is answered so (no answer), never as an error.
            let unknown = StoreError::unknown(format!(
                "the connection was lost with a keyed insert ({err}), and the database could not be asked again in time"
            ));
            for &at in &sent {
                answers[at] = Some(Err(unknown.clone()));
            }
            break;
        }
    }
    Ok(creates
        .iter()
        .enumerate()
        .map(|(at, create)| {
            let first = match &create.claim {
                Some(claim) => first_of[claim.key.as_str()],
                None => at,
            };
            let answer = answers[first].clone()?;
            Some(match answer {
                // A second create with its batch-mate's key.
                Ok(Creation::Created(task) | Creation::Replayed(task)) if first != at => {
                    Ok(same_body(create, &creates[first], &task))
                }
                other => other,
            })
        })
        .collect())
}

/// Whether `failure` says nothing of the statement's fate in the database: no
/// connection, no time, shed, or no verdict (again).
fn could_not_ask(failure: &Failure) -> bool {
    match failure {
        Failure::Statement(err) => outcome::is_connection_lost(err) || outcome::is_unavailable(err),
        Failure::Other(err) => matches!(
            err,
            StoreError::Unavailable(_) | StoreError::Busy | StoreError::Unknown(_)
        ),
    }
}

/// The creates at `sent` (no key twice) inserted by one statement: an answer for each
/// stored or replayed; and, if `release`, those whose keys tasks held past their TTL
/// and that were let go, to be inserted again.
async fn attempt(
    client: &Client,
    deadline: Deadline,
    ttl: Duration,
    creates: &[NewCreate],
    sent: &[usize],
    first_of: &HashMap<&str, usize>,
    release: bool,
) -> Result<(Vec<(usize, Result<Creation, StoreError>)>, Vec<usize>), tokio_postgres::Error> {
    let ttl_secs = ttl.as_secs_f64();
    let inputs: Vec<Keyed> = sent
        .iter()
        .map(|&at| Keyed {
            task: &creates[at].task,
            claim: creates[at]
                .claim
                .as_ref()
                .map(|c| (c.key.as_str(), c.fingerprint.as_slice())),
        })
        .collect();
    let stored = match HELD_KEYS.seen_lately() {
        true => sql::insert_keyed(client, &inputs, ttl_secs, true).await?,
        false => match sql::insert_keyed(client, &inputs, ttl_secs, false).await {
            Err(err) if outcome::is_key_held(&err) => {
                log::debug!("a key of the batch was held; inserting it again, skipping held keys");
                HELD_KEYS.seen();
                sql::insert_keyed(client, &inputs, ttl_secs, true).await?
            }
            stored => stored?,
        },
    };
    let mut answers = Vec::with_capacity(sent.len());
    let mut answered = vec![false; creates.len()];
    for (n, task) in stored {
        match usize::try_from(n - 1).ok().and_then(|i| sent.get(i)) {
            Some(&at) => {
                answered[at] = true;
                answers.push((at, Ok(Creation::Created(task))));
            }
            None => log::error!("a keyed insert returned row {n} of {}", sent.len()),
        }
    }
    // Keys held before this statement: what did they answer?
    let held: Vec<&str> = sent
        .iter()
        .filter(|&&at| !answered[at])
        .filter_map(|&at| creates[at].claim.as_ref().map(|c| c.key.as_str()))
        .collect();
    if held.is_empty() {
        return Ok((answers, Vec::new()));
    }
    HELD_KEYS.seen();
    let lookup = sql::find_keys(client, &held, ttl_secs);
    match budget::limited(client, deadline, lookup).await {
        Ok(found) => {
            for found in found {
                let at = first_of[found.key.as_str()];
                answered[at] = true;
                answers.push((at, Ok(replay(&creates[at], found))));
            }
        }
        Err(err) => {
            for at in held.iter().map(|key| first_of[key]) {
                answers.push((at, Err(err.clone())));
            }
            return Ok((answers, Vec::new()));
        }
    }
    // Held, but by nobody within the TTL: by a task past it, which lets go of it now.
    let expired: Vec<&str> = held
        .into_iter()
        .filter(|key| !answered[first_of[key]])
        .collect();
    if !release || expired.is_empty() {
        return Ok((answers, Vec::new()));
    }
    let release = sql::release_keys(client, &expired, ttl_secs);
    match budget::limited(client, deadline, release).await {
        Ok(_) => Ok((answers, expired.iter().map(|key| first_of[key]).collect())),
        Err(err) => {
            for at in expired.iter().map(|key| first_of[key]) {
                answers.push((at, Err(err.clone())));
            }
            Ok((answers, Vec::new()))
        }
    }
}

/// A create whose key was held: the task it answered, if the body is the same. Then
/// this create's task is that one's (the task follows from the body, and the bodies
/// are the same), so the answer is rebuilt from it, the id and the time: as it was,
/// whatever happened to the task since.
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

/// A create that came in the same batch as `first`, with its key: `first`'s task if
/// the bodies are the same.
fn same_body(create: &NewCreate, first: &NewCreate, task: &Task) -> Creation {
    match (&create.claim, &first.claim) {
        (Some(mine), Some(theirs)) if mine.matches(&theirs.fingerprint) => {
            Creation::Replayed(task.clone())
        }
        _ => Creation::KeyReused,
    }
}

/// Lets go of expired keys now and then, for as long as the store lives: a few at a
/// time, skipping any a request holds, so no request waits on the pruner. Keys held by
/// tasks are found by a walk over the tasks in id order, which is the order of their
/// times: each round goes on from the first task that was still within the TTL at the
/// last one, so it reads only the tasks created since, not an index every keyed
/// create would have to keep (sql/V4). Keys of deleted tasks are deleted by their time.
/// After each round, `held` is set to how many keys the database holds (tasks' and
/// deleted tasks'): what keys cost in storage is about proportional to it.
pub fn prune_expired(db: Arc<Db>, ttl: Duration, held: Gauge) {
    let pause = (ttl / 2).clamp(Duration::from_secs(1), PRUNE_EVERY);
    let ttl_secs = ttl.as_secs_f64();
    tokio::spawn(async move {
        let mut walk = None;
        loop {
            tokio::time::sleep(pause).await;
            let pruned = match release_expired(&db, ttl_secs, &mut walk).await {
                Ok(released) => prune_kept(&db, ttl_secs).await.map(|kept| released + kept),
                Err(err) => Err(err),
            };
            match pruned {
                Ok(0) => {}
                Ok(pruned) => log::info!("pruned {pruned} expired idempotency keys"),
                Err(err) => log::warn!("could not prune expired idempotency keys: {err}"),
            }
            let count = prune_step(&db, statement::SELECT_TASKS, Effect::Reads, sql::count_keys);
            match count.await {
                Ok(count) => {
                    held.set(count);
                }
                Err(err) => log::warn!("could not count idempotency keys: {err}"),
            }
        }
    });
}

/// One statement of the pruner, within the store's usual budget.
async fn prune_step<T>(
    db: &Db,
    name: Statement,
    effect: Effect,
    step: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
) -> Result<T, StoreError> {
    Ok(db.run(name, Deadline::start(), effect, step).await?)
}

/// Walks the tasks from `walk` (first, from the first task that holds a key) to the
/// first one within the TTL, letting go of the expired keys on the way: how many. A
/// task skipped because a request held it stops the walk there, so the next round
/// looks at it again.
async fn release_expired(
    db: &Db,
    ttl_secs: f64,
    walk: &mut Option<i64>,
) -> Result<u64, StoreError> {
    let mut from = match *walk {
        Some(from) => from,
        None => {
            match prune_step(db, statement::SELECT_TASKS, Effect::Reads, sql::first_keyed).await? {
                Some(first) => first,
                None => return Ok(0),
            }
        }
    };
    let mut released = 0;
    loop {
        // Where the next round starts, should this one fail from here on.
        *walk = Some(from);
        let step = async |client: &Client| {
            sql::release_expired(client, ttl_secs, from, PRUNE_SPAN, PRUNE_BATCH).await
        };
        let walked = prune_step(db, statement::UPDATE_TASKS, Effect::Writes, step).await?;
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
async fn prune_kept(db: &Db, ttl_secs: f64) -> Result<u64, StoreError> {
    let mut pruned = 0;
    loop {
        let step =
            async |client: &Client| sql::prune_kept_keys(client, ttl_secs, PRUNE_BATCH).await;
        let count = prune_step(db, statement::DELETE_KEYS, Effect::Writes, step).await?;
        pruned += count;
        if count < PRUNE_BATCH as u64 {
            return Ok(pruned);
        }
    }
}
