//! Group commit: the "durable up to LSN" watermark and the waiters for it.
//!
//! The watermark is what the durability rule waits on: no reply that depends on a change leaves
//! before the log record for that change is durable. The rule itself is kept by a type in the
//! server (`server::held::Held`, whose only way out awaits this watermark). The log's single
//! writer appends records, fsyncs them, and calls [`Watermark::publish`] with the last LSN the
//! fsync covered; one fsync releases every connection waiting on an LSN up to it. An async
//! caller awaits [`Watermark::reached`]; a synchronous caller blocks in [`Watermark::wait`]. If a write or fsync fails the
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
//! - While a [`Relay`] runs, a publish wakes only the relay, which then wakes the released
//!   tasks from inside their runtime; once it is dropped, a publish wakes the tasks itself
//!   again and whatever the relay had not woken yet is woken by its drop. No waiter is lost
//!   either way.
//!
//! Why a relay: the writer is a thread of its own, and a task woken from outside its runtime
//! costs the waking thread a wake-up of that runtime (an eventfd write for tokio's), one per
//! task. With a few dozen connections waiting on each fsync, that was most of the writer's
//! time between two fsyncs. Through the relay the writer makes one such wake-up per fsync,
//! and the runtime wakes the tasks itself, which only queues them.
//!
//! The state is a plain [`crate::sync::Mutex`] and [`crate::sync::Condvar`], with no async
//! runtime inside, so that loom can check every interleaving of publishers, waiters and
//! failures. The loom models (`loom_tests` below) run in release mode with a target directory
//! of their own, since `--cfg loom` rebuilds every dependency:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
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
    /// The running [`Relay`]'s waker, if one runs: a publish then hands the task wakers it
    /// releases to `relayed` and wakes only this one.
    relay: Option<Waker>,
    /// Task wakers released by publishes that the relay has not taken yet.
    relayed: Vec<Waker>,
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
                relay: None,
                relayed: Vec::new(),
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
        let mut guard = self.lock();
        let state = &mut *guard;
        if lsn <= state.durable || state.failure.is_some() {
            return;
        }
        state.durable = lsn;
        let mut released = Vec::new();
        let relay_idle = state.relayed.is_empty();
        let to = if state.relay.is_some() {
            &mut state.relayed
        } else {
            &mut released
        };
        while let Some(entry) = state.tasks.first_entry() {
            if entry.key().0 > lsn {
                break;
            }
            to.push(entry.remove());
        }
        // The relay is woken when the wakers it must pass on go from none to some; while
        // some wait, it has been woken already and will take them all.
        let relay = match &state.relay {
            Some(relay) if relay_idle && !state.relayed.is_empty() => Some(relay.clone()),
            _ => None,
        };
        let blocked = state.blocked > 0;
        drop(guard);
        if blocked {
            self.advanced.notify_all();
        }
        if let Some(relay) = relay {
            relay.wake();
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

    /// A future that never resolves and, while it is polled, wakes the tasks each publish
    /// releases, so that the publishing thread wakes only it (see the module docs). Run one
    /// per watermark, as a task on the runtime that runs the waiting tasks. Dropping it hands
    /// the waking back to the publishes.
    pub fn relay(&self) -> Relay<'_> {
        Relay {
            watermark: self,
            taken: Vec::new(),
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
            .field("relay_running", &state.relay.is_some())
            .field("relayed", &state.relayed.len())
            .finish()
    }
}

/// Passes on the wake-ups of a watermark's publishes; made by [`Watermark::relay`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct Relay<'a> {
    /// The watermark relayed.
    watermark: &'a Watermark,
    /// The wakers taken at the last poll; kept to reuse its allocation.
    taken: Vec<Waker>,
}

impl Future for Relay<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        {
            let mut state = this.watermark.lock();
            match &state.relay {
                Some(registered) if registered.will_wake(cx.waker()) => {}
                _ => state.relay = Some(cx.waker().clone()),
            }
            mem::swap(&mut state.relayed, &mut this.taken);
        }
        this.taken.drain(..).for_each(Waker::wake);
        Poll::Pending
    }
}

impl Drop for Relay<'_> {
    fn drop(&mut self) {
        let left = {
            let mut state = self.watermark.lock();
            state.relay = None;
            mem::take(&mut state.relayed)
        };
        left.into_iter().for_each(Waker::wake);
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
mod tests;

#[cfg(all(test, loom))]
mod loom_tests;
