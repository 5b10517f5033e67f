//! The CPUID table an emulated vCPU shows, as a list: what `Vm::cpuid` reports and
//! a restore's CPUID check compares against.

use vmm_types::CpuidEntry;
use x86_emu::cpuid::CpuidModel;

/// The leaves and subleaves the emulator's CPUID model defines.
const LEAVES: &[(u32, u32, bool)] = &[
    (0, 0, false),
    (1, 0, false),
    (6, 0, false),
    (7, 0, true),
    (0xb, 0, true),
    (0xb, 1, true),
    (0xb, 2, true),
    (0x15, 0, false),
    (0x16, 0, false),
    (0x4000_0000, 0, false),
    (0x8000_0000, 0, false),
    (0x8000_0001, 0, false),
    (0x8000_0002, 0, false),
    (0x8000_0003, 0, false),
    (0x8000_0004, 0, false),
    (0x8000_0007, 0, false),
    (0x8000_0008, 0, false),
];

/// The model as configured for a vCPU of this platform (TSC-deadline LAPIC timer,
/// `cores` vCPUs as cores of one package, the portable feature set or not).
pub(crate) fn model(apic_id: u32, cores: u32, portable: bool) -> CpuidModel {
    let mut m = CpuidModel::new(apic_id);
    m.tsc_deadline = true;
    m.cores = cores;
    m.portable = portable;
    m
}

/// The table a vCPU of model `m` sees.
pub(crate) fn table(m: &CpuidModel) -> Vec<CpuidEntry> {
    LEAVES
        .iter()
        .map(|&(function, index, indexed)| {
            let (eax, ebx, ecx, edx) = m.query(function, index);
            CpuidEntry {
                function,
                index,
                indexed,
                eax,
                ebx,
                ecx,
                edx,
            }
        })
        .collect()
}
