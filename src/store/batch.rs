//! Natural batching: concurrent requests for the same kind of query share one
//! statement. The point is the database's cost per request: PostgreSQL spends most of
//! a one-row lookup or insert on the round trip and the commit, not on the row, so one
//! statement for many requests costs far less than a statement each (the README's
//! Performance section has the numbers). What each batch runs is store/mod.rs's choice.
//! A traced request's scope travels with its job, so the batch's statement span can
//! link to every request it serves.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::StoreError;
use super::budget::Deadline;
use super::outcome::OutOfTime;
use crate::trace::{self, Scope};

/// Most requests one statement serves.
pub const MAX_BATCH: usize = 128;

/// Requests queued for one query, not yet taken by a lane, past which the next is
/// turned away at once (503, `retry-after`): sixteen full batches per lane are more
/// than the database gets through in the time a request should wait. Past capacity,
/// load is shed fast; no request waits out its budget in a queue that cannot drain.
pub const MAX_QUEUED: usize = 16 * MAX_BATCH;

/// Batches of one query in flight at once, each on its own pooled connection. Two
/// beat one, four and eight in paired runs (README, Performance): fewer lanes
/// make bigger batches, so the database does less per request. A slower or more
/// distant database should need no more lanes: batches grow to fill the wait.
pub const LANES: usize = 2;

type Answer<T> = Result<T, StoreError>;
/// A request's input, its deadline, where its answer goes, and its trace scope (if it
/// is traced: the dispatcher runs batches in a task of its own, so the scope travels
/// with the job).
type Job<I, T> = (I, Deadline, oneshot::Sender<Answer<T>>, Option<Scope>);

/// A queue in front of one batched query: `run` gets the inputs of a batch, and the
/// earliest deadline among them, and answers them in the same order, one answer per
/// input.
pub struct Batcher<I, T> {
    queue: mpsc::UnboundedSender<Job<I, T>>,
    /// Jobs queued and not yet taken by a lane.
    queued: Arc<AtomicUsize>,
}

impl<I: Send + 'static, T: Send + 'static> Batcher<I, T> {
    /// Starts the dispatcher on the current tokio runtime, with `lanes` batches in
    /// flight at most. It stops when the `Batcher` is dropped and the queue is empty.
    pub fn new<F, Fut>(lanes: usize, run: F) -> Self
    where
        F: Fn(Vec<I>, Deadline) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Answer<T>>> + Send + 'static,
    {
        let (queue, jobs) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let lanes = Arc::new(Semaphore::new(lanes));
        tokio::spawn(dispatch(jobs, queued.clone(), lanes, run));
        Batcher { queue, queued }
    }

    /// Queues `input` and waits for its answer, due by `deadline`. A caller that stops
    /// waiting (its client left) before its batch starts is not run; one whose
    /// deadline has passed by then fails as unavailable, unrun. With [`MAX_QUEUED`]
    /// waiting already, it is turned away at once, as busy.
    pub async fn submit(&self, input: I, deadline: Deadline) -> Answer<T> {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= MAX_QUEUED {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(StoreError::Busy);
        }
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::internal("batch dispatcher stopped");
        self.queue
            .send((input, deadline, reply, trace::current()))
            .map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

/// The one trick: a free lane is taken *before* jobs are taken from the queue. A
/// request that finds a lane free runs at once, alone; nothing waits for a batch to
/// fill. While every lane is busy, requests pile up in the queue, and the lane that
/// comes free takes all of them (up to [`MAX_BATCH`]) as one batch. So batches grow
/// exactly as much as the database is slow.
async fn dispatch<I, T, F, Fut>(
    mut queue: mpsc::UnboundedReceiver<Job<I, T>>,
    queued: Arc<AtomicUsize>,
    lanes: Arc<Semaphore>,
    run: F,
) where
    I: Send + 'static,
    T: Send + 'static,
    F: Fn(Vec<I>, Deadline) -> Fut,
    Fut: Future<Output = Vec<Answer<T>>> + Send + 'static,
{
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    loop {
        let lane = lanes
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let taken = queue.recv_many(&mut jobs, MAX_BATCH).await;
        if taken == 0 {
            return; // the Batcher is gone and the queue is empty
        }
        queued.fetch_sub(taken, Ordering::Relaxed);
        // A client that left is not served: no row is read or written for nobody.
        // One whose time is up fails now, before anything is sent for it.
        let (mut inputs, mut replies, mut deadline) = (Vec::new(), Vec::new(), None);
        let mut traced = Vec::new();
        for (input, due, reply, scope) in jobs.drain(..) {
            if reply.is_closed() {
                continue;
            }
            if !due.has_time() {
                let _ = reply.send(Err(OutOfTime.into()));
                continue;
            }
            deadline = Some(deadline.map_or(due, |earliest: Deadline| earliest.min(due)));
            inputs.push(input);
            replies.push(reply);
            traced.extend(scope);
        }
        let Some(deadline) = deadline else {
            continue;
        };
        // The statement's span: a child of the first traced request, linked to each.
        let scope = Scope::batch(traced, inputs.len());
        let answers = run(inputs, deadline);
        tokio::spawn(async move {
            let answers = match scope {
                Some(scope) => trace::within(scope, answers).await,
                None => answers.await,
            };
            if answers.len() != replies.len() {
                log::error!(
                    "a batch of {} got {} answers; failing all of them",
                    replies.len(),
                    answers.len()
                );
                let wrong = StoreError::internal("a batch got the wrong number of answers");
                for reply in replies {
                    let _ = reply.send(Err(wrong.clone()));
                }
                return;
            }
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

    fn answered(inputs: Vec<u32>) -> Vec<Answer<u32>> {
        inputs.into_iter().map(Ok).collect()
    }

    #[tokio::test]
    async fn answers_each_input_in_order_and_batches_while_lanes_are_busy() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = Arc::new(Batcher::new(1, move |inputs: Vec<u32>, _| {
            seen.lock().unwrap().push(inputs.len());
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                answered(inputs.into_iter().map(|n| n * 10).collect())
            }
        }));
        let waiters: Vec<_> = (0..50)
            .map(|n| {
                let batcher = batcher.clone();
                tokio::spawn(async move { (n, batcher.submit(n, Deadline::start()).await) })
            })
            .collect();
        for waiter in waiters {
            let (n, answer) = waiter.await.unwrap();
            assert_eq!(answer.ok(), Some(n * 10));
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
        let batcher = Arc::new(Batcher::new(1, move |inputs: Vec<u32>, _| {
            log.lock().unwrap().extend(inputs.iter().copied());
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                answered(inputs)
            }
        }));
        let busy = batcher.clone();
        let first = tokio::spawn(async move { busy.submit(1, Deadline::start()).await.ok() });
        tokio::time::sleep(Duration::from_millis(10)).await;
        // The only lane is busy with [1]; this one gives up while it waits.
        let given_up = batcher.submit(2, Deadline::start());
        let given_up = tokio::time::timeout(Duration::from_millis(10), given_up).await;
        assert!(given_up.is_err());
        assert_eq!(batcher.submit(3, Deadline::start()).await.ok(), Some(3));
        assert_eq!(first.await.unwrap(), Some(1));
        assert_eq!(*seen.lock().unwrap(), [1, 3]);
    }

    #[tokio::test]
    async fn a_lone_request_does_not_wait_for_company() {
        let batcher = Batcher::new(4, |inputs: Vec<u32>, _| async move { answered(inputs) });
        let answer = batcher.submit(7, Deadline::start());
        let answer = tokio::time::timeout(Duration::from_millis(500), answer).await;
        assert_eq!(answer.unwrap().ok(), Some(7));
    }

    #[tokio::test]
    async fn a_wrong_number_of_answers_fails_every_request_of_the_batch() {
        let batcher = Arc::new(Batcher::new(1, |mut inputs: Vec<u32>, _| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            inputs.pop(); // one answer short
            answered(inputs)
        }));
        let answers: Vec<_> = (0..3)
            .map(|n| {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.submit(n, Deadline::start()).await })
            })
            .collect();
        for answer in answers {
            assert!(matches!(
                answer.await.unwrap(),
                Err(StoreError::Internal(_))
            ));
        }
    }

    #[tokio::test]
    async fn a_batch_gets_its_earliest_deadline_and_the_expired_are_not_run() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let batcher = Arc::new(Batcher::new(1, move |inputs: Vec<u32>, deadline| {
            log.lock().unwrap().push((inputs.clone(), deadline));
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                answered(inputs)
            }
        }));
        let busy = batcher.clone();
        let first = tokio::spawn(async move { busy.submit(1, Deadline::start()).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Queued behind [1]: one whose time is up by the time a lane is free, and two
        // with time, the sooner of which is the batch's deadline.
        let soon = Deadline::after(Duration::from_millis(2000));
        let (expired, late, early) = tokio::join!(
            batcher.submit(2, Deadline::after(Duration::from_millis(20))),
            batcher.submit(3, Deadline::after(Duration::from_millis(3000))),
            batcher.submit(4, soon),
        );
        assert!(matches!(expired, Err(StoreError::Unavailable(_))));
        assert_eq!((late.ok(), early.ok()), (Some(3), Some(4)));
        assert!(first.await.unwrap().is_ok());
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[1], (vec![3, 4], soon));
    }

    #[tokio::test]
    async fn past_max_queued_a_request_is_turned_away_at_once() {
        let batcher = Arc::new(Batcher::new(1, |inputs: Vec<u32>, _| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            answered(inputs)
        }));
        // One lane, busy: the rest queue, and past MAX_QUEUED they are turned away.
        let waiters: Vec<_> = (0..(MAX_QUEUED + 50) as u32)
            .map(|n| {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.submit(n, Deadline::start()).await })
            })
            .collect();
        let (mut served, mut busy) = (0, 0);
        for waiter in waiters {
            match waiter.await.unwrap() {
                Ok(_) => served += 1,
                Err(StoreError::Busy) => busy += 1,
                Err(other) => panic!("{other}"),
            }
        }
        assert!((49..=50).contains(&busy), "{busy} turned away");
        assert_eq!(served + busy, MAX_QUEUED + 50);
    }
}
