//! PCI for the PC platform: type-0 configuration space with BAR sizing and a
//! capabilities list, MSI-X, and a root complex (host bridge 00:00.0) reached
//! through ports 0xCF8/0xCFC and ECAM, which also dispatches BAR accesses by the
//! BAR values the guest currently programs.
//!
//! Addresses the rest of the platform must agree with (ACPI tables, e820) live
//! in [`layout`].

pub mod allocator;
pub mod config;
pub mod device;
pub mod layout;
pub mod msix;
pub mod root;

pub use allocator::{AllocError, BarAllocator};
pub use config::{BarDef, BarKind, ConfigSpace, ConfigSpaceState, PciIds};
pub use device::{BarRange, PciDevice};
pub use msix::{MsixConfig, MsixState};
pub use root::{
    HostBridge, PciBarWindow, PciConfigIo, PciConfigIoState, PciEcam, PciError, PciRoot,
};
