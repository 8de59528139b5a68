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
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::PoolError;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::db::DbOptions;
use crate::tasks::{ListQuery, NewTask, Status, Task, TaskPatch};
use batch::Batcher;
use budget::{Db, Deadline, Effect};
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
    db: Arc<Db>,
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

/// Most rows one list statement reads: what a page holds in memory at once, however
/// slowly its client reads. A page is at most 1,000 tasks of up to 5,200 characters
/// each; so read, it costs a few hundred KiB whatever its size.
pub const CHUNK_ROWS: i64 = 32;

/// Part of a page of tasks, and where the rest of it starts.
pub struct Chunk {
    /// The tasks, in id order.
    pub tasks: Vec<Task>,
    /// The rest of the page, if there may be more.
    pub more: Option<Cursor>,
}

/// Where the rest of a page starts: read with [`Store::list_more`]. Between chunks,
/// tasks may be created or deleted: a page never holds one twice, and keeps id
/// order, but it is not one snapshot.
#[derive(Clone, Copy, Debug)]
pub struct Cursor {
    status: Option<Status>,
    after: i64,
    left: i64,
}

/// What `/ready` learned from one round trip.
pub enum Health {
    /// The database answered.
    Ok,
    /// It did not: a short reason for the client, and the cause for the log.
    Failed(&'static str, StoreError),
}

impl Store {
    /// A store on a pool of at most `pool_size` connections to `db`. Starts the batch
    /// dispatchers, so it must be called inside the tokio runtime.
    pub fn open(db: &DbOptions, pool_size: usize) -> Result<Store, String> {
        let db = Arc::new(Db::open(db, pool_size)?);
        let lanes = batch::LANES.min(pool_size);
        let batch_sizes = BatchSizes::new_with_constructor(|| Histogram::new(BATCH_BUCKETS));
        Ok(Store {
            finder: finder(db.clone(), lanes, size_of(&batch_sizes, "find")),
            creator: creator(db.clone(), lanes, size_of(&batch_sizes, "insert")),
            db,
            batch_sizes,
        })
    }

    /// Opens the first pooled connection now, so the first request does not pay for it.
    pub async fn warm_up(&self) {
        if let Err(err) = self.db.pool().get().await {
            log::warn!(
                "could not open a pooled database connection yet: {}",
                StoreError::from(err)
            );
        }
    }

    /// One task, if it exists. Looked up together with the other gets queued now.
    pub async fn get(&self, id: i64) -> Result<Option<Task>, StoreError> {
        self.finder.submit(id, Deadline::start()).await
    }

    /// Stores a new task. Inserted together with the other creates queued now.
    pub async fn create(&self, new: NewTask) -> Result<Task, StoreError> {
        self.creator.submit(new, Deadline::start()).await
    }

    /// The first chunk of a page of tasks in id order: at most [`CHUNK_ROWS`], and a
    /// [`Cursor`] to the rest, if there may be more.
    pub async fn list(&self, query: &ListQuery) -> Result<Chunk, StoreError> {
        let cursor = Cursor {
            status: query.status,
            after: 0,
            left: query.limit,
        };
        self.chunk(cursor, query.offset).await
    }

    /// The next chunk of a page, with a fresh budget: a page read slowly holds no
    /// connection between chunks.
    pub async fn list_more(&self, cursor: Cursor) -> Result<Chunk, StoreError> {
        self.chunk(cursor, 0).await
    }

    async fn chunk(&self, cursor: Cursor, offset: i64) -> Result<Chunk, StoreError> {
        let limit = cursor.left.min(CHUNK_ROWS);
        let list =
            async |client: &_| sql::list(client, cursor.status, cursor.after, limit, offset).await;
        let tasks = self.db.run(Deadline::start(), Effect::Reads, list).await?;
        let left = cursor.left - tasks.len() as i64;
        let more = match tasks.last() {
            Some(last) if tasks.len() as i64 == limit && left > 0 => Some(Cursor {
                after: last.id,
                left,
                ..cursor
            }),
            _ => None,
        };
        Ok(Chunk { tasks, more })
    }

    /// Applies a patch; `None` when the task does not exist.
    pub async fn update(&self, id: i64, patch: &TaskPatch) -> Result<Option<Task>, StoreError> {
        let update = async |client: &_| sql::update(client, id, patch).await;
        self.db.run(Deadline::start(), Effect::Writes, update).await
    }

    /// Deletes a task; `false` when there was none.
    pub async fn delete(&self, id: i64) -> Result<bool, StoreError> {
        let delete = async |client: &_| sql::delete(client, id).await;
        self.db.run(Deadline::start(), Effect::Writes, delete).await
    }

    /// One round trip to the database, within `budget`.
    pub async fn check(&self, budget: Duration) -> Health {
        let ping =
            async |client: &deadpool_postgres::Client| client.batch_execute("SELECT 1").await;
        match self
            .db
            .run(Deadline::after(budget), Effect::Reads, ping)
            .await
        {
            Ok(()) => Health::Ok,
            Err(err) => {
                let reason = match &err {
                    StoreError::Unavailable(cause) if cause.is::<outcome::OutOfTime>() => "timeout",
                    StoreError::Unavailable(cause) if cause.is::<PoolError>() => "unreachable",
                    _ => "error",
                };
                Health::Failed(reason, err)
            }
        }
    }

    /// The pool as of now.
    pub fn pool_state(&self) -> PoolState {
        let status = self.db.pool().status();
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
        self.db.pool().close();
    }
}

fn size_of(sizes: &BatchSizes, query: &'static str) -> Histogram {
    sizes.get_or_create(&BatchLabels { query }).clone()
}

/// The batched lookup behind [`Store::get`], each id answered from the rows that
/// came back.
fn finder(db: Arc<Db>, lanes: usize, sizes: Histogram) -> Batcher<i64, Option<Task>> {
    Batcher::new(lanes, move |ids: Vec<i64>, deadline| {
        sizes.observe(ids.len() as f64);
        let db = db.clone();
        async move {
            let find = async |client: &_| sql::find_many(client, &ids).await;
            match db.run(deadline, Effect::Reads, find).await {
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
/// statement for what a row holds (SQLSTATE class 22 or 23), nothing was stored, and
/// each is inserted alone, by the same deadline, so only that one fails.
fn creator(db: Arc<Db>, lanes: usize, sizes: Histogram) -> Batcher<NewTask, Task> {
    Batcher::new(lanes, move |new: Vec<NewTask>, deadline| {
        sizes.observe(new.len() as f64);
        let db = db.clone();
        async move {
            let insert = async |client: &_| Ok(sql::insert_many(client, &new).await);
            match db.run(deadline, Effect::Writes, insert).await {
                Ok(Ok(tasks)) => answer_in_order(&new, tasks),
                Ok(Err(err)) if new.len() > 1 && outcome::is_row_refusal(&err) => {
                    log::warn!(
                        "{} creates refused as one statement ({}); inserting them one by one",
                        new.len(),
                        StoreError::from(err)
                    );
                    insert_one_by_one(&db, deadline, &new).await
                }
                Ok(Err(err)) => vec![Err(err.into()); new.len()],
                Err(err) => vec![Err(err); new.len()],
            }
        }
    })
}

/// Each input's own row, from the rows one insert returned (in id order, which is
/// input order). Checked, whatever the build: a row that does not hold what its
/// input asked for is matched by content instead, and an input no row matches fails.
fn answer_in_order(new: &[NewTask], mut tasks: Vec<Task>) -> Vec<Result<Task, StoreError>> {
    let holds = |task: &Task, new: &NewTask| {
        task.title == new.title && task.description == new.description && task.status == new.status
    };
    if tasks.len() == new.len() && tasks.iter().zip(new).all(|(task, new)| holds(task, new)) {
        return tasks.into_iter().map(Ok).collect();
    }
    log::error!(
        "an insert of {} rows returned {} that are not in input order; matching them by content",
        new.len(),
        tasks.len()
    );
    new.iter()
        .map(|new| match tasks.iter().position(|task| holds(task, new)) {
            Some(at) => Ok(tasks.swap_remove(at)),
            None => Err(StoreError::internal(
                "an insert returned no row for this input",
            )),
        })
        .collect()
}

/// The row-by-row fallback: each insert on its own, each limited to what remains
/// of `deadline`.
async fn insert_one_by_one(
    db: &Db,
    deadline: Deadline,
    new: &[NewTask],
) -> Vec<Result<Task, StoreError>> {
    let each = async |client: &_| {
        let mut tasks = Vec::with_capacity(new.len());
        for task in new {
            tasks.push(budget::limited(client, deadline, sql::insert(client, task)).await);
        }
        Ok(tasks)
    };
    db.run(deadline, Effect::Writes, each)
        .await
        .unwrap_or_else(|err| vec![Err(err); new.len()])
}
