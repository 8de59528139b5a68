//! The connection pool, and the 5 s budget (spec §2): a request's [`Deadline`] covers its batch,
//! connection and statements. Just before it a running statement is cancelled ([`InFlight`]: a
//! cancel request), and a write waits for the verdict: an error means no write.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use deadpool_postgres::{Object, Runtime};
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error::{self, Spoiled, StoreError, message};
use super::sql::{self, Conn};
use crate::error::describe;
use crate::observe::metrics::PoolState;
use crate::observe::traces::{self, Statement};
use crate::pg::DbOptions;

/// How long a request may wait for the database before it fails (spec §2).
pub const REQUEST_BUDGET: Duration = Duration::from_secs(5);
/// A statement still running this long before its deadline is cancelled, so the verdict is back.
const CANCEL_MARGIN: Duration = Duration::from_millis(50);
/// With less than this left before the cancel, a statement is not started.
const LEAST_STATEMENT_TIME: Duration = Duration::from_millis(10);
/// How long past its deadline a write waits for a database that stopped answering (TCP
/// keepalive may yet report the connection dead) before its outcome is given up as unknown.
const VERDICT_GRACE: Duration = Duration::from_secs(2);
/// A cancel, and the connection coming back idle after it, that take longer close it.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests that may wait for each pooled connection before the next is turned away (503).
const WAITERS_PER_CONNECTION: usize = 32;

/// The request's budget ran out before the database could serve it: nothing was written.
#[derive(Debug, thiserror::Error)]
#[error("no answer within the request's {REQUEST_BUDGET:?} budget")]
pub struct OutOfTime;

impl From<OutOfTime> for StoreError {
    fn from(err: OutOfTime) -> Self {
        StoreError::Unavailable(Arc::new(err))
    }
}

/// Why [`Pool::run`] failed: the database answered a statement with an error, kept whole so
/// the caller can judge it (a refused row is retried alone); or no connection, time or verdict.
#[derive(Debug)]
pub enum Failure {
    Statement(tokio_postgres::Error),
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

    fn cancel_at(self) -> Instant {
        self.0 - CANCEL_MARGIN
    }

    /// Whether there is still time to start a statement.
    pub fn has_time(self) -> bool {
        self.cancel_at().saturating_duration_since(Instant::now()) >= LEAST_STATEMENT_TIME
    }
}

/// What a lost verdict means: reads fail as unavailable; writes wait for it, [`VERDICT_GRACE`]
/// past the deadline at most, then fail as unknown (nobody knows if they happened).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    Reads,
    Writes,
}

/// The database as the store uses it.
pub struct Pool {
    pool: deadpool_postgres::Pool,
    tls: MakeRustlsConnect,
    /// Unnamed statements: from start (`DATABASE_STATEMENTS=unnamed`), or once a pooler lost one.
    unnamed: AtomicBool,
    /// With standbys to read from: the WAL position after the newest write committed by
    /// this pool (a write's consistency token names at least its commit).
    written: Option<AtomicU64>,
}

impl Pool {
    /// A pool of at most `size` connections to `db`, its waits bounded by [`REQUEST_BUDGET`]
    /// too; with `track` (writes), it keeps [`Pool::written`].
    pub fn open(db: &DbOptions, size: usize, unnamed: bool, track: bool) -> Result<Pool, String> {
        let pool = deadpool_postgres::Pool::builder(db.manager())
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(REQUEST_BUDGET))
            .create_timeout(Some(REQUEST_BUDGET))
            .recycle_timeout(Some(REQUEST_BUDGET))
            .build()
            .map_err(|err| format!("database pool: {err}"))?;
        let unnamed = AtomicBool::new(unnamed);
        let (tls, written) = (db.tls(), track.then(|| AtomicU64::new(0)));
        Ok(Pool { pool, tls, unnamed, written })
    }

    /// The WAL position after the newest write this pool committed, if it tracks them.
    pub fn written(&self) -> Option<u64> {
        self.written.as_ref().map(|lsn| lsn.load(Ordering::Relaxed))
    }

    /// Opens the first connection now, so the first request does not pay for it.
    pub async fn warm_up(&self) {
        if let Err(err) = self.pool.get().await.map_err(StoreError::from) {
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

    /// Runs `work` on a pooled connection by `deadline` ([`Effect`]), cancelled if late or left.
    /// A failover's read-only connection closes with the idle ones (new ones find the primary);
    /// a prepared statement a pooler lost before anything ran sends `work` again, unnamed.
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
        let unnamed = self.unnamed.load(Ordering::Relaxed);
        let conn = Conn { client: object, unnamed, answered: AtomicUsize::new(0) };
        let in_flight = InFlight { conn: Some(conn), tls: &self.tls };
        let conn = in_flight.conn();
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
        let sent = (!conn.unnamed).then(|| conn.answered.load(Ordering::Relaxed));
        let result = match answer {
            Some(Ok(value)) => {
                if let (Some(written), Effect::Writes) = (&self.written, effect) {
                    let position = sql::insert_position(conn).await;
                    written.fetch_max(position.unwrap_or(0), Ordering::Relaxed);
                }
                in_flight.finish(false);
                Ok(value)
            }
            Some(Err(err)) => {
                let spoiled = error::unavailable(&err) == Some(Spoiled::Connection);
                in_flight.finish(spoiled);
                if spoiled && err.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION) {
                    let dropped = self.pool.retain(|_, _| false).removed.len();
                    log::warn!(
                        "the database is read-only (a failover?): dropped this connection and \
                         {dropped} idle ones"
                    );
                }
                Err(Failure::Statement(err))
            }
            None if effect == Effect::Reads => Err(Failure::Other(OutOfTime.into())),
            None => Err(Failure::Other(StoreError::Unknown(message(format!(
                "the database gave no verdict within {VERDICT_GRACE:?} of the deadline"
            ))))),
        };
        (result, sent)
    }

    /// A pooled connection by `deadline`, unless so many wait that waiting runs out the budget.
    async fn connection(&self, deadline: Deadline) -> Result<Object, StoreError> {
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

/// A pooled connection with a statement running. Finished, it goes back to the pool;
/// dropped unfinished, its statement is cancelled and it goes back once idle again.
struct InFlight<'a> {
    conn: Option<Conn>,
    tls: &'a MakeRustlsConnect,
}

impl InFlight<'_> {
    fn conn(&self) -> &Conn {
        self.conn.as_ref().expect("taken only by finish or drop")
    }

    /// The statement is done: the connection goes back to the pool, or is closed if spoiled.
    fn finish(mut self, spoiled: bool) {
        if let Some(conn) = self.conn.take().filter(|_| spoiled) {
            drop(Object::take(conn.client));
        }
    }

    /// Asks the server to stop the statement (a cancel request); the verdict comes back here.
    fn cancel(&self) {
        let (token, tls) = (self.conn().client.cancel_token(), self.tls.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(CANCEL_TIMEOUT, token.cancel_query(tls)).await {
                Ok(Ok(())) => log::debug!("cancelled a statement at its deadline"),
                Ok(Err(err)) => log::warn!("could not cancel a statement: {}", describe(&err)),
                Err(_) => log::warn!("could not cancel a statement within {CANCEL_TIMEOUT:?}"),
            }
        });
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            tokio::spawn(settle(conn.client, self.tls.clone()));
        }
    }
}

/// A connection whose statement nobody waits for: cancelled, it goes back to the pool once the
/// server answers on it again (so it is idle), or is closed if not within [`CANCEL_TIMEOUT`].
async fn settle(object: Object, tls: MakeRustlsConnect) {
    let token = object.cancel_token();
    let idle = async {
        token.cancel_query(tls).await?;
        // Answered after whatever the cancelled statement still sends. A cancel that
        // came too late for the statement can hit this one instead: then once more.
        match object.batch_execute("").await {
            Err(err) if err.code() == Some(&SqlState::QUERY_CANCELED) => {
                object.batch_execute("").await
            }
            other => other,
        }
    };
    let failed = match tokio::time::timeout(CANCEL_TIMEOUT, idle).await {
        Ok(Ok(())) => return log::debug!("cancelled a statement; its connection is idle again"),
        Ok(Err(err)) => format!("could not cancel a statement: {}", describe(&err)),
        Err(_) => format!("could not cancel a statement within {CANCEL_TIMEOUT:?}"),
    };
    log::warn!("{failed}");
    drop(Object::take(object));
}
