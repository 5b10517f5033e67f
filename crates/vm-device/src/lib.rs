//! Buses that route port and MMIO accesses to devices, the interrupt traits devices
//! raise interrupts through, and the state pattern they save and restore with.
//! Nothing here knows which accelerator runs.

pub mod bus;
pub mod irq;
pub mod persist;

pub use bus::{Bus, BusDevice, BusDeviceSync, BusEntry, BusError};
pub use irq::{IrqLine, MsiSink};
pub use persist::{Persist, StateError};
