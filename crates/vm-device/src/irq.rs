//! Interrupt outputs of devices.

/// One interrupt line of the platform (an IOAPIC/PIC input).
pub trait IrqLine: Send + Sync {
    /// Drives the line to `level` (level-triggered devices hold it high while pending).
    fn set_level(&self, level: bool);
    /// Raises and lowers the line (edge-triggered devices).
    fn pulse(&self) {
        self.set_level(true);
        self.set_level(false);
    }
}

/// Where a device sends message-signalled interrupts (MSI/MSI-X).
pub trait MsiSink: Send + Sync {
    fn signal_msi(&self, addr: u64, data: u32);
}
