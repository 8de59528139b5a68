//! The environment → [`Config`], read once (spec §4). Every error names its
//! variable. Nothing else in the crate reads the environment; `DATABASE_URL_FILE`
//! is resolved here, so nothing later knows where the URL came from.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use log::LevelFilter;

pub use crate::error::ConfigError;
use crate::observe::logs::Format;
use crate::observe::traces::TraceConfig;
use crate::pg::DbOptions;

/// The listen port when `PORT` is unset.
pub const DEFAULT_PORT: u16 = 8000;
/// Default `DATABASE_POOL_SIZE`: see the README's Performance section for the measurement.
pub const DEFAULT_POOL_SIZE: usize = 8;
const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(8);
const DEFAULT_IDEMPOTENCY_KEY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Everything `serve` and `migrate` need, parsed and checked.
pub struct Config {
    /// Where the database is and how to reach it (TLS included).
    pub database: DbOptions,
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
}

impl Config {
    /// Reads this process's environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::parse(|name| std::env::var(name).ok())
    }

    /// Parses from a lookup function, so tests need not touch the real environment.
    /// An empty variable counts as unset.
    pub fn parse(env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let env = |name: &str| env(name).filter(|value| !value.trim().is_empty());
        let port = parsed(&env, "PORT", DEFAULT_PORT)?;
        let host = env("HOST")
            .map(|text| text.trim().parse())
            .transpose()
            .map_err(|_| ConfigError::invalid("HOST", "not an IP address"))?;
        let max_connections = env("MAX_CONNECTIONS")
            .map(|text| match text.trim().parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(ConfigError::invalid(
                    "MAX_CONNECTIONS",
                    "must be a whole number of at least 1",
                )),
            })
            .transpose()?;
        let log_filter = match env("RUST_LOG") {
            Some(filter) => filter,
            None => parsed(&env, "LOG_LEVEL", LevelFilter::Info)?.to_string(),
        };
        let pool_size = parsed(&env, "DATABASE_POOL_SIZE", DEFAULT_POOL_SIZE)?;
        if pool_size == 0 {
            return Err(ConfigError::invalid(
                "DATABASE_POOL_SIZE",
                "must be at least 1",
            ));
        }
        let unnamed_statements = match env("DATABASE_STATEMENTS").as_deref().map(str::trim) {
            None | Some("prepared") => false,
            Some("unnamed") => true,
            Some(_) => {
                return Err(ConfigError::invalid(
                    "DATABASE_STATEMENTS",
                    "must be prepared or unnamed",
                ));
            }
        };
        Ok(Config {
            database: database(&env)?,
            unnamed_statements,
            host,
            port,
            max_connections,
            log_filter,
            log_format: parsed(&env, "LOG_FORMAT", Format::Text)?,
            pool_size,
            startup_timeout: seconds(&env, "DATABASE_STARTUP_TIMEOUT", DEFAULT_STARTUP_TIMEOUT)?,
            shutdown_delay: seconds(&env, "SHUTDOWN_DELAY", Duration::ZERO)?,
            shutdown_timeout: seconds(&env, "SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN_TIMEOUT)?,
            idempotency_key_ttl: positive_seconds(
                &env,
                "IDEMPOTENCY_KEY_TTL",
                DEFAULT_IDEMPOTENCY_KEY_TTL,
            )?,
            tracing: crate::observe::traces::config::parse(&env)?,
        })
    }
}

/// The port `healthcheck` probes: `PORT`, or 8000. The probe reads nothing else.
pub fn probe_port() -> Result<u16, ConfigError> {
    parsed(&|name: &str| std::env::var(name).ok(), "PORT", DEFAULT_PORT)
}

// Hand-written so `{:?}` can never print the password (spec §6).
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database", &self.database.target())
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
            .finish()
    }
}

fn database(env: &impl Fn(&str) -> Option<String>) -> Result<DbOptions, ConfigError> {
    let (var, url) = match (env("DATABASE_URL"), env("DATABASE_URL_FILE")) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                "DATABASE_URL_FILE",
                "set either DATABASE_URL or DATABASE_URL_FILE, not both",
            ));
        }
        (Some(url), None) => ("DATABASE_URL", url),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|err| {
                ConfigError::invalid("DATABASE_URL_FILE", format!("cannot read {path}: {err}"))
            })?;
            ("DATABASE_URL_FILE", text.trim().to_owned())
        }
        (None, None) => {
            return Err(ConfigError::invalid(
                "DATABASE_URL",
                "not set (nor DATABASE_URL_FILE)",
            ));
        }
    };
    DbOptions::parse(&url).map_err(|reason| ConfigError::invalid(var, reason))
}

fn parsed<T: FromStr>(
    env: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match env(var) {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse()
            .map_err(|_| ConfigError::invalid(var, format!("'{text}' is not valid"))),
    }
}

fn seconds(
    env: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match env(var) {
        None => Ok(default),
        Some(text) if text.trim() == "0" => Ok(Duration::ZERO),
        Some(text) => {
            parse_seconds(text.trim()).map_err(|reason| ConfigError::invalid(var, reason))
        }
    }
}

/// A duration in seconds that must be more than zero.
fn positive_seconds(
    env: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match env(var) {
        None => Ok(default),
        Some(text) => {
            parse_seconds(text.trim()).map_err(|reason| ConfigError::invalid(var, reason))
        }
    }
}

/// A positive number of seconds, fractions allowed: `3`, `0.5`. The command line's
/// `--timeout` takes the same form.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && *secs > 0.0)
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("'{text}' is not a positive number of seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "postgres://app:s3cret@db.internal:5432/tasks";

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::parse(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn defaults_follow_the_spec() {
        let config = parse(&[("DATABASE_URL", URL)]).unwrap();
        assert_eq!((config.host, config.port), (None, 8000));
        assert_eq!(config.max_connections, None);
        assert_eq!(config.log_filter, "INFO");
        assert_eq!(config.pool_size, DEFAULT_POOL_SIZE);
        assert_eq!(config.startup_timeout, Duration::from_secs(60));
        assert_eq!(config.shutdown_delay, Duration::ZERO);
        assert_eq!(config.shutdown_timeout, Duration::from_secs(8));
        assert_eq!(config.idempotency_key_ttl, Duration::from_secs(86_400));
        assert!(config.tracing.is_none(), "tracing is off by default");
    }

    #[test]
    fn every_error_names_its_variable() {
        for (vars, var) in [
            (&[][..], "DATABASE_URL"),
            (&[("DATABASE_URL", URL), ("PORT", "eighty")][..], "PORT"),
            (&[("DATABASE_URL", URL), ("PORT", "70000")][..], "PORT"),
            (
                &[("DATABASE_URL", URL), ("HOST", "example.com")][..],
                "HOST",
            ),
            (
                &[("DATABASE_URL", URL), ("MAX_CONNECTIONS", "0")][..],
                "MAX_CONNECTIONS",
            ),
            (
                &[("DATABASE_URL", URL), ("LOG_LEVEL", "loud")][..],
                "LOG_LEVEL",
            ),
            (
                &[("DATABASE_URL", URL), ("LOG_FORMAT", "yaml")][..],
                "LOG_FORMAT",
            ),
            (
                &[("DATABASE_URL", URL), ("DATABASE_STATEMENTS", "named")][..],
                "DATABASE_STATEMENTS",
            ),
            (
                &[("DATABASE_URL", URL), ("DATABASE_POOL_SIZE", "0")][..],
                "DATABASE_POOL_SIZE",
            ),
            (
                &[("DATABASE_URL", URL), ("SHUTDOWN_TIMEOUT", "-3")][..],
                "SHUTDOWN_TIMEOUT",
            ),
            (
                &[("DATABASE_URL", URL), ("SHUTDOWN_DELAY", "soon")][..],
                "SHUTDOWN_DELAY",
            ),
            (
                &[("DATABASE_URL", URL), ("DATABASE_STARTUP_TIMEOUT", "x")][..],
                "DATABASE_STARTUP_TIMEOUT",
            ),
            (
                &[("DATABASE_URL", URL), ("IDEMPOTENCY_KEY_TTL", "0")][..],
                "IDEMPOTENCY_KEY_TTL",
            ),
            (&[("DATABASE_URL", "mysql://x")][..], "DATABASE_URL"),
            (
                &[
                    ("DATABASE_URL", URL),
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                    ("OTEL_TRACES_SAMPLER", "sometimes"),
                ][..],
                "OTEL_TRACES_SAMPLER",
            ),
            (
                &[("DATABASE_URL", URL), ("DATABASE_URL_FILE", "/x")][..],
                "DATABASE_URL_FILE",
            ),
            (
                &[("DATABASE_URL_FILE", "/nonexistent/secret")][..],
                "DATABASE_URL_FILE",
            ),
        ] {
            assert_eq!(parse(vars).err().map(|e| e.var), Some(var), "{vars:?}");
        }
    }

    #[test]
    fn rust_log_wins_over_log_level() {
        let config = parse(&[
            ("DATABASE_URL", URL),
            ("LOG_LEVEL", "warn"),
            ("RUST_LOG", "debug"),
        ]);
        assert_eq!(config.unwrap().log_filter, "debug");
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let config = parse(&[("DATABASE_URL", URL), ("PORT", ""), ("HOST", " ")]).unwrap();
        assert_eq!((config.host, config.port), (None, 8000));
    }

    #[test]
    fn debug_output_never_holds_the_password() {
        let config = parse(&[("DATABASE_URL", URL)]).unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("db.internal"), "{shown}");
    }
}
