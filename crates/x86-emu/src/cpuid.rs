//! The CPUID model: advertises exactly what the emulator implements.

use vmm_types::CpuidEntry;

/// Nominal TSC frequency: the guest TSC counts nanoseconds.
pub const TSC_HZ: u64 = 1_000_000_000;
/// Core crystal (and local APIC timer) frequency reported in leaf 0x15.
pub const CRYSTAL_HZ: u64 = 1_000_000_000;

/// IA32_ARCH_CAPABILITIES: RDCL_NO, SKIP_L1DFL_VMENTRY, SSB_NO, MDS_NO,
/// IF_PSCHANGE_MC_NO, TAA_NO, SBDR_SSDP_NO, FBSDP_NO, PSDP_NO, BHI_NO,
/// PBRSB_NO, GDS_NO, RFDS_NO, ITS_NO.
pub const ARCH_CAPABILITIES: u64 = 1
    | 1 << 3
    | 1 << 4
    | 1 << 5
    | 1 << 6
    | 1 << 8
    | 1 << 13
    | 1 << 14
    | 1 << 15
    | 1 << 20
    | 1 << 24
    | 1 << 26
    | 1 << 27
    | 1 << 62;

/// CPUID.1:EDX bits.
pub mod edx1 {
    pub const FPU: u32 = 1 << 0;
    pub const PSE: u32 = 1 << 3;
    pub const TSC: u32 = 1 << 4;
    pub const MSR: u32 = 1 << 5;
    pub const PAE: u32 = 1 << 6;
    pub const CX8: u32 = 1 << 8;
    pub const APIC: u32 = 1 << 9;
    pub const PGE: u32 = 1 << 13;
    pub const CMOV: u32 = 1 << 15;
    pub const PAT: u32 = 1 << 16;
    pub const CLFSH: u32 = 1 << 19;
    pub const MMX: u32 = 1 << 23;
    pub const FXSR: u32 = 1 << 24;
    pub const SSE: u32 = 1 << 25;
    pub const SSE2: u32 = 1 << 26;
}

/// CPUID.1:ECX bits.
pub mod ecx1 {
    pub const POPCNT: u32 = 1 << 23;
    pub const TSC_DEADLINE: u32 = 1 << 24;
    pub const HYPERVISOR: u32 = 1 << 31;
}

/// The CPU's identification and feature model.
#[derive(Debug, Clone)]
pub struct CpuidModel {
    pub apic_id: u32,
    /// Leaves supplied by the VMM; they take precedence over the built-in model.
    pub overrides: Vec<CpuidEntry>,
    /// Whether the platform's local APIC implements TSC-deadline mode.
    pub tsc_deadline: bool,
    /// vCPUs of the VM, presented as cores of one package (leaf 0xB), so that
    /// Linux treats them as siblings: an AP then copies the boot CPU's
    /// delay-loop calibration instead of measuring its own over several timer
    /// ticks, and the TSC synchronisation check runs for 2 ms instead of 20.
    pub cores: u32,
    /// The portable model (`--cpu portable`): only what every x86-64 KVM host can
    /// offer too, so the VM may move to KVM and back (docs/snapshot.md, §5).
    pub portable: bool,
}

/// What the portable model leaves out, as (leaf, subleaf, register 0..3 for
/// EAX..EDX, bits): features beyond x86-64's baseline that a KVM host may lack.
pub const PORTABLE_DROPS: &[(u32, u32, usize, u32)] = &[
    (1, 0, 2, ecx1::POPCNT),
    // 1 GiB pages, RDTSCP.
    (0x8000_0001, 0, 3, (1 << 26) | (1 << 27)),
];

fn regs_from_str(s: &[u8; 12]) -> (u32, u32, u32) {
    let w = |k: usize| u32::from_le_bytes([s[k], s[k + 1], s[k + 2], s[k + 3]]);
    (w(0), w(4), w(8))
}

impl CpuidModel {
    pub fn new(apic_id: u32) -> Self {
        CpuidModel {
            apic_id,
            overrides: Vec::new(),
            tsc_deadline: false,
            cores: 1,
            portable: false,
        }
    }

    /// Bits of the APIC ID that number the cores of the package.
    fn core_shift(&self) -> u32 {
        32 - self.cores.max(1).saturating_sub(1).leading_zeros()
    }

    /// The values of leaf `func`, subleaf `index`: (EAX, EBX, ECX, EDX).
    pub fn query(&self, func: u32, index: u32) -> (u32, u32, u32, u32) {
        let (a, b, c, d) = self.query_full(func, index);
        if !self.portable {
            return (a, b, c, d);
        }
        let mut r = [a, b, c, d];
        for &(f, i, reg, bits) in PORTABLE_DROPS {
            if f == func && (i == index || !matches!(f, 7 | 0xb | 0xd)) {
                r[reg] &= !bits;
            }
        }
        (r[0], r[1], r[2], r[3])
    }

    fn query_full(&self, func: u32, index: u32) -> (u32, u32, u32, u32) {
        if let Some(e) = vmm_types::cpuid::lookup(&self.overrides, func, index) {
            return (e.eax, e.ebx, e.ecx, e.edx);
        }
        use edx1::*;
        match func {
            0 => {
                let (b, d, c) = regs_from_str(b"GenuineIntel");
                (0x16, b, c, d)
            }
            1 => {
                // Family 6, model 0x0f (constant-rate TSC on family 6 model >= 0x0e), stepping 1.
                let eax = (6 << 8) | (0xf << 4) | 1;
                let logical = 1u32 << self.core_shift();
                let ebx = (self.apic_id << 24) | ((logical & 0xff) << 16) | (8 << 8);
                let mut ecx = ecx1::POPCNT | ecx1::HYPERVISOR;
                if self.tsc_deadline {
                    ecx |= ecx1::TSC_DEADLINE;
                }

                let edx = FPU
                    | PSE
                    | TSC
                    | MSR
                    | PAE
                    | CX8
                    | APIC
                    | PGE
                    | CMOV
                    | PAT
                    | CLFSH
                    | MMX
                    | FXSR
                    | SSE
                    | SSE2;
                // HTT: EBX[23:16] counts the package's logical processors.
                let edx = if logical > 1 { edx | (1 << 28) } else { edx };
                (eax, ebx, ecx, edx)
            }
            // Thermal/power: ARAT (APIC timer keeps running in deep C-states).
            6 => (1 << 2, 0, 0, 0),
            // Structured extended features: TSC_ADJUST (EBX bit 1, lets Linux trust the
            // invariant TSC without a watchdog) and IA32_ARCH_CAPABILITIES (EDX bit 29).
            7 if index == 0 => (0, 1 << 1, 0, 1 << 29),
            // Extended topology: one thread per core (SMT level), `cores` cores
            // per package (core level), then the invalid level.
            0xb => match index {
                0 => (0, 1, 0x100, self.apic_id),
                1 => (self.core_shift(), self.cores.max(1), 0x201, self.apic_id),
                _ => (0, 0, index & 0xff, self.apic_id),
            },
            0x15 => (1, (TSC_HZ / CRYSTAL_HZ) as u32, CRYSTAL_HZ as u32, 0),
            0x16 => (
                (TSC_HZ / 1_000_000) as u32,
                (TSC_HZ / 1_000_000) as u32,
                100,
                0,
            ),
            0x4000_0000 => {
                let (b, c, d) = regs_from_str(b"HakobuneEmu\0");
                (0x4000_0000, b, c, d)
            }
            0x8000_0000 => (0x8000_0008, 0, 0, 0),
            0x8000_0001 => {
                // ECX: LAHF/SAHF in 64-bit mode. EDX: SYSCALL, NX, 1G pages, RDTSCP, LM.
                (
                    0,
                    0,
                    1,
                    (1 << 11) | (1 << 20) | (1 << 26) | (1 << 27) | (1 << 29),
                )
            }
            0x8000_0002..=0x8000_0004 => {
                let brand = b"Hakobune emulated x86-64 CPU\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
                let k = ((func - 0x8000_0002) * 16) as usize;
                let w = |o: usize| {
                    u32::from_le_bytes([
                        brand[k + o],
                        brand[k + o + 1],
                        brand[k + o + 2],
                        brand[k + o + 3],
                    ])
                };
                (w(0), w(4), w(8), w(12))
            }
            // Invariant TSC.
            0x8000_0007 => (0, 0, 0, 1 << 8),
            // 40 physical, 48 linear address bits.
            0x8000_0008 => (0x3028, 0, 0, 0),
            _ => (0, 0, 0, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CpuidModel;

    #[test]
    fn vcpus_are_cores_of_one_package() {
        let mut m = CpuidModel::new(3);
        m.cores = 4;
        let (_, ebx, _, edx) = m.query(1, 0);
        assert_eq!((ebx >> 16) & 0xff, 4, "logical processors per package");
        assert_ne!(edx & (1 << 28), 0, "HTT");
        assert_eq!(m.query(0xb, 0), (0, 1, 0x100, 3), "SMT level: one thread");
        assert_eq!(
            m.query(0xb, 1),
            (2, 4, 0x201, 3),
            "core level: 4 cores, 2 bits"
        );
        assert_eq!(m.query(0xb, 2).2 >> 8, 0, "then the invalid level");
        m.cores = 3;
        assert_eq!(m.query(0xb, 1).0, 2, "3 cores still take 2 bits");
        let one = CpuidModel::new(0);
        assert_eq!((one.query(1, 0).1 >> 16) & 0xff, 1);
        assert_eq!(one.query(1, 0).3 & (1 << 28), 0);
        assert_eq!(one.query(0xb, 1), (0, 1, 0x201, 0));
    }
}
