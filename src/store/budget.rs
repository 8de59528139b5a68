//! The 5 s budget (spec §2): a request that needs the database gets an answer within
//! [`REQUEST_BUDGET`], or fails as unavailable (a 503). Every wait on the database goes
//! through here: the pool's own waits, and each store call as a whole.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Manager, Pool, Runtime};

use super::StoreError;

/// How long a request may wait for the database before it fails (spec §2).
pub const REQUEST_BUDGET: Duration = Duration::from_secs(5);

/// Runs `work` within [`REQUEST_BUDGET`]; past it, the request fails as unavailable.
pub async fn within_budget<T>(
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(REQUEST_BUDGET, work)
        .await
        .unwrap_or_else(|_| Err(out_of_time()))
}

/// The failure of a request whose budget ran out.
fn out_of_time() -> StoreError {
    StoreError::unavailable(format!("no answer within {REQUEST_BUDGET:?}"))
}

/// A pool of at most `max_size` connections, every way of waiting for which (a free
/// connection, a new one, a recycled one) is bounded by [`REQUEST_BUDGET`], so a dead
/// database gives fast failures, never hung requests.
pub fn pool(manager: Manager, max_size: usize) -> Result<Pool, String> {
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(REQUEST_BUDGET))
        .create_timeout(Some(REQUEST_BUDGET))
        .recycle_timeout(Some(REQUEST_BUDGET))
        .build()
        .map_err(|err| format!("database pool: {err}"))
}
