//! The KVM accelerator: [`KvmVm`] and [`KvmVcpu`] implement the `accel` traits over
//! `/dev/kvm` through `kvm-ioctls`, with the in-kernel irqchip (PIC, IOAPIC, LAPICs)
//! and PIT. This is the only crate that touches /dev/kvm.
//!
//! [`probe`] gathers the host report behind `hako host` and decides what
//! `--accel auto` picks.

pub mod caps;
pub mod convert;
pub mod cpuid;
mod debug;
mod kick;
pub mod probe;
pub mod setup;
pub mod state;
mod vcpu;
mod vm;

pub use kick::kick_signal;
pub use probe::{probe, Accel, HostReport};
pub use vcpu::KvmVcpu;
pub use vm::{KvmVm, KVM_API_VERSION, KVM_DEVICE, KVM_IDENTITY_MAP_ADDR, KVM_TSS_ADDR};

/// Wraps a failed KVM ioctl as an accelerator error naming the ioctl.
pub(crate) fn errno_err(what: &'static str, e: kvm_ioctls::Error) -> accel::Error {
    accel::Error::Os {
        what,
        source: std::io::Error::from_raw_os_error(e.errno()),
    }
}
