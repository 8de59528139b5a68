//! One future that completes on SIGTERM or SIGINT. SIGTERM is what `docker stop`
//! and Kubernetes send to PID 1, so ctrl-c alone would not do (spec §5).

use std::io;

use tokio::signal::unix::{SignalKind, signal};

/// Installs the handlers now (so a signal during start-up is neither lost nor fatal), inside
/// a tokio runtime, and returns a future naming the first signal received.
pub fn signals() -> io::Result<impl Future<Output = &'static str> + Send + 'static> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        }
    })
}
