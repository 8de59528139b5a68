//! The data path: [`Store`] owns the pool, the batched queries and the request
//! budget, and is all the HTTP layer sees of the database. Its calls take and give
//! the task types of tasks.rs, and fail with a [`StoreError`]; whether a call shared
//! its statement with others is invisible from outside.
//!
//! Where things are: batching in batch.rs, the 5 s budget in budget.rs, the meaning
//! of database errors in outcome.rs, and the SQL in sql.rs.

mod batch;
mod budget;
mod outcome;
mod sql;

use std::collections::HashMap;

use deadpool_postgres::{Client, Pool};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::db::DbOptions;
use crate::error::describe;
use crate::tasks::{ListQuery, NewTask, Task, TaskPatch};
use batch::Batcher;
use budget::within_budget;
pub use outcome::{Cause, StoreError};

/// Batch-size buckets: 1 to [`batch::MAX_BATCH`].
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BatchLabels {
    query: &'static str,
}

type BatchSizes = Family<BatchLabels, Histogram, fn() -> Histogram>;

/// The tasks in PostgreSQL, as the API reads and writes them.
pub struct Store {
    pool: Pool,
    /// `get`, batched: one `id = ANY($1)` for every id queued.
    finder: Batcher<i64, Option<Task>>,
    /// `create`, batched: one insert, so one commit, for every create queued.
    creator: Batcher<NewTask, Task>,
    batch_sizes: BatchSizes,
}

/// The pool's state as of now, for `/metrics`.
#[derive(Debug)]
pub struct PoolState {
    /// Open connections.
    pub size: usize,
    /// Idle connections.
    pub available: usize,
    /// Requests waiting for a connection.
    pub waiting: usize,
    /// The most connections it opens (`DATABASE_POOL_SIZE`).
    pub max_size: usize,
}

/// What `/ready` learned from one round trip.
pub enum Health {
    /// The database answered.
    Ok,
    /// It did not: a short reason for the client, and the cause for the log.
    Failed(&'static str, String),
}

impl Store {
    /// A store on a pool of at most `pool_size` connections to `db`. Starts the batch
    /// dispatchers, so it must be called inside the tokio runtime.
    pub fn open(db: &DbOptions, pool_size: usize) -> Result<Store, String> {
        let pool = budget::pool(db.manager(), pool_size)?;
        let lanes = batch::LANES.min(pool_size);
        let batch_sizes = BatchSizes::new_with_constructor(|| Histogram::new(BATCH_BUCKETS));
        Ok(Store {
            finder: finder(pool.clone(), lanes, size_of(&batch_sizes, "find")),
            creator: creator(pool.clone(), lanes, size_of(&batch_sizes, "insert")),
            pool,
            batch_sizes,
        })
    }

    /// Opens the first pooled connection now, so the first request does not pay for it.
    pub async fn warm_up(&self) {
        if let Err(err) = self.pool.get().await {
            log::warn!(
                "could not open a pooled database connection yet: {}",
                describe(&err)
            );
        }
    }

    /// One task, if it exists. Looked up together with the other gets queued now.
    pub async fn get(&self, id: i64) -> Result<Option<Task>, StoreError> {
        within_budget(self.finder.submit(id)).await
    }

    /// Stores a new task. Inserted together with the other creates queued now.
    pub async fn create(&self, new: NewTask) -> Result<Task, StoreError> {
        within_budget(self.creator.submit(new)).await
    }

    /// A page of tasks in id order.
    pub async fn list(&self, query: &ListQuery) -> Result<Vec<Task>, StoreError> {
        with_db(&self.pool, async |client| sql::list(client, query).await).await
    }

    /// Applies a patch; `None` when the task does not exist.
    pub async fn update(&self, id: i64, patch: &TaskPatch) -> Result<Option<Task>, StoreError> {
        with_db(&self.pool, async |client| {
            sql::update(client, id, patch).await
        })
        .await
    }

    /// Deletes a task; `false` when there was none.
    pub async fn delete(&self, id: i64) -> Result<bool, StoreError> {
        with_db(&self.pool, async |client| sql::delete(client, id).await).await
    }

    /// One round trip to the database.
    pub async fn check(&self) -> Health {
        let client = match self.pool.get().await {
            Ok(client) => client,
            Err(err) => return Health::Failed("unreachable", describe(&err)),
        };
        match client.batch_execute("SELECT 1").await {
            Ok(()) => Health::Ok,
            Err(err) => Health::Failed("error", describe(&err)),
        }
    }

    /// The pool as of now.
    pub fn pool_state(&self) -> PoolState {
        let status = self.pool.status();
        PoolState {
            size: status.size,
            available: status.available,
            waiting: status.waiting,
            max_size: status.max_size,
        }
    }

    /// Registers the store's own metrics: `db_batch_size{query}`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "db_batch_size",
            "Requests served by one batched statement, by query",
            self.batch_sizes.clone(),
        );
    }

    /// Closes the pool: idle connections now, busy ones when they come back.
    pub fn close(&self) {
        self.pool.close();
    }
}

fn size_of(sizes: &BatchSizes, query: &'static str) -> Histogram {
    sizes.get_or_create(&BatchLabels { query }).clone()
}

/// The batched lookup behind [`Store::get`], each id answered from the rows that
/// came back.
fn finder(pool: Pool, lanes: usize, sizes: Histogram) -> Batcher<i64, Option<Task>> {
    Batcher::new(lanes, move |ids: Vec<i64>| {
        sizes.observe(ids.len() as f64);
        let pool = pool.clone();
        async move {
            let rows = with_db(&pool, async |client| sql::find_many(client, &ids).await).await;
            match rows {
                Ok(rows) => {
                    let found: HashMap<i64, Result<Task, StoreError>> = rows
                        .into_iter()
                        .map(|(id, task)| (id, task.map_err(StoreError::from)))
                        .collect();
                    ids.iter()
                        .map(|id| found.get(id).cloned().transpose())
                        .collect()
                }
                Err(err) => vec![Err(err); ids.len()],
            }
        }
    })
}

/// The batched insert behind [`Store::create`]. Should the database refuse the
/// statement for what a row holds, nothing was stored, and each is inserted alone, so
/// only that one fails.
fn creator(pool: Pool, lanes: usize, sizes: Histogram) -> Batcher<NewTask, Task> {
    Batcher::new(lanes, move |new: Vec<NewTask>| {
        sizes.observe(new.len() as f64);
        let pool = pool.clone();
        async move {
            let all = with_db(&pool, async |client| {
                Ok(sql::insert_many(client, &new).await)
            })
            .await;
            let err = match all {
                Ok(Ok(tasks)) => return tasks.into_iter().map(Ok).collect(),
                Ok(Err(err)) if new.len() > 1 && outcome::is_row_refusal(&err) => {
                    log::warn!(
                        "{} creates refused as one statement ({}); inserting them one by one",
                        new.len(),
                        StoreError::from(err)
                    );
                    return insert_one_by_one(&pool, &new).await;
                }
                Ok(Err(err)) => err.into(),
                Err(err) => err,
            };
            vec![Err(err); new.len()]
        }
    })
}

async fn insert_one_by_one(pool: &Pool, new: &[NewTask]) -> Vec<Result<Task, StoreError>> {
    let each = with_db(pool, async |client| {
        let mut tasks = Vec::with_capacity(new.len());
        for task in new {
            tasks.push(sql::insert(client, task).await.map_err(StoreError::from));
        }
        Ok(tasks)
    });
    each.await.unwrap_or_else(|err| vec![Err(err); new.len()])
}

/// Runs `work` on a pooled connection, waiting for the pool included, within the budget.
async fn with_db<T>(
    pool: &Pool,
    work: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
) -> Result<T, StoreError> {
    within_budget(async {
        let client = pool.get().await?;
        Ok(work(&client).await?)
    })
    .await
}
