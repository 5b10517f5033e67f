//! Transports: how a driver reaches a virtio device.

pub mod core;
pub mod mmio;
pub mod pci;

pub use self::core::{CoreState, NotifyHook, QueueRegs};
pub use self::mmio::{VirtioMmioDevice, VirtioMmioState, MMIO_SIZE};
pub use self::pci::{VirtioPciDevice, VirtioPciState};

#[cfg(test)]
mod tests_mmio;
#[cfg(test)]
mod tests_notify;
#[cfg(test)]
mod tests_pci;
