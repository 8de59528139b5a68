//! The command line (spec §3): pico-args → [`Command`]. Only argv: the environment is config.rs's.

use std::time::Duration;

use crate::Error;
use crate::env::parse_seconds;
use crate::healthcheck::Probe;

/// What `--help` prints.
pub const USAGE: &str = "\
task-api: a Task API in one static binary

USAGE:
    task-api [serve]      apply pending migrations, then serve HTTP (the default)
    task-api migrate      apply pending migrations, print what was applied, exit
    task-api healthcheck [--ready] [--url URL] [--timeout SECS]
                          GET http://127.0.0.1:$PORT/health (/ready with --ready);
                          exit 0 on 200 within the timeout (default 3 s), else 1
    task-api --version    print the version
    task-api --help       print this help

ENVIRONMENT:
    DATABASE_URL              postgres:// URL or libpq key=value string (serve, migrate)
    DATABASE_URL_FILE         read DATABASE_URL from this file instead
    PORT                      listen port (default 8000)
    HOST                      listen address (default: every address, IPv4 and IPv6)
    MAX_CONNECTIONS           most clients at once; more get 503 (default: from the fd limit)
    LOG_LEVEL                 error, warn, info, debug or trace (default info); RUST_LOG wins
    LOG_FORMAT                text (default) or json: one JSON object a line
    DATABASE_POOL_SIZE        max database connections (default 8)
    DATABASE_STATEMENTS       prepared (default), or unnamed behind a transaction-mode pooler
    DATABASE_STARTUP_TIMEOUT  seconds to keep retrying the database at start-up (default 60)
    SHUTDOWN_DELAY            seconds it serves on after SIGTERM, /ready failing (default 0)
    SHUTDOWN_TIMEOUT          seconds in-flight requests get after that (default 8)
    IDEMPOTENCY_KEY_TTL       seconds an Idempotency-Key is remembered (default 86400)

EXIT CODES:
    0 success, 1 runtime failure, 2 bad usage or configuration
";

/// The probe's default budget (spec §3).
const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// One parsed invocation.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// Migrate, then serve.
    Serve,
    /// Migrate and exit.
    Migrate,
    /// Probe a running server.
    Healthcheck(Probe),
    Version,
    Help,
}

/// Parses this process's arguments.
pub fn parse() -> Result<Command, Error> {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        return Ok(Command::Help);
    }
    if args.contains(["-V", "--version"]) {
        return Ok(Command::Version);
    }
    let subcommand = args.subcommand().map_err(|err| Error::Usage(err.to_string()))?;
    let command = match subcommand.as_deref() {
        None | Some("serve") => Command::Serve,
        Some("migrate") => Command::Migrate,
        Some("healthcheck") => Command::Healthcheck(Probe {
            ready: args.contains("--ready"),
            url: args.opt_value_from_str("--url").map_err(flag("--url"))?,
            timeout: args
                .opt_value_from_fn("--timeout", parse_seconds)
                .map_err(flag("--timeout"))?
                .unwrap_or(DEFAULT_PROBE_TIMEOUT),
        }),
        Some(other) => return Err(Error::Usage(format!("unknown command '{other}'"))),
    };
    match args.finish().first() {
        Some(extra) => Err(Error::Usage(format!("unexpected argument '{}'", extra.display()))),
        None => Ok(command),
    }
}

/// pico-args names the flag when its value is missing, not when it fails to parse.
fn flag(name: &'static str) -> impl Fn(pico_args::Error) -> Error {
    move |err| match err {
        pico_args::Error::Utf8ArgumentParsingFailed { cause, .. } => {
            Error::Usage(format!("{name}: {cause}"))
        }
        other => Error::Usage(other.to_string()),
    }
}
