//! `cargo fuzz run gateway`: see `micro::fuzzing::gateway` for what it reaches.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| micro::fuzzing::gateway(data));
