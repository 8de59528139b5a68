//! `GET /tasks` in the store: the chunks of concurrent pages read by one statement,
//! one for pages of any status and one for pages of one status, so each can use its
//! index. Cutting a page into chunks, and reading a first chunk with an offset alone,
//! is store/mod.rs's business.

use std::sync::Arc;

use prometheus_client::metrics::histogram::Histogram;

use super::StoreError;
use super::batch::Batcher;
use super::budget::{Db, Effect};
use super::{CHUNK_ROWS, sql, statement};
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
            let list = async |client: &_| sql::list_many(client, &reads, by_status).await;
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
