//! The statements of the task resource: find, insert, update and delete many tasks at once (a
//! batch is one statement), and read pages in chunks. Which requests share one: store/tasks.rs.

use std::collections::HashMap;

use jiff::Timestamp;
use tokio_postgres::Error;
use tokio_postgres::types::Type;

use super::{Conn, Param, Sql, columns, task};
use crate::observe::traces::Statement;
use crate::store::{ById, Delete, NewCreate, Precondition, Update};
use crate::tasks::{Status, Task, TaskPatch};

static FIND_MANY: Sql = Sql {
    text: concat!("SELECT ", columns!(), " FROM tasks WHERE id = ANY($1)"),
    types: &[Type::INT8_ARRAY],
};
// Rows go in in `n` order, each taking the next identity value: by id, rows are in input order.
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
// Changes to several tasks, one row of arrays each: $2/$5 NULL keep the title/status; $3 says
// whether $4 replaces the description; $6 whether If-Match is checked, atomically, against the
// n-th run of $8 elements of $7. `t.id = ANY($1)` lets the planner fetch rows by primary key.
// `updated_at` moves only when a value changes, and always forward: it (the ETag) names a version.
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
// Deletes, checked as UPDATE_MANY's changes are. A deleted task's Idempotency-Key moves to
// idempotency_keys: a retry of its create is answered as it was, storing nothing, until it expires.
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
    types: &[Type::INT8_ARRAY, Type::BOOL_ARRAY, Type::TIMESTAMPTZ_ARRAY, Type::INT4],
};
// A page is read in chunks, each after the last id seen (ids are positive: the first starts
// after 0). A first chunk that skips `offset` rows is read alone, by these two.
static LIST: Sql = Sql {
    text: concat!(
        "SELECT ",
        columns!(),
        " FROM tasks WHERE id > $1 ORDER BY id LIMIT $2 OFFSET $3"
    ),
    types: &[Type::INT8, Type::INT8, Type::INT8],
};
static LIST_BY_STATUS: Sql = Sql {
    text: concat!(
        "SELECT ",
        columns!(),
        " FROM tasks WHERE status = $1 AND id > $2 ORDER BY id LIMIT $3 OFFSET $4"
    ),
    types: &[Type::TEXT, Type::INT8, Type::INT8, Type::INT8],
};
// Chunks without an offset, of several pages at once: an element of each array per chunk, each
// row with its chunk's place (from 1). The scan's LIMIT is the constant CHUNK_ROWS, each chunk's
// a filter above: with `LIMIT q.lim` the planner guesses a tenth of the table, and on a large
// table that guess makes PostgreSQL JIT-compile the statement, every time. By status, a chunk is
// a range of the (status, id) index, however few tasks have the status (docs/decisions.md).
macro_rules! chunks {
    ($arrays:literal, $names:literal, $scan:literal) => {
        concat!(
            "SELECT t.id, t.title, t.description, t.status, t.created_at, t.updated_at, q.n
    FROM unnest(",
            $arrays,
            ") WITH ORDINALITY AS q (",
            $names,
            ", n)
    CROSS JOIN LATERAL (
        SELECT *, row_number() OVER (ORDER BY id) AS r
        FROM (SELECT ",
            columns!(),
            " FROM tasks WHERE ",
            $scan,
            " LIMIT 32) s) t
    WHERE t.r <= q.lim"
        )
    };
}
static LIST_MANY: Sql = Sql {
    text: chunks!("$1::int8[], $2::int8[]", "after, lim", "id > q.after ORDER BY id"),
    types: &[Type::INT8_ARRAY, Type::INT8_ARRAY],
};
static LIST_MANY_BY_STATUS: Sql = Sql {
    text: chunks!(
        "$1::int8[], $2::int8[], $3::text[]",
        "after, lim, status",
        "status = ANY(ARRAY[q.status]) AND id > q.after ORDER BY status, id"
    ),
    types: &[Type::INT8_ARRAY, Type::INT8_ARRAY, Type::TEXT_ARRAY],
};

/// One chunk of a page: up to `limit` tasks (at most [`CHUNK_ROWS`]) in id order after id
/// `after`, of one status or any.
#[derive(Clone, Copy, Debug)]
pub struct Read {
    pub status: Option<Status>,
    pub after: i64,
    pub limit: i64,
}

/// Stores new tasks in one statement (one commit), answered in input order; all or nothing.
pub async fn insert_many(conn: &Conn, creates: &[NewCreate]) -> Result<Vec<Task>, Error> {
    let titles: Vec<&str> = creates.iter().map(|c| c.task.title.as_str()).collect();
    let descriptions: Vec<Option<&str>> =
        creates.iter().map(|c| c.task.description.as_deref()).collect();
    let statuses: Vec<&str> = creates.iter().map(|c| c.task.status.as_str()).collect();
    let rows = INSERT_MANY.query(conn, &[&titles, &descriptions, &statuses]).await?;
    let mut tasks = rows.iter().map(task).collect::<Result<Vec<_>, _>>()?;
    tasks.sort_unstable_by_key(|task| task.id);
    Ok(tasks)
}

/// Several tasks by id. A row that cannot be decoded is an error for its own id only.
pub async fn find_many(conn: &Conn, ids: &[i64]) -> Result<Vec<(i64, Result<Task, Error>)>, Error> {
    let rows = FIND_MANY.query(conn, &[&ids]).await?;
    rows.iter().map(|row| Ok((row.try_get(0)?, task(row)))).collect()
}

/// A kind of change to tasks by id, as one statement makes many: a [`TaskPatch`] (`PATCH`,
/// UPDATE_MANY) or `()` (`DELETE`, DELETE_MANY); what it gives back for a task changed.
pub trait Kind: Sized + Send + Sync + 'static {
    type Done: Clone + Send + 'static;
    const STATEMENT: Statement;
    /// Runs `changes` (no two of the same task) as one statement: what each changed task
    /// gave, by id. A change whose task is missing, or fails its check, is absent.
    fn run(
        conn: &Conn,
        changes: &[&ById<Self>],
    ) -> impl Future<Output = Result<HashMap<i64, Self::Done>, Error>> + Send;
}

impl Kind for TaskPatch {
    type Done = Task;
    const STATEMENT: Statement = super::UPDATE_TASKS;

    async fn run(conn: &Conn, updates: &[&Update]) -> Result<HashMap<i64, Task>, Error> {
        let (ids, checked, versions, stride) = checks(updates);
        let titles: Vec<Option<&str>> = updates.iter().map(|u| u.patch.title.as_deref()).collect();
        let set: Vec<bool> = updates.iter().map(|u| u.patch.description.is_some()).collect();
        let descriptions: Vec<Option<&str>> = (updates.iter())
            .map(|u| u.patch.description.as_ref().and_then(Option::as_deref))
            .collect();
        let statuses: Vec<Option<&str>> =
            updates.iter().map(|u| u.patch.status.map(Status::as_str)).collect();
        let params: [Param; 8] =
            [&ids, &titles, &set, &descriptions, &statuses, &checked, &versions, &stride];
        let rows = UPDATE_MANY.query(conn, &params).await?;
        rows.iter().map(|row| task(row).map(|task| (task.id, task))).collect()
    }
}

impl Kind for () {
    type Done = ();
    const STATEMENT: Statement = super::DELETE_TASKS;

    async fn run(conn: &Conn, deletes: &[&Delete]) -> Result<HashMap<i64, ()>, Error> {
        let (ids, checked, versions, stride) = checks(deletes);
        let rows = DELETE_MANY.query(conn, &[&ids, &checked, &versions, &stride]).await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, ()))).collect()
    }
}

/// A batch of changes' ids and If-Match checks, as the statements take them: whether each
/// is checked, and its versions in runs of the longest list's length, padded with NULLs.
fn checks<K>(changes: &[&ById<K>]) -> (Vec<i64>, Vec<bool>, Vec<Option<Timestamp>>, i32) {
    let listed = |change: &ById<K>| match &change.expected {
        Precondition::UpdatedAt(at) => at.len(),
        Precondition::None | Precondition::Exists => 0,
    };
    let stride = changes.iter().map(|change| listed(change)).fold(1, usize::max);
    let mut versions = Vec::with_capacity(changes.len() * stride);
    for change in changes {
        if let Precondition::UpdatedAt(at) = &change.expected {
            versions.extend(at.iter().copied().map(Some));
        }
        versions.extend(std::iter::repeat_n(None, stride - listed(change)));
    }
    let checked = changes.iter().map(|c| matches!(c.expected, Precondition::UpdatedAt(_)));
    let ids = changes.iter().map(|change| change.id).collect();
    (ids, checked.collect(), versions, i32::try_from(stride).unwrap_or(i32::MAX))
}

/// One chunk that skips `offset` tasks, alone.
pub async fn list(conn: &Conn, read: &Read, offset: i64) -> Result<Vec<Task>, Error> {
    let (after, limit) = (read.after, read.limit);
    let rows = match read.status {
        Some(status) => {
            LIST_BY_STATUS.query(conn, &[&status.as_str(), &after, &limit, &offset]).await?
        }
        None => LIST.query(conn, &[&after, &limit, &offset]).await?,
    };
    rows.iter().map(task).collect()
}

/// Several chunks without an offset at once, all with a status or all without: each read's
/// tasks, in id order, in the order of `reads`.
pub async fn list_many(conn: &Conn, reads: &[Read]) -> Result<Vec<Vec<Task>>, Error> {
    let afters: Vec<i64> = reads.iter().map(|read| read.after).collect();
    let limits: Vec<i64> = reads.iter().map(|read| read.limit).collect();
    let rows = match reads.first().is_some_and(|read| read.status.is_some()) {
        true => {
            let statuses: Vec<Option<&str>> =
                reads.iter().map(|read| read.status.map(Status::as_str)).collect();
            LIST_MANY_BY_STATUS.query(conn, &[&afters, &limits, &statuses]).await?
        }
        false => LIST_MANY.query(conn, &[&afters, &limits]).await?,
    };
    let mut pages: Vec<Vec<Task>> = vec![Vec::new(); reads.len()];
    for row in rows {
        let n: i64 = row.try_get(6)?;
        // `n` counts from 1 over `reads`, so it always has a place.
        if let Some(page) = usize::try_from(n - 1).ok().and_then(|at| pages.get_mut(at)) {
            page.push(task(&row)?);
        }
    }
    pages.iter_mut().for_each(|page| page.sort_unstable_by_key(|task| task.id));
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::{LIST_MANY, LIST_MANY_BY_STATUS};
    use crate::store::CHUNK_ROWS;

    #[test]
    fn a_batched_chunk_reads_chunk_rows_at_most() {
        for sql in [&LIST_MANY, &LIST_MANY_BY_STATUS] {
            assert!(sql.text.contains(&format!(" LIMIT {CHUNK_ROWS})")), "{}", sql.text);
        }
    }
}
