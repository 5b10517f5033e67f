//! The VMM: builds a virtual machine from a [`VmConfig`], runs one host thread
//! per vCPU, routes their I/O to the device buses, and ends when the guest does.

mod balloon;
pub mod config;
pub mod console;
mod control;
pub mod device_spec;
pub mod device_tree;
mod error;
pub mod gdb;
mod handle;
mod io_thread;
mod irq;
mod kernel;
mod machine;
pub mod memory_backing;
pub mod migration;
mod nics;
pub mod platform;
mod run;
pub mod snapshot;
mod test_devices;
mod vsock;

pub use config::{
    AccelKind, ConsoleKind, CpuModel, DeviceSpec, DiskSpec, OnReboot, VirtioTransport, VmConfig,
};
pub use control::Ender;
pub use error::{Error, Result};
pub use handle::{RunState, VmHandle, VmInfo};
pub use machine::Machine;
pub use run::{ExitReason, Start};
pub use virtio::balloon::{BalloonInfo, GuestStats};
