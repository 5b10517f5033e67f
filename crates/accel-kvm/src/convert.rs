//! Conversion between the backend-neutral [`vmm_types`] CPU state and KVM's ABI
//! structures (`kvm_regs`, `kvm_sregs`, `kvm_fpu`, `kvm_msrs`).
//!
//! Everything here is plain data shuffling, so it is tested by round trips without
//! needing /dev/kvm.

use kvm_bindings::{kvm_dtable, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, Msrs};
use vmm_types::{DescriptorTable, FpuState, Regs, Segment, SpecialRegs};

/// Errors converting state to KVM's structures.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("too many MSRs for one KVM_SET_MSRS call ({0})")]
    TooManyMsrs(usize),
}

/// General-purpose registers to KVM.
pub fn regs_to_kvm(r: &Regs) -> kvm_regs {
    kvm_regs {
        rax: r.rax,
        rbx: r.rbx,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        rsp: r.rsp,
        rbp: r.rbp,
        r8: r.r8,
        r9: r.r9,
        r10: r.r10,
        r11: r.r11,
        r12: r.r12,
        r13: r.r13,
        r14: r.r14,
        r15: r.r15,
        rip: r.rip,
        rflags: r.rflags,
    }
}

/// General-purpose registers from KVM.
pub fn regs_from_kvm(k: &kvm_regs) -> Regs {
    Regs {
        rax: k.rax,
        rbx: k.rbx,
        rcx: k.rcx,
        rdx: k.rdx,
        rsi: k.rsi,
        rdi: k.rdi,
        rsp: k.rsp,
        rbp: k.rbp,
        r8: k.r8,
        r9: k.r9,
        r10: k.r10,
        r11: k.r11,
        r12: k.r12,
        r13: k.r13,
        r14: k.r14,
        r15: k.r15,
        rip: k.rip,
        rflags: k.rflags,
    }
}

/// One segment register to KVM.
pub fn segment_to_kvm(s: &Segment) -> kvm_segment {
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: s.present as u8,
        dpl: s.dpl,
        db: s.db as u8,
        s: s.s as u8,
        l: s.l as u8,
        g: s.g as u8,
        avl: s.avl as u8,
        unusable: s.unusable as u8,
        padding: 0,
    }
}

/// One segment register from KVM.
pub fn segment_from_kvm(k: &kvm_segment) -> Segment {
    Segment {
        base: k.base,
        limit: k.limit,
        selector: k.selector,
        type_: k.type_,
        present: k.present != 0,
        dpl: k.dpl,
        db: k.db != 0,
        s: k.s != 0,
        l: k.l != 0,
        g: k.g != 0,
        avl: k.avl != 0,
        unusable: k.unusable != 0,
    }
}

fn dtable_to_kvm(d: &DescriptorTable) -> kvm_dtable {
    kvm_dtable {
        base: d.base,
        limit: d.limit,
        padding: [0; 3],
    }
}

fn dtable_from_kvm(k: &kvm_dtable) -> DescriptorTable {
    DescriptorTable {
        base: k.base,
        limit: k.limit,
    }
}

/// Writes the special registers into `k`, keeping the fields the neutral state does
/// not carry (KVM's pending-interrupt bitmap) as they are.
pub fn sregs_to_kvm(s: &SpecialRegs, k: &mut kvm_sregs) {
    k.cs = segment_to_kvm(&s.cs);
    k.ds = segment_to_kvm(&s.ds);
    k.es = segment_to_kvm(&s.es);
    k.fs = segment_to_kvm(&s.fs);
    k.gs = segment_to_kvm(&s.gs);
    k.ss = segment_to_kvm(&s.ss);
    k.tr = segment_to_kvm(&s.tr);
    k.ldt = segment_to_kvm(&s.ldt);
    k.gdt = dtable_to_kvm(&s.gdt);
    k.idt = dtable_to_kvm(&s.idt);
    k.cr0 = s.cr0;
    k.cr2 = s.cr2;
    k.cr3 = s.cr3;
    k.cr4 = s.cr4;
    k.cr8 = s.cr8;
    k.efer = s.efer;
    k.apic_base = s.apic_base;
}

/// Special registers from KVM.
pub fn sregs_from_kvm(k: &kvm_sregs) -> SpecialRegs {
    SpecialRegs {
        cs: segment_from_kvm(&k.cs),
        ds: segment_from_kvm(&k.ds),
        es: segment_from_kvm(&k.es),
        fs: segment_from_kvm(&k.fs),
        gs: segment_from_kvm(&k.gs),
        ss: segment_from_kvm(&k.ss),
        tr: segment_from_kvm(&k.tr),
        ldt: segment_from_kvm(&k.ldt),
        gdt: dtable_from_kvm(&k.gdt),
        idt: dtable_from_kvm(&k.idt),
        cr0: k.cr0,
        cr2: k.cr2,
        cr3: k.cr3,
        cr4: k.cr4,
        cr8: k.cr8,
        efer: k.efer,
        apic_base: k.apic_base,
    }
}

/// x87/SSE state to KVM.
pub fn fpu_to_kvm(f: &FpuState) -> kvm_fpu {
    kvm_fpu {
        fpr: f.fpr,
        fcw: f.fcw,
        fsw: f.fsw,
        ftwx: f.ftwx,
        pad1: 0,
        last_opcode: f.last_opcode,
        last_ip: f.last_ip,
        last_dp: f.last_dp,
        xmm: f.xmm,
        mxcsr: f.mxcsr,
        pad2: 0,
    }
}

/// x87/SSE state from KVM.
pub fn fpu_from_kvm(k: &kvm_fpu) -> FpuState {
    FpuState {
        fpr: k.fpr,
        fcw: k.fcw,
        fsw: k.fsw,
        ftwx: k.ftwx,
        last_opcode: k.last_opcode,
        last_ip: k.last_ip,
        last_dp: k.last_dp,
        xmm: k.xmm,
        mxcsr: k.mxcsr,
    }
}

/// Writes the x87/SSE state into the legacy (FXSAVE-layout) part of an XSAVE area
/// (`kvm_xsave.region`) and marks x87 and SSE state present in XSTATE_BV, so that
/// KVM_SET_XSAVE loads all of it, MXCSR included (KVM_SET_FPU ignores MXCSR).
pub fn fpu_to_xsave(f: &FpuState, region: &mut [u32; 1024]) {
    let mut b = [0u8; 576];
    for (i, w) in region[..144].iter().enumerate() {
        b[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    b[0..2].copy_from_slice(&f.fcw.to_le_bytes());
    b[2..4].copy_from_slice(&f.fsw.to_le_bytes());
    b[4] = f.ftwx;
    b[6..8].copy_from_slice(&f.last_opcode.to_le_bytes());
    b[8..16].copy_from_slice(&f.last_ip.to_le_bytes());
    b[16..24].copy_from_slice(&f.last_dp.to_le_bytes());
    b[24..28].copy_from_slice(&f.mxcsr.to_le_bytes());
    for (i, r) in f.fpr.iter().enumerate() {
        b[32 + 16 * i..48 + 16 * i].copy_from_slice(r);
    }
    for (i, r) in f.xmm.iter().enumerate() {
        b[160 + 16 * i..176 + 16 * i].copy_from_slice(r);
    }
    // XSTATE_BV (header offset 512): bit 0 x87, bit 1 SSE.
    b[512] |= 0b11;
    for (i, w) in region[..144].iter_mut().enumerate() {
        *w = u32::from_le_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]]);
    }
}

/// MXCSR from an XSAVE area (byte 24 of the legacy region).
pub fn mxcsr_from_xsave(region: &[u32; 1024]) -> u32 {
    region[6]
}

/// (index, value) pairs to a `kvm_msrs` buffer.
pub fn msrs_to_kvm(msrs: &[(u32, u64)]) -> Result<Msrs, ConvertError> {
    let entries: Vec<kvm_msr_entry> = msrs
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    Msrs::from_entries(&entries).map_err(|_| ConvertError::TooManyMsrs(msrs.len()))
}

/// The first `count` entries of a `kvm_msrs` buffer as (index, value) pairs.
pub fn msrs_from_kvm(k: &Msrs, count: usize) -> Vec<(u32, u64)> {
    k.as_slice()
        .iter()
        .take(count)
        .map(|e| (e.index, e.data))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_types::msr;

    fn sample_regs() -> Regs {
        let mut r = Regs::default();
        r.set_gprs(std::array::from_fn(|i| {
            0x0101_0000_0000_0000 * (i as u64 + 1) + i as u64
        }));
        r.rip = 0xffff_ffff_8100_0000;
        r.rflags = 0x246;
        r
    }

    fn sample_sregs() -> SpecialRegs {
        SpecialRegs {
            cs: Segment::code64(0x10),
            ds: Segment::data(0x18),
            es: Segment::data(0x18),
            fs: Segment {
                base: 0x7fff_1234_5000,
                ..Segment::data(0)
            },
            gs: Segment {
                unusable: true,
                avl: true,
                ..Segment::data(0x2b)
            },
            ss: Segment::data(0x18),
            tr: Segment::tss(0x20, 0x1000, 0x67),
            ldt: Segment {
                unusable: true,
                ..Segment::default()
            },
            gdt: DescriptorTable {
                base: 0x500,
                limit: 0x27,
            },
            idt: DescriptorTable {
                base: 0x800,
                limit: 0xfff,
            },
            cr0: 0x8005_0033,
            cr2: 0xdead_b000,
            cr3: 0x9000,
            cr4: 0x6f0,
            cr8: 3,
            efer: 0xd01,
            apic_base: 0xfee0_0900,
        }
    }

    #[test]
    fn regs_round_trip() {
        let r = sample_regs();
        let k = regs_to_kvm(&r);
        assert_eq!(k.r15, r.r15);
        assert_eq!(k.rsp, r.rsp);
        assert_eq!(regs_from_kvm(&k), r);
    }

    #[test]
    fn sregs_round_trip_keeps_interrupt_bitmap() {
        let s = sample_sregs();
        let mut k = kvm_sregs {
            interrupt_bitmap: [0, 1 << 3, 0, 0],
            ..Default::default()
        };
        sregs_to_kvm(&s, &mut k);
        assert_eq!(k.interrupt_bitmap, [0, 1 << 3, 0, 0]);
        assert_eq!(k.cs.l, 1);
        assert_eq!(k.gs.unusable, 1);
        assert_eq!(k.tr.base, 0x1000);
        assert_eq!(sregs_from_kvm(&k), s);
    }

    #[test]
    fn fpu_round_trip() {
        let mut f = FpuState::default();
        f.fpr[3][9] = 0x40;
        f.xmm[15] = [0xab; 16];
        f.fsw = 0x3800;
        f.ftwx = 0x80;
        f.last_ip = 0x1234;
        let k = fpu_to_kvm(&f);
        assert_eq!(k.fcw, 0x37f);
        assert_eq!(k.mxcsr, 0x1f80);
        assert_eq!(fpu_from_kvm(&k), f);
    }

    #[test]
    fn fpu_to_xsave_legacy_layout() {
        let mut f = FpuState::default();
        f.fpr[1] = [7; 16];
        f.xmm[2] = [9; 16];
        f.mxcsr = 0x1fa0;
        f.fsw = 0x1234;
        f.last_dp = 0x1122_3344_5566_7788;
        let mut region = [0u32; 1024];
        region[128] = 0b100; // AVX state present stays present
        region[200] = 0xdead; // extended state untouched
        fpu_to_xsave(&f, &mut region);
        assert_eq!(region[0], 0x1234_037f);
        assert_eq!(mxcsr_from_xsave(&region), 0x1fa0);
        assert_eq!(region[4], 0x5566_7788);
        assert_eq!(region[5], 0x1122_3344);
        assert_eq!(region[(32 + 16) / 4], 0x0707_0707);
        assert_eq!(region[(160 + 32) / 4], 0x0909_0909);
        assert_eq!(region[128], 0b111);
        assert_eq!(region[200], 0xdead);
    }

    #[test]
    fn msrs_round_trip() {
        let list = vec![
            (msr::IA32_PAT, msr::PAT_RESET),
            (msr::IA32_LSTAR, 0xffff_ffff_8180_0000),
            (msr::IA32_MISC_ENABLE, 1),
        ];
        let k = msrs_to_kvm(&list).unwrap();
        assert_eq!(k.as_slice().len(), 3);
        assert_eq!(msrs_from_kvm(&k, 3), list);
        assert_eq!(msrs_from_kvm(&k, 2), list[..2].to_vec());
    }
}
