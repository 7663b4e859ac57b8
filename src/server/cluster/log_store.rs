//! openraft's log storage on larder's write-ahead log.
//!
//! Every raft write (entries, vote, committed id, truncate, purge) is a record queued on the
//! same [`Journal`] as the engine's records, so it shares the writer thread, its ordering and
//! its group commit: one fdatasync covers every append, vote and marker queued meanwhile.
//!
//! - `append` queues one raft-entry record per entry and hands openraft's flush callback to
//!   a task that fires it once the journal's durable watermark covers the last of them, in
//!   the order the appends came.
//! - `save_vote` waits for its record to be durable before it returns: a vote must never be
//!   forgotten by a crash.
//! - `save_committed`, `truncate` and `purge` do not wait. Losing a committed id only makes
//!   start-up apply less (openraft learns it again); a truncate or purge marker lost in a
//!   crash takes every later record with it, and nothing after it was acknowledged.
//!
//! [`RaftLogState`] is the log as its records say, built by replaying them at start-up
//! ([`RaftLogState::observe`]) and kept current by the store. It maps each live index to
//! where its record is; recent entries are also kept in memory (the tail cache) until they
//! are durable and have aged out, and older ones are read back from their segment.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, RaftLogReader, StorageIOError};
use tokio::sync::mpsc;

use super::record::{self, RaftRecord, RaftRecordError};
use super::{Entry, LarderRaft, LogId, StorageError, Vote};
use crate::server::body_reader::SegmentFiles;
use crate::server::journal::Journal;
use crate::wal::{Lsn, RecordPos};

/// Entries kept in memory after they are durable, newest first, so that replication to
/// followers that keep up reads no disk.
const TAIL_CACHE_ENTRIES: usize = 1024;

/// Where one entry's record is in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Located {
    log_id: LogId,
    lsn: Lsn,
    pos: RecordPos,
    len: u32,
}

/// The raft log as its records say: the vote, the committed id, what was purged and where
/// every live entry is.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RaftLogState {
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    entries: BTreeMap<u64, Located>,
    /// Segments of the newest vote, committed and purge records: the log keeps them.
    vote_segment: u64,
    committed_segment: u64,
    purge_segment: u64,
}

/// A raft record that cannot follow what the log already holds.
#[derive(Debug, thiserror::Error)]
pub enum RaftLogError {
    /// The record does not decode.
    #[error(transparent)]
    Record(#[from] RaftRecordError),
    /// An entry would leave a hole or overwrite one that was not truncated first.
    #[error("raft entry {index} cannot follow {after}: the log would have a hole or an overwrite")]
    OutOfOrder {
        /// The entry's index.
        index: u64,
        /// What the log held before it.
        after: String,
    },
}

impl RaftLogState {
    /// Takes in one record read from the log at `lsn`/`pos`. Returns `Ok(false)` for a
    /// record that is not a raft record (the engine's), which it leaves alone.
    pub fn observe(
        &mut self,
        kind: u8,
        payload: &[u8],
        lsn: Lsn,
        pos: RecordPos,
    ) -> Result<bool, RaftLogError> {
        if !record::is_raft_kind(kind) {
            return Ok(false);
        }
        match record::decode(kind, payload)? {
            RaftRecord::Entry(e) => self.append(Located {
                log_id: e.log_id,
                lsn,
                pos,
                len: payload.len() as u32,
            })?,
            RaftRecord::Vote(v) => {
                self.vote = Some(v);
                self.vote_segment = pos.segment;
            }
            RaftRecord::Committed(c) => {
                self.committed = c;
                self.committed_segment = pos.segment;
            }
            RaftRecord::Truncate(index) => self.truncate(index),
            RaftRecord::Purge(id) => {
                self.purge(id);
                self.purge_segment = pos.segment;
            }
        }
        Ok(true)
    }

    fn append(&mut self, at: Located) -> Result<(), RaftLogError> {
        let index = at.log_id.index;
        // After the last entry, or anywhere in an empty log: openraft purges past the end
        // of a log that is behind its state machine, and appends wherever it resumes.
        if let Some((&last, _)) = self.entries.last_key_value() {
            if index != last + 1 {
                return Err(RaftLogError::OutOfOrder {
                    index,
                    after: format!("entry {last}"),
                });
            }
        }
        self.entries.insert(index, at);
        Ok(())
    }

    fn truncate(&mut self, from: u64) {
        self.entries.split_off(&from);
    }

    fn purge(&mut self, upto: LogId) {
        self.entries = self.entries.split_off(&(upto.index + 1));
        if self.purged.is_none_or(|p| p < upto) {
            self.purged = Some(upto);
        }
    }

    /// The last entry's id, or the last purged one when no entry is left.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .last_key_value()
            .map(|(_, l)| l.log_id)
            .or(self.purged)
    }

    /// The saved vote.
    pub fn vote(&self) -> Option<Vote> {
        self.vote
    }

    /// The saved committed id.
    pub fn committed(&self) -> Option<LogId> {
        self.committed
    }

    /// The id of the last purged entry.
    pub fn purged(&self) -> Option<LogId> {
        self.purged
    }

    /// The oldest segment the raft records need: the first entry after the purged ones,
    /// the newest vote, committed and purge records. Before any purge every segment stays.
    pub fn keep_segment(&self) -> u64 {
        if self.purged.is_none() {
            return 0;
        }
        let first = self
            .entries
            .first_key_value()
            .map_or(u64::MAX, |(_, l)| l.pos.segment);
        first
            .min(self.vote_segment)
            .min(self.committed_segment)
            .min(self.purge_segment)
    }

    /// Live entries' indexes, in order.
    pub fn indexes(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries.keys().copied()
    }
}

/// What the store and its readers share.
struct Shared {
    journal: Arc<Journal>,
    files: SegmentFiles,
    inner: Mutex<Inner>,
}

struct Inner {
    log: RaftLogState,
    /// Recent entries by index (see [`TAIL_CACHE_ENTRIES`]).
    cache: BTreeMap<u64, Entry>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops cached entries beyond the cache's size that are durable (an entry not yet
    /// written cannot be read back from its segment).
    fn trim_cache(&self, inner: &mut Inner) {
        let durable = self.journal.watermark().durable();
        while inner.cache.len() > TAIL_CACHE_ENTRIES {
            let Some((&first, _)) = inner.cache.first_key_value() else {
                break;
            };
            let written = inner
                .log
                .entries
                .get(&first)
                .is_none_or(|l| l.lsn.0 <= durable);
            if !written {
                break;
            }
            inner.cache.remove(&first);
        }
    }

    fn read_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<Vec<Entry>, StorageError> {
        // Copy out what to read under the lock, read the disk without it.
        let wanted: Vec<Result<Entry, Located>> = {
            let inner = self.lock();
            inner
                .log
                .entries
                .range((start, end))
                .map(|(index, at)| inner.cache.get(index).cloned().ok_or(*at))
                .collect()
        };
        wanted
            .into_iter()
            .map(|w| w.or_else(|at| self.read_entry(at)))
            .collect()
    }

    fn read_entry(&self, at: Located) -> Result<Entry, StorageError> {
        let fail = |what: String| -> StorageError {
            StorageIOError::read_log_entry(at.log_id, AnyError::error(what)).into()
        };
        let file = self.files.get(at.pos.segment).map_err(|e| {
            fail(format!(
                "opening segment {} for raft entry: {e}",
                at.pos.segment
            ))
        })?;
        let mut buf = vec![0; at.len as usize];
        file.read_exact_at(&mut buf, at.pos.offset).map_err(|e| {
            fail(format!(
                "reading raft entry at segment {} offset {}: {e}",
                at.pos.segment, at.pos.offset
            ))
        })?;
        match record::decode(record::RAFT_ENTRY, &buf) {
            Ok(RaftRecord::Entry(e)) if e.log_id == at.log_id => Ok(e),
            Ok(other) => Err(fail(format!(
                "segment {} offset {} holds {other:?}, not entry {}",
                at.pos.segment, at.pos.offset, at.log_id
            ))),
            Err(e) => Err(fail(format!(
                "raft entry at segment {} offset {}: {e}",
                at.pos.segment, at.pos.offset
            ))),
        }
    }
}

/// openraft's log storage on the journal.
pub struct LogStore {
    shared: Arc<Shared>,
    flushes: mpsc::UnboundedSender<(Lsn, LogFlushed<LarderRaft>)>,
}

/// Reads entries for openraft's replication and apply tasks.
#[derive(Clone)]
pub struct LogReader {
    shared: Arc<Shared>,
}

impl LogReader {
    /// Entries `from..to`, each with its record's LSN and payload position (for rebuilding
    /// the state from the log).
    pub fn read_located(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Vec<crate::server::broker::Located>, String> {
        let entries = self
            .shared
            .read_range(Bound::Included(from), Bound::Excluded(to))
            .map_err(|e| e.to_string())?;
        entries
            .into_iter()
            .map(|e| {
                let at = self
                    .locate(e.log_id.index)
                    .ok_or_else(|| format!("entry {} is no longer in the log", e.log_id))?;
                Ok((e, at))
            })
            .collect()
    }

    /// The oldest segment the raft records need (see [`RaftLogState::keep_segment`]).
    pub fn keep_segment(&self) -> u64 {
        self.shared.lock().log.keep_segment()
    }

    /// The purged id and the first live entry's index.
    pub fn purged(&self) -> Option<LogId> {
        self.shared.lock().log.purged
    }

    /// Closes the reader's handles on segments before `seq` (removed).
    pub fn forget_before(&self, seq: u64) {
        self.shared.files.forget_before(seq);
    }

    /// The segment of the first entry after `index`, if it is in the log.
    pub fn segment_after(&self, index: u64) -> Option<u64> {
        let inner = self.shared.lock();
        inner
            .log
            .entries
            .range(index + 1..)
            .next()
            .map(|(_, l)| l.pos.segment)
    }

    /// Where entry `index`'s record is: its LSN and its payload's place.
    pub fn locate(&self, index: u64) -> Option<(Lsn, RecordPos)> {
        let inner = self.shared.lock();
        inner.log.entries.get(&index).map(|at| (at.lsn, at.pos))
    }
}

impl LogStore {
    /// A store over `journal`, whose log is in `wal_dir` and whose raft records replayed to
    /// `log`. Starts the task that reports appends flushed; call within a tokio runtime.
    pub fn open(journal: Arc<Journal>, wal_dir: PathBuf, log: RaftLogState) -> LogStore {
        let shared = Arc::new(Shared {
            journal,
            files: SegmentFiles::new(wal_dir),
            inner: Mutex::new(Inner {
                log,
                cache: BTreeMap::new(),
            }),
        });
        let (flushes, mut pending) = mpsc::unbounded_channel::<(Lsn, LogFlushed<LarderRaft>)>();
        let journal = shared.journal.clone();
        tokio::spawn(async move {
            // One at a time, in append order: openraft expects its flush reports in order.
            while let Some((lsn, callback)) = pending.recv().await {
                let outcome = journal.watermark().reached(lsn.0).await;
                callback.log_io_completed(outcome.map_err(|p| {
                    io::Error::new(
                        p.cause().kind(),
                        format!(
                            "the log failed before raft entries were durable: {}",
                            p.cause()
                        ),
                    )
                }));
            }
        });
        LogStore { shared, flushes }
    }

    /// The log's state now (for tests and status).
    pub fn state(&self) -> RaftLogState {
        self.shared.lock().log.clone()
    }

    fn push(&self, kind: u8, payload: Vec<u8>) -> (Lsn, RecordPos) {
        self.shared.journal.push(kind, payload.into())
    }
}

impl RaftLogReader<LarderRaft> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        // The store reads as its readers do.
        LogReader {
            shared: self.shared.clone(),
        }
        .try_get_log_entries(range)
        .await
    }
}

impl RaftLogReader<LarderRaft> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.shared
            .read_range(range.start_bound().cloned(), range.end_bound().cloned())
    }
}

impl RaftLogStorage<LarderRaft> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<LarderRaft>, StorageError> {
        let inner = self.shared.lock();
        Ok(LogState {
            last_purged_log_id: inner.log.purged,
            last_log_id: inner.log.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            shared: self.shared.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let (lsn, pos) = self.push(record::RAFT_VOTE, record::encode_vote(vote));
        self.shared
            .journal
            .watermark()
            .reached(lsn.0)
            .await
            .map_err(|p| {
                StorageIOError::write_vote(AnyError::error(format!(
                    "the log failed before the vote was durable: {}",
                    p.cause()
                )))
            })?;
        let mut inner = self.shared.lock();
        inner.log.vote = Some(*vote);
        inner.log.vote_segment = pos.segment;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.shared.lock().log.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let payload = record::encode_committed(committed.as_ref());
        let mut inner = self.shared.lock();
        let (_, pos) = self.push(record::RAFT_COMMITTED, payload);
        inner.log.committed = committed;
        inner.log.committed_segment = pos.segment;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.shared.lock().log.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<LarderRaft>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut last = None;
        {
            // Queued and indexed under one lock, so a reader never sees an index whose
            // record is not queued, and records go to the journal in index order.
            let mut inner = self.shared.lock();
            for entry in entries {
                // A proposal's records are queued as the bytes the entry holds: the writer
                // copies them into the log, not this task.
                let payload = record::entry_payload(&entry);
                let len = payload.len() as u32;
                let (lsn, pos) = self.shared.journal.push(record::RAFT_ENTRY, payload);
                let at = Located {
                    log_id: entry.log_id,
                    lsn,
                    pos,
                    len,
                };
                inner.log.append(at).map_err(|e| {
                    StorageError::from(StorageIOError::write_log_entry(
                        entry.log_id,
                        AnyError::error(e.to_string()),
                    ))
                })?;
                inner.cache.insert(entry.log_id.index, entry);
                last = Some(lsn);
            }
            let mut inner = inner;
            self.shared.trim_cache(&mut inner);
        }
        match last {
            Some(lsn) => {
                if let Err(mpsc::error::SendError((_, callback))) =
                    self.flushes.send((lsn, callback))
                {
                    callback.log_io_completed(Err(io::Error::other(
                        "the raft flush reporter has stopped",
                    )));
                }
            }
            None => callback.log_io_completed(Ok(())),
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = self.shared.lock();
        self.shared.journal.push(
            record::RAFT_TRUNCATE,
            record::encode_truncate(log_id.index).into(),
        );
        inner.log.truncate(log_id.index);
        inner.cache.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = self.shared.lock();
        let (_, pos) = self
            .shared
            .journal
            .push(record::RAFT_PURGE, record::encode_purge(&log_id).into());
        inner.log.purge(log_id);
        inner.log.purge_segment = pos.segment;
        // The vote and the committed id are written again at the head, so that the
        // segments before it can go once nothing else keeps them (see `keep_segment`).
        if let Some(vote) = inner.log.vote {
            let (_, pos) = self.push(record::RAFT_VOTE, record::encode_vote(&vote));
            inner.log.vote_segment = pos.segment;
        }
        let committed = inner.log.committed;
        let (_, pos) = self.push(
            record::RAFT_COMMITTED,
            record::encode_committed(committed.as_ref()),
        );
        inner.log.committed_segment = pos.segment;
        inner.cache = inner.cache.split_off(&(log_id.index + 1));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
