//! MSR indices (Intel SDM Vol. 4) used by the VMM and the accelerators.

pub const IA32_TSC: u32 = 0x10;
pub const IA32_APIC_BASE: u32 = 0x1b;
pub const IA32_FEATURE_CONTROL: u32 = 0x3a;
pub const IA32_TSC_ADJUST: u32 = 0x3b;
pub const IA32_SPEC_CTRL: u32 = 0x48;
pub const IA32_BIOS_SIGN_ID: u32 = 0x8b;
pub const IA32_MTRRCAP: u32 = 0xfe;
pub const IA32_SYSENTER_CS: u32 = 0x174;
pub const IA32_SYSENTER_ESP: u32 = 0x175;
pub const IA32_SYSENTER_EIP: u32 = 0x176;
pub const IA32_MISC_ENABLE: u32 = 0x1a0;
pub const IA32_PAT: u32 = 0x277;
pub const IA32_MTRR_DEF_TYPE: u32 = 0x2ff;
pub const IA32_TSC_DEADLINE: u32 = 0x6e0;
pub const IA32_EFER: u32 = 0xc000_0080;
pub const IA32_STAR: u32 = 0xc000_0081;
pub const IA32_LSTAR: u32 = 0xc000_0082;
pub const IA32_CSTAR: u32 = 0xc000_0083;
pub const IA32_FMASK: u32 = 0xc000_0084;
pub const IA32_FS_BASE: u32 = 0xc000_0100;
pub const IA32_GS_BASE: u32 = 0xc000_0101;
pub const IA32_KERNEL_GS_BASE: u32 = 0xc000_0102;
pub const IA32_TSC_AUX: u32 = 0xc000_0103;
/// PAT value after reset: WB, WT, UC-, UC repeated.
pub const PAT_RESET: u64 = 0x0007_0406_0007_0406;

/// The MSRs a full [`crate::CpuState`] carries (the snapshot contract): what both
/// accelerators save and restore. EFER, FS/GS base and APIC base travel in
/// [`crate::SpecialRegs`]. `IA32_TSC` is the guest TSC at the save and
/// `IA32_TSC_DEADLINE` the armed deadline in guest TSC units (0: none); restoring
/// loads the TSC before the deadline.
pub const STATE: &[u32] = &[
    IA32_SYSENTER_CS,
    IA32_SYSENTER_ESP,
    IA32_SYSENTER_EIP,
    IA32_STAR,
    IA32_CSTAR,
    IA32_LSTAR,
    IA32_FMASK,
    IA32_KERNEL_GS_BASE,
    IA32_TSC,
    IA32_TSC_ADJUST,
    IA32_TSC_AUX,
    IA32_MISC_ENABLE,
    IA32_PAT,
    IA32_MTRR_DEF_TYPE,
    IA32_TSC_DEADLINE,
];
