//! Indexes too big for a migration's transaction: `sql/indexes/I<n>__<index name>.sql`, each
//! a `CREATE INDEX CONCURRENTLY IF NOT EXISTS` (which no transaction may hold). Built after the
//! migrations, by one process at a time (under a session lock of their own, so replicas still
//! start meanwhile), and again when PostgreSQL left one invalid (a build cut short).

use tokio_postgres::Client;

use super::connect::rows;

/// The indexes of `sql/indexes/`, as the build embedded them: (file stem, SQL).
const INDEXES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/indexes.rs"));
/// The advisory lock of index builds, "taskapj": not the migrations' ("taskapi").
const BUILD_LOCK_KEY: i64 = 0x0074_6173_6b61_706a;

/// Whether this binary has indexes to build.
pub fn any() -> bool {
    !INDEXES.is_empty()
}

/// Builds each index that is missing or invalid, on `client` (a direct connection: a pooler
/// would lose the session's lock); `Ok(false)` when another process holds the lock.
pub async fn build(client: &Client) -> Result<bool, tokio_postgres::Error> {
    let locked = rows(client, &format!("SELECT pg_try_advisory_lock({BUILD_LOCK_KEY})")).await?;
    if locked.first().and_then(|row| row.get(0)) != Some("t") {
        return Ok(false);
    }
    let built = async {
        for (stem, sql) in INDEXES {
            let index = stem.split_once("__").map_or(*stem, |(_, name)| name);
            let valid = format!(
                "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('{index}')"
            );
            match rows(client, &valid).await?.first().and_then(|row| row.get(0)) {
                Some("t") => continue,
                Some(_) => {
                    log::warn!(
                        "index {index} is invalid (its build did not finish): building it again"
                    );
                    client
                        .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {index}"))
                        .await?;
                }
                None => {}
            }
            log::info!("building index {index} concurrently");
            client.batch_execute(sql).await?;
            log::info!("built index {index}");
        }
        Ok(())
    };
    let built = built.await;
    let unlocked =
        client.batch_execute(&format!("SELECT pg_advisory_unlock({BUILD_LOCK_KEY})")).await;
    built.and(unlocked).map(|()| true)
}
