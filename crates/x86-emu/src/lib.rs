//! x86-emu: an x86-64 full-system CPU emulator.
#![forbid(unsafe_code)]

pub mod simd;
pub mod x87;
