//! The SQL: every statement the store runs but `GET /tasks`'s (store/list.rs), the
//! functions that run each on one connection, and decoding rows into [`Task`]s. Which connection, how many requests a
//! statement serves and how long it may take are decided in store/mod.rs; how a
//! statement is sent (prepared or unnamed) in store/statement.rs.

use std::collections::HashMap;

use deadpool_postgres::Client;
use jiff::Timestamp;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql, Type};

use super::statement::Sql;
use super::{Delete, Precondition, Update};
use crate::tasks::{NewTask, Status, Task};

/// The columns every query returns, in [`Task`]'s order (a macro, so `concat!` can
/// build each statement at compile time).
macro_rules! columns {
    () => {
        "id, title, description, status, created_at, updated_at"
    };
}
pub(super) use columns;

static FIND_MANY: Sql = Sql {
    text: concat!("SELECT ", columns!(), " FROM tasks WHERE id = ANY($1)"),
    types: &[Type::INT8_ARRAY],
};
// Rows go in in `n` order, so each takes the next identity value: sorted by id, the
// returned rows are in input order.
static INSERT_MANY: Sql = Sql {
    text: concat!(
        "INSERT INTO tasks (title, description, status)
    SELECT title, description, status
    FROM unnest($1::text[], $2::text[], $3::text[])
        WITH ORDINALITY AS new (title, description, status, n)
    ORDER BY n
    RETURNING ",
        columns!()
    ),
    types: &[Type::TEXT_ARRAY, Type::TEXT_ARRAY, Type::TEXT_ARRAY],
};
// Changes to several tasks, one row of arrays each: $2/$5 NULL keep the title/status;
// $3 says whether $4 (possibly NULL) replaces the description; $6 whether the change
// is checked against the versions (updated_at) its If-Match names: the n-th change's
// are the n-th run of $8 elements of $7 (padded with NULLs), one `= ANY` each,
// checked in the statement that writes, so atomically. `t.id = ANY($1)` lets the
// planner fetch the rows by primary key. On the right-hand side, t's columns are the
// old values, so `updated_at` moves only when a value actually changes, and then
// always forward, so that it (the ETag) names one version of the task.
static UPDATE_MANY: Sql = Sql {
    text: "UPDATE tasks AS t SET
        title = COALESCE(u.title, t.title),
        description = CASE WHEN u.set_description THEN u.description ELSE t.description END,
        status = COALESCE(u.status, t.status),
        updated_at = CASE
            WHEN (COALESCE(u.title, t.title),
                  CASE WHEN u.set_description THEN u.description ELSE t.description END,
                  COALESCE(u.status, t.status))
                 IS DISTINCT FROM (t.title, t.description, t.status)
            THEN greatest(now(), t.updated_at + interval '1 microsecond')
            ELSE t.updated_at
        END
    FROM unnest($1::bigint[], $2::text[], $3::bool[], $4::text[], $5::text[], $6::bool[])
        WITH ORDINALITY AS u (id, title, set_description, description, status, checked, n)
    WHERE t.id = u.id AND t.id = ANY($1)
      AND (NOT u.checked
           OR t.updated_at = ANY(($7::timestamptz[])[(u.n::int - 1) * $8 + 1 : u.n::int * $8]))
    RETURNING t.id, t.title, t.description, t.status, t.created_at, t.updated_at",
    types: &[
        Type::INT8_ARRAY,
        Type::TEXT_ARRAY,
        Type::BOOL_ARRAY,
        Type::TEXT_ARRAY,
        Type::TEXT_ARRAY,
        Type::BOOL_ARRAY,
        Type::TIMESTAMPTZ_ARRAY,
        Type::INT4,
    ],
};
// Deletes, checked as UPDATE_MANY's changes are. A deleted task's Idempotency-Key
// moves to idempotency_keys, so that a retry of its create is still answered as it
// was, and stores nothing new, until the key expires.
static DELETE_MANY: Sql = Sql {
    text: "WITH gone AS (
        DELETE FROM tasks AS t
        USING unnest($1::bigint[], $2::bool[]) WITH ORDINALITY AS d (id, checked, n)
        WHERE t.id = d.id AND t.id = ANY($1)
          AND (NOT d.checked
               OR t.updated_at = ANY(($3::timestamptz[])[(d.n::int - 1) * $4 + 1 : d.n::int * $4]))
        RETURNING t.id, t.idempotency_key, t.idempotency_fingerprint, t.created_at
    ), kept AS (
        INSERT INTO idempotency_keys AS held (key, fingerprint, task_id, created_at)
        SELECT idempotency_key, idempotency_fingerprint, id, created_at
        FROM gone WHERE idempotency_key IS NOT NULL
        ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint,
            task_id = excluded.task_id, created_at = excluded.created_at
        WHERE held.created_at < excluded.created_at
    )
    SELECT id FROM gone",
    types: &[
        Type::INT8_ARRAY,
        Type::BOOL_ARRAY,
        Type::TIMESTAMPTZ_ARRAY,
        Type::INT4,
    ],
};
// Keyed creates (Idempotency-Key): each task is stored with its key and fingerprint
// (sql/V3), so the unique index on the key is what makes a key's first use its only
// one: no second row, and the batch stays one insert. An input whose key a deleted
// task held (idempotency_keys, looked up once for the whole batch) not older than $6
// seconds is not inserted and does not come back: FIND_KEYS says what it answered.
// Rows come back in input order, each with its key. The statement comes in two kinds
// (keys.rs chooses): INSERT_KEYED skips an input whose key a task holds (ON CONFLICT),
// as it does one held past its TTL, until RELEASE_KEYS lets it go; INSERT_NEW_KEYS
// leaves out ON CONFLICT, whose look-up and lock before each row are about a tenth of
// what a keyed create costs PostgreSQL, and fails whole (unique_violation) if a task
// holds any of its keys.
macro_rules! insert_keyed {
    ($on_conflict:literal) => {
        concat!(
            "INSERT INTO tasks (title, description, status, idempotency_key, idempotency_fingerprint)
    SELECT title, description, status, key, fingerprint
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[])
        WITH ORDINALITY AS new (title, description, status, key, fingerprint, n)
    WHERE key IS NULL OR key <> ALL (ARRAY(
        SELECT key FROM (SELECT key, created_at FROM idempotency_keys WHERE key = ANY($4)
                         OFFSET 0) AS held
        WHERE created_at >= now() - make_interval(secs => $6)))
    ORDER BY n
    ",
            $on_conflict,
            "RETURNING idempotency_key, ",
            columns!()
        )
    };
}
const INSERT_KEYED_TYPES: &[Type] = &[
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::BYTEA_ARRAY,
    Type::FLOAT8,
];
static INSERT_KEYED: Sql = Sql {
    text: insert_keyed!(
        "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING\n    "
    ),
    types: INSERT_KEYED_TYPES,
};
static INSERT_NEW_KEYS: Sql = Sql {
    text: insert_keyed!(""),
    types: INSERT_KEYED_TYPES,
};
// Each lookup of keys below finds them by their key's index alone (OFFSET 0 keeps the
// subquery apart), and tests their time on what it found: with the time in the same
// WHERE, the planner may pick an index on created_at instead, which on stale
// statistics, just after a burst of keyed creates, walks every key of the last day
// (sql/V3 had such an index for the pruner; V4 dropped it).

// The keys held, not older than $2 seconds, by tasks or by deleted tasks, with the id
// and time of their tasks.
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
// The pruner's walk over tasks, by id (ids go with time: sql/V4), $3 ids from $2 on:
// the keys that at most $4 of them older than $1 seconds hold, let go (rows another
// session holds are skipped); and where the walk goes on: the first task of the span
// not older than that, the first that still holds an expired key (skipped, or past
// $4), and the last id of all.
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
// Where the pruner's walk starts: the first task that holds a key. (OFFSET 0: by the
// key's index, not a walk up the primary key that would pass every task without one.)
static FIRST_KEYED: Sql = Sql {
    text: "SELECT min(id) FROM (SELECT id FROM tasks WHERE idempotency_key IS NOT NULL
                         OFFSET 0) AS keyed",
    types: &[],
};
// Every key held: by the key's index (partial, so it holds keyed tasks only), and the
// deleted tasks' table.
static COUNT_KEYS: Sql = Sql {
    text: "SELECT (SELECT count(*) FROM tasks WHERE idempotency_key IS NOT NULL)
        + (SELECT count(*) FROM idempotency_keys)",
    types: &[],
};
// At most $2 keys of deleted tasks older than $1 seconds; rows another session holds
// are skipped.
static PRUNE_KEYS: Sql = Sql {
    text: "DELETE FROM idempotency_keys WHERE key IN (
        SELECT key FROM idempotency_keys
        WHERE created_at < now() - make_interval(secs => $1)
        ORDER BY created_at LIMIT $2
        FOR UPDATE SKIP LOCKED)",
    types: &[Type::FLOAT8, Type::INT8],
};

impl<'a> FromSql<'a> for Status {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let text = <&str as FromSql>::from_sql(ty, raw)?;
        Status::parse(text).ok_or_else(|| format!("unknown status {text:?} in the database").into())
    }

    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

impl TryFrom<Row> for Task {
    type Error = tokio_postgres::Error;

    fn try_from(row: Row) -> Result<Task, Self::Error> {
        Ok(Task {
            id: row.try_get(0)?,
            title: row.try_get(1)?,
            description: row.try_get(2)?,
            status: row.try_get(3)?,
            created_at: row.try_get(4)?,
            updated_at: row.try_get(5)?,
        })
    }
}

/// Stores several new tasks in one statement, so one commit; answers in input
/// order. All or nothing: one row the database refuses fails them all.
pub async fn insert_many(
    client: &Client,
    new: &[&NewTask],
) -> Result<Vec<Task>, tokio_postgres::Error> {
    let titles: Vec<&str> = new.iter().map(|task| task.title.as_str()).collect();
    let descriptions: Vec<Option<&str>> =
        new.iter().map(|task| task.description.as_deref()).collect();
    let statuses: Vec<&str> = new.iter().map(|task| task.status.as_str()).collect();
    let rows = INSERT_MANY
        .query(client, &[&titles, &descriptions, &statuses])
        .await?;
    let mut tasks = rows
        .into_iter()
        .map(Task::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    tasks.sort_unstable_by_key(|task| task.id);
    Ok(tasks)
}

/// Several tasks by id, in one statement. A row that cannot be decoded is an error
/// for its own id only.
pub async fn find_many(
    client: &Client,
    ids: &[i64],
) -> Result<Vec<(i64, Result<Task, tokio_postgres::Error>)>, tokio_postgres::Error> {
    let rows = FIND_MANY.query(client, &[&ids]).await?;
    rows.into_iter()
        .map(|row| Ok((row.try_get(0)?, Task::try_from(row))))
        .collect()
}

/// Applies each update (no two to the same task), where its task passes its check;
/// the tasks changed, by id.
pub async fn update_many(
    client: &Client,
    updates: &[&Update],
) -> Result<HashMap<i64, Task>, tokio_postgres::Error> {
    let ids: Vec<i64> = updates.iter().map(|u| u.id).collect();
    let titles: Vec<Option<&str>> = updates.iter().map(|u| u.patch.title.as_deref()).collect();
    let set_descriptions: Vec<bool> = updates
        .iter()
        .map(|u| u.patch.description.is_some())
        .collect();
    let descriptions: Vec<Option<&str>> = updates
        .iter()
        .map(|u| u.patch.description.as_ref().and_then(Option::as_deref))
        .collect();
    let statuses: Vec<Option<&str>> = updates
        .iter()
        .map(|u| u.patch.status.map(Status::as_str))
        .collect();
    let (checked, versions, stride) = checks(updates.iter().map(|u| &u.expected));
    let params: [&(dyn ToSql + Sync); 8] = [
        &ids,
        &titles,
        &set_descriptions,
        &descriptions,
        &statuses,
        &checked,
        &versions,
        &stride,
    ];
    let rows = UPDATE_MANY.query(client, &params).await?;
    rows.into_iter()
        .map(|row| {
            let task = Task::try_from(row)?;
            Ok((task.id, task))
        })
        .collect()
}

/// Deletes each task (no two the same) that passes its check; the ids deleted.
pub async fn delete_many(
    client: &Client,
    deletes: &[&Delete],
) -> Result<HashMap<i64, ()>, tokio_postgres::Error> {
    let ids: Vec<i64> = deletes.iter().map(|d| d.id).collect();
    let (checked, versions, stride) = checks(deletes.iter().map(|d| &d.expected));
    let rows = DELETE_MANY
        .query(client, &[&ids, &checked, &versions, &stride])
        .await?;
    rows.into_iter()
        .map(|row| Ok((row.try_get(0)?, ())))
        .collect()
}

/// The If-Match checks of a batch, as the statements take them: whether each change
/// is checked, and the versions each may match, in runs of the same length (the
/// longest list's, at most `conditional::MAX_TAGS`), padded with NULLs.
fn checks<'a>(
    changes: impl Iterator<Item = &'a Precondition> + Clone,
) -> (Vec<bool>, Vec<Option<Timestamp>>, i32) {
    let stride = changes
        .clone()
        .map(|expected| match expected {
            Precondition::UpdatedAt(at) => at.len(),
            Precondition::None | Precondition::Exists => 0,
        })
        .max()
        .unwrap_or(0)
        .max(1);
    let (mut checked, mut versions) = (Vec::new(), Vec::new());
    for expected in changes {
        let listed = match expected {
            Precondition::UpdatedAt(at) => at.as_slice(),
            Precondition::None | Precondition::Exists => &[],
        };
        checked.push(matches!(expected, Precondition::UpdatedAt(_)));
        versions.extend(listed.iter().copied().map(Some));
        versions.extend(std::iter::repeat_n(None, stride - listed.len()));
    }
    (checked, versions, i32::try_from(stride).unwrap_or(i32::MAX))
}

/// An input of a keyed insert: the task, and its key and body fingerprint, if any.
pub struct Keyed<'a> {
    /// What to store.
    pub task: &'a NewTask,
    /// The Idempotency-Key and the fingerprint of its request's body.
    pub claim: Option<(&'a str, &'a [u8])>,
}

/// Stores new tasks with their keys in one statement: `(n, task)` for each input
/// (numbered from 1, no key twice) whose task was stored. An input missing from the
/// answer had its key held already (see [`find_keys`] and [`release_keys`]). If not
/// `skip_held`, a key a task holds fails the statement instead, and nothing is stored.
pub async fn insert_keyed(
    client: &Client,
    inputs: &[Keyed<'_>],
    ttl_secs: f64,
    skip_held: bool,
) -> Result<Vec<(i64, Task)>, tokio_postgres::Error> {
    let titles: Vec<&str> = inputs.iter().map(|i| i.task.title.as_str()).collect();
    let descriptions: Vec<Option<&str>> = inputs
        .iter()
        .map(|i| i.task.description.as_deref())
        .collect();
    let statuses: Vec<&str> = inputs.iter().map(|i| i.task.status.as_str()).collect();
    let keys: Vec<Option<&str>> = inputs.iter().map(|i| i.claim.map(|c| c.0)).collect();
    let prints: Vec<Option<&[u8]>> = inputs.iter().map(|i| i.claim.map(|c| c.1)).collect();
    let params: [&(dyn ToSql + Sync); 6] =
        [&titles, &descriptions, &statuses, &keys, &prints, &ttl_secs];
    let statement = if skip_held {
        &INSERT_KEYED
    } else {
        &INSERT_NEW_KEYS
    };
    let rows = statement.query(client, &params).await?;
    // Rows come back in input order, the inputs whose keys were held missing: each row
    // is the next input with its key (without one: the next input without one).
    let mut next = 0;
    rows.into_iter()
        .map(|row| {
            let key: Option<&str> = row.try_get(0)?;
            let n = match keys[next..].iter().position(|input| *input == key) {
                Some(skipped) => {
                    next += skipped + 1;
                    next as i64
                }
                None => 0,
            };
            let task = Task {
                id: row.try_get(1)?,
                title: row.try_get(2)?,
                description: row.try_get(3)?,
                status: row.try_get(4)?,
                created_at: row.try_get(5)?,
                updated_at: row.try_get(6)?,
            };
            Ok((n, task))
        })
        .collect()
}

/// A key held: the fingerprint of the body it came with, and the task its create
/// stored, by id and time. The rest of what that create answered is the body's, so a
/// retry with the same fingerprint holds it (keys.rs).
pub struct HeldKey {
    /// The Idempotency-Key.
    pub key: String,
    /// The fingerprint of the body it came with.
    pub fingerprint: Vec<u8>,
    /// The id of the task its create stored.
    pub task_id: i64,
    /// When that task was created.
    pub created_at: Timestamp,
}

/// The keys of `keys` held and not older than `ttl_secs`.
pub async fn find_keys(
    client: &Client,
    keys: &[&str],
    ttl_secs: f64,
) -> Result<Vec<HeldKey>, tokio_postgres::Error> {
    let rows = FIND_KEYS.query(client, &[&keys, &ttl_secs]).await?;
    rows.into_iter()
        .map(|row| {
            Ok(HeldKey {
                key: row.try_get(0)?,
                fingerprint: row.try_get(1)?,
                task_id: row.try_get(2)?,
                created_at: row.try_get(3)?,
            })
        })
        .collect()
}

/// Lets go of the keys of `keys` that tasks older than `ttl_secs` hold.
pub async fn release_keys(
    client: &Client,
    keys: &[&str],
    ttl_secs: f64,
) -> Result<u64, tokio_postgres::Error> {
    RELEASE_KEYS.execute(client, &[&keys, &ttl_secs]).await
}

/// One step of the pruner's walk over tasks (RELEASE_EXPIRED).
#[derive(Default)]
pub struct Walked {
    /// Keys let go.
    pub released: u64,
    /// The first task of the span within the TTL.
    pub fresh: Option<i64>,
    /// The first task of the span that still holds an expired key.
    pub left: Option<i64>,
    /// The last id of all.
    pub last: Option<i64>,
}

/// Lets go of the keys that at most `limit` tasks of ids `from` to `from + span - 1`,
/// older than `ttl_secs`, hold; skipping any a request holds.
pub async fn release_expired(
    client: &Client,
    ttl_secs: f64,
    from: i64,
    span: i64,
    limit: i64,
) -> Result<Walked, tokio_postgres::Error> {
    let rows = RELEASE_EXPIRED
        .query(client, &[&ttl_secs, &from, &span, &limit])
        .await?;
    // One row, always.
    let Some(row) = rows.first() else {
        return Ok(Walked::default());
    };
    Ok(Walked {
        released: row.try_get::<_, i64>(0)?.try_into().unwrap_or(0),
        fresh: row.try_get(1)?,
        left: row.try_get(2)?,
        last: row.try_get(3)?,
    })
}

/// The first task that holds a key, if any.
pub async fn first_keyed(client: &Client) -> Result<Option<i64>, tokio_postgres::Error> {
    let rows = FIRST_KEYED.query(client, &[]).await?;
    Ok(match rows.first() {
        Some(row) => row.try_get(0)?,
        None => None,
    })
}

/// How many keys the database holds: tasks' and deleted tasks', expired or not.
pub async fn count_keys(client: &Client) -> Result<i64, tokio_postgres::Error> {
    let rows = COUNT_KEYS.query(client, &[]).await?;
    Ok(match rows.first() {
        Some(row) => row.try_get(0)?,
        None => 0,
    })
}

/// Deletes at most `limit` keys of deleted tasks older than `ttl_secs`, skipping any a
/// request holds; how many went.
pub async fn prune_kept_keys(
    client: &Client,
    ttl_secs: f64,
    limit: i64,
) -> Result<u64, tokio_postgres::Error> {
    PRUNE_KEYS.execute(client, &[&ttl_secs, &limit]).await
}
