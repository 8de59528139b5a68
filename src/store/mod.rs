//! The data path: [`Store`] is all the HTTP layer sees of the database; its calls take and give
//! the crate's task types and fail with a [`StoreError`]. Inside: the pool and its 5 s budget
//! (pool.rs), batching and shedding (batcher.rs), what batches run (tasks.rs, idempotency.rs),
//! reads on standbys (reads.rs, replicas.rs), the SQL (sql/), what errors mean (error.rs).

mod batcher;
mod error;
mod idempotency;
mod pool;
mod reads;
mod replicas;
mod sql;
mod tasks;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::PoolError;
use jiff::Timestamp;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::describe;
use crate::observe::metrics::PoolState;
use crate::pg::DbOptions;
use crate::tasks::{NewTask, Task, TaskPatch};
use batcher::Batcher;
use error::message;
use idempotency::Pruner;
use pool::{Deadline, Effect, OutOfTime, Pool};
use replicas::Standbys;
use tasks::Reads;

pub use error::{Cause, StoreError};
pub use idempotency::Claim;
pub use reads::{CHUNK_ROWS, Chunk, Cursor};

type BatchSizes = Family<[(&'static str, &'static str); 1], Histogram, fn() -> Histogram>;

/// The tasks in PostgreSQL, as the API reads and writes them.
pub struct Store {
    pool: Arc<Pool>,
    /// The batched reads of the primary (first), and of each standby.
    reads: Vec<Reads>,
    /// The standbys' probe, and where reads go; `None`: no `DATABASE_READ_URL`.
    standbys: Option<Standbys>,
    creator: Batcher<NewCreate, Creation>,
    updater: Batcher<Update, Change<Task>>,
    deleter: Batcher<Delete, Change<()>>,
    batch_sizes: BatchSizes,
    /// Idempotency keys the database holds, as the pruner last counted them.
    keys_held: Gauge,
    pruner: Pruner,
}

/// A create: the task, and the Idempotency-Key it came with (and its body's fingerprint).
#[derive(Debug)]
pub struct NewCreate {
    pub task: NewTask,
    pub claim: Option<Claim>,
}

/// A change to one task (a [`TaskPatch`], or `()` for a delete), made only if the task meets
/// `expected` (`If-Match`).
#[derive(Debug)]
struct ById<K> {
    id: i64,
    patch: K,
    expected: Precondition,
}

type Update = ById<TaskPatch>;
type Delete = ById<()>;

/// What a create did: stored the task; or nothing, as its key had created this task before,
/// for the same body (replayed), or had been used for another body.
#[derive(Clone, Debug)]
pub enum Creation {
    Created(Task),
    Replayed(Task),
    KeyReused,
}

/// What a client expects of a task before it changes it (`If-Match`): nothing, that it
/// exists (`If-Match: *`), or that its `updated_at` is one of these.
#[derive(Clone, Debug, PartialEq)]
pub enum Precondition {
    None,
    Exists,
    UpdatedAt(Vec<Timestamp>),
}

/// What a conditional change did: done; no such task (and no precondition); a precondition failed.
#[derive(Clone, Debug, PartialEq)]
pub enum Change<T> {
    Done(T),
    NotFound,
    PreconditionFailed,
}

/// What `/ready` learned from one round trip: the database answers and takes writes, or why
/// not (a short reason for the client, and the cause for the log).
pub enum Health {
    Ok,
    Failed(&'static str, StoreError),
}

impl Store {
    /// A store on pools of at most `pool_size` connections, and its background tasks (so call it
    /// in the tokio runtime); Idempotency-Keys are kept for `key_ttl`.
    pub fn open(
        db: &DbOptions,
        pool_size: usize,
        key_ttl: Duration,
        unnamed_statements: bool,
        (standbys, read_max_lag): (&[DbOptions], Duration),
    ) -> Result<Store, String> {
        let pool = Arc::new(Pool::open(db, pool_size, unnamed_statements, !standbys.is_empty())?);
        let lanes = batcher::LANES.min(pool_size);
        // Batch sizes from 1 to batcher::MAX_BATCH, by powers of 2.
        let buckets = || Histogram::new(exponential_buckets(1.0, 2.0, 8));
        let batch_sizes = BatchSizes::new_with_constructor(buckets);
        let sizes = |query| batch_sizes.get_or_create(&[("query", query)]).clone();
        let keys_held = Gauge::default();
        let standby = |db| Pool::open(db, pool_size, unnamed_statements, false).map(Arc::new);
        let pools = standbys.iter().map(standby).collect::<Result<Vec<_>, _>>()?;
        let names = standbys.iter().map(DbOptions::address).collect();
        let reads = std::iter::once(&pool).chain(&pools).map(|pool| Reads {
            finder: tasks::finder(pool.clone(), lanes, sizes("find")),
            lister: tasks::lister(pool.clone(), lanes, sizes("list")),
            status_lister: tasks::lister(pool.clone(), lanes, sizes("list_status")),
            pool: pool.clone(),
        });
        Ok(Store {
            reads: reads.collect(),
            standbys: (!pools.is_empty())
                .then(|| Standbys::start(pool.clone(), pools, names, read_max_lag)),
            creator: tasks::creator(pool.clone(), lanes, sizes("insert"), key_ttl),
            updater: tasks::changer(pool.clone(), lanes, sizes("update")),
            deleter: tasks::changer(pool.clone(), lanes, sizes("delete")),
            pruner: Pruner::start(pool.clone(), key_ttl, keys_held.clone()),
            pool,
            batch_sizes,
            keys_held,
        })
    }

    /// Opens the first pooled connection now, so the first request does not pay for it.
    pub async fn warm_up(&self) {
        self.pool.warm_up().await;
    }

    /// Stores a new task, unless its key says it was stored before; one insert with the others.
    pub async fn create(&self, create: NewCreate) -> Result<Creation, StoreError> {
        self.creator.submit(create, Deadline::start()).await
    }

    /// Applies a patch if the task meets `expected`: check and change are one statement,
    /// shared with the other changes queued now. `{}` writes nothing.
    pub async fn update(
        &self,
        id: i64,
        patch: TaskPatch,
        expected: Precondition,
    ) -> Result<Change<Task>, StoreError> {
        if patch.is_empty() {
            let task = self.get(id, None).await?.filter(|task| match &expected {
                Precondition::UpdatedAt(versions) => versions.contains(&task.updated_at),
                Precondition::None | Precondition::Exists => true,
            });
            return Ok(expected.judge(task));
        }
        self.updater.submit(Update { id, patch, expected }, Deadline::start()).await
    }

    /// Deletes a task if it meets `expected`, as [`Store::update`] changes one.
    pub async fn delete(&self, id: i64, expected: Precondition) -> Result<Change<()>, StoreError> {
        self.deleter.submit(Delete { id, patch: (), expected }, Deadline::start()).await
    }

    /// One round trip to the database, within `budget`.
    pub async fn check(&self, budget: Duration) -> Health {
        let deadline = Deadline::after(budget);
        let err = match self.pool.run(sql::SHOW, deadline, Effect::Reads, sql::read_only).await {
            Ok(false) => return Health::Ok,
            Ok(true) => {
                let standby = message("the database takes no writes (a standby?)");
                return Health::Failed("read-only", StoreError::Unavailable(standby));
            }
            Err(failure) => StoreError::from(failure),
        };
        let says = |cause: &Cause, text| describe(&**cause).contains(text);
        let reason = match &err {
            StoreError::Unavailable(cause) if cause.is::<OutOfTime>() => "timeout",
            // target_session_attrs=read-write, and only a standby answered.
            StoreError::Unavailable(cause) if says(cause, "does not allow writes") => "read-only",
            StoreError::Unavailable(cause) if cause.is::<PoolError>() => "unreachable",
            _ => "error",
        };
        Health::Failed(reason, err)
    }

    /// The pool as of now.
    pub fn pool_state(&self) -> PoolState {
        self.pool.state()
    }

    /// Registers `db_batch_size{query}`, `idempotency_keys_held` and the standbys' metrics.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let sizes = "Requests served by one batched statement, by query";
        registry.register("db_batch_size", sizes, self.batch_sizes.clone());
        let held = "Idempotency keys the database holds (of tasks and of deleted tasks), as \
                    counted after each pruning round";
        registry.register("idempotency_keys_held", held, self.keys_held.clone());
        self.standbys.iter().for_each(|standbys| standbys.register_metrics(registry));
    }

    /// Stops the background tasks and closes the pools: idle connections now, busy ones later.
    pub async fn close(&self) {
        self.pruner.stop().await;
        self.standbys.iter().for_each(Standbys::stop);
        self.reads.iter().for_each(|reads| reads.pool.close());
    }
}

impl Precondition {
    /// What a change that found `done` (`None`: no task met the statement) means: with a
    /// precondition, finding none fails it (RFC 9110 §13.1.1).
    fn judge<T>(&self, done: Option<T>) -> Change<T> {
        match (done, self) {
            (Some(done), _) => Change::Done(done),
            (None, Precondition::None) => Change::NotFound,
            (None, _) => Change::PreconditionFailed,
        }
    }
}
