//! Segment retention: which log segments must stay, and the records written again so
//! that old segments can go. The broker calls [`Retention`] for every record it journals
//! and once after each batch; nothing else decides what the writer may remove.
//!
//! A segment must stay while it holds
//! - the body of a live job (the engine knows the oldest such segment);
//! - the record of the highest job id ever given out (the newest put, or a `next-id`
//!   record), so ids are never reused after a restart;
//! - the record of a tube setting or pause in force;
//! - the body of a reply whose task has yet to open the segment (see [`super::body_reader`]).
//!
//! Every other record in an old segment is about a job whose body record is gone too: a
//! job's records all follow its put (or the copy compaction made of it). After each batch
//! [`Retention::after_batch`] tells the journal the oldest segment to keep, and the writer
//! removes the ones before it once the batch is durable (see [`super::journal`]).
//!
//! So that settings and the next id do not pin old segments for ever, they are written
//! again at the head of the log when they are all that keeps an old segment:
//!
//! - the next job id, in a record of its own, at most once per segment the writer moves on
//!   (no put for a while, long-lived jobs moved on by compaction);
//! - a `config-tube` or `pause-tube` record in force, which stays in force long after the
//!   jobs around it are gone. [`SettingRecords`] tracks where each was last written. The
//!   records in force may keep the newest [`SettingRecords::window`] segments: as many as
//!   they fill, and one more. Only records older than that (and older than what the jobs
//!   keep) are written again, at most [`RELOG_PER_BATCH`] per batch, so settings that fill
//!   several segments are not chased around the log: each is rewritten about once per
//!   window of new log written. Replaying a setting twice changes nothing, and the newest
//!   record wins.
//!
//! At start-up every setting and pause in force is written afresh
//! ([`Retention::log_settings_in_force`]): recovery does not track which records set them.
//!
//! Compaction ([`super::compact`]) asks [`compaction_target`] which segment to empty next
//! once the log has grown past its slack.
//!
//! Cost: noting a record and finding the oldest are `O(log n)` in the settings in force;
//! each batch looks at the oldest setting record once (again only if it rewrote some) and
//! rewrites at most [`RELOG_PER_BATCH`] records.

use std::collections::{BTreeSet, HashMap};

use super::journal::Journal;
use crate::engine::{record, Change, Engine};
use crate::protocol::{TubeName, TubeSetting};

/// Most setting records written again per batch of changes.
pub const RELOG_PER_BATCH: usize = 64;

/// Everything that decides which segments the log keeps.
#[derive(Debug)]
pub struct Retention {
    /// Segment of the newest record holding the highest job id (a put, or a next-id
    /// record).
    last_put_segment: u64,
    /// Segment of the record of each tube setting and pause in force.
    settings: SettingRecords,
}

impl Retention {
    /// Retention for a log whose newest put (or next-id record) is in `last_put_segment`.
    pub fn new(last_put_segment: u64) -> Retention {
        Retention {
            last_put_segment,
            settings: SettingRecords::default(),
        }
    }

    /// Notes that `change` was queued in a record of `size` bytes (framing included) that
    /// lands in `segment`.
    pub fn note(&mut self, change: &Change, segment: u64, size: u64) {
        if let Change::Put { .. } | Change::NextId { .. } = change {
            self.last_put_segment = segment;
        }
        self.settings.note(change, segment, size);
    }

    /// After a batch of changes is queued: writes again the setting records and the next
    /// job id if they are all that keeps an old segment, then tells `journal` which
    /// segments must stay: those, and every one from `opening` (the oldest segment a
    /// reply is still to open, see [`super::body_reader`]).
    pub fn after_batch(&mut self, engine: &Engine, journal: &Journal, opening: u64) {
        let live = engine.oldest_live_segment().unwrap_or(u64::MAX);
        let mut settings_oldest = self.settings.oldest();
        // Settings older than both what the jobs keep and the settings' own window.
        let window = self.settings.window(journal.segment_size());
        let due = live
            .min(self.last_put_segment)
            .min(journal.head_segment().saturating_sub(window));
        if settings_oldest < due {
            let changes = self.settings.relog(engine, due, RELOG_PER_BATCH);
            self.queue(journal, changes);
            settings_oldest = self.settings.oldest();
        }
        // The next id, if the newest put's segment is older than every live body, no
        // newer than every setting record, and the writer has moved on from it. A
        // setting in that same segment is not a reason to wait: it is written again only
        // once the newest put's segment is no longer kept for the next id, so waiting
        // for it would keep that segment, and every later one, for good.
        if self.last_put_segment < live
            && self.last_put_segment <= settings_oldest
            && self.last_put_segment < journal.current_segment()
        {
            let next = Change::NextId {
                next: engine.next_job_id(),
            };
            self.queue(journal, vec![next]);
        }
        journal.set_keep_segment(
            live.min(self.last_put_segment)
                .min(settings_oldest)
                .min(opening),
        );
    }

    /// Writes a record for every setting and every tube pause in force, and tells
    /// `journal` which segments must stay (at start-up: recovery does not track which
    /// records set them, and this gives each a known place).
    pub fn log_settings_in_force(&mut self, engine: &Engine, journal: &Journal) {
        let mut changes = engine.settings_in_force();
        changes.extend(engine.pauses_in_force());
        self.queue(journal, changes);
        let live = engine.oldest_live_segment().unwrap_or(u64::MAX);
        journal.set_keep_segment(live.min(self.last_put_segment).min(self.settings.oldest()));
    }

    /// Queues records of `changes` and notes where they land.
    fn queue(&mut self, journal: &Journal, changes: Vec<Change>) {
        for change in changes {
            let (kind, payload) = record::encode_payload(&change);
            let size = framed(payload.len());
            let (_, pos) = journal.push(kind, payload);
            self.note(&change, pos.segment, size);
        }
    }
}

/// The bytes a record with a payload of `payload_len` bytes takes in the log.
pub fn framed(payload_len: usize) -> u64 {
    (crate::wal::frame::RECORD_HEADER_LEN + payload_len) as u64
}

/// The segment compaction should empty next, if the log has grown past its slack (see
/// [`super::compact`]): the oldest segment, when it holds live jobs and is not the one
/// being written. Over the slack, the oldest segment is compacted however live it is: a
/// mostly live one still pins every later segment. Each pass frees a segment.
pub fn compaction_target(engine: &Engine, journal: &Journal, segment_size: u64) -> Option<u64> {
    use super::compact::{SLACK_FACTOR, SLACK_SEGMENTS};
    let (oldest, _) = engine.segment_use().next()?;
    if oldest != journal.oldest_segment() || oldest >= journal.current_segment() {
        return None;
    }
    let allowed = engine
        .live_bytes()
        .saturating_mul(SLACK_FACTOR)
        .saturating_add(SLACK_SEGMENTS.saturating_mul(segment_size));
    (journal.log_bytes() > allowed).then_some(oldest)
}

/// What a setting record is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Key {
    Config(TubeName, TubeSetting),
    Pause(TubeName),
}

/// The segment of the newest record of each setting and pause in force.
#[derive(Debug, Default)]
struct SettingRecords {
    /// Segment and framed size of each record.
    by_key: HashMap<Key, (u64, u64)>,
    by_segment: BTreeSet<(u64, Key)>,
    /// Framed bytes of all the records.
    bytes: u64,
}

impl SettingRecords {
    /// Notes that `change`, if it sets a tube setting or pauses a tube, was written to
    /// `segment` in a record of `size` bytes (framing included).
    pub fn note(&mut self, change: &Change, segment: u64, size: u64) {
        match change {
            Change::ConfigTube {
                tube,
                setting,
                value: Some(_),
            } => self.set(Key::Config(tube.clone(), *setting), Some((segment, size))),
            Change::ConfigTube {
                tube,
                setting,
                value: None,
            } => self.set(Key::Config(tube.clone(), *setting), None),
            Change::PauseTube { tube, .. } => {
                self.set(Key::Pause(tube.clone()), Some((segment, size)))
            }
            _ => {}
        }
    }

    fn set(&mut self, key: Key, place: Option<(u64, u64)>) {
        if let Some((old, size)) = self.by_key.remove(&key) {
            self.by_segment.remove(&(old, key.clone()));
            self.bytes -= size;
        }
        if let Some((segment, size)) = place {
            self.by_segment.insert((segment, key.clone()));
            self.by_key.insert(key, (segment, size));
            self.bytes += size;
        }
    }

    /// How many of the newest segments (of `segment_size` bytes) the records may keep:
    /// as many as they fill, and one more.
    pub fn window(&self, segment_size: u64) -> u64 {
        self.bytes / segment_size.max(1) + 2
    }

    /// The oldest segment holding a record in force (`u64::MAX` if none). A pause that has
    /// ended may still count until the next [`SettingRecords::relog`] drops it.
    pub fn oldest(&self) -> u64 {
        self.by_segment.first().map_or(u64::MAX, |(s, _)| *s)
    }

    /// How many records are tracked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_key.len()
    }

    /// The records, as `engine` has them now, of up to `max` of the oldest settings and
    /// pauses written before segment `below`; ones no longer in force (a pause that
    /// ended) are forgotten instead. The caller journals the returned changes and
    /// [`SettingRecords::note`]s where they land.
    pub fn relog(&mut self, engine: &Engine, below: u64, max: usize) -> Vec<Change> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some((segment, key)) = self.by_segment.first().cloned() else {
                break;
            };
            if segment >= below {
                break;
            }
            let now = match &key {
                Key::Config(tube, setting) => engine.setting_in_force(tube, *setting),
                Key::Pause(tube) => engine.pause_in_force(tube),
            };
            match now {
                // Moved out of the way until it is noted where it lands.
                Some(change) => {
                    let size = self.by_key.get(&key).map_or(0, |&(_, size)| size);
                    self.set(key, Some((u64::MAX, size)));
                    out.push(change);
                }
                None => self.set(key, None),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineConfig, ProcessInfo, Timestamp};
    use crate::protocol::Command;

    fn tube(name: &str) -> TubeName {
        TubeName::new(name.as_bytes()).expect("tube name")
    }

    fn config(name: &str, value: Option<u64>) -> Change {
        Change::ConfigTube {
            tube: tube(name),
            setting: TubeSetting::MaxAttempts,
            value,
        }
    }

    #[test]
    fn the_oldest_record_is_found_and_replaced_records_move_on() {
        let mut r = SettingRecords::default();
        assert_eq!(r.oldest(), u64::MAX);
        r.note(&config("a", Some(3)), 5, 100);
        r.note(&config("b", Some(3)), 7, 100);
        assert_eq!(r.oldest(), 5);
        assert_eq!(r.window(150), 3);
        r.note(&config("a", Some(4)), 9, 100);
        assert_eq!(r.oldest(), 7);
        r.note(&config("b", None), 10, 0);
        assert_eq!(r.oldest(), 9);
        assert_eq!(r.len(), 1);
        assert_eq!(r.window(150), 2);
    }

    #[test]
    fn relog_rewrites_at_most_max_of_the_oldest_and_drops_what_is_no_longer_in_force() {
        let now = Timestamp(1_000_000_000);
        let mut engine = Engine::new(EngineConfig::default(), ProcessInfo::fixed(), now);
        let sid = engine.open_session();
        let mut r = SettingRecords::default();
        for i in 0..10 {
            let name = format!("t{i}");
            let cmd = Command::ConfigTube {
                tube: tube(&name),
                setting: TubeSetting::MaxAttempts,
                value: Some(i + 1),
            };
            engine.apply(sid, cmd, now);
            r.note(&config(&name, Some(i + 1)), i, 40);
        }
        // A pause record for a tube that is not paused any more.
        r.note(
            &Change::PauseTube {
                tube: tube("gone"),
                until: now,
            },
            0,
            40,
        );
        engine.discard_changes();
        let first = r.relog(&engine, 6, 4);
        assert_eq!(first.len(), 4);
        // Oldest first: t0 (segment 0) and the ended pause come first; the pause is dropped.
        assert!(first.contains(&config("t0", Some(1))), "{first:?}");
        for c in &first {
            r.note(c, 20, 40);
        }
        let second = r.relog(&engine, 6, 64);
        // t4 and t5 remain below segment 6; t6.. are not due.
        assert_eq!(second, vec![config("t4", Some(5)), config("t5", Some(6))]);
        for c in &second {
            r.note(c, 20, 40);
        }
        assert_eq!(r.oldest(), 6);
        assert!(r.relog(&engine, 6, 64).is_empty());
        assert_eq!(r.len(), 10);
    }

    mod on_a_log {
        //! Retention with the broker journaling to a log on in-memory storage.

        use std::path::Path;
        use std::sync::Arc;
        use std::thread::JoinHandle;

        use super::*;
        use crate::config::FsyncPolicy;
        use crate::engine::{EngineConfig, ProcessInfo, Replayed};
        use crate::protocol::{Command, JobId};
        use crate::server::body_reader::SegmentFiles;
        use crate::server::disk_reserve::DiskReserve;
        use crate::server::held::Held;
        use crate::server::journal::spawn_writer;
        use crate::server::outbox::Replies;
        use crate::server::{Broker, Clock};
        use crate::wal::storage::MemStorage;
        use crate::wal::{Wal, WalOptions};

        const SEGMENT: u64 = 4096;

        /// A broker over the log in `storage` (replayed first), and its writer.
        struct Server {
            broker: Arc<Broker>,
            journal: Arc<Journal>,
            writer: JoinHandle<()>,
        }

        impl Server {
            fn start(storage: &MemStorage) -> Server {
                let clock = Clock::new();
                let now = clock.now();
                let mut engine = Engine::new(EngineConfig::default(), ProcessInfo::fixed(), now);
                let mut last_put_segment = 0;
                let options = WalOptions {
                    max_segment_size: SEGMENT,
                    ..WalOptions::default()
                };
                let (wal, _) = Wal::open_with(storage.clone(), Path::new("/log"), options, |r| {
                    let at = (r.lsn.0, r.pos.segment, r.pos.offset);
                    let replayed = engine.replay(r.kind, r.payload, at, now).expect("replay");
                    if let Replayed::Applied {
                        keeps_next_id: true,
                    } = replayed
                    {
                        last_put_segment = r.pos.segment;
                    }
                })
                .expect("open the log");
                engine.finish_restore();
                let journal = Arc::new(Journal::new(wal.next_lsn().0, wal.layout()));
                let reserve = DiskReserve::new(std::env::temp_dir().join("larder-no-reserve"), 0);
                let writer = spawn_writer(journal.clone(), wal, FsyncPolicy::Always, reserve)
                    .expect("writer");
                let files = Arc::new(SegmentFiles::new(std::env::temp_dir()));
                let broker = Arc::new(Broker::new(
                    engine,
                    clock,
                    journal.clone(),
                    files,
                    last_put_segment,
                    FsyncPolicy::Always,
                ));
                Server {
                    broker,
                    journal,
                    writer,
                }
            }

            /// Runs `commands` in one batch and waits until their changes are durable.
            async fn run(&self, commands: Vec<Command>) {
                let sid = self.broker.open_session().0;
                let mut items = commands.into_iter().map(Ok).collect();
                let mut out = Held::ready(Replies::default());
                let stop = self.broker.execute(sid, &mut items, &mut out, usize::MAX);
                assert!(stop.is_none(), "{stop:?}");
                out.release(&self.broker.watermark())
                    .await
                    .expect("durable");
                self.broker.close_session(sid);
            }

            /// Puts and deletes `n` jobs of 500 bytes, ten to a batch: about a segment
            /// per 7 jobs. Returns the last id.
            async fn churn(&self, n: u64) -> u64 {
                let mut last = 0;
                for _ in 0..n.div_ceil(10) {
                    let first = self.broker.with_engine(|e| e.next_job_id());
                    let mut commands = Vec::new();
                    for i in 0..10 {
                        commands.push(put());
                        commands.push(Command::Delete(JobId(first + i)));
                        last = first + i;
                    }
                    self.run(commands).await;
                }
                last
            }

            /// Waits until the writer has acted on everything queued so far, removals
            /// included: it removes segments after writing the batch that allowed it,
            /// so once two later batches are durable, that removal is done.
            async fn settle_writer(&self) {
                for _ in 0..2 {
                    self.run(vec![config("marker", Some(1))]).await;
                }
            }

            fn stop(self) {
                self.journal.close();
                self.writer.join().expect("writer thread");
            }
        }

        fn put() -> Command {
            Command::Put {
                pri: 0,
                delay: 0,
                ttr: 60,
                body: vec![b'x'; 500].into(),
            }
        }

        fn config(name: &str, value: Option<u64>) -> Command {
            Command::ConfigTube {
                tube: tube(name),
                setting: TubeSetting::MaxAttempts,
                value,
            }
        }

        fn attempts(engine: &Engine, name: &str) -> Option<Change> {
            engine.setting_in_force(&tube(name), TubeSetting::MaxAttempts)
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn old_segments_go_once_only_settings_or_the_next_id_pin_them() {
            let storage = MemStorage::new();
            let server = Server::start(&storage);
            // Segment 1: two settings (which keep their tubes), a pause, and a job that
            // stays.
            server
                .run(vec![
                    config("kept", Some(5)),
                    config("paused", Some(2)),
                    Command::PauseTube {
                        tube: tube("paused"),
                        delay: 3600,
                    },
                    put(),
                ])
                .await;
            server.churn(100).await;
            server.settle_writer().await;
            // The live job keeps segment 1, and so every later one.
            assert_eq!(server.journal.oldest_segment(), 1);
            assert!(server.journal.current_segment() >= 10);

            server.run(vec![Command::Delete(JobId(1))]).await;
            let last_put = server.churn(60).await;
            server.settle_writer().await;
            // Only the setting, the pause and the newest put pinned the old segments:
            // the setting and pause were written again, and the old segments went.
            let current = server.journal.current_segment();
            let oldest = server.journal.oldest_segment();
            assert!(oldest > 10, "oldest {oldest}, current {current}");
            assert!(current - oldest <= 3, "oldest {oldest}, current {current}");
            server.broker.with_engine(|e| {
                assert!(
                    e.pause_in_force(&tube("paused")).is_some(),
                    "before restart"
                );
            });

            server.stop();

            let server = Server::start(&storage);
            server.broker.with_engine(|e| {
                assert_eq!(e.next_job_id(), last_put + 1);
                assert_eq!(attempts(e, "kept"), Some(config_change("kept", 5)));
                assert!(e.pause_in_force(&tube("paused")).is_some());
                assert_eq!(e.job_count(), 0);
            });
            server.stop();
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_setting_beside_the_newest_put_does_not_keep_its_segment_for_good() {
            let storage = MemStorage::new();
            let server = Server::start(&storage);
            // The newest put and a setting in force share a segment.
            server.run(vec![config("kept", Some(5)), put()]).await;
            server.run(vec![Command::Delete(JobId(1))]).await;
            let put_segment = server.journal.current_segment();
            // No more puts; other records fill segments after it.
            for i in 0..600 {
                server.run(vec![config("churned", Some(i % 7 + 1))]).await;
            }
            server.settle_writer().await;
            let (oldest, current) = (
                server.journal.oldest_segment(),
                server.journal.current_segment(),
            );
            assert!(current >= put_segment + 4, "current {current}");
            assert!(
                oldest > put_segment,
                "segment {put_segment} is still kept: oldest {oldest}, current {current}"
            );
            server.stop();

            let server = Server::start(&storage);
            server.broker.with_engine(|e| {
                assert_eq!(e.next_job_id(), 2);
                assert_eq!(attempts(e, "kept"), Some(config_change("kept", 5)));
            });
            server.stop();
        }

        fn config_change(name: &str, value: u64) -> Change {
            Change::ConfigTube {
                tube: tube(name),
                setting: TubeSetting::MaxAttempts,
                value: Some(value),
            }
        }
    }
}
