//! What a database failure means for a request: [`StoreError`], and the one table of SQLSTATEs
//! ([`unavailable_code`]) behind it and the pool's judgement of a connection. Status codes: http.

use std::sync::Arc;

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use crate::error::describe;
use crate::tasks::Invalid;

/// Why the store failed, for the log only: the error with its chain of causes.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// How a store call failed. `Clone` (causes are shared): one failed batch fails all it served.
/// Displayed for the log: the cause with its chain, never a row's values.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not serve in time, or is gone; try again shortly.
    #[error("unavailable: {}", describe(&**.0))]
    Unavailable(Cause),
    /// The database refused a value the validation let through.
    #[error("refused: {0}")]
    Refused(Invalid),
    /// A write was sent, and no verdict came back: nobody knows whether it happened.
    #[error("outcome unknown: {}", describe(&**.0))]
    Unknown(Cause),
    /// Turned away before anything was sent: too many requests are waiting already.
    #[error("busy: too many requests waiting")]
    Busy,
    #[error("{}", describe(&**.0))]
    Internal(Cause),
}

impl StoreError {
    /// Its kind in one word, as a span's `error.type` gives it.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Refused(_) => "refused",
            StoreError::Unknown(_) => "outcome_unknown",
            StoreError::Busy => "busy",
            StoreError::Internal(_) => "internal",
        }
    }
}

impl From<PoolError> for StoreError {
    fn from(err: PoolError) -> Self {
        match err {
            PoolError::Backend(err) => err.into(),
            PoolError::Timeout(_) | PoolError::Closed => StoreError::Unavailable(Arc::new(err)),
            other => StoreError::Internal(message(describe(&other))),
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        let Some(db) = err.as_db_error() else {
            return match is_connection_lost(&err) {
                true => StoreError::Unavailable(Arc::new(err)),
                false => StoreError::Internal(Arc::new(err)),
            };
        };
        let code = db.code();
        // The code and message only: DETAIL can quote the row ("Key (title)=(…) already
        // exists"), which is the request body, and bodies stay out of the log.
        let refusal = || message(format!("{}: {}", code.code(), db.message()));
        if code == &SqlState::CHECK_VIOLATION {
            // Constraints are named tasks_<field>_check (sql/V1__create_tasks.sql).
            let field =
                db.constraint().and_then(|c| c.strip_prefix("tasks_")?.strip_suffix("_check"));
            refused(field.unwrap_or("body"), "is not allowed")
        } else if code == &SqlState::NOT_NULL_VIOLATION {
            refused(db.column().unwrap_or("body"), "must not be null")
        } else if code == &SqlState::CHARACTER_NOT_IN_REPERTOIRE
            || code == &SqlState::UNTRANSLATABLE_CHARACTER
        {
            refused("body", "holds a character the database cannot store")
        } else if unavailable_code(code).is_some() {
            StoreError::Unavailable(refusal())
        } else {
            StoreError::Internal(refusal())
        }
    }
}

/// No answer: the connection failed or closed, so a statement in flight may have committed.
pub fn is_connection_lost(err: &tokio_postgres::Error) -> bool {
    err.as_db_error().is_none()
        && (err.is_closed()
            || std::error::Error::source(err).is_some_and(|cause| cause.is::<std::io::Error>()))
}

fn refused(field: &str, reason: &'static str) -> StoreError {
    StoreError::Refused(Invalid { field: field.to_owned(), reason })
}

/// What an unavailable database leaves behind: nothing, or a connection no good for the next
/// statement (its server read-only, shutting down, gone, or missing its prepared statements).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spoiled {
    Nothing,
    Connection,
}

/// Whether the database answered a statement that it could not serve now, and what that spoils.
pub fn unavailable(err: &tokio_postgres::Error) -> Option<Spoiled> {
    err.as_db_error().and_then(|db| unavailable_code(db.code()))
}

/// The one table of SQLSTATEs meaning "the database could not serve now, whatever the
/// request held, and did nothing", and what each spoils; `None` for any other code.
fn unavailable_code(code: &SqlState) -> Option<Spoiled> {
    match code.code() {
        // Connection exceptions; admin or crash shutdown, cannot connect now, idle session
        // timeout; read-only transaction; a prepared statement missing or there already.
        class if class.starts_with("08") => Some(Spoiled::Connection),
        "57P01" | "57P02" | "57P03" | "57P05" | "25006" | "26000" | "42P05" => {
            Some(Spoiled::Connection)
        }
        // Serialization failures and deadlocks; out of connections, disk or memory; query
        // cancelled; lock not available.
        class if class.starts_with("40") || class.starts_with("53") => Some(Spoiled::Nothing),
        "57014" | "55P03" => Some(Spoiled::Nothing),
        _ => None,
    }
}

/// Whether a prepared statement was missing (26000) or there already (42P05): a pooler's mark.
pub fn is_lost_statement(err: &tokio_postgres::Error) -> bool {
    let lost = [SqlState::INVALID_SQL_STATEMENT_NAME, SqlState::DUPLICATE_PSTATEMENT];
    err.code().is_some_and(|code| lost.contains(code))
}

/// Whether the database refused a batched statement for what some row held (class 22, data
/// exceptions; 23, integrity), so one by one the other rows get through.
pub fn is_row_refusal(err: &tokio_postgres::Error) -> bool {
    err.as_db_error().is_some_and(|db| matches!(&db.code().code()[..2], "22" | "23"))
}

/// A failure told in words: by the store, or by the database (SQLSTATE and message).
pub fn message(text: impl Into<String>) -> Cause {
    Arc::new(std::io::Error::other(text.into()))
}
