//! The protocol decoder on arbitrary input, split arbitrarily.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| larder::fuzzing::decode(data));
