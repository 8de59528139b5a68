//! Natural batching: concurrent requests for the same query share one statement, as a one-row
//! statement's cost is its round trip and commit (docs/decisions.md); what a batch runs is
//! tasks.rs's choice. Past capacity, newcomers get 503 by how long the queue waits ([`Pace`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::error::{StoreError, message};
use super::pool::{Deadline, OutOfTime};
use crate::observe::traces::{self as trace, Scope};

/// Most requests one statement serves.
pub const MAX_BATCH: usize = 128;

/// Requests queued for one query past which the next is turned away (503) whatever the
/// queue's pace: the last resort, as the connection limit bounds the queue first.
const MAX_QUEUED: usize = 64 * MAX_BATCH;

/// Batches of one query in flight at once, each on its own pooled connection: two beat one,
/// four and eight in paired runs (docs/decisions.md), as fewer lanes make bigger batches.
pub const LANES: usize = 2;

type Answer<T> = Result<T, StoreError>;
/// A request's input, deadline, reply, trace scope (batches run in tasks of their own), queue time.
type Job<I, T> = (I, Deadline, oneshot::Sender<Answer<T>>, Option<Scope>, Instant);

/// A queue in front of one batched query: `run` gets a batch's inputs and their earliest
/// deadline, and gives one answer per input, in order.
pub struct Batcher<I, T> {
    queue: mpsc::UnboundedSender<Job<I, T>>,
    pace: Arc<Pace>,
}

impl<I: Send + 'static, T: Send + 'static> Batcher<I, T> {
    /// A batcher of up to [`MAX_BATCH`] whose batches run on when abandoned, as writes must.
    pub fn new<F, Fut>(lanes: usize, run: F) -> Self
    where
        F: Fn(Vec<I>, Deadline) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Answer<T>>> + Send + 'static,
    {
        Self::start(lanes, MAX_BATCH, Abandoned::RunOn, run)
    }

    /// Starts the dispatcher: `lanes` batches of up to `most` in flight, until the `Batcher` is
    /// dropped and its queue empty. A lane is taken *before* jobs, so while every lane is busy
    /// requests pile up for the next free one: batches grow exactly as the database is slow.
    pub fn start<F, Fut>(lanes: usize, most: usize, abandoned: Abandoned, run: F) -> Self
    where
        F: Fn(Vec<I>, Deadline) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Answer<T>>> + Send + 'static,
    {
        let (queue, mut queued) = mpsc::unbounded_channel::<Job<I, T>>();
        let pace = Arc::new(Pace::new(lanes * MAX_BATCH, MAX_QUEUED));
        let (lanes, mut jobs, taking) = (Arc::new(Semaphore::new(lanes)), Vec::new(), pace.clone());
        tokio::spawn(async move {
            loop {
                let lane =
                    lanes.clone().acquire_owned().await.expect("the semaphore is never closed");
                let taken = queued.recv_many(&mut jobs, most).await;
                if taken == 0 {
                    return; // the Batcher is gone and the queue is empty
                }
                taking.took(taken, jobs[0].4, Instant::now());
                // A client that left is not served: no row is read or written for nobody.
                // One whose time is up fails now, before anything is sent for it.
                let (mut inputs, mut replies, mut deadline) = (Vec::new(), Vec::new(), None);
                let mut traced = Vec::new();
                for (input, due, reply, scope, _) in jobs.drain(..) {
                    if reply.is_closed() || !due.has_time() {
                        let _ = reply.send(Err(OutOfTime.into()));
                        continue;
                    }
                    deadline = Some(deadline.map_or(due, |earliest: Deadline| earliest.min(due)));
                    inputs.push(input);
                    replies.push(reply);
                    traced.extend(scope);
                }
                let Some(deadline) = deadline else { continue };
                // The statement's span: a child of the first traced request, linked to each.
                let scope = Scope::batch(traced, inputs.len());
                let answers = run(inputs, deadline);
                tokio::spawn(async move {
                    let answers = trace::within(scope, answers);
                    let answers = match abandoned {
                        Abandoned::RunOn => answers.await,
                        Abandoned::Drop => tokio::select! {
                            answers = answers => answers,
                            () = async {
                                for reply in &mut replies {
                                    reply.closed().await;
                                }
                            } => return,
                        },
                    };
                    // A reply left without an answer drops: its request fails, as internal.
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(answer);
                    }
                    drop(lane);
                });
            }
        });
        Batcher { queue, pace }
    }

    /// Queues `input` and waits for its answer, due by `deadline`; busy at once if the queue is
    /// past capacity ([`Pace::admit`]).
    pub async fn submit(&self, input: I, deadline: Deadline) -> Answer<T> {
        let now = Instant::now();
        if !self.pace.admit(now) {
            return Err(StoreError::Busy);
        }
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Internal(message("batch dispatcher stopped"));
        self.queue.send((input, deadline, reply, trace::current(), now)).map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

/// What a running batch does once all its clients left: runs on, as a write's outcome must be
/// known (its budget bounds it); or is dropped, its statement cancelled, as a read for nobody.
#[derive(Clone, Copy, PartialEq)]
pub enum Abandoned {
    RunOn,
    Drop,
}

/// How long a request may wait in a queue of more than a full batch per lane before newcomers are
/// turned away. Not less: 4,096 clients in a closed loop wait ~90 ms here, and shedding at 50 ms
/// served a fifth as many (9.7k/s against 44k/s in `make bench`'s overload run, docs/decisions.md).
const SHED_AFTER: Duration = Duration::from_millis(250);

/// How the queue moves: how many wait, how long the last batch's oldest waited, and since when
/// it has not (µs since `epoch`). Past `busy` queued, admission looks at the pace; past `full`, no.
struct Pace {
    busy: usize,
    full: usize,
    queued: AtomicUsize,
    waited: AtomicU64,
    still_since: AtomicU64,
    epoch: Instant,
}

impl Pace {
    fn new(busy: usize, full: usize) -> Self {
        let (queued, epoch) = (AtomicUsize::new(0), Instant::now());
        let (waited, still_since) = (AtomicU64::new(0), AtomicU64::new(0));
        Pace { busy, full, queued, waited, still_since, epoch }
    }

    fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// Counts a newcomer in, or turns it away: the queue is full, or past `busy` (a [`MAX_BATCH`]
    /// per lane, also for the lists' smaller batches: a few dozen clients are never capacity)
    /// and either its last batch waited past [`SHED_AFTER`] or it has not moved for that long.
    fn admit(&self, now: Instant) -> bool {
        let before = self.queued.fetch_add(1, Ordering::Relaxed);
        if before == 0 {
            self.still_since.store(self.micros(now), Ordering::Relaxed);
        }
        let shed = before >= self.full
            || (before > self.busy && {
                let limit = SHED_AFTER.as_micros() as u64;
                let since = self.still_since.load(Ordering::Relaxed);
                let still = self.micros(now).saturating_sub(since);
                self.waited.load(Ordering::Relaxed) > limit || still > limit
            });
        if shed {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        !shed
    }

    /// A lane took `taken` jobs `now`, the oldest queued at `oldest`.
    fn took(&self, taken: usize, oldest: Instant, now: Instant) {
        self.queued.fetch_sub(taken, Ordering::Relaxed);
        let waited = now.saturating_duration_since(oldest).as_micros() as u64;
        self.waited.store(waited, Ordering::Relaxed);
        self.still_since.store(self.micros(now), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex;

    type Seen = Arc<Mutex<Vec<(Vec<u32>, Deadline)>>>;

    /// A one-lane batcher of 50 ms batches, each seen with its deadline, busy with [1] (handle).
    async fn busy() -> (Arc<Batcher<u32, u32>>, Seen, tokio::task::JoinHandle<Answer<u32>>) {
        let seen = Seen::default();
        let log = seen.clone();
        let batcher = Arc::new(Batcher::new(1, move |inputs: Vec<u32>, deadline| {
            log.lock().unwrap().push((inputs.clone(), deadline));
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                inputs.into_iter().map(Ok).collect()
            }
        }));
        let busy = batcher.clone();
        let first = tokio::spawn(async move { busy.submit(1, Deadline::start()).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        (batcher, seen, first)
    }

    #[tokio::test]
    async fn answers_each_input_in_order_and_batches_while_lanes_are_busy() {
        let (batcher, seen, first) = busy().await;
        let mut waiters = tokio::task::JoinSet::new();
        for n in 2..50 {
            let batcher = batcher.clone();
            waiters.spawn(async move { (n, batcher.submit(n, Deadline::start()).await) });
        }
        for (n, answer) in waiters.join_all().await {
            assert_eq!(answer.ok(), Some(n));
        }
        assert_eq!(first.await.unwrap().ok(), Some(1));
        // One lane, busy: everything that queued meanwhile went together.
        let sizes: Vec<usize> =
            seen.lock().unwrap().iter().map(|(inputs, _)| inputs.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 49);
        assert!(sizes.len() < 49, "never batched: {sizes:?}");
    }

    #[tokio::test]
    async fn a_request_given_up_before_its_batch_starts_is_not_run() {
        let (batcher, seen, first) = busy().await;
        // The only lane is busy with [1]; this one gives up while it waits.
        let given_up = batcher.submit(2, Deadline::start());
        let given_up = tokio::time::timeout(Duration::from_millis(10), given_up).await;
        assert!(given_up.is_err());
        assert_eq!(batcher.submit(3, Deadline::start()).await.ok(), Some(3));
        assert_eq!(first.await.unwrap().ok(), Some(1));
        let inputs: Vec<u32> = seen.lock().unwrap().iter().flat_map(|s| s.0.clone()).collect();
        assert_eq!(inputs, [1, 3]);
    }

    #[tokio::test]
    async fn a_batch_gets_its_earliest_deadline_and_the_expired_are_not_run() {
        let (batcher, seen, first) = busy().await;
        // Behind [1]: one out of time when the lane frees, two whose sooner is the deadline.
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
    async fn a_read_batch_nobody_waits_for_is_dropped_and_a_write_batch_runs_on() {
        // Each batch's name once it ran to its end; a dropped one never gets there.
        let ended = Arc::new(Mutex::new(Vec::new()));
        let slow = |name: &'static str| {
            let ended = ended.clone();
            move |inputs: Vec<u32>, _| {
                let ended = ended.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    ended.lock().unwrap().push(name);
                    inputs.into_iter().map(Ok).collect()
                }
            }
        };
        let read = Batcher::start(1, 8, Abandoned::Drop, slow("read"));
        let write = Batcher::new(1, slow("write"));
        let quick = Duration::from_millis(50);
        let gave_up = tokio::join!(
            tokio::time::timeout(quick, read.submit(1, Deadline::start())),
            tokio::time::timeout(quick, write.submit(1, Deadline::start())),
        );
        assert!(gave_up.0.is_err() && gave_up.1.is_err());
        tokio::time::sleep(Duration::from_millis(600)).await;
        // The read was dropped when its client left; the write ran on to its end.
        assert_eq!(*ended.lock().unwrap(), vec!["write"]);
    }

    #[test]
    fn admission_sheds_by_how_long_the_queue_waits_and_how_long_it_is() {
        // As for the writes: 2 lanes of 128, and 64 batches queued at most.
        let (batch, busy, full) = (128, 2 * 128, 64 * 128);
        let pace = Pace::new(busy, full);
        let now = pace.epoch + Duration::from_secs(1);
        // Fast-moving: a long queue is fine, up to `full`.
        pace.took(0, now, now);
        assert!((0..full).all(|_| pace.admit(now)));
        assert!(!pace.admit(now), "past full");
        // Its last batch waited too long: past a batch per lane, newcomers are shed ...
        pace.took(full - busy - 1, now - SHED_AFTER * 2, now);
        assert!(!pace.admit(now));
        // ... but a short queue is never shed.
        pace.took(batch, now, now);
        pace.waited.store(u64::MAX, Ordering::Relaxed);
        assert!(pace.admit(now));
        // Not moved for longer than SHED_AFTER, with a long queue: shed.
        let pace = Pace::new(busy, full);
        let start = pace.epoch + Duration::from_secs(1);
        assert!((0..=busy).all(|_| pace.admit(start)));
        assert!(pace.admit(start + SHED_AFTER / 2));
        assert!(!pace.admit(start + SHED_AFTER * 2));
    }
}
