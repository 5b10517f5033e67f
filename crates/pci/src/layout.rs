//! Fixed addresses of the PCI part of the platform. The ACPI tables (MCFG, the
//! host bridge's `_CRS` and `_PRT` in the DSDT) and the e820 map are built from
//! these constants, so they cannot disagree.

/// Port of CONFIG_ADDRESS; CONFIG_DATA is at 0xCFC. The device covers 0xCF8..=0xCFF.
pub const PCI_CONFIG_IO_BASE: u16 = 0xcf8;
/// Number of ports of the config-mechanism-#1 device.
pub const PCI_CONFIG_IO_LEN: u16 = 8;

/// Base of the ECAM (PCI Express enhanced configuration) area: 1 MiB per bus,
/// 4 KiB per function. Must be reserved in e820 (Linux checks it).
pub const ECAM_BASE: u64 = 0xb000_0000;
/// Buses decoded through ECAM (only bus 0 exists).
pub const ECAM_BUSES: u64 = 1;
/// Size of the ECAM area.
pub const ECAM_SIZE: u64 = ECAM_BUSES << 20;
/// Last bus number (MCFG end bus, `_CRS` bus range).
pub const LAST_BUS: u8 = (ECAM_BUSES - 1) as u8;

/// Start of the 32-bit hole: guest RAM below 4 GiB must end at or below this.
pub const MEM_32BIT_HOLE_START: u64 = ECAM_BASE;

/// 32-bit PCI MMIO window (BARs are allocated and routed here).
pub const MMIO32_BASE: u64 = 0xc000_0000;
/// Size of the 32-bit window: up to 0xF000_0000, where the platform MMIO devices start.
pub const MMIO32_SIZE: u64 = 0x3000_0000;

/// Platform (non-PCI) MMIO devices, e.g. virtio-mmio, are placed from here,
/// [`PLATFORM_MMIO_STRIDE`] apart, below the IOAPIC at 0xFEC0_0000.
pub const PLATFORM_MMIO_BASE: u64 = 0xf000_0000;
/// Distance between two platform MMIO devices.
pub const PLATFORM_MMIO_STRIDE: u64 = 0x1000;

/// First GSI for platform (virtio-mmio) devices: 20..=23 are free (ISA uses
/// 0..=15, PCI INTx 16..=19); level-triggered, active high.
pub const PLATFORM_GSI_BASE: u32 = 20;
/// Number of GSIs from [`PLATFORM_GSI_BASE`] (the IOAPIC has 24 pins).
pub const PLATFORM_GSI_COUNT: u32 = 4;

/// Size of the 64-bit PCI MMIO window (placed by [`mmio64_base`]).
pub const MMIO64_SIZE: u64 = 0x4_0000_0000;

/// Base of the 64-bit PCI MMIO window for a guest whose RAM ends at `ram_end`
/// (exclusive, highest RAM address + 1): the next 1 GiB boundary at or above
/// both `ram_end` and 4 GiB.
pub fn mmio64_base(ram_end: u64) -> u64 {
    const GIB: u64 = 1 << 30;
    let top = ram_end.max(1 << 32);
    top.div_ceil(GIB) * GIB
}

/// PCI I/O port window for I/O BARs (0xC000..=0xFFFF).
pub const IO_BASE: u64 = 0xc000;
/// Size of the PCI I/O port window.
pub const IO_SIZE: u64 = 0x4000;

/// First GSI used for PCI INTx.
pub const INTX_GSI_BASE: u32 = 16;

/// The GSI an INTx pin of a device on bus 0 is wired to: pins rotate over GSIs
/// 16..=19 by `(slot + pin) % 4`, `pin` 0 = INTA. The DSDT's `_PRT` lists the same.
pub fn intx_gsi(slot: u8, pin: u8) -> u32 {
    INTX_GSI_BASE + ((u32::from(slot) + u32::from(pin)) % 4)
}

/// Number of device slots on bus 0.
pub const SLOTS: u8 = 32;

// The windows must not overlap each other or the IOAPIC at 0xFEC0_0000.
const _: () = assert!(ECAM_BASE + ECAM_SIZE <= MMIO32_BASE);
const _: () = assert!(MMIO32_BASE + MMIO32_SIZE <= PLATFORM_MMIO_BASE);
const _: () = assert!(PLATFORM_MMIO_BASE + 32 * PLATFORM_MMIO_STRIDE <= 0xfec0_0000);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmio64_window_and_swizzle() {
        assert_eq!(mmio64_base(1 << 30), 1 << 32);
        assert_eq!(mmio64_base((5 << 30) + 1), 6 << 30);
        assert_eq!(intx_gsi(1, 0), 17);
        assert_eq!(intx_gsi(3, 1), 16);
        assert_eq!(intx_gsi(0, 3), 19);
    }
}
