//! Tests of the open log on [`MemStorage`]: round trips, torn tails, corruption, power
//! cuts and injected write and sync failures.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::frame::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::segment;
use super::storage::{Fault, MemStorage, Storage};
use super::{Lsn, Record, Wal, WalError, WalOptions};

fn dir() -> PathBuf {
    PathBuf::from("/log")
}

fn opts(max_segment_size: u64) -> WalOptions {
    WalOptions {
        max_segment_size,
        max_payload: 1024,
        ..WalOptions::default()
    }
}

fn open(s: &MemStorage, o: WalOptions) -> (Wal<MemStorage>, Vec<Record>, super::OpenReport) {
    Wal::open(s.clone(), &dir(), o).expect("open")
}

fn payloads(records: &[Record]) -> Vec<Vec<u8>> {
    records.iter().map(|r| r.payload.clone()).collect()
}

fn seg(seq: u64) -> PathBuf {
    segment::path(&dir(), seq)
}

/// Appends `n` records "r0", "r1", … and syncs; returns what was appended.
fn write_records(wal: &mut Wal<MemStorage>, n: usize) -> Vec<Record> {
    let mut out = Vec::new();
    for i in 0..n {
        let payload = format!("r{i}").into_bytes();
        let (lsn, pos) = wal.append(7, &payload).expect("append");
        out.push(Record {
            lsn,
            kind: 7,
            payload,
            pos,
        });
    }
    wal.sync().expect("sync");
    out
}

proptest! {
    #[test]
    fn appended_records_come_back_with_their_lsns_and_positions(
        records in prop::collection::vec((any::<u8>(), prop::collection::vec(any::<u8>(), 0..200), any::<bool>()), 0..40),
        max_segment_size in 64u64..600,
    ) {
        let s = MemStorage::new();
        let (mut wal, none, _) = open(&s, opts(max_segment_size));
        prop_assert!(none.is_empty());
        let mut written = Vec::new();
        // A copy of the layout taken once predicts every position, across rotations.
        let mut layout = wal.layout();
        for (kind, payload, sync_now) in &records {
            let (predicted, _) = layout.place(payload.len());
            let (lsn, pos) = wal.append(*kind, payload).expect("append");
            prop_assert_eq!(pos, predicted);
            prop_assert_eq!(lsn, Lsn(written.len() as u64 + 1));
            prop_assert_eq!(&wal.read_payload(pos, payload.len() as u32).expect("read"), payload);
            written.push(Record { lsn, kind: *kind, payload: payload.clone(), pos });
            if *sync_now {
                prop_assert_eq!(wal.sync().expect("sync"), lsn);
            }
        }
        wal.sync().expect("sync");
        drop(wal);
        let (wal, got, report) = open(&s, opts(max_segment_size));
        prop_assert_eq!(&got, &written);
        // After reopening, the layout continues where the log ends.
        let mut reopened = wal.layout();
        prop_assert_eq!(reopened.place(1).0, layout.place(1).0);
        prop_assert_eq!(report.records, written.len() as u64);
        prop_assert_eq!(report.truncated_bytes, 0);
        for r in &written {
            prop_assert_eq!(&wal.read_payload(r.pos, r.payload.len() as u32).expect("read"), &r.payload);
        }
        for seq in wal.oldest_segment()..=wal.active_segment() {
            let len = s.file(&seg(seq)).expect("segment").len() as u64;
            let records = written.iter().filter(|r| r.pos.segment == seq).count();
            prop_assert!(len <= max_segment_size || records == 1, "segment {} is {} bytes", seq, len);
        }
    }
}

#[test]
fn a_torn_write_at_every_byte_of_the_last_record_is_cut() {
    let s = MemStorage::new();
    let (mut wal, _, _) = open(&s, opts(1 << 20));
    let written = write_records(&mut wal, 3);
    drop(wal);
    let whole = s.file(&seg(1)).expect("segment");
    let last_start = written[2].pos.offset as usize - RECORD_HEADER_LEN;
    for cut in last_start..whole.len() {
        let s = MemStorage::new();
        s.set_file(&seg(1), &whole[..cut]);
        let (mut wal, got, report) = open(&s, opts(1 << 20));
        assert_eq!(got, written[..2], "cut at {cut}");
        assert_eq!(
            report.truncated_bytes,
            (cut - last_start) as u64,
            "cut at {cut}"
        );
        assert_eq!(s.file(&seg(1)).expect("segment").len(), last_start);
        let (lsn, _) = wal.append(9, b"after").expect("append");
        assert_eq!(lsn, Lsn(3));
        wal.sync().expect("sync");
        drop(wal);
        let (_, got, report) = open(&s, opts(1 << 20));
        assert_eq!(report.truncated_bytes, 0);
        assert_eq!(
            payloads(&got),
            [b"r0".to_vec(), b"r1".to_vec(), b"after".to_vec()]
        );
    }
}

#[test]
fn a_torn_write_at_every_byte_of_a_new_segment_is_cut() {
    let s = MemStorage::new();
    let o = opts(64);
    let (mut wal, _, _) = open(&s, o);
    write_records(&mut wal, 3);
    assert_eq!(wal.active_segment(), 2, "two records fill a segment");
    drop(wal);
    let whole = s.file(&seg(2)).expect("segment");
    for cut in 0..whole.len() {
        let s2 = MemStorage::new();
        s2.set_file(&seg(1), &s.file(&seg(1)).expect("segment 1"));
        s2.set_file(&seg(2), &whole[..cut]);
        let (mut wal, got, report) = open(&s2, o);
        assert_eq!(
            payloads(&got),
            [b"r0".to_vec(), b"r1".to_vec()],
            "cut {cut}"
        );
        let expected_cut = if cut < SEGMENT_HEADER_LEN {
            cut
        } else {
            cut - SEGMENT_HEADER_LEN
        };
        assert_eq!(report.truncated_bytes, expected_cut as u64, "cut {cut}");
        wal.append(1, b"again").expect("append");
        wal.sync().expect("sync");
        drop(wal);
        let (_, got, _) = open(&s2, o);
        assert_eq!(got.len(), 3, "cut {cut}");
        assert_eq!(got[2].lsn, Lsn(3));
    }
}

#[test]
fn a_complete_corrupt_last_record_before_zeros_is_torn() {
    let s = MemStorage::new();
    let (mut wal, _, _) = open(&s, opts(1 << 20));
    let written = write_records(&mut wal, 3);
    drop(wal);
    let mut bytes = s.file(&seg(1)).expect("segment");
    bytes[written[2].pos.offset as usize] ^= 0x55;
    bytes.extend_from_slice(&[0; 100]);
    s.set_file(&seg(1), &bytes);
    let (_, got, report) = open(&s, opts(1 << 20));
    assert_eq!(got, written[..2]);
    // The zero bytes after the torn record are cut too but not counted as torn.
    assert_eq!(report.truncated_bytes, (RECORD_HEADER_LEN + 2) as u64);
}

#[test]
fn a_corrupt_record_followed_by_a_valid_one_is_an_error_naming_it() {
    let s = MemStorage::new();
    let (mut wal, _, _) = open(&s, opts(1 << 20));
    let written = write_records(&mut wal, 3);
    drop(wal);
    let mut bytes = s.file(&seg(1)).expect("segment");
    bytes[written[1].pos.offset as usize] ^= 0x55;
    s.set_file(&seg(1), &bytes);
    let err = Wal::open(s.clone(), &dir(), opts(1 << 20)).expect_err("corrupt");
    let at = written[1].pos.offset - RECORD_HEADER_LEN as u64;
    match &err {
        WalError::Corrupt { path, offset, .. } => {
            assert_eq!((path.as_path(), *offset), (seg(1).as_path(), at));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("00000000000000000001.wal") && message.contains(&at.to_string()));
    assert_eq!(
        s.file(&seg(1)),
        Some(bytes),
        "a failed open changes nothing"
    );
}

#[test]
fn corruption_or_a_cut_in_a_sealed_segment_is_an_error() {
    let s = MemStorage::new();
    let (mut wal, _, _) = open(&s, opts(64));
    write_records(&mut wal, 5);
    drop(wal);
    let good = s.file(&seg(1)).expect("segment");
    let mut flipped = good.clone();
    *flipped.last_mut().expect("byte") ^= 1;
    s.set_file(&seg(1), &flipped);
    let err = Wal::open(s.clone(), &dir(), opts(64)).expect_err("corrupt");
    assert!(
        matches!(err, WalError::Corrupt { ref path, offset: 51, .. } if path == &seg(1)),
        "{err:?}"
    );
    s.set_file(&seg(1), &good[..good.len() - 1]);
    let err = Wal::open(s.clone(), &dir(), opts(64)).expect_err("cut");
    assert!(
        matches!(err, WalError::Corrupt { offset: 51, .. }),
        "{err:?}"
    );
    s.set_file(&seg(1), &good);
    Storage::remove(&s, &seg(2)).expect("remove");
    let err = Wal::open(s.clone(), &dir(), opts(64)).expect_err("gap");
    assert!(
        matches!(
            err,
            WalError::MissingSegment {
                previous: 1,
                found: 3,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_power_cut_keeps_synced_records_and_loses_the_rest() {
    let s = MemStorage::new();
    let (mut wal, _, _) = open(&s, opts(1 << 20));
    let written = write_records(&mut wal, 2);
    wal.append(1, b"flushed only").expect("append");
    wal.flush().expect("flush");
    wal.append(1, b"buffered only").expect("append");
    drop(wal);
    s.crash();
    let (mut wal, got, report) = open(&s, opts(1 << 20));
    assert_eq!(got, written);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(wal.append(1, b"next").expect("append").0, Lsn(3));
}

#[test]
fn a_power_cut_during_rotation_recovers() {
    let s = MemStorage::new();
    let (mut wal, _, _) = open(&s, opts(64));
    let written = write_records(&mut wal, 1);
    // Rotation syncs the old segment, then the new one's header, then the directory.
    s.fail_sync(2, Fault::Io);
    let err = wal.append(1, b"second").expect_err("rotation fails");
    assert!(matches!(err, WalError::Io { op: "sync", .. }), "{err:?}");
    assert!(wal.is_poisoned());
    assert!(matches!(wal.append(1, b"x"), Err(WalError::Poisoned)));
    drop(wal);
    s.crash();
    let (mut wal, got, _) = open(&s, opts(64));
    assert_eq!(got, written);
    wal.append(1, b"second").expect("append");
    wal.sync().expect("sync");

    // The new segment's entry survived but its header did not.
    for partial in [&[][..], &b"LARDRWAL\x01"[..], &[0u8; 40][..]] {
        let s2 = MemStorage::new();
        s2.set_file(&seg(1), &s.file(&seg(1)).expect("segment 1"));
        s2.set_file(&seg(2), &s.file(&seg(2)).expect("segment 2"));
        s2.set_file(&seg(3), partial);
        let (wal, got, report) = open(&s2, opts(64));
        assert_eq!(got.len(), 2);
        assert_eq!(report.truncated_bytes, partial.len() as u64);
        assert_eq!(wal.active_segment(), 2);
        assert_eq!(s2.file(&seg(3)), None);
    }
}

/// Runs a workload with one injected fault and checks the promises around it.
fn fault_scenario(fault: Fault, nth: u64, on_sync: bool) {
    let s = MemStorage::new();
    let (mut wal, _, _) = open(&s, opts(128));
    if on_sync {
        s.fail_sync(nth, fault);
    } else {
        s.fail_write(nth, fault);
    }
    let mut appended = Vec::new();
    let mut acked = Lsn(0);
    let mut failed = false;
    for i in 0..30u32 {
        let payload = vec![i as u8; (i % 7 * 5) as usize];
        let step = wal.append(2, &payload).map(|_| ()).and_then(|()| {
            appended.push(payload.clone());
            if i % 3 == 2 {
                acked = wal.sync()?;
            }
            Ok(())
        });
        if let Err(err) = step {
            assert!(
                !matches!(err, WalError::Poisoned),
                "first failure is the real one"
            );
            if let WalError::NoSpace { .. } = err {
                // Syncing a segment being created failed for want of space: the segment
                // was removed again and the log is intact; the append can be retried.
                assert!(!wal.is_poisoned());
                let payload = vec![i as u8; (i % 7 * 5) as usize];
                wal.append(2, &payload).expect("retried append");
                appended.push(payload);
                wal.sync().expect("sync after the retry");
                drop(wal);
                s.crash();
                let (_, got, _) = open(&s, opts(128));
                let got: Vec<Vec<u8>> = got.into_iter().map(|r| r.payload).collect();
                assert_eq!(got, appended, "{fault:?} {nth} {on_sync}");
                return;
            }
            failed = true;
            break;
        }
    }
    assert!(failed, "{fault:?} at {nth} (sync: {on_sync}) never struck");
    assert!(wal.is_poisoned());
    assert!(wal.durable_lsn() <= Lsn(appended.len() as u64));
    assert!(wal.durable_lsn() >= acked);
    assert!(matches!(wal.append(1, b""), Err(WalError::Poisoned)));
    assert!(matches!(wal.flush(), Err(WalError::Poisoned)));
    assert!(matches!(wal.sync(), Err(WalError::Poisoned)));
    drop(wal);
    for crash in [false, true] {
        if crash {
            s.crash();
        }
        let (_, got, _) = open(&s, opts(128));
        assert!(
            got.len() as u64 >= acked.0,
            "{fault:?} {nth} {on_sync} crash {crash}"
        );
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r.lsn, Lsn(i as u64 + 1));
            assert_eq!(r.payload, appended[i], "record {i} changed");
        }
    }
}

#[test]
fn a_failed_write_poisons_the_log_and_loses_nothing_acknowledged() {
    for nth in 1..12 {
        fault_scenario(Fault::Io, nth, false);
    }
}

/// Retries `f` while it reports a full disk; returns whether it ever did.
fn retry_full<T>(mut f: impl FnMut() -> Result<T, WalError>) -> (T, bool) {
    let mut full = false;
    loop {
        match f() {
            Ok(v) => return (v, full),
            Err(WalError::NoSpace { .. }) => full = true,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
}

#[test]
fn a_full_disk_on_write_loses_nothing_and_the_write_can_be_retried() {
    // Every write, segment headers included (128-byte segments rotate often), in turn.
    for nth in 1..16 {
        let s = MemStorage::new();
        let (mut wal, _, _) = open(&s, opts(128));
        s.fail_write(nth, Fault::NoSpace);
        let mut appended = Vec::new();
        let mut saw_full = false;
        for i in 0..30u32 {
            let payload = vec![i as u8; (i % 7 * 5) as usize];
            let ((lsn, pos), full) = retry_full(|| wal.append(2, &payload));
            saw_full |= full;
            assert_eq!(lsn, Lsn(i as u64 + 1));
            assert_eq!(
                wal.read_payload(pos, payload.len() as u32).expect("read"),
                payload
            );
            appended.push(payload);
            if i % 3 == 2 {
                let (durable, full) = retry_full(|| wal.sync());
                saw_full |= full;
                assert_eq!(durable, lsn);
            }
        }
        assert!(saw_full, "the fault at write {nth} never struck");
        assert!(!wal.is_poisoned());
        drop(wal);
        for crash in [false, true] {
            if crash {
                s.crash();
            }
            let (_, got, report) = open(&s, opts(128));
            assert_eq!(report.truncated_bytes, 0, "write {nth}");
            let got: Vec<Vec<u8>> = got.into_iter().map(|r| r.payload).collect();
            assert_eq!(got, appended, "write {nth}, crash {crash}");
        }
    }
}

#[test]
fn a_failed_sync_poisons_the_log_and_loses_nothing_acknowledged() {
    for nth in 1..12 {
        fault_scenario(Fault::Io, nth, true);
        fault_scenario(Fault::NoSpace, nth, true);
    }
}

#[test]
fn old_segments_can_be_removed_and_stay_removed() {
    let s = MemStorage::new();
    let (mut wal, _, _) = open(&s, opts(64));
    let written = write_records(&mut wal, 6);
    assert_eq!(wal.active_segment(), 3);
    assert_eq!(wal.remove_segments_before(2).expect("remove"), 1);
    assert_eq!(
        wal.remove_segments_before(99).expect("remove"),
        1,
        "never the active one"
    );
    assert!(wal.read_payload(written[0].pos, 2).is_err());
    assert_eq!(wal.read_payload(written[5].pos, 2).expect("read"), b"r5");
    drop(wal);
    s.crash();
    let (wal, got, report) = open(&s, opts(64));
    assert_eq!(got, written[4..]);
    assert_eq!((report.segments, wal.oldest_segment()), (1, 3));
}

#[test]
fn oversized_payloads_are_refused_without_poisoning() {
    let s = MemStorage::new();
    let (mut wal, _, _) = open(&s, opts(64));
    let err = wal.append(1, &[0; 1025]).expect_err("too large");
    assert!(matches!(
        err,
        WalError::PayloadTooLarge {
            len: 1025,
            max: 1024
        }
    ));
    assert!(!wal.is_poisoned());
    let (lsn, pos) = wal
        .append(1, &[5; 1024])
        .expect("a big record gets its own segment");
    assert_eq!(wal.sync().expect("sync"), lsn);
    assert_eq!(wal.read_payload(pos, 1024).expect("read"), vec![5; 1024]);
    assert!(Wal::open(MemStorage::new(), Path::new("/x"), opts(10)).is_err());
}

#[test]
fn running_out_of_descriptors_for_a_new_segment_loses_nothing_and_can_be_retried() {
    let s = MemStorage::new();
    let (mut wal, _, _) = open(&s, opts(128));
    let mut appended = Vec::new();
    let mut refused = 0;
    for i in 0..40u32 {
        let payload = vec![i as u8; 20];
        if i == 10 {
            // The next three segment creations find no descriptor.
            s.fail_creates(3, Fault::NoFiles);
        }
        let (lsn, pos) = loop {
            match wal.append(2, &payload) {
                Ok(placed) => break placed,
                Err(WalError::NoFiles { .. }) => {
                    refused += 1;
                    assert!(!wal.is_poisoned());
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        };
        assert_eq!(lsn, Lsn(u64::from(i) + 1));
        assert_eq!(wal.read_payload(pos, 20).expect("read"), payload);
        appended.push(payload);
        wal.sync().expect("sync");
    }
    assert_eq!(refused, 3, "the fault never struck");
    drop(wal);
    s.crash();
    let (_, got, _) = open(&s, opts(128));
    let got: Vec<Vec<u8>> = got.into_iter().map(|r| r.payload).collect();
    assert_eq!(got, appended);
}

proptest! {
    /// The server appends a job's record as its fields and its body, apart: the log must
    /// hold byte for byte what appending the joined payload writes, CRC included, and
    /// replay it the same, across rotations and with preallocated segments too.
    #[test]
    fn a_record_appended_in_two_parts_is_the_record_appended_whole(
        records in prop::collection::vec((any::<u8>(), prop::collection::vec(any::<u8>(), 0..200), any::<prop::sample::Index>()), 1..30),
        max_segment_size in 64u64..600,
        preallocate in any::<bool>(),
    ) {
        let o = WalOptions { preallocate, ..opts(max_segment_size) };
        let whole = MemStorage::new();
        let parts = MemStorage::new();
        let (mut a, _, _) = open(&whole, o);
        let (mut b, _, _) = open(&parts, o);
        for (kind, payload, cut) in &records {
            let (head, tail) = payload.split_at(cut.index(payload.len() + 1));
            let appended = a.append(*kind, payload).expect("append whole");
            prop_assert_eq!(b.append_parts(*kind, head, tail).expect("append in parts"), appended);
            let (_, pos) = appended;
            prop_assert_eq!(&b.read_payload(pos, payload.len() as u32).expect("read"), payload);
        }
        a.sync().expect("sync");
        b.sync().expect("sync");
        prop_assert_eq!(a.active_segment(), b.active_segment());
        for seq in a.oldest_segment()..=a.active_segment() {
            prop_assert_eq!(whole.file(&seg(seq)), parts.file(&seg(seq)), "segment {}", seq);
        }
        drop((a, b));
        let (_, from_whole, _) = open(&whole, o);
        let (_, from_parts, report) = open(&parts, o);
        prop_assert_eq!(report.truncated_bytes, 0);
        prop_assert_eq!(payloads(&from_parts), records.iter().map(|(_, p, _)| p.clone()).collect::<Vec<_>>());
        prop_assert_eq!(from_parts, from_whole);
    }
}

#[test]
fn a_record_in_two_parts_over_the_maximum_is_refused_whole() {
    let s = MemStorage::new();
    let (mut wal, _, _) = open(&s, opts(1 << 20));
    let err = wal
        .append_parts(1, &[1; 600], &[2; 425])
        .expect_err("too large");
    assert!(
        matches!(
            err,
            WalError::PayloadTooLarge {
                len: 1025,
                max: 1024
            }
        ),
        "{err:?}"
    );
    assert!(!wal.is_poisoned());
    wal.append_parts(1, &[1; 600], &[2; 424]).expect("fits");
}
