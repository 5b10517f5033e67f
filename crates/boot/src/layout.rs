//! Where things live in guest-physical memory.
//!
//! ```text
//! 0x0000_0500  GDT                  0x0000_7000  boot_params (zero page)
//! 0x0000_0520  IDT (empty)          0x0000_8ff0  initial stack top
//! 0x0000_9000  PML4                 0x0000_a000  PDPT
//! 0x0000_b000  4 page directories (identity map of the first 4 GiB, 2 MiB pages)
//! 0x0002_0000  kernel command line  0x000e_0000  ACPI tables (reserved in e820)
//! 0x0010_0000  kernel               top of low RAM: initrd
//! MMIO_HOLE_START .. 4 GiB: PCI windows, ECAM, IOAPIC, LAPIC (no RAM)
//! 4 GiB ..     RAM above the hole
//! ```

use vm_memory::GuestAddress;

pub const GDT_ADDR: u64 = 0x500;
pub const IDT_ADDR: u64 = 0x520;
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
pub const BOOT_STACK_TOP: u64 = 0x8ff0;
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xa000;
pub const PD_ADDR: u64 = 0xb000;
/// Identity map covers this much (4 page directories of 2 MiB pages).
pub const IDENTITY_MAP_SIZE: u64 = 4 << 30;
pub const CMDLINE_ADDR: u64 = 0x20000;
pub const CMDLINE_MAX: usize = 0x10000;
/// End of the conventional memory that e820 reports as usable.
pub const EBDA_START: u64 = 0x9fc00;
/// Legacy BIOS area, reserved; the ACPI tables go at its top.
pub const BIOS_AREA_START: u64 = 0xa0000;
pub const ACPI_TABLES_ADDR: u64 = 0xe0000;
pub const HIGH_MEMORY_START: u64 = 0x10_0000;
/// Start of the MMIO hole below 4 GiB; RAM below 4 GiB stops here.
pub const MMIO_HOLE_START: u64 = 0xb000_0000;
pub const FOUR_GIB: u64 = 1 << 32;

/// How the guest's RAM is split around the MMIO hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLayout {
    /// Bytes of RAM from address 0 (at most `MMIO_HOLE_START`).
    pub low: u64,
    /// Bytes of RAM from 4 GiB.
    pub high: u64,
}

impl MemoryLayout {
    pub fn new(total: u64) -> Self {
        let low = total.min(MMIO_HOLE_START);
        MemoryLayout {
            low,
            high: total - low,
        }
    }

    pub fn total(&self) -> u64 {
        self.low + self.high
    }
}

/// The (address, size) ranges to back with host memory for `total` bytes of RAM.
pub fn guest_ram_ranges(total: u64) -> Vec<(GuestAddress, usize)> {
    let l = MemoryLayout::new(total);
    let mut v = vec![(GuestAddress(0), l.low as usize)];
    if l.high > 0 {
        v.push((GuestAddress(FOUR_GIB), l.high as usize));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_splits_around_the_hole() {
        assert_eq!(
            guest_ram_ranges(512 << 20),
            vec![(GuestAddress(0), 512 << 20)]
        );
        let r = guest_ram_ranges(4 << 30);
        assert_eq!(r[0], (GuestAddress(0), MMIO_HOLE_START as usize));
        assert_eq!(
            r[1],
            (
                GuestAddress(FOUR_GIB),
                ((4u64 << 30) - MMIO_HOLE_START) as usize
            )
        );
    }
}
