//! Every SQL statement the store sends, and nowhere else: how one is sent (prepared once
//! per connection and cached, or unnamed behind a transaction-mode pooler), the names
//! their trace spans carry, and decoding rows into [`Task`]s. The task resource's
//! statements are in tasks.rs, Idempotency-Key's in keys.rs. Which connection runs
//! them, and by when, is store/pool.rs's business.

pub mod keys;
pub mod tasks;

use std::sync::atomic::{AtomicUsize, Ordering};

use deadpool_postgres::Client;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql, Type};

use crate::observe::traces::Statement;
use crate::tasks::{Status, Task};

/// The columns every query of tasks returns, in [`Task`]'s order (a macro, so
/// `concat!` can build each statement at compile time).
macro_rules! columns {
    () => {
        "id, title, description, status, created_at, updated_at"
    };
}
pub(crate) use columns;

/// A pooled connection as statements use it: the client, how statements are sent on
/// it, and how many have been answered, so the pool knows whether a failed attempt
/// may go again.
pub struct Conn {
    /// The pooled client.
    pub client: Client,
    /// Statements go unnamed: parsed with each execution in the same round trip, so
    /// nothing has to live on one server connection between transactions.
    pub unnamed: bool,
    /// Statements answered so far on this attempt.
    pub answered: AtomicUsize,
}

/// A statement, and the types of its parameters (what an unnamed one needs).
pub struct Sql {
    pub text: &'static str,
    pub types: &'static [Type],
}

impl Sql {
    /// Runs the statement: prepared once per connection and cached, or unnamed.
    pub async fn query(
        &self,
        conn: &Conn,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let rows = match conn.unnamed {
            true => {
                conn.client
                    .query_typed(self.text, &self.typed(params))
                    .await?
            }
            false => {
                let statement = conn.client.prepare_cached(self.text).await?;
                conn.client.query(&statement, params).await?
            }
        };
        conn.answered.fetch_add(1, Ordering::Relaxed);
        Ok(rows)
    }

    /// Runs the statement for how many rows it touched, as [`Sql::query`] does.
    pub async fn execute(
        &self,
        conn: &Conn,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let touched = match conn.unnamed {
            true => {
                conn.client
                    .execute_typed(self.text, &self.typed(params))
                    .await?
            }
            false => {
                let statement = conn.client.prepare_cached(self.text).await?;
                conn.client.execute(&statement, params).await?
            }
        };
        conn.answered.fetch_add(1, Ordering::Relaxed);
        Ok(touched)
    }

    fn typed<'a>(&self, params: &[&'a (dyn ToSql + Sync)]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
        let types = self.types.iter().cloned();
        params.iter().copied().zip(types).collect()
    }
}

/// What a statement's trace span is named: `{operation} {collection}`.
const fn named(operation: &'static str, collection: Option<&'static str>) -> Statement {
    Statement {
        operation,
        collection,
    }
}

/// `SELECT … FROM tasks`.
pub const SELECT_TASKS: Statement = named("SELECT", Some("tasks"));
/// `INSERT INTO tasks`, keys or not.
pub const INSERT_TASKS: Statement = named("INSERT", Some("tasks"));
/// `UPDATE tasks`.
pub const UPDATE_TASKS: Statement = named("UPDATE", Some("tasks"));
/// `DELETE FROM tasks`.
pub const DELETE_TASKS: Statement = named("DELETE", Some("tasks"));
/// Pruning `idempotency_keys`.
pub const DELETE_KEYS: Statement = named("DELETE", Some("idempotency_keys"));
/// `/ready`'s `SHOW transaction_read_only`.
pub const SHOW: Statement = named("SHOW", None);

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
