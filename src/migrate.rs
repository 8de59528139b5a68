//! The schema: refinery's migrations from `sql/`, embedded at build time and applied
//! under a PostgreSQL advisory lock, so replicas starting together migrate once
//! (spec §5). A database holding a migration this binary does not know is refused.

use refinery::error::Kind;
use tokio_postgres::Client;

use crate::Error;
use crate::config::Config;
use crate::db;
use crate::error::describe;

mod embedded {
    refinery::embed_migrations!("sql");
}

/// The advisory lock key every task-api process agrees on ("taskapi" in ASCII).
const LOCK_KEY: i64 = 0x0074_6173_6b61_7069;

/// `task-api migrate`: connect (with the start-up wait), apply, print what was applied.
pub fn run(config: Config) -> Result<(), Error> {
    crate::logging::init(&config.log_filter);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Error::Startup(format!("tokio runtime: {err}")))?;
    runtime.block_on(async {
        let mut client = db::connect_with_retry(&config.database, config.startup_timeout).await?;
        let applied = apply(&mut client).await?;
        if applied.is_empty() {
            println!("no pending migrations");
        }
        for name in applied {
            println!("applied {name}");
        }
        Ok(())
    })
}

/// Applies pending migrations and names the ones applied (`V1__create_tasks`).
/// Waits for any other process migrating the same database to finish first.
pub async fn apply(client: &mut Client) -> Result<Vec<String>, Error> {
    let failed = |err: &dyn std::fmt::Display| Error::Startup(format!("migration failed: {err}"));
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
    let report = report.map_err(|err| match err.kind() {
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
