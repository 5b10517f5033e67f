//! Fuzzes vhdx header, region table, metadata, log and BAT parsing, log replay, reads,
//! the map walk and the structural check (also with the header, region table and log
//! entry checksums repaired).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    block::fuzz::fuzz_vhdx(data);
});
