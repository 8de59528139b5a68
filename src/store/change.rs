//! `PATCH` and `DELETE` in the store, batched as creates are: concurrent changes share
//! one statement, each row with its own `If-Match` check inside it. Changes to the same
//! task in one batch behave as if sent one after the other: the first goes in the
//! shared statement, the others run after it, alone and in order.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use deadpool_postgres::Client;
use prometheus_client::metrics::histogram::Histogram;

use super::batch::Batcher;
use super::budget::{self, Db, Deadline, Effect, Failure};
use super::{Change, Delete, Precondition, StoreError, Update, outcome, sql, statement};
use crate::observe::traces::Statement;
use crate::tasks::Task;

/// A change to one task that can share a statement with others.
pub trait ById: Sized + Send + Sync + 'static {
    /// What the statement gives back for a task it changed.
    type Done: Clone + Send + 'static;
    /// The statement, as its trace span names it.
    const STATEMENT: Statement;
    /// The task it changes.
    fn id(&self) -> i64;
    /// What the client expects of the task (`If-Match`).
    fn expected(&self) -> &Precondition;
    /// Runs `changes` (no two of the same task) as one statement: what each changed
    /// task gave, by id. A change whose task is missing, or fails its check, is absent.
    fn run(
        client: &Client,
        changes: &[&Self],
    ) -> impl Future<Output = Result<HashMap<i64, Self::Done>, tokio_postgres::Error>> + Send;
}

impl ById for Update {
    type Done = Task;
    const STATEMENT: Statement = statement::UPDATE_TASKS;

    fn id(&self) -> i64 {
        self.id
    }

    fn expected(&self) -> &Precondition {
        &self.expected
    }

    fn run(
        client: &Client,
        changes: &[&Self],
    ) -> impl Future<Output = Result<HashMap<i64, Task>, tokio_postgres::Error>> + Send {
        sql::update_many(client, changes)
    }
}

impl ById for Delete {
    type Done = ();
    const STATEMENT: Statement = statement::DELETE_TASKS;

    fn id(&self) -> i64 {
        self.id
    }

    fn expected(&self) -> &Precondition {
        &self.expected
    }

    fn run(
        client: &Client,
        changes: &[&Self],
    ) -> impl Future<Output = Result<HashMap<i64, ()>, tokio_postgres::Error>> + Send {
        sql::delete_many(client, changes)
    }
}

/// The batcher of one kind of change.
pub fn changer<C: ById>(
    db: Arc<Db>,
    lanes: usize,
    sizes: Histogram,
) -> Batcher<C, Change<C::Done>> {
    Batcher::new(lanes, move |changes: Vec<C>, deadline| {
        sizes.observe(changes.len() as f64);
        let db = db.clone();
        async move {
            match together(&db, deadline, &changes).await {
                Ok(answers) => answers,
                Err(Failure::Statement(err))
                    if changes.len() > 1 && outcome::is_row_refusal(&err) =>
                {
                    log::warn!(
                        "{} changes refused as one statement ({}); making them one by one",
                        changes.len(),
                        StoreError::from(err)
                    );
                    let mut answers = Vec::with_capacity(changes.len());
                    for change in &changes {
                        let alone = together(&db, deadline, std::slice::from_ref(change)).await;
                        answers.push(match alone {
                            Ok(mut answer) => answer.pop().expect("one answer for one change"),
                            Err(failure) => Err(failure.into()),
                        });
                    }
                    answers
                }
                Err(failure) => vec![Err(failure.into()); changes.len()],
            }
        }
    })
}

/// Runs a batch of changes: the first change of each task in one statement, the
/// others after it, one by one, in order. An answer per change, in input order; or the
/// shared statement's failure, for the caller to judge.
async fn together<C: ById>(
    db: &Db,
    deadline: Deadline,
    changes: &[C],
) -> Result<Vec<Result<Change<C::Done>, StoreError>>, Failure> {
    let mut seen = HashMap::with_capacity(changes.len());
    let (mut shared, mut after) = (Vec::with_capacity(changes.len()), Vec::new());
    for (at, change) in changes.iter().enumerate() {
        match seen.insert(change.id(), at) {
            None => shared.push(at),
            Some(_) => after.push(at),
        }
    }
    let work = async |client: &Client| {
        let batch: Vec<&C> = shared.iter().map(|&at| &changes[at]).collect();
        let mut done = C::run(client, &batch).await?;
        let mut answers: Vec<Option<Result<Change<C::Done>, StoreError>>> =
            (0..changes.len()).map(|_| None).collect();
        for &at in &shared {
            let change = &changes[at];
            answers[at] = Some(Ok(change.expected().judge(done.remove(&change.id()))));
        }
        for &at in &after {
            let change = &changes[at];
            let alone = budget::limited(client, deadline, C::run(client, &[change])).await;
            answers[at] =
                Some(alone.map(|mut done| change.expected().judge(done.remove(&change.id()))));
        }
        Ok(answers
            .into_iter()
            .map(|answer| answer.expect("every change answered"))
            .collect())
    };
    db.run(C::STATEMENT, deadline, Effect::Writes, work).await
}
