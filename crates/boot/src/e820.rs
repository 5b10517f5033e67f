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

/// The map for the RAM `mem` actually has, with `reserved` (address, size) ranges
/// added (e.g. PCI ECAM), sorted by address. Also returns the end of RAM below 4 GiB.
pub fn guest_map(mem: &crate::GuestMemory, reserved: &[(u64, u64)]) -> (Vec<E820Entry>, u64) {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    let mem_end = mem.last_addr().0 + 1;
    let low_end = mem
        .iter()
        .map(|r| r.start_addr().0 + r.len())
        .filter(|&e| e <= FOUR_GIB)
        .max()
        .unwrap_or(0);
    let layout = MemoryLayout {
        low: low_end,
        high: mem_end.saturating_sub(FOUR_GIB),
    };
    let mut map = e820_map(&layout);
    for &(addr, size) in reserved {
        map.push(E820Entry {
            addr,
            size,
            kind: E820_RESERVED,
        });
    }
    map.sort_by_key(|e| e.addr);
    (map, low_end)
}
