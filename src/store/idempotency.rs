//! Idempotency keys of `POST /tasks` (the IETF httpapi draft): a batch of creates with keys
//! as one statement that stores each task with its key (sql/V3), the replay of what a key
//! answered before, and asking again when the connection went with the insert. Pruning
//! expired keys is pruner.rs's business; what a key looks like on the wire, http's.

use std::collections::HashMap;
use std::time::Duration;

use super::error::{self, message};
use super::pool::{Deadline, Effect, Failure, Pool};
use super::sql::keys::{self as sql, HeldKey};
use super::sql::{Conn, INSERT_TASKS};
use super::{Creation, NewCreate, StoreError};
use crate::tasks::Task;

/// The pause before a keyed insert whose connection was lost is asked again once more.
const ASK_AGAIN_AFTER: Duration = Duration::from_millis(100);

/// An Idempotency-Key (1 to 255 printable ASCII characters), and the fingerprint of the
/// create it came with: a digest of its canonical JSON, what is stored with the key; and when
/// it differs, of the body as written, what the release before stored, also a match.
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
    // Set once the connection went with a keyed insert: until the database is asked
    // again and answers, nobody knows whether those creates were stored.
    let mut lost: Option<StoreError> = None;
    loop {
        let round =
            async |conn: &Conn| attempt(conn, ttl, creates, &sent, &first_of, !releasing).await;
        let failure = match pool.run(INSERT_TASKS, deadline, Effect::Writes, round).await {
            Ok((round, released)) => {
                for (at, answer) in round {
                    answers[at] = Some(answer);
                }
                if released.is_empty() {
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
            matches!(&failure, Failure::Statement(err) if error::is_connection_lost(err));
        match lost.as_ref() {
            // The connection went with the statement: stored or not, only the keys can
            // tell. A keyed create is safe to send again, and then gets what the database
            // holds (its own task, replayed, if the first one was stored); one without a
            // key is not, and fails as before.
            None if connection_lost => {
                let err = StoreError::from(failure);
                for &at in sent.iter().filter(|&&at| creates[at].claim.is_none()) {
                    answers[at] = Some(Err(err.clone()));
                }
                sent.retain(|&at| creates[at].claim.is_some());
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
            let unknown = StoreError::Unknown(message(format!(
                "the connection was lost with a keyed insert ({err}), and the database could not be asked again in time"
            )));
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
        })
        .collect())
}

/// Whether `failure` says nothing of the statement's fate: no connection, no time, shed, or
/// no verdict (again).
fn could_not_ask(failure: &Failure) -> bool {
    match failure {
        Failure::Statement(err) => error::is_connection_lost(err) || error::is_unavailable(err),
        Failure::Other(err) => {
            matches!(err, StoreError::Unavailable(_) | StoreError::Busy | StoreError::Unknown(_))
        }
    }
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
    // Keys held before this statement: what did they answer? The inserts above are
    // done, so a failure from here on is these creates' own (those of `asked`).
    let mut asked: Vec<&str> = sent
        .iter()
        .filter(|&&at| !answered[at])
        .filter_map(|&at| creates[at].claim.as_ref().map(|c| c.key.as_str()))
        .collect();
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
