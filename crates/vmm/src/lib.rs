//! The VMM: builds a virtual machine from a [`VmConfig`], runs one host thread
//! per vCPU, routes their I/O to the device buses, and ends when the guest does.

pub mod config;
pub mod console;
mod irq;
mod machine;
pub mod platform;
mod run;

pub use config::{AccelKind, ConsoleKind, DiskSpec, OnReboot, VirtioTransport, VmConfig};
pub use machine::Machine;
pub use run::ExitReason;
