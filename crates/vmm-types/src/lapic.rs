//! The local APIC register page in the xAPIC MMIO layout (Intel SDM Vol. 3A, table
//! 11-1): 1024 bytes, each 32-bit register at a 16-byte aligned offset. This is the
//! form [`crate::CpuState::lapic`] holds (and what KVM_GET_LAPIC returns).

/// Size of the saved page.
pub const PAGE_SIZE: usize = 1024;

pub const ID: usize = 0x020;
pub const VERSION: usize = 0x030;
pub const TPR: usize = 0x080;
pub const APR: usize = 0x090;
pub const PPR: usize = 0x0a0;
pub const LDR: usize = 0x0d0;
pub const DFR: usize = 0x0e0;
pub const SVR: usize = 0x0f0;
/// ISR, TMR and IRR: eight registers each, 16 bytes apart.
pub const ISR: usize = 0x100;
pub const TMR: usize = 0x180;
pub const IRR: usize = 0x200;
pub const ESR: usize = 0x280;
pub const ICR_LOW: usize = 0x300;
pub const ICR_HIGH: usize = 0x310;
/// LVT timer, thermal, performance counters, LINT0, LINT1, error: 16 bytes apart.
pub const LVT_TIMER: usize = 0x320;
pub const TIMER_INITIAL: usize = 0x380;
/// Current count: in a saved page, the count at the moment of the save.
pub const TIMER_CURRENT: usize = 0x390;
pub const TIMER_DIVIDE: usize = 0x3e0;

/// The 32-bit register at `offset`.
pub fn get(page: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(page[offset..offset + 4].try_into().unwrap())
}

/// Sets the 32-bit register at `offset`.
pub fn set(page: &mut [u8], offset: usize, v: u32) {
    page[offset..offset + 4].copy_from_slice(&v.to_le_bytes());
}

/// A 256-bit register (ISR, TMR, IRR) starting at `offset`, as eight words.
pub fn get256(page: &[u8], offset: usize) -> [u32; 8] {
    std::array::from_fn(|i| get(page, offset + 16 * i))
}

/// Sets a 256-bit register (ISR, TMR, IRR) starting at `offset`.
pub fn set256(page: &mut [u8], offset: usize, v: &[u32; 8]) {
    for (i, w) in v.iter().enumerate() {
        set(page, offset + 16 * i, *w);
    }
}
