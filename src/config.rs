//! The environment → [`Config`], read once (spec §4). Every error names its
//! variable. Nothing else in the crate reads the environment; `DATABASE_URL_FILE`
//! is resolved here, so nothing later knows where the URL came from. How a variable is
//! read (and refused) is the crate's env.rs's business.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use log::LevelFilter;

pub use crate::env::{Env, parse_seconds};
pub use crate::error::ConfigError;
use crate::observe::logs::Format;
use crate::observe::traces::TraceConfig;
use crate::pg::DbOptions;

/// The listen port when `PORT` is unset.
pub const DEFAULT_PORT: u16 = 8000;
/// Default `DATABASE_POOL_SIZE`: docs/decisions.md has the measurement.
pub const DEFAULT_POOL_SIZE: usize = 8;

/// Everything `serve` and `migrate` need, parsed and checked.
pub struct Config {
    /// Where the database is and how to reach it (TLS included).
    pub database: DbOptions,
    /// `DATABASE_READ_URL`: the streaming standbys that may serve reads, one a host;
    /// none: every read on the primary.
    pub standbys: Vec<DbOptions>,
    /// `READ_MAX_LAG`: a read without a consistency token goes to a standby only while
    /// it is at most this far behind.
    pub read_max_lag: Duration,
    /// `HOST`; `None`: every address, IPv4 and IPv6.
    pub host: Option<IpAddr>,
    /// `PORT`.
    pub port: u16,
    /// `MAX_CONNECTIONS`: most clients served at once; `None`: derived from the
    /// file-descriptor limit at start.
    pub max_connections: Option<usize>,
    /// An env_logger filter: `RUST_LOG` when set, else `LOG_LEVEL`.
    pub log_filter: String,
    /// `LOG_FORMAT`: text (the default) or JSON lines.
    pub log_format: Format,
    /// `DATABASE_POOL_SIZE`: most connections this process opens.
    pub pool_size: usize,
    /// `DATABASE_STATEMENTS=unnamed`: no prepared statement outlives its transaction,
    /// for a connection pooler in transaction mode.
    pub unnamed_statements: bool,
    /// `DATABASE_STARTUP_TIMEOUT`: how long start-up retries an unreachable database.
    pub startup_timeout: Duration,
    /// `SHUTDOWN_DELAY`: how long the server goes on serving after SIGTERM, `/ready`
    /// failing, before it stops accepting.
    pub shutdown_delay: Duration,
    /// `SHUTDOWN_TIMEOUT`: how long in-flight requests may run after that.
    pub shutdown_timeout: Duration,
    /// `IDEMPOTENCY_KEY_TTL`: how long an Idempotency-Key is remembered.
    pub idempotency_key_ttl: Duration,
    /// The `OTEL_*` variables: where traces go; `None`: tracing is off.
    pub tracing: Option<TraceConfig>,
    /// `DOCS`: whether `/docs` serves the API reference (on by default).
    pub docs: bool,
}

impl Config {
    /// Reads this process's environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::parse(|name| std::env::var(name).ok())
    }

    /// Parses from a lookup function, so tests need not touch the real environment.
    /// An empty variable counts as unset.
    pub fn parse(env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let env = Env(&env);
        let unnamed_statements = match env.get("DATABASE_STATEMENTS").as_deref() {
            None | Some("prepared") => false,
            Some("unnamed") => true,
            Some(_) => {
                let reason = "must be prepared or unnamed";
                return Err(ConfigError::invalid("DATABASE_STATEMENTS", reason));
            }
        };
        let docs = match env.get("DOCS").as_deref() {
            None | Some("on") => true,
            Some("off") => false,
            Some(_) => return Err(ConfigError::invalid("DOCS", "must be on or off")),
        };
        let log_filter = match env.get("RUST_LOG") {
            Some(filter) => filter,
            None => env.parsed("LOG_LEVEL", LevelFilter::Info)?.to_string(),
        };
        Ok(Config {
            database: match url(&env, "DATABASE_URL", "DATABASE_URL_FILE")? {
                Some((var, url)) => {
                    DbOptions::parse(&url).map_err(|why| ConfigError::invalid(var, why))?
                }
                None => {
                    return Err(ConfigError::invalid(
                        "DATABASE_URL",
                        "not set (nor DATABASE_URL_FILE)",
                    ));
                }
            },
            standbys: match url(&env, "DATABASE_READ_URL", "DATABASE_READ_URL_FILE")? {
                Some((var, url)) => DbOptions::parse_each_host(&url)
                    .map_err(|why| ConfigError::invalid(var, why))?,
                None => Vec::new(),
            },
            read_max_lag: env.seconds("READ_MAX_LAG", 1, true)?,
            host: env
                .get("HOST")
                .map(|host| host.parse())
                .transpose()
                .map_err(|_| ConfigError::invalid("HOST", "not an IP address"))?,
            port: env.parsed("PORT", DEFAULT_PORT)?,
            max_connections: env
                .get("MAX_CONNECTIONS")
                .map(|_| env.count("MAX_CONNECTIONS", 1))
                .transpose()?,
            log_filter,
            log_format: env.parsed("LOG_FORMAT", Format::Text)?,
            pool_size: env.count("DATABASE_POOL_SIZE", DEFAULT_POOL_SIZE)?,
            unnamed_statements,
            startup_timeout: env.seconds("DATABASE_STARTUP_TIMEOUT", 60, true)?,
            shutdown_delay: env.seconds("SHUTDOWN_DELAY", 0, true)?,
            shutdown_timeout: env.seconds("SHUTDOWN_TIMEOUT", 8, true)?,
            idempotency_key_ttl: env.seconds("IDEMPOTENCY_KEY_TTL", 24 * 60 * 60, false)?,
            tracing: crate::observe::traces::config::parse(&env)?,
            docs,
        })
    }
}

/// The port `healthcheck` probes: `PORT`, or 8000. The probe reads nothing else.
pub fn probe_port() -> Result<u16, ConfigError> {
    Env(&|name: &str| std::env::var(name).ok()).parsed("PORT", DEFAULT_PORT)
}

/// The URL in `var`, or in the file `var_FILE` names (Docker and Kubernetes secrets),
/// with the name of the one read; `None` when neither is set.
fn url(
    env: &Env,
    var: &'static str,
    file: &'static str,
) -> Result<Option<(&'static str, String)>, ConfigError> {
    Ok(match (env.get(var), env.get(file)) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                file,
                format!("set either {var} or {file}, not both"),
            ));
        }
        (Some(url), None) => Some((var, url)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|err| ConfigError::invalid(file, format!("cannot read {path}: {err}")))?;
            Some((file, text.trim().to_owned()))
        }
        (None, None) => None,
    })
}

// Hand-written so `{:?}` can never print the password (spec §6).
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database", &self.database.target())
            .field("standbys", &self.standbys.iter().map(DbOptions::target).collect::<Vec<_>>())
            .field("read_max_lag", &self.read_max_lag)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("max_connections", &self.max_connections)
            .field("log_filter", &self.log_filter)
            .field("log_format", &self.log_format)
            .field("pool_size", &self.pool_size)
            .field("unnamed_statements", &self.unnamed_statements)
            .field("startup_timeout", &self.startup_timeout)
            .field("shutdown_delay", &self.shutdown_delay)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("idempotency_key_ttl", &self.idempotency_key_ttl)
            .field("tracing", &self.tracing)
            .field("docs", &self.docs)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let find = |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        Config::parse(find)
    }

    const URL: (&str, &str) = ("DATABASE_URL", "postgres://app:s3cret@db.internal:5432/tasks");

    #[test]
    fn defaults_follow_the_spec_and_empty_variables_count_as_unset() {
        let config = parse(&[URL, ("PORT", ""), ("HOST", " ")]).unwrap();
        assert_eq!((config.host, config.port, config.max_connections), (None, 8000, None));
        assert_eq!((config.log_filter.as_str(), config.pool_size), ("INFO", DEFAULT_POOL_SIZE));
        let timeouts = (config.startup_timeout, config.shutdown_delay, config.shutdown_timeout);
        assert_eq!(timeouts, (Duration::from_secs(60), Duration::ZERO, Duration::from_secs(8)));
        assert_eq!(config.idempotency_key_ttl, Duration::from_secs(86_400));
        assert!(config.tracing.is_none(), "tracing is off by default");
        assert!(config.docs, "/docs is on by default");
        assert!(!parse(&[URL, ("DOCS", "off")]).unwrap().docs);
        let refused = parse(&[URL, ("DOCS", "no")]).err().unwrap().to_string();
        assert!(refused.contains("DOCS"), "{refused}");
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret") && shown.contains("db.internal"), "{shown}");
        let config = parse(&[URL, ("LOG_LEVEL", "warn"), ("RUST_LOG", "debug")]);
        assert_eq!(config.unwrap().log_filter, "debug", "RUST_LOG wins");
    }
}
