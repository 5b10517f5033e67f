//! The e820 memory map handed to the kernel in boot_params.

use crate::layout::*;

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// One e820 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// The map for a guest with this RAM layout.
pub fn e820_map(l: &MemoryLayout) -> Vec<E820Entry> {
    let mut v = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: EBDA_START,
            size: HIGH_MEMORY_START - EBDA_START,
            kind: E820_RESERVED,
        },
    ];
    if l.low > HIGH_MEMORY_START {
        v.push(E820Entry {
            addr: HIGH_MEMORY_START,
            size: l.low - HIGH_MEMORY_START,
            kind: E820_RAM,
        });
    }
    if l.high > 0 {
        v.push(E820Entry {
            addr: FOUR_GIB,
            size: l.high,
            kind: E820_RAM,
        });
    }
    v
}
