//! The SQL: every statement the store runs, the functions that run each on one
//! connection, and decoding rows into [`Task`]s. Which connection, how many requests a
//! statement serves and how long it may take are decided in store/mod.rs.

use deadpool_postgres::Client;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, Type};

use crate::tasks::{NewTask, Status, Task, TaskPatch};

/// The columns every query returns, in [`Task`]'s order (a macro, so `concat!` can
/// build each statement at compile time).
macro_rules! columns {
    () => {
        "id, title, description, status, created_at, updated_at"
    };
}

const INSERT: &str = concat!(
    "INSERT INTO tasks (title, description, status) VALUES ($1, $2, $3) RETURNING ",
    columns!()
);
const FIND: &str = concat!("SELECT ", columns!(), " FROM tasks WHERE id = $1");
const FIND_MANY: &str = concat!("SELECT ", columns!(), " FROM tasks WHERE id = ANY($1)");
// Rows go in in `n` order, so each takes the next identity value: sorted by id, the
// returned rows are in input order.
const INSERT_MANY: &str = concat!(
    "INSERT INTO tasks (title, description, status)
    SELECT title, description, status
    FROM unnest($1::text[], $2::text[], $3::text[])
        WITH ORDINALITY AS new (title, description, status, n)
    ORDER BY n
    RETURNING ",
    columns!()
);
// A page is read in chunks: the first skips `offset` rows, the next ones start after
// the last id seen (ids are positive, so the first starts after 0).
const LIST: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM tasks WHERE id > $1 ORDER BY id LIMIT $2 OFFSET $3"
);
const LIST_BY_STATUS: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM tasks WHERE status = $1 AND id > $2 ORDER BY id LIMIT $3 OFFSET $4"
);
// $2/$5: NULL keeps the title/status; $3 says whether $4 (possibly NULL) replaces the
// description. On the right-hand side, column names are the old values, so
// `updated_at` moves only when a value actually changes.
const UPDATE: &str = concat!(
    "UPDATE tasks SET
        title = COALESCE($2::text, title),
        description = CASE WHEN $3 THEN $4::text ELSE description END,
        status = COALESCE($5::text, status),
        updated_at = CASE
            WHEN (COALESCE($2::text, title),
                  CASE WHEN $3 THEN $4::text ELSE description END,
                  COALESCE($5::text, status))
                 IS DISTINCT FROM (title, description, status)
            THEN greatest(now(), created_at)
            ELSE updated_at
        END
    WHERE id = $1
    RETURNING ",
    columns!()
);
const DELETE: &str = "DELETE FROM tasks WHERE id = $1";

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

/// Stores a new task.
pub async fn insert(client: &Client, new: &NewTask) -> Result<Task, tokio_postgres::Error> {
    let statement = client.prepare_cached(INSERT).await?;
    let row = client
        .query_one(
            &statement,
            &[&new.title, &new.description, &new.status.as_str()],
        )
        .await?;
    Task::try_from(row)
}

/// Stores several new tasks in one statement, so one commit; answers in input
/// order. All or nothing: one row the database refuses fails them all.
pub async fn insert_many(
    client: &Client,
    new: &[NewTask],
) -> Result<Vec<Task>, tokio_postgres::Error> {
    let statement = client.prepare_cached(INSERT_MANY).await?;
    let titles: Vec<&str> = new.iter().map(|task| task.title.as_str()).collect();
    let descriptions: Vec<Option<&str>> =
        new.iter().map(|task| task.description.as_deref()).collect();
    let statuses: Vec<&str> = new.iter().map(|task| task.status.as_str()).collect();
    let rows = client
        .query(&statement, &[&titles, &descriptions, &statuses])
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
    let statement = client.prepare_cached(FIND_MANY).await?;
    let rows = client.query(&statement, &[&ids]).await?;
    rows.into_iter()
        .map(|row| Ok((row.try_get(0)?, Task::try_from(row))))
        .collect()
}

/// One task, if it exists.
pub async fn find(client: &Client, id: i64) -> Result<Option<Task>, tokio_postgres::Error> {
    let statement = client.prepare_cached(FIND).await?;
    client
        .query_opt(&statement, &[&id])
        .await?
        .map(Task::try_from)
        .transpose()
}

/// Up to `limit` tasks in id order after id `after`, skipping `offset` of them,
/// optionally of one status.
pub async fn list(
    client: &Client,
    status: Option<Status>,
    after: i64,
    limit: i64,
    offset: i64,
) -> Result<Vec<Task>, tokio_postgres::Error> {
    let rows = match status {
        Some(status) => {
            let statement = client.prepare_cached(LIST_BY_STATUS).await?;
            client
                .query(&statement, &[&status.as_str(), &after, &limit, &offset])
                .await?
        }
        None => {
            let statement = client.prepare_cached(LIST).await?;
            client.query(&statement, &[&after, &limit, &offset]).await?
        }
    };
    rows.into_iter().map(Task::try_from).collect()
}

/// Applies a patch; `updated_at` moves only when a value actually changes.
/// `None` when the task does not exist.
pub async fn update(
    client: &Client,
    id: i64,
    patch: &TaskPatch,
) -> Result<Option<Task>, tokio_postgres::Error> {
    if patch.is_empty() {
        return find(client, id).await;
    }
    let statement = client.prepare_cached(UPDATE).await?;
    let description = patch.description.clone().flatten();
    let row = client
        .query_opt(
            &statement,
            &[
                &id,
                &patch.title,
                &patch.description.is_some(),
                &description,
                &patch.status.map(Status::as_str),
            ],
        )
        .await?;
    row.map(Task::try_from).transpose()
}

/// Deletes a task; `false` when there was none.
pub async fn delete(client: &Client, id: i64) -> Result<bool, tokio_postgres::Error> {
    let statement = client.prepare_cached(DELETE).await?;
    Ok(client.execute(&statement, &[&id]).await? == 1)
}
