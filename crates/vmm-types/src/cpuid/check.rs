//! The CPUID contract of a restore or an incoming migration: the guest may already
//! use every feature it was shown, so the target must offer each of them.
//!
//! What is compared: the feature-flag registers listed by [`feature_registers`]
//! (leaf 1 ECX/EDX, 6 EAX, 7.0 EBX/ECX/EDX, 7.1 EAX, 0xD.0 EAX (the XSAVE
//! components), 0xD.1 EAX, 0x8000_0001 ECX/EDX, 0x8000_0007 EDX, and the
//! hypervisor's feature leaf 0x4000_0001 EAX). A bit set in the saved table must be
//! set in the target's; bits the target has in addition are fine. Bits that are not
//! features are left out: OSXSAVE (1:ECX bit 27) and OSPKE (7.0:ECX bit 4) mirror
//! CR4, HTT (1:EDX bit 28) describes the topology. A leaf a table lacks counts as
//! all zeros. The hypervisor leaf is compared only when both tables carry the same
//! hypervisor signature (0x4000_0000 EBX/ECX/EDX); a saved table whose hypervisor
//! offered paravirtual features (0x4000_0001 EAX non-zero) against a target with
//! another signature is refused as a whole.
//!
//! Not compared: vendor, family/model, cache and topology leaves, the TSC/crystal
//! frequency (0x15/0x16) and the address widths (0x8000_0008): the guest reads them
//! once at boot, and the VMM must keep them equal where it matters (see the report
//! of the snapshot work: KVM's TSC rate is the host's, emu's is 1 GHz).

use std::fmt;

use super::{lookup, CpuidEntry};

/// A CPUID output register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

impl Reg {
    fn of(self, e: &CpuidEntry) -> u32 {
        match self {
            Reg::Eax => e.eax,
            Reg::Ebx => e.ebx,
            Reg::Ecx => e.ecx,
            Reg::Edx => e.edx,
        }
    }

    /// The register of `e`, mutably.
    pub fn of_mut(self, e: &mut CpuidEntry) -> &mut u32 {
        match self {
            Reg::Eax => &mut e.eax,
            Reg::Ebx => &mut e.ebx,
            Reg::Ecx => &mut e.ecx,
            Reg::Edx => &mut e.edx,
        }
    }
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reg::Eax => "EAX",
            Reg::Ebx => "EBX",
            Reg::Ecx => "ECX",
            Reg::Edx => "EDX",
        })
    }
}

/// One feature-flag register the contract compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureRegister {
    pub function: u32,
    pub index: u32,
    pub reg: Reg,
    /// The bits that are features (others are ignored).
    pub mask: u32,
}

const fn fr(function: u32, index: u32, reg: Reg, mask: u32) -> FeatureRegister {
    FeatureRegister {
        function,
        index,
        reg,
        mask,
    }
}

const FEATURE_REGISTERS: &[FeatureRegister] = &[
    fr(1, 0, Reg::Ecx, !(1 << 27)),
    fr(1, 0, Reg::Edx, !(1 << 28)),
    fr(6, 0, Reg::Eax, !0),
    fr(7, 0, Reg::Ebx, !0),
    fr(7, 0, Reg::Ecx, !(1 << 4)),
    fr(7, 0, Reg::Edx, !0),
    fr(7, 1, Reg::Eax, !0),
    fr(0xd, 0, Reg::Eax, !0),
    fr(0xd, 1, Reg::Eax, !0),
    fr(0x8000_0001, 0, Reg::Ecx, !0),
    fr(0x8000_0001, 0, Reg::Edx, !0),
    fr(0x8000_0007, 0, Reg::Edx, 1 << 8),
];

/// The hypervisor feature leaf, compared under a matching signature.
const HV_FEATURES: FeatureRegister = fr(0x4000_0001, 0, Reg::Eax, !0);

/// The registers the contract compares (without the hypervisor leaf), so that an
/// accelerator can restrict its own table to a baseline on exactly these.
pub fn feature_registers() -> &'static [FeatureRegister] {
    FEATURE_REGISTERS
}

/// The first feature the guest saw that the target lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuidMismatch {
    pub function: u32,
    pub index: u32,
    pub reg: Reg,
    /// The bit, or None when a whole hypervisor interface is missing.
    pub bit: Option<u32>,
    /// The feature's name where known.
    pub name: Option<&'static str>,
}

impl fmt::Display for CpuidMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(bit) = self.bit else {
            return write!(
                f,
                "the guest uses a hypervisor interface (CPUID {:#x} {}) the target does not offer",
                self.function, self.reg
            );
        };
        let place = format!(
            "CPUID leaf {:#x} subleaf {} {} bit {bit}",
            self.function, self.index, self.reg
        );
        match self.name {
            Some(n) => write!(
                f,
                "the guest saw CPU feature `{n}` ({place}), which the target lacks"
            ),
            None => write!(
                f,
                "the guest saw CPU feature {place}, which the target lacks"
            ),
        }
    }
}

impl std::error::Error for CpuidMismatch {}

fn value(table: &[CpuidEntry], r: &FeatureRegister) -> u32 {
    lookup(table, r.function, r.index).map_or(0, |e| r.reg.of(e)) & r.mask
}

fn hv_signature(table: &[CpuidEntry]) -> Option<(u32, u32, u32)> {
    lookup(table, 0x4000_0000, 0).map(|e| (e.ebx, e.ecx, e.edx))
}

fn missing(r: &FeatureRegister, saved: u32, target: u32) -> Option<CpuidMismatch> {
    let lacking = saved & !target;
    (lacking != 0).then(|| {
        let bit = lacking.trailing_zeros();
        let name = super::names::names(r.function, r.index, r.reg)[bit as usize];
        CpuidMismatch {
            function: r.function,
            index: r.index,
            reg: r.reg,
            bit: Some(bit),
            name: (!name.is_empty()).then_some(name),
        }
    })
}

/// Checks that `target` offers every feature the guest saw in `saved` (see the
/// module documentation for what is compared). Returns the first one missing.
pub fn check_compatible(saved: &[CpuidEntry], target: &[CpuidEntry]) -> Result<(), CpuidMismatch> {
    for r in FEATURE_REGISTERS {
        if let Some(m) = missing(r, value(saved, r), value(target, r)) {
            return Err(m);
        }
    }
    let hv_saved = value(saved, &HV_FEATURES);
    if hv_saved != 0 {
        if hv_signature(saved) != hv_signature(target) {
            return Err(CpuidMismatch {
                function: HV_FEATURES.function,
                index: 0,
                reg: Reg::Eax,
                bit: None,
                name: None,
            });
        }
        if let Some(m) = missing(&HV_FEATURES, hv_saved, value(target, &HV_FEATURES)) {
            return Err(m);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32, ecx: u32, edx: u32) -> CpuidEntry {
        CpuidEntry {
            function,
            index,
            indexed: function == 7 || function == 0xd,
            ecx,
            edx,
            ..Default::default()
        }
    }

    #[test]
    fn a_missing_feature_is_refused_by_name() {
        let saved = [
            leaf(1, 0, (1 << 28) | (1 << 23), 1),
            leaf(0x8000_0001, 0, 0, 1 << 29),
        ];
        let target = [leaf(1, 0, 1 << 23, 1), leaf(0x8000_0001, 0, 0, 1 << 29)];
        let e = check_compatible(&saved, &target).unwrap_err();
        assert_eq!(
            (e.function, e.reg, e.bit, e.name),
            (1, Reg::Ecx, Some(28), Some("avx"))
        );
        assert!(e.to_string().contains("`avx`"), "{e}");
        // The other way round is fine: the target may offer more.
        check_compatible(&target, &saved).unwrap();
        // A missing leaf counts as zeros.
        let e = check_compatible(&saved, &saved[..1]).unwrap_err();
        assert_eq!(e.name, Some("lm"));
    }

    #[test]
    fn unnamed_bits_are_named_by_position_and_non_features_are_ignored() {
        let saved = [leaf(7, 0, 1 << 31, 0)];
        let e = check_compatible(&saved, &[]).unwrap_err();
        assert_eq!((e.function, e.index, e.bit, e.name), (7, 0, Some(31), None));
        assert!(
            e.to_string().contains("leaf 0x7 subleaf 0 ECX bit 31"),
            "{e}"
        );
        // OSXSAVE, OSPKE and HTT are not features.
        let saved = [leaf(1, 0, 1 << 27, 1 << 28), leaf(7, 0, 1 << 4, 0)];
        check_compatible(&saved, &[]).unwrap();
    }

    #[test]
    fn hypervisor_features_need_the_same_hypervisor() {
        let sig = |ebx| CpuidEntry {
            function: 0x4000_0000,
            ebx,
            ..Default::default()
        };
        let feat = |eax| CpuidEntry {
            function: 0x4000_0001,
            eax,
            ..Default::default()
        };
        let kvm = [sig(0x4b4d_564b), feat(1 << 3)];
        let e = check_compatible(&kvm, &[sig(0x6f6b_6148)]).unwrap_err();
        assert_eq!(e.bit, None);
        assert!(e.to_string().contains("hypervisor interface"), "{e}");
        let e = check_compatible(&kvm, &[sig(0x4b4d_564b), feat(0)]).unwrap_err();
        assert_eq!(e.name, Some("kvmclock"));
        check_compatible(&kvm, &kvm).unwrap();
    }
}
