//! The VMM: builds a virtual machine from a [`VmConfig`], runs one host thread
//! per vCPU, routes their I/O to the device buses, and ends when the guest does.

pub mod config;
pub mod console;
pub mod device_spec;
mod irq;
mod kernel;
mod machine;
pub mod platform;
mod run;
mod test_devices;

pub use config::{
    AccelKind, ConsoleKind, DeviceSpec, DiskSpec, OnReboot, VirtioTransport, VmConfig,
};
pub use machine::Machine;
pub use run::ExitReason;
