//! Backend-neutral x86-64 CPU state shared by every accelerator.
//!
//! These types describe the architectural state of one vCPU in the terms of the
//! Intel SDM, not of any accelerator's ABI: `accel-kvm` converts them to and from
//! `kvm_regs`/`kvm_sregs`, and `x86-emu` executes on them directly. All of them are
//! serde-serializable so snapshots can move a vCPU between accelerators.
//!
//! [`CpuState`] is the whole of one vCPU (registers, XSAVE image, debug registers,
//! local APIC page, activity state and pending events), [`VmState`] the VM's
//! interrupt controllers, PIT and clock, and [`cpuid::check_compatible`] the CPUID
//! contract a restore checks (docs/snapshot.md sections 3-5).

use serde::{Deserialize, Serialize};

pub mod cpuid;
pub mod dirty;
pub mod events;
pub mod lapic;
pub mod msr;
pub mod regs;
pub mod vm_state;
pub mod xsave;

pub use cpuid::CpuidEntry;
pub use events::{CpuEvents, ExceptionEvent, InterruptEvent, InterruptShadow, MpState};
pub use regs::{CpuState, DebugRegs, DescriptorTable, FpuState, Regs, Segment, SpecialRegs};
pub use vm_state::{
    IoApicState, PicChipState, PicInitStep, PicState, PitChannelState, PitState, VmState,
};

/// Architectural exception vectors (Intel SDM Vol. 3A, table 6-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum Exception {
    DivideError = 0,
    Debug = 1,
    Nmi = 2,
    Breakpoint = 3,
    Overflow = 4,
    BoundRange = 5,
    InvalidOpcode = 6,
    DeviceNotAvailable = 7,
    DoubleFault = 8,
    InvalidTss = 10,
    SegmentNotPresent = 11,
    StackFault = 12,
    GeneralProtection = 13,
    PageFault = 14,
    X87Fpu = 16,
    AlignmentCheck = 17,
    MachineCheck = 18,
    Simd = 19,
}

impl Exception {
    /// Whether the CPU pushes an error code when delivering this exception.
    pub fn has_error_code(self) -> bool {
        matches!(
            self,
            Exception::DoubleFault
                | Exception::InvalidTss
                | Exception::SegmentNotPresent
                | Exception::StackFault
                | Exception::GeneralProtection
                | Exception::PageFault
                | Exception::AlignmentCheck
        )
    }
}

/// Control-register and EFER bits the VMM and the emulator refer to by name.
pub mod bits {
    pub const CR0_PE: u64 = 1 << 0;
    pub const CR0_MP: u64 = 1 << 1;
    pub const CR0_EM: u64 = 1 << 2;
    pub const CR0_TS: u64 = 1 << 3;
    pub const CR0_ET: u64 = 1 << 4;
    pub const CR0_NE: u64 = 1 << 5;
    pub const CR0_WP: u64 = 1 << 16;
    pub const CR0_AM: u64 = 1 << 18;
    pub const CR0_NW: u64 = 1 << 29;
    pub const CR0_CD: u64 = 1 << 30;
    pub const CR0_PG: u64 = 1 << 31;

    pub const CR4_VME: u64 = 1 << 0;
    pub const CR4_PVI: u64 = 1 << 1;
    pub const CR4_TSD: u64 = 1 << 2;
    pub const CR4_DE: u64 = 1 << 3;
    pub const CR4_PSE: u64 = 1 << 4;
    pub const CR4_PAE: u64 = 1 << 5;
    pub const CR4_MCE: u64 = 1 << 6;
    pub const CR4_PGE: u64 = 1 << 7;
    pub const CR4_PCE: u64 = 1 << 8;
    pub const CR4_OSFXSR: u64 = 1 << 9;
    pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
    pub const CR4_UMIP: u64 = 1 << 11;
    pub const CR4_FSGSBASE: u64 = 1 << 16;
    pub const CR4_PCIDE: u64 = 1 << 17;
    pub const CR4_OSXSAVE: u64 = 1 << 18;
    pub const CR4_SMEP: u64 = 1 << 20;
    pub const CR4_SMAP: u64 = 1 << 21;

    pub const EFER_SCE: u64 = 1 << 0;
    pub const EFER_LME: u64 = 1 << 8;
    pub const EFER_LMA: u64 = 1 << 10;
    pub const EFER_NXE: u64 = 1 << 11;

    pub const RFLAGS_CF: u64 = 1 << 0;
    pub const RFLAGS_FIXED: u64 = 1 << 1;
    pub const RFLAGS_PF: u64 = 1 << 2;
    pub const RFLAGS_AF: u64 = 1 << 4;
    pub const RFLAGS_ZF: u64 = 1 << 6;
    pub const RFLAGS_SF: u64 = 1 << 7;
    pub const RFLAGS_TF: u64 = 1 << 8;
    pub const RFLAGS_IF: u64 = 1 << 9;
    pub const RFLAGS_DF: u64 = 1 << 10;
    pub const RFLAGS_OF: u64 = 1 << 11;
    pub const RFLAGS_IOPL: u64 = 3 << 12;
    pub const RFLAGS_NT: u64 = 1 << 14;
    pub const RFLAGS_RF: u64 = 1 << 16;
    pub const RFLAGS_VM: u64 = 1 << 17;
    pub const RFLAGS_AC: u64 = 1 << 18;
    pub const RFLAGS_ID: u64 = 1 << 21;
}
