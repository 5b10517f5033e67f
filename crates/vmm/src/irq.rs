//! Interrupt lines and MSI delivery through the accelerator's interrupt controllers.

use std::sync::Arc;

use accel::Vm;
use vm_device::{IrqLine, MsiSink};

/// One GSI of the VM's IOAPIC/PIC.
pub struct GsiLine {
    pub vm: Arc<dyn Vm>,
    pub gsi: u32,
}

impl IrqLine for GsiLine {
    fn set_level(&self, level: bool) {
        if let Err(e) = self.vm.set_irq_line(self.gsi, level) {
            tracing::warn!("raising GSI {} failed: {e}", self.gsi);
        }
    }
}

/// MSI delivery into the VM.
pub struct VmMsi(pub Arc<dyn Vm>);

impl MsiSink for VmMsi {
    fn signal_msi(&self, addr: u64, data: u32) {
        if let Err(e) = self.0.signal_msi(addr, data) {
            tracing::warn!("MSI {addr:#x}/{data:#x} failed: {e}");
        }
    }
}
