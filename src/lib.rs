//! task-api: a Task API as one static binary that serves HTTP, applies its own
//! embedded migrations and is its own health probe. The map, one line a module:
//!
//! - [`cli`]: the command line → [`cli::Command`].
//! - [`config`]: the environment → [`config::Config`], read once.
//! - [`logging`]: env_logger on stdout, at `LOG_LEVEL` or `RUST_LOG`.
//! - [`db`]: `DATABASE_URL`, parsed as libpq parses it → connections; the start-up wait.
//! - [`tls`]: libpq's `sslmode` on rustls: which certificate checks each mode makes.
//! - [`migrate`]: the embedded `sql/` migrations, under an advisory lock.
//! - [`shutdown`]: one future that completes on SIGTERM or SIGINT.
//! - [`healthcheck`]: the client side of `task-api healthcheck`.
//! - [`tasks`]: the task resource: its types and the rules input must keep; no SQL, no HTTP.
//! - [`store`]: the data path: pool, batched statements, the 5 s budget, the SQL, and
//!   what database errors mean.
//! - [`trace`]: OpenTelemetry traces, off by default: spans, sampling, the OTLP export.
//! - [`http`]: the server: accept loop, routing, handlers, bodies, errors, request ids.
//! - [`error`]: the process-level errors, their exit codes, and [`error::describe`].
//!
//! Imports point one way: `main` → [`http`] → [`store`] → [`tasks`], with [`trace`],
//! [`config`], [`db`], [`tls`] and [`error`] below them.

pub mod cli;
pub mod config;
pub mod error;
pub mod healthcheck;
pub mod http;
pub mod observe;
pub mod pg;
pub mod shutdown;
pub mod store;
pub mod tasks;

pub use error::Error;

/// The crate version, as `/health` and `--version` report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
