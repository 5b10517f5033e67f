//! The interface between the root complex and a PCI function.

use crate::config::{BarDef, BarKind};

/// A BAR as currently decoded by a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarRange {
    /// BAR register index (0..6).
    pub index: u8,
    pub kind: BarKind,
    /// Guest-physical address (memory) or port (I/O).
    pub base: u64,
    pub size: u64,
}

/// A PCI function on bus 0, as the root complex sees it.
///
/// Config offsets are within the function's 4 KiB ECAM space; BAR offsets are
/// relative to the BAR's base. The root complex calls these with its own lock
/// released, so implementations may raise interrupts from them.
pub trait PciDevice: Send {
    /// A configuration-space read.
    fn config_read(&mut self, offset: u64, data: &mut [u8]);
    /// A configuration-space write.
    fn config_write(&mut self, offset: u64, data: &[u8]);
    /// The BARs the function declares (index, definition), for allocation.
    fn bar_defs(&self) -> Vec<(usize, BarDef)>;
    /// Programs a BAR address and enables decoding (done once, by the VMM acting as firmware).
    fn set_bar_address(&mut self, index: usize, addr: u64);
    /// The BAR ranges currently decoded (follows guest reprogramming).
    fn decoded_bars(&self) -> Vec<BarRange>;
    /// A read in BAR `bar` at `offset`.
    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]);
    /// A write in BAR `bar` at `offset`.
    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]);
}
