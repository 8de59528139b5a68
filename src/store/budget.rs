//! The 5 s budget (spec §2), and the honest outcome it buys. A request that needs the
//! database gets a [`Deadline`] when it reaches the store; waiting for a batch, for a
//! connection and for the statement all count against it. PostgreSQL enforces it
//! (`statement_timeout` set to what remains), and the answer waits for the database's
//! verdict, so an error means nothing was written. A statement nobody waits for any
//! more (its client left, or the database stopped answering) is cancelled, and its
//! connection never goes back to the pool.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Client, Hook, HookError, Object, Pool, Runtime};
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::outcome::{self, StoreError};
use super::statement;
use crate::pg::DbOptions;
use crate::error::describe;
use crate::observe::traces::{self as trace, Statement};

/// How long a request may wait for the database before it fails (spec §2).
pub const REQUEST_BUDGET: Duration = Duration::from_secs(5);

/// The request's budget ran out before the database could serve it: nothing of it
/// was written.
#[derive(Debug)]
pub struct OutOfTime;

impl fmt::Display for OutOfTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no answer within the request's {REQUEST_BUDGET:?} budget"
        )
    }
}

impl std::error::Error for OutOfTime {}

impl From<OutOfTime> for StoreError {
    fn from(err: OutOfTime) -> Self {
        StoreError::Unavailable(Arc::new(err))
    }
}
/// Every pooled connection's own `statement_timeout`. A statement that starts with
/// more of its budget left than this needs no limit of its own, and most do: one
/// message fewer each. Only one that waited long for a batch or a connection sets
/// a lower limit, and puts this one back after.
const POOLED_STATEMENT_TIMEOUT: Duration = Duration::from_secs(4);
/// PostgreSQL stops a statement this long before the deadline, so its verdict is
/// back in time.
const VERDICT_MARGIN: Duration = Duration::from_millis(50);
/// With less than this left past the margin, a statement is not started.
const LEAST_STATEMENT_TIME: Duration = Duration::from_millis(10);
/// A write whose database stopped answering is waited for this long past its
/// deadline (TCP keepalive may yet report the connection dead) before its outcome is
/// given up as unknown.
const VERDICT_GRACE: Duration = Duration::from_secs(2);
/// Requests that may wait for each pooled connection before the next is turned away
/// at once as busy (503).
const WAITERS_PER_CONNECTION: usize = 32;
/// A cancel request that takes longer is left to itself.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);

/// Why [`Db::run`] failed: a statement's own error, kept whole so the caller can judge
/// it (a refused row is retried alone), or anything else.
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

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        Failure::Other(err)
    }
}

impl From<OutOfTime> for Failure {
    fn from(err: OutOfTime) -> Self {
        Failure::Other(err.into())
    }
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        Failure::Other(err.into())
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

    /// The `statement_timeout` a statement started now gets, if there is time for one.
    fn statement_timeout(self) -> Option<Duration> {
        let left = self
            .0
            .saturating_duration_since(Instant::now())
            .checked_sub(VERDICT_MARGIN)?;
        (left >= LEAST_STATEMENT_TIME).then_some(left)
    }

    /// Whether there is still time to start a statement.
    pub fn has_time(self) -> bool {
        self.statement_timeout().is_some()
    }
}

/// What a lost verdict means: for a read, only that there is no answer; for a write,
/// that nobody knows whether it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Reads only: past the deadline, the request fails as unavailable.
    Reads,
    /// Writes: the request waits for the verdict, a little past the deadline if the
    /// database stops answering, then fails as unknown.
    Writes,
}

/// The database as the store uses it: the pool, and what a cancel request needs.
pub struct Db {
    pool: Pool,
    tls: MakeRustlsConnect,
}

impl Db {
    /// A pool of at most `max_size` connections to `db`. Its waits for a connection
    /// (a free one, a new one, a recycled one) are bounded by [`REQUEST_BUDGET`] too.
    pub fn open(db: &DbOptions, max_size: usize) -> Result<Db, String> {
        let pool = Pool::builder(db.manager())
            .max_size(max_size)
            .post_create(Hook::async_fn(|client, _| {
                Box::pin(async move {
                    // Prepared statements mean a direct connection (or a session-mode
                    // pooler): the session may keep a limit of its own. Unnamed ones
                    // mean a pooler may hand the session to anyone: nothing is set.
                    if !statement::unnamed() {
                        limit(client, POOLED_STATEMENT_TIMEOUT)
                            .await
                            .map_err(HookError::Backend)?;
                    }
                    Ok(())
                })
            }))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(REQUEST_BUDGET))
            .create_timeout(Some(REQUEST_BUDGET))
            .recycle_timeout(Some(REQUEST_BUDGET))
            .build()
            .map_err(|err| format!("database pool: {err}"))?;
        Ok(Db {
            pool,
            tls: db.tls(),
        })
    }

    /// The pool, for its state and to close it.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Runs `work` on a pooled connection by `deadline`: PostgreSQL stops it by then
    /// (`statement_timeout`), and the answer is the database's verdict. Should that
    /// not come in time (see [`Effect`]), or the caller stop waiting, the statement is
    /// cancelled and its connection dropped. A connection whose statement says it is
    /// no good any more (a server read-only after a failover, or shutting down) is
    /// dropped too; on a read-only one, so are the pool's idle ones, which may well be
    /// on the same server: new ones go to whichever host is the primary now.
    ///
    /// When the task has a trace scope (a traced request, or a batch serving one),
    /// `statement` names the client span that covers it all, the wait included.
    pub async fn run<T>(
        &self,
        statement: Statement,
        deadline: Deadline,
        effect: Effect,
        work: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, Failure> {
        let span = trace::statement(statement);
        let result = self.attempt(deadline, effect, work).await;
        if let Some(mut span) = span
            && let Err(failure) = &result
        {
            match failure {
                Failure::Statement(err) => {
                    // Semantic conventions: the SQLSTATE is the error's type.
                    let code = err.code().map(|code| code.code().to_owned());
                    if let Some(code) = &code {
                        span.set_text("db.response.status_code", code.clone());
                    }
                    let kind = code.unwrap_or_else(|| "connection".to_owned());
                    span.failed(kind, describe(err));
                }
                Failure::Other(err) => span.failed(err.kind().to_owned(), err.to_string()),
            }
        }
        result
    }

    async fn attempt<T>(
        &self,
        deadline: Deadline,
        effect: Effect,
        work: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, Failure> {
        let timeout = deadline.statement_timeout().ok_or(OutOfTime)?;
        // Past this many waiting for a connection, waiting only runs out the budget.
        let pool = self.pool.status();
        if pool.waiting >= pool.max_size * WAITERS_PER_CONNECTION {
            return Err(StoreError::Busy.into());
        }
        let object = tokio::time::timeout_at(deadline.0, self.pool.get())
            .await
            .map_err(|_| OutOfTime)??;
        let in_flight = InFlight::new(object, &self.tls);
        let wait_until = match effect {
            Effect::Reads => deadline.0,
            Effect::Writes => deadline.0 + VERDICT_GRACE,
        };
        let unnamed = statement::unnamed();
        let answer = {
            let client = in_flight.client();
            let verdict = async {
                // Behind a pooler PostgreSQL cannot keep a session's limit: a cancel
                // request at the deadline (below) enforces it instead.
                if unnamed || timeout >= POOLED_STATEMENT_TIMEOUT {
                    return work(client).await;
                }
                // Pipelined: both go out together, the limit first; the usual one after.
                let (limited, result) = tokio::join!(limit(client, timeout), work(client));
                limited?;
                limit(client, POOLED_STATEMENT_TIMEOUT).await?;
                result
            };
            let mut verdict = std::pin::pin!(verdict);
            match unnamed {
                false => tokio::time::timeout_at(wait_until, &mut verdict).await,
                true => match tokio::time::timeout_at(deadline.0, &mut verdict).await {
                    Ok(answer) => Ok(answer),
                    Err(_) => {
                        in_flight.cancel();
                        let grace = deadline.0 + VERDICT_GRACE;
                        tokio::time::timeout_at(grace, &mut verdict).await
                    }
                },
            }
        };
        match answer {
            Ok(Ok(value)) => {
                in_flight.finish();
                Ok(value)
            }
            Ok(Err(err)) if outcome::spoils_connection(&err) => {
                in_flight.discard();
                if outcome::is_lost_statement(&err) && !statement::unnamed() {
                    statement::use_unnamed();
                    log::error!(
                        "a prepared statement was lost between transactions: a connection \
                         pooler in transaction mode (PgBouncer before 1.21, a hosted \
                         \"pooled\" URL) is between task-api and PostgreSQL. Statements go \
                         unnamed from now on; set DATABASE_STATEMENTS=unnamed to start so, \
                         or use the database's direct endpoint"
                    );
                }
                if outcome::is_read_only(&err) {
                    let dropped = self.pool.retain(|_, _| false).removed.len();
                    log::warn!(
                        "the database is read-only (a failover?): dropped this connection and \
                         {dropped} idle ones"
                    );
                }
                Err(Failure::Statement(err))
            }
            Ok(Err(err)) => {
                in_flight.finish();
                Err(Failure::Statement(err))
            }
            // `in_flight` drops unfinished: cancelled, and its connection dropped.
            Err(_) if effect == Effect::Reads => Err(OutOfTime.into()),
            Err(_) => Err(StoreError::unknown(format!(
                "the database gave no verdict within {:?} of the deadline",
                VERDICT_GRACE
            ))
            .into()),
        }
    }
}

/// Sets the session's `statement_timeout`.
async fn limit(
    client: &tokio_postgres::Client,
    timeout: Duration,
) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!("SET statement_timeout = {}", timeout.as_millis()))
        .await
}

/// Runs `statement`, the second or later one of a [`Db::run`] on `client`, limited
/// to what remains of `deadline`: pipelined behind a `SET statement_timeout`, and the
/// usual limit put back after. Out of time before it starts, it does not start.
pub async fn limited<T>(
    client: &Client,
    deadline: Deadline,
    statement: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, StoreError> {
    let timeout = deadline.statement_timeout().ok_or(OutOfTime)?;
    if statement::unnamed() {
        // No session limit behind a pooler: Db::run cancels at the deadline.
        return Ok(statement.await?);
    }
    let (limited, result) = tokio::join!(limit(client, timeout), statement);
    limited?;
    limit(client, POOLED_STATEMENT_TIMEOUT).await?;
    Ok(result?)
}

/// A pooled connection with a statement running. Finished, it goes back to the pool;
/// dropped unfinished, the statement is cancelled and the connection never reused.
struct InFlight<'a> {
    object: Option<Client>,
    tls: &'a MakeRustlsConnect,
}

impl<'a> InFlight<'a> {
    fn new(object: Client, tls: &'a MakeRustlsConnect) -> Self {
        InFlight {
            object: Some(object),
            tls,
        }
    }

    fn client(&self) -> &Client {
        self.object.as_ref().expect("taken only by finish or drop")
    }

    /// The statement is done: the connection goes back to the pool.
    fn finish(mut self) {
        self.object.take();
    }

    /// Asks the server to stop the statement (a cancel request, on a connection of its
    /// own); the verdict still comes back on this one.
    fn cancel(&self) {
        let token = self.client().cancel_token();
        let tls = self.tls.clone();
        tokio::spawn(cancel(token, tls));
    }

    /// The statement is done, and the connection is no good: it is closed.
    fn discard(mut self) {
        if let Some(object) = self.object.take() {
            drop(Object::take(object));
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(object) = self.object.take() {
            tokio::spawn(settle(object, self.tls.clone()));
        }
    }
}

/// A connection whose statement nobody waits for any more: the statement is cancelled
/// and, once the server answers on the connection again (so it is idle), the
/// connection goes back to the pool; one that does not answer within
/// [`CANCEL_TIMEOUT`] is closed. So a client that leaves costs a cancel request, not
/// a new connection.
async fn settle(object: Client, tls: MakeRustlsConnect) {
    let token = object.cancel_token();
    let idle = async {
        token.cancel_query(tls).await?;
        // Answered after whatever the cancelled statement still sends. Behind a
        // pooler the session keeps no limit of ours; else it gets its usual one back,
        // which a pipelined limit of the cancelled work may have left lowered.
        let reset = match statement::unnamed() {
            true => String::new(),
            false => format!(
                "SET statement_timeout = {}",
                POOLED_STATEMENT_TIMEOUT.as_millis()
            ),
        };
        for _ in 0..2 {
            // A cancel that came too late for the statement can hit this one instead.
            match object.batch_execute(&reset).await {
                Err(err) if err.code() == Some(&SqlState::QUERY_CANCELED) => continue,
                other => return other,
            }
        }
        object.batch_execute(&reset).await
    };
    match tokio::time::timeout(CANCEL_TIMEOUT, idle).await {
        Ok(Ok(())) => log::debug!("cancelled a statement; its connection is idle again"),
        Ok(Err(err)) => {
            log::warn!("could not cancel a statement: {}", describe(&err));
            drop(Object::take(object));
        }
        Err(_) => {
            log::warn!("could not cancel a statement within {CANCEL_TIMEOUT:?}");
            drop(Object::take(object));
        }
    }
}

/// Sends a cancel request for the statement `token` names, bounded in time.
async fn cancel(token: tokio_postgres::CancelToken, tls: MakeRustlsConnect) {
    match tokio::time::timeout(CANCEL_TIMEOUT, token.cancel_query(tls)).await {
        Ok(Ok(())) => log::debug!("cancelled a statement past its deadline"),
        Ok(Err(err)) => log::warn!("could not cancel a statement: {}", describe(&err)),
        Err(_) => log::warn!("could not cancel a statement within {CANCEL_TIMEOUT:?}"),
    }
}
