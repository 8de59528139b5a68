//! A pooled connection with a statement running ([`InFlight`]), and cancelling it, so a
//! client that leaves costs a cancel request, not a new connection. When to give up on a
//! statement is pool.rs's business.

use std::time::Duration;

use deadpool_postgres::Object;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::sql::Conn;
use crate::error::describe;

/// A cancel, and the connection coming back idle after it, that take longer close it.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);

/// A pooled connection with a statement running. Finished, it goes back to the pool;
/// dropped unfinished, its statement is cancelled and it goes back once idle again.
pub struct InFlight<'a> {
    pub conn: Option<Conn>,
    pub tls: &'a MakeRustlsConnect,
}

impl InFlight<'_> {
    /// The connection, until the statement is finished, discarded or dropped.
    pub fn conn(&self) -> &Conn {
        self.conn.as_ref().expect("taken only by finish, discard or drop")
    }

    /// The statement is done: the connection goes back to the pool.
    pub fn finish(mut self) {
        self.conn.take();
    }

    /// The statement is done, and the connection is no good: it is closed.
    pub fn discard(mut self) {
        if let Some(conn) = self.conn.take() {
            drop(Object::take(conn.client));
        }
    }

    /// Asks the server to stop the statement (a cancel request, on a connection of its
    /// own); the verdict still comes back on this one.
    pub fn cancel(&self) {
        let (token, tls) = (self.conn().client.cancel_token(), self.tls.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(CANCEL_TIMEOUT, token.cancel_query(tls)).await {
                Ok(Ok(())) => log::debug!("cancelled a statement at its deadline"),
                Ok(Err(err)) => log::warn!("could not cancel a statement: {}", describe(&err)),
                Err(_) => log::warn!("could not cancel a statement within {CANCEL_TIMEOUT:?}"),
            }
        });
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            tokio::spawn(settle(conn.client, self.tls.clone()));
        }
    }
}

/// A connection whose statement nobody waits for any more: the statement is cancelled, and
/// once the server answers on it again (so it is idle) it goes back to the pool; one that
/// does not within [`CANCEL_TIMEOUT`] is closed.
async fn settle(object: Object, tls: MakeRustlsConnect) {
    let token = object.cancel_token();
    let idle = async {
        token.cancel_query(tls).await?;
        // Answered after whatever the cancelled statement still sends. A cancel that
        // came too late for the statement can hit this one instead: then once more.
        match object.batch_execute("").await {
            Err(err) if err.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) => {
                object.batch_execute("").await
            }
            other => other,
        }
    };
    let failed = match tokio::time::timeout(CANCEL_TIMEOUT, idle).await {
        Ok(Ok(())) => return log::debug!("cancelled a statement; its connection is idle again"),
        Ok(Err(err)) => format!("could not cancel a statement: {}", describe(&err)),
        Err(_) => format!("could not cancel a statement within {CANCEL_TIMEOUT:?}"),
    };
    log::warn!("{failed}");
    drop(Object::take(object));
}
