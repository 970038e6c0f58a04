//! `cargo fuzz run envelope`: see `micro::fuzzing::envelope` for what it reaches.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| micro::fuzzing::envelope(data));
