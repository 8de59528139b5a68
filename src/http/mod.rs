//! The HTTP server: start-up in the spec's order (connect, migrate, listen), the
//! accept loop, and the bounded drain on SIGTERM (spec §5). What a request does is
//! router.rs's business.

pub mod body;
pub mod error;
pub mod handlers;
pub mod metrics;
pub mod request_id;
pub mod router;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::batch::{self, Batcher};
use crate::config::Config;
use crate::tasks::{NewTask, Task};
use crate::{Error, db, logging, migrate, shutdown};
use error::ApiError;

/// A client that has not sent its whole header by then is disconnected (spec §5).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What every handler may use.
pub struct App {
    /// The request pool; every wait on it is bounded (see `db::REQUEST_BUDGET`).
    pub pool: Pool,
    /// What `/metrics` reports.
    pub metrics: metrics::Metrics,
    /// `GET /tasks/{id}`, batched.
    pub finder: Batcher<i64, Result<Option<Task>, ApiError>>,
    /// `POST /tasks`, batched.
    pub creator: Batcher<NewTask, Result<Task, ApiError>>,
}

/// `task-api serve`: wait for the database, migrate, listen, serve until SIGTERM or
/// SIGINT, drain, close the pool.
pub fn run(config: Config) -> Result<(), Error> {
    logging::init(&config.log_filter);
    log::info!("task-api {} starting with {config:?}", crate::VERSION);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| Error::Startup(format!("tokio runtime: {err}")))?;
    runtime.block_on(async {
        let signals = shutdown::signals()
            .map_err(|err| Error::Startup(format!("cannot install signal handlers: {err}")))?;
        let mut signals = std::pin::pin!(signals);
        let (pool, listener, applied) = tokio::select! {
            started = start(&config) => started?,
            signal = &mut signals => {
                log::info!("{signal} received during start-up; exiting");
                return Ok(());
            }
        };
        let metrics = metrics::Metrics::new(applied, config.pool_size);
        let lanes = batch::LANES.min(config.pool_size);
        let app = Arc::new(App {
            finder: handlers::finder(pool.clone(), lanes, metrics.batch_sizes("find")),
            creator: handlers::creator(pool.clone(), lanes, metrics.batch_sizes("insert")),
            pool: pool.clone(),
            metrics,
        });
        serve(listener, app, signals, config.shutdown_timeout).await;
        pool.close();
        log::info!("stopped");
        Ok(())
    })
}

/// Connects, migrates and binds; returns the pool, the listener and how many
/// migrations were applied.
async fn start(config: &Config) -> Result<(Pool, TcpListener, usize), Error> {
    let mut client = db::connect_with_retry(&config.database, config.startup_timeout).await?;
    let applied = migrate::apply(&mut client).await?.len();
    drop(client);
    let pool = config.database.pool(config.pool_size)?;
    // Open the first pooled connection now, so the first request does not pay for it.
    if let Err(err) = pool.get().await {
        log::warn!("could not open a pooled database connection yet: {err}");
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|err| Error::Startup(format!("cannot listen on {}: {err}", config.listen)))?;
    Ok((pool, listener, applied))
}

/// Serves `listener` until `shutdown` completes, then stops accepting and gives
/// in-flight requests up to `drain` to finish. Idle keep-alive connections close at once.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = &'static str>,
    drain: Duration,
) {
    match listener.local_addr() {
        Ok(addr) => log::info!("listening on http://{addr}"),
        Err(err) => log::warn!("listening, address unknown: {err}"),
    }
    let mut http = http1::Builder::new();
    // Without a timer hyper silently skips the header-read timeout.
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(err) => {
                        // EMFILE and friends: pause rather than spin.
                        log::warn!("accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if let Err(err) = stream.set_nodelay(true) {
                    log::debug!("TCP_NODELAY: {err}");
                }
                let app = app.clone();
                let service = service_fn(move |request| router::handle(app.clone(), request));
                let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(err) = connection.await {
                        log::debug!("connection ended: {err}");
                    }
                });
            }
            signal = &mut shutdown => {
                log::info!("{signal} received; draining for up to {drain:?}");
                break;
            }
        }
    }
    drop(listener); // stop accepting; in-flight requests carry on
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        log::warn!("connections still open after {drain:?}; exiting");
    }
}
