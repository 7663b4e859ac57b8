//! Arbitrary bytes as a log segment: scanned, decoded and replayed into an engine.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| larder::fuzzing::wal_scan(data));
