//! The integration suite: the real `task-api` binary over real HTTP against a real
//! PostgreSQL, one throwaway database per test. Run it with `make test`.

mod batching;
mod cli;
mod docs;
mod errors;
mod helpers;
mod lifecycle;
mod limits;
mod metrics;
mod outcomes;
mod pooler;
mod probe;
mod retries;
mod running;
mod tasks;
mod tls;
mod tracing;
