//! Which releases work on a schema (spec §5, docs/upgrading.md): each migration's first line
//! says whether the release before still does (expand) or not (contract), and the oldest that
//! does, kept in `task_api_compatibility`. Newer migrations must each be recorded to work with us.

use refinery::Migration;
use tokio_postgres::Client;

use super::connect::rows;

/// The migrations written before records existed (V1–V4): all of release 0.1.0.
const BEFORE_RECORDS: i32 = 4;
/// Begins every later migration: `-- compatibility: expand, works with task-api 0.1.0 and later`.
const HEADER: &str = "-- compatibility: ";

/// The table, made (if it is not there) in the migrations' transaction.
pub const CREATE: &str = "CREATE TABLE IF NOT EXISTS task_api_compatibility (
    version integer PRIMARY KEY,
    name text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('expand', 'contract')),
    oldest_release text NOT NULL)";

/// A migration's record: version, name, `expand` or `contract`, the oldest release that works.
#[derive(Debug, PartialEq)]
pub struct Record {
    version: i32,
    name: String,
    kind: &'static str,
    oldest: String,
}

/// The records of this binary's `migrations`, from their headers; one missing is an error.
pub fn records(migrations: &[Migration]) -> Result<Vec<Record>, String> {
    let record = |migration: &Migration| {
        let (version, name) = (migration.version(), migration.name().to_owned());
        if version <= BEFORE_RECORDS {
            return Ok(Record { version, name, kind: "contract", oldest: "0.1.0".into() });
        }
        let header = migration.sql().and_then(|sql| sql.lines().next()?.strip_prefix(HEADER));
        let parsed = header.and_then(|header| {
            let (kind, rest) = header.split_once(", works with task-api ")?;
            let kind = ["expand", "contract"].into_iter().find(|known| *known == kind)?;
            let oldest =
                rest.strip_suffix(" and later").filter(|oldest| release(oldest).is_some())?;
            Some((kind, oldest.to_owned()))
        });
        match parsed {
            Some((kind, oldest)) => Ok(Record { version, name, kind, oldest }),
            None => Err(format!(
                "migration V{version}__{name} has no first line `{HEADER}expand|contract, works \
                 with task-api X.Y.Z and later`"
            )),
        }
    };
    migrations.iter().map(record).collect()
}

/// Refuses (with why) a database that holds a migration newer than `ours` unless its record
/// says this release works with it. Runs in the migrations' transaction, before refinery.
pub async fn check(client: &Client, ours: &[Record]) -> Result<(), String> {
    let newest = ours.iter().map(|record| record.version).max().unwrap_or(0);
    let select = async |sql: &str| rows(client, sql).await.map_err(|err| err.to_string());
    let history = select("SELECT to_regclass('refinery_schema_history') IS NOT NULL").await?;
    if history.first().and_then(|row| row.get(0)) != Some("t") {
        return Ok(());
    }
    // Records are read only for newer migrations: a role that may only read history serves.
    let newer = format!("SELECT count(*) FROM refinery_schema_history WHERE version > {newest}");
    let count = select(&newer).await?;
    if count.first().and_then(|row| row.get(0)) == Some("0") {
        return Ok(());
    }
    let query = format!(
        "SELECT h.version, h.name, c.kind, c.oldest_release FROM refinery_schema_history h
         LEFT JOIN task_api_compatibility c USING (version) WHERE h.version > {newest}
         ORDER BY h.version"
    );
    let this = crate::VERSION;
    for row in select(&query).await? {
        let migration = format!("V{}__{}", row.get(0).unwrap_or("?"), row.get(1).unwrap_or("?"));
        match (row.get(2), row.get(3)) {
            (Some(kind), Some(oldest)) if release(this) >= release(oldest) => {
                log::info!("the database holds {migration} ({kind}), which works with {this}");
            }
            (Some(kind), Some(oldest)) => Err(format!(
                "refusing to start: the database holds migration {migration} ({kind}), which \
                 needs task-api {oldest} or later; this is {this}"
            ))?,
            _ => Err(format!(
                "refusing to start: the database holds migration {migration}, which this \
                 binary does not know, and no record says it keeps {this} working"
            ))?,
        }
    }
    Ok(())
}

/// Writes `ours` into the table, keeping those there; only after migrating, so a role that
/// only serves needs no right to it.
pub async fn record(client: &Client, ours: &[Record]) -> Result<(), tokio_postgres::Error> {
    // Names are refinery's `\w+`, releases digits and dots: nothing to escape.
    let value = |r: &Record| format!("({}, '{}', '{}', '{}')", r.version, r.name, r.kind, r.oldest);
    let values: Vec<String> = ours.iter().map(value).collect();
    if values.is_empty() {
        return Ok(());
    }
    let insert = format!(
        "INSERT INTO task_api_compatibility (version, name, kind, oldest_release) VALUES {} \
         ON CONFLICT (version) DO NOTHING",
        values.join(", ")
    );
    client.batch_execute(&insert).await
}

/// `X.Y.Z` (a pre-release suffix ignored) as numbers, to compare releases.
fn release(text: &str) -> Option<(u64, u64, u64)> {
    let mut parts = text.split(['.', '-']).map(str::parse::<u64>);
    Some((parts.next()?.ok()?, parts.next()?.ok()?, parts.next()?.ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_of_this_build_has_its_record() {
        let ours = records(&crate::pg::migrate::migrations()).unwrap();
        assert!(ours.iter().all(|r| r.version <= BEFORE_RECORDS || !r.oldest.is_empty()));
        let sql = "-- compatibility: expand, works with task-api 0.1.0 and later\nALTER …";
        let v5 = Migration::unapplied("V5__add_due_at", sql).unwrap();
        let expand = records(&[v5]).unwrap();
        assert_eq!((expand[0].kind, expand[0].oldest.as_str()), ("expand", "0.1.0"));
        let bad = Migration::unapplied("V6__x", "-- compatibility: maybe\n").unwrap();
        assert!(records(&[bad]).unwrap_err().contains("V6__x"));
        assert!(release("0.10.0") > release("0.9.3"));
        assert_eq!(release("1.2.3-rc.1"), Some((1, 2, 3)));
    }
}
