//! The state a 32-bit protected-mode entry expects (the Multiboot machine state,
//! Multiboot Specification 0.6.96 section 3.2): protected mode with paging off,
//! flat 4 GiB code and data segments, interrupts off, no long mode.

use vmm_types::bits::*;
use vmm_types::{msr, CpuState, DescriptorTable, Regs, Segment, SpecialRegs};

/// Selectors of the GDT [`gdt_entries`] builds.
pub const CODE32: u16 = 0x08;
pub const DATA32: u16 = 0x10;
pub const TSS32: u16 = 0x18;

/// A flat 32-bit execute/read code segment (ring 0).
pub fn code32() -> Segment {
    Segment {
        db: true,
        l: false,
        ..Segment::code64(CODE32)
    }
}

/// A busy 32-bit TSS at address 0 (never switched to: it only makes TR valid).
fn tss32() -> Segment {
    Segment::tss(TSS32, 0, 0x67)
}

/// GDT: null, code32 (0x08), data (0x10), busy 32-bit TSS (0x18).
pub fn gdt_entries() -> [u64; 4] {
    [
        0,
        code32().to_gdt_entry(),
        Segment::data(DATA32).to_gdt_entry(),
        tss32().to_gdt_entry(),
    ]
}

/// The boot CPU's state for a 32-bit entry at `entry` with the GDT of
/// [`gdt_entries`] at `gdt_base`, and EAX/EBX as given.
pub fn entry_state(entry: u32, gdt_base: u64, eax: u32, ebx: u32) -> CpuState {
    let data = Segment::data(DATA32);
    let sregs = SpecialRegs {
        cs: code32(),
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: tss32(),
        ldt: Segment {
            unusable: true,
            type_: 2,
            ..Default::default()
        },
        gdt: DescriptorTable {
            base: gdt_base,
            limit: (gdt_entries().len() * 8 - 1) as u16,
        },
        idt: DescriptorTable { base: 0, limit: 0 },
        cr0: CR0_PE | CR0_ET,
        cr2: 0,
        cr3: 0,
        cr4: 0,
        cr8: 0,
        efer: 0,
        apic_base: 0xfee0_0000 | (1 << 11) | (1 << 8),
    };
    let regs = Regs {
        rax: eax as u64,
        rbx: ebx as u64,
        rip: entry as u64,
        rflags: RFLAGS_FIXED,
        ..Default::default()
    };
    CpuState {
        regs,
        sregs,
        fpu: Default::default(),
        msrs: vec![(msr::IA32_PAT, msr::PAT_RESET), (msr::IA32_MISC_ENABLE, 1)],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_segments_paging_off_interrupts_off() {
        let s = entry_state(0x10_000c, 0x9000, 0x2bad_b002, 0x12_3000);
        assert_eq!(s.regs.rip, 0x10_000c);
        assert_eq!((s.regs.rax, s.regs.rbx), (0x2bad_b002, 0x12_3000));
        assert_eq!(s.regs.rflags & (RFLAGS_IF | RFLAGS_VM), 0);
        assert_eq!(s.sregs.cr0 & (CR0_PE | CR0_PG), CR0_PE);
        assert_eq!(s.sregs.efer & EFER_LMA, 0);
        let r = &s.sregs;
        for seg in [r.cs, r.ds, r.es, r.fs, r.gs, r.ss] {
            assert_eq!(
                (seg.base, seg.limit, seg.db, seg.l, seg.g),
                (0, 0xffff_ffff, true, false, true)
            );
        }
        assert_eq!(r.cs.type_ & 0xa, 0xa, "execute/read");
        assert_eq!(r.ds.type_ & 0xa, 0x2, "read/write data");
        // The GDT holds what the segment registers' hidden parts say.
        let gdt = gdt_entries();
        assert_eq!(gdt[(r.cs.selector / 8) as usize], r.cs.to_gdt_entry());
        assert_eq!(gdt[(r.ds.selector / 8) as usize], r.ds.to_gdt_entry());
    }
}
