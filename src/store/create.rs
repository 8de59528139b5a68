//! `POST /tasks` in the store: concurrent creates inserted by one statement, keyed or
//! not; the row-by-row retry when the database refuses a row; and the check that each
//! create gets its own row back. Keys themselves are keys.rs's business.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Client;
use prometheus_client::metrics::histogram::Histogram;

use super::batch::Batcher;
use super::budget::{Db, Deadline, Effect, Failure};
use super::{Creation, NewCreate, StoreError, keys, outcome, sql, statement};
use crate::tasks::{NewTask, Task};

/// The batched insert behind [`super::Store::create`]: one statement, so one commit,
/// for every create queued. Creates without keys take the plain insert; a batch with
/// any key, the keyed one (keys.rs). Should the database refuse the statement for what
/// a row holds (SQLSTATE class 22 or 23), nothing was stored, and each is inserted
/// alone, by the same deadline, so only that one fails.
pub fn creator(
    db: Arc<Db>,
    lanes: usize,
    sizes: Histogram,
    key_ttl: Duration,
) -> Batcher<NewCreate, Creation> {
    Batcher::new(lanes, move |creates: Vec<NewCreate>, deadline| {
        sizes.observe(creates.len() as f64);
        let db = db.clone();
        async move {
            match insert(&db, deadline, key_ttl, &creates).await {
                Ok(answers) => answers,
                Err(Failure::Statement(err))
                    if creates.len() > 1 && outcome::is_row_refusal(&err) =>
                {
                    log::warn!(
                        "{} creates refused as one statement ({}); inserting them one by one",
                        creates.len(),
                        StoreError::from(err)
                    );
                    one_by_one(&db, deadline, key_ttl, &creates).await
                }
                Err(failure) => vec![Err(failure.into()); creates.len()],
            }
        }
    })
}

/// An answer per create, in order; or why the statement as a whole failed.
type Answers = Result<Vec<Result<Creation, StoreError>>, Failure>;

/// Creates by one statement: the plain insert when none has a key, so a create
/// without a key never touches the keys table; else the keyed one.
async fn insert(db: &Db, deadline: Deadline, key_ttl: Duration, creates: &[NewCreate]) -> Answers {
    match creates.iter().all(|create| create.claim.is_none()) {
        true => unkeyed(db, deadline, creates).await,
        false => keyed(db, deadline, key_ttl, creates).await,
    }
}

async fn unkeyed(db: &Db, deadline: Deadline, creates: &[NewCreate]) -> Answers {
    let new: Vec<&NewTask> = creates.iter().map(|create| &create.task).collect();
    let insert = async |client: &Client| sql::insert_many(client, &new).await;
    let tasks = db
        .run(statement::INSERT_TASKS, deadline, Effect::Writes, insert)
        .await?;
    Ok(answer_in_order(&new, tasks))
}

async fn keyed(db: &Db, deadline: Deadline, key_ttl: Duration, creates: &[NewCreate]) -> Answers {
    let answers = keys::create(db, deadline, key_ttl, creates).await?;
    Ok(answers
        .into_iter()
        .zip(creates)
        .map(|(answer, create)| {
            answer.unwrap_or_else(|| match create.claim {
                // Its key's first use was undone meanwhile: nothing was written.
                Some(_) => Err(StoreError::unavailable("the key was released; try again")),
                None => Err(StoreError::internal("an insert returned no row for it")),
            })
        })
        .collect())
}

/// Each input's own row, from the rows one insert returned (in id order, which is
/// input order). Checked, whatever the build: a row that does not hold what its
/// input asked for is matched by content instead, and an input no row matches fails.
fn answer_in_order(new: &[&NewTask], mut tasks: Vec<Task>) -> Vec<Result<Creation, StoreError>> {
    let holds = |task: &Task, new: &NewTask| {
        task.title == new.title && task.description == new.description && task.status == new.status
    };
    if tasks.len() == new.len() && tasks.iter().zip(new).all(|(task, new)| holds(task, new)) {
        return tasks
            .into_iter()
            .map(|task| Ok(Creation::Created(task)))
            .collect();
    }
    log::error!(
        "an insert of {} rows returned {} that are not in input order; matching them by content",
        new.len(),
        tasks.len()
    );
    new.iter()
        .map(|new| match tasks.iter().position(|task| holds(task, new)) {
            Some(at) => Ok(Creation::Created(tasks.swap_remove(at))),
            None => Err(StoreError::internal(
                "an insert returned no row for this input",
            )),
        })
        .collect()
}

/// The row-by-row retry: each create alone, by the same deadline.
async fn one_by_one(
    db: &Db,
    deadline: Deadline,
    key_ttl: Duration,
    creates: &[NewCreate],
) -> Vec<Result<Creation, StoreError>> {
    let mut answers = Vec::with_capacity(creates.len());
    for create in creates {
        let alone = std::slice::from_ref(create);
        let answer = match insert(db, deadline, key_ttl, alone).await {
            Ok(mut answer) => answer.pop().expect("one answer for one create"),
            Err(failure) => Err(failure.into()),
        };
        answers.push(answer);
    }
    answers
}
