//! Start-up recovery: opens the write-ahead log in the data directory and replays it into
//! a fresh engine before the listener accepts anyone.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;

use super::journal::SegmentStarts;
use crate::engine::{record, Change, Engine, RestoreError, Timestamp};
use crate::protocol::JobId;
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
    /// LSN of each live job's put record.
    pub put_lsns: BTreeMap<JobId, u64>,
    /// LSN of the newest put record (0 if none).
    pub last_put_lsn: u64,
    /// First LSN of each segment.
    pub segments: SegmentStarts,
    /// LSN the next record gets.
    pub next_lsn: u64,
}

/// Records between progress log lines during a long replay.
const PROGRESS_EVERY: u64 = 500_000;

/// Opens the log under `data_dir` and replays it into `engine` as of `now`.
///
/// A torn tail is cut with a warning; corruption anywhere else, or a record that does not
/// decode, stops start-up with an error naming where. Records about jobs whose put was
/// reclaimed with its segment (their job was deleted) are skipped.
pub fn recover(
    engine: &mut Engine,
    data_dir: &Path,
    segment_size: u64,
    now: Timestamp,
) -> anyhow::Result<Recovered> {
    let dir = wal_dir(data_dir);
    let started = Instant::now();
    let mut put_lsns = BTreeMap::new();
    let mut last_put_lsn = 0;
    let mut segments = SegmentStarts::new();
    let mut failure: Option<anyhow::Error> = None;
    let mut replayed = 0u64;
    let mut skipped = 0u64;
    let options = WalOptions {
        max_segment_size: segment_size,
        ..WalOptions::default()
    };
    let (wal, report) = Wal::open_with(FsStorage, &dir, options, |r| {
        if failure.is_some() {
            return;
        }
        if segments.back().is_none_or(|&(seq, _)| seq != r.pos.segment) {
            segments.push_back((r.pos.segment, r.lsn.0));
        }
        let change = match record::decode(r.kind, &Bytes::copy_from_slice(r.payload)) {
            Ok(change) => change,
            Err(e) => {
                failure = Some(anyhow::anyhow!(
                    "record {} in segment {} at offset {}: {e}",
                    r.lsn.0,
                    r.pos.segment,
                    r.pos.offset
                ));
                return;
            }
        };
        match &change {
            Change::Put { id, .. } => {
                put_lsns.insert(*id, r.lsn.0);
                last_put_lsn = r.lsn.0;
            }
            Change::Delete { id } => {
                put_lsns.remove(id);
            }
            _ => {}
        }
        match engine.restore(change, now) {
            Ok(()) => {}
            Err(RestoreError::UnknownJob(_)) => skipped += 1,
            Err(e) => {
                failure = Some(anyhow::anyhow!("record {}: {e}", r.lsn.0));
                return;
            }
        }
        replayed += 1;
        if replayed % PROGRESS_EVERY == 0 {
            tracing::info!(records = replayed, "replaying the log");
        }
    })
    .with_context(|| format!("opening the log in {}", dir.display()))?;
    if let Some(e) = failure {
        return Err(e.context(format!("replaying the log in {}", dir.display())));
    }
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
    Ok(Recovered {
        wal,
        put_lsns,
        last_put_lsn,
        segments,
        next_lsn,
    })
}
