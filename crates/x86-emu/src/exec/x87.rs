//! x87 arithmetic, loads, stores and compares: operand plumbing around
//! [`crate::x87::X87State`] (emusimd's pure x87 model).
//!
//! The CPU keeps the x87 registers in FXSAVE form ([`crate::cpu::FpuRegs`]); each
//! instruction converts to the model and back. x87 code is rare in what a Linux
//! guest runs, so the conversion cost does not matter.

use iced_x86::{Instruction, MemorySize, Mnemonic as M, OpKind, Register};

use crate::bus::Bus;
use crate::cpu::Cpu;
use crate::exception::{Exc, XResult};
use crate::x87::ops::{CmpKind, Src, X87Op};
use crate::x87::X87State;

fn st_index(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::ST0 as usize) & 7
}

impl Cpu {
    fn x87_load(&self) -> X87State {
        let f = &self.fpu;
        X87State::from_fxsave_fields(&f.fpr, f.fcw, f.fsw, f.ftwx, f.fop, f.fip, f.fdp)
    }

    fn x87_store(&mut self, s: &X87State) {
        self.fpu.fpr = s.st_order();
        self.fpu.fcw = s.fcw;
        self.fpu.fsw = s.fsw;
        self.fpu.ftwx = s.abridged_tags();
    }

    fn read_m80(&mut self, bus: &mut dyn Bus, a: u64) -> XResult<u128> {
        let lo = self.read_lin(bus, a, 8)? as u128;
        let hi = self.read_lin(bus, a + 8, 2)? as u128;
        Ok(lo | hi << 64)
    }

    /// The memory or ST(i) source operand `n` of an arithmetic/compare instruction.
    fn x87_src(&mut self, bus: &mut dyn Bus, i: &Instruction, n: u32) -> XResult<Src> {
        if i.op_kind(n) == OpKind::Register {
            return Ok(Src::St(st_index(i.op_register(n))));
        }
        let a = self.ea(i);
        Ok(match i.memory_size() {
            MemorySize::Float32 => Src::M32(self.read_lin(bus, a, 4)? as u32),
            MemorySize::Float64 => Src::M64(self.read_lin(bus, a, 8)?),
            MemorySize::Int16 => Src::Int(self.read_lin(bus, a, 2)? as u16 as i16 as i64),
            MemorySize::Int32 => Src::Int(self.read_lin(bus, a, 4)? as u32 as i32 as i64),
            _ => return Err(Exc::ud()),
        })
    }

    /// Executes an x87 instruction; `None` if `i` is not one handled here.
    #[inline(never)]
    pub(crate) fn x87(&mut self, bus: &mut dyn Bus, i: &Instruction) -> Option<XResult<()>> {
        let mn = i.mnemonic();
        let op = match mn {
            M::Fadd | M::Faddp | M::Fiadd => Some(X87Op::Add),
            M::Fsub | M::Fsubp | M::Fisub => Some(X87Op::Sub),
            M::Fsubr | M::Fsubrp | M::Fisubr => Some(X87Op::SubR),
            M::Fmul | M::Fmulp | M::Fimul => Some(X87Op::Mul),
            M::Fdiv | M::Fdivp | M::Fidiv => Some(X87Op::Div),
            M::Fdivr | M::Fdivrp | M::Fidivr => Some(X87Op::DivR),
            _ => None,
        };
        let handled = op.is_some()
            || matches!(
                mn,
                M::Fld
                    | M::Fild
                    | M::Fldz
                    | M::Fld1
                    | M::Fst
                    | M::Fstp
                    | M::Fist
                    | M::Fistp
                    | M::Fxch
                    | M::Fchs
                    | M::Fabs
                    | M::Fsqrt
                    | M::Fcom
                    | M::Fcomp
                    | M::Fcompp
                    | M::Fucom
                    | M::Fucomp
                    | M::Fucompp
                    | M::Fcomi
                    | M::Fcomip
                    | M::Fucomi
                    | M::Fucomip
                    | M::Ftst
                    | M::Fxam
                    | M::Ffree
                    | M::Fincstp
                    | M::Fdecstp
            );
        if !handled {
            return None;
        }
        Some((|| {
            if self.cr0 & (vmm_types::bits::CR0_EM | vmm_types::bits::CR0_TS) != 0 {
                return Err(Exc::nm());
            }
            let mut s = self.x87_load();
            if let Some(op) = op {
                let pop = matches!(
                    mn,
                    M::Faddp | M::Fsubp | M::Fsubrp | M::Fmulp | M::Fdivp | M::Fdivrp
                );
                if i.op_count() == 2 {
                    // ST(0) op= ST(i)  or  ST(i) op= ST(0)
                    let dst = st_index(i.op_register(0));
                    let src = st_index(i.op_register(1));
                    s.arith(op, dst, Src::St(src), pop);
                } else if i.op_count() == 0 {
                    s.arith(op, 1, Src::St(0), true);
                } else {
                    let src = self.x87_src(bus, i, 0)?;
                    s.arith(op, 0, src, false);
                }
                self.x87_store(&s);
                return Ok(());
            }
            match mn {
                M::Fld => {
                    if i.op_kind(0) == OpKind::Register {
                        s.fld_st(st_index(i.op_register(0)));
                    } else {
                        let a = self.ea(i);
                        match i.memory_size() {
                            MemorySize::Float32 => s.fld_m32(self.read_lin(bus, a, 4)? as u32),
                            MemorySize::Float64 => s.fld_m64(self.read_lin(bus, a, 8)?),
                            _ => s.fld_m80(self.read_m80(bus, a)?),
                        }
                    }
                }
                M::Fild => {
                    let a = self.ea(i);
                    let v = match i.memory_size() {
                        MemorySize::Int16 => self.read_lin(bus, a, 2)? as u16 as i16 as i64,
                        MemorySize::Int32 => self.read_lin(bus, a, 4)? as u32 as i32 as i64,
                        _ => self.read_lin(bus, a, 8)? as i64,
                    };
                    s.fild(v);
                }
                M::Fldz => s.fldz(),
                M::Fld1 => s.fld1(),
                M::Fst | M::Fstp => {
                    let pop = mn == M::Fstp;
                    if i.op_kind(0) == OpKind::Register {
                        s.fst_st(st_index(i.op_register(0)), pop);
                    } else {
                        let a = self.ea(i);
                        match i.memory_size() {
                            MemorySize::Float32 => {
                                if let Some(v) = s.fst_m32(pop) {
                                    self.write_lin(bus, a, 4, v as u64)?;
                                }
                            }
                            MemorySize::Float64 => {
                                if let Some(v) = s.fst_m64(pop) {
                                    self.write_lin(bus, a, 8, v)?;
                                }
                            }
                            _ => {
                                if let Some(v) = s.fstp_m80() {
                                    self.write_lin(bus, a, 8, v as u64)?;
                                    self.write_lin(bus, a + 8, 2, (v >> 64) as u64)?;
                                }
                            }
                        }
                    }
                }
                M::Fist | M::Fistp => {
                    let a = self.ea(i);
                    let width = i.memory_size().size() as u32 * 8;
                    if let Some(v) = s.fist(width, mn == M::Fistp) {
                        self.write_lin(bus, a, (width / 8) as usize, v)?;
                    }
                }
                M::Fxch => {
                    let r = if i.op_count() > 1 {
                        i.op_register(1)
                    } else {
                        Register::ST1
                    };
                    s.fxch(st_index(r));
                }
                M::Fchs => s.fchs(),
                M::Fabs => s.fabs(),
                M::Fsqrt => s.fsqrt(),
                M::Fcom | M::Fcomp | M::Fucom | M::Fucomp | M::Fcompp | M::Fucompp => {
                    let kind = if matches!(mn, M::Fucom | M::Fucomp | M::Fucompp) {
                        CmpKind::Unordered
                    } else {
                        CmpKind::Ordered
                    };
                    let pops = match mn {
                        M::Fcompp | M::Fucompp => 2,
                        M::Fcomp | M::Fucomp => 1,
                        _ => 0,
                    };
                    let src = if i.op_count() == 0 {
                        Src::St(1)
                    } else {
                        let n = i.op_count() - 1;
                        self.x87_src(bus, i, n)?
                    };
                    s.fcom(src, kind, pops);
                }
                M::Fcomi | M::Fcomip | M::Fucomi | M::Fucomip => {
                    let kind = if matches!(mn, M::Fucomi | M::Fucomip) {
                        CmpKind::Unordered
                    } else {
                        CmpKind::Ordered
                    };
                    let pop = matches!(mn, M::Fcomip | M::Fucomip);
                    if let Some(f) = s.fcomi(st_index(i.op_register(1)), kind, pop) {
                        let w = crate::flags::ARITH;
                        let cur = self.flags.get();
                        self.flags.load((cur & !w) | (f & w));
                    }
                }
                M::Ftst => s.ftst(),
                M::Fxam => s.fxam(),
                M::Ffree => s.ffree(st_index(i.op_register(0))),
                M::Fincstp => s.fincstp(),
                _ => s.fdecstp(),
            }
            self.x87_store(&s);
            Ok(())
        })())
    }
}
