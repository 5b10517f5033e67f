//! Control transfer: jumps, calls, returns, loops, software interrupts,
//! IRET, SYSCALL/SYSRET and far transfers.

use iced_x86::{Code, Instruction, Mnemonic as M, OpKind};
use vmm_types::{bits, Segment};

use crate::bus::Bus;
use crate::cpu::{Cpu, CS, RCX, SS};
use crate::exception::{EventKind, Exc, XResult};
use crate::flags::{self, mask};

fn loop_counter_size(c: Code) -> u8 {
    use Code::*;
    match c {
        Loop_rel8_16_CX | Loop_rel8_32_CX | Loope_rel8_16_CX | Loope_rel8_32_CX
        | Loopne_rel8_16_CX | Loopne_rel8_32_CX => 2,
        Loop_rel8_16_RCX | Loop_rel8_64_RCX | Loope_rel8_16_RCX | Loope_rel8_64_RCX
        | Loopne_rel8_16_RCX | Loopne_rel8_64_RCX => 8,
        _ => 4,
    }
}

fn canonical(a: u64) -> bool {
    ((a as i64) << 16 >> 16) as u64 == a
}

impl Cpu {
    /// Masks a branch target to the operand size outside 64-bit mode.
    #[inline]
    fn branch_to(&mut self, target: u64, size: u8) -> XResult<()> {
        let t = if self.bitness == 64 {
            target
        } else {
            target & mask(size.min(4))
        };
        if self.bitness == 64 && !canonical(t) {
            return Err(Exc::gp(0));
        }
        self.rip = t;
        Ok(())
    }

    /// Near target of a direct or indirect branch.
    #[inline]
    fn near_target(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<(u64, u8)> {
        match i.op_kind(0) {
            OpKind::NearBranch16 => Ok((i.near_branch_target(), 2)),
            OpKind::NearBranch32 => Ok((i.near_branch_target(), 4)),
            OpKind::NearBranch64 => Ok((i.near_branch_target(), 8)),
            _ => {
                let size = self.op_size(i, 0);
                Ok((self.rd(bus, i, 0, size)?, size))
            }
        }
    }

    /// JMP/CALL/RET/Jcc/LOOP/JrCXZ (near).
    pub(crate) fn near_branch(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        match i.mnemonic() {
            M::Jmp => {
                let (t, s) = self.near_target(bus, i)?;
                self.branch_to(t, s)
            }
            M::Call => {
                let (t, s) = self.near_target(bus, i)?;
                let ss = self.stack_op_size(i);
                let save_sp = self.gpr[4];
                self.push(bus, ss, i.next_ip())?;
                if let Err(e) = self.branch_to(t, s) {
                    self.gpr[4] = save_sp;
                    return Err(e);
                }
                Ok(())
            }
            M::Ret => {
                let ss = if self.bitness == 64 {
                    8
                } else {
                    self.stack_op_size(i).min(4)
                };
                let t = self.pop(bus, ss)?;
                if i.op_count() > 0 {
                    let n = i.immediate(0);
                    self.gpr[4] = self.gpr[4].wrapping_add(n);
                }
                self.branch_to(t, ss)
            }
            M::Jrcxz | M::Jecxz | M::Jcxz => {
                let m = match i.mnemonic() {
                    M::Jrcxz => u64::MAX,
                    M::Jecxz => 0xffff_ffff,
                    _ => 0xffff,
                };
                if self.gpr[RCX] & m == 0 {
                    let (t, s) = self.near_target(bus, i)?;
                    self.branch_to(t, s)?;
                }
                Ok(())
            }
            M::Loop | M::Loope | M::Loopne => {
                let cs = loop_counter_size(i.code());
                let m = mask(cs);
                let c = self.gpr[RCX].wrapping_sub(1) & m;
                self.gpr[RCX] = (self.gpr[RCX] & !m) | c;
                let take = c != 0
                    && match i.mnemonic() {
                        M::Loope => self.flags.zf(),
                        M::Loopne => !self.flags.zf(),
                        _ => true,
                    };
                if take {
                    let (t, s) = self.near_target(bus, i)?;
                    self.branch_to(t, s)?;
                }
                Ok(())
            }
            _ => {
                // Jcc
                let cc = i.condition_code() as u8;
                if self.flags.cond(cc_to_x86(cc)) {
                    let (t, s) = self.near_target(bus, i)?;
                    self.branch_to(t, s)?;
                }
                Ok(())
            }
        }
    }

    /// INT n / INT3 / INTO / INT1.
    #[inline(never)]
    pub(crate) fn soft_int(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        let (v, kind) = match i.mnemonic() {
            M::Int3 => (3, EventKind::Software),
            M::Into => {
                if !self.flags.of() {
                    return Ok(());
                }
                (4, EventKind::Software)
            }
            M::Int1 => (1, EventKind::External),
            _ => (i.immediate(0) as u8, EventKind::Software),
        };
        self.deliver(bus, v, None, kind, i.next_ip())
    }

    /// IRET/IRETD/IRETQ.
    #[inline(never)]
    pub(crate) fn iret(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        let was_if = self.flags.rflags & flags::IF != 0;
        let size: u8 = match i.code() {
            Code::Iretq => 8,
            Code::Iretd => 4,
            _ => 2,
        };
        if self.cr0 & bits::CR0_PE == 0 {
            let ip = self.pop(bus, size)?;
            let cs = self.pop(bus, size)? as u16;
            let fl = self.pop(bus, size)?;
            self.load_real_seg(CS, cs);
            self.rip = ip;
            let keep = if size == 2 {
                !0xffffu64
            } else {
                flags::VM | flags::VIF | flags::VIP
            };
            self.flags.load((self.flags.get() & keep) | (fl & !keep));
            return Ok(());
        }
        let ip = self.peek(bus, 0, size)?;
        let cs = self.peek(bus, size as u64, size)? as u16;
        let fl = self.peek(bus, 2 * size as u64, size)?;
        let new_cpl = (cs & 3) as u8;
        if new_cpl < self.cpl {
            return Err(Exc::gp(cs as u32 & !3));
        }
        let long = self.efer & bits::EFER_LMA != 0;
        let (sp, ss) = if long || new_cpl > self.cpl {
            (
                self.peek(bus, 3 * size as u64, size)?,
                self.peek(bus, 4 * size as u64, size)? as u16,
            )
        } else {
            (
                self.gpr[4].wrapping_add(3 * size as u64),
                self.seg[SS].selector,
            )
        };
        let old_cpl = self.cpl;
        let iopl = ((self.flags.get() & flags::IOPL) >> 12) as u8;
        self.load_cs(bus, cs, new_cpl)?;
        if long || new_cpl > old_cpl {
            if ss & !3 == 0 {
                let mut s = Segment::data(ss);
                s.dpl = new_cpl;
                s.unusable = true;
                self.seg[SS] = s;
            } else {
                let mut d = self.load_descriptor(bus, ss)?;
                d.selector = ss;
                self.seg[SS] = d;
            }
            self.gpr[4] = if size == 8 { sp } else { sp & mask(size) };
        } else {
            self.gpr[4] = sp;
        }
        // RFLAGS: IOPL changes only at CPL 0, IF only if CPL <= IOPL.
        let mut changeable =
            flags::ARITH | flags::TF | flags::DF | flags::NT | flags::AC | flags::ID | flags::RF;
        if old_cpl == 0 {
            changeable |= flags::IOPL | flags::IF;
        } else if old_cpl <= iopl {
            changeable |= flags::IF;
        }
        if size == 2 {
            changeable &= 0xffff;
        }
        let cur = self.flags.get();
        self.flags.load((cur & !changeable) | (fl & changeable));
        self.rip = ip;
        if new_cpl > old_cpl {
            // Null data segments the outer level may not use.
            for s in [
                crate::cpu::DS,
                crate::cpu::ES,
                crate::cpu::FS,
                crate::cpu::GS,
            ] {
                let seg = &mut self.seg[s];
                if seg.dpl < new_cpl
                    && !(seg.type_ & 8 != 0 && seg.type_ & 4 != 0)
                    && seg.selector & !3 != 0
                {
                    seg.selector = 0;
                    seg.unusable = true;
                }
            }
        }
        self.int_shadow = false;
        // Interrupts just became deliverable: let the platform look.
        if !was_if && self.flags.rflags & flags::IF != 0 {
            self.stop = true;
        }
        Ok(())
    }

    /// SYSCALL.
    #[inline(never)]
    pub(crate) fn syscall(&mut self, i: &Instruction) -> XResult<()> {
        if self.efer & bits::EFER_SCE == 0 || self.efer & bits::EFER_LMA == 0 {
            return Err(Exc::ud());
        }
        self.gpr[RCX] = i.next_ip();
        let fl = self.flags.get();
        self.gpr[11] = fl & !flags::RF;
        self.flags.load(fl & !self.msrs.fmask & !flags::RF);
        let sel = ((self.msrs.star >> 32) & 0xfffc) as u16;
        self.seg[CS] = Segment::code64(sel);
        let mut ss = Segment::data(sel + 8);
        ss.dpl = 0;
        self.seg[SS] = ss;
        self.cpl = 0;
        self.rip = self.msrs.lstar;
        self.update_mode();
        Ok(())
    }

    /// SYSRET (to 64-bit or compatibility mode).
    #[inline(never)]
    pub(crate) fn sysret(&mut self, i: &Instruction) -> XResult<()> {
        if self.efer & bits::EFER_SCE == 0 || self.efer & bits::EFER_LMA == 0 {
            return Err(Exc::ud());
        }
        if self.cpl != 0 {
            return Err(Exc::gp(0));
        }
        let base = ((self.msrs.star >> 48) & 0xffff) as u16;
        let to64 = i.code() == Code::Sysretq;
        if to64 && !canonical(self.gpr[RCX]) {
            return Err(Exc::gp(0));
        }
        let mut cs = if to64 {
            Segment::code64((base + 16) | 3)
        } else {
            let mut c = Segment::data(base | 3);
            c.type_ = 0xb;
            c
        };
        cs.dpl = 3;
        self.seg[CS] = cs;
        let mut ss = Segment::data((base + 8) | 3);
        ss.dpl = 3;
        self.seg[SS] = ss;
        self.cpl = 3;
        self.rip = if to64 {
            self.gpr[RCX]
        } else {
            self.gpr[RCX] & 0xffff_ffff
        };
        let was_if = self.flags.rflags & flags::IF != 0;
        self.flags.load((self.gpr[11] & 0x3c_7fd7) | 2);
        self.update_mode();
        if !was_if && self.flags.rflags & flags::IF != 0 {
            self.stop = true;
        }
        Ok(())
    }

    /// Far JMP/CALL/RET.
    #[inline(never)]
    pub(crate) fn far_branch(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        let mn = i.mnemonic();
        if mn == M::Retf {
            let size: u8 = match i.code() {
                Code::Retfq | Code::Retfq_imm16 => 8,
                Code::Retfd | Code::Retfd_imm16 => 4,
                _ => 2,
            };
            let ip = self.peek(bus, 0, size)?;
            let cs = self.peek(bus, size as u64, size)? as u16;
            let imm = if i.op_count() > 0 { i.immediate(0) } else { 0 };
            let new_cpl = if self.cr0 & bits::CR0_PE != 0 {
                (cs & 3) as u8
            } else {
                0
            };
            if new_cpl > self.cpl {
                let sp = self.peek(bus, 2 * size as u64 + imm, size)?;
                let ss = self.peek(bus, 3 * size as u64 + imm, size)? as u16;
                self.load_cs(bus, cs, new_cpl)?;
                self.load_seg(bus, SS, ss)?;
                self.gpr[4] = sp;
            } else {
                self.load_cs(bus, cs, new_cpl.max(self.cpl))?;
                self.gpr[4] = self.gpr[4].wrapping_add(2 * size as u64 + imm);
            }
            self.rip = ip;
            return Ok(());
        }
        let (sel, off, size) = match i.op_kind(0) {
            OpKind::FarBranch16 => (i.far_branch_selector(), i.far_branch16() as u64, 2u8),
            OpKind::FarBranch32 => (i.far_branch_selector(), i.far_branch32() as u64, 4u8),
            _ => {
                // m16:16/32/64
                let a = self.ea(i);
                let msize = i.memory_size().size() as u8;
                let osz = msize - 2;
                let off = self.read_lin(bus, a, osz as usize)?;
                let sel = self.read_lin(bus, a + osz as u64, 2)? as u16;
                (sel, off, osz)
            }
        };
        if mn == M::Call {
            let old_cs = self.seg[CS].selector as u64;
            self.push(bus, size, old_cs)?;
            self.push(bus, size, i.next_ip())?;
        }
        let cpl = self.cpl;
        self.load_cs(bus, sel, cpl)?;
        self.rip = off;
        Ok(())
    }

    /// ENTER.
    #[inline(never)]
    pub(crate) fn enter(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        let size = self.stack_op_size(i);
        let alloc = i.immediate(0) & 0xffff;
        let level = i.immediate(1) & 31;
        let rbp = self.gpr[5];
        self.push(bus, size, rbp)?;
        let frame = self.gpr[4];
        for k in 1..level {
            let v = self.read_lin(
                bus,
                self.lin(SS, rbp.wrapping_sub(k * size as u64)),
                size as usize,
            )?;
            self.push(bus, size, v)?;
        }
        if level > 0 {
            self.push(bus, size, frame)?;
        }
        self.set_reg_sized(5, size, frame);
        self.gpr[4] = self.gpr[4].wrapping_sub(alloc);
        Ok(())
    }

    /// LEAVE.
    #[inline(never)]
    pub(crate) fn leave(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        let size = self.stack_op_size(i);
        let ss = self.stack_size();
        let save = self.gpr[4];
        self.gpr[4] = (self.gpr[4] & !mask(ss)) | (self.gpr[5] & mask(ss));
        match self.pop(bus, size) {
            Ok(v) => {
                self.set_reg_sized(5, size, v);
                Ok(())
            }
            Err(e) => {
                self.gpr[4] = save;
                Err(e)
            }
        }
    }

    /// Writes GPR `n` with `size`-byte semantics.
    pub(crate) fn set_reg_sized(&mut self, n: usize, size: u8, v: u64) {
        let g = &mut self.gpr[n];
        match size {
            1 => *g = (*g & !0xff) | (v & 0xff),
            2 => *g = (*g & !0xffff) | (v & 0xffff),
            4 => *g = v & 0xffff_ffff,
            _ => *g = v,
        }
    }
}

/// iced's ConditionCode order to the x86 encoding's condition number.
fn cc_to_x86(cc: u8) -> u8 {
    // iced: None=0, o=1, no=2, b=3, ae=4, e=5, ne=6, be=7, a=8, s=9, ns=10, p=11, np=12, l=13, ge=14, le=15, g=16
    cc.wrapping_sub(1)
}
