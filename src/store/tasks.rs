//! What each [`Batcher`] of the task resource runs, as one statement: gets, page chunks, creates
//! (keyed: idempotency.rs), checked changes. A batch refused for one row runs again one by one.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;

use super::batcher::{Abandoned, Batcher};
use super::error::{self, message};
use super::idempotency;
use super::pool::{Deadline, Effect, Failure, Pool};
use super::sql::tasks::{self as sql, Kind, Read};
use super::sql::{Conn, INSERT_TASKS, SELECT_TASKS};
use super::{ById, CHUNK_ROWS, Change, Creation, NewCreate, StoreError};
use crate::tasks::Task;

/// Most chunks one list statement reads: [`CHUNK_ROWS`] each, 256 rows, as a pool of 8 read singly.
const MOST_CHUNKS: usize = 256 / CHUNK_ROWS as usize;

type Answers<T> = Vec<Result<T, StoreError>>;

/// The batched reads of one server, the primary or a standby.
pub struct Reads {
    pub pool: Arc<Pool>,
    pub finder: Batcher<i64, Option<Task>>,
    pub lister: Batcher<Read, Vec<Task>>,
    pub status_lister: Batcher<Read, Vec<Task>>,
}

/// The batched lookup behind `Store::get`; a row that cannot be decoded fails its own id only.
pub fn finder(pool: Arc<Pool>, lanes: usize, sizes: Histogram) -> Batcher<i64, Option<Task>> {
    Batcher::new(lanes, move |ids: Vec<i64>, deadline| {
        sizes.observe(ids.len() as f64);
        let pool = pool.clone();
        async move {
            let find = async |conn: &Conn| sql::find_many(conn, &ids).await;
            match pool.run(SELECT_TASKS, deadline, Effect::Reads, find).await {
                Ok(rows) => {
                    let found: HashMap<i64, Result<Task, StoreError>> =
                        rows.into_iter().map(|(id, task)| (id, task.map_err(Into::into))).collect();
                    ids.iter().map(|id| found.get(id).cloned().transpose()).collect()
                }
                Err(failure) => vec![Err(failure.into()); ids.len()],
            }
        }
    })
}

/// The batched read of page chunks behind `Store::list`: every read queued now, all with a
/// status or all without (a lister of each), by one statement.
pub fn lister(pool: Arc<Pool>, lanes: usize, sizes: Histogram) -> Batcher<Read, Vec<Task>> {
    Batcher::start(lanes, MOST_CHUNKS, Abandoned::Drop, move |reads: Vec<Read>, deadline| {
        sizes.observe(reads.len() as f64);
        let pool = pool.clone();
        async move {
            let list = async |conn: &Conn| sql::list_many(conn, &reads).await;
            match pool.run(SELECT_TASKS, deadline, Effect::Reads, list).await {
                Ok(pages) => pages.into_iter().map(Ok).collect(),
                Err(failure) => vec![Err(StoreError::from(failure)); reads.len()],
            }
        }
    })
}

/// The batched insert behind `Store::create`, so one commit for every create queued: the
/// plain insert, or the keyed one (idempotency.rs) for a batch with any key.
pub fn creator(
    pool: Arc<Pool>,
    lanes: usize,
    sizes: Histogram,
    key_ttl: Duration,
) -> Batcher<NewCreate, Creation> {
    Batcher::new(lanes, move |creates: Vec<NewCreate>, deadline| {
        sizes.observe(creates.len() as f64);
        let pool = pool.clone();
        async move {
            let (pool, all) = (&*pool, &creates);
            let insert = move |at: Range<usize>| async move {
                let creates = &all[at];
                if creates.iter().any(|c| c.claim.is_some()) {
                    return idempotency::create(pool, deadline, key_ttl, creates).await;
                }
                let insert = async |conn: &Conn| sql::insert_many(conn, creates).await;
                let tasks = pool.run(INSERT_TASKS, deadline, Effect::Writes, insert).await?;
                Ok(answer_in_order(creates, tasks))
            };
            one_by_one_if_refused(creates.len(), insert).await
        }
    })
}

/// Each input's row, from an insert's rows in id order, which is input order. Checked in
/// every build: rows out of order are matched by content; an input none matches fails.
fn answer_in_order(creates: &[NewCreate], mut tasks: Vec<Task>) -> Answers<Creation> {
    let holds = |task: &Task, create: &NewCreate| {
        let new = &create.task;
        task.title == new.title && task.description == new.description && task.status == new.status
    };
    if tasks.len() == creates.len() && tasks.iter().zip(creates).all(|(t, c)| holds(t, c)) {
        return tasks.into_iter().map(|t| Ok(Creation::Created(t))).collect();
    }
    let (sent, got) = (creates.len(), tasks.len());
    log::error!(
        "an insert of {sent} rows returned {got} that are not in input order; matching them by content"
    );
    creates
        .iter()
        .map(|create| match tasks.iter().position(|task| holds(task, create)) {
            Some(at) => Ok(Creation::Created(tasks.swap_remove(at))),
            None => Err(StoreError::Internal(message("an insert returned no row for this input"))),
        })
        .collect()
}

/// Runs `batch` on all `inputs`; if the database refuses it for what some row holds, nothing
/// was written, and each input goes alone, so only that one fails.
async fn one_by_one_if_refused<T: Clone, F: Future<Output = Result<Answers<T>, Failure>>>(
    inputs: usize,
    batch: impl Fn(Range<usize>) -> F,
) -> Answers<T> {
    match batch(0..inputs).await {
        Ok(answers) => answers,
        Err(Failure::Statement(err)) if inputs > 1 && error::is_row_refusal(&err) => {
            let err = StoreError::from(err);
            log::warn!("{inputs} requests refused as one statement ({err}); one by one");
            let mut answers = Vec::with_capacity(inputs);
            for at in 0..inputs {
                answers.push(match batch(at..at + 1).await {
                    Ok(mut answer) => answer.pop().expect("one answer for one input"),
                    Err(failure) => Err(failure.into()),
                });
            }
            answers
        }
        Err(failure) => vec![Err(failure.into()); inputs],
    }
}

/// The batcher of one kind of change. Changes to one task in a batch act as if sent in turn:
/// the first goes in the shared statement, the others after it, alone, on its connection.
pub fn changer<K: Kind>(
    pool: Arc<Pool>,
    lanes: usize,
    sizes: Histogram,
) -> Batcher<ById<K>, Change<K::Done>> {
    Batcher::new(lanes, move |changes: Vec<ById<K>>, deadline| {
        sizes.observe(changes.len() as f64);
        let pool = pool.clone();
        async move {
            let (pool, all) = (&*pool, &changes);
            let together = move |at: Range<usize>| together(pool, deadline, &all[at]);
            one_by_one_if_refused(changes.len(), together).await
        }
    })
}

async fn together<K: Kind>(
    pool: &Pool,
    deadline: Deadline,
    changes: &[ById<K>],
) -> Result<Answers<Change<K::Done>>, Failure> {
    let mut seen = HashSet::with_capacity(changes.len());
    let first: Vec<bool> = changes.iter().map(|change| seen.insert(change.id)).collect();
    let shared: Vec<_> =
        changes.iter().zip(&first).filter_map(|(c, &first)| first.then_some(c)).collect();
    let work = async |conn: &Conn| {
        let mut done = K::run(conn, &shared).await?;
        let mut answers: Answers<Change<K::Done>> = Vec::with_capacity(changes.len());
        for (change, first) in changes.iter().zip(&first) {
            let judge =
                |mut done: HashMap<i64, K::Done>| change.expected.judge(done.remove(&change.id));
            answers.push(match first {
                true => Ok(change.expected.judge(done.remove(&change.id))),
                // The shared statement is done: this one's failure is its own.
                false => K::run(conn, &[change]).await.map(judge).map_err(StoreError::from),
            });
        }
        Ok(answers)
    };
    pool.run(K::STATEMENT, deadline, Effect::Writes, work).await
}
