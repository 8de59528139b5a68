//! The HTTP server: start-up in the spec's order (connect, migrate, listen), the accept loop
//! with its cap on connections, and the bounded drain on SIGTERM (spec §5).

mod access;
mod body;
mod conditional;
mod conn;
mod docs;
mod error;
mod handlers;
mod idempotency;
mod listener;
mod page;
mod response;
mod router;

use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Config;
use crate::error::describe;
use crate::observe::traces::Tracer;
use crate::observe::{logs, metrics};
use crate::pg::{connect as db, indexes, migrate};
use crate::store::Store;
use crate::{Error, shutdown};

/// A client that has not sent its whole head by then is disconnected (spec §5); as hyper
/// runs it while a kept-alive connection waits too, it is the idle timeout as well.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head (line and headers) read (spec §2: 431 past it); also the most
/// hyper buffers per connection, each way.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Connections over `MAX_CONNECTIONS` answered 503 at once; past these, closed unread.
const OVER_CAPACITY_ANSWERS: usize = 128;
/// An over-capacity client gets this long to send its request head.
const OVER_CAPACITY_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// What every handler may use.
pub struct App {
    /// The tasks, in the database.
    pub store: Store,
    /// What `/metrics` reports.
    pub metrics: metrics::Metrics,
    /// Set at SIGTERM: `/ready` fails, and every response says `connection: close`.
    pub stopping: AtomicBool,
    /// Where spans go; `None`: tracing is off.
    pub tracer: Option<Tracer>,
    /// `DOCS`: whether `/docs` serves the API reference.
    pub docs: bool,
}

/// `task-api serve`: wait for the database, migrate, listen, serve till SIGTERM or SIGINT, drain.
pub fn run(mut config: Config) -> Result<(), Error> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    let _lines = logs::init(&config.log_filter, config.log_format, &mut runtime); // to the end
    log::info!("task-api {} starting with {config:?}", crate::VERSION);
    let runtime = runtime
        .enable_all()
        .build()
        .map_err(|err| Error::Startup(format!("tokio runtime: {err}")))?;
    // Spawned, so that it runs on the workers, whose going idle writes out the log lines.
    let served = runtime.block_on(runtime.spawn(async move {
        let signals = shutdown::signals()
            .map_err(|err| Error::Startup(format!("cannot install signal handlers: {err}")))?;
        let mut signals = pin!(signals);
        let max_connections = listener::max_connections(config.max_connections, config.pool_size);
        let (store, listener, applied) = tokio::select! {
            started = start(&config) => started?,
            signal = &mut signals => {
                log::info!("{signal} received during start-up; exiting");
                return Ok(());
            }
        };
        let mut metrics = metrics::Metrics::new(applied, config.pool_size);
        store.register_metrics(metrics.registry_mut());
        let tracer = config.tracing.take().map(Tracer::start);
        if let Some(tracer) = &tracer {
            tracer.register_metrics(metrics.registry_mut());
        }
        let stopping = AtomicBool::new(false);
        let app = Arc::new(App { store, metrics, stopping, tracer, docs: config.docs });
        let indexes = build_indexes(&config);
        let (delay, drain) = (config.shutdown_delay, config.shutdown_timeout);
        serve(listener, app.clone(), signals, max_connections, (delay, drain)).await;
        indexes.abort();
        app.store.close().await;
        log::info!("stopped");
        Ok(())
    }));
    served.unwrap_or_else(|panicked| std::panic::resume_unwind(panicked.into_panic()))
}

/// Builds the indexes of `sql/indexes` in the background on a connection of its own, unless
/// statements go unnamed (a pooler would lose the build's lock: `task-api migrate` does it).
fn build_indexes(config: &Config) -> tokio::task::JoinHandle<()> {
    let db = (indexes::any() && !config.unnamed_statements).then(|| config.database.clone());
    tokio::spawn(async move {
        let Some(db) = db else { return };
        match async { indexes::build(&db.connect().await?).await }.await {
            Ok(true) => {}
            Ok(false) => log::info!("another process is building the indexes of sql/indexes"),
            Err(err) => {
                log::warn!("could not build the indexes of sql/indexes: {}", describe(&err))
            }
        }
    })
}

/// Connects, migrates and binds; returns the store, the listener and the migrations applied.
async fn start(config: &Config) -> Result<(Store, TcpListener, usize), Error> {
    let deadline = db::startup_deadline(config.startup_timeout);
    let mut client = db::connect_with_retry(&config.database, deadline).await?;
    let applied = migrate::apply(&config.database, &mut client, deadline).await?.len();
    drop(client);
    let store = Store::open(
        &config.database,
        config.pool_size,
        config.idempotency_key_ttl,
        config.unnamed_statements,
        (&config.standbys, config.read_max_lag),
    )
    .map_err(Error::Startup)?;
    store.warm_up().await;
    let listener = listener::bind(config.host, config.port).map_err(|err| {
        let host = config.host.map_or("every address".into(), |ip| ip.to_string());
        Error::Startup(format!("cannot listen on {host}:{}: {err}", config.port))
    })?;
    Ok((store, listener, applied))
}

/// Serves `listener`, `max_connections` clients at once (the next get 503), until
/// `shutdown` completes; then `/ready` fails and responses say `connection: close` while
/// it serves on for `delay` (`SHUTDOWN_DELAY`); then it stops accepting and gives
/// in-flight requests up to `drain` (`SHUTDOWN_TIMEOUT`), spans what is left of it.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = &'static str>,
    max_connections: usize,
    (delay, drain): (Duration, Duration),
) {
    match listener.local_addr() {
        Ok(addr) => log::info!("listening on http://{addr}"),
        Err(err) => log::warn!("listening, address unknown: {err}"),
    }
    let mut http = http1::Builder::new();
    // Without a timer hyper silently skips the header-read timeout.
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    let mut over_capacity = http.clone();
    over_capacity.keep_alive(false).header_read_timeout(OVER_CAPACITY_HEADER_TIMEOUT);
    let slots = Arc::new(Semaphore::new(max_connections));
    let answers = Arc::new(Semaphore::new(OVER_CAPACITY_ANSWERS));
    let graceful = GracefulShutdown::new();
    {
        let accepting = async {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _peer)) => stream,
                    Err(err) => {
                        // EMFILE and friends: pause rather than spin.
                        log::warn!("accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                conn::configure(&stream);
                if let Ok(slot) = slots.clone().try_acquire_owned() {
                    spawn_connection(&http, Some(&graceful), &app, stream, slot);
                } else {
                    app.metrics.cut("over_capacity");
                    if let Ok(answer) = answers.clone().try_acquire_owned() {
                        spawn_connection(&over_capacity, None, &app, stream, answer);
                    }
                }
            }
        };
        let mut accepting = pin!(accepting);
        let signal = tokio::select! {
            signal = shutdown => signal,
            () = &mut accepting => unreachable!("the accept loop never ends"),
        };
        app.stopping.store(true, Ordering::Relaxed);
        if delay.is_zero() {
            log::info!("{signal} received; draining for up to {:?}", drain);
        } else {
            log::info!("{signal} received; /ready fails, serving on for {:?}", delay);
            let _ = tokio::time::timeout(delay, accepting).await;
            log::info!("stopped accepting; draining for up to {:?}", drain);
        }
    }
    drop(listener); // stop accepting; in-flight requests carry on
    let drained_by = std::time::Instant::now() + drain;
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        log::warn!("connections still open after {:?}; exiting", drain);
    }
    if let Some(tracer) = &app.tracer {
        tracer.flush(drained_by).await;
    }
}

/// Serves one client, holding `permit` till it goes: without `graceful` (over
/// `MAX_CONNECTIONS`) a 503 and close; else the router, the drain waits, and a cut is counted.
fn spawn_connection(
    http: &http1::Builder,
    graceful: Option<&GracefulShutdown>,
    app: &Arc<App>,
    stream: TcpStream,
    permit: OwnedSemaphorePermit,
) {
    let refuse = graceful.is_none();
    let requests = Arc::new(AtomicU64::new(0));
    let service = {
        let (app, requests) = (app.clone(), requests.clone());
        service_fn(move |request| {
            requests.fetch_add(1, Ordering::Relaxed);
            router::handle(app.clone(), request, refuse)
        })
    };
    let io = TokioIo::new(conn::ClientIo::new(stream, app.clone()));
    let connection = http.serve_connection(io, service);
    let connection: Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>> = match graceful {
        Some(graceful) => Box::pin(graceful.watch(connection)),
        None => Box::pin(connection),
    };
    let app = app.clone();
    tokio::spawn(async move {
        let _open = (!refuse).then(|| app.metrics.connection_open());
        if let Err(err) = connection.await {
            let requests = requests.load(Ordering::Relaxed);
            if let Some(cut) = conn::cut(&err, requests).filter(|_| !refuse) {
                app.metrics.cut(cut);
            }
            log::debug!("connection ended: {}", describe(&err));
        }
        drop(permit);
    });
}
