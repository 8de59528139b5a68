//! The schema: refinery's migrations from `sql/`, embedded at build time and applied
//! under a PostgreSQL advisory lock, so replicas starting together migrate once
//! (spec §5). A database holding a migration this binary does not know is refused.

use refinery::error::Kind;
use tokio::time::{Duration, Instant};
use tokio_postgres::Client;

use crate::Error;
use crate::config::Config;
use crate::db::{self, DbOptions};
use crate::error::describe;

mod embedded {
    refinery::embed_migrations!("sql");
}

/// The advisory lock key every task-api process agrees on ("taskapi" in ASCII).
const LOCK_KEY: i64 = 0x0074_6173_6b61_7069;

/// `task-api migrate`: connect (with the start-up wait), apply, print what was applied.
pub fn run(config: Config) -> Result<(), Error> {
    crate::logging::init(&config.log_filter, config.log_format);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Error::Startup(format!("tokio runtime: {err}")))?;
    runtime.block_on(async {
        let deadline = db::startup_deadline(config.startup_timeout);
        let mut client = db::connect_with_retry(&config.database, deadline).await?;
        let applied = apply(&config.database, &mut client, deadline).await?;
        if applied.is_empty() {
            println!("no pending migrations");
        }
        for name in applied {
            println!("applied {name}");
        }
        Ok(())
    })
}

/// Applies pending migrations on `client` (a connection to `db`) and names the ones
/// applied (`V1__create_tasks`). Waits for any other process migrating the same
/// database to finish first, but not past `deadline`: then it names the sessions it
/// was waiting for, and fails.
pub async fn apply(
    db: &DbOptions,
    client: &mut Client,
    deadline: Instant,
) -> Result<Vec<String>, Error> {
    let failed = |err: &dyn std::fmt::Display| Error::Startup(format!("migration failed: {err}"));
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map_err(|e| failed(&describe(&e)))?
        .get(0);
    let locked_run = async {
        client
            .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(|e| failed(&describe(&e)))?;
        let report = embedded::migrations::runner().run_async(client).await;
        // The lock is per session; should unlocking fail, closing the connection frees it.
        if let Err(err) = client
            .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
            .await
        {
            log::warn!("could not release the migration lock: {}", describe(&err));
        }
        Ok::<_, Error>(report)
    };
    let Ok(report) = tokio::time::timeout_at(deadline, locked_run).await else {
        // Still waiting on the server: ask, from another connection, who for. The
        // process exits next, and with it this connection and its waiting statement.
        return Err(Error::Startup(format!(
            "migrations still waiting at the end of DATABASE_STARTUP_TIMEOUT for a lock \
             held by {}",
            blockers(db, pid).await
        )));
    };
    let report = report?.map_err(|err| match err.kind() {
        Kind::MissingVersion(migration) => Error::Startup(format!(
            "refusing to start: the database holds migration {migration}, which this binary \
             does not know (is a newer task-api using this database?)"
        )),
        Kind::DivergentVersion(applied, ours) => Error::Startup(format!(
            "refusing to start: the database's migration {applied} differs from this binary's {ours}"
        )),
        _ => failed(&err),
    })?;
    let applied: Vec<String> = report
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect();
    for name in &applied {
        log::info!("applied migration {name}");
    }
    Ok(applied)
}

/// The sessions that block backend `pid`, as `pid 123 (application_name "psql", user
/// "app", state "idle in transaction")`; within a couple of seconds, or a reason why not.
async fn blockers(db: &DbOptions, pid: i32) -> String {
    const LOOKUP: Duration = Duration::from_secs(2);
    let lookup = async {
        let client = db.connect().await.map_err(|e| describe(&e))?;
        let rows = client
            .query(
                "SELECT pid, application_name, usename::text, state \
                 FROM pg_stat_activity WHERE pid = ANY(pg_blocking_pids($1)) ORDER BY pid",
                &[&pid],
            )
            .await
            .map_err(|e| describe(&e))?;
        Ok::<_, String>(
            rows.iter()
                .map(|row| {
                    let text = |i| row.get::<_, Option<String>>(i).unwrap_or_default();
                    format!(
                        "pid {} (application_name {:?}, user {:?}, state {:?})",
                        row.get::<_, i32>(0),
                        text(1),
                        text(2),
                        text(3)
                    )
                })
                .collect::<Vec<_>>(),
        )
    };
    match tokio::time::timeout(LOOKUP, lookup).await {
        Ok(Ok(holders)) if !holders.is_empty() => holders.join(", "),
        Ok(Ok(_)) => "a session that let go just now".into(),
        Ok(Err(reason)) => format!("another session (could not ask which: {reason})"),
        Err(_) => "another session (could not ask which in time)".into(),
    }
}
