//! Opening a log: replaying every segment in order, applying the torn-tail rule to the
//! last one, and handing back a [`Wal`] ready to append after the last valid record.
//!
//! Recovery changes the directory only to cut a torn tail (truncate and sync), to remove
//! a last segment whose header was never finished (remove and sync the directory), and,
//! when the options ask for preallocation, to extend the active segment with zero fill
//! (a torn tail is truncated first, so it never survives inside the fill). Before
//! returning it syncs the active segment and the directory, so everything it reported is
//! durable even if the previous process died before its own sync.

use std::path::Path;

use super::log::{Active, Wal, WalOptions};
use super::segment::{self, SegmentEnd, SegmentScan};
use super::storage::{Storage, StorageFile};
use super::{frame::SEGMENT_HEADER_LEN, Lsn, Record, RecordRef, WalError};

/// What opening a log found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Segments in the log after recovery.
    pub segments: u64,
    /// Valid records replayed.
    pub records: u64,
    /// Bytes of a torn tail cut off (0 if the log ended cleanly, zero fill after the last
    /// record included; see [`frame::torn_len`](super::frame::torn_len)); worth a warning.
    pub truncated_bytes: u64,
    /// LSN of the last record (`Lsn(0)` if the log is empty).
    pub last_lsn: Lsn,
}

impl<S: Storage> Wal<S> {
    /// Opens (or creates) the log in `dir`, returning it with every recovered record in
    /// order and a report. See [`Wal::open_with`] to avoid holding all payloads at once.
    pub fn open(
        storage: S,
        dir: &Path,
        options: WalOptions,
    ) -> Result<(Wal<S>, Vec<Record>, OpenReport), WalError> {
        let mut records = Vec::new();
        let (wal, report) = Wal::open_with(storage, dir, options, |r| records.push(r.into()))?;
        Ok((wal, records, report))
    }

    /// Opens (or creates) the log in `dir`, calling `f` with each recovered record in LSN
    /// order. A record is passed to `f` only once its whole segment up to it is valid; if
    /// opening fails with corruption, `f` may have seen the records before it.
    pub fn open_with(
        storage: S,
        dir: &Path,
        options: WalOptions,
        mut f: impl FnMut(RecordRef<'_>),
    ) -> Result<(Wal<S>, OpenReport), WalError> {
        options.validate()?;
        storage
            .create_dir_all(dir)
            .map_err(WalError::io("create directory", dir))?;
        let mut scanner = segment::Scanner::new(&storage, dir, options.max_payload)?;
        let oldest_seq = scanner.seqs().first().copied().unwrap_or(1);
        let mut report = OpenReport::default();
        let mut previous: Option<SegmentScan> = None;
        let mut last: Option<SegmentScan> = None;
        while let Some(scan) = scanner.next_segment(&storage, &mut |r| {
            f(r);
            Ok(())
        }) {
            let scan = scan?;
            report.records += scan.records;
            previous = last.replace(scan);
        }
        let next_lsn = scanner.next_lsn().unwrap_or(Lsn(1));
        let active = match last {
            None => new_log(&storage, dir, &options)?,
            Some(scan) => match scan.end {
                SegmentEnd::Clean => reopen(&storage, dir, &scan, scan.valid_len)?,
                SegmentEnd::TornRecord { offset, len } => {
                    report.truncated_bytes = len;
                    let mut active = reopen(&storage, dir, &scan, offset)?;
                    let path = segment::path(dir, scan.seq);
                    active
                        .file
                        .set_len(offset)
                        .map_err(WalError::io("truncate", &path))?;
                    active.file_len = offset;
                    active
                        .file
                        .sync_data()
                        .map_err(WalError::io("sync", &path))?;
                    active
                }
                SegmentEnd::TornHeader => {
                    report.truncated_bytes = scan.file_len;
                    let path = segment::path(dir, scan.seq);
                    storage
                        .remove(&path)
                        .map_err(WalError::io("remove", &path))?;
                    storage.sync_dir(dir).map_err(WalError::io("sync", dir))?;
                    match previous {
                        Some(prev) => reopen(&storage, dir, &prev, prev.valid_len)?,
                        None if scan.seq == 1 => new_log(&storage, dir, &options)?,
                        None => return Err(WalError::TornOnlySegment { path }),
                    }
                }
            },
        };
        let mut active = active;
        let path = segment::path(dir, active.seq);
        if options.preallocate && active.file_len < options.max_segment_size {
            active.file_len = segment::preallocate(
                &mut active.file,
                &path,
                active.written_len,
                options.max_segment_size,
            )?;
        }
        active
            .file
            .sync_data()
            .map_err(WalError::io("sync", &path))?;
        storage.sync_dir(dir).map_err(WalError::io("sync", dir))?;
        report.segments = active.seq - oldest_seq.min(active.seq) + 1;
        report.last_lsn = Lsn(next_lsn.0 - 1);
        let wal = Wal::from_parts(
            storage,
            dir.to_path_buf(),
            options,
            oldest_seq,
            active,
            next_lsn,
        );
        Ok((wal, report))
    }
}

fn new_log<S: Storage>(
    storage: &S,
    dir: &Path,
    options: &WalOptions,
) -> Result<Active<S::File>, WalError> {
    let (file, file_len) = segment::create(storage, dir, 1, Lsn(1), options.preallocation())?;
    Ok(Active {
        seq: 1,
        file,
        written_len: SEGMENT_HEADER_LEN as u64,
        file_len,
        records: 0,
    })
}

fn reopen<S: Storage>(
    storage: &S,
    dir: &Path,
    scan: &SegmentScan,
    len: u64,
) -> Result<Active<S::File>, WalError> {
    let path = segment::path(dir, scan.seq);
    let file = storage
        .open(&path, true)
        .map_err(WalError::io("open", &path))?;
    Ok(Active {
        seq: scan.seq,
        file,
        written_len: len,
        file_len: scan.file_len,
        records: scan.records,
    })
}
