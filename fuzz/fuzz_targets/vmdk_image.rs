//! Fuzzes VMDK header, descriptor, grain directory/table parsing, compressed grains,
//! reads, the map walk and the structural check.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    block::fuzz::fuzz_vmdk(data);
});
