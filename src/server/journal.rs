//! The journal: the queue of encoded records between the engine and the write-ahead log,
//! and the writer thread that appends them, syncs, and publishes the durable LSN.
//!
//! Records are queued under the engine's lock, so their order in the log is the order in
//! which the engine changed state. A record is queued as a [`Payload`]: a job's body
//! travels in it as the bytes the job already holds, and the writer, off the lock, is
//! what copies it into the log. LSNs and positions are assigned at queueing time (a copy
//! of the log's [`Layout`] predicts where each record lands, and the writer checks it), so
//! a job knows where its body is before the record is written. The writer publishes the
//! last LSN each write (and, under `--fsync always`, each fdatasync) covers to the
//! [`Watermark`]; replies are held in a [`super::held::Held`] tagged with the journal's
//! tail when they were made, and released only once the watermark covers it. Concurrent
//! commands share one fdatasync.
//!
//! Disk reclamation: [`super::retention`] names the oldest segment the log must keep
//! ([`Journal::set_keep_segment`]); the value travels with the queued records, and once
//! they are written the writer syncs and removes every segment before it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::disk_reserve::DiskReserve;
use crate::config::FsyncPolicy;
use crate::engine::record::Payload;
use crate::wal::commit::Watermark;
use crate::wal::storage::Storage;
use crate::wal::{Layout, Lsn, RecordPos, Wal};

/// Records waiting for the writer.
struct Queue {
    records: Vec<Queued>,
    /// LSN the next queued record gets.
    next_lsn: u64,
    /// Where the next queued record will land in the log.
    layout: Layout,
    /// Oldest segment the log must keep once every queued record is written (see
    /// [`super::retention`]); 0 while unknown. It travels with the records: applying it before
    /// they are durable could remove a job's old body record before its new one (a
    /// compaction image) is on disk.
    keep_segment: u64,
    /// No more records will come; the writer drains, syncs and exits.
    closed: bool,
}

/// A record waiting for the writer, and where it was promised to land.
type Queued = (u8, Payload, RecordPos);

/// The hand-off between the engine and the writer thread.
pub struct Journal {
    queue: Mutex<Queue>,
    wake: Condvar,
    watermark: Watermark,
    /// Figures for `stats`, kept by the writer.
    records_written: AtomicU64,
    fsyncs: AtomicU64,
    oldest_segment: AtomicU64,
    current_segment: AtomicU64,
    /// Bytes in the log's segments (sealed ones counted at the segment size limit).
    log_bytes: AtomicU64,
    /// Segments removed since start.
    segments_removed: AtomicU64,
    /// Jobs copied forward by compaction since start.
    pub jobs_compacted: AtomicU64,
    /// The disk filled and the reserve is spent: new jobs must be refused.
    log_full: AtomicBool,
    /// The log could not open its next segment for want of file descriptors: new jobs
    /// must be refused until it has.
    out_of_files: AtomicBool,
    /// The server is stopping: the writer stops waiting for disk space.
    stopping: AtomicBool,
    /// Payload bytes (bodies included) queued or being written (see
    /// [`Journal::over_backlog`]).
    backlog: AtomicU64,
    /// `--max-log-backlog` (0: none).
    max_backlog: u64,
    /// Woken whenever the writer has taken a batch off the backlog.
    room: tokio::sync::Notify,
    /// Histograms: the writer fills the fsync ones, connections the others.
    timings: super::metrics::Timings,
}

impl Journal {
    /// A journal whose next record gets `next_lsn` and lands where `layout` says;
    /// everything before it is durable.
    pub fn new(next_lsn: u64, layout: Layout) -> Journal {
        Journal::with_backlog(next_lsn, layout, 0)
    }

    /// [`Journal::new`] with connections held back once `max_backlog` payload bytes wait
    /// for the writer (0: never).
    pub fn with_backlog(next_lsn: u64, layout: Layout, max_backlog: u64) -> Journal {
        Journal {
            queue: Mutex::new(Queue {
                records: Vec::new(),
                next_lsn,
                layout,
                keep_segment: 0,
                closed: false,
            }),
            wake: Condvar::new(),
            watermark: Watermark::new(next_lsn.saturating_sub(1)),
            records_written: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            oldest_segment: AtomicU64::new(0),
            current_segment: AtomicU64::new(0),
            log_bytes: AtomicU64::new(0),
            segments_removed: AtomicU64::new(0),
            jobs_compacted: AtomicU64::new(0),
            log_full: AtomicBool::new(false),
            out_of_files: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            backlog: AtomicU64::new(0),
            max_backlog,
            room: tokio::sync::Notify::new(),
            timings: super::metrics::Timings::new(),
        }
    }

    /// Whether more payload bytes wait for the writer than `--max-log-backlog` allows.
    pub fn over_backlog(&self) -> bool {
        self.max_backlog > 0 && self.backlog.load(Ordering::Relaxed) > self.max_backlog
    }

    /// Waits until the backlog is within `--max-log-backlog`. Connections call this
    /// before running commands, so a log slower than the clients holds them back instead
    /// of queueing without bound; each may add at most one batch of commands past it.
    pub async fn room(&self) {
        loop {
            // Registered before the check, so a wake-up between the two is not missed.
            let room = self.room.notified();
            if !self.over_backlog() {
                return;
            }
            room.await;
        }
    }

    /// Payload bytes waiting for the writer.
    pub fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }

    /// The server's histograms.
    pub fn timings(&self) -> &super::metrics::Timings {
        &self.timings
    }

    /// Whether the server has begun to stop.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Whether the log is out of file descriptors for its next segment.
    pub fn out_of_files(&self) -> bool {
        self.out_of_files.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a record; returns its LSN and where its payload will be in the log.
    pub fn push(&self, kind: u8, payload: Payload) -> (Lsn, RecordPos) {
        let mut q = self.lock();
        let lsn = Lsn(q.next_lsn);
        q.next_lsn += 1;
        let (pos, _) = q.layout.place(payload.len());
        self.backlog
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        q.records.push((kind, payload, pos));
        let first = q.records.len() == 1;
        // Signalled after unlocking: a writer woken while the lock is still held would
        // only block again on it (two more futex calls and a context switch per put).
        drop(q);
        if first {
            self.wake.notify_one();
        }
        (lsn, pos)
    }

    /// The segment the next queued record goes to (unless it starts a new one).
    pub fn head_segment(&self) -> u64 {
        self.lock().layout.segment()
    }

    /// The log's largest segment size.
    pub fn segment_size(&self) -> u64 {
        self.lock().layout.max_segment_size()
    }

    /// LSN of the last record queued (`Lsn(0)` if none ever was).
    pub fn tail(&self) -> Lsn {
        Lsn(self.lock().next_lsn - 1)
    }

    /// The durable watermark replies wait on.
    pub fn watermark(&self) -> &Watermark {
        &self.watermark
    }

    /// Sets the oldest segment the log must keep.
    pub fn set_keep_segment(&self, seq: u64) {
        self.lock().keep_segment = seq;
    }

    /// The oldest segment still in the log.
    pub fn oldest_segment(&self) -> u64 {
        self.oldest_segment.load(Ordering::Relaxed)
    }

    /// The segment being appended to.
    pub fn current_segment(&self) -> u64 {
        self.current_segment.load(Ordering::Relaxed)
    }

    /// Tells the writer the server is stopping: if it is waiting for disk space it gives up
    /// (failing the records it could not write, which were never confirmed), so that
    /// connections waiting for them can end.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether the disk is full: the reserve has been spent and not yet taken back.
    pub fn log_full(&self) -> bool {
        self.log_full.load(Ordering::Relaxed)
    }

    /// Bytes in the log's segments, about (sealed segments count as full).
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes.load(Ordering::Relaxed)
    }

    /// The log figures for `stats` under `policy`.
    pub fn stats(&self, policy: crate::config::FsyncPolicy) -> crate::engine::LogStats {
        let oldest = self.oldest_segment.load(Ordering::Relaxed);
        let current = self.current_segment.load(Ordering::Relaxed);
        crate::engine::LogStats {
            fsync: policy.to_string(),
            segments: if current == 0 {
                0
            } else {
                current - oldest + 1
            },
            oldest_segment: oldest,
            current_segment: current,
            records_written: self.records_written.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            bytes: self.log_bytes.load(Ordering::Relaxed),
            segments_removed: self.segments_removed.load(Ordering::Relaxed),
            jobs_compacted: self.jobs_compacted.load(Ordering::Relaxed),
        }
    }

    /// Tells the writer to drain, sync and stop.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }
}

/// How long the writer waits between attempts when the disk is full and there is no
/// reserve left to release, and between attempts to take the reserve back.
const FULL_DISK_RETRY: Duration = Duration::from_millis(250);

/// How long the writer waits before trying again to open a segment file when the process
/// is out of file descriptors.
const NO_FILES_RETRY: Duration = Duration::from_millis(20);

/// Starts the writer thread that owns `wal`, with `reserve` held (if it could be taken).
pub fn spawn_writer<S>(
    journal: Arc<Journal>,
    wal: Wal<S>,
    policy: FsyncPolicy,
    reserve: DiskReserve,
) -> std::io::Result<JoinHandle<()>>
where
    S: Storage + Send + 'static,
    S::File: Send,
{
    journal
        .log_full
        .store(!reserve.is_held(), Ordering::Relaxed);
    std::thread::Builder::new()
        .name("larder-wal".to_owned())
        .spawn(move || {
            Writer {
                journal,
                wal,
                policy,
                reserve,
                keep_segment: 0,
                last_retake: Instant::now(),
                last_sync: Instant::now(),
                unsynced: false,
                unsynced_records: 0,
            }
            .run()
        })
}

struct Writer<S: Storage> {
    journal: Arc<Journal>,
    wal: Wal<S>,
    policy: FsyncPolicy,
    reserve: DiskReserve,
    /// Oldest segment to keep, as of the records written so far.
    keep_segment: u64,
    /// When the writer last tried to take the reserve back.
    last_retake: Instant,
    last_sync: Instant,
    unsynced: bool,
    /// Records written since the last sync (for the records-per-fsync histogram).
    unsynced_records: u64,
}

impl<S: Storage> Writer<S> {
    fn run(mut self) {
        self.publish_figures();
        loop {
            let (batch, closed, keep) = self.next_batch();
            let batch_was_empty = batch.is_empty();
            if !batch.is_empty() {
                let bytes: u64 = batch.iter().map(|(_, p, _)| p.len() as u64).sum();
                self.write(batch);
                // Written, or failed for good: either way no longer waiting.
                self.journal.backlog.fetch_sub(bytes, Ordering::Relaxed);
                self.journal.room.notify_waiters();
            }
            // Every record queued before `keep` was set is now written (reclaim syncs).
            self.keep_segment = keep;
            if batch_was_empty && self.unsynced {
                // A periodic sync under --fsync every=MS.
                self.sync();
            }
            if closed {
                if self.unsynced {
                    self.sync();
                }
                return;
            }
            self.reclaim();
            self.retake_reserve();
            self.publish_figures();
        }
    }

    fn publish_figures(&self) {
        let j = &self.journal;
        j.oldest_segment
            .store(self.wal.oldest_segment(), Ordering::Relaxed);
        j.current_segment
            .store(self.wal.active_segment(), Ordering::Relaxed);
        let sealed = self.wal.active_segment() - self.wal.oldest_segment();
        let bytes = sealed * self.wal.options().max_segment_size + self.wal.layout().end();
        j.log_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Waits for records (or, with unsynced data under `every=MS`, for the sync interval).
    /// Returns the records, whether the journal is closing, and the segment to keep once
    /// those records are written.
    fn next_batch(&mut self) -> (Vec<Queued>, bool, u64) {
        let mut q = self.journal.lock();
        loop {
            if !q.records.is_empty() || q.closed {
                return (std::mem::take(&mut q.records), q.closed, q.keep_segment);
            }
            let full = self.journal.log_full();
            match (self.policy, self.unsynced) {
                _ if full => {
                    // Wake up now and then to try to take the reserve back.
                    let (guard, timeout) = self
                        .journal
                        .wake
                        .wait_timeout(q, FULL_DISK_RETRY)
                        .unwrap_or_else(|e| e.into_inner());
                    q = guard;
                    if timeout.timed_out() && q.records.is_empty() && !q.closed {
                        return (Vec::new(), false, q.keep_segment);
                    }
                }
                (FsyncPolicy::Every(interval), true) => {
                    let left = interval.saturating_sub(self.last_sync.elapsed());
                    if left.is_zero() {
                        return (Vec::new(), false, q.keep_segment);
                    }
                    q = self
                        .journal
                        .wake
                        .wait_timeout(q, left)
                        .map(|(q, _)| q)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
                _ => {
                    q = self.journal.wake.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }

    fn write(&mut self, batch: Vec<Queued>) {
        let mut last = 0;
        let count = batch.len() as u64;
        for (kind, payload, promised) in batch {
            match self.until_space(|wal| wal.append_parts(kind, &payload.head, &payload.body)) {
                Ok((_, pos)) if pos != promised => {
                    // Jobs already point at the promised place: confirming would be a lie.
                    return self.fail(format!(
                        "internal error: record placed at {pos:?}, promised at {promised:?}"
                    ));
                }
                Ok((lsn, _)) => last = lsn.0,
                Err(e) => return self.fail(e),
            }
        }
        let sync_now = match self.policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::Never => false,
            FsyncPolicy::Every(interval) => self.last_sync.elapsed() >= interval,
        };
        self.journal
            .records_written
            .fetch_add(count, Ordering::Relaxed);
        self.unsynced_records += count;
        if sync_now {
            let started = Instant::now();
            if let Err(e) = self.until_space(|wal| wal.sync()) {
                return self.fail(e);
            }
            self.synced(started);
        } else {
            if let Err(e) = self.until_space(|wal| wal.flush()) {
                return self.fail(e);
            }
            self.unsynced = !matches!(self.policy, FsyncPolicy::Never);
        }
        self.journal.watermark.publish(last);
    }

    /// Runs `op` until it does not fail for want of space or of file descriptors. The
    /// first time the disk is full the reserve is released, which lets the write through;
    /// after that the writer waits for space (new jobs are refused meanwhile, so what
    /// waits is work already accepted). Out of descriptors (clients hold them all), it
    /// refuses new jobs and retries every [`NO_FILES_RETRY`] until the segment can be
    /// created. Gives up, returning the error, only when the server is shutting down.
    fn until_space<T>(
        &mut self,
        mut op: impl FnMut(&mut Wal<S>) -> Result<T, crate::wal::WalError>,
    ) -> Result<T, crate::wal::WalError> {
        loop {
            let result = op(&mut self.wal);
            if !matches!(result, Err(crate::wal::WalError::NoFiles { .. }))
                && self.journal.out_of_files.swap(false, Ordering::Relaxed)
            {
                tracing::info!("the log has its file descriptors again: accepting new jobs");
            }
            match result {
                Err(e @ crate::wal::WalError::NoFiles { .. }) => {
                    if !self.journal.out_of_files.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            error = %e,
                            "out of file descriptors for the log: refusing new jobs (REFUSED open-files) until one is free"
                        );
                    }
                    if self.journal.lock().closed || self.journal.stopping.load(Ordering::Relaxed) {
                        return Err(e);
                    }
                    std::thread::sleep(NO_FILES_RETRY);
                }
                Err(e @ crate::wal::WalError::NoSpace { .. }) => {
                    if !self.journal.log_full.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "the disk is full: refusing new jobs until space returns");
                    }
                    self.last_retake = Instant::now();
                    if self.reserve.release() {
                        tracing::warn!("released the disk reserve so accepted work can be written");
                        continue;
                    }
                    if self.journal.lock().closed || self.journal.stopping.load(Ordering::Relaxed) {
                        return Err(e);
                    }
                    std::thread::sleep(FULL_DISK_RETRY);
                }
                other => return other,
            }
        }
    }

    /// While the disk is full, tries now and then to take the reserve back; once it has
    /// it, new jobs are accepted again.
    fn retake_reserve(&mut self) {
        if !self.journal.log_full() || self.last_retake.elapsed() < FULL_DISK_RETRY {
            return;
        }
        self.last_retake = Instant::now();
        if self.reserve.take().is_ok() {
            self.journal.log_full.store(false, Ordering::Relaxed);
            tracing::info!("disk space is back: accepting new jobs again");
        }
    }

    fn sync(&mut self) {
        let started = Instant::now();
        match self.wal.sync() {
            Ok(_) => self.synced(started),
            Err(e) => self.fail(e),
        }
    }

    /// Counts a sync that began at `started` and has just succeeded.
    fn synced(&mut self, started: Instant) {
        self.last_sync = Instant::now();
        let t = &self.journal.timings;
        t.fsync.observe_duration(self.last_sync - started);
        t.records_per_fsync.observe(self.unsynced_records);
        self.unsynced_records = 0;
        self.journal.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.unsynced = false;
    }

    fn fail(&mut self, e: impl std::fmt::Display) {
        // Only the first failure is news; later ones just report the poisoned log.
        if !self.journal.watermark.is_poisoned() {
            tracing::error!(error = %e, "write-ahead log failed; no further change can be confirmed");
            self.journal
                .watermark
                .fail(std::io::Error::other(e.to_string()));
        }
        self.unsynced = false;
    }

    /// Removes the segments before the oldest one the broker still needs. Syncs first
    /// whatever policy is in force: the records that made those segments unneeded (a
    /// delete, or compaction's copy of a job) must be durable before the old ones go.
    fn reclaim(&mut self) {
        let keep = self.keep_segment;
        let keep = keep.min(self.wal.active_segment());
        // After any failure (the log's own, or a refused or misplaced record) the records
        // that made old segments unneeded may never be written: remove nothing more.
        if keep <= self.wal.oldest_segment()
            || self.wal.is_poisoned()
            || self.journal.watermark.is_poisoned()
        {
            return;
        }
        // A no-op when everything written is already synced.
        if let Err(e) = self.wal.sync() {
            return self.fail(e);
        }
        self.unsynced = false;
        self.unsynced_records = 0;
        match self.wal.remove_segments_before(keep) {
            Ok(n) => {
                self.journal
                    .segments_removed
                    .fetch_add(n, Ordering::Relaxed);
                tracing::debug!(removed = n, "removed log segments");
            }
            Err(e) => self.fail(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;
    use crate::wal::storage::MemStorage;
    use crate::wal::WalOptions;

    #[tokio::test]
    async fn connections_wait_while_the_backlog_is_over_its_limit() {
        let storage = MemStorage::new();
        let dir = std::path::Path::new("/log");
        let (wal, _, _) = Wal::open(storage.clone(), dir, WalOptions::default()).expect("open");
        let journal = Arc::new(Journal::with_backlog(wal.next_lsn().0, wal.layout(), 1000));
        let first = journal.push(2, vec![1; 600].into());
        assert!(!journal.over_backlog());
        assert!(journal.room().now_or_never().is_some());
        // A body, queued apart from the encoded bytes, counts as much as they do.
        let body = bytes::Bytes::from(vec![3; 500]);
        let head = vec![2; 100];
        let second = journal.push(2, Payload { head, body });
        assert!(journal.over_backlog());
        assert_eq!(journal.backlog(), 1200);
        // No writer yet: the wait cannot end.
        let mut room = Box::pin(journal.room());
        assert!((&mut room).now_or_never().is_none());
        let reserve = DiskReserve::new(std::env::temp_dir().join("larder-unused-reserve"), 0);
        let writer =
            spawn_writer(journal.clone(), wal, FsyncPolicy::Always, reserve).expect("writer");
        tokio::time::timeout(std::time::Duration::from_secs(10), room)
            .await
            .expect("the writer never made room");
        assert_eq!(journal.backlog(), 0);
        journal.close();
        writer.join().expect("writer thread");
        // Each record is where it was promised, the body written after its head.
        let (_, records, _) = Wal::open(storage, dir, WalOptions::default()).expect("reopen");
        let got: Vec<_> = records.iter().map(|r| (r.lsn, r.pos, &r.payload)).collect();
        let (whole, joined) = (vec![1; 600], [vec![2; 100], vec![3; 500]].concat());
        let want = vec![(first.0, first.1, &whole), (second.0, second.1, &joined)];
        assert_eq!(got, want);
    }
}
