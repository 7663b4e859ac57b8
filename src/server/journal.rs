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
//! Who writes: whoever finds the log free takes every queued record as one batch. With
//! more than one client that is the writer thread, woken by the first record queued, so it
//! syncs one batch while the runtime gathers the next. With one client (on the
//! single-threaded runtime `larder serve` uses by default) there is nothing to overlap:
//! records are queued without waking anyone, and the runtime writes, syncs and publishes
//! them itself when it runs out of work, just before it would block ([`runtime_idle`]).
//! That saves the two thread switches a put otherwise pays (a futex wake to the writer, an
//! eventfd wake back). A batch the runtime cannot write without waiting (a full disk, no
//! file descriptor) goes back to the front of the queue for the writer thread, which may
//! wait.
//!
//! Disk reclamation: [`super::retention`] names the oldest segment the log must keep
//! ([`Journal::set_keep_segment`]); the value travels with the queued records, and once
//! they are written the writer syncs and removes every segment before it.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
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
    /// The writer thread has been signalled about the queued records (or is writing a
    /// batch, and takes them when it loops). Records it was not told about are deferred:
    /// the runtime writes them itself when it goes idle (see [`runtime_idle`]).
    told: bool,
    /// A batch is being written, by the writer thread or by the idle runtime. Whoever
    /// writes takes the whole queue, so records stay in order and one fsync covers every
    /// record queued while the previous one ran.
    busy: bool,
    /// The runtime gave up on a batch it could not write without waiting (a full disk, no
    /// file descriptors) and put the rest back: the writer thread must write, sync and
    /// publish, even if the rest was empty (only the sync was left).
    handed_over: bool,
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
    /// Client connections open (kept by the listener); the runtime writes the records
    /// itself only while there is at most one.
    clients: AtomicUsize,
    /// Batches the idle runtime took (see [`runtime_idle`]).
    runtime_batches: AtomicU64,
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
                told: false,
                busy: false,
                handed_over: false,
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
            clients: AtomicUsize::new(0),
            runtime_batches: AtomicU64::new(0),
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
        let defer = self.defers();
        let mut q = self.lock();
        let lsn = Lsn(q.next_lsn);
        q.next_lsn += 1;
        let (pos, _) = q.layout.place(payload.len());
        self.backlog
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        q.records.push((kind, payload, pos));
        let tell = !defer && !q.told;
        q.told |= tell;
        // Signalled after unlocking: a writer woken while the lock is still held would
        // only block again on it (two more futex calls and a context switch per put).
        drop(q);
        if tell {
            self.wake.notify_one();
        }
        (lsn, pos)
    }

    /// Whether a record queued now may wait for the runtime to go idle and write it itself
    /// instead of waking the writer thread: only on the runtime thread that does so (see
    /// [`install_idle_commit`]), with at most one client, and while the log is not
    /// waiting for disk space or descriptors. With one client there is nothing for the
    /// runtime to do while the log syncs, so handing the batch to another thread and
    /// being woken back (two thread switches per put) only adds to each reply's wait;
    /// with more, the writer thread syncs one batch while the runtime gathers the next.
    fn defers(&self) -> bool {
        self.clients.load(Ordering::Relaxed) <= 1
            && !self.log_full()
            && !self.out_of_files()
            && IDLE_COMMIT.with(|c| c.borrow().as_ref().is_some_and(|c| c.is_for(self)))
    }

    /// Notes how many client connections are open.
    pub fn set_clients(&self, n: usize) {
        self.clients.store(n, Ordering::Relaxed);
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

thread_local! {
    /// Set on a thread whose current-thread runtime runs [`runtime_idle`] before it parks.
    static IDLE_HOOK: Cell<bool> = const { Cell::new(false) };
    /// The log the runtime on this thread writes while idle.
    static IDLE_COMMIT: RefCell<Option<Box<dyn IdleCommit>>> = const { RefCell::new(None) };
}

/// Makes the current-thread runtime that `builder` builds, and that this thread will run,
/// write the journal's deferred records itself each time it runs out of work, before it
/// blocks waiting for events (see the module docs). A lone client's put then costs one
/// write and one fdatasync on the runtime thread, as in beanstalkd, instead of two thread
/// switches around them.
pub fn install_idle_commit(builder: &mut tokio::runtime::Builder) {
    IDLE_HOOK.set(true);
    builder.on_thread_park(runtime_idle);
}

/// The runtime's park hook: writes, syncs and publishes the records queued without waking
/// the writer thread, if the log is free. Waking the tasks that wait for them schedules
/// them on this runtime, which then runs them instead of parking.
fn runtime_idle() {
    IDLE_COMMIT.with(|c| {
        if let Some(c) = c.borrow().as_ref() {
            c.commit();
        }
    });
}

/// The log as the idle runtime reaches it.
trait IdleCommit {
    fn is_for(&self, journal: &Journal) -> bool;
    fn commit(&self);
}

struct IdleWriter<S: Storage> {
    journal: Arc<Journal>,
    /// Weak: the log closes when the writer thread ends, whatever this thread keeps.
    writer: Weak<Mutex<Writer<S>>>,
}

impl<S: Storage> IdleCommit for IdleWriter<S> {
    fn is_for(&self, journal: &Journal) -> bool {
        std::ptr::eq(Arc::as_ptr(&self.journal), journal)
    }

    fn commit(&self) {
        let journal = &self.journal;
        let (batch, keep) = {
            let mut q = journal.lock();
            if q.told || q.busy || q.closed || q.records.is_empty() {
                return;
            }
            q.busy = true;
            (std::mem::take(&mut q.records), q.keep_segment)
        };
        journal.runtime_batches.fetch_add(1, Ordering::Relaxed);
        let left = match self.writer.upgrade() {
            Some(writer) => {
                let mut w = lock_writer(&writer);
                w.may_wait = false;
                let left = w.write(batch);
                w.may_wait = true;
                if left.is_none() {
                    w.keep_segment = keep;
                    w.reclaim();
                }
                w.publish_figures();
                left
            }
            // The writer thread has ended; a closed journal is never deferred to.
            None => Some(batch),
        };
        let mut q = journal.lock();
        q.busy = false;
        if let Some(left) = left {
            // Not writable without waiting: the writer thread finishes the batch, in
            // order, before anything queued after it.
            q.records.splice(0..0, left);
            q.handed_over = true;
            q.told = true;
        }
        // The writer thread waits while the log is busy: wake it if it has work now.
        let wake = q.handed_over || q.closed || (q.told && !q.records.is_empty());
        drop(q);
        if wake {
            journal.wake.notify_one();
        }
    }
}

fn lock_writer<S: Storage>(writer: &Mutex<Writer<S>>) -> MutexGuard<'_, Writer<S>> {
    writer.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the writer thread that owns `wal`, with `reserve` held (if it could be taken).
/// Under `--fsync always`, on a thread set up by [`install_idle_commit`], the runtime
/// writes the records it deferred itself when idle.
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
    let writer = Arc::new(Mutex::new(Writer {
        journal: journal.clone(),
        wal,
        policy,
        reserve,
        keep_segment: 0,
        last_retake: Instant::now(),
        last_sync: Instant::now(),
        unsynced: false,
        unsynced_records: 0,
        may_wait: true,
    }));
    if policy == FsyncPolicy::Always && IDLE_HOOK.get() {
        let idle = IdleWriter {
            journal: journal.clone(),
            writer: Arc::downgrade(&writer),
        };
        IDLE_COMMIT.set(Some(Box::new(idle)));
    }
    std::thread::Builder::new()
        .name("larder-wal".to_owned())
        .spawn(move || run(&journal, &writer))
}

/// The log and what is kept about it; held by whoever writes a batch: the writer thread,
/// or the runtime's thread when it commits while idle.
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
    /// Whether the writer may wait for disk space or descriptors; false on the runtime's
    /// thread, which hands what it cannot write to the writer thread instead.
    may_wait: bool,
}

/// How a write that needed disk space or a descriptor ended without them.
enum Halt {
    /// For good: the server is stopping, or the error is not one to wait out.
    Failed(crate::wal::WalError),
    /// Waiting is not allowed here; nothing was lost, try again on the writer thread.
    Later,
}

/// The writer thread: writes every batch the runtime did not write itself.
fn run<S: Storage>(journal: &Journal, writer: &Mutex<Writer<S>>) {
    lock_writer(writer).publish_figures();
    let mut was_busy = false;
    loop {
        let waits = lock_writer(writer).waits();
        let (batch, closed, keep, handed_over) = journal.next_batch(waits, was_busy);
        was_busy = true;
        let mut w = lock_writer(writer);
        let batch_was_empty = batch.is_empty();
        if !batch_was_empty || handed_over {
            // Waiting is allowed here, so nothing is left.
            let _ = w.write(batch);
        }
        // Every record queued before `keep` was set is now written (reclaim syncs).
        w.keep_segment = keep;
        if batch_was_empty && !handed_over && w.unsynced {
            // A periodic sync under --fsync every=MS.
            w.sync();
        }
        if closed {
            if w.unsynced {
                w.sync();
            }
            return;
        }
        w.reclaim();
        w.retake_reserve();
        w.publish_figures();
    }
}

/// How long the writer thread may sleep when no records come.
#[derive(Clone, Copy)]
enum Waits {
    /// Until records come.
    Forever,
    /// At most this long (a periodic sync, or retaking the disk reserve).
    Until(Duration),
}

impl Journal {
    /// Waits for records the writer thread is to write (or, with unsynced data under
    /// `every=MS`, or a full disk, for as long as `waits` says). Returns the records,
    /// whether the journal is closing, the segment to keep once those records are
    /// written, and whether the runtime handed over a batch it began. Marks the log busy
    /// until the next call, which says whether this one returned (`was_busy`).
    fn next_batch(&self, waits: Waits, was_busy: bool) -> (Vec<Queued>, bool, u64, bool) {
        let mut q = self.lock();
        if was_busy {
            q.busy = false;
        }
        let deadline = match waits {
            Waits::Forever => None,
            Waits::Until(left) => Some(Instant::now() + left),
        };
        loop {
            // While the runtime writes a batch, what was queued after it waits for it.
            if !q.busy && (!q.records.is_empty() || q.closed || q.handed_over) {
                q.busy = true;
                q.told = false;
                let handed_over = std::mem::take(&mut q.handed_over);
                return (
                    std::mem::take(&mut q.records),
                    q.closed,
                    q.keep_segment,
                    handed_over,
                );
            }
            match deadline {
                None => q = self.wake.wait(q).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() && !q.busy {
                        q.busy = true;
                        return (Vec::new(), false, q.keep_segment, false);
                    }
                    // Past the deadline with the runtime writing: look again shortly.
                    let left = left.max(Duration::from_millis(1));
                    q = self
                        .wake
                        .wait_timeout(q, left)
                        .map(|(q, _)| q)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
            }
        }
    }
}

impl<S: Storage> Writer<S> {
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

    /// How long the writer thread may wait for records: while the disk is full it wakes up
    /// now and then to try to take the reserve back, and under `every=MS` with unsynced
    /// data it syncs when the interval is up.
    fn waits(&self) -> Waits {
        if self.journal.log_full() {
            return Waits::Until(FULL_DISK_RETRY);
        }
        match (self.policy, self.unsynced) {
            (FsyncPolicy::Every(interval), true) => {
                Waits::Until(interval.saturating_sub(self.last_sync.elapsed()))
            }
            _ => Waits::Forever,
        }
    }

    /// Writes `batch` and syncs (or flushes) as the policy says, then publishes every
    /// record appended so far. Returns the records left unwritten, and whether the sync
    /// is still to do, when it may not wait for space or a descriptor: `Some` of the
    /// records from the first one that could not be written (empty if only the sync was
    /// left), for the writer thread to finish.
    fn write(&mut self, batch: Vec<Queued>) -> Option<Vec<Queued>> {
        let bytes: u64 = batch.iter().map(|(_, p, _)| p.len() as u64).sum();
        let mut records = batch.into_iter();
        let mut count = 0;
        let mut left = None;
        let mut failed = false;
        while let Some(record) = records.next() {
            let (kind, payload, promised) = &record;
            match self.until_space(|wal| wal.append_parts(*kind, &payload.head, &payload.body)) {
                Ok((_, pos)) if pos != *promised => {
                    // Jobs already point at the promised place: confirming would be a lie.
                    self.fail(format!(
                        "internal error: record placed at {pos:?}, promised at {promised:?}"
                    ));
                    failed = true;
                    break;
                }
                Ok(_) => count += 1,
                Err(Halt::Failed(e)) => {
                    self.fail(e);
                    failed = true;
                    break;
                }
                Err(Halt::Later) => {
                    let mut rest = vec![record];
                    rest.extend(records.by_ref());
                    left = Some(rest);
                    break;
                }
            }
        }
        self.journal
            .records_written
            .fetch_add(count, Ordering::Relaxed);
        self.unsynced_records += count;
        if !failed && left.is_none() {
            left = self.sync_or_flush();
        }
        // Written, or failed for good: either way no longer waiting.
        let waiting: u64 = left.iter().flatten().map(|(_, p, _)| p.len() as u64).sum();
        self.journal
            .backlog
            .fetch_sub(bytes - waiting, Ordering::Relaxed);
        self.journal.room.notify_waiters();
        left
    }

    /// Ends a write: syncs or flushes as the policy says and publishes every record
    /// appended. `Some(empty)` if the sync must be left to the writer thread.
    fn sync_or_flush(&mut self) -> Option<Vec<Queued>> {
        let sync_now = match self.policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::Never => false,
            FsyncPolicy::Every(interval) => self.last_sync.elapsed() >= interval,
        };
        if sync_now {
            let started = Instant::now();
            match self.until_space(|wal| wal.sync()) {
                Ok(_) => self.synced(started),
                Err(Halt::Failed(e)) => {
                    self.fail(e);
                    return None;
                }
                Err(Halt::Later) => return Some(Vec::new()),
            }
        } else {
            match self.until_space(|wal| wal.flush()) {
                Ok(()) => self.unsynced = !matches!(self.policy, FsyncPolicy::Never),
                Err(Halt::Failed(e)) => {
                    self.fail(e);
                    return None;
                }
                Err(Halt::Later) => return Some(Vec::new()),
            }
        }
        self.journal
            .watermark
            .publish(self.wal.next_lsn().0.saturating_sub(1));
        None
    }

    /// Runs `op` until it does not fail for want of space or of file descriptors. The
    /// first time the disk is full the reserve is released, which lets the write through;
    /// after that the writer waits for space (new jobs are refused meanwhile, so what
    /// waits is work already accepted). Out of descriptors (clients hold them all), it
    /// refuses new jobs and retries every [`NO_FILES_RETRY`] until the segment can be
    /// created. Gives up, returning the error, only when the server is shutting down;
    /// returns [`Halt::Later`] instead of waiting when waiting is not allowed.
    fn until_space<T>(
        &mut self,
        mut op: impl FnMut(&mut Wal<S>) -> Result<T, crate::wal::WalError>,
    ) -> Result<T, Halt> {
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
                        return Err(Halt::Failed(e));
                    }
                    if !self.may_wait {
                        return Err(Halt::Later);
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
                        return Err(Halt::Failed(e));
                    }
                    if !self.may_wait {
                        return Err(Halt::Later);
                    }
                    std::thread::sleep(FULL_DISK_RETRY);
                }
                other => return other.map_err(Halt::Failed),
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

    /// A current-thread runtime that writes the journal when idle, as `larder serve`
    /// builds it, with a log over `storage` and `clients` client connections.
    fn idle_committing(
        storage: &MemStorage,
        clients: usize,
    ) -> (tokio::runtime::Runtime, Arc<Journal>, JoinHandle<()>) {
        let mut builder = tokio::runtime::Builder::new_current_thread();
        install_idle_commit(&mut builder);
        let runtime = builder.enable_all().build().expect("runtime");
        let dir = std::path::Path::new("/log");
        let (wal, _, _) = Wal::open(storage.clone(), dir, WalOptions::default()).expect("open");
        let journal = Arc::new(Journal::new(wal.next_lsn().0, wal.layout()));
        journal.set_clients(clients);
        let reserve = DiskReserve::new(std::env::temp_dir().join("larder-unused-reserve"), 0);
        let writer =
            spawn_writer(journal.clone(), wal, FsyncPolicy::Always, reserve).expect("writer");
        (runtime, journal, writer)
    }

    /// The payloads in the log over `storage`, in order, after a power cut.
    fn durable_payloads(storage: &MemStorage) -> Vec<Vec<u8>> {
        storage.crash();
        let dir = std::path::Path::new("/log");
        let (_, records, _) =
            Wal::open(storage.clone(), dir, WalOptions::default()).expect("reopen");
        records.into_iter().map(|r| r.payload).collect()
    }

    #[test]
    fn with_one_client_the_idle_runtime_writes_and_syncs_the_records_itself() {
        let storage = MemStorage::new();
        let (runtime, journal, writer) = idle_committing(&storage, 1);
        runtime.block_on(async {
            for n in 1..=3u8 {
                let (first, _) = journal.push(2, vec![n; 10].into());
                let (second, _) = journal.push(2, vec![n; 20].into());
                assert_eq!(second.0, first.0 + 1);
                journal
                    .watermark()
                    .reached(second.0)
                    .await
                    .expect("durable");
            }
        });
        // One batch per wait, each taken by the runtime: the writer thread never ran one.
        assert_eq!(journal.runtime_batches.load(Ordering::Relaxed), 3);
        assert_eq!(journal.backlog(), 0);
        journal.close();
        writer.join().expect("writer thread");
        let want: Vec<Vec<u8>> = (1..=3u8).flat_map(|n| [vec![n; 10], vec![n; 20]]).collect();
        assert_eq!(durable_payloads(&storage), want);
    }

    #[test]
    fn with_two_clients_the_writer_thread_writes_the_records() {
        let storage = MemStorage::new();
        let (runtime, journal, writer) = idle_committing(&storage, 2);
        runtime.block_on(async {
            let (lsn, _) = journal.push(2, vec![7; 10].into());
            journal.watermark().reached(lsn.0).await.expect("durable");
        });
        assert_eq!(journal.runtime_batches.load(Ordering::Relaxed), 0);
        journal.close();
        writer.join().expect("writer thread");
        assert_eq!(durable_payloads(&storage), vec![vec![7; 10]]);
    }

    #[test]
    fn a_batch_the_runtime_cannot_sync_without_waiting_is_finished_by_the_writer_thread() {
        let storage = MemStorage::new();
        let (runtime, journal, writer) = idle_committing(&storage, 1);
        // The batch's write finds the disk full and there is no reserve to release: the
        // runtime may not wait for space, so it hands the batch over.
        storage.fail_write(1, crate::wal::storage::Fault::NoSpace);
        runtime.block_on(async {
            journal.push(2, vec![1; 10].into());
            let (lsn, _) = journal.push(2, vec![2; 10].into());
            journal.watermark().reached(lsn.0).await.expect("durable");
            // Later records still come after the handed-over ones.
            let (lsn, _) = journal.push(2, vec![3; 10].into());
            journal.watermark().reached(lsn.0).await.expect("durable");
        });
        assert!(journal.runtime_batches.load(Ordering::Relaxed) >= 1);
        assert!(!journal.watermark().is_poisoned());
        journal.close();
        writer.join().expect("writer thread");
        assert_eq!(
            durable_payloads(&storage),
            vec![vec![1; 10], vec![2; 10], vec![3; 10]]
        );
    }
}
