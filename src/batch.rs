//! Natural batching: concurrent requests for the same kind of query share one
//! statement. A request joins a queue; at most `lanes` batches run at a time, and a
//! lane that comes free takes everything queued (up to [`MAX_BATCH`]). Nothing waits
//! for a batch to fill: when a lane is free, a lone request runs at once, alone. Only
//! while every lane is busy do requests pile up, and then they go together.
//!
//! The point is the database's cost per request. PostgreSQL spends most of a
//! one-row lookup or insert on the round trip and the commit, not on the row, so one
//! statement for many requests costs far less than a statement each (the README's
//! Performance section has the numbers).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

/// Most requests one statement serves.
pub const MAX_BATCH: usize = 128;

/// Batches of one query in flight at once, each on its own pooled connection. Two
/// beat one, four and eight in paired runs (README, Performance): fewer lanes
/// make bigger batches, so the database does less per request. A slower or more
/// distant database should need no more lanes: batches grow to fill the wait.
pub const LANES: usize = 2;

type Job<I, O> = (I, oneshot::Sender<O>);

/// A queue in front of one batched query: `run` gets the inputs of a batch and
/// answers them in the same order.
pub struct Batcher<I, O> {
    queue: mpsc::UnboundedSender<Job<I, O>>,
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the dispatcher on the current tokio runtime. It stops when the
    /// `Batcher` is dropped and the queue is empty.
    pub fn new<F, Fut>(lanes: usize, run: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(jobs, Arc::new(Semaphore::new(lanes)), run));
        Batcher { queue }
    }

    /// Queues `input` and waits for its answer; `None` if the dispatcher is gone.
    pub async fn submit(&self, input: I) -> Option<O> {
        let (reply, answer) = oneshot::channel();
        self.queue.send((input, reply)).ok()?;
        answer.await.ok()
    }
}

async fn dispatch<I, O, F, Fut>(
    mut queue: mpsc::UnboundedReceiver<Job<I, O>>,
    lanes: Arc<Semaphore>,
    run: F,
) where
    I: Send + 'static,
    O: Send + 'static,
    F: Fn(Vec<I>) -> Fut,
    Fut: Future<Output = Vec<O>> + Send + 'static,
{
    while let Some(first) = queue.recv().await {
        let lane = lanes
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // A client that gave up (disconnected, or its budget ran out) is not served:
        // no row is read or written on behalf of nobody.
        jobs.retain(|(_, reply)| !reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let (inputs, replies): (Vec<I>, Vec<_>) = jobs.into_iter().unzip();
        let answers = run(inputs);
        tokio::spawn(async move {
            let answers = answers.await;
            debug_assert_eq!(answers.len(), replies.len(), "one answer per input");
            for (reply, answer) in replies.into_iter().zip(answers) {
                // The client may have left meanwhile; then nobody needs the answer.
                let _ = reply.send(answer);
            }
            drop(lane);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex;
    use std::time::Duration;

    #[tokio::test]
    async fn answers_each_input_in_order_and_batches_while_lanes_are_busy() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = Arc::new(Batcher::new(1, move |inputs: Vec<u32>| {
            seen.lock().unwrap().push(inputs.len());
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                inputs.into_iter().map(|n| n * 10).collect::<Vec<_>>()
            }
        }));
        let waiters: Vec<_> = (0..50)
            .map(|n| {
                let batcher = batcher.clone();
                tokio::spawn(async move { (n, batcher.submit(n).await) })
            })
            .collect();
        for waiter in waiters {
            let (n, answer) = waiter.await.unwrap();
            assert_eq!(answer, Some(n * 10));
        }
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 50);
        // One lane, busy for 20 ms: everything that queued meanwhile went together.
        assert!(sizes.len() < 50, "never batched: {sizes:?}");
    }

    #[tokio::test]
    async fn a_request_given_up_before_its_batch_starts_is_not_run() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let batcher = Arc::new(Batcher::new(1, move |inputs: Vec<u32>| {
            log.lock().unwrap().extend(inputs.iter().copied());
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                inputs
            }
        }));
        let busy = batcher.clone();
        let first = tokio::spawn(async move { busy.submit(1).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        // The only lane is busy with [1]; this one gives up while it waits.
        let given_up = tokio::time::timeout(Duration::from_millis(10), batcher.submit(2)).await;
        assert!(given_up.is_err());
        assert_eq!(batcher.submit(3).await, Some(3));
        assert_eq!(first.await.unwrap(), Some(1));
        assert_eq!(*seen.lock().unwrap(), [1, 3]);
    }

    #[tokio::test]
    async fn a_lone_request_does_not_wait_for_company() {
        let batcher = Batcher::new(4, |inputs: Vec<u32>| async move { inputs });
        let answer = tokio::time::timeout(Duration::from_millis(500), batcher.submit(7)).await;
        assert_eq!(answer.unwrap(), Some(7));
    }
}
