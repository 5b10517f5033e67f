//! Fuzzes vpc header and table parsing, reads, the map walk and the structural check.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    block::fuzz::fuzz_vpc(data);
});
