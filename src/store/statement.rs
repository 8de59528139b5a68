//! How a statement is sent, and what its trace span calls it. Prepared once per
//! connection and cached, or, behind a transaction-mode pooler
//! (`DATABASE_STATEMENTS=unnamed`, or once a pooler was found to lose prepared ones),
//! unnamed: parsed with each execution in the same round trip, so nothing has to live
//! on one server connection between transactions. The statements themselves are in
//! store/sql.rs.

use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::Client;
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

use crate::observe::traces::Statement;

/// Whether statements go unnamed (the module's doc says when).
static UNNAMED: AtomicBool = AtomicBool::new(false);

/// Whether statements go unnamed now.
pub fn unnamed() -> bool {
    UNNAMED.load(Ordering::Relaxed)
}

/// From now on, statements go unnamed.
pub fn use_unnamed() {
    UNNAMED.store(true, Ordering::Relaxed);
}

/// `SELECT … FROM tasks`, as its trace span names it (`Db::run`).
pub const SELECT_TASKS: Statement = Statement {
    operation: "SELECT",
    collection: Some("tasks"),
};
/// `INSERT INTO tasks`, keys or not.
pub const INSERT_TASKS: Statement = Statement {
    operation: "INSERT",
    collection: Some("tasks"),
};
/// `UPDATE tasks`.
pub const UPDATE_TASKS: Statement = Statement {
    operation: "UPDATE",
    collection: Some("tasks"),
};
/// `DELETE FROM tasks`.
pub const DELETE_TASKS: Statement = Statement {
    operation: "DELETE",
    collection: Some("tasks"),
};
/// Pruning `idempotency_keys`.
pub const DELETE_KEYS: Statement = Statement {
    operation: "DELETE",
    collection: Some("idempotency_keys"),
};
/// `/ready`'s `SHOW transaction_read_only`.
pub const SHOW: Statement = Statement {
    operation: "SHOW",
    collection: None,
};

/// A statement, and the types of its parameters (what an unnamed one needs).
pub struct Sql {
    pub text: &'static str,
    pub types: &'static [Type],
}

impl Sql {
    /// Runs the statement: prepared once per connection and cached, or unnamed.
    pub async fn query(
        &self,
        client: &Client,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        if unnamed() {
            return client.query_typed(self.text, &self.typed(params)).await;
        }
        let statement = client.prepare_cached(self.text).await?;
        client.query(&statement, params).await
    }

    /// Runs the statement for how many rows it touched, as [`Sql::query`] does.
    pub async fn execute(
        &self,
        client: &Client,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        if unnamed() {
            return client.execute_typed(self.text, &self.typed(params)).await;
        }
        let statement = client.prepare_cached(self.text).await?;
        client.execute(&statement, params).await
    }

    fn typed<'a>(&self, params: &[&'a (dyn ToSql + Sync)]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
        params
            .iter()
            .copied()
            .zip(self.types.iter().cloned())
            .collect()
    }
}
