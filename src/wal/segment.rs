//! Segment files: their names, and reading one segment's records.
//!
//! This is the only place that knows how a segment's file name is formed. Scanning takes a
//! segment's bytes already in memory and applies the torn-tail rule of the module docs; it
//! never panics on any input. [`Scanner`] walks a directory's segments in order and checks
//! that they follow each other (no missing sequence number, first LSNs continuing).

use std::path::{Path, PathBuf};

use super::frame::{self, BadRecord, SegmentHeader, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::storage::{self, Storage, StorageFile};
use super::{Lsn, RecordPos, RecordRef, WalError};

const SUFFIX: &str = ".wal";

/// The file name of segment `seq`: 20 zero-padded digits and `.wal`.
pub fn file_name(seq: u64) -> String {
    format!("{seq:020}{SUFFIX}")
}

/// The path of segment `seq` in `dir`.
pub fn path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(file_name(seq))
}

/// The sequence number a segment file name stands for, or `None` if it is not one.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&seq| seq > 0)
}

/// The sequence numbers of the segments in `dir`, in increasing order.
pub fn list<S: Storage>(storage: &S, dir: &Path) -> Result<Vec<u64>, WalError> {
    let names = storage.list(dir).map_err(WalError::io("list", dir))?;
    let mut seqs: Vec<u64> = names.iter().filter_map(|n| parse_file_name(n)).collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// Creates segment `seq` in `dir` with `first_lsn` in its header, and makes it durable:
/// writes the header, preallocates the file to `preallocate` bytes of zero fill if given
/// (see [`preallocate`]), syncs it, then syncs the directory. Returns the file and its
/// length.
pub fn create<S: Storage>(
    storage: &S,
    dir: &Path,
    seq: u64,
    first_lsn: Lsn,
    preallocate: Option<u64>,
) -> Result<(S::File, u64), WalError> {
    let path = path(dir, seq);
    let mut file = storage
        .create(&path)
        .map_err(WalError::io("create", &path))?;
    let header = SegmentHeader { seq, first_lsn };
    file.write_at(0, &header.encode())
        .map_err(WalError::io("write header to", &path))?;
    let mut len = SEGMENT_HEADER_LEN as u64;
    if let Some(target) = preallocate {
        len = self::preallocate(&mut file, &path, len, target)?;
    }
    file.sync_data().map_err(WalError::io("sync", &path))?;
    storage.sync_dir(dir).map_err(WalError::io("sync", dir))?;
    Ok((file, len))
}

/// Extends a segment whose records end at `written` to `target` bytes of zero fill, so
/// that writing records into it does not change the file's length and an fdatasync after
/// a write has only the data to flush. The caller syncs. Returns the file's new length.
///
/// Preallocation is an optimisation: when the disk has no room for it, the file is cut
/// back to `written` and left to grow as records are written (the log then meets a full
/// disk when it writes, as it would without preallocating).
pub fn preallocate<F: StorageFile>(
    file: &mut F,
    path: &Path,
    written: u64,
    target: u64,
) -> Result<u64, WalError> {
    match file.allocate(target) {
        Ok(()) => Ok(target.max(written)),
        Err(e) if WalError::is_no_space(&e) => {
            file.set_len(written)
                .map_err(WalError::io("truncate", path))?;
            Ok(written)
        }
        Err(e) => Err(WalError::io("preallocate", path)(e)),
    }
}

/// How a scanned segment ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentEnd {
    /// At a record boundary, at the end of the file or (last segment only) followed by
    /// nothing but zero fill (preallocated and never written).
    Clean,
    /// A torn record starts at `offset` (last segment only); the file is cut there. `len`
    /// counts the torn bytes ([`frame::torn_len`]).
    TornRecord {
        /// Where the torn record starts: where the next record will be written.
        offset: u64,
        /// Bytes from `offset` to the last non-zero byte of the file.
        len: u64,
    },
    /// The header is unfinished (last segment only): the file was being created.
    TornHeader,
}

/// The result of scanning one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    /// The segment's sequence number.
    pub seq: u64,
    /// The header, unless it was torn.
    pub header: Option<SegmentHeader>,
    /// The file's length.
    pub file_len: u64,
    /// Length of the valid part: header and whole records. Anything after it in a
    /// segment that ends [`SegmentEnd::Clean`] is zero fill.
    pub valid_len: u64,
    /// Valid records found.
    pub records: u64,
    /// How the segment ends.
    pub end: SegmentEnd,
}

/// Scans the bytes of segment `seq` (read from `path`), calling `f` for each valid record.
/// Only if `last` may the segment end in zero fill or a torn tail; otherwise any invalid
/// record is corruption. Zero fill is told from records because no record frame is all
/// zeros: a frame's CRC covers its kind byte, and the CRC32C of a zero kind byte followed
/// by an empty payload is not zero ([`frame::could_be_torn`] then classifies what is not
/// zero fill).
pub fn scan<'a>(
    path: &Path,
    seq: u64,
    bytes: &'a [u8],
    last: bool,
    max_payload: u32,
    f: &mut dyn FnMut(RecordRef<'a>) -> Result<(), WalError>,
) -> Result<SegmentScan, WalError> {
    let mut out = SegmentScan {
        seq,
        header: None,
        file_len: bytes.len() as u64,
        valid_len: 0,
        records: 0,
        end: SegmentEnd::Clean,
    };
    if last && (bytes.len() < SEGMENT_HEADER_LEN || bytes.iter().all(|&b| b == 0)) {
        out.end = SegmentEnd::TornHeader;
        return Ok(out);
    }
    let bad_header = |problem| WalError::BadHeader {
        path: path.to_path_buf(),
        problem,
    };
    let header = SegmentHeader::decode(bytes).map_err(bad_header)?;
    if header.seq != seq {
        return Err(bad_header(frame::HeaderProblem::SeqMismatch {
            expected: seq,
            found: header.seq,
        }));
    }
    out.header = Some(header);
    let mut at = SEGMENT_HEADER_LEN;
    let mut lsn = header.first_lsn;
    while at < bytes.len() {
        let rest = &bytes[at..];
        match frame::decode_record(rest, max_payload) {
            Ok(record) => {
                f(RecordRef {
                    lsn,
                    kind: record.kind,
                    payload: record.payload,
                    pos: RecordPos {
                        segment: seq,
                        offset: (at + RECORD_HEADER_LEN) as u64,
                    },
                })?;
                at += record.len();
                lsn.0 += 1;
                out.records += 1;
            }
            Err(_) if last && rest.iter().all(|&b| b == 0) => break,
            Err(bad) if last && frame::could_be_torn(rest, &bad) => {
                out.end = SegmentEnd::TornRecord {
                    offset: at as u64,
                    len: frame::torn_len(rest),
                };
                break;
            }
            Err(problem) => return Err(corrupt(path, at as u64, problem)),
        }
    }
    out.valid_len = at as u64;
    Ok(out)
}

fn corrupt(path: &Path, offset: u64, problem: BadRecord) -> WalError {
    WalError::Corrupt {
        path: path.to_path_buf(),
        offset,
        problem,
    }
}

/// Walks the segments of a log directory in order, one at a time, reading each whole into
/// memory, scanning it, and checking that it follows the previous one.
#[derive(Debug)]
pub struct Scanner {
    dir: PathBuf,
    seqs: Vec<u64>,
    next: usize,
    next_lsn: Option<Lsn>,
    max_payload: u32,
}

impl Scanner {
    /// Lists the segments of `dir`.
    pub fn new<S: Storage>(storage: &S, dir: &Path, max_payload: u32) -> Result<Self, WalError> {
        Ok(Scanner {
            dir: dir.to_path_buf(),
            seqs: list(storage, dir)?,
            next: 0,
            next_lsn: None,
            max_payload,
        })
    }

    /// The sequence numbers of all segments found.
    pub fn seqs(&self) -> &[u64] {
        &self.seqs
    }

    /// The LSN the next record will have, as far as the segments scanned so far tell.
    pub fn next_lsn(&self) -> Option<Lsn> {
        self.next_lsn
    }

    /// Scans the next segment, calling `f` for each valid record; `None` after the last.
    pub fn next_segment<S: Storage>(
        &mut self,
        storage: &S,
        f: &mut dyn FnMut(RecordRef<'_>) -> Result<(), WalError>,
    ) -> Option<Result<SegmentScan, WalError>> {
        let &seq = self.seqs.get(self.next)?;
        self.next += 1;
        Some(self.scan_one(storage, seq, f))
    }

    fn scan_one<S: Storage>(
        &mut self,
        storage: &S,
        seq: u64,
        f: &mut dyn FnMut(RecordRef<'_>) -> Result<(), WalError>,
    ) -> Result<SegmentScan, WalError> {
        let path = path(&self.dir, seq);
        if self.next >= 2 {
            let previous = self.seqs[self.next - 2];
            if previous + 1 != seq {
                return Err(WalError::MissingSegment {
                    path,
                    previous,
                    found: seq,
                });
            }
        }
        let file = storage
            .open(&path, false)
            .map_err(WalError::io("open", &path))?;
        let bytes = storage::read_all(&file).map_err(WalError::io("read", &path))?;
        let last = self.next == self.seqs.len();
        let scan = scan(&path, seq, &bytes, last, self.max_payload, f)?;
        if let Some(header) = scan.header {
            let expected = match self.next_lsn {
                Some(lsn) => Some(lsn),
                None if seq == 1 => Some(Lsn(1)),
                None => None,
            };
            if let Some(expected) = expected.filter(|&e| e != header.first_lsn) {
                return Err(WalError::LsnGap {
                    path,
                    expected,
                    found: header.first_lsn,
                });
            }
            self.next_lsn = Some(Lsn(header.first_lsn.0 + scan.records));
        }
        Ok(scan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(seq: u64, first: u64, payloads: &[&[u8]]) -> Vec<u8> {
        let header = SegmentHeader {
            seq,
            first_lsn: Lsn(first),
        };
        let mut bytes = header.encode().to_vec();
        for p in payloads {
            frame::encode_record(&mut bytes, 1, p);
        }
        bytes
    }

    type Found = Vec<(u64, Vec<u8>)>;

    fn collect(bytes: &[u8], last: bool) -> Result<(SegmentScan, Found), WalError> {
        let mut got = Vec::new();
        let scan = scan(Path::new("s.wal"), 2, bytes, last, 1024, &mut |r| {
            got.push((r.lsn.0, r.payload.to_vec()));
            Ok(())
        })?;
        Ok((scan, got))
    }

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        assert_eq!(file_name(1), "00000000000000000001.wal");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        for bad in [
            "1.wal",
            "00000000000000000001.log",
            "0000000000000000000x.wal",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
        assert_eq!(parse_file_name("00000000000000000000.wal"), None);
    }

    #[test]
    fn scan_numbers_records_from_the_header() {
        let bytes = segment(2, 10, &[b"a", b"", b"ccc"]);
        let (scan, got) = collect(&bytes, false).expect("scan");
        assert_eq!(scan.records, 3);
        assert_eq!(scan.end, SegmentEnd::Clean);
        assert_eq!(scan.valid_len, bytes.len() as u64);
        let lsns: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(lsns, [10, 11, 12]);
    }

    #[test]
    fn a_cut_is_torn_in_the_last_segment_and_corrupt_elsewhere() {
        let bytes = segment(2, 1, &[b"a", b"bb"]);
        let cut = &bytes[..bytes.len() - 1];
        let (scan, got) = collect(cut, true).expect("torn tail");
        assert_eq!(got.len(), 1);
        assert_eq!(
            scan.end,
            SegmentEnd::TornRecord {
                offset: 50,
                len: 10
            }
        );
        match collect(cut, false) {
            Err(WalError::Corrupt { offset: 50, .. }) => {}
            other => panic!("expected corruption at 50, got {other:?}"),
        }
    }

    #[test]
    fn header_problems() {
        let bytes = segment(3, 1, &[]);
        assert!(matches!(
            collect(&bytes, true),
            Err(WalError::BadHeader {
                problem: frame::HeaderProblem::SeqMismatch {
                    expected: 2,
                    found: 3
                },
                ..
            })
        ));
        let (scan, _) = collect(&bytes[..39], true).expect("torn header");
        assert_eq!(scan.end, SegmentEnd::TornHeader);
        assert!(matches!(
            collect(&bytes[..39], false),
            Err(WalError::BadHeader { .. })
        ));
        assert_eq!(
            collect(&[0; 80], true).expect("zeros").0.end,
            SegmentEnd::TornHeader
        );
    }
}
