//! The `emu` accelerator: `accel::Vm`/`Vcpu` over the `x86-emu` CPU emulator,
//! plus the interrupt controllers and timer KVM would otherwise provide in-kernel.
//!
//! Create the VM with [`EmuVm::new`]`(mem, num_cpus)`; optionally enable an
//! instruction trace of vCPU 0 with [`EmuVm::set_trace`] before creating vCPUs.

mod bus;
pub mod irqchip;
pub mod pit;
mod vcpu;
mod vm;

pub use vcpu::EmuVcpu;
pub use vm::EmuVm;
/// The rate of an emulated vCPU's TSC (it counts nanoseconds of guest time).
pub use x86_emu::cpuid::TSC_HZ;
