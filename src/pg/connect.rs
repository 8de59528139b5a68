//! Connecting: single connections, the pool's connection manager, the start-up wait with
//! backoff (spec §5), and the rows of a simple query (what a pooler carries).

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Error as PgError, SimpleQueryMessage, SimpleQueryRow};

use super::DbOptions;
use crate::Error;
use crate::error::describe;

/// Start-up retries double their pause up to this.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);
/// The least time worth another attempt.
const LAST_CHANCE: Duration = Duration::from_millis(100);
/// With `DATABASE_STARTUP_TIMEOUT=0` (no retries), the one attempt gets this long.
const ONE_ATTEMPT: Duration = Duration::from_secs(5);

/// Why a connection that the deadline cut is not retried.
const SILENT: &str = "no answer by the end of DATABASE_STARTUP_TIMEOUT (the server took the \
                      connection but did not finish TLS or login)";

/// When start-up must have connected and migrated, for `DATABASE_STARTUP_TIMEOUT`.
pub fn startup_deadline(budget: Duration) -> Instant {
    Instant::now() + Some(budget).filter(|b| !b.is_zero()).unwrap_or(ONE_ATTEMPT)
}

impl DbOptions {
    /// Opens one connection, outside the pool (migrations use it).
    pub async fn connect(&self) -> Result<Client, PgError> {
        let (client, connection) = self.pg.connect(self.tls.clone()).await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                log::warn!("database connection closed: {}", describe(&err));
            }
        });
        Ok(client)
    }

    /// The TLS connector, for what opens connections of its own (cancel requests).
    pub fn tls(&self) -> tokio_postgres_rustls::MakeRustlsConnect {
        self.tls.clone()
    }

    /// What a pool needs to open connections like [`DbOptions::connect`]'s.
    pub fn manager(&self) -> Manager {
        // Fast: is_closed() only; a query that fails on a dead connection drops it.
        let config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        Manager::from_config(self.pg.clone(), self.tls.clone(), config)
    }
}

/// Connects, retrying with backoff until `deadline` (TLS and login included) and logging why
/// each attempt failed (spec §5). What waiting cannot fix (a wrong password, a missing
/// database, a certificate that does not verify) ends the wait at once.
pub async fn connect_with_retry(db: &DbOptions, deadline: Instant) -> Result<Client, Error> {
    let (target, mut pause) = (db.target(), Duration::from_millis(100));
    for attempt in 1.. {
        let (reason, permanent) = match tokio::time::timeout_at(deadline, db.connect()).await {
            Ok(Ok(client)) => {
                log::info!("connected to {target}");
                return Ok(client);
            }
            Ok(Err(err)) => (describe(&err), is_permanent(&err)),
            Err(_) => (SILENT.to_owned(), true),
        };
        // The next attempt gets at least LAST_CHANCE, else this failure is the last word.
        let remaining = deadline.saturating_duration_since(Instant::now());
        if permanent || remaining < LAST_CHANCE {
            return Err(Error::Startup(format!(
                "cannot connect to database {target} (attempt {attempt}): {reason}"
            )));
        }
        let pause_now = pause.min(remaining - LAST_CHANCE);
        log::warn!(
            "database {target} not ready (attempt {attempt}): {reason}; retrying in {pause_now:?}"
        );
        tokio::time::sleep(pause_now).await;
        pause = (pause * 2).min(MAX_RETRY_PAUSE);
    }
    unreachable!("the retry loop returns")
}

fn is_permanent(err: &PgError) -> bool {
    if let Some(code) = err.code() {
        return code == &SqlState::INVALID_PASSWORD
            || code == &SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            || code == &SqlState::INVALID_CATALOG_NAME;
    }
    // Display is tokio-postgres's private error kind: TLS, or an authentication we refused.
    matches!(err.to_string().as_str(), "error performing TLS handshake" | "authentication error")
}

/// The rows of a simple query.
pub async fn rows(client: &Client, query: &str) -> Result<Vec<SimpleQueryRow>, PgError> {
    let row = |message| if let SimpleQueryMessage::Row(row) = message { Some(row) } else { None };
    Ok(client.simple_query(query).await?.into_iter().filter_map(row).collect())
}
