//! Throughput of the write-ahead log in payload bytes per second: appending (a batch of
//! records, then one sync: the shape of a group commit) and replaying a whole log on open.
//! Each runs on real files in a temporary directory and on the in-memory storage
//! (`MemStorage`), which leaves out the file system and the disk.
//!
//! ```text
//! cargo bench --bench wal -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! On files, append figures include `fdatasync`, so they are the disk's as much as larder's.
//! `MemStorage` is a test storage that models power cuts: every sync copies the whole
//! file's bytes aside, and a removed file's bytes are kept. Its append figure is therefore
//! mostly that bookkeeping, not the log's own cost; it uses 1 MiB segments to keep the
//! copies small (with 64 MiB segments they dominate completely). Its replay figure, which
//! only reads, is the log's decoding and checksumming without a file system.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use larder::wal::storage::{FsStorage, MemStorage, Storage};
use larder::wal::{Wal, WalOptions};

/// Payload size of each record: about a job record with a 1 KiB body.
const PAYLOAD: usize = 1024;
/// Records appended between syncs.
const BATCH: usize = 256;
/// Records in the log replayed.
const REPLAY_RECORDS: usize = 64 * 1024;
/// An arbitrary record kind; the log does not interpret it.
const KIND: u8 = 1;

/// A directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("larder-bench-{name}-{}", std::process::id()));
        // A leftover from an interrupted run would be replayed and appended to; start empty.
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn options() -> WalOptions {
    WalOptions {
        max_segment_size: 64 << 20,
        ..WalOptions::default()
    }
}

/// [`options`] with 1 MiB segments, for appending to `MemStorage` (module docs).
fn small_segments() -> WalOptions {
    WalOptions {
        max_segment_size: 1 << 20,
        ..options()
    }
}

/// Times `batches` rounds of [`BATCH`] appends and one sync, then removes the segments
/// they filled so a long run does not fill the disk (or memory).
fn time_appends<S: Storage>(wal: &mut Wal<S>, payload: &[u8], batches: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..batches {
        for _ in 0..BATCH {
            wal.append(KIND, payload).expect("append");
        }
        wal.sync().expect("sync");
    }
    let took = start.elapsed();
    let active = wal.active_segment();
    wal.remove_segments_before(active)
        .expect("remove old segments");
    took
}

/// Fills a log in `dir` with [`REPLAY_RECORDS`] records.
fn fill<S: Storage>(storage: S, dir: &Path, payload: &[u8]) {
    let (mut wal, _, _) = Wal::open(storage, dir, options()).expect("open to fill");
    for _ in 0..REPLAY_RECORDS {
        wal.append(KIND, payload).expect("append");
    }
    wal.sync().expect("sync");
}

/// Opens the log in `dir`, replaying every record; returns the payload bytes seen.
fn replay<S: Storage>(storage: S, dir: &Path) -> u64 {
    let mut bytes = 0u64;
    let (_wal, report) = Wal::open_with(storage, dir, options(), |r| {
        bytes += r.payload.len() as u64;
    })
    .expect("replay");
    assert_eq!(report.records, REPLAY_RECORDS as u64);
    bytes
}

fn wal(c: &mut Criterion) {
    let payload = vec![0x5a_u8; PAYLOAD];

    let mut g = c.benchmark_group("wal append");
    g.throughput(Throughput::Bytes((BATCH * PAYLOAD) as u64));
    {
        let dir = TempDir::new("append");
        let (mut wal, _, _) = Wal::open(FsStorage::new(), dir.path(), options()).expect("open");
        g.bench_function("files, sync per 256 records", |b| {
            b.iter_custom(|batches| time_appends(&mut wal, &payload, batches))
        });
    }
    {
        let dir = Path::new("/bench/append");
        let (mut wal, _, _) = Wal::open(MemStorage::new(), dir, small_segments()).expect("open");
        g.bench_function("memory (1 MiB segments), sync per 256 records", |b| {
            b.iter_custom(|batches| time_appends(&mut wal, &payload, batches))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("wal replay");
    g.throughput(Throughput::Bytes((REPLAY_RECORDS * PAYLOAD) as u64));
    g.sample_size(10);
    {
        let dir = TempDir::new("replay");
        fill(FsStorage::new(), dir.path(), &payload);
        g.bench_function("files, 64 MiB", |b| {
            b.iter(|| replay(FsStorage::new(), dir.path()))
        });
    }
    {
        let storage = MemStorage::new();
        let dir = Path::new("/bench/replay");
        fill(storage.clone(), dir, &payload);
        g.bench_function("memory, 64 MiB", |b| {
            b.iter(|| replay(storage.clone(), dir))
        });
    }
    g.finish();
}

criterion_group!(benches, wal);
criterion_main!(benches);
