//! Fuzzes vhdx header, region table, metadata and BAT parsing, reads, the map walk and
//! the structural check (also with the header and region table checksums repaired).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    block::fuzz::fuzz_vhdx(data);
});
