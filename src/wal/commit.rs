//! Group commit: the "durable up to LSN" watermark and the waiters for it.
//!
//! This is where the durability rule lives: no reply that depends on a change leaves before the
//! log record for that change is durable. The log's single writer appends records, fsyncs them,
//! and calls [`Watermark::publish`] with the last LSN the fsync covered; one fsync releases every
//! connection waiting on an LSN up to it. A connection task awaits [`Watermark::reached`] before
//! it replies; a synchronous caller blocks in [`Watermark::wait`]. If a write or fsync fails the
//! writer calls [`Watermark::fail`] and the log is poisoned.
//!
//! Invariants (each checked by the tests below, the races by loom):
//!
//! - A waiter is released with `Ok` only once a publish covers its LSN; every waiter whose LSN a
//!   publish covers is released.
//! - The watermark never goes backwards: publishing an LSN at or below it changes nothing.
//! - After a failure the watermark is frozen, every waiter above it gets [`Poisoned`] at once,
//!   and so does every later wait above it. A wait at or below the frozen watermark still
//!   succeeds: those records were made durable before the failure and stay so.
//! - A wait for an LSN that is already durable returns at once without registering.
//! - Waking costs O(released · log n), not O(waiting): task waiters are kept in a map ordered by
//!   LSN and a publish takes only the front of it. Blocked threads share one condvar, which is
//!   meant for the few synchronous callers (tests, shutdown), not for connections.
//!
//! The state is a plain [`crate::sync::Mutex`] and [`crate::sync::Condvar`], with no async
//! runtime inside, so that loom can check every interleaving of publishers, waiters and
//! failures. The loom models (`loom_tests` below) run in release mode with a target directory
//! of their own, since `--cfg loom` rebuilds every dependency:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=/work/target-loom \
//!     cargo test --release --lib wal::commit
//! ```
//!
//! Each model explores every interleaving with up to 3 preemptions (`LOOM_MAX_PREEMPTIONS`
//! overrides it); together they take seconds once built. The loom build leaves out the tokio
//! I/O layers (see the crate docs), and the tokio tests here are compiled out of it.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::mem;
use std::pin::Pin;
use std::sync::PoisonError;
use std::task::{Context, Poll, Waker};

use crate::sync::{Condvar, Mutex, MutexGuard};

/// The log could not make a record durable: a write or fsync failed and the log is poisoned.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the write-ahead log failed; records after LSN {durable} are not durable")]
pub struct Poisoned {
    /// The watermark when the log failed; it never moves again.
    durable: u64,
    /// The I/O error that poisoned the log, shared by every waiter it fails.
    #[source]
    cause: std::sync::Arc<io::Error>,
}

impl Poisoned {
    /// The last LSN that was durable when the log failed.
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// The I/O error that poisoned the log.
    pub fn cause(&self) -> &io::Error {
        &self.cause
    }
}

/// The highest durable LSN, shared by the log writer and everyone waiting on it.
pub struct Watermark {
    /// Everything a publish or failure changes, under one lock.
    state: Mutex<State>,
    /// Signalled on every publish and on failure, for threads blocked in [`Watermark::wait`].
    advanced: Condvar,
}

/// The watermark's state; only ever touched with the lock held.
struct State {
    /// Every record with an LSN up to this one is durable.
    durable: u64,
    /// Set once, by the first failure; after that the watermark never moves.
    failure: Option<Poisoned>,
    /// Tasks waiting for an LSN above `durable`, keyed by (LSN, ticket) so that a publish
    /// releases a prefix and a dropped future can remove exactly its own entry.
    tasks: BTreeMap<(u64, u64), Waker>,
    /// The ticket the next registering future gets.
    next_ticket: u64,
    /// Threads blocked in [`Watermark::wait`]. A publish signals the condvar only when
    /// there are some: the server's waiters are all tasks, and signalling a condvar nobody
    /// waits on still costs the writer a futex call per fsync.
    blocked: usize,
}

impl State {
    /// The result for a wait on `lsn`, or `None` if it must keep waiting.
    fn outcome(&self, lsn: u64) -> Option<Result<(), Poisoned>> {
        if lsn <= self.durable {
            Some(Ok(()))
        } else {
            self.failure.clone().map(Err)
        }
    }
}

impl Watermark {
    /// A watermark at `durable`: the last LSN already on stable storage (0 for an empty log,
    /// or the last LSN replayed at startup).
    pub fn new(durable: u64) -> Self {
        Watermark {
            state: Mutex::new(State {
                durable,
                failure: None,
                tasks: BTreeMap::new(),
                next_ticket: 0,
                blocked: 0,
            }),
            advanced: Condvar::new(),
        }
    }

    /// The highest LSN known to be durable.
    pub fn durable(&self) -> u64 {
        self.lock().durable
    }

    /// Whether the log has failed.
    pub fn is_poisoned(&self) -> bool {
        self.lock().failure.is_some()
    }

    /// Records that everything up to `lsn` is durable and releases the waiters it covers.
    ///
    /// Called by the log writer after each successful fsync. An `lsn` at or below the current
    /// watermark, or any publish after [`Watermark::fail`], is ignored.
    pub fn publish(&self, lsn: u64) {
        let mut state = self.lock();
        if lsn <= state.durable || state.failure.is_some() {
            return;
        }
        state.durable = lsn;
        let mut released = Vec::new();
        while let Some(entry) = state.tasks.first_entry() {
            if entry.key().0 > lsn {
                break;
            }
            released.push(entry.remove());
        }
        let blocked = state.blocked > 0;
        drop(state);
        if blocked {
            self.advanced.notify_all();
        }
        released.into_iter().for_each(Waker::wake);
    }

    /// Poisons the log: every waiter above the watermark, now and later, gets [`Poisoned`].
    ///
    /// Called by the log writer when a write or fsync fails. Only the first failure is kept.
    pub fn fail(&self, cause: io::Error) {
        let mut state = self.lock();
        if state.failure.is_some() {
            return;
        }
        state.failure = Some(Poisoned {
            durable: state.durable,
            cause: std::sync::Arc::new(cause),
        });
        let released = mem::take(&mut state.tasks);
        let blocked = state.blocked > 0;
        drop(state);
        if blocked {
            self.advanced.notify_all();
        }
        released.into_values().for_each(Waker::wake);
    }

    /// Blocks the calling thread until `lsn` is durable or the log fails.
    ///
    /// For synchronous callers only: an async task must await [`Watermark::reached`] instead,
    /// so that it never blocks a runtime thread.
    pub fn wait(&self, lsn: u64) -> Result<(), Poisoned> {
        let mut state = self.lock();
        loop {
            if let Some(outcome) = state.outcome(lsn) {
                return outcome;
            }
            // Counted under the lock before the condvar releases it, so a publish that
            // takes the lock next sees this thread and signals.
            state.blocked += 1;
            state = self
                .advanced
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.blocked -= 1;
        }
    }

    /// A future that resolves once `lsn` is durable, or with [`Poisoned`] if the log fails
    /// first. Dropping it before it resolves withdraws its registration.
    pub fn reached(&self, lsn: u64) -> Durable<'_> {
        Durable {
            watermark: self,
            lsn,
            ticket: None,
        }
    }

    /// Resolves a wait on `lsn`, or registers (or refreshes) `waker` under `ticket`.
    fn poll_reached(
        &self,
        lsn: u64,
        ticket: &mut Option<u64>,
        waker: &Waker,
    ) -> Poll<Result<(), Poisoned>> {
        let mut state = self.lock();
        if let Some(outcome) = state.outcome(lsn) {
            if let Some(ticket) = ticket.take() {
                state.tasks.remove(&(lsn, ticket));
            }
            return Poll::Ready(outcome);
        }
        let ticket = *ticket.get_or_insert_with(|| {
            let next = state.next_ticket;
            state.next_ticket += 1;
            next
        });
        match state.tasks.entry((lsn, ticket)) {
            Entry::Occupied(mut registered) => {
                if !registered.get().will_wake(waker) {
                    registered.insert(waker.clone());
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(waker.clone());
            }
        }
        Poll::Pending
    }

    /// Removes a registration whose future was dropped before it resolved.
    fn withdraw(&self, lsn: u64, ticket: u64) {
        self.lock().tasks.remove(&(lsn, ticket));
    }

    /// The number of registered task waiters.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().tasks.len()
    }

    /// The number of threads blocked in [`Watermark::wait`].
    #[cfg(all(test, not(loom)))]
    fn blocked(&self) -> usize {
        self.lock().blocked
    }

    /// Takes the lock. No code holding it can panic, so a poisoned mutex holds a consistent
    /// state and is used as it is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Watermark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Watermark")
            .field("durable", &state.durable)
            .field("failure", &state.failure)
            .field("waiting", &state.tasks.len())
            .finish()
    }
}

/// Waits for one LSN to become durable; made by [`Watermark::reached`].
///
/// The first poll that cannot resolve registers the task's waker in the watermark under a
/// ticket of its own; later polls refresh it, and dropping the future removes it.
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct Durable<'a> {
    /// The watermark waited on.
    watermark: &'a Watermark,
    /// The LSN that must become durable.
    lsn: u64,
    /// This future's registration, once it has one and until it resolves.
    ticket: Option<u64>,
}

impl Future for Durable<'_> {
    type Output = Result<(), Poisoned>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        this.watermark
            .poll_reached(this.lsn, &mut this.ticket, cx.waker())
    }
}

impl Drop for Durable<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket {
            self.watermark.withdraw(self.lsn, ticket);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;
    use std::thread;

    use super::*;

    /// A waker that counts how often it is woken.
    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter::default());
        (counter.clone(), Waker::from(counter))
    }

    fn woken(counter: &Counter) -> usize {
        counter.0.load(Ordering::SeqCst)
    }

    fn poll(future: &mut Durable<'_>, waker: &Waker) -> Poll<Result<(), Poisoned>> {
        Pin::new(future).poll(&mut Context::from_waker(waker))
    }

    fn fsync_error() -> io::Error {
        io::Error::other("fsync failed")
    }

    #[test]
    fn wait_for_durable_lsn_returns_at_once_without_registering() {
        let watermark = Watermark::new(5);
        assert!(watermark.wait(0).is_ok());
        assert!(watermark.wait(5).is_ok());
        let (count, waker) = counter();
        assert!(matches!(
            poll(&mut watermark.reached(5), &waker),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(watermark.waiting(), 0);
        assert_eq!(woken(&count), 0);
    }

    #[test]
    fn publish_below_the_watermark_is_ignored() {
        let watermark = Watermark::new(0);
        watermark.publish(10);
        watermark.publish(4);
        watermark.publish(10);
        assert_eq!(watermark.durable(), 10);
    }

    #[test]
    fn publish_wakes_only_the_waiters_it_covers() {
        let watermark = Watermark::new(0);
        let (counts, wakers): (Vec<_>, Vec<_>) = (0..3).map(|_| counter()).unzip();
        let mut futures: Vec<_> = [2, 5, 9].map(|lsn| watermark.reached(lsn)).into();
        for (future, waker) in futures.iter_mut().zip(&wakers) {
            assert!(poll(future, waker).is_pending());
        }
        assert_eq!(watermark.waiting(), 3);

        watermark.publish(5);
        assert_eq!(
            counts.iter().map(|c| woken(c)).collect::<Vec<_>>(),
            [1, 1, 0]
        );
        assert_eq!(watermark.waiting(), 1);
        assert!(matches!(
            poll(&mut futures[0], &wakers[0]),
            Poll::Ready(Ok(()))
        ));
        assert!(matches!(
            poll(&mut futures[1], &wakers[1]),
            Poll::Ready(Ok(()))
        ));
        assert!(poll(&mut futures[2], &wakers[2]).is_pending());

        watermark.publish(9);
        assert_eq!(woken(&counts[2]), 1);
        assert!(matches!(
            poll(&mut futures[2], &wakers[2]),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(watermark.waiting(), 0);
    }

    #[test]
    fn a_repoll_with_another_waker_replaces_the_first() {
        let watermark = Watermark::new(0);
        let (first, first_waker) = counter();
        let (second, second_waker) = counter();
        let mut future = watermark.reached(1);
        assert!(poll(&mut future, &first_waker).is_pending());
        assert!(poll(&mut future, &second_waker).is_pending());
        assert_eq!(watermark.waiting(), 1);
        watermark.publish(1);
        assert_eq!((woken(&first), woken(&second)), (0, 1));
    }

    #[test]
    fn dropping_a_pending_wait_withdraws_it() {
        let watermark = Watermark::new(0);
        let (count, waker) = counter();
        let mut future = watermark.reached(3);
        assert!(poll(&mut future, &waker).is_pending());
        drop(future);
        assert_eq!(watermark.waiting(), 0);
        watermark.publish(3);
        assert_eq!(woken(&count), 0);
    }

    #[test]
    fn fail_releases_every_waiter_with_an_error_and_freezes_the_watermark() {
        let watermark = Watermark::new(0);
        watermark.publish(2);
        let (count, waker) = counter();
        let mut futures: Vec<_> = [3, 4, 100].map(|lsn| watermark.reached(lsn)).into();
        for future in &mut futures {
            assert!(poll(future, &waker).is_pending());
        }

        watermark.fail(fsync_error());
        assert_eq!(woken(&count), 3);
        assert_eq!(watermark.waiting(), 0);
        for future in &mut futures {
            let Poll::Ready(Err(error)) = poll(future, &waker) else {
                panic!("a waiter above the watermark was not failed");
            };
            assert_eq!(error.durable(), 2);
            assert_eq!(error.cause().to_string(), "fsync failed");
        }

        watermark.publish(50);
        watermark.fail(io::Error::other("second failure"));
        assert_eq!(watermark.durable(), 2);
        assert!(watermark.is_poisoned());
        let error = watermark.wait(3).unwrap_err();
        assert_eq!(error.cause().to_string(), "fsync failed");
        assert!(matches!(
            poll(&mut watermark.reached(50), &waker),
            Poll::Ready(Err(_))
        ));
        assert!(
            watermark.wait(2).is_ok(),
            "a record durable before the failure stays durable"
        );
    }

    #[test]
    fn blocked_threads_are_released_by_publish_and_by_fail() {
        let watermark = Arc::new(Watermark::new(0));
        let spawn = |lsn| {
            let watermark = watermark.clone();
            thread::spawn(move || watermark.wait(lsn).map(|()| watermark.durable()))
        };
        let covered = spawn(4);
        let beyond = spawn(9);
        // Both threads are blocked (publishes below must signal them, not find them early).
        while watermark.blocked() < 2 {
            thread::yield_now();
        }
        watermark.publish(3);
        watermark.publish(4);
        assert!(covered.join().unwrap().unwrap() >= 4);
        watermark.fail(fsync_error());
        assert_eq!(beyond.join().unwrap().unwrap_err().durable(), 4);
        assert_eq!(
            watermark.blocked(),
            0,
            "released threads are no longer counted"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_tasks_are_released_by_batched_publishes() {
        const RECORDS: u64 = 500;
        let watermark = Arc::new(Watermark::new(0));
        let waiters: Vec<_> = (1..=RECORDS)
            .map(|lsn| {
                let watermark = watermark.clone();
                tokio::spawn(async move {
                    watermark.reached(lsn).await.unwrap();
                    assert!(
                        watermark.durable() >= lsn,
                        "released before {lsn} was durable"
                    );
                })
            })
            .collect();
        let publisher = {
            let watermark = watermark.clone();
            tokio::spawn(async move {
                while watermark.waiting() < RECORDS as usize {
                    tokio::task::yield_now().await;
                }
                for lsn in (0..=RECORDS).step_by(7).chain([RECORDS]) {
                    watermark.publish(lsn);
                    tokio::task::yield_now().await;
                }
            })
        };
        publisher.await.unwrap();
        for waiter in waiters {
            waiter.await.unwrap();
        }
        assert_eq!(watermark.waiting(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fail_wakes_every_task_with_an_error() {
        let watermark = Arc::new(Watermark::new(10));
        let waiters: Vec<_> = (11..=200)
            .map(|lsn| {
                let watermark = watermark.clone();
                tokio::spawn(async move { watermark.reached(lsn).await })
            })
            .collect();
        while watermark.waiting() < waiters.len() {
            tokio::task::yield_now().await;
        }
        watermark.fail(fsync_error());
        for waiter in waiters {
            assert_eq!(waiter.await.unwrap().unwrap_err().durable(), 10);
        }
        assert!(watermark.reached(11).await.is_err());
        assert!(watermark.reached(10).await.is_ok());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use std::task::Wake;

    use loom::future::block_on;
    use loom::thread;

    use super::*;
    use crate::sync::Arc;

    /// Runs `test` in every interleaving with at most 3 preemptions, unless
    /// `LOOM_MAX_PREEMPTIONS` says otherwise.
    fn model(test: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound.get_or_insert(3);
        builder.check(test);
    }

    /// A waker that does nothing, for a future polled once and then dropped.
    struct Inert;

    impl Wake for Inert {
        fn wake(self: std::sync::Arc<Self>) {}
    }

    /// How a waiter thread waits.
    #[derive(Clone, Copy)]
    enum How {
        Blocking,
        Async,
    }

    fn spawn_waiter(
        watermark: &Arc<Watermark>,
        lsn: u64,
        how: How,
    ) -> thread::JoinHandle<Result<(), Poisoned>> {
        let watermark = watermark.clone();
        thread::spawn(move || {
            let outcome = match how {
                How::Blocking => watermark.wait(lsn),
                How::Async => block_on(watermark.reached(lsn)),
            };
            if outcome.is_ok() {
                assert!(
                    watermark.durable() >= lsn,
                    "released before {lsn} was durable"
                );
            }
            outcome
        })
    }

    fn two_waiters_are_released_by_the_publishes_covering_them(how: How) {
        model(move || {
            let watermark = Arc::new(Watermark::new(0));
            let first = spawn_waiter(&watermark, 1, how);
            let second = spawn_waiter(&watermark, 2, how);
            let publisher = {
                let watermark = watermark.clone();
                thread::spawn(move || {
                    watermark.publish(1);
                    watermark.publish(2);
                })
            };
            publisher.join().unwrap();
            first.join().unwrap().unwrap();
            second.join().unwrap().unwrap();
            assert_eq!(watermark.waiting(), 0);
        });
    }

    #[test]
    fn two_blocked_threads_are_released_by_the_publishes_covering_them() {
        two_waiters_are_released_by_the_publishes_covering_them(How::Blocking);
    }

    #[test]
    fn two_tasks_are_released_by_the_publishes_covering_them() {
        two_waiters_are_released_by_the_publishes_covering_them(How::Async);
    }

    fn failure_racing_a_publish_decides_the_waiter(how: How) {
        model(move || {
            let watermark = Arc::new(Watermark::new(0));
            let waiter = spawn_waiter(&watermark, 1, how);
            let failer = {
                let watermark = watermark.clone();
                thread::spawn(move || watermark.fail(io::Error::other("fsync failed")))
            };
            watermark.publish(1);
            failer.join().unwrap();
            match waiter.join().unwrap() {
                Ok(()) => assert_eq!(watermark.durable(), 1),
                Err(error) => {
                    assert_eq!(error.durable(), 0);
                    assert_eq!(watermark.durable(), 0);
                }
            }
            assert!(watermark.wait(2).is_err());
            assert_eq!(watermark.waiting(), 0);
        });
    }

    #[test]
    fn failure_racing_a_publish_decides_a_blocked_thread() {
        failure_racing_a_publish_decides_the_waiter(How::Blocking);
    }

    #[test]
    fn failure_racing_a_publish_decides_a_task() {
        failure_racing_a_publish_decides_the_waiter(How::Async);
    }

    fn registering_and_publishing_the_same_lsn_loses_no_wakeup(how: How) {
        model(move || {
            let watermark = Arc::new(Watermark::new(0));
            let waiter = spawn_waiter(&watermark, 1, how);
            watermark.publish(1);
            waiter.join().unwrap().unwrap();
            assert_eq!(watermark.waiting(), 0);
        });
    }

    #[test]
    fn a_blocked_thread_and_a_publish_of_its_lsn_lose_no_wakeup() {
        registering_and_publishing_the_same_lsn_loses_no_wakeup(How::Blocking);
    }

    #[test]
    fn a_task_and_a_publish_of_its_lsn_lose_no_wakeup() {
        registering_and_publishing_the_same_lsn_loses_no_wakeup(How::Async);
    }

    #[test]
    fn a_wait_dropped_while_a_publish_runs_leaves_nothing_registered() {
        model(|| {
            let watermark = Arc::new(Watermark::new(0));
            let canceller = {
                let watermark = watermark.clone();
                thread::spawn(move || {
                    let waker = Waker::from(std::sync::Arc::new(Inert));
                    let mut future = watermark.reached(1);
                    let _ = Pin::new(&mut future).poll(&mut Context::from_waker(&waker));
                })
            };
            watermark.publish(1);
            canceller.join().unwrap();
            assert_eq!(watermark.waiting(), 0);
        });
    }
}
