//! task-api: a Task API as one static binary that serves HTTP, applies its own
//! embedded migrations and is its own health probe. The map, one line a module:
//!
//! - [`cli`]: the command line → [`cli::Command`].
//! - [`config`]: the environment → [`config::Config`], read once; [`env`] reads a variable,
//!   each error naming it.
//! - [`http`]: the server: accept loop, connections and their deadlines, routing, handlers,
//!   bodies, conditional requests, Idempotency-Key headers, errors, request ids.
//! - [`store`]: the data path: the pool and its 5 s budget, batched statements, keyed
//!   creates and their pruner, the SQL, and what database errors mean.
//! - [`pg`]: PostgreSQL below the store: `DATABASE_URL` as libpq reads it, `sslmode` on rustls,
//!   connecting with the start-up wait, the embedded `sql/` migrations.
//! - [`tasks`]: the task resource: its types and the rules input must keep; no SQL, no HTTP.
//! - [`observe`]: logs, Prometheus metrics, and OpenTelemetry traces (off by default).
//! - [`healthcheck`]: the client side of `task-api healthcheck`.
//! - [`shutdown`]: one future that completes on SIGTERM or SIGINT.
//! - [`error`]: the process-level errors, their exit codes, and [`error::describe`].
//!
//! Imports point one way: `main` → [`http`] → [`store`] → [`pg`], with [`tasks`],
//! [`observe`], [`config`] and [`error`] below them. No module imports [`http`].

pub mod cli;
pub mod config;
pub mod env;
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
