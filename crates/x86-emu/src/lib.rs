//! x86-emu: an x86-64 full-system CPU emulator.
//!
//! The CPU ([`Cpu`]) decodes guest code into basic blocks with iced-x86, caches
//! them by physical address, and interprets them with lazily computed flags and a
//! software TLB. Memory, ports and the local APIC are reached through the [`Bus`]
//! trait, which the `accel-emu` crate implements over guest RAM and the VMM's
//! devices. Exceptions are values ([`exception::Exc`]) delivered through the IDT.
#![forbid(unsafe_code)]

pub mod block;
pub mod bus;
pub mod code_map;
pub mod cpu;
pub mod cpuid;
pub mod exception;
mod exec;
pub mod flags;
pub mod mmu;
pub mod segment;
pub mod simd;
pub mod x87;

pub use bus::Bus;
pub use code_map::CodeMap;
pub use cpu::{Cpu, StopReason};
pub use exception::Exc;
