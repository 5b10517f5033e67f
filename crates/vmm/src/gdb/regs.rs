//! vCPU state to GDB's x86-64 register set (64bit-core + 64bit-sse) and back.

use gdbstub_arch::x86::reg::X86_64CoreRegs;
use vmm_types::CpuState;

/// GDB's order: RAX, RBX, RCX, RDX, RSI, RDI, RBP, RSP, R8..R15.
fn gdb_order(s: &CpuState) -> [u64; 16] {
    let r = &s.regs;
    [
        r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15,
    ]
}

/// The full x87 tag word from FXSAVE's abridged one: empty (3) or valid (0); GDB
/// only tells empty from not.
fn full_tag(ftwx: u8) -> u32 {
    (0..8).fold(0, |t, i| {
        t | if ftwx & (1 << i) != 0 {
            0
        } else {
            3 << (2 * i)
        }
    })
}

fn abridged_tag(ftag: u32) -> u8 {
    (0..8).fold(0, |t, i| {
        t | if (ftag >> (2 * i)) & 3 != 3 {
            1 << i
        } else {
            0
        }
    })
}

pub fn to_gdb(s: &CpuState) -> X86_64CoreRegs {
    let mut r = X86_64CoreRegs {
        regs: gdb_order(s),
        eflags: s.regs.rflags as u32,
        rip: s.regs.rip,
        ..Default::default()
    };
    let sr = &s.sregs;
    r.segments.cs = sr.cs.selector.into();
    r.segments.ss = sr.ss.selector.into();
    r.segments.ds = sr.ds.selector.into();
    r.segments.es = sr.es.selector.into();
    r.segments.fs = sr.fs.selector.into();
    r.segments.gs = sr.gs.selector.into();
    let f = &s.fpu;
    for (d, src) in r.st.iter_mut().zip(&f.fpr) {
        d.copy_from_slice(&src[..10]);
    }
    r.fpu.fctrl = f.fcw.into();
    r.fpu.fstat = f.fsw.into();
    r.fpu.ftag = full_tag(f.ftwx);
    r.fpu.fioff = f.last_ip as u32;
    r.fpu.fiseg = (f.last_ip >> 32) as u32;
    r.fpu.fooff = f.last_dp as u32;
    r.fpu.foseg = (f.last_dp >> 32) as u32;
    r.fpu.fop = f.last_opcode.into();
    for (d, x) in r.xmm.iter_mut().zip(&f.xmm) {
        *d = u128::from_le_bytes(*x);
    }
    r.mxcsr = f.mxcsr;
    r
}

/// Writes what GDB may change (GPRs, RIP, RFLAGS, x87 and SSE) into `s`; segment
/// selectors are kept (a selector alone would leave the hidden part stale).
pub fn from_gdb(r: &X86_64CoreRegs, s: &mut CpuState) {
    let g = r.regs;
    let x = &mut s.regs;
    [
        x.rax, x.rbx, x.rcx, x.rdx, x.rsi, x.rdi, x.rbp, x.rsp, x.r8, x.r9, x.r10, x.r11, x.r12,
        x.r13, x.r14, x.r15,
    ] = g;
    x.rip = r.rip;
    x.rflags = u64::from(r.eflags) | 2;
    let f = &mut s.fpu;
    for (d, src) in f.fpr.iter_mut().zip(&r.st) {
        d[..10].copy_from_slice(src);
    }
    f.fcw = r.fpu.fctrl as u16;
    f.fsw = r.fpu.fstat as u16;
    f.ftwx = abridged_tag(r.fpu.ftag);
    f.last_opcode = r.fpu.fop as u16;
    f.last_ip = u64::from(r.fpu.fioff) | u64::from(r.fpu.fiseg) << 32;
    f.last_dp = u64::from(r.fpu.fooff) | u64::from(r.fpu.foseg) << 32;
    for (d, x) in f.xmm.iter_mut().zip(&r.xmm) {
        *d = x.to_le_bytes();
    }
    f.mxcsr = r.mxcsr;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_round_trip_in_gdb_order() {
        let mut s = CpuState::default();
        s.regs.rax = 1;
        s.regs.rbx = 2;
        s.regs.rsp = 8;
        s.regs.r15 = 16;
        s.regs.rip = 0xffff_ffff_8100_0000;
        s.regs.rflags = 0x246;
        s.sregs.cs.selector = 0x10;
        s.fpu.xmm[3] = [7; 16];
        s.fpu.ftwx = 0b1000_0001;
        let r = to_gdb(&s);
        assert_eq!(r.regs[0], 1);
        assert_eq!(r.regs[1], 2);
        assert_eq!(r.regs[7], 8);
        assert_eq!(r.regs[15], 16);
        assert_eq!(r.segments.cs, 0x10);
        assert_eq!(r.fpu.ftag, 0x3ffc);
        let mut back = CpuState {
            sregs: s.sregs,
            ..Default::default()
        };
        from_gdb(&r, &mut back);
        assert_eq!(back.regs, s.regs);
        assert_eq!(back.fpu, s.fpu);
    }
}
