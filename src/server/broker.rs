//! The engine shared between connection tasks and the timer task.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::{mpsc, Notify};

use super::Clock;
use crate::engine::{Engine, Outcome, SessionId, Timestamp};
use crate::protocol::{Command, ProtocolError, Reply};

/// The engine, the per-session reply channels, and the timer's wake-up.
pub struct Broker {
    state: Mutex<State>,
    timer: Notify,
    clock: Clock,
}

struct State {
    engine: Engine,
    /// Where replies for blocked sessions go.
    outboxes: HashMap<SessionId, mpsc::UnboundedSender<Reply>>,
    /// The deadline the timer task is sleeping towards.
    timer_at: Option<Timestamp>,
}

impl State {
    /// Delivers wake-ups, drops change records (nothing persists them yet) and wakes the
    /// timer task if the engine's next deadline moved earlier than it is sleeping for.
    fn settle(&mut self, timer: &Notify) {
        self.deliver();
        if let Some(next) = self.engine.next_deadline() {
            if self.timer_at.is_none_or(|t| next < t) {
                self.timer_at = Some(next);
                timer.notify_one();
            }
        }
    }

    /// Delivers wake-ups and drops change records.
    fn deliver(&mut self) {
        if self.engine.has_wakeups() {
            for (sid, reply) in self.engine.take_wakeups() {
                if let Some(tx) = self.outboxes.get(&sid) {
                    // A closed receiver means the connection is going away; its session is
                    // closed under this same lock, which returns any job it was handed.
                    let _ = tx.send(reply);
                }
            }
        }
        self.engine.discard_changes();
    }
}

impl Broker {
    /// A broker around `engine`.
    pub fn new(engine: Engine, clock: Clock) -> Broker {
        Broker {
            state: Mutex::new(State {
                engine,
                outboxes: HashMap::new(),
                timer_at: None,
            }),
            timer: Notify::new(),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug; the state is still the best we have.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Opens a session whose delayed replies arrive on the returned channel.
    pub fn open_session(&self) -> (SessionId, mpsc::UnboundedReceiver<Reply>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.lock();
        let sid = st.engine.open_session();
        st.outboxes.insert(sid, tx);
        (sid, rx)
    }

    /// Closes a session, returning its reserved jobs to ready.
    pub fn close_session(&self, sid: SessionId) {
        let now = self.clock.now();
        let mut st = self.lock();
        st.engine.close_session(sid, now);
        st.outboxes.remove(&sid);
        st.settle(&self.timer);
    }

    /// Runs a batch of decoded items for one session, in order, appending each reply to
    /// `replies`. Stops after an item that blocks or closes and returns how many items were
    /// consumed and that final outcome (`None` if every item got a reply).
    pub fn execute(
        &self,
        sid: SessionId,
        items: &mut std::collections::VecDeque<Result<Command, ProtocolError>>,
        mut reply: impl FnMut(Reply),
    ) -> Option<Outcome> {
        let now = self.clock.now();
        let mut st = self.lock();
        let mut stop = None;
        while let Some(item) = items.pop_front() {
            let outcome = match item {
                Ok(cmd) => st.engine.apply(sid, cmd, now),
                Err(e) => Outcome::Reply(st.engine.reject(sid, e)),
            };
            match outcome {
                Outcome::Reply(r) => reply(r),
                other => {
                    stop = Some(other);
                    break;
                }
            }
        }
        st.settle(&self.timer);
        stop
    }

    /// Ends a blocked reserve early with `TIMED_OUT`; `None` if it was already answered.
    pub fn cancel_wait(&self, sid: SessionId) -> Option<Reply> {
        let mut st = self.lock();
        let cancelled = st.engine.cancel_wait(sid);
        st.settle(&self.timer);
        cancelled.then_some(Reply::TimedOut)
    }

    /// Sets or clears drain mode.
    pub fn set_draining(&self, draining: bool) {
        self.lock().engine.set_draining(draining);
    }

    /// Runs the engine's timers until `shutdown` resolves.
    pub async fn run_timers(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let next = {
                let mut st = self.lock();
                let now = self.clock.now();
                st.engine.tick(now);
                st.deliver();
                st.timer_at = st.engine.next_deadline();
                st.timer_at
            };
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(self.clock.instant_at(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = self.timer.notified() => {}
                _ = &mut shutdown => return,
            }
        }
    }

    /// Runs `f` with the engine locked (for tests and inspection).
    pub fn with_engine<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> R {
        f(&mut self.lock().engine)
    }
}
