//! Replays the fuzz targets' corpora (fuzz/corpus/<target>/*) through the same checks the
//! fuzzers run, so every input a fuzzer once kept is a regression test on stable Rust.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut count = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let data = std::fs::read(&path).expect("corpus file");
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(result.is_ok(), "{} fails on {}", target, path.display());
        count += 1;
    }
    count
}

#[test]
fn decode_corpus_replays_cleanly() {
    assert!(
        replay("decode", larder::fuzzing::decode) > 0,
        "empty corpus"
    );
}

#[test]
fn session_corpus_replays_cleanly() {
    assert!(
        replay("session", larder::fuzzing::session) > 0,
        "empty corpus"
    );
}

#[test]
fn wal_scan_corpus_replays_cleanly() {
    assert!(
        replay("wal_scan", larder::fuzzing::wal_scan) > 0,
        "empty corpus"
    );
}

#[test]
fn the_wal_scan_seed_holds_real_records() {
    use larder::wal::{frame, segment, Lsn};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/wal_scan");
    let seed = std::fs::read(dir.join("seed-put-reserve-delete")).expect("seed");
    let mut bytes = frame::SegmentHeader {
        seq: 1,
        first_lsn: Lsn(1),
    }
    .encode()
    .to_vec();
    bytes.extend_from_slice(&seed[1..]);
    let mut kinds = Vec::new();
    segment::scan(Path::new("seed"), 1, &bytes, true, 1 << 20, &mut |r| {
        kinds.push(r.kind);
        Ok(())
    })
    .expect("scan");
    assert_eq!(kinds, [1, 2, 3]);
}
