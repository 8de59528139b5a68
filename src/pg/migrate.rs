//! The schema: refinery's migrations from `sql/`, embedded, applied in one transaction that
//! first takes an advisory lock, so replicas starting together migrate once (spec §5).

use std::io;

use refinery::Migration;
use refinery::error::Kind;
use refinery_core::traits::r#async::{AsyncMigrate, AsyncQuery, AsyncTransaction};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::{Duration, Instant};
use tokio_postgres::{Client, SimpleQueryRow};

use super::connect::{self as db, rows};
use super::{DbOptions, compat};
use crate::Error;
use crate::config::Config;
use crate::error::describe;

mod embedded {
    refinery::embed_migrations!("sql");
}

/// The advisory lock key every task-api process agrees on ("taskapi" in ASCII).
pub const LOCK_KEY: i64 = 0x0074_6173_6b61_7069;

/// This binary's migrations, in version order.
pub fn migrations() -> Vec<Migration> {
    embedded::migrations::runner().get_migrations().clone()
}

/// `task-api migrate`: connect (with the start-up wait), apply, print what was applied.
pub fn run(config: Config) -> Result<(), Error> {
    let mut runtime = tokio::runtime::Builder::new_current_thread();
    let lines = crate::observe::logs::init(&config.log_filter, config.log_format, &mut runtime);
    let runtime = runtime
        .enable_all()
        .build()
        .map_err(|err| Error::Startup(format!("tokio runtime: {err}")))?;
    runtime.block_on(async {
        let deadline = db::startup_deadline(config.startup_timeout);
        let mut client = db::connect_with_retry(&config.database, deadline).await?;
        let applied = apply(&config.database, &mut client, deadline).await?;
        lines.write_out(); // before what it prints
        if applied.is_empty() {
            println!("no pending migrations");
        }
        for name in applied {
            println!("applied {name}");
        }
        let built = super::indexes::build(&client).await;
        if !built.map_err(|err| Error::Startup(format!("building indexes: {}", describe(&err))))? {
            println!("another process is building the indexes of sql/indexes");
        }
        Ok(())
    })
}

/// Applies pending migrations on `client` (connected to `db`) and names them. Waits for
/// another process migrating till `deadline`, then fails naming the sessions it waited for.
pub async fn apply(
    db: &DbOptions,
    client: &mut Client,
    deadline: Instant,
) -> Result<Vec<String>, Error> {
    let failed = |err: &dyn std::fmt::Display| Error::Startup(format!("migration failed: {err}"));
    let db_failed = |err: tokio_postgres::Error| failed(&describe(&err));
    // Simple queries only, here too: a pooler in transaction mode keeps no prepared one.
    let pid = rows(client, "SELECT pg_backend_pid()").await.map_err(db_failed)?;
    let pid: i32 = pid.first().and_then(|row| row.get(0)?.parse().ok()).unwrap_or(0);
    // The lock is the transaction's, not a session's (which a pooler would hand on): it lasts
    // as long as the migrations, which commit together or not at all.
    let ours = compat::records(&migrations()).map_err(|err| failed(&err))?;
    let locked_run = async {
        let lock = format!("BEGIN; SELECT pg_advisory_xact_lock({LOCK_KEY}); {}", compat::CREATE);
        client.batch_execute(&lock).await.map_err(db_failed)?;
        // Newer migrations are judged by their records; refinery is told to let them be.
        let report = match compat::check(client, &ours).await {
            Err(refused) => Ok(Err(Error::Startup(refused))),
            Ok(()) => {
                let runner = embedded::migrations::runner().set_abort_missing(false);
                match runner.run_async(&mut InTransaction(client)).await {
                    Ok(report) if report.applied_migrations().is_empty() => Ok(Ok(report)),
                    Ok(report) => compat::record(client, &ours).await.map(|()| Ok(report)),
                    Err(err) => Ok(Err(refused(err))),
                }
            }
        };
        let end = if matches!(report, Ok(Ok(_))) { "COMMIT" } else { "ROLLBACK" };
        client.batch_execute(end).await.map_err(db_failed)?;
        report.map_err(db_failed)
    };
    let Ok(report) = tokio::time::timeout_at(deadline, locked_run).await else {
        // Ask, from another connection, who for; exiting next ends the waiting statement.
        return Err(Error::Startup(format!(
            "migrations still waiting at the end of DATABASE_STARTUP_TIMEOUT for a lock \
             held by {}",
            blockers(db, pid).await
        )));
    };
    let report = report??;
    let applied: Vec<String> = report.applied_migrations().iter().map(|m| m.to_string()).collect();
    for name in &applied {
        log::info!("applied migration {name}");
    }
    Ok(applied)
}

/// What a refinery failure means for start-up.
fn refused(err: refinery::Error) -> Error {
    Error::Startup(match err.kind() {
        Kind::DivergentVersion(applied, ours) => format!(
            "refusing to start: the database's migration {applied} differs from this binary's {ours}"
        ),
        _ => format!("migration failed: {err}"),
    })
}

/// refinery's runner inside [`apply`]'s transaction, not one per migration (which would
/// commit it and end its lock); simple queries only, which a pooler in transaction mode carries.
struct InTransaction<'a>(&'a Client);

impl AsyncTransaction for InTransaction<'_> {
    type Error = io::Error;

    async fn execute<'a, T: Iterator<Item = &'a str> + Send + 'a>(
        &mut self,
        queries: T,
    ) -> Result<usize, Self::Error> {
        let mut count = 0;
        for query in queries {
            self.0.batch_execute(query).await.map_err(|err| io::Error::other(describe(&err)))?;
            count += 1;
        }
        Ok(count)
    }
}

impl AsyncQuery<Vec<Migration>> for InTransaction<'_> {
    /// The migrations applied, as refinery's own driver reads its history table. A row
    /// refinery did not write is refused: it would apply a migration again.
    async fn query(&mut self, query: &str) -> Result<Vec<Migration>, Self::Error> {
        let applied = |row: &SimpleQueryRow| {
            let (version, on) = (row.get(0)?.parse().ok()?, row.get(2)?);
            let on = OffsetDateTime::parse(on, &Rfc3339).ok()?;
            Some(Migration::applied(version, row.get(1)?.to_owned(), on, row.get(3)?.parse().ok()?))
        };
        let unreadable = |row: &SimpleQueryRow| {
            let v = row.get(0).unwrap_or("?");
            io::Error::other(format!("an unreadable row in the migration history (version {v})"))
        };
        let rows = rows(self.0, query).await.map_err(|err| io::Error::other(describe(&err)))?;
        rows.iter().map(|row| applied(row).ok_or_else(|| unreadable(row))).collect()
    }
}

impl AsyncMigrate for InTransaction<'_> {}

/// The sessions that block backend `pid` (`pid 123 (application_name "psql", user "app",
/// state "idle in transaction")`), or why they are unknown.
async fn blockers(db: &DbOptions, pid: i32) -> String {
    const LOOKUP: Duration = Duration::from_secs(2);
    let lookup = async {
        let client = db.connect().await.map_err(|e| describe(&e))?;
        let query = format!(
            "SELECT pid, application_name, usename, state \
             FROM pg_stat_activity WHERE pid = ANY(pg_blocking_pids({pid})) ORDER BY pid"
        );
        let rows = rows(&client, &query).await.map_err(|e| describe(&e))?;
        let holder = |row: &SimpleQueryRow| {
            let text = |i| row.get(i).unwrap_or_default();
            let (pid, app, user, state) = (text(0), text(1), text(2), text(3));
            format!("pid {pid} (application_name {app:?}, user {user:?}, state {state:?})")
        };
        Ok::<_, String>(rows.iter().map(holder).collect::<Vec<_>>())
    };
    match tokio::time::timeout(LOOKUP, lookup).await {
        Ok(Ok(holders)) if !holders.is_empty() => holders.join(", "),
        Ok(Ok(_)) => "a session that let go just now".into(),
        Ok(Err(reason)) => format!("another session (could not ask which: {reason})"),
        Err(_) => "another session (could not ask which in time)".into(),
    }
}
