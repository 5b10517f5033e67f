//! The CPUID table a vCPU sees: what KVM supports (`KVM_GET_SUPPORTED_CPUID`),
//! less what this VMM does not virtualize, with per-vCPU APIC ids and a simple
//! topology (one package, one thread per core, `num_cpus` cores).
//!
//! Bit positions are from the Intel SDM Vol. 2A, CPUID instruction.

use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};
use vmm_types::CpuidEntry;

/// Leaf 1 ECX: VMX (nested virtualization is not offered).
const L1_ECX_VMX: u32 = 1 << 5;
/// Leaf 1 ECX: SMX.
const L1_ECX_SMX: u32 = 1 << 6;
/// Leaf 1 ECX: thermal monitor 2, not virtualized.
const L1_ECX_TM2: u32 = 1 << 8;
/// Leaf 1 ECX: perfmon and debug capability MSR, not virtualized.
const L1_ECX_PDCM: u32 = 1 << 15;
/// Leaf 1 ECX: running under a hypervisor.
const L1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX: hyper-threading / multi-core package.
const L1_EDX_HTT: u32 = 1 << 28;
/// Leaf 0x80000001 ECX: SVM.
const EXT1_ECX_SVM: u32 = 1 << 2;

/// Restricts a table to a baseline (docs/snapshot.md section 5): every feature
/// register the CPUID contract compares ([`vmm_types::cpuid::feature_registers`])
/// keeps only the bits `baseline` also has, so a guest started this way can move
/// to an accelerator offering `baseline` (pass `emu`'s table). The hypervisor
/// signature stays KVM's, but its paravirtual features (leaf 0x4000_0001) go
/// unless the baseline comes from the same hypervisor.
pub fn restrict_to(table: &mut [kvm_cpuid_entry2], baseline: &[CpuidEntry]) {
    for r in vmm_types::cpuid::feature_registers() {
        let allowed = vmm_types::cpuid::lookup(baseline, r.function, r.index).map_or(0, |b| {
            let mut b = *b;
            *r.reg.of_mut(&mut b)
        });
        for e in table.iter_mut() {
            let matches = e.function == r.function
                && (e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0 || e.index == r.index);
            if matches {
                let mut n = to_neutral(e);
                *r.reg.of_mut(&mut n) &= allowed | !r.mask;
                *e = kvm_cpuid_entry2 {
                    eax: n.eax,
                    ebx: n.ebx,
                    ecx: n.ecx,
                    edx: n.edx,
                    ..*e
                };
            }
        }
    }
    // Paravirtual features belong to the hypervisor interface: under a baseline
    // from another hypervisor (emu's "HakobuneEmu"), offer none.
    let signature = |t: &[CpuidEntry]| {
        vmm_types::cpuid::lookup(t, 0x4000_0000, 0).map(|e| (e.ebx, e.ecx, e.edx))
    };
    let ours: Vec<CpuidEntry> = table.iter().map(to_neutral).collect();
    if signature(&ours) != signature(baseline) {
        for e in table.iter_mut().filter(|e| e.function == 0x4000_0001) {
            e.eax = 0;
            e.edx = 0;
        }
    }
    // Leaf 1 ECX OSXSAVE follows CR4 and XSAVE: without XSAVE it must read 0.
    for e in table.iter_mut().filter(|e| e.function == 1) {
        if e.ecx & (1 << 26) == 0 {
            e.ecx &= !(1 << 27);
        }
    }
}

/// A KVM CPUID entry in neutral form.
pub fn to_neutral(e: &kvm_cpuid_entry2) -> CpuidEntry {
    CpuidEntry {
        function: e.function,
        index: e.index,
        indexed: e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0,
        eax: e.eax,
        ebx: e.ebx,
        ecx: e.ecx,
        edx: e.edx,
    }
}

/// Builds the CPUID table for the vCPU with local APIC id `apic_id` out of `num_cpus`.
pub fn guest_cpuid(
    supported: &[kvm_cpuid_entry2],
    apic_id: u32,
    num_cpus: u32,
) -> Vec<kvm_cpuid_entry2> {
    let num_cpus = num_cpus.max(1);
    // Bits of the x2APIC id that select the core within the package.
    let core_bits = 32 - (num_cpus - 1).leading_zeros();
    let mut out = Vec::with_capacity(supported.len());
    for e in supported {
        let mut e = *e;
        match e.function {
            1 => {
                e.ebx =
                    (e.ebx & 0x0000_ffff) | ((apic_id & 0xff) << 24) | ((num_cpus & 0xff) << 16);
                e.ecx &= !(L1_ECX_VMX | L1_ECX_SMX | L1_ECX_TM2 | L1_ECX_PDCM);
                e.ecx |= L1_ECX_HYPERVISOR;
                if num_cpus > 1 {
                    e.edx |= L1_EDX_HTT;
                } else {
                    e.edx &= !L1_EDX_HTT;
                }
            }
            // Deterministic cache parameters (a cache type of 0 ends the list):
            // EAX[31:26] = cores per package - 1, EAX[25:14] = logical processors
            // sharing this cache - 1 (level 3 and up shared by the package, lower
            // levels private to a core).
            4 if e.eax & 0x1f != 0 => {
                let level = (e.eax >> 5) & 7;
                let sharing = if level >= 3 { num_cpus - 1 } else { 0 };
                e.eax =
                    (e.eax & 0x3fff) | ((sharing & 0xfff) << 14) | (((num_cpus - 1) & 0x3f) << 26);
            }
            6 => {
                // Thermal and power management: nothing but ARAT (EAX bit 2, the
                // APIC timer keeps running in deep C-states) is virtualized.
                e.eax &= 1 << 2;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            0xa => {
                // Architectural performance monitoring is not offered.
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            0xb | 0x1f => {
                e.flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
                e.edx = apic_id;
                let (shift, count, level_type) = match e.index {
                    0 => (0, 1, 1),                // SMT level: one thread per core
                    1 => (core_bits, num_cpus, 2), // core level: the whole package
                    _ => (0, 0, 0),                // invalid level ends the list
                };
                e.eax = shift;
                e.ebx = count;
                e.ecx = (level_type << 8) | (e.index & 0xff);
            }
            0x8000_0001 => e.ecx &= !EXT1_ECX_SVM,
            _ => {}
        }
        out.push(e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        function: u32,
        index: u32,
        eax: u32,
        ebx: u32,
        ecx: u32,
        edx: u32,
    ) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        }
    }

    fn find(t: &[kvm_cpuid_entry2], f: u32, i: u32) -> kvm_cpuid_entry2 {
        *t.iter().find(|e| e.function == f && e.index == i).unwrap()
    }

    fn supported() -> Vec<kvm_cpuid_entry2> {
        vec![
            entry(0, 0, 0x1f, 0x756e_6547, 0x6c65_746e, 0x4965_6e69),
            entry(
                1,
                0,
                0x806f8,
                0x0800,
                0xfffa_3223 | L1_ECX_VMX,
                0x0f8b_fbff | L1_EDX_HTT,
            ),
            entry(4, 0, 0x121, 0, 0, 0),
            entry(4, 3, 0x163, 0, 0, 0),
            entry(0xb, 0, 0, 0, 0, 0),
            entry(0xb, 1, 0, 0, 0, 0),
            entry(0xb, 2, 0, 0, 0, 0),
            entry(0x8000_0001, 0, 0, 0, 0x121 | EXT1_ECX_SVM, 0),
        ]
    }

    #[test]
    fn leaf1_carries_apic_id_and_hypervisor_bit() {
        let t = guest_cpuid(&supported(), 3, 4);
        let l1 = find(&t, 1, 0);
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_eq!(l1.ebx & 0xffff, 0x0800);
        assert_ne!(l1.ecx & L1_ECX_HYPERVISOR, 0);
        assert_eq!(l1.ecx & L1_ECX_VMX, 0);
        assert_ne!(l1.edx & L1_EDX_HTT, 0);
        assert_eq!(find(&t, 0x8000_0001, 0).ecx & EXT1_ECX_SVM, 0);
        assert_eq!(find(&t, 0, 0), supported()[0]);
    }

    #[test]
    fn single_cpu_has_no_htt() {
        let t = guest_cpuid(&supported(), 0, 1);
        assert_eq!(find(&t, 1, 0).edx & L1_EDX_HTT, 0);
        assert_eq!(find(&t, 4, 3).eax >> 26, 0);
    }

    #[test]
    fn a_baseline_removes_features_it_lacks() {
        let mut t = guest_cpuid(&supported(), 0, 1);
        let base = [
            CpuidEntry {
                function: 1,
                ecx: 1 << 23, // popcnt only
                edx: 1,
                ..Default::default()
            },
            CpuidEntry {
                function: 0x8000_0001,
                edx: 1 << 29,
                ..Default::default()
            },
        ];
        restrict_to(&mut t, &base);
        let l1 = find(&t, 1, 0);
        assert_eq!(l1.ecx, (1 << 23) & supported()[1].ecx);
        assert_eq!(
            l1.edx, 1,
            "HTT is not a feature bit: it is KVM's topology (off with 1 CPU)"
        );
        assert_eq!(find(&t, 0x8000_0001, 0).ecx, 0);
        assert_eq!(find(&t, 0, 0), supported()[0], "identification leaves stay");
        let neutral: Vec<CpuidEntry> = t.iter().map(to_neutral).collect();
        vmm_types::cpuid::check_compatible(&neutral, &base).unwrap();
    }

    #[test]
    fn topology_leaves() {
        let t = guest_cpuid(&supported(), 2, 3);
        let smt = find(&t, 0xb, 0);
        let core = find(&t, 0xb, 1);
        let end = find(&t, 0xb, 2);
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 2));
        // Three cores need two bits of APIC id.
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (2, 3, 0x201, 2));
        assert_eq!((end.ebx, end.ecx >> 8), (0, 0));
        assert_ne!(core.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0);
        // L3 shared by all three cores, L1 by one.
        assert_eq!((find(&t, 4, 3).eax >> 14) & 0xfff, 2);
        assert_eq!((find(&t, 4, 0).eax >> 14) & 0xfff, 0);
        assert_eq!(find(&t, 4, 0).eax >> 26, 2);
    }
}
