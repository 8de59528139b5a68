//! The statements of Idempotency-Key: creates that store each task with its key, the look-up of
//! keys held, letting go of expired ones, and the pruner's walk. What keys answer: idempotency.rs.

use jiff::Timestamp;
use tokio_postgres::Error;
use tokio_postgres::types::Type;

use super::{Conn, Param, Sql, columns, task};
use crate::store::NewCreate;
use crate::tasks::Task;

/// Keys the pruner lets go of by one statement: few, so the rows it locks are few and brief.
pub const PRUNE_BATCH: i64 = 1000;
/// Tasks the pruner's walk looks at per statement, by id.
pub const PRUNE_SPAN: i64 = 10_000;

// Keyed creates: each task is stored with its key (sql/V3), so the key's unique index makes its
// first use the only one in one insert. An input whose key a task holds (ON CONFLICT), or a deleted
// task held within $6 seconds, is skipped: FIND_KEYS says what it answered. Rows keep input order.
static INSERT_KEYED: Sql = Sql {
    text: concat!(
        "INSERT INTO tasks (title, description, status, idempotency_key, idempotency_fingerprint)
    SELECT title, description, status, key, fingerprint
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[])
        WITH ORDINALITY AS new (title, description, status, key, fingerprint, n)
    WHERE key IS NULL OR key <> ALL (ARRAY(
        SELECT key FROM (SELECT key, created_at FROM idempotency_keys WHERE key = ANY($4)
                         OFFSET 0) AS held
        WHERE created_at >= now() - make_interval(secs => $6)))
    ORDER BY n
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING ",
        columns!(),
        ", idempotency_key"
    ),
    types: &[
        Type::TEXT_ARRAY,
        Type::TEXT_ARRAY,
        Type::TEXT_ARRAY,
        Type::TEXT_ARRAY,
        Type::BYTEA_ARRAY,
        Type::FLOAT8,
    ],
};
// Lookups below find keys by the key's index alone (OFFSET 0 keeps the subquery apart), then test
// their time: else the planner may walk a created_at index, on stale statistics every key of the
// last day (sql/V3 had such an index; V4 dropped it).
// FIND_KEYS: the keys held, not older than $2 seconds, by tasks or deleted tasks.
static FIND_KEYS: Sql = Sql {
    text: "SELECT idempotency_key, idempotency_fingerprint, id, created_at
    FROM (SELECT idempotency_key, idempotency_fingerprint, id, created_at
          FROM tasks WHERE idempotency_key = ANY($1) OFFSET 0) AS held
    WHERE created_at >= now() - make_interval(secs => $2)
    UNION ALL
    SELECT key, fingerprint, task_id, created_at
    FROM (SELECT key, fingerprint, task_id, created_at
          FROM idempotency_keys WHERE key = ANY($1) OFFSET 0) AS kept
    WHERE created_at >= now() - make_interval(secs => $2)",
    types: &[Type::TEXT_ARRAY, Type::FLOAT8],
};
// Keys of $1 that tasks older than $2 seconds still hold: let go, so they can be used
// again. Rows another session holds are skipped (it is letting them go, or pruning).
static RELEASE_KEYS: Sql = Sql {
    text: "UPDATE tasks SET idempotency_key = NULL, idempotency_fingerprint = NULL
    WHERE id IN (
        SELECT id FROM tasks
        WHERE id IN (SELECT id FROM tasks WHERE idempotency_key = ANY($1) OFFSET 0)
          AND created_at < now() - make_interval(secs => $2)
        FOR UPDATE SKIP LOCKED)",
    types: &[Type::TEXT_ARRAY, Type::FLOAT8],
};
// The pruner's walk over tasks by id (ids go with time: sql/V4), $3 ids from $2 on: lets go of
// the keys of at most $4 older than $1 seconds (skipping locked rows); and where the walk goes on.
static RELEASE_EXPIRED: Sql = Sql {
    text: "WITH released AS (
        UPDATE tasks SET idempotency_key = NULL, idempotency_fingerprint = NULL
        WHERE id IN (
            SELECT id FROM tasks
            WHERE id >= $2 AND id < $2 + $3
              AND idempotency_fingerprint IS NOT NULL
              AND created_at < now() - make_interval(secs => $1)
            ORDER BY id LIMIT $4
            FOR UPDATE SKIP LOCKED)
        RETURNING id)
    SELECT (SELECT count(*) FROM released),
        (SELECT min(id) FROM tasks
         WHERE id >= $2 AND id < $2 + $3
           AND created_at >= now() - make_interval(secs => $1)),
        (SELECT min(id) FROM tasks
         WHERE id >= $2 AND id < $2 + $3
           AND idempotency_fingerprint IS NOT NULL
           AND created_at < now() - make_interval(secs => $1)
           AND id NOT IN (SELECT id FROM released)),
        (SELECT max(id) FROM tasks)",
    types: &[Type::FLOAT8, Type::INT8, Type::INT8, Type::INT8],
};
// Where the pruner's walk starts (OFFSET 0: by the key's index, not a walk up the primary key).
static FIRST_KEYED: Sql = Sql {
    text: "SELECT min(id) FROM (SELECT id FROM tasks WHERE idempotency_key IS NOT NULL
                         OFFSET 0) AS keyed",
    types: &[],
};
// Every key held: by the key's partial index (keyed tasks only), and the deleted tasks' table.
static COUNT_KEYS: Sql = Sql {
    text: "SELECT (SELECT count(*) FROM tasks WHERE idempotency_key IS NOT NULL)
        + (SELECT count(*) FROM idempotency_keys)",
    types: &[],
};
// At most $2 keys of deleted tasks older than $1 seconds, skipping locked rows; how many.
static PRUNE_KEYS: Sql = Sql {
    text: "WITH gone AS (DELETE FROM idempotency_keys WHERE key IN (
        SELECT key FROM idempotency_keys
        WHERE created_at < now() - make_interval(secs => $1)
        ORDER BY created_at LIMIT $2
        FOR UPDATE SKIP LOCKED) RETURNING 1)
    SELECT count(*) FROM gone",
    types: &[Type::FLOAT8, Type::INT8],
};

/// Stores new tasks with their keys in one statement: `(n, task)` for each input (numbered
/// from 1, no key twice) stored; one missing had its key held already ([`find_keys`]).
pub async fn insert_keyed(
    conn: &Conn,
    inputs: &[&NewCreate],
    ttl_secs: f64,
) -> Result<Vec<(i64, Task)>, Error> {
    let titles: Vec<&str> = inputs.iter().map(|i| i.task.title.as_str()).collect();
    let descriptions: Vec<Option<&str>> =
        inputs.iter().map(|i| i.task.description.as_deref()).collect();
    let statuses: Vec<&str> = inputs.iter().map(|i| i.task.status.as_str()).collect();
    let claims = inputs.iter().map(|i| i.claim.as_ref());
    let keys: Vec<Option<&str>> = claims.clone().map(|c| Some(c?.key.as_str())).collect();
    let prints: Vec<Option<&[u8]>> = claims.map(|c| Some(c?.fingerprint.as_slice())).collect();
    let params: [Param; 6] = [&titles, &descriptions, &statuses, &keys, &prints, &ttl_secs];
    let rows = INSERT_KEYED.query(conn, &params).await?;
    // Rows keep input order, held keys missing: each is the next input with its key (or none).
    let mut next = 0;
    rows.into_iter()
        .map(|row| {
            let key: Option<&str> = row.try_get(6)?;
            let n = match keys[next..].iter().position(|input| *input == key) {
                Some(skipped) => {
                    next += skipped + 1;
                    next as i64
                }
                None => 0,
            };
            Ok((n, task(&row)?))
        })
        .collect()
}

/// A key held: the fingerprint of the body it came with, and the id and time of the task its
/// create stored (the rest of that answer follows from the body: idempotency.rs).
pub struct HeldKey {
    pub key: String,
    pub fingerprint: Vec<u8>,
    pub task_id: i64,
    pub created_at: Timestamp,
}

/// The keys of `keys` held and not older than `ttl_secs`.
pub async fn find_keys(conn: &Conn, keys: &[&str], ttl_secs: f64) -> Result<Vec<HeldKey>, Error> {
    let rows = FIND_KEYS.query(conn, &[&keys, &ttl_secs]).await?;
    let held = |row: &tokio_postgres::Row| {
        let (key, fingerprint) = (row.try_get(0)?, row.try_get(1)?);
        Ok(HeldKey { key, fingerprint, task_id: row.try_get(2)?, created_at: row.try_get(3)? })
    };
    rows.iter().map(held).collect()
}

/// Lets go of the keys of `keys` that tasks older than `ttl_secs` hold.
pub async fn release_keys(conn: &Conn, keys: &[&str], ttl_secs: f64) -> Result<(), Error> {
    RELEASE_KEYS.query(conn, &[&keys, &ttl_secs]).await.map(drop)
}

/// One step of the pruner's walk over tasks (RELEASE_EXPIRED): keys let go; the first task of
/// the span within the TTL; the first that still holds an expired key; the last id of all.
#[derive(Default)]
pub struct Walked {
    pub released: u64,
    pub fresh: Option<i64>,
    pub left: Option<i64>,
    pub last: Option<i64>,
}

/// Lets go of the keys of at most [`PRUNE_BATCH`] expired tasks of the [`PRUNE_SPAN`] ids from
/// `from` on, skipping any a request holds.
pub async fn release_expired(conn: &Conn, ttl_secs: f64, from: i64) -> Result<Walked, Error> {
    let rows = RELEASE_EXPIRED.query(conn, &[&ttl_secs, &from, &PRUNE_SPAN, &PRUNE_BATCH]).await?;
    let Some(row) = rows.first() else { return Ok(Walked::default()) };
    let released = row.try_get::<_, i64>(0)?.try_into().unwrap_or(0);
    Ok(Walked { released, fresh: row.try_get(1)?, left: row.try_get(2)?, last: row.try_get(3)? })
}

/// The first task that holds a key, if any.
pub async fn first_keyed(conn: &Conn) -> Result<Option<i64>, Error> {
    Ok(FIRST_KEYED.value(conn, &[]).await?.flatten())
}

/// How many keys the database holds: tasks' and deleted tasks', expired or not.
pub async fn count_keys(conn: &Conn) -> Result<i64, Error> {
    Ok(COUNT_KEYS.value(conn, &[]).await?.unwrap_or(0))
}

/// Deletes at most [`PRUNE_BATCH`] expired keys of deleted tasks, skipping locked ones: how many.
pub async fn prune_kept_keys(conn: &Conn, ttl_secs: f64) -> Result<u64, Error> {
    let pruned: Option<i64> = PRUNE_KEYS.value(conn, &[&ttl_secs, &PRUNE_BATCH]).await?;
    Ok(pruned.map_or(0, |n| n as u64))
}
