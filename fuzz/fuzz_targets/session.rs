//! Arbitrary client input through the decoder and the engine, two sessions, time moving.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| larder::fuzzing::session(data));
