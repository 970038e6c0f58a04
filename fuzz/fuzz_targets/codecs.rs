//! `cargo fuzz run codecs`: see `micro::fuzzing::codecs` for what it reaches.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| micro::fuzzing::codecs(data));
