//! Start-up recovery: opens the write-ahead log in the data directory and replays it into
//! a fresh engine before the listener accepts anyone.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::engine::{Engine, Replayed, Timestamp};
use crate::wal::storage::FsStorage;
use crate::wal::{Wal, WalOptions};

/// The log directory inside a data directory.
pub fn wal_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("wal")
}

/// What recovery hands to the server.
pub struct Recovered {
    /// The opened log, positioned after its last valid record.
    pub wal: Wal<FsStorage>,
    /// Segment of the newest record holding the highest job id: a put, or a next-id
    /// record (0 if none).
    pub last_put_segment: u64,
    /// LSN the next record gets.
    pub next_lsn: u64,
}

/// Least time between progress log lines during a long replay.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Records replayed between looks at the clock and at the cancel flag.
const CHECK_EVERY: u64 = 4096;

/// Opens the log under `data_dir` and replays it into `engine` as of `now`.
///
/// A torn tail is cut with a warning; corruption anywhere else, or a record that does not
/// decode, stops start-up with an error naming where. Records about jobs whose put was
/// reclaimed with its segment (their job was deleted) are skipped.
///
/// Once `cancel` turns true the remaining records are skipped and `Ok(None)` is returned
/// (the server was told to stop while it recovered). A progress line is logged every
/// [`PROGRESS_EVERY`] of a long replay.
pub fn recover(
    engine: &mut Engine,
    data_dir: &Path,
    segment_size: u64,
    now: Timestamp,
    cancel: &AtomicBool,
) -> anyhow::Result<Option<Recovered>> {
    let dir = wal_dir(data_dir);
    let started = Instant::now();
    let mut last_progress = started;
    let mut cancelled = false;
    tracing::info!(dir = %dir.display(), "replaying the log");
    let mut last_put_segment = 0;
    let mut failure: Option<anyhow::Error> = None;
    let mut replayed = 0u64;
    let mut skipped = 0u64;
    let options = WalOptions {
        max_segment_size: segment_size,
        // A confirmed put then costs one fdatasync that flushes data only.
        preallocate: true,
        ..WalOptions::default()
    };
    let (wal, report) = Wal::open_with(FsStorage::new(), &dir, options, |r| {
        if failure.is_some() || cancelled {
            return;
        }
        match engine.replay(
            r.kind,
            r.payload,
            (r.lsn.0, r.pos.segment, r.pos.offset),
            now,
        ) {
            Ok(Replayed::Applied { keeps_next_id }) => {
                if keeps_next_id {
                    last_put_segment = r.pos.segment;
                }
            }
            Ok(Replayed::Skipped) => skipped += 1,
            Err(e) => {
                failure = Some(e.into());
                return;
            }
        }
        replayed += 1;
        if replayed % CHECK_EVERY == 0 {
            cancelled = cancel.load(Ordering::Relaxed);
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                tracing::info!(
                    records = replayed,
                    segment = r.pos.segment,
                    jobs = engine.job_count(),
                    "replaying the log: not serving until it is done"
                );
            }
        }
    })
    .with_context(|| format!("opening the log in {}", dir.display()))?;
    if let Some(e) = failure {
        return Err(e.context(format!("replaying the log in {}", dir.display())));
    }
    if cancelled || cancel.load(Ordering::Relaxed) {
        tracing::info!(
            records = replayed,
            "replay abandoned: the server is stopping"
        );
        return Ok(None);
    }
    engine.finish_restore();
    if report.truncated_bytes > 0 {
        tracing::warn!(
            bytes = report.truncated_bytes,
            "cut a torn record off the end of the log (a write was interrupted by a crash)"
        );
    }
    tracing::info!(
        records = report.records,
        segments = report.segments,
        jobs = engine.job_count(),
        skipped,
        millis = started.elapsed().as_millis() as u64,
        "log replayed"
    );
    let next_lsn = wal.next_lsn().0;
    Ok(Some(Recovered {
        wal,
        last_put_segment,
        next_lsn,
    }))
}
