//! `GET /tasks` in the store: its statements, and the batchers that read the chunks
//! of concurrent pages by one statement, one for pages of any status and one for pages
//! of one status, so each can use its index. Cutting a page into chunks, and reading a
//! first chunk with an offset alone, is store/mod.rs's business.

use std::sync::Arc;

use deadpool_postgres::Client;
use prometheus_client::metrics::histogram::Histogram;
use tokio_postgres::types::{ToSql, Type};

use super::CHUNK_ROWS;
use super::StoreError;
use super::batch::Batcher;
use super::budget::{Db, Effect};
use super::sql::columns;
use super::statement::{self, Sql};
use crate::tasks::{Status, Task};

/// Most chunks one statement reads: what it holds at once is at most this many
/// chunks of [`CHUNK_ROWS`] rows (256), as many as a pool of 8 read one at a time.
pub const MOST_CHUNKS: usize = 256 / CHUNK_ROWS as usize;

/// One chunk of a page without an offset: up to `limit` tasks (at most
/// [`CHUNK_ROWS`]) in id order after id `after`, of one status or any.
#[derive(Debug)]
pub struct Read {
    pub status: Option<Status>,
    pub after: i64,
    pub limit: i64,
}

/// The batched read behind [`super::Store::list`]: every read queued now, all with a
/// status (`by_status`) or all without, by one statement.
pub fn lister(
    db: Arc<Db>,
    lanes: usize,
    sizes: Histogram,
    by_status: bool,
) -> Batcher<Read, Vec<Task>> {
    Batcher::for_reads(lanes, MOST_CHUNKS, move |reads: Vec<Read>, deadline| {
        sizes.observe(reads.len() as f64);
        let db = db.clone();
        async move {
            let list = async |client: &_| list_many(client, &reads, by_status).await;
            match db
                .run(statement::SELECT_TASKS, deadline, Effect::Reads, list)
                .await
            {
                Ok(pages) => pages.into_iter().map(Ok).collect(),
                Err(failure) => vec![Err(StoreError::from(failure)); reads.len()],
            }
        }
    })
}

// A page is read in chunks: the first skips `offset` rows, the next ones start after
// the last id seen (ids are positive, so the first starts after 0). A first chunk with
// an offset is read alone, by LIST or LIST_BY_STATUS.
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
// Chunks without an offset, of several pages at once: one element of each array per
// chunk (after, limit; and status, by status); every row comes with its chunk's place
// in the arrays, counted from 1. The index scan's LIMIT is the constant CHUNK_ROWS and
// each chunk's own limit a filter above it: with `LIMIT q.lim` the planner, not knowing
// the limit, guesses a tenth of the table, and once the table is large enough that
// guess makes PostgreSQL JIT-compile the statement, some milliseconds, every time.
macro_rules! chunks {
    ($arrays:literal, $names:literal, $filter:literal) => {
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
            $filter,
            " ORDER BY id LIMIT 32) s) t
    WHERE t.r <= q.lim"
        )
    };
}
static LIST_MANY: Sql = Sql {
    text: chunks!("$1::int8[], $2::int8[]", "after, lim", "id > q.after"),
    types: &[Type::INT8_ARRAY, Type::INT8_ARRAY],
};
static LIST_MANY_BY_STATUS: Sql = Sql {
    text: chunks!(
        "$1::int8[], $2::int8[], $3::text[]",
        "after, lim, status",
        "status = q.status AND id > q.after"
    ),
    types: &[Type::INT8_ARRAY, Type::INT8_ARRAY, Type::TEXT_ARRAY],
};

/// Up to `limit` tasks in id order after id `after`, skipping `offset` of them,
/// optionally of one status: one chunk, alone.
pub async fn list(
    client: &Client,
    status: Option<Status>,
    after: i64,
    limit: i64,
    offset: i64,
) -> Result<Vec<Task>, tokio_postgres::Error> {
    let rows = match status {
        Some(status) => {
            let params: [&(dyn ToSql + Sync); 4] = [&status.as_str(), &after, &limit, &offset];
            LIST_BY_STATUS.query(client, &params).await?
        }
        None => LIST.query(client, &[&after, &limit, &offset]).await?,
    };
    rows.into_iter().map(Task::try_from).collect()
}

/// Several chunks without an offset (each `limit` at most 32) at once, all with a
/// status or all without: each read's tasks, in id order, in the order of `reads`.
pub async fn list_many(
    client: &Client,
    reads: &[Read],
    by_status: bool,
) -> Result<Vec<Vec<Task>>, tokio_postgres::Error> {
    let afters: Vec<i64> = reads.iter().map(|read| read.after).collect();
    let limits: Vec<i64> = reads.iter().map(|read| read.limit).collect();
    let rows = match by_status {
        true => {
            let statuses: Vec<Option<&str>> = reads
                .iter()
                .map(|read| read.status.map(Status::as_str))
                .collect();
            let params: [&(dyn ToSql + Sync); 3] = [&afters, &limits, &statuses];
            LIST_MANY_BY_STATUS.query(client, &params).await?
        }
        false => LIST_MANY.query(client, &[&afters, &limits]).await?,
    };
    let mut pages: Vec<Vec<Task>> = reads.iter().map(|_| Vec::new()).collect();
    for row in rows {
        let n: i64 = row.try_get(6)?;
        let task = Task::try_from(row)?;
        // `n` counts from 1 over `reads`, so it always has a place.
        if let Some(page) = usize::try_from(n - 1).ok().and_then(|at| pages.get_mut(at)) {
            page.push(task);
        }
    }
    for page in &mut pages {
        page.sort_unstable_by_key(|task| task.id);
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::{CHUNK_ROWS, LIST_MANY, LIST_MANY_BY_STATUS};

    #[test]
    fn a_batched_chunk_reads_chunk_rows_at_most() {
        for sql in [&LIST_MANY, &LIST_MANY_BY_STATUS] {
            assert!(
                sql.text.contains(&format!(" LIMIT {CHUNK_ROWS})")),
                "{}",
                sql.text
            );
        }
    }
}
