//! The HTTP server: start-up in the spec's order (connect, migrate, listen), the
//! accept loop, and the bounded drain on SIGTERM (spec §5). What a request does is
//! router.rs's business.

pub mod body;
pub mod error;
pub mod handlers;
pub mod metrics;
pub mod request_id;
pub mod response;
pub mod router;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::store::Store;
use crate::{Error, db, logging, migrate, shutdown};

/// A client that has not sent its whole header by then is disconnected (spec §5).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What every handler may use.
pub struct App {
    /// The tasks, in the database.
    pub store: Store,
    /// What `/metrics` reports.
    pub metrics: metrics::Metrics,
}

/// `task-api serve`: wait for the database, migrate, listen, serve until SIGTERM or
/// SIGINT, drain, close the store.
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
        let (store, listener, applied) = tokio::select! {
            started = start(&config) => started?,
            signal = &mut signals => {
                log::info!("{signal} received during start-up; exiting");
                return Ok(());
            }
        };
        let mut metrics = metrics::Metrics::new(applied, config.pool_size);
        store.register_metrics(metrics.registry_mut());
        let app = Arc::new(App { store, metrics });
        serve(listener, app.clone(), signals, config.shutdown_timeout).await;
        app.store.close();
        log::info!("stopped");
        Ok(())
    })
}

/// Connects, migrates and binds; returns the store, the listener and how many
/// migrations were applied.
async fn start(config: &Config) -> Result<(Store, TcpListener, usize), Error> {
    let deadline = db::startup_deadline(config.startup_timeout);
    let mut client = db::connect_with_retry(&config.database, deadline).await?;
    let applied = migrate::apply(&config.database, &mut client, deadline)
        .await?
        .len();
    drop(client);
    let store = Store::open(&config.database, config.pool_size).map_err(Error::Startup)?;
    store.warm_up().await;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|err| Error::Startup(format!("cannot listen on {}: {err}", config.listen)))?;
    Ok((store, listener, applied))
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
                        log::debug!("connection ended: {}", crate::error::describe(&err));
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
