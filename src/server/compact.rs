//! Compaction: keeps the log within a small multiple of the live data.
//!
//! Segments before the oldest one holding a live job's body are removed by the writer as
//! soon as the broker stops needing them. What compaction adds is for the case that rule
//! cannot help: a few long-lived jobs (buried, long-delayed) pinning an old segment, and
//! with it every later one. When the log is more than [`SLACK_FACTOR`] times the live
//! bytes plus [`SLACK_SEGMENTS`] segments, the compactor copies the oldest segment's live
//! jobs to the head of the log as [`Change::Image`](crate::engine::Change::Image) records,
//! however live that segment is (a mostly live one pins every later segment just the
//! same); the segment then holds nothing live and the writer removes it (after syncing
//! the copies). Over the slack, more than the live bytes are dead, so copying moves each
//! live job at most once before the dead segments come up and are freed.
//!
//! It never holds the engine lock for long: it finds the jobs in slices of
//! [`SCAN_SLICE`] index entries, reads their bodies without the lock, and relocates them
//! in batches of at most [`BATCH_BYTES`]. A job that changed meanwhile is re-checked
//! under the lock ([`crate::engine::Engine::relocate`]); if it moved or died it is skipped.
//!
//! A crash at any step is safe: an image is an ordinary record, replay lets the newest
//! image of a job win over its older records, and the old segment is only removed after
//! the images are durable.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::Broker;
use crate::engine::BodyRef;
use crate::protocol::{JobId, StoredBody};

/// Compact when the log exceeds this many times the live bytes ...
pub const SLACK_FACTOR: u64 = 2;
/// ... plus this many segments.
pub const SLACK_SEGMENTS: u64 = 2;
/// Index entries examined per lock hold while looking for a segment's jobs.
pub const SCAN_SLICE: usize = 16_384;
/// Body bytes read and relocated per lock hold.
pub const BATCH_BYTES: usize = 1 << 20;
/// How often the compactor checks whether there is work.
pub const CHECK_EVERY: Duration = Duration::from_millis(200);

/// Runs the compactor until `shutdown` turns true.
pub async fn run(broker: Arc<Broker>, segment_size: u64, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        while let Some(segment) = broker.compaction_target(segment_size) {
            if *shutdown.borrow() {
                return;
            }
            match compact_segment(&broker, segment).await {
                Ok(moved) => tracing::debug!(segment, moved, "compacted a log segment"),
                Err(e) => {
                    tracing::warn!(segment, error = %e, "compaction stopped");
                    break;
                }
            }
        }
    }
}

/// Copies every live job of `segment` forward; returns how many were moved.
async fn compact_segment(broker: &Broker, segment: u64) -> std::io::Result<u64> {
    let mut moved = 0;
    let mut from = Some(JobId(0));
    while let Some(start) = from {
        let (jobs, next) = broker.with_engine(|e| e.jobs_in_segment(segment, start, SCAN_SLICE));
        from = next;
        let mut batch: Vec<(JobId, BodyRef, Bytes)> = Vec::new();
        let mut batch_bytes = 0;
        for (id, at) in jobs {
            let mut buf = vec![0u8; at.len as usize];
            let body = StoredBody {
                segment: at.segment,
                offset: u64::from(at.offset),
                len: at.len,
                file: None,
            };
            broker.files().read(&body, &mut buf).await?;
            batch_bytes += buf.len();
            batch.push((id, at, buf.into()));
            if batch_bytes >= BATCH_BYTES {
                moved += broker.relocate(std::mem::take(&mut batch));
                batch_bytes = 0;
            }
        }
        moved += broker.relocate(batch);
        tokio::task::yield_now().await;
    }
    broker.journal_pauses();
    Ok(moved)
}
