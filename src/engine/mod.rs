//! The broker state machine: tubes, jobs, reservations and waiting workers. No I/O.
//!
//! [`Engine::apply`] executes one command for one session at a time `now` passed in and
//! returns an [`Outcome`]. Side effects on other sessions (a blocked reserve being served,
//! a `DEADLINE_SOON`, a `TIMED_OUT`) are queued as wake-ups that the caller collects with
//! [`Engine::take_wakeups`]; durable state changes are queued as [`Change`]s
//! ([`Engine::take_changes`]). [`Engine::tick`] runs timers (delays, TTR expiry, reserve
//! timeouts, pauses) and [`Engine::next_deadline`] says when it next has work.
//!
//! A `put` passes one admission check against the [`Limits`] and the tube's limit settings
//! before it takes an id (`admission`); use is counted where jobs are created and removed.
//!
//! Invariants: every job is in exactly one of its tube's ready, delayed or buried sets, or in
//! its reserving session's set, matching its [`JobState`]; the global `delayed` and
//! `reserved` sets mirror the per-tube and per-session ones; a session with a `wait` is in
//! the `waiting` list of every tube it watches and in no other; `serveable` holds exactly
//! the unpaused tubes with both a waiter and a ready job, keyed by their most urgent job;
//! the [`Totals`] equal the sums over tubes and sessions they stand for.
//!
//! Cost: no command, timer or disconnect visits every tube, every session or every buried
//! job. Serving waiters takes the first entry of `serveable`; `stats` reads running
//! totals; a session's watch list is a hash-indexed list; the dead-letter commands walk
//! id-ordered indexes from the first id they want. The exceptions are the commands whose
//! reply lists them: `list-tubes` (bounded by `--max-tubes`) and `list-tubes-watched`
//! (bounded by `--max-watches-per-connection`).

mod admission;
mod body_refs;
mod change;
mod dead;
mod inspect;
mod job;
mod jobs;
mod notes;
mod notice;
mod queue;
mod ready;
pub mod record;
mod report;
mod restore;
mod retry;
mod session;
mod settings;
mod stats;
mod table;
#[cfg(test)]
mod tests;
mod time;
mod tube;
mod tubes;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use rustc_hash::FxHashMap as HashMap;

pub use admission::Limits;
pub use change::{Change, ImageState};
pub use dead::yaml_quoted;
pub use job::{
    BodyRef, Burial, Job, JobCounters, JobNotes, JobState, SmallTally, Tally, URGENT_THRESHOLD,
};
pub use notice::Notice;
pub use restore::{ReplayError, Replayed, RestoreError};
pub use retry::backoff_delay;
pub use session::SessionId;
pub use settings::{SettingDefaults, TubeSettings};
pub use stats::{CpuTimes, LogStats, ProcessInfo};
pub use time::{Timestamp, NANOS_PER_SEC};
pub use tube::TubeId;

use crate::protocol::{
    BuryReason, Command, CommandKind, JobId, ProtocolError, Reply, TubeName, TubeSetting,
};
use admission::Pressure;
use session::Session;
use table::JobTable;
use tube::Tubes;

/// A reserved job within this long of its TTR deadline makes `reserve` answer
/// `DEADLINE_SOON` (beanstalkd's safety margin).
pub const SAFETY_MARGIN: u64 = NANOS_PER_SEC;

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Largest job body accepted, in bytes (reported in `stats`).
    pub max_job_size: u32,
    /// Back-pressure limits.
    pub limits: Limits,
    /// Values of the tube settings for tubes that do not set their own.
    pub defaults: SettingDefaults,
    /// Seed for the retry jitter's pseudo-random numbers.
    pub seed: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_job_size: 65_535,
            limits: Limits::DEFAULT,
            defaults: SettingDefaults::default(),
            seed: 0x5eed,
        }
    }
}

/// What the calling session gets for a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send this reply.
    Reply(Reply),
    /// The session is blocked in reserve; its reply comes later as a wake-up.
    Blocked,
    /// Close the connection without a reply (`quit`).
    Close,
}

/// Server-wide counters for `stats`.
#[derive(Clone, Debug)]
pub struct Counters {
    /// `cmd-*` counts, indexed by [`CommandKind::index`].
    pub commands: [u64; CommandKind::COUNT],
    /// Reservations that ran past their TTR.
    pub timeouts: u64,
    /// Jobs ever created.
    pub total_jobs: u64,
    /// Sessions ever opened.
    pub total_connections: u64,
    /// Reservations that ended without a delete (attempts) since start.
    pub attempts: u64,
    /// Jobs sent back delayed by a retry policy since start.
    pub retries_delayed: u64,
    /// Jobs buried for running out of attempts since start.
    pub dead_lettered: u64,
}

// By hand: arrays longer than 32 have no derived `Default`.
impl Default for Counters {
    fn default() -> Self {
        Counters {
            commands: [0; CommandKind::COUNT],
            timeouts: 0,
            total_jobs: 0,
            total_connections: 0,
            attempts: 0,
            retries_delayed: 0,
            dead_lettered: 0,
        }
    }
}

/// Running totals over every tube and session, kept where the figures change, so `stats`
/// and the dead-letter commands cost the same however many tubes there are.
#[derive(Clone, Debug, Default)]
struct Totals {
    /// Ready jobs.
    ready: u64,
    /// Ready jobs with an urgent priority.
    urgent: u64,
    /// Buried jobs.
    buried: u64,
    /// Buried jobs that have a burial note, by [`BuryReason`] index, lowest id first.
    dead: [BTreeSet<JobId>; BuryReason::COUNT],
    /// Sessions that have put.
    producers: u64,
    /// Sessions that have reserved.
    workers: u64,
    /// Sessions blocked in reserve.
    waiting: u64,
}

/// How much live data one log segment holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentUse {
    /// Live jobs whose body is in the segment.
    pub jobs: u64,
    /// Their body bytes.
    pub bytes: u64,
}

/// The broker.
pub struct Engine {
    config: EngineConfig,
    process: ProcessInfo,
    log: LogStats,
    /// Cluster mode's fields for extended `stats`, rendered by the server.
    cluster_yaml: Option<String>,
    started_at: Timestamp,
    /// Every job by id (see [`table`]: densely packed, and never rehashed all at once,
    /// which with hundreds of thousands of jobs stalled every client for tens of ms).
    jobs: JobTable,
    /// Bodies of jobs whose put record has no place in a log yet (all of them when the
    /// engine runs without one). The server places each put as it journals it.
    mem_bodies: HashMap<JobId, Bytes>,
    /// Notes of the few jobs that have any (see `notes.rs`).
    notes: HashMap<JobId, JobNotes>,
    /// Live jobs and body bytes per log segment, for reclamation and compaction.
    segment_use: BTreeMap<u64, SegmentUse>,
    tubes: Tubes,
    default_tube: TubeId,
    sessions: HashMap<SessionId, Session>,
    next_job_id: u64,
    next_session_id: u64,
    next_bury_seq: u64,
    /// All delayed jobs, soonest first.
    delayed: BTreeSet<(Timestamp, JobId)>,
    /// All reserved jobs, by TTR deadline, with the session holding each.
    reserved: BTreeMap<(Timestamp, JobId), SessionId>,
    /// Blocked sessions with a timer (timeout or safety margin), soonest first.
    wakes: BTreeSet<(Timestamp, SessionId)>,
    /// Paused tubes by pause end.
    pauses: BTreeSet<(Timestamp, TubeId)>,
    /// Unpaused tubes with both a waiting session and a ready job, by their most urgent
    /// ready job (see `Engine::refresh_serveable`).
    serveable: BTreeSet<((u32, JobId), TubeId)>,
    /// Sequence number of the next wait (orders each tube's waiters).
    next_wait_seq: u64,
    totals: Totals,
    counters: Counters,
    /// Use measured against the limits, and refusals.
    pressure: Pressure,
    draining: bool,
    /// The server is shutting down (see [`Engine::set_stopping`]).
    stopping: bool,
    wakeups: Vec<(SessionId, Reply)>,
    changes: Vec<Change>,
    /// What to report, for the server to log.
    notices: Vec<Notice>,
    /// State of the jitter's pseudo-random numbers.
    rng: u64,
}

impl Engine {
    /// A fresh engine with only the `default` tube, started at `now`.
    pub fn new(config: EngineConfig, process: ProcessInfo, now: Timestamp) -> Engine {
        let mut tubes = Tubes::default();
        let default_tube = tubes.find_or_create(&TubeName::default_tube());
        Engine {
            rng: config.seed,
            config,
            process,
            log: LogStats::default(),
            cluster_yaml: None,
            started_at: now,
            jobs: JobTable::default(),
            mem_bodies: HashMap::default(),
            notes: HashMap::default(),
            segment_use: BTreeMap::new(),
            tubes,
            default_tube,
            sessions: HashMap::default(),
            next_job_id: 1,
            next_session_id: 1,
            next_bury_seq: 0,
            delayed: BTreeSet::new(),
            reserved: BTreeMap::new(),
            wakes: BTreeSet::new(),
            pauses: BTreeSet::new(),
            serveable: BTreeSet::new(),
            next_wait_seq: 0,
            totals: Totals::default(),
            counters: Counters::default(),
            pressure: Pressure::default(),
            draining: false,
            stopping: false,
            wakeups: Vec::new(),
            notices: Vec::new(),
            changes: Vec::new(),
        }
    }

    /// The id the next session gets.
    pub fn next_session_id(&self) -> u64 {
        self.next_session_id
    }

    /// Makes session ids start at `next` (an engine that replaces another keeps its ids
    /// apart from the old one's, whose connections may still be closing).
    pub fn continue_session_ids(&mut self, next: u64) {
        self.next_session_id = self.next_session_id.max(next);
    }

    /// Opens a session for a new connection, using and watching `default`.
    pub fn open_session(&mut self) -> SessionId {
        let id = SessionId(self.next_session_id);
        self.next_session_id += 1;
        self.counters.total_connections += 1;
        self.count_connection();
        let default = self.default_tube;
        let tube = self.tubes.get_mut(default);
        tube.using += 1;
        tube.watching += 1;
        self.sessions.insert(id, Session::new(default));
        id
    }

    /// Closes a session: its blocked reserve ends, its reserved jobs return to ready at once,
    /// and tubes it alone kept alive are dropped.
    pub fn close_session(&mut self, sid: SessionId, now: Timestamp) {
        if !self.sessions.contains_key(&sid) {
            return;
        }
        self.stop_wait(sid);
        let reserved: Vec<JobId> = self.sessions[&sid]
            .reserved
            .iter()
            .map(|&(_, id)| id)
            .collect();
        for id in reserved {
            self.detach(id);
            if self.stopping {
                // The server is stopping: like a crash, a restart makes the job ready
                // again without counting an attempt (promise 3), so record nothing.
                self.insert_ready(id);
            } else {
                self.end_attempt(id, retry::Ending::Abandon, now);
            }
        }
        let Some(session) = self.sessions.remove(&sid) else {
            return;
        };
        self.totals.producers -= u64::from(session.producer);
        self.totals.workers -= u64::from(session.worker);
        self.tubes.get_mut(session.using).using -= 1;
        self.drop_tube_if_unused(session.using);
        for t in session.watching.iter() {
            self.tubes.get_mut(t).watching -= 1;
            self.drop_tube_if_unused(t);
        }
    }

    /// The id the next job will get.
    pub fn next_job_id(&self) -> u64 {
        self.next_job_id
    }

    /// Marks the server as stopping: sessions closed from now on hand their reserved jobs
    /// back without counting an attempt or journaling anything, so a clean stop leaves the
    /// same state as a crash would (reserved jobs ready after the restart).
    pub fn set_stopping(&mut self) {
        self.stopping = true;
    }

    /// Marks `sid` as a producer (`current-producers`).
    fn mark_producer(&mut self, sid: SessionId) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            self.totals.producers += u64::from(!s.producer);
            s.producer = true;
        }
    }

    /// Marks `sid` as a worker (`current-workers`).
    fn mark_worker(&mut self, sid: SessionId) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            self.totals.workers += u64::from(!s.worker);
            s.worker = true;
        }
    }

    /// Drops tube `id` if nothing keeps it alive, forgetting its pause.
    fn drop_tube_if_unused(&mut self, id: TubeId) {
        if let Some(pause) = self.tubes.drop_if_unused(id).and_then(|t| t.pause) {
            self.pauses.remove(&(pause.until, id));
        }
    }

    /// Executes `cmd` for session `sid` at time `now`.
    pub fn apply(&mut self, sid: SessionId, cmd: Command, now: Timestamp) -> Outcome {
        if !self.sessions.contains_key(&sid) {
            return Outcome::Reply(Reply::InternalError);
        }
        if let Command::Auth(_) | Command::ClusterAdd { .. } | Command::ClusterRemove(_) = cmd {
            // `auth` reaches the engine only when the server has no auth file: as in
            // beanstalkd. The cluster commands reach it only on a single node.
            return Outcome::Reply(self.reject(sid, ProtocolError::UnknownCommand));
        }
        if cmd != Command::Quit {
            self.counters.commands[cmd.kind().index()] += 1;
        }
        let reply = match cmd {
            Command::Put {
                pri,
                delay,
                ttr,
                body,
            } => self.put(sid, pri, delay, ttr, body, now),
            Command::Reserve => return self.reserve(sid, None, now),
            // A timeout that is negative as a 32-bit signed number means no timeout.
            Command::ReserveWithTimeout(t) => {
                let timeout = (t <= i32::MAX as u32).then_some(t);
                return self.reserve(sid, timeout, now);
            }
            Command::ReserveJob(id) => self.reserve_job(sid, id, now),
            Command::Delete(id) => self.delete(sid, id),
            Command::Release { id, pri, delay } => self.release(sid, id, pri, delay, now),
            Command::Bury { id, pri } => self.bury(sid, id, pri, now),
            Command::Touch(id) => self.touch(sid, id, now),
            Command::Kick(bound) => self.kick(sid, bound, now),
            Command::KickJob(id) => self.kick_job(id, now),
            Command::Use(name) => self.use_tube(sid, &name),
            Command::Watch(name) => self.watch(sid, &name),
            Command::Ignore(name) => self.ignore(sid, &name),
            Command::PauseTube { tube, delay } => self.pause_tube(&tube, delay, now),
            Command::ListTubes => self.list_tubes(),
            Command::ListTubeUsed => self.list_tube_used(sid),
            Command::ListTubesWatched => self.list_tubes_watched(sid),
            Command::Peek(id) => self.peek(id),
            Command::PeekReady => self.peek_ready(sid),
            Command::PeekDelayed => self.peek_delayed(sid),
            Command::PeekBuried => self.peek_buried(sid),
            Command::StatsJob(id) => self.stats_job(id, self.extended(sid), now),
            Command::StatsTube(name) => self.stats_tube(&name, self.extended(sid), now),
            Command::ExtendedStats => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.extended_stats = true;
                }
                Reply::Extended
            }
            Command::Stats => self.stats(self.extended(sid), now),
            Command::Quit => return Outcome::Close,
            Command::ConfigTube {
                tube,
                setting,
                value,
            } => self.config_tube(&tube, setting, value),
            Command::Fail { id, message } => self.fail(sid, id, message, now),
            Command::ListDead { filter, limit } => self.list_dead(&filter, limit, now),
            Command::KickDead { filter, limit } => self.kick_dead(&filter, limit, now),
            Command::DeleteDead { filter, limit } => self.delete_dead(sid, &filter, limit, now),
            Command::Auth(_) | Command::ClusterAdd { .. } | Command::ClusterRemove(_) => {
                Reply::UnknownCommand
            }
        };
        Outcome::Reply(reply)
    }

    /// Accounts for input the decoder rejected and returns its reply. Rejections change no
    /// job or tube; like beanstalkd, a put whose numbers were valid still counts as a put
    /// (`cmd-put`), and one whose body lacked its `\r\n` consumes a job id.
    pub fn reject(&mut self, sid: SessionId, error: ProtocolError) -> Reply {
        match error {
            ProtocolError::JobTooBig => {
                self.counters.commands[CommandKind::Put.index()] += 1;
            }
            ProtocolError::CountedBadFormat(kind) => {
                self.counters.commands[kind.index()] += 1;
            }
            ProtocolError::ExpectedCrlf => {
                self.counters.commands[CommandKind::Put.index()] += 1;
                self.next_job_id += 1;
                self.mark_producer(sid);
            }
            ProtocolError::UnknownSetting => {
                self.counters.commands[CommandKind::ConfigTube.index()] += 1;
            }
            ProtocolError::BadFormat | ProtocolError::UnknownCommand => {}
        }
        error.reply()
    }

    /// Ends `sid`'s blocked reserve without a job. Returns whether it was blocked.
    pub fn cancel_wait(&mut self, sid: SessionId) -> bool {
        let waiting = self.sessions.get(&sid).is_some_and(|s| s.wait.is_some());
        self.stop_wait(sid);
        waiting
    }

    /// Sets cluster mode's `cluster-*` lines of extended `stats` (YAML `key: value` lines,
    /// each ending in a newline); `None` on a single node.
    pub fn set_cluster_yaml(&mut self, yaml: Option<String>) {
        self.cluster_yaml = yaml;
    }

    /// Updates the log figures `stats` reports.
    pub fn set_log_stats(&mut self, log: LogStats) {
        self.log = log;
    }

    /// Stops accepting new jobs: every later put gets `DRAINING`.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Whether the engine is draining.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// Replies for sessions other than the caller (blocked reserves served, timeouts),
    /// in the order they happened. Like the caller's own replies they may depend on the
    /// changes made so far: the server holds them until those are durable.
    pub fn take_wakeups(&mut self) -> Vec<(SessionId, Reply)> {
        std::mem::take(&mut self.wakeups)
    }

    /// What happened that is worth reporting (limits reached and left), in order; the
    /// engine does no logging itself.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// Whether wake-ups are waiting to be collected.
    pub fn has_wakeups(&self) -> bool {
        !self.wakeups.is_empty()
    }

    /// Changes made since the last call, in order: each must be written to the log (the
    /// server's broker journals them) before any reply that depends on it is sent.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// Drops the queued changes without returning them (for tests and tools that build an
    /// engine's state without a log).
    pub fn discard_changes(&mut self) {
        self.changes.clear();
    }

    /// The job with `id`, if it exists.
    pub fn job(&self, id: JobId) -> Option<&Job> {
        self.jobs.get(&id)
    }

    /// Ids of every job, in order.
    pub fn job_ids(&self) -> impl Iterator<Item = JobId> + '_ {
        self.jobs.keys().copied()
    }

    /// The name of live tube `id`.
    pub fn tube_name(&self, id: TubeId) -> &TubeName {
        &self.tubes.get(id).name
    }

    /// Number of jobs in any state.
    pub fn job_count(&self) -> usize {
        self.jobs.len()
    }

    /// Number of open sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The value of `setting` in force for tube `id`: its own, or the server default.
    pub fn setting(&self, id: TubeId, setting: TubeSetting) -> u64 {
        self.tubes
            .get(id)
            .settings
            .get(setting)
            .unwrap_or_else(|| self.config.defaults.get(setting))
    }

    /// One [`Change::ConfigTube`] for every setting a tube sets itself: replayed alone, they
    /// rebuild every tube's settings. The server re-logs them so that reclaiming old log
    /// segments never loses a setting.
    pub fn settings_in_force(&self) -> Vec<Change> {
        self.tubes
            .iter()
            .flat_map(|(_, t)| {
                t.settings
                    .explicit()
                    .map(|(setting, v)| Change::ConfigTube {
                        tube: t.name.clone(),
                        setting,
                        value: Some(v),
                    })
            })
            .collect()
    }

    /// The record that sets `setting` of tube `name` as it is now: the tube's own value,
    /// or `None` if it sets none (or does not exist).
    pub fn setting_in_force(&self, name: &TubeName, setting: TubeSetting) -> Option<Change> {
        let tube = self.tubes.get(self.tubes.find(name)?);
        tube.settings.get(setting).map(|v| Change::ConfigTube {
            tube: name.clone(),
            setting,
            value: Some(v),
        })
    }

    /// The record that pauses tube `name` as it is now, if it is paused.
    pub fn pause_in_force(&self, name: &TubeName) -> Option<Change> {
        let tube = self.tubes.get(self.tubes.find(name)?);
        tube.pause.map(|p| Change::PauseTube {
            tube: name.clone(),
            until: p.until,
        })
    }

    /// Names of live tubes in `list-tubes` order.
    pub fn tube_names(&self) -> Vec<TubeName> {
        self.tubes
            .listing_order()
            .iter()
            .map(|&t| self.tubes.get(t).name.clone())
            .collect()
    }

    /// The earliest time at which [`Engine::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        [
            self.delayed.first().map(|&(t, _)| t),
            self.reserved.first_key_value().map(|(&(t, _), _)| t),
            self.wakes.first().map(|&(t, _)| t),
            self.pauses.first().map(|&(t, _)| t),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs every timer due at `now`: delayed jobs become ready, pauses end, blocked reserves
    /// answer `DEADLINE_SOON` or `TIMED_OUT`, and reservations past their TTR return to ready.
    pub fn tick(&mut self, now: Timestamp) {
        while let Some(&(until, id)) = self.delayed.first() {
            if until > now {
                break;
            }
            self.detach(id);
            self.make_ready(id, now);
        }
        if self.pauses.first().is_some_and(|&(until, _)| until <= now) {
            self.process_queue(now);
        }
        while let Some(&(at, sid)) = self.wakes.first() {
            if at > now {
                break;
            }
            self.wake_waiter(sid, now);
        }
        while let Some((&(deadline, id), _)) = self.reserved.first_key_value() {
            if deadline > now {
                break;
            }
            self.detach(id);
            self.end_attempt(id, retry::Ending::Timeout, now);
        }
    }
}
