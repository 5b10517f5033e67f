//! Fuzzes the OVF descriptor and manifest parsers (`hako img import`'s untrusted text).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    block::fuzz::fuzz_ovf(data);
});
