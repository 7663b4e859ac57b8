//! Offline inspection of a log directory: [`verify`] checks every segment and reports the
//! first problem; [`dump`] lists every record's place and size. Neither modifies anything:
//! files are opened read-only, and a torn tail is reported, not cut.

use std::collections::VecDeque;
use std::path::Path;

use super::frame::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::segment::{Scanner, SegmentEnd};
use super::storage::Storage;
use super::{Lsn, RecordRef, WalError, WalOptions};

/// What [`verify`] found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Segments scanned (up to and including the one with the error, if any).
    pub segments: u64,
    /// Valid records found before the error, if any.
    pub records: u64,
    /// Bytes of valid headers and records found before the error, if any.
    pub bytes: u64,
    /// Bytes at the end of the last segment that opening the log would cut off as torn.
    pub torn_tail_bytes: u64,
    /// The first problem found; it names the segment file and, for a bad record, the
    /// byte offset. `None` if the log is sound.
    pub error: Option<WalError>,
}

impl VerifyReport {
    /// Whether the log can be opened without error.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }
}

/// Checks every segment in `dir` as opening the log would, without changing anything.
pub fn verify<S: Storage>(storage: &S, dir: &Path, options: &WalOptions) -> VerifyReport {
    verify_with(storage, dir, options, |_| {})
}

/// [`verify`], showing `visit` every valid record in log order (up to the first error).
pub fn verify_with<S: Storage>(
    storage: &S,
    dir: &Path,
    options: &WalOptions,
    mut visit: impl FnMut(RecordRef<'_>),
) -> VerifyReport {
    let mut report = VerifyReport::default();
    let mut scanner = match Scanner::new(storage, dir, options.max_payload) {
        Ok(scanner) => scanner,
        Err(err) => {
            report.error = Some(err);
            return report;
        }
    };
    let mut records = 0u64;
    let mut record_bytes = 0u64;
    let mut header_bytes = 0u64;
    let mut count = |r: RecordRef<'_>| {
        visit(r);
        records += 1;
        record_bytes += (RECORD_HEADER_LEN + r.payload.len()) as u64;
        Ok(())
    };
    while let Some(scan) = scanner.next_segment(storage, &mut count) {
        report.segments += 1;
        match scan {
            Ok(scan) => {
                if scan.header.is_some() {
                    header_bytes += SEGMENT_HEADER_LEN as u64;
                }
                report.torn_tail_bytes = match scan.end {
                    SegmentEnd::Clean => 0,
                    SegmentEnd::TornRecord { len, .. } => len,
                    SegmentEnd::TornHeader => scan.file_len,
                };
            }
            Err(err) => {
                report.error = Some(err);
                break;
            }
        }
    }
    report.records = records;
    report.bytes = header_bytes + record_bytes;
    report
}

/// One record as [`dump`] lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DumpEntry {
    /// The segment's sequence number.
    pub segment: u64,
    /// Offset of the record's frame (its length field) in the segment file.
    pub offset: u64,
    /// The record's LSN.
    pub lsn: Lsn,
    /// The record's kind byte.
    pub kind: u8,
    /// The payload's length.
    pub len: u32,
}

/// The records of a log directory in order, read one segment at a time; ends with the
/// first error, if any. A torn tail ends the listing without an error.
pub struct Dump<'s, S: Storage> {
    storage: &'s S,
    scanner: Option<Scanner>,
    pending: VecDeque<DumpEntry>,
    error: Option<WalError>,
}

/// Lists the records of the log in `dir` without changing anything.
pub fn dump<'s, S: Storage>(storage: &'s S, dir: &Path, options: &WalOptions) -> Dump<'s, S> {
    let (scanner, error) = match Scanner::new(storage, dir, options.max_payload) {
        Ok(scanner) => (Some(scanner), None),
        Err(err) => (None, Some(err)),
    };
    Dump {
        storage,
        scanner,
        pending: VecDeque::new(),
        error,
    }
}

impl<S: Storage> Iterator for Dump<'_, S> {
    type Item = Result<DumpEntry, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(entry) = self.pending.pop_front() {
                return Some(Ok(entry));
            }
            if let Some(err) = self.error.take() {
                self.scanner = None;
                return Some(Err(err));
            }
            let scanner = self.scanner.as_mut()?;
            let pending = &mut self.pending;
            let mut add = |r: RecordRef<'_>| {
                pending.push_back(DumpEntry {
                    segment: r.pos.segment,
                    offset: r.pos.offset - RECORD_HEADER_LEN as u64,
                    lsn: r.lsn,
                    kind: r.kind,
                    len: r.payload.len() as u32,
                });
                Ok(())
            };
            match scanner.next_segment(self.storage, &mut add) {
                None => self.scanner = None,
                Some(Ok(_)) => {}
                Some(Err(err)) => self.error = Some(err),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::wal::segment;
    use crate::wal::storage::{FsStorage, MemStorage, Storage};
    use crate::wal::{Record, RecordPos, Wal};

    /// The records of the golden segment `tests/data/wal-v1/00000000000000000001.wal`.
    fn golden_records() -> Vec<(u8, Vec<u8>)> {
        vec![
            (1, b"hello".to_vec()),
            (2, Vec::new()),
            (255, (0..=255u8).collect()),
            (3, b"larder".to_vec()),
        ]
    }

    fn golden_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/wal-v1")
    }

    /// Writes the golden records. The checked-in golden segment was made once by calling this
    /// with `FsStorage` on an empty directory; a new format version gets a new golden
    /// directory made the same way, and an existing one is never regenerated.
    fn write_log<S: Storage>(storage: S, dir: &Path) {
        let (mut wal, _, _) = Wal::open(storage, dir, WalOptions::default()).expect("open");
        for (kind, payload) in golden_records() {
            wal.append(kind, &payload).expect("append");
        }
        wal.sync().expect("sync");
    }

    #[test]
    fn the_golden_v1_segment_reads_back_exactly() {
        let dir = golden_dir();
        let entries: Vec<DumpEntry> = dump(&FsStorage::new(), &dir, &WalOptions::default())
            .collect::<Result<_, _>>()
            .expect("dump");
        let offsets = [40, 54, 63, 328];
        assert_eq!(entries.len(), 4);
        for (i, ((kind, payload), entry)) in golden_records().iter().zip(&entries).enumerate() {
            let expected = DumpEntry {
                segment: 1,
                offset: offsets[i],
                lsn: Lsn(i as u64 + 1),
                kind: *kind,
                len: payload.len() as u32,
            };
            assert_eq!(*entry, expected);
        }
        let report = verify(&FsStorage::new(), &dir, &WalOptions::default());
        assert!(report.is_ok(), "{:?}", report.error);
        assert_eq!((report.segments, report.records, report.bytes), (1, 4, 343));

        let name = segment::file_name(1);
        let bytes = std::fs::read(dir.join(&name)).expect("golden segment");
        let mem = MemStorage::new();
        let copy = Path::new("/golden");
        mem.set_file(&copy.join(&name), &bytes);
        let (_, records, report) = Wal::open(mem, copy, WalOptions::default()).expect("open");
        assert_eq!(report.truncated_bytes, 0);
        let expected: Vec<Record> = golden_records()
            .into_iter()
            .enumerate()
            .map(|(i, (kind, payload))| Record {
                lsn: Lsn(i as u64 + 1),
                kind,
                payload,
                pos: RecordPos {
                    segment: 1,
                    offset: offsets[i] + RECORD_HEADER_LEN as u64,
                },
            })
            .collect();
        assert_eq!(records, expected);

        let fresh = MemStorage::new();
        write_log(fresh.clone(), Path::new("/fresh"));
        assert_eq!(
            fresh.file(&Path::new("/fresh").join(&name)),
            Some(bytes),
            "this build writes version 1 differently from the golden segment"
        );
    }

    fn small_log() -> (MemStorage, PathBuf) {
        let s = MemStorage::new();
        let dir = PathBuf::from("/v");
        let opts = WalOptions {
            max_segment_size: 64,
            max_payload: 100,
            ..WalOptions::default()
        };
        let (mut wal, _, _) = Wal::open(s.clone(), &dir, opts).expect("open");
        for i in 0..5u8 {
            wal.append(i, &[i; 3]).expect("append");
        }
        wal.sync().expect("sync");
        (s, dir)
    }

    #[test]
    fn verify_and_dump_a_sound_log() {
        let (s, dir) = small_log();
        let opts = WalOptions::default();
        let report = verify(&s, &dir, &opts);
        assert!(report.is_ok(), "{:?}", report.error);
        assert_eq!((report.segments, report.records), (3, 5));
        assert_eq!(report.bytes, 3 * 40 + 5 * 12);
        let entries: Vec<DumpEntry> = dump(&s, &dir, &opts)
            .collect::<Result<_, _>>()
            .expect("dump");
        let places: Vec<(u64, u64, u64)> = entries
            .iter()
            .map(|e| (e.segment, e.offset, e.lsn.0))
            .collect();
        assert_eq!(
            places,
            [(1, 40, 1), (1, 52, 2), (2, 40, 3), (2, 52, 4), (3, 40, 5)]
        );
    }

    #[test]
    fn verify_and_dump_report_corruption_and_torn_tails_without_repairing() {
        let (s, dir) = small_log();
        let opts = WalOptions::default();
        let path = segment::path(&dir, 2);
        let good = s.file(&path).expect("segment 2");
        let mut bad = good.clone();
        bad[60] ^= 1;
        s.set_file(&path, &bad);
        let report = verify(&s, &dir, &opts);
        match &report.error {
            Some(WalError::Corrupt {
                path: p,
                offset: 52,
                ..
            }) => assert_eq!(p, &path),
            other => panic!("expected corruption at 52, got {other:?}"),
        }
        assert_eq!((report.segments, report.records), (2, 3));
        let listed: Vec<_> = dump(&s, &dir, &opts).collect();
        assert_eq!(listed.len(), 4);
        assert!(matches!(
            listed[3],
            Err(WalError::Corrupt { offset: 52, .. })
        ));

        s.set_file(&path, &good);
        let last = segment::path(&dir, 3);
        let whole = s.file(&last).expect("segment 3");
        s.set_file(&last, &whole[..whole.len() - 2]);
        let report = verify(&s, &dir, &opts);
        assert!(report.is_ok());
        assert_eq!((report.records, report.torn_tail_bytes), (4, 10));
        assert_eq!(
            s.file(&last).expect("segment 3").len(),
            whole.len() - 2,
            "verify cuts nothing"
        );
        assert_eq!(dump(&s, &dir, &opts).count(), 4);

        let mut header = s.file(&segment::path(&dir, 1)).expect("segment 1");
        header[8] = 9;
        s.set_file(&segment::path(&dir, 1), &header);
        let report = verify(&s, &dir, &opts);
        assert!(report
            .error
            .expect("bad version")
            .to_string()
            .contains("unsupported format version 9"));
    }
}
