//! The environment → [`Config`], read once (spec §4) through [`Env`] (the tracer's too): an
//! empty variable is unset, an error names its variable, `DATABASE_URL_FILE` is resolved here.

use std::net::IpAddr;
use std::time::Duration;

use log::LevelFilter;

use crate::env::Env;
pub use crate::error::ConfigError;
use crate::observe::logs::{self, Format};
use crate::observe::traces::TraceConfig;
use crate::pg::DbOptions;

/// The listen port when `PORT` is unset.
pub const DEFAULT_PORT: u16 = 8000;
/// Default `DATABASE_POOL_SIZE`: docs/decisions.md has the measurement.
pub const DEFAULT_POOL_SIZE: usize = 8;

/// Everything `serve` and `migrate` need, parsed and checked; `{:?}` never shows the password.
#[derive(Debug)]
pub struct Config {
    /// Where the database is and how to reach it (TLS included).
    pub database: DbOptions,
    /// `DATABASE_READ_URL`: standbys that may serve reads, one a host; none: the primary.
    pub standbys: Vec<DbOptions>,
    /// `READ_MAX_LAG`: how far behind a standby may be to serve a read without a token.
    pub read_max_lag: Duration,
    /// `HOST`; `None`: every address, IPv4 and IPv6.
    pub host: Option<IpAddr>,
    /// `PORT`.
    pub port: u16,
    /// `MAX_CONNECTIONS`: most clients served at once; `None`: from the fd limit at start.
    pub max_connections: Option<usize>,
    /// An env_logger filter: `RUST_LOG` when set, else `LOG_LEVEL`.
    pub log_filter: String,
    /// `LOG_FORMAT`: text (the default) or JSON lines.
    pub log_format: Format,
    /// `DATABASE_POOL_SIZE`: most connections this process opens.
    pub pool_size: usize,
    /// `DATABASE_STATEMENTS=unnamed`: no prepared statement outlives its transaction (poolers).
    pub unnamed_statements: bool,
    /// `DATABASE_STARTUP_TIMEOUT`: how long start-up retries an unreachable database.
    pub startup_timeout: Duration,
    /// `SHUTDOWN_DELAY`: how long it serves on after SIGTERM, `/ready` failing.
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

    /// Parses from a lookup function (tests need not touch the real environment); empty is unset.
    pub fn parse(env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let env = Env(&env);
        let statements = [("prepared", false), ("unnamed", true)];
        let unnamed_statements = env.one_of("DATABASE_STATEMENTS", false, &statements)?;
        let docs = env.one_of("DOCS", true, &[("on", true), ("off", false)])?;
        let level = || env.parsed("LOG_LEVEL", LevelFilter::Info).map(|level| level.to_string());
        let log_filter = env.get("RUST_LOG").map_or_else(level, Ok)?;
        let unset = || ConfigError::invalid("DATABASE_URL", "not set (nor DATABASE_URL_FILE)");
        let read_url = ("DATABASE_READ_URL", "DATABASE_READ_URL_FILE");
        Ok(Config {
            database: url(&env, ("DATABASE_URL", "DATABASE_URL_FILE"), DbOptions::parse)?
                .ok_or_else(unset)?,
            standbys: url(&env, read_url, DbOptions::parse_each_host)?.unwrap_or_default(),
            read_max_lag: env.seconds("READ_MAX_LAG", 1, true)?,
            host: env.read("HOST", |host| host.parse().map_err(|_| "not an IP address".into()))?,
            port: env.parsed("PORT", DEFAULT_PORT)?,
            // 0 stands for unset: `count` refuses it from the environment.
            max_connections: Some(env.count("MAX_CONNECTIONS", 0)?).filter(|&n| n > 0),
            log_filter,
            log_format: env.one_of("LOG_FORMAT", Format::Text, &logs::FORMATS)?,
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

/// The URL in `var` or in the file `file` names (a secret), parsed; `None` when neither is set.
fn url<T>(
    env: &Env,
    (var, file): (&'static str, &'static str),
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    let (var, url) = match (env.get(var), env.get(file)) {
        (Some(_), Some(_)) => (file, Err(format!("set either {var} or {file}, not both"))),
        (Some(url), None) => (var, Ok(url)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map(|text| text.trim().to_owned());
            (file, text.map_err(|err| format!("cannot read {path}: {err}")))
        }
        (None, None) => return Ok(None),
    };
    url.and_then(|url| parse(&url)).map(Some).map_err(|why| ConfigError::invalid(var, why))
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
        assert_eq!(parse(&[URL, ("DOCS", "no")]).unwrap_err().var, "DOCS");
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret") && shown.contains("db.internal"), "{shown}");
        let config = parse(&[URL, ("LOG_LEVEL", "warn"), ("RUST_LOG", "debug")]);
        assert_eq!(config.unwrap().log_filter, "debug", "RUST_LOG wins");
    }
}
