//! The connection pool, and the 5 s budget (spec §2): a request gets a [`Deadline`] when it
//! reaches the store, and waiting for a batch, a connection and its statements all count
//! against it. One mechanism enforces it: just before the deadline a statement still running
//! is cancelled, and a write then waits for the verdict, so an error means nothing was written.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use deadpool_postgres::{Object, Runtime};
use tokio::time::Instant;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error::{self, StoreError, message};
use super::in_flight::InFlight;
use super::sql::Conn;
use crate::error::describe;
use crate::observe::metrics::PoolState;
use crate::observe::traces::{self, Statement};
use crate::pg::DbOptions;

/// How long a request may wait for the database before it fails (spec §2).
pub const REQUEST_BUDGET: Duration = Duration::from_secs(5);
/// A statement still running this long before its deadline is cancelled, so the
/// verdict is back in time.
const CANCEL_MARGIN: Duration = Duration::from_millis(50);
/// With less than this left before the cancel, a statement is not started.
const LEAST_STATEMENT_TIME: Duration = Duration::from_millis(10);
/// How long past its deadline a write waits for a database that stopped answering (TCP
/// keepalive may yet report the connection dead) before its outcome is given up as unknown.
const VERDICT_GRACE: Duration = Duration::from_secs(2);
/// Requests that may wait for each pooled connection before the next is turned away (503).
const WAITERS_PER_CONNECTION: usize = 32;

/// The request's budget ran out before the database could serve it: nothing was written.
#[derive(Debug)]
pub struct OutOfTime;

impl fmt::Display for OutOfTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no answer within the request's {REQUEST_BUDGET:?} budget")
    }
}

impl std::error::Error for OutOfTime {}

impl From<OutOfTime> for StoreError {
    fn from(err: OutOfTime) -> Self {
        StoreError::Unavailable(Arc::new(err))
    }
}

/// Why [`Pool::run`] failed: a statement's own error, kept whole so the caller can
/// judge it (a refused row is retried alone), or anything else.
#[derive(Debug)]
pub enum Failure {
    /// The database answered a statement with this error.
    Statement(tokio_postgres::Error),
    /// No connection, no time, or no verdict.
    Other(StoreError),
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Statement(err) => err.into(),
            Failure::Other(err) => err,
        }
    }
}

/// When a request's budget runs out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(Instant);

impl Deadline {
    /// A request's deadline: [`REQUEST_BUDGET`] from now.
    pub fn start() -> Deadline {
        Deadline::after(REQUEST_BUDGET)
    }

    /// A deadline `budget` from now.
    pub fn after(budget: Duration) -> Deadline {
        Deadline(Instant::now() + budget)
    }

    /// When a statement still running is cancelled.
    fn cancel_at(self) -> Instant {
        self.0 - CANCEL_MARGIN
    }

    /// Whether there is still time to start a statement.
    pub fn has_time(self) -> bool {
        self.cancel_at().saturating_duration_since(Instant::now()) >= LEAST_STATEMENT_TIME
    }
}

/// What a lost verdict means: for a read, no answer; for a write, nobody knows if it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Reads only: past the deadline, the request fails as unavailable.
    Reads,
    /// Writes: the request waits for the verdict, [`VERDICT_GRACE`] past the deadline at
    /// most, then fails as unknown.
    Writes,
}

/// The database as the store uses it: the pool, what a cancel request needs, and how
/// statements are sent.
pub struct Pool {
    pool: deadpool_postgres::Pool,
    tls: MakeRustlsConnect,
    /// Statements go unnamed: from the start (`DATABASE_STATEMENTS=unnamed`), or once a
    /// pooler in transaction mode was found to lose prepared ones.
    unnamed: AtomicBool,
    /// With standbys to read from: the WAL position after the newest write committed by
    /// this pool (a write's consistency token names at least its commit).
    written: Option<AtomicU64>,
}

impl Pool {
    /// A pool of at most `max_size` connections to `db`, its waits bounded by
    /// [`REQUEST_BUDGET`] too; with `track_writes`, each write is followed by a look at the
    /// WAL position ([`Pool::written`]).
    pub fn open(
        db: &DbOptions,
        max_size: usize,
        unnamed: bool,
        track_writes: bool,
    ) -> Result<Pool, String> {
        let pool = deadpool_postgres::Pool::builder(db.manager())
            .max_size(max_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(REQUEST_BUDGET))
            .create_timeout(Some(REQUEST_BUDGET))
            .recycle_timeout(Some(REQUEST_BUDGET))
            .build()
            .map_err(|err| format!("database pool: {err}"))?;
        let unnamed = AtomicBool::new(unnamed);
        let (tls, written) = (db.tls(), track_writes.then(|| AtomicU64::new(0)));
        Ok(Pool { pool, tls, unnamed, written })
    }

    /// The WAL position after the newest write this pool committed, if it tracks them.
    pub fn written(&self) -> Option<u64> {
        self.written.as_ref().map(|lsn| lsn.load(Ordering::Relaxed))
    }

    /// Opens the first connection now, so the first request does not pay for it.
    pub async fn warm_up(&self) {
        if let Err(err) = self.pool.get().await {
            let err = StoreError::from(err);
            log::warn!("could not open a pooled database connection yet: {err}");
        }
    }

    /// The pool as of now.
    pub fn state(&self) -> PoolState {
        let status = self.pool.status();
        PoolState { size: status.size, available: status.available, waiting: status.waiting }
    }

    /// Closes the pool: idle connections now, busy ones when they come back.
    pub fn close(&self) {
        self.pool.close();
    }

    /// Runs `work` on a pooled connection by `deadline`, and gives the database's verdict;
    /// should that not come in time ([`Effect`]), or the caller stop waiting, the statement
    /// is cancelled. A connection a failover made read-only is closed with the idle ones
    /// (new ones find the new primary); a prepared statement a pooler lost before anything
    /// ran sends `work` again at once, unnamed. `statement` names the trace span, if any.
    pub async fn run<T>(
        &self,
        statement: Statement,
        deadline: Deadline,
        effect: Effect,
        work: impl AsyncFnOnce(&Conn) -> Result<T, tokio_postgres::Error> + Clone,
    ) -> Result<T, Failure> {
        let mut span = traces::statement(statement);
        let (mut result, sent) = self.attempt(deadline, effect, work.clone()).await;
        if let Err(Failure::Statement(err)) = &result
            && error::is_lost_statement(err)
            && let Some(0) = sent
        {
            if !self.unnamed.swap(true, Ordering::Relaxed) {
                log::error!(
                    "a prepared statement was lost between transactions: a connection pooler \
                     in transaction mode (PgBouncer before 1.21, a hosted \"pooled\" URL) is \
                     between task-api and PostgreSQL. Statements go unnamed from now on; set \
                     DATABASE_STATEMENTS=unnamed to start so, or use the database's direct \
                     endpoint"
                );
            }
            // Nothing of `work` ran: it goes again at once, unnamed.
            result = self.attempt(deadline, effect, work).await.0;
        }
        if let (Some(span), Err(failure)) = (&mut span, &result) {
            match failure {
                Failure::Statement(err) => {
                    // Semantic conventions: the SQLSTATE is the error's type.
                    let code = err.code().map(|code| code.code().to_owned());
                    if let Some(code) = &code {
                        span.set_text("db.response.status_code", code.clone());
                    }
                    span.failed(code.unwrap_or_else(|| "connection".into()), describe(err));
                }
                Failure::Other(err) => span.failed(err.kind().to_owned(), err.to_string()),
            }
        }
        result
    }

    /// One try of [`Pool::run`], and how many statements were answered if sent prepared.
    async fn attempt<T>(
        &self,
        deadline: Deadline,
        effect: Effect,
        work: impl AsyncFnOnce(&Conn) -> Result<T, tokio_postgres::Error>,
    ) -> (Result<T, Failure>, Option<usize>) {
        let object = match self.connection(deadline).await {
            Ok(object) => object,
            Err(err) => return (Err(Failure::Other(err)), None),
        };
        let conn = Conn {
            client: object,
            unnamed: self.unnamed.load(Ordering::Relaxed),
            answered: AtomicUsize::new(0),
        };
        let in_flight = InFlight { conn: Some(conn), tls: &self.tls };
        let conn = in_flight.conn();
        let sent = || (!conn.unnamed).then(|| conn.answered.load(Ordering::Relaxed));
        let answer = {
            let mut verdict = std::pin::pin!(work(conn));
            match tokio::time::timeout_at(deadline.cancel_at(), &mut verdict).await {
                Ok(answer) => Some(answer),
                // A read nobody can use any more: `in_flight` cancels it as it drops.
                Err(_) if effect == Effect::Reads => None,
                Err(_) => {
                    in_flight.cancel();
                    let grace = deadline.0 + VERDICT_GRACE;
                    tokio::time::timeout_at(grace, &mut verdict).await.ok()
                }
            }
        };
        let sent = sent();
        let err = match answer {
            Some(Ok(value)) => {
                if let (Some(written), Effect::Writes) = (&self.written, effect) {
                    let position = super::sql::insert_position(conn).await;
                    written.fetch_max(position.unwrap_or(0), Ordering::Relaxed);
                }
                in_flight.finish();
                return (Ok(value), sent);
            }
            Some(Err(err)) => err,
            None if effect == Effect::Reads => {
                return (Err(Failure::Other(OutOfTime.into())), sent);
            }
            None => {
                let unknown = format!(
                    "the database gave no verdict within {VERDICT_GRACE:?} of the deadline"
                );
                return (Err(Failure::Other(StoreError::Unknown(message(unknown)))), sent);
            }
        };
        if !error::spoils_connection(&err) {
            in_flight.finish();
            return (Err(Failure::Statement(err)), sent);
        }
        in_flight.discard();
        if error::is_read_only(&err) {
            let dropped = self.pool.retain(|_, _| false).removed.len();
            log::warn!(
                "the database is read-only (a failover?): dropped this connection and \
                 {dropped} idle ones"
            );
        }
        (Err(Failure::Statement(err)), sent)
    }

    /// A pooled connection by `deadline`, unless too many wait for one already.
    async fn connection(&self, deadline: Deadline) -> Result<Object, StoreError> {
        // Past this many waiting for a connection, waiting only runs out the budget.
        let pool = self.pool.status();
        if !deadline.has_time() {
            Err(OutOfTime.into())
        } else if pool.waiting >= pool.max_size * WAITERS_PER_CONNECTION {
            Err(StoreError::Busy)
        } else {
            let got = tokio::time::timeout_at(deadline.0, self.pool.get()).await;
            got.map_err(|_| OutOfTime)?.map_err(StoreError::from)
        }
    }
}
