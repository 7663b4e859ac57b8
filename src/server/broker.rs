//! The engine shared between connection tasks and the timer task.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, Notify};

use super::journal::Journal;
use super::Clock;
use crate::engine::{record, Change, Engine, Outcome, SessionId, Timestamp};
use crate::protocol::{Command, JobId, ProtocolError, Reply, TubeName, TubeSetting};

/// Records after which a tube setting's record is written again if it is the oldest record
/// the log must keep, so settings never hold old segments back for long.
const RELOG_SETTINGS_AFTER: u64 = 10_000;

/// A reply for a blocked session and the log LSN it must wait for before it is sent.
pub type Wakeup = (Reply, u64);

/// The engine, the journal its changes go to, the per-session reply channels, and the
/// timer's wake-up.
pub struct Broker {
    state: Mutex<State>,
    timer: Notify,
    clock: Clock,
    journal: Arc<Journal>,
    fsync: crate::config::FsyncPolicy,
}

struct State {
    engine: Engine,
    journal: Arc<Journal>,
    /// LSN of each live job's put record, for log reclamation.
    put_lsns: BTreeMap<JobId, u64>,
    /// LSN of the newest put record.
    last_put_lsn: u64,
    /// LSN of the record that set each tube setting in force.
    config_lsns: BTreeMap<(TubeName, TubeSetting), u64>,
    /// Where replies for blocked sessions go.
    outboxes: HashMap<SessionId, mpsc::UnboundedSender<Wakeup>>,
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

    /// Queues the engine's changes for the log, then delivers wake-ups tagged with the log
    /// tail they depend on.
    fn deliver(&mut self) {
        self.journal_changes();
        if self.engine.has_wakeups() {
            let tail = self.journal.tail();
            for (sid, reply) in self.engine.take_wakeups() {
                if let Some(tx) = self.outboxes.get(&sid) {
                    // A closed receiver means the connection is going away; its session is
                    // closed under this same lock, which returns any job it was handed.
                    let _ = tx.send((reply, tail));
                }
            }
        }
    }

    /// Encodes and queues every change, in the order the engine made them.
    fn journal_changes(&mut self) {
        let changes = self.engine.take_changes();
        if changes.is_empty() {
            return;
        }
        for change in &changes {
            let (kind, payload) = record::encode(change);
            let lsn = self.journal.push(kind, payload);
            match change {
                Change::Put { id, .. } => {
                    self.put_lsns.insert(*id, lsn);
                    self.last_put_lsn = lsn;
                }
                Change::Delete { id } => {
                    self.put_lsns.remove(id);
                }
                _ => self.note_config(change, lsn),
            }
        }
        self.relog_old_settings();
        self.update_keep_from();
    }

    /// Remembers which record set a tube setting in force.
    fn note_config(&mut self, change: &Change, lsn: u64) {
        if let Change::ConfigTube {
            tube,
            setting,
            value,
        } = change
        {
            let key = (tube.clone(), *setting);
            match value {
                Some(_) => self.config_lsns.insert(key, lsn),
                None => self.config_lsns.remove(&key),
            };
        }
    }

    /// Writes every setting in force again when the oldest setting record is what keeps old
    /// log segments from being reclaimed (replaying a setting twice changes nothing).
    fn relog_old_settings(&mut self) {
        let Some(oldest) = self.config_lsns.values().min().copied() else {
            return;
        };
        let jobs_keep = self.oldest_live_put().min(self.last_put_lsn);
        if oldest >= jobs_keep || self.journal.tail().saturating_sub(oldest) < RELOG_SETTINGS_AFTER
        {
            return;
        }
        self.log_settings_in_force();
    }

    /// Writes a record for every setting in force.
    fn log_settings_in_force(&mut self) {
        for change in self.engine.settings_in_force() {
            let (kind, payload) = record::encode(&change);
            let lsn = self.journal.push(kind, payload);
            self.note_config(&change, lsn);
        }
    }

    fn oldest_live_put(&self) -> u64 {
        self.put_lsns.values().next().copied().unwrap_or(u64::MAX)
    }

    fn update_keep_from(&self) {
        let oldest_config = self.config_lsns.values().min().copied().unwrap_or(u64::MAX);
        self.journal.set_keep_from(
            self.oldest_live_put()
                .min(self.last_put_lsn)
                .min(oldest_config),
        );
    }
}

impl Broker {
    /// A broker around `engine`, journaling to `journal`. `put_lsns` and `last_put_lsn`
    /// describe the recovered log (for reclamation).
    pub fn new(
        engine: Engine,
        clock: Clock,
        journal: Arc<Journal>,
        put_lsns: BTreeMap<JobId, u64>,
        last_put_lsn: u64,
        fsync: crate::config::FsyncPolicy,
    ) -> Broker {
        let mut state = State {
            engine,
            journal: journal.clone(),
            put_lsns,
            last_put_lsn,
            config_lsns: BTreeMap::new(),
            outboxes: HashMap::new(),
            timer_at: None,
        };
        // Recovery does not track which records set the settings; writing them afresh
        // gives every setting a known record.
        state.log_settings_in_force();
        state.update_keep_from();
        Broker {
            state: Mutex::new(state),
            timer: Notify::new(),
            clock,
            journal,
            fsync,
        }
    }

    /// Waits until every record up to `lsn` is durable (as the fsync policy defines it).
    /// Fails if the log has failed and the records may not be.
    pub async fn durable(&self, lsn: u64) -> Result<(), crate::wal::commit::Poisoned> {
        if lsn <= self.journal.watermark().durable() {
            return Ok(());
        }
        self.journal.watermark().reached(lsn).await
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
    pub fn open_session(&self) -> (SessionId, mpsc::UnboundedReceiver<Wakeup>) {
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

    /// Runs a batch of decoded items for one session, in order, passing each reply to
    /// `reply`. Stops after an item that blocks or closes. Returns that final outcome
    /// (`None` if every item got a reply) and the log tail the replies depend on: they may
    /// be sent only once [`Broker::durable`] of it has returned.
    pub fn execute(
        &self,
        sid: SessionId,
        items: &mut std::collections::VecDeque<Result<Command, ProtocolError>>,
        mut reply: impl FnMut(Reply),
    ) -> (Option<Outcome>, u64) {
        let now = self.clock.now();
        let mut st = self.lock();
        if items.iter().any(|i| matches!(i, Ok(Command::Stats))) {
            let log = self.journal.stats(self.fsync);
            st.engine.set_log_stats(log);
        }
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
        (stop, self.journal.tail())
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
