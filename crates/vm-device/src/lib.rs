//! Buses that route port and MMIO accesses to devices, and the interrupt traits
//! devices raise interrupts through. Nothing here knows which accelerator runs.

pub mod bus;
pub mod irq;

pub use bus::{Bus, BusDevice, BusError};
pub use irq::{IrqLine, MsiSink};
