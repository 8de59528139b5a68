//! Every SQL statement the store sends, and nowhere else: how one is sent (prepared and cached
//! per connection, or unnamed behind a transaction-mode pooler), its trace span's name, and the
//! row decoder; the tasks' statements in tasks.rs, the keys' in keys.rs. Where, by when: pool.rs.

pub mod keys;
pub mod tasks;

use std::error::Error as StdError;
use std::sync::atomic::{AtomicUsize, Ordering};

use deadpool_postgres::Client;
use tokio_postgres::types::{FromSql, ToSql, Type};
use tokio_postgres::{Error, Row, SimpleQueryRow};

use crate::observe::traces::Statement;
use crate::pg::connect::rows;
use crate::tasks::{Status, Task};

/// The columns every query of tasks returns, in [`Task`]'s order (a macro, for `concat!`).
macro_rules! columns {
    () => {
        "id, title, description, status, created_at, updated_at"
    };
}
pub(crate) use columns;

/// A pooled connection as statements use it: the client; whether statements go unnamed (parsed
/// with each execution, so nothing lives on one server connection between transactions); and
/// how many were answered on this attempt, so the pool knows whether it may go again.
pub struct Conn {
    pub client: Client,
    pub unnamed: bool,
    pub answered: AtomicUsize,
}

type Param<'a> = &'a (dyn ToSql + Sync);

/// A statement, and the types of its parameters (what an unnamed one needs).
pub struct Sql {
    pub text: &'static str,
    pub types: &'static [Type],
}

impl Sql {
    /// Runs the statement: prepared once per connection and cached, or unnamed.
    pub async fn query(&self, conn: &Conn, params: &[Param<'_>]) -> Result<Vec<Row>, Error> {
        let client = &conn.client;
        let rows = match conn.unnamed {
            true => {
                let typed: Vec<_> =
                    params.iter().copied().zip(self.types.iter().cloned()).collect();
                client.query_typed(self.text, &typed).await?
            }
            false => client.query(&client.prepare_cached(self.text).await?, params).await?,
        };
        conn.answered.fetch_add(1, Ordering::Relaxed);
        Ok(rows)
    }

    /// The first column of the first row, if any.
    pub async fn value<T>(&self, conn: &Conn, params: &[Param<'_>]) -> Result<Option<T>, Error>
    where
        T: for<'a> FromSql<'a>,
    {
        self.query(conn, params).await?.first().map(|row| row.try_get(0)).transpose()
    }
}

/// What a statement's trace span is named: `{operation} {collection}`.
const fn named(operation: &'static str, collection: Option<&'static str>) -> Statement {
    Statement { operation, collection }
}

pub const SELECT_TASKS: Statement = named("SELECT", Some("tasks"));
pub const INSERT_TASKS: Statement = named("INSERT", Some("tasks")); // keyed or not
pub const UPDATE_TASKS: Statement = named("UPDATE", Some("tasks"));
pub const DELETE_TASKS: Statement = named("DELETE", Some("tasks"));
pub const DELETE_KEYS: Statement = named("DELETE", Some("idempotency_keys")); // the pruner's
pub const SHOW: Statement = named("SHOW", None); // /ready's read-only check, the standbys' probe

impl<'a> FromSql<'a> for Status {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        let text = <&str as FromSql>::from_sql(ty, raw)?;
        Status::parse(text).ok_or_else(|| format!("unknown status {text:?} in the database").into())
    }

    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

/// The task in a row that starts with [`columns!`]: the one row decoder.
pub fn task(row: &Row) -> Result<Task, Error> {
    Ok(Task {
        id: row.try_get(0)?,
        title: row.try_get(1)?,
        description: row.try_get(2)?,
        status: row.try_get(3)?,
        created_at: row.try_get(4)?,
        updated_at: row.try_get(5)?,
    })
}

/// The first row of a simple query (text fields), if any.
async fn first_row(conn: &Conn, query: &str) -> Result<Option<SimpleQueryRow>, Error> {
    Ok(rows(&conn.client, query).await?.into_iter().next())
}

/// `0/16B3748` as a number.
fn lsn(text: Option<&str>) -> Option<u64> {
    let (high, low) = text?.split_once('/')?;
    Some(u64::from_str_radix(high, 16).ok()? << 32 | u64::from_str_radix(low, 16).ok()?)
}

/// The primary's system identifier, timeline and WAL position; `None` on a standby.
pub async fn primary_position(conn: &Conn) -> Result<Option<(u64, u64, u64)>, Error> {
    let sql =
        "SELECT system_identifier, pg_walfile_name(pg_current_wal_lsn()), pg_current_wal_lsn()
        FROM pg_control_system() WHERE NOT pg_is_in_recovery()";
    let Some(row) = first_row(conn, sql).await? else { return Ok(None) };
    // The WAL file's name starts with the timeline, in 8 hex digits.
    let timeline = row.get(1).and_then(|name| u64::from_str_radix(name.get(..8)?, 16).ok());
    let system = row.get(0).and_then(|id| id.parse::<i64>().ok());
    Ok(system.zip(timeline).zip(lsn(row.get(2))).map(|((s, t), l)| (s as u64, t, l)))
}

/// A standby's system identifier and replayed WAL position; `None` if promoted or yet to replay.
pub async fn standby_position(conn: &Conn) -> Result<Option<(u64, u64)>, Error> {
    let sql = "SELECT system_identifier, pg_last_wal_replay_lsn()
        FROM pg_control_system() WHERE pg_is_in_recovery()";
    let Some(row) = first_row(conn, sql).await? else { return Ok(None) };
    let system = row.get(0).and_then(|id| id.parse::<i64>().ok());
    Ok(system.zip(lsn(row.get(1))).map(|(s, l)| (s as u64, l)))
}

/// Whether the server takes no writes (a standby), for `/ready`.
pub async fn read_only(conn: &Conn) -> Result<bool, Error> {
    let row = first_row(conn, "SHOW transaction_read_only").await?;
    Ok(row.is_some_and(|row| row.get(0) == Some("on")))
}

/// Where the primary is inserting WAL now: at or past every commit it has made.
pub async fn insert_position(conn: &Conn) -> Option<u64> {
    lsn(first_row(conn, "SELECT pg_current_wal_insert_lsn()").await.ok()??.get(0))
}
