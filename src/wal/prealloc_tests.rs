//! Tests of preallocated segments on [`MemStorage`]: the zero fill after the last record is
//! neither a record nor a torn tail, a torn record before it is still cut, corruption
//! before valid records is still an error, and sealed segments carry no fill.

use std::path::PathBuf;

use super::frame::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::segment;
use super::storage::{MemStorage, StorageFile};
use super::{verify, Lsn, Record, Wal, WalError, WalOptions};

const SEGMENT: u64 = 512;

fn dir() -> PathBuf {
    PathBuf::from("/log")
}

fn seg(seq: u64) -> PathBuf {
    segment::path(&dir(), seq)
}

fn opts(preallocate: bool) -> WalOptions {
    WalOptions {
        max_segment_size: SEGMENT,
        max_payload: 1024,
        preallocate,
    }
}

fn open(s: &MemStorage, preallocate: bool) -> (Wal<MemStorage>, Vec<Record>, super::OpenReport) {
    Wal::open(s.clone(), &dir(), opts(preallocate)).expect("open")
}

/// Appends `n` records "p0", "p1", … and syncs; returns them.
fn write_records(wal: &mut Wal<MemStorage>, n: usize) -> Vec<Record> {
    let mut out = Vec::new();
    for i in 0..n {
        let payload = format!("p{i}").into_bytes();
        let (lsn, pos) = wal.append(5, &payload).expect("append");
        out.push(Record {
            lsn,
            kind: 5,
            payload,
            pos,
        });
    }
    wal.sync().expect("sync");
    out
}

/// Where the frame of `r` ends in its segment.
fn end_of(r: &Record) -> usize {
    r.pos.offset as usize + r.payload.len()
}

#[test]
fn new_segments_are_zero_filled_to_their_size_and_reopen_cleanly() {
    let s = MemStorage::new();
    let (mut wal, _, _) = open(&s, true);
    let written = write_records(&mut wal, 4);
    drop(wal);
    let bytes = s.file(&seg(1)).expect("segment");
    assert_eq!(bytes.len() as u64, SEGMENT);
    let records_end = end_of(&written[3]);
    assert!(bytes[records_end..].iter().all(|&b| b == 0));

    let (mut wal, got, report) = open(&s, true);
    assert_eq!(got, written);
    assert_eq!(report.truncated_bytes, 0, "zero fill is not a torn tail");
    // The next record goes right after the last one, into the fill.
    let (lsn, pos) = wal.append(5, b"next").expect("append");
    assert_eq!(lsn, Lsn(5));
    assert_eq!(pos.offset as usize, records_end + RECORD_HEADER_LEN);
    wal.sync().expect("sync");
    drop(wal);
    assert_eq!(s.file(&seg(1)).expect("segment").len() as u64, SEGMENT);
    let (_, got, _) = open(&s, false);
    assert_eq!(got.len(), 5);
    assert_eq!(got[4].payload, b"next");

    let report = verify(&s, &dir(), &opts(true));
    assert!(report.is_ok(), "{:?}", report.error);
    assert_eq!((report.records, report.torn_tail_bytes), (5, 0));
}

#[test]
fn a_sealed_segment_is_cut_to_its_records_and_the_next_is_filled() {
    let s = MemStorage::new();
    let (mut wal, _, _) = open(&s, true);
    let mut written = Vec::new();
    while wal.active_segment() < 3 {
        written.extend(write_records(&mut wal, 1));
    }
    drop(wal);
    for seq in 1..3 {
        let bytes = s.file(&seg(seq)).expect("sealed segment");
        let last = written
            .iter()
            .rfind(|r| r.pos.segment == seq)
            .expect("a record");
        assert_eq!(bytes.len(), end_of(last), "segment {seq} holds no fill");
    }
    assert_eq!(s.file(&seg(3)).expect("active").len() as u64, SEGMENT);
    let (_, got, report) = open(&s, true);
    assert_eq!(got, written);
    assert_eq!(report.truncated_bytes, 0);
}

#[test]
fn zero_fill_in_a_sealed_segment_is_corruption() {
    let s = MemStorage::new();
    let (mut wal, _, _) = open(&s, true);
    while wal.active_segment() < 2 {
        write_records(&mut wal, 1);
    }
    drop(wal);
    let mut bytes = s.file(&seg(1)).expect("segment");
    let end = bytes.len() as u64;
    bytes.extend_from_slice(&[0; 64]);
    s.set_file(&seg(1), &bytes);
    let err = Wal::open(s.clone(), &dir(), opts(true)).expect_err("fill before segment 2");
    assert!(
        matches!(err, WalError::Corrupt { ref path, offset, .. } if path == &seg(1) && offset == end),
        "{err:?}"
    );
}

#[test]
fn a_torn_write_into_the_fill_is_cut_at_every_byte_and_the_fill_kept() {
    let s = MemStorage::new();
    let (mut wal, _, _) = open(&s, true);
    let written = write_records(&mut wal, 3);
    drop(wal);
    let whole = s.file(&seg(1)).expect("segment");
    let last_start = written[2].pos.offset as usize - RECORD_HEADER_LEN;
    for cut in last_start..end_of(&written[2]) {
        // The write reached the disk up to `cut`; the rest of the record is still fill.
        let mut torn = whole.clone();
        torn[cut..].fill(0);
        let s = MemStorage::new();
        s.set_file(&seg(1), &torn);
        let (mut wal, got, report) = open(&s, true);
        assert_eq!(got, written[..2], "cut at {cut}");
        // Nothing written is plain fill; once the length field's first byte is there,
        // the frame it announces is the torn part.
        let torn_len = if cut == last_start {
            0
        } else {
            (RECORD_HEADER_LEN + 2) as u64
        };
        assert_eq!(report.truncated_bytes, torn_len, "cut at {cut}");
        let after = s.file(&seg(1)).expect("segment");
        assert_eq!(after.len() as u64, SEGMENT, "cut at {cut}: fill restored");
        assert!(after[last_start..].iter().all(|&b| b == 0), "cut at {cut}");
        assert_eq!(after[..last_start], whole[..last_start]);

        let (lsn, _) = wal.append(9, b"after").expect("append");
        assert_eq!(lsn, Lsn(3));
        wal.sync().expect("sync");
        drop(wal);
        let (_, got, report) = open(&s, true);
        assert_eq!(report.truncated_bytes, 0);
        let payloads: Vec<&[u8]> = got.iter().map(|r| r.payload.as_slice()).collect();
        assert_eq!(payloads, [&b"p0"[..], b"p1", b"after"]);
    }
}

#[test]
fn a_record_lost_before_later_ones_is_corruption_not_fill() {
    let s = MemStorage::new();
    let (mut wal, _, _) = open(&s, true);
    let written = write_records(&mut wal, 3);
    drop(wal);
    let mut bytes = s.file(&seg(1)).expect("segment");
    let start = written[1].pos.offset as usize - RECORD_HEADER_LEN;
    bytes[start..end_of(&written[1])].fill(0);
    s.set_file(&seg(1), &bytes);
    let err = Wal::open(s.clone(), &dir(), opts(true)).expect_err("a hole before a record");
    assert!(
        matches!(err, WalError::Corrupt { offset, .. } if offset == start as u64),
        "{err:?}"
    );
    let report = verify(&s, &dir(), &opts(true));
    assert!(
        matches!(report.error, Some(WalError::Corrupt { offset, .. }) if offset == start as u64)
    );
    assert_eq!(
        s.file(&seg(1)),
        Some(bytes),
        "a failed open changes nothing"
    );
}

#[test]
fn a_corrupt_last_record_before_the_fill_is_a_torn_tail_for_verify_too() {
    let s = MemStorage::new();
    let (mut wal, _, _) = open(&s, true);
    let written = write_records(&mut wal, 3);
    drop(wal);
    let mut bytes = s.file(&seg(1)).expect("segment");
    bytes[written[2].pos.offset as usize] ^= 0x55;
    s.set_file(&seg(1), &bytes);
    let torn = (RECORD_HEADER_LEN + written[2].payload.len()) as u64;
    let report = verify(&s, &dir(), &opts(true));
    assert!(report.is_ok(), "{:?}", report.error);
    assert_eq!(report.torn_tail_bytes, torn);
    let (_, got, report) = open(&s, true);
    assert_eq!(got, written[..2]);
    assert_eq!(report.truncated_bytes, torn);
}

#[test]
fn a_power_cut_keeps_what_was_synced_into_the_fill() {
    let s = MemStorage::new();
    let (mut wal, _, _) = open(&s, true);
    let written = write_records(&mut wal, 3);
    wal.append(1, b"written, never synced").expect("append");
    wal.flush().expect("flush");
    drop(wal);
    s.crash();
    let (mut wal, got, report) = open(&s, true);
    assert_eq!(got, written);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(wal.append(1, b"next").expect("append").0, Lsn(4));
}

#[test]
fn a_power_cut_while_a_segment_is_created_removes_it() {
    let s = MemStorage::new();
    let (mut wal, _, _) = open(&s, true);
    while wal.active_segment() < 2 {
        write_records(&mut wal, 1);
    }
    drop(wal);
    let sealed = s.file(&seg(1)).expect("segment 1");
    // The new segment's length became durable but its header never did.
    s.set_file(&seg(2), &vec![0; SEGMENT as usize]);
    let (wal, got, report) = open(&s, true);
    assert_eq!(wal.active_segment(), 1);
    assert_eq!(s.file(&seg(2)), None);
    assert_eq!(report.truncated_bytes, SEGMENT);
    assert!(!got.is_empty());
    // The sealed segment is active again and gets its fill back.
    let reopened = s.file(&seg(1)).expect("segment 1");
    assert_eq!(reopened.len() as u64, SEGMENT);
    assert_eq!(reopened[..sealed.len()], sealed[..]);
}

#[test]
fn logs_written_with_and_without_preallocation_open_either_way() {
    let s = MemStorage::new();
    let (mut wal, _, _) = open(&s, false);
    let mut written = write_records(&mut wal, 2);
    drop(wal);
    assert_eq!(s.file(&seg(1)).expect("segment").len(), end_of(&written[1]));
    let (mut wal, got, _) = open(&s, true);
    assert_eq!(got, written);
    assert_eq!(s.file(&seg(1)).expect("segment").len() as u64, SEGMENT);
    written.extend(write_records(&mut wal, 2));
    drop(wal);
    let (mut wal, got, _) = open(&s, false);
    assert_eq!(got, written);
    written.extend(write_records(&mut wal, 1));
    drop(wal);
    let (_, got, report) = open(&s, true);
    assert_eq!(got, written);
    assert_eq!(report.truncated_bytes, 0);
}

#[test]
fn no_room_to_preallocate_leaves_the_segment_to_grow() {
    struct Full(super::storage::MemFile);
    impl StorageFile for Full {
        fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
            self.0.write_at(offset, buf)
        }
        fn allocate(&mut self, len: u64) -> std::io::Result<()> {
            // Part of the space was taken before the disk filled.
            self.0.allocate(len / 2)?;
            Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
            self.0.read_at(offset, buf)
        }
        fn size(&self) -> std::io::Result<u64> {
            self.0.size()
        }
        fn set_len(&mut self, len: u64) -> std::io::Result<()> {
            self.0.set_len(len)
        }
        fn sync_data(&mut self) -> std::io::Result<()> {
            self.0.sync_data()
        }
    }
    let s = MemStorage::new();
    let mut file = Full(super::storage::Storage::create(&s, &seg(1)).expect("create"));
    file.write_at(0, &[1; SEGMENT_HEADER_LEN]).expect("write");
    let len = segment::preallocate(&mut file, &seg(1), SEGMENT_HEADER_LEN as u64, SEGMENT)
        .expect("a full disk is not an error here");
    assert_eq!(len, SEGMENT_HEADER_LEN as u64);
    assert_eq!(
        s.file(&seg(1)).expect("file"),
        vec![1; SEGMENT_HEADER_LEN],
        "the partial allocation is cut back"
    );
}
