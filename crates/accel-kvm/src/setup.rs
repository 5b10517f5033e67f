//! The per-vCPU state a Linux guest expects at entry, beyond registers: MSR values,
//! and local APIC LINT0/LINT1 wired the way a PC BIOS leaves them.

use kvm_bindings::kvm_lapic_state;
use vmm_types::msr;

/// MSR values at boot: (index, value).
pub fn boot_msrs() -> Vec<(u32, u64)> {
    vec![
        (msr::IA32_SYSENTER_CS, 0),
        (msr::IA32_SYSENTER_ESP, 0),
        (msr::IA32_SYSENTER_EIP, 0),
        (msr::IA32_STAR, 0),
        (msr::IA32_CSTAR, 0),
        (msr::IA32_LSTAR, 0),
        (msr::IA32_FMASK, 0),
        (msr::IA32_KERNEL_GS_BASE, 0),
        (msr::IA32_TSC, 0),
        // Fast-string operations enabled (bit 0), as firmware leaves it.
        (msr::IA32_MISC_ENABLE, 1),
        (msr::IA32_PAT, msr::PAT_RESET),
        // MTRRs enabled (bit 11) with write-back (6) as the default memory type.
        (msr::IA32_MTRR_DEF_TYPE, (1 << 11) | 6),
    ]
}

/// Local APIC register offsets (Intel SDM Vol. 3A, table 11-1).
const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
/// LVT delivery modes (bits 10:8).
const DELIVERY_EXTINT: u32 = 0b111;
const DELIVERY_NMI: u32 = 0b100;

fn get_reg(l: &kvm_lapic_state, off: usize) -> u32 {
    let b: [u8; 4] = std::array::from_fn(|i| l.regs[off + i] as u8);
    u32::from_le_bytes(b)
}

fn set_reg(l: &mut kvm_lapic_state, off: usize, v: u32) {
    for (i, b) in v.to_le_bytes().into_iter().enumerate() {
        l.regs[off + i] = b as _;
    }
}

fn with_delivery_mode(lvt: u32, mode: u32) -> u32 {
    (lvt & !0x700) | (mode << 8)
}

/// LINT0 delivers the 8259's ExtINT (virtual-wire mode), LINT1 delivers NMI, as the
/// MP specification's virtual wire mode describes; the mask bits are left as they are
/// (KVM resets the boot CPU's LINT0 unmasked, the APs' masked, as a BIOS leaves them).
pub fn set_lint_virtual_wire(l: &mut kvm_lapic_state) {
    let lint0 = get_reg(l, APIC_LVT_LINT0);
    set_reg(
        l,
        APIC_LVT_LINT0,
        with_delivery_mode(lint0, DELIVERY_EXTINT),
    );
    let lint1 = get_reg(l, APIC_LVT_LINT1);
    set_reg(l, APIC_LVT_LINT1, with_delivery_mode(lint1, DELIVERY_NMI));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint_modes() {
        let mut l = kvm_lapic_state::default();
        // Reset value of an LVT entry: masked (bit 16), fixed delivery.
        set_reg(&mut l, APIC_LVT_LINT0, 0x1_0000);
        set_reg(&mut l, APIC_LVT_LINT1, 0x1_0000);
        set_reg(&mut l, 0x370, 0xdead_beef);
        set_lint_virtual_wire(&mut l);
        assert_eq!(get_reg(&l, APIC_LVT_LINT0), 0x1_0700);
        assert_eq!(get_reg(&l, APIC_LVT_LINT1), 0x1_0400);
        assert_eq!(get_reg(&l, 0x370), 0xdead_beef);
    }

    #[test]
    fn boot_msrs_have_fast_strings_and_pat() {
        let m = boot_msrs();
        assert!(m.contains(&(msr::IA32_MISC_ENABLE, 1)));
        assert!(m.contains(&(msr::IA32_PAT, msr::PAT_RESET)));
    }
}
