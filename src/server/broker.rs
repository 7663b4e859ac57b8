//! The engine shared between connection tasks and the timer task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, Notify};

use super::body_reader::{Opening, SegmentFiles};
use super::held::Held;
use super::journal::Journal;
use super::outbox::Replies;
use super::retention::{self, Retention};
use super::Clock;
use crate::engine::{record, BodyRef, Change, Engine, Notice, Outcome, SessionId, Timestamp};
use crate::protocol::{Command, ProtocolError, Refusal, Reply};

/// A reply for a blocked session, held until the records it depends on are durable, and
/// the segment its body is still to be opened in.
pub type Wakeup = Held<(Reply, Option<Opening>)>;

/// The engine, the journal its changes go to, the per-session reply channels, and the
/// timer's wake-up.
pub struct Broker {
    state: Mutex<State>,
    timer: Notify,
    clock: Clock,
    journal: Arc<Journal>,
    files: Arc<SegmentFiles>,
    fsync: crate::config::FsyncPolicy,
    /// Cluster mode's commit watermark and proposal channel; `None` on a single node.
    cluster: Option<ClusterSide>,
}

/// A batch of changes for the proposer: the leader (and its opening) that made them, its
/// sequence number, the encoded records.
pub type Batch = (LeaderOpening, u64, Vec<u8>);

/// A leader id and which opening of the engine under it (see [`Broker::open_leader`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderOpening {
    /// The leader id.
    pub leader: openraft::LeaderId<u64>,
    /// Counts openings in this process.
    pub opening: u64,
}

/// The broker's side of cluster mode (see `super::cluster`).
///
/// The engine runs commands only while this node is the leader, opened in one term
/// ([`Broker::open_leader`]). Each batch of changes it makes is encoded and numbered with
/// a proposal sequence number, in engine order, and sent to the proposer; replies are held
/// on the commit watermark — the last sequence number whose raft entry is committed and
/// applied — instead of the local log's durable watermark. Each term as leader has a
/// watermark of its own: when leadership is lost ([`Broker::step_down`]) the engine is
/// rebuilt from the committed log and every client connection is closed, so no reply
/// waiting on the old one is ever sent.
struct ClusterSide {
    commit: Mutex<Arc<crate::wal::commit::Watermark>>,
    proposals: mpsc::UnboundedSender<Batch>,
    /// Signalled when this node stops leading: the listener closes every connection.
    deposed: Notify,
    /// A new, empty engine as of a time (for rebuilding).
    fresh: Box<dyn Fn(Timestamp) -> Engine + Send + Sync>,
    /// Renders the `cluster-*` lines of extended `stats`, once openraft runs.
    status: std::sync::OnceLock<Box<dyn Fn() -> String + Send + Sync>>,
    /// Carries out `cluster-add` / `cluster-remove`, once openraft runs.
    membership: std::sync::OnceLock<MembershipHook>,
    /// Whether this node knows of a leader (itself included), kept by the leadership
    /// watcher; `/readyz` says `no-leader` while it is false.
    leader_known: std::sync::atomic::AtomicBool,
}

/// A membership change a client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// `cluster-add`.
    Add {
        /// The node.
        id: u64,
        /// Its cluster port.
        addr: std::net::SocketAddr,
    },
    /// `cluster-remove`.
    Remove(u64),
}

/// Carries out a membership change and says how it went.
pub type MembershipHook = Box<
    dyn Fn(MembershipChange) -> std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send>>
        + Send
        + Sync,
>;

/// Where a leader's changes go.
struct Leading {
    /// The leader id and opening this node was opened with; its own entries carry them.
    leader: LeaderOpening,
    proposals: mpsc::UnboundedSender<Batch>,
}

/// The watermark a held reply waits on (see [`Broker::watermark`]).
pub enum WatermarkRef<'a> {
    /// The log's own.
    Journal(&'a crate::wal::commit::Watermark),
    /// Cluster mode's commit watermark of the current term.
    Commit(Arc<crate::wal::commit::Watermark>),
}

impl std::ops::Deref for WatermarkRef<'_> {
    type Target = crate::wal::commit::Watermark;

    fn deref(&self) -> &Self::Target {
        match self {
            WatermarkRef::Journal(w) => w,
            WatermarkRef::Commit(w) => w,
        }
    }
}

struct State {
    engine: Engine,
    journal: Arc<Journal>,
    files: Arc<SegmentFiles>,
    /// Which segments the log keeps, and the records written again so old ones can go.
    retention: Retention,
    /// The oldest segment the log had when open files were last pruned.
    pruned_below: u64,
    /// Where replies for blocked sessions go.
    outboxes: HashMap<SessionId, mpsc::UnboundedSender<Wakeup>>,
    /// The deadline the timer task is sleeping towards.
    timer_at: Option<Timestamp>,
    /// Cluster mode: `Some` once this node is open as leader.
    leading: Option<Leading>,
    /// Cluster mode (leader or not).
    clustered: bool,
    /// Cluster mode: the last proposal sequence number given out (across terms).
    seq: u64,
    /// Cluster mode: the index of the last raft entry applied.
    applied: Option<u64>,
    /// Cluster mode: openings as leader so far.
    openings: u64,
    /// Cluster mode: the latest leader clock reading among the entries applied (see
    /// [`Broker::open_leader`]).
    leader_time: u64,
}

impl State {
    /// Queues the engine's changes for the log, delivers wake-ups, and wakes the timer task
    /// if the engine's next deadline moved earlier than it is sleeping for.
    fn settle(&mut self, timer: &Notify) {
        self.deliver();
        if let Some(next) = self.engine.next_deadline() {
            if self.timer_at.is_none_or(|t| next < t) {
                self.timer_at = Some(next);
                timer.notify_one();
            }
        }
    }

    /// What held replies made now depend on: the journal's tail, or in cluster mode the
    /// last proposal given out.
    fn tail(&self) -> crate::wal::Lsn {
        match (&self.leading, self.clustered) {
            (Some(_), _) => crate::wal::Lsn(self.seq),
            (None, true) => crate::wal::Lsn(0),
            (None, false) => self.journal.tail(),
        }
    }

    /// Queues the engine's changes for the log, then delivers wake-ups tagged with the log
    /// tail they depend on.
    fn deliver(&mut self) {
        if self.clustered {
            self.propose_changes();
        } else {
            self.journal_changes();
        }
        for notice in self.engine.take_notices() {
            log_notice(&notice);
        }
        let oldest = self.journal.oldest_segment();
        if oldest > self.pruned_below {
            self.files.forget_before(oldest);
            self.pruned_below = oldest;
        }
        if self.engine.has_wakeups() {
            let tail = self.tail();
            for (sid, reply) in self.engine.take_wakeups() {
                let reply = self.files.attach(reply);
                if let Some(tx) = self.outboxes.get(&sid) {
                    // A closed receiver means the connection is going away; its session is
                    // closed under this same lock, which returns any job it was handed.
                    let _ = tx.send(Held::after(reply, tail));
                }
            }
        }
    }

    /// Cluster mode: encodes the batch's changes as one proposal, numbered in engine order,
    /// for the proposer. Bodies are placed once the entry holding them is applied (see
    /// [`Broker::apply_entry`]); until then they stay in memory. A node that is not open as
    /// leader runs no commands and no timers, so it makes no changes; were any made, they
    /// are dropped (logged), never proposed.
    fn propose_changes(&mut self) {
        let changes = self.engine.take_changes();
        if changes.is_empty() {
            return;
        }
        let Some(leading) = &mut self.leading else {
            tracing::error!(
                changes = changes.len(),
                "changes made while not leader were dropped (a bug)"
            );
            return;
        };
        let mut batch = Vec::new();
        for change in &changes {
            let (kind, payload) = record::encode_payload(change);
            super::cluster::record::push_inner(&mut batch, kind, &payload);
        }
        self.seq += 1;
        // A closed channel means the proposer stopped, which only happens as the process
        // stops: nothing waiting on this batch is ever released.
        let _ = leading.proposals.send((leading.leader, self.seq, batch));
    }

    /// Encodes and queues every change, in the order the engine made them, and tells the
    /// engine where each new body will be in the log. A body is not copied here, under the
    /// lock: it is queued as the bytes the job holds, for the writer to copy.
    fn journal_changes(&mut self) {
        let changes = self.engine.take_changes();
        if changes.is_empty() {
            return;
        }
        for change in &changes {
            let (kind, payload) = record::encode_payload(change);
            let size = retention::framed(payload.len());
            let (_, pos) = self.journal.push(kind, payload);
            if let (Change::Put { id, .. } | Change::Image { id, .. }, Some((start, body))) =
                (change, record::body_in(change))
            {
                // Offsets fit 32 bits (segments are at most 4 GiB); a body that somehow
                // did not would simply stay in memory.
                if let Ok(offset) = u32::try_from(pos.offset + start as u64) {
                    let at = BodyRef {
                        segment: pos.segment,
                        offset,
                        len: body.len() as u32,
                    };
                    self.engine.place_body(*id, at);
                }
            }
            self.retention.note(change, pos.segment, size);
        }
        let opening = self.files.oldest_opening();
        self.retention
            .after_batch(&self.engine, &self.journal, opening);
    }
}

/// A raft entry and where its record's payload is (LSN, position).
pub type Located = (
    super::cluster::Entry,
    (crate::wal::Lsn, crate::wal::RecordPos),
);

/// Applies a committed normal entry to `st` (see [`Broker::apply_entry`]); returns whether
/// it was this leader's own (so the replies waiting on it may go).
fn apply_records(
    st: &mut State,
    log_id: super::cluster::LogId,
    proposal: &super::cluster::Proposal,
    (lsn, pos): (crate::wal::Lsn, crate::wal::RecordPos),
    now: Timestamp,
) -> Result<bool, String> {
    st.applied = Some(log_id.index);
    st.leader_time = st.leader_time.max(proposal.leader_time);
    let own = proposal.term == log_id.leader_id.term
        && st.leading.as_ref().is_some_and(|l| {
            l.leader.leader == log_id.leader_id && l.leader.opening == proposal.opening
        });
    if !own {
        replay_entry(&mut st.engine, log_id, proposal, (lsn, pos), now)?;
        return Ok(false);
    }
    let first_offset = super::cluster::record::NORMAL_HEAD as u64;
    for inner in super::cluster::record::inner_records(&proposal.records) {
        let (at, kind, payload) = inner.map_err(|e| format!("entry {log_id}: {e}"))?;
        let offset = pos.offset + first_offset + at as u64;
        if let Ok((Change::Put { id, .. } | Change::Image { id, .. }, Some((start, len)))) =
            record::decode_metadata(kind, payload)
        {
            if let Ok(offset) = u32::try_from(offset + start as u64) {
                let body = BodyRef {
                    segment: pos.segment,
                    offset,
                    len,
                };
                st.engine.place_body(id, body);
            }
        }
    }
    Ok(true)
}

/// Replays a committed normal entry's records into `engine`, as at start-up: what every
/// node but the leader that proposed it does, and what rebuilding from the log does.
///
/// An entry whose proposal was made in another term than the entry's own is applied as
/// empty, on every node alike: a proposal queued by a leader that has since lost its term
/// can reach openraft after this node leads again, and its changes came from an engine
/// that was thrown away.
pub fn replay_entry(
    engine: &mut Engine,
    log_id: super::cluster::LogId,
    proposal: &super::cluster::Proposal,
    (lsn, pos): (crate::wal::Lsn, crate::wal::RecordPos),
    now: Timestamp,
) -> Result<(), String> {
    if proposal.term != log_id.leader_id.term {
        tracing::warn!(
            entry = %log_id,
            proposed_in = proposal.term,
            "skipped an entry proposed in an earlier term"
        );
        return Ok(());
    }
    let first_offset = super::cluster::record::NORMAL_HEAD as u64;
    for inner in super::cluster::record::inner_records(&proposal.records) {
        let (at, kind, payload) = inner.map_err(|e| format!("entry {log_id}: {e}"))?;
        let offset = pos.offset + first_offset + at as u64;
        engine
            .replay(kind, payload, (lsn.0, pos.segment, offset), now)
            .map_err(|e| format!("entry {log_id}: {e}"))?;
    }
    Ok(())
}

/// Logs what the engine reported (it does no logging itself).
fn log_notice(notice: &Notice) {
    match notice {
        Notice::Refusing {
            limit,
            value,
            tube,
            jobs,
            bytes,
        } => tracing::warn!(
            limit = limit.setting(),
            value,
            tube = tube.as_ref().map(|t| t.as_str()),
            jobs,
            bytes,
            "refusing new work: limit reached"
        ),
        Notice::DiskLow { free, floor } => tracing::warn!(
            limit = Refusal::MinFreeDisk.setting(),
            free,
            floor,
            "refusing new work: free disk space below the floor"
        ),
        Notice::Accepting {
            limit,
            tube,
            refused,
        } => tracing::info!(
            limit = limit.setting(),
            tube = tube.as_ref().map(|t| t.as_str()),
            refused,
            "accepting new work again"
        ),
    }
}

impl Broker {
    /// A broker for unit tests: `engine` with a journal no writer drains (records up to
    /// `durable` count as durable), bodies read from the temporary directory, no fsync.
    #[cfg(test)]
    pub(super) fn unwritten(engine: Engine, clock: Clock, durable: u64) -> Arc<Broker> {
        let journal = Arc::new(Journal::new(
            durable + 1,
            crate::wal::Layout::empty(1, 1 << 20),
        ));
        let files = Arc::new(SegmentFiles::new(std::env::temp_dir()));
        Arc::new(Broker::new(
            engine,
            clock,
            journal,
            files,
            0,
            crate::config::FsyncPolicy::Never,
        ))
    }

    /// A broker around `engine`, journaling to `journal`, reading bodies through
    /// `files`. `last_put_segment` is the segment of the recovered log's newest put.
    pub fn new(
        engine: Engine,
        clock: Clock,
        journal: Arc<Journal>,
        files: Arc<SegmentFiles>,
        last_put_segment: u64,
        fsync: crate::config::FsyncPolicy,
    ) -> Broker {
        let mut state = State {
            engine,
            journal: journal.clone(),
            files: files.clone(),
            retention: Retention::new(last_put_segment),
            pruned_below: 0,
            outboxes: HashMap::new(),
            timer_at: None,
            leading: None,
            clustered: false,
            seq: 0,
            applied: None,
            openings: 0,
            leader_time: 0,
        };
        // Recovery does not track which records set the settings; writing them afresh
        // gives every setting a known place.
        state
            .retention
            .log_settings_in_force(&state.engine, &state.journal);
        Broker {
            state: Mutex::new(state),
            timer: Notify::new(),
            clock,
            journal,
            files,
            fsync,
            cluster: None,
        }
    }

    /// A cluster node's broker around an empty `engine`: it runs no command until
    /// [`Broker::open_leader`]; committed entries reach the engine through
    /// [`Broker::apply_entry`]. Batches of changes go to `proposals` as
    /// (sequence number, encoded records). `engine` holds the state after entry `applied`
    /// (the newest snapshot's). No compaction runs: snapshots and the cluster's retention
    /// task (`cluster::node`) decide which segments stay.
    pub fn clustered(
        engine: Engine,
        clock: Clock,
        journal: Arc<Journal>,
        files: Arc<SegmentFiles>,
        proposals: mpsc::UnboundedSender<Batch>,
        fresh: Box<dyn Fn(Timestamp) -> Engine + Send + Sync>,
        applied: Option<u64>,
    ) -> Broker {
        let state = State {
            engine,
            journal: journal.clone(),
            files: files.clone(),
            retention: Retention::new(0),
            pruned_below: 0,
            outboxes: HashMap::new(),
            timer_at: None,
            leading: None,
            clustered: true,
            seq: 0,
            applied,
            openings: 0,
            leader_time: 0,
        };
        Broker {
            state: Mutex::new(state),
            timer: Notify::new(),
            clock,
            journal,
            files,
            fsync: crate::config::FsyncPolicy::Always,
            cluster: Some(ClusterSide {
                commit: Mutex::new(Arc::new(crate::wal::commit::Watermark::new(0))),
                proposals,
                deposed: Notify::new(),
                fresh,
                status: std::sync::OnceLock::new(),
                membership: std::sync::OnceLock::new(),
                leader_known: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Whether the server has begun to stop.
    pub fn is_stopping(&self) -> bool {
        self.journal.is_stopping()
    }

    /// Sets what renders the `cluster-*` lines of extended `stats` (cluster mode; once).
    pub fn set_cluster_status(&self, status: Box<dyn Fn() -> String + Send + Sync>) {
        if let Some(c) = &self.cluster {
            let _ = c.status.set(status);
        }
    }

    /// Sets what carries out `cluster-add` and `cluster-remove` (cluster mode; once).
    pub fn set_membership_hook(&self, hook: MembershipHook) {
        if let Some(c) = &self.cluster {
            let _ = c.membership.set(hook);
        }
    }

    /// Starts a membership change for session `sid`; its reply comes as a wake-up, like a
    /// reserve's, once the change is committed or refused.
    fn change_membership(&self, st: &State, sid: SessionId, change: MembershipChange) -> Outcome {
        let hook = self.cluster.as_ref().and_then(|c| c.membership.get());
        let (Some(hook), Some(tx)) = (hook, st.outboxes.get(&sid).cloned()) else {
            return Outcome::Reply(Reply::NoQuorum);
        };
        let change = hook(change);
        tokio::spawn(async move {
            let reply = change.await;
            let _ = tx.send(Held::ready((reply, None)));
        });
        Outcome::Blocked
    }

    /// The `cluster-*` lines of extended `stats`, in cluster mode.
    fn cluster_yaml(&self) -> Option<String> {
        let c = self.cluster.as_ref()?;
        Some(c.status.get().map(|f| f()).unwrap_or_default())
    }

    /// Notes whether this cluster node knows of a leader (see [`Broker::has_no_leader`]).
    pub fn set_leader_known(&self, known: bool) {
        if let Some(c) = &self.cluster {
            c.leader_known
                .store(known, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Whether this is a cluster node that knows of no leader: its clients get `NO_QUORUM`.
    pub fn has_no_leader(&self) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| !c.leader_known.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Whether this is a cluster node.
    pub fn is_clustered(&self) -> bool {
        self.cluster.is_some()
    }

    /// Whether this cluster node is open as leader (always false on a single node).
    pub fn is_leader(&self) -> bool {
        self.lock().leading.is_some()
    }

    /// The leader id and opening this node is open as leader under, if it is.
    pub fn leading(&self) -> Option<LeaderOpening> {
        self.lock().leading.as_ref().map(|l| l.leader)
    }

    /// Opens this node as leader under `leader`: from now on it runs commands and timers
    /// and proposes their changes. Call once the engine holds every committed entry of
    /// earlier terms. The engine's clock is moved to now: delays, TTRs and pauses that fell
    /// due meanwhile take effect.
    pub fn open_leader(&self, leader: openraft::LeaderId<u64>) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let mut st = self.lock();
        *cluster.commit.lock().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(crate::wal::commit::Watermark::new(st.seq));
        st.openings += 1;
        st.leading = Some(Leading {
            leader: LeaderOpening {
                leader,
                opening: st.openings,
            },
            proposals: cluster.proposals.clone(),
        });
        // Never behind the previous leaders: their entries carry their clocks, and a leader
        // whose clock is behind would hand out delayed jobs late and stamp new jobs as
        // older than the old ones. A clock ahead is left alone (nothing can move it back).
        if let Some(behind) = self.clock.advance_to(Timestamp(st.leader_time)) {
            tracing::warn!(
                behind_ms = behind.as_millis() as u64,
                "this node's clock is behind the previous leader's: moved forward to it"
            );
        }
        st.engine.tick(self.clock.now());
        st.settle(&self.timer);
        self.timer.notify_one();
    }

    /// Stops leading: the engine, which ran ahead of the commit index, is replaced by one
    /// rebuilt from the committed state — `base` loads the newest snapshot into the empty
    /// engine and returns the first entry index after it, `read(from, to)` returns the
    /// entries with indexes `from..to` — up to the last applied entry, as a restart would
    /// rebuild it; every client connection is then closed (see [`Broker::deposed`]), and
    /// commands get `NO_QUORUM` until this node leads again.
    pub fn step_down(
        &self,
        base: impl FnOnce(&mut Engine, Timestamp) -> Result<u64, String>,
        mut read: impl FnMut(u64, u64) -> Result<Vec<Located>, String>,
    ) -> Result<(), String> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let now = self.clock.now();
        let mut st = self.lock();
        st.leading = None;
        let next_session = st.engine.next_session_id();
        st.engine = (cluster.fresh)(now);
        st.engine.continue_session_ids(next_session);
        st.outboxes.clear();
        st.timer_at = None;
        let end = st.applied.map_or(0, |a| a + 1);
        let mut from = base(&mut st.engine, now)?;
        while from < end {
            let to = end.min(from + 1024);
            for (entry, at) in read(from, to)? {
                if let openraft::EntryPayload::Normal(p) = &entry.payload {
                    apply_records(&mut st, entry.log_id, p, at, now)?;
                }
            }
            from = to;
        }
        st.engine.finish_restore();
        drop(st);
        cluster.deposed.notify_one();
        Ok(())
    }

    /// A new, empty engine (cluster mode), for rebuilding state elsewhere.
    pub fn fresh_engine(&self) -> Option<Engine> {
        let cluster = self.cluster.as_ref()?;
        Some((cluster.fresh)(self.clock.now()))
    }

    /// Replaces the engine of a node that does not lead by `engine`, the state after entry
    /// `applied` (an installed snapshot).
    pub fn install_engine(&self, mut engine: Engine, applied: u64) {
        let mut st = self.lock();
        engine.continue_session_ids(st.engine.next_session_id());
        st.engine = engine;
        st.applied = Some(applied);
        st.timer_at = None;
    }

    /// Points bodies that are the same bytes in a new snapshot file at it (see
    /// `cluster::snapshot`), a slice at a time; returns how many moved.
    pub fn rebase_bodies(&self, moved: &[(crate::protocol::JobId, BodyRef, BodyRef)]) -> usize {
        let mut n = 0;
        for slice in moved.chunks(4096) {
            let mut st = self.lock();
            for &(id, from, to) in slice {
                if st.engine.rebase_body(id, from, to) {
                    n += 1;
                }
            }
        }
        n
    }

    /// The oldest log segment holding a live body (`u64::MAX` if none).
    pub fn oldest_live_log_segment(&self) -> u64 {
        self.lock().engine.oldest_live_segment().unwrap_or(u64::MAX)
    }

    /// Whether a live body is in a segment numbered `lo..=hi`.
    pub fn has_live_bodies_in(&self, lo: u64, hi: u64) -> bool {
        self.lock().engine.has_live_bodies_in(lo, hi)
    }

    /// Resolves when this node has stopped leading (never on a single node).
    pub async fn deposed(&self) {
        match &self.cluster {
            Some(c) => c.deposed.notified().await,
            None => std::future::pending().await,
        }
    }

    /// The open segment files bodies are read from.
    pub fn files(&self) -> &Arc<SegmentFiles> {
        &self.files
    }

    /// Notes that the raft entry `log_id` was applied (for entries with no records).
    pub fn note_applied(&self, log_id: super::cluster::LogId) {
        self.lock().applied = Some(log_id.index);
    }

    /// Applies the committed raft entry `log_id` holding `proposal`, whose record's payload
    /// is at `at` (LSN and position). On the leader that proposed it (in the term it was
    /// opened in) the engine already holds its effects: its bodies get their places in the
    /// log and the replies waiting on it are released. Anywhere else each record is replayed
    /// into the engine, as at start-up.
    pub fn apply_entry(
        &self,
        log_id: super::cluster::LogId,
        proposal: &super::cluster::Proposal,
        at: (crate::wal::Lsn, crate::wal::RecordPos),
    ) -> Result<(), String> {
        let now = self.clock.now();
        let mut st = self.lock();
        let released = apply_records(&mut st, log_id, proposal, at, now)?;
        drop(st);
        if released {
            if let Some(cluster) = &self.cluster {
                let commit = cluster
                    .commit
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                commit.publish(proposal.last_seq);
            }
        }
        Ok(())
    }

    /// The watermark held replies are released by (see [`Held::release`]): the log's
    /// durable one, or in cluster mode the commit watermark of the current term.
    pub fn watermark(&self) -> WatermarkRef<'_> {
        match &self.cluster {
            Some(c) => {
                WatermarkRef::Commit(c.commit.lock().unwrap_or_else(|e| e.into_inner()).clone())
            }
            None => WatermarkRef::Journal(self.journal.watermark()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug; the state is still the best we have.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits while the log writer's backlog is over `--max-log-backlog`.
    pub async fn wait_for_log_room(&self) {
        if self.journal.over_backlog() {
            self.journal.room().await;
        }
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

    /// Runs a batch of decoded items for one session, in order, adding each reply to `out`
    /// held until the log is durable up to the records the batch queued. Stops after an
    /// item that blocks or closes, or once `out` holds `max_bytes` or more (the
    /// connection's output is full). Returns that final outcome (`None` if every item got
    /// a reply).
    pub fn execute(
        &self,
        sid: SessionId,
        items: &mut std::collections::VecDeque<Result<Command, ProtocolError>>,
        out: &mut Held<Replies>,
        max_bytes: usize,
    ) -> Option<Outcome> {
        let now = self.clock.now();
        let mut st = self.lock();
        if st.clustered && st.leading.is_none() {
            // No leader here: nothing runs, every command is told so at once (a malformed
            // one gets its usual error, and `quit` still closes).
            return out.fill(|replies| {
                while let Some(item) = items.pop_front() {
                    let reply = match item {
                        Ok(Command::Quit) => return (Some(Outcome::Close), crate::wal::Lsn(0)),
                        Ok(_) => Reply::NoQuorum,
                        Err(e) => st.engine.reject(sid, e),
                    };
                    replies.push_attached((reply, None));
                    if replies.len() >= max_bytes {
                        break;
                    }
                }
                (None, crate::wal::Lsn(0))
            });
        }
        if items.iter().any(|i| matches!(i, Ok(Command::Stats))) {
            let log = self.journal.stats(self.fsync);
            st.engine.set_log_stats(log);
            st.engine.set_cluster_yaml(self.cluster_yaml());
        }
        st.engine.set_log_full(self.journal.log_full());
        st.engine.set_out_of_files(self.journal.out_of_files());
        let stop = out.fill(|replies| {
            let mut stop = None;
            while let Some(item) = items.pop_front() {
                let outcome = match item {
                    Ok(Command::ClusterAdd { id, addr }) if self.cluster.is_some() => {
                        self.change_membership(&st, sid, MembershipChange::Add { id, addr })
                    }
                    Ok(Command::ClusterRemove(id)) if self.cluster.is_some() => {
                        self.change_membership(&st, sid, MembershipChange::Remove(id))
                    }
                    Ok(cmd) => st.engine.apply(sid, cmd, now),
                    Err(e) => Outcome::Reply(st.engine.reject(sid, e)),
                };
                match outcome {
                    Outcome::Reply(r) => {
                        if let Reply::Reserved { .. } = r {
                            self.timings().reserve_wait.observe(0);
                        }
                        replies.push_attached(st.files.attach(r));
                        if replies.len() >= max_bytes {
                            break;
                        }
                    }
                    other => {
                        stop = Some(other);
                        break;
                    }
                }
            }
            // Every change the batch made is queued by this, under the same lock: the
            // journal's tail then covers each record the replies depend on.
            st.settle(&self.timer);
            (stop, st.tail())
        });
        drop(st);
        out.update(Replies::open_bodies);
        stop
    }

    /// Ends a blocked reserve early with `TIMED_OUT`; `None` if it was already answered.
    /// The answer depends on no record.
    pub fn cancel_wait(&self, sid: SessionId) -> Option<Wakeup> {
        let mut st = self.lock();
        let cancelled = st.engine.cancel_wait(sid);
        st.settle(&self.timer);
        cancelled.then(|| Held::ready((Reply::TimedOut, None)))
    }

    /// Marks the server as stopping (see [`Engine::set_stopping`]).
    pub fn set_stopping(&self) {
        self.lock().engine.set_stopping();
        self.journal.set_stopping();
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
                if st.clustered && st.leading.is_none() {
                    // Only the leader's engine runs timers; the others follow its log.
                    st.timer_at = None;
                    None
                } else {
                    let now = self.clock.now();
                    st.engine.tick(now);
                    st.deliver();
                    st.timer_at = st.engine.next_deadline();
                    st.timer_at
                }
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

    /// The segment compaction should empty next, if any (see
    /// [`retention::compaction_target`]).
    pub fn compaction_target(&self, segment_size: u64) -> Option<u64> {
        let st = self.lock();
        retention::compaction_target(&st.engine, &self.journal, segment_size)
    }

    /// Journals images of jobs `(id, where its body was read from, the body)` so their
    /// bodies move to the head of the log; skips jobs that died or moved meanwhile.
    /// Returns how many were relocated.
    pub fn relocate(&self, jobs: Vec<(crate::protocol::JobId, BodyRef, bytes::Bytes)>) -> u64 {
        if jobs.is_empty() {
            return 0;
        }
        let mut st = self.lock();
        let mut moved = 0;
        for (id, from, body) in jobs {
            if st.engine.relocate(id, from, body) {
                moved += 1;
            }
        }
        st.settle(&self.timer);
        self.journal
            .jobs_compacted
            .fetch_add(moved, std::sync::atomic::Ordering::Relaxed);
        moved
    }

    /// Journals every tube pause again (compaction may remove the records of old ones).
    pub fn journal_pauses(&self) {
        let mut st = self.lock();
        st.engine.journal_pauses();
        st.settle(&self.timer);
    }

    /// Runs `f` with the engine locked and its log figures refreshed, and the journal (for
    /// the metrics exporter and the health checks).
    pub(super) fn inspect<R>(&self, f: impl FnOnce(&Engine, &Journal) -> R) -> R {
        let cluster = self.cluster_yaml();
        let mut st = self.lock();
        st.engine.set_log_stats(self.journal.stats(self.fsync));
        st.engine.set_log_full(self.journal.log_full());
        st.engine.set_out_of_files(self.journal.out_of_files());
        st.engine.set_cluster_yaml(cluster);
        f(&st.engine, &self.journal)
    }

    /// The server's histograms.
    pub fn timings(&self) -> &super::metrics::Timings {
        self.journal.timings()
    }

    /// Runs `f` with the engine locked, then settles like every other entry point: any
    /// change `f` made is journaled and any wake-up delivered (for counters, the free
    /// disk figure, tests).
    pub fn with_engine<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> R {
        let mut st = self.lock();
        let result = f(&mut st.engine);
        st.settle(&self.timer);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects what `f` logs, as text.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink(Arc::default());
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = sink.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn the_engines_notices_are_logged_one_line_each() {
        let tube = crate::protocol::TubeName::new(b"t").expect("tube name");
        let log = logged(|| {
            for notice in [
                Notice::Refusing {
                    limit: Refusal::MaxTubeJobs,
                    value: 3,
                    tube: Some(tube.clone()),
                    jobs: 7,
                    bytes: 70,
                },
                Notice::Accepting {
                    limit: Refusal::MaxTubeJobs,
                    tube: Some(tube.clone()),
                    refused: 5,
                },
                Notice::DiskLow {
                    free: Some(5),
                    floor: 10,
                },
            ] {
                log_notice(&notice);
            }
        });
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 3, "{log}");
        for field in [
            "refusing new work: limit reached",
            "max-tube-jobs",
            "value=3",
        ] {
            assert!(lines[0].contains(field), "{field}: {}", lines[0]);
        }
        for field in ["jobs=7", "bytes=70", "tube=\"t\""] {
            assert!(lines[0].contains(field), "{field}: {}", lines[0]);
        }
        for field in ["accepting new work again", "max-tube-jobs", "refused=5"] {
            assert!(lines[1].contains(field), "{field}: {}", lines[1]);
        }
        for field in [
            "free disk space below the floor",
            "min-free-disk",
            "floor=10",
        ] {
            assert!(lines[2].contains(field), "{field}: {}", lines[2]);
        }
    }
}
