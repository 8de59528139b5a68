//! Reads: where one goes (a standby replicas.rs picks, with the primary to fall back on),
//! and `GET /tasks`'s pages read a chunk at a time. What a read's batch runs is tasks.rs's.

use std::time::Duration;

use super::pool::{Deadline, Effect};
use super::replicas::Target;
use super::sql::tasks::Read;
use super::sql::{self, Conn};
use super::tasks::Reads;
use super::{Store, StoreError};
use crate::tasks::{ListQuery, Status, Task};

/// How long a read may take on a standby before the primary serves it instead.
const STANDBY_BUDGET: Duration = Duration::from_secs(1);
/// Most rows one list statement reads: what a page holds in memory at once, however slowly its
/// client reads. A page is at most 1,000 tasks of up to 5,200 characters each; so read, it
/// costs a few hundred KiB whatever its size.
pub const CHUNK_ROWS: i64 = 32;

/// Part of a page of tasks, in id order, and where the rest of it starts if there may be more.
pub struct Chunk {
    pub tasks: Vec<Task>,
    pub more: Option<Cursor>,
}

/// Where the rest of a page starts ([`Store::list_more`]) and is read. A page never holds a task
/// twice and keeps id order, but is not one snapshot: tasks may come and go between chunks.
#[derive(Clone, Copy, Debug)]
pub struct Cursor {
    status: Option<Status>,
    after: i64,
    left: i64,
    target: Target,
}

impl Store {
    /// One task, if it exists, read where `token` (a write's consistency token) allows.
    pub async fn get(&self, id: i64, token: Option<&str>) -> Result<Option<Task>, StoreError> {
        let target = self.target(token).await;
        self.read(target, |reads, deadline| reads.finder.submit(id, deadline)).await
    }

    async fn target(&self, token: Option<&str>) -> Target {
        let Some(standbys) = &self.standbys else { return Target::Primary };
        // Boxed: its check on the primary would add 3 KiB to every read in flight.
        Box::pin(standbys.choose(token)).await
    }

    /// Runs `read` where `target` says: a standby that cannot serve it (down, busy, or too slow
    /// for [`STANDBY_BUDGET`]) costs the client nothing, as the primary serves it then.
    async fn read<'a, T, F: Future<Output = Result<T, StoreError>>>(
        &'a self,
        target: Target,
        read: impl Fn(&'a Reads, Deadline) -> F,
    ) -> F::Output {
        let deadline = Deadline::start();
        if let Target::Standby(n) = target {
            let answer = read(&self.reads[n + 1], Deadline::after(STANDBY_BUDGET).min(deadline));
            let answer = answer.await;
            if !matches!(answer, Err(StoreError::Unavailable(_) | StoreError::Busy)) {
                self.standbys.as_ref().inspect(|standbys| standbys.served(target));
                return answer;
            }
        }
        self.standbys.as_ref().inspect(|standbys| standbys.served(Target::Primary));
        read(&self.reads[0], deadline).await
    }

    /// The consistency token of the writes answered so far: a read that sends it back sees them.
    pub fn token(&self) -> Option<String> {
        self.standbys.as_ref()?.token(self.pool.written()?)
    }

    /// The first chunk of a page of tasks in id order, and a [`Cursor`] to the rest.
    pub async fn list(&self, query: &ListQuery, token: Option<&str>) -> Result<Chunk, StoreError> {
        let target = self.target(token).await;
        let cursor = Cursor { status: query.status, after: 0, left: query.limit, target };
        self.chunk(cursor, query.offset).await
    }

    /// The next chunk of a page, with a fresh budget: a slow reader holds no connection.
    pub async fn list_more(&self, cursor: Cursor) -> Result<Chunk, StoreError> {
        self.chunk(cursor, 0).await
    }

    async fn chunk(&self, cursor: Cursor, offset: i64) -> Result<Chunk, StoreError> {
        let limit = cursor.left.min(CHUNK_ROWS);
        let read = Read { status: cursor.status, after: cursor.after, limit };
        let tasks = self.read(cursor.target, |reads, deadline| async move {
            match offset > 0 {
                // Rare, and an offset would cost the batched statement its plan: alone.
                true => {
                    let list = async |conn: &Conn| sql::tasks::list(conn, &read, offset).await;
                    Ok(reads.pool.run(sql::SELECT_TASKS, deadline, Effect::Reads, list).await?)
                }
                false if read.status.is_some() => reads.status_lister.submit(read, deadline).await,
                false => reads.lister.submit(read, deadline).await,
            }
        });
        let tasks = tasks.await?;
        let left = cursor.left - tasks.len() as i64;
        let full = tasks.len() as i64 == limit && left > 0;
        let more =
            tasks.last().filter(|_| full).map(|last| Cursor { after: last.id, left, ..cursor });
        Ok(Chunk { tasks, more })
    }
}
