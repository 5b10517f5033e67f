//! The `emu` accelerator: `accel::Vm`/`Vcpu` over the `x86-emu` CPU emulator,
//! plus the interrupt controllers and timer KVM would otherwise provide in-kernel.

pub mod irqchip;
pub mod pit;
