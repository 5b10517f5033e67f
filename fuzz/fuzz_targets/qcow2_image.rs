//! Fuzzes qcow2 header and table parsing, reads, check, and writes on hostile images.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    block::fuzz::fuzz_image(data);
});
