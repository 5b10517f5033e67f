//! SSE/SSE2 and x87 control instructions: operand plumbing around the pure
//! functions in [`crate::simd`], plus FXSAVE/FXRSTOR and the x87 control words.

use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};
use vmm_types::bits;

use crate::bus::Bus;
use crate::cpu::Cpu;
use crate::exception::{Exc, XResult};
use crate::simd;

/// MXCSR bits this CPU implements (no DAZ: SSE2-era mask).
const MXCSR_MASK: u32 = 0xffbf;

impl Cpu {
    fn sse_check(&self) -> XResult<()> {
        if self.cr0 & bits::CR0_EM != 0 || self.cr4 & bits::CR4_OSFXSR == 0 {
            return Err(Exc::ud());
        }
        if self.cr0 & bits::CR0_TS != 0 {
            return Err(Exc::nm());
        }
        Ok(())
    }

    fn fpu_check(&self) -> XResult<()> {
        if self.cr0 & (bits::CR0_EM | bits::CR0_TS) != 0 {
            return Err(Exc::nm());
        }
        Ok(())
    }

    /// Reads operand `n` as an XMM value (register, or memory of the operand's size,
    /// zero-extended).
    fn xmm_op(&mut self, bus: &mut dyn Bus, i: &Instruction, n: u32) -> XResult<u128> {
        match i.op_kind(n) {
            OpKind::Register => {
                let r = i.op_register(n);
                if r.is_xmm() {
                    Ok(self.fpu.xmm[r.number()])
                } else {
                    Ok(self.reg(r) as u128)
                }
            }
            OpKind::Memory => {
                let a = self.ea(i);
                match i.memory_size().size() {
                    16 => self.read_lin128(bus, a),
                    s @ (1 | 2 | 4 | 8) => Ok(self.read_lin(bus, a, s)? as u128),
                    _ => Err(Exc::ud()),
                }
            }
            _ => Ok(i.immediate(n) as u128),
        }
    }

    /// Writes operand `n` from an XMM value (register gets all 128 bits; memory gets
    /// the operand's size).
    fn xmm_store(&mut self, bus: &mut dyn Bus, i: &Instruction, n: u32, v: u128) -> XResult<()> {
        match i.op_kind(n) {
            OpKind::Register => {
                let r = i.op_register(n);
                if r.is_xmm() {
                    self.fpu.xmm[r.number()] = v;
                } else {
                    self.set_reg(r, v as u64);
                }
                Ok(())
            }
            OpKind::Memory => {
                let a = self.ea(i);
                match i.memory_size().size() {
                    16 => self.write_lin128(bus, a, v),
                    s @ (1 | 2 | 4 | 8) => self.write_lin(bus, a, s, v as u64),
                    _ => Err(Exc::ud()),
                }
            }
            _ => Err(Exc::ud()),
        }
    }

    /// Merges an SSE floating-point result's flags into MXCSR; an unmasked
    /// exception raises #XM (or #UD without CR4.OSXMMEXCPT) and writes nothing.
    fn commit<T>(&mut self, out: simd::FpOut<T>) -> XResult<T> {
        out.commit(&mut self.fpu.mxcsr).map_err(|_| {
            if self.cr4 & bits::CR4_OSXMMEXCPT != 0 {
                Exc::new(19, None)
            } else {
                Exc::ud()
            }
        })
    }

    /// SSE/SSE2 floating point: arithmetic, compares, conversions.
    /// Returns `None` if `i` is not one of them.
    fn sse_float(&mut self, bus: &mut dyn Bus, i: &Instruction) -> Option<XResult<()>> {
        type Bin = fn(u128, u128, u32) -> simd::FpOut<u128>;
        let mn = i.mnemonic();
        let bin: Option<Bin> = match mn {
            M::Addps => Some(simd::addps),
            M::Addss => Some(simd::addss),
            M::Addpd => Some(simd::addpd),
            M::Addsd => Some(simd::addsd),
            M::Subps => Some(simd::subps),
            M::Subss => Some(simd::subss),
            M::Subpd => Some(simd::subpd),
            M::Subsd => Some(simd::subsd),
            M::Mulps => Some(simd::mulps),
            M::Mulss => Some(simd::mulss),
            M::Mulpd => Some(simd::mulpd),
            M::Mulsd => Some(simd::mulsd),
            M::Divps => Some(simd::divps),
            M::Divss => Some(simd::divss),
            M::Divpd => Some(simd::divpd),
            M::Divsd => Some(simd::divsd),
            M::Minps => Some(simd::minps),
            M::Minss => Some(simd::minss),
            M::Minpd => Some(simd::minpd),
            M::Minsd => Some(simd::minsd),
            M::Maxps => Some(simd::maxps),
            M::Maxss => Some(simd::maxss),
            M::Maxpd => Some(simd::maxpd),
            M::Maxsd => Some(simd::maxsd),
            M::Sqrtss => Some(simd::sqrtss),
            M::Sqrtsd => Some(simd::sqrtsd),
            M::Cvtss2sd => Some(simd::cvtss2sd),
            M::Cvtsd2ss => Some(simd::cvtsd2ss),
            _ => None,
        };
        let mx = self.fpu.mxcsr;
        if let Some(f) = bin {
            return Some((|| {
                let d = i.op_register(0).number();
                let b = self.xmm_op(bus, i, 1)?;
                let r = self.commit(f(self.fpu.xmm[d], b, mx))?;
                self.fpu.xmm[d] = r;
                Ok(())
            })());
        }
        type Un = fn(u128, u32) -> simd::FpOut<u128>;
        let un: Option<Un> = match mn {
            M::Sqrtps => Some(simd::sqrtps),
            M::Sqrtpd => Some(simd::sqrtpd),
            M::Cvtps2pd => Some(simd::cvtps2pd),
            M::Cvtpd2ps => Some(simd::cvtpd2ps),
            M::Cvtdq2ps => Some(simd::cvtdq2ps),
            M::Cvtps2dq => Some(simd::cvtps2dq),
            M::Cvttps2dq => Some(simd::cvttps2dq),
            M::Cvtpd2dq => Some(simd::cvtpd2dq),
            M::Cvttpd2dq => Some(simd::cvttpd2dq),
            _ => None,
        };
        if let Some(f) = un {
            return Some((|| {
                let d = i.op_register(0).number();
                let b = self.xmm_op(bus, i, 1)?;
                let r = self.commit(f(b, mx))?;
                self.fpu.xmm[d] = r;
                Ok(())
            })());
        }
        let r = match mn {
            M::Cvtdq2pd => (|| {
                let b = self.xmm_op(bus, i, 1)?;
                self.fpu.xmm[i.op_register(0).number()] = simd::cvtdq2pd(b);
                Ok(())
            })(),
            M::Cmpps | M::Cmpss | M::Cmppd | M::Cmpsd => (|| {
                let d = i.op_register(0).number();
                let b = self.xmm_op(bus, i, 1)?;
                let imm = i.immediate(2) as u8;
                let a = self.fpu.xmm[d];
                let out = match mn {
                    M::Cmpps => simd::cmpps(a, b, imm, mx),
                    M::Cmpss => simd::cmpss(a, b, imm, mx),
                    M::Cmppd => simd::cmppd(a, b, imm, mx),
                    _ => simd::cmpsd(a, b, imm, mx),
                };
                self.fpu.xmm[d] = self.commit(out)?;
                Ok(())
            })(),
            M::Comiss | M::Ucomiss | M::Comisd | M::Ucomisd => (|| {
                let a = self.fpu.xmm[i.op_register(0).number()];
                let b = self.xmm_op(bus, i, 1)?;
                let out = match mn {
                    M::Comiss => simd::comiss(a, b, mx),
                    M::Ucomiss => simd::ucomiss(a, b, mx),
                    M::Comisd => simd::comisd(a, b, mx),
                    _ => simd::ucomisd(a, b, mx),
                };
                let f = self.commit(out)?;
                let cur = self.flags.get();
                self.flags.load((cur & !simd::COMI_WRITTEN) | f);
                Ok(())
            })(),
            M::Cvtsi2ss | M::Cvtsi2sd => (|| {
                let size = self.op_size(i, 1);
                let raw = self.rd(bus, i, 1, size)?;
                let v = if size == 8 {
                    raw as i64
                } else {
                    raw as u32 as i32 as i64
                };
                let d = i.op_register(0).number();
                let a = self.fpu.xmm[d];
                let out = if mn == M::Cvtsi2ss {
                    simd::cvtsi2ss(a, v, mx)
                } else {
                    simd::cvtsi2sd(a, v, mx)
                };
                self.fpu.xmm[d] = self.commit(out)?;
                Ok(())
            })(),
            M::Cvtss2si | M::Cvttss2si | M::Cvtsd2si | M::Cvttsd2si => (|| {
                let b = self.xmm_op(bus, i, 1)?;
                let r = i.op_register(0);
                let is64 = r.size() == 8;
                let out = match mn {
                    M::Cvtss2si => simd::cvtss2si(b, is64, mx),
                    M::Cvttss2si => simd::cvttss2si(b, is64, mx),
                    M::Cvtsd2si => simd::cvtsd2si(b, is64, mx),
                    _ => simd::cvttsd2si(b, is64, mx),
                };
                let v = self.commit(out)?;
                self.set_reg(r, v);
                Ok(())
            })(),
            _ => return None,
        };
        Some(r)
    }

    fn check_align16(&self, i: &Instruction) -> XResult<()> {
        for n in 0..i.op_count() {
            if i.op_kind(n) == OpKind::Memory && self.ea(i) % 16 != 0 {
                return Err(Exc::gp(0));
            }
        }
        Ok(())
    }

    /// Everything not handled by the integer dispatcher.
    #[inline(never)]
    pub(crate) fn sse_or_x87(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        let mn = i.mnemonic();
        // x87 control and state instructions.
        match mn {
            M::Fninit => {
                self.fpu_check()?;
                self.fpu.fcw = 0x37f;
                self.fpu.fsw = 0;
                self.fpu.ftwx = 0;
                self.fpu.fop = 0;
                self.fpu.fip = 0;
                self.fpu.fdp = 0;
                return Ok(());
            }
            M::Fnstcw => {
                self.fpu_check()?;
                return self.wr(bus, i, 0, 2, self.fpu.fcw as u64);
            }
            M::Fldcw => {
                self.fpu_check()?;
                self.fpu.fcw = self.rd(bus, i, 0, 2)? as u16;
                return Ok(());
            }
            M::Fnstsw => {
                self.fpu_check()?;
                let v = self.fpu.fsw as u64;
                return if i.op_kind(0) == OpKind::Register {
                    self.set_reg(Register::AX, v);
                    Ok(())
                } else {
                    self.wr(bus, i, 0, 2, v)
                };
            }
            M::Fnclex => {
                self.fpu_check()?;
                self.fpu.fsw &= 0x7f00;
                return Ok(());
            }
            M::Wait => {
                if self.cr0 & (bits::CR0_MP | bits::CR0_TS) == bits::CR0_MP | bits::CR0_TS {
                    return Err(Exc::nm());
                }
                return Ok(());
            }
            M::Emms => {
                self.fpu_check()?;
                self.fpu.ftwx = 0;
                return Ok(());
            }
            M::Fxsave | M::Fxsave64 => return self.fxsave(bus, i),
            M::Fxrstor | M::Fxrstor64 => return self.fxrstor(bus, i),
            M::Ldmxcsr => {
                self.sse_check()?;
                let v = self.rd(bus, i, 0, 4)? as u32;
                if v & !MXCSR_MASK != 0 {
                    return Err(Exc::gp(0));
                }
                self.fpu.mxcsr = v;
                return Ok(());
            }
            M::Stmxcsr => {
                self.sse_check()?;
                return self.wr(bus, i, 0, 4, self.fpu.mxcsr as u64);
            }
            M::Movnti => {
                let size = self.op_size(i, 0);
                let v = self.rd(bus, i, 1, size)?;
                return self.wr(bus, i, 0, size, v);
            }
            _ => {}
        }
        if let Some(r) = self.x87(bus, i) {
            return r;
        }
        // Only XMM forms from here on; MMX register forms are not implemented.
        let uses_mmx =
            (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Register && i.op_register(n).is_mm());
        if uses_mmx || i.code().mnemonic() == M::INVALID {
            crate::exec::warn_unimplemented(i);
            return Err(Exc::ud());
        }
        self.sse_check()?;
        if let Some(r) = self.sse_float(bus, i) {
            return r;
        }
        match mn {
            M::Movaps | M::Movapd | M::Movdqa | M::Movntdq | M::Movntps | M::Movntpd => {
                self.check_align16(i)?;
                let v = self.xmm_op(bus, i, 1)?;
                self.xmm_store(bus, i, 0, v)
            }
            M::Movups | M::Movupd | M::Movdqu | M::Lddqu => {
                let v = self.xmm_op(bus, i, 1)?;
                self.xmm_store(bus, i, 0, v)
            }
            M::Movd | M::Movq => {
                let v = self.xmm_op(bus, i, 1)?;
                let v = if i.op_kind(1) == OpKind::Register && i.op_register(1).is_xmm() {
                    let width = if mn == M::Movd {
                        0xffff_ffffu128
                    } else {
                        u64::MAX as u128
                    };
                    v & width
                } else {
                    v
                };
                // Register destinations are zero-extended; memory gets the low part.
                self.xmm_store(bus, i, 0, v)
            }
            M::Movss | M::Movsd => {
                let dst_reg = i.op_kind(0) == OpKind::Register;
                let src_reg = i.op_kind(1) == OpKind::Register;
                let b = self.xmm_op(bus, i, 1)?;
                if dst_reg && src_reg {
                    let a = self.fpu.xmm[i.op_register(0).number()];
                    let r = if mn == M::Movss {
                        simd::movss_merge(a, b)
                    } else {
                        simd::movsd_merge(a, b)
                    };
                    self.fpu.xmm[i.op_register(0).number()] = r;
                    Ok(())
                } else {
                    self.xmm_store(bus, i, 0, b)
                }
            }
            M::Movlps | M::Movlpd | M::Movhps | M::Movhpd => {
                let high = matches!(mn, M::Movhps | M::Movhpd);
                if i.op_kind(0) == OpKind::Memory {
                    let v = self.fpu.xmm[i.op_register(1).number()];
                    let q = if high { (v >> 64) as u64 } else { v as u64 };
                    let a = self.ea(i);
                    self.write_lin(bus, a, 8, q)
                } else {
                    let a = self.ea(i);
                    let q = self.read_lin(bus, a, 8)? as u128;
                    let r = &mut self.fpu.xmm[i.op_register(0).number()];
                    *r = if high {
                        (*r & u64::MAX as u128) | (q << 64)
                    } else {
                        (*r & !(u64::MAX as u128)) | q
                    };
                    Ok(())
                }
            }
            M::Movhlps | M::Movlhps => {
                let d = i.op_register(0).number();
                let b = self.fpu.xmm[i.op_register(1).number()];
                let a = self.fpu.xmm[d];
                self.fpu.xmm[d] = if mn == M::Movhlps {
                    simd::movhlps(a, b)
                } else {
                    simd::movlhps(a, b)
                };
                Ok(())
            }
            M::Pmovmskb | M::Movmskps | M::Movmskpd => {
                let v = self.fpu.xmm[i.op_register(1).number()];
                let m = match mn {
                    M::Pmovmskb => simd::pmovmskb(v),
                    M::Movmskps => simd::movmskps(v),
                    _ => simd::movmskpd(v),
                };
                self.set_reg(i.op_register(0), m as u64);
                Ok(())
            }
            M::Pextrw => {
                let v = self.fpu.xmm[i.op_register(1).number()];
                let r = simd::pextrw(v, i.immediate(2) as u8);
                self.set_reg(i.op_register(0), r as u64);
                Ok(())
            }
            M::Pinsrw => {
                let d = i.op_register(0).number();
                let w = self.rd(bus, i, 1, 2)? as u16;
                self.fpu.xmm[d] = simd::pinsrw(self.fpu.xmm[d], w, i.immediate(2) as u8);
                Ok(())
            }
            M::Pshufd | M::Pshuflw | M::Pshufhw => {
                let s = self.xmm_op(bus, i, 1)?;
                let imm = i.immediate(2) as u8;
                let r = match mn {
                    M::Pshufd => simd::pshufd(s, imm),
                    M::Pshuflw => simd::pshuflw(s, imm),
                    _ => simd::pshufhw(s, imm),
                };
                self.fpu.xmm[i.op_register(0).number()] = r;
                Ok(())
            }
            M::Shufps | M::Shufpd => {
                let d = i.op_register(0).number();
                let b = self.xmm_op(bus, i, 1)?;
                let imm = i.immediate(2) as u8;
                let a = self.fpu.xmm[d];
                self.fpu.xmm[d] = if mn == M::Shufps {
                    simd::shufps(a, b, imm)
                } else {
                    simd::shufpd(a, b, imm)
                };
                Ok(())
            }
            M::Psllw
            | M::Pslld
            | M::Psllq
            | M::Psrlw
            | M::Psrld
            | M::Psrlq
            | M::Psraw
            | M::Psrad
            | M::Pslldq
            | M::Psrldq => {
                let d = i.op_register(0).number();
                let a = self.fpu.xmm[d];
                let count = if i.op_kind(1) == OpKind::Immediate8 {
                    i.immediate(1)
                } else {
                    self.xmm_op(bus, i, 1)? as u64
                };
                self.fpu.xmm[d] = match mn {
                    M::Psllw => simd::psllw(a, count),
                    M::Pslld => simd::pslld(a, count),
                    M::Psllq => simd::psllq(a, count),
                    M::Psrlw => simd::psrlw(a, count),
                    M::Psrld => simd::psrld(a, count),
                    M::Psrlq => simd::psrlq(a, count),
                    M::Psraw => simd::psraw(a, count),
                    M::Psrad => simd::psrad(a, count),
                    M::Pslldq => simd::pslldq(a, count as u8),
                    _ => simd::psrldq(a, count as u8),
                };
                Ok(())
            }
            _ => {
                let f: fn(u128, u128) -> u128 = match mn {
                    M::Pxor | M::Xorps | M::Xorpd => simd::pxor,
                    M::Por | M::Orps | M::Orpd => simd::por,
                    M::Pand | M::Andps | M::Andpd => simd::pand,
                    M::Pandn | M::Andnps | M::Andnpd => simd::pandn,
                    M::Paddb => simd::paddb,
                    M::Paddw => simd::paddw,
                    M::Paddd => simd::paddd,
                    M::Paddq => simd::paddq,
                    M::Psubb => simd::psubb,
                    M::Psubw => simd::psubw,
                    M::Psubd => simd::psubd,
                    M::Psubq => simd::psubq,
                    M::Paddsb => simd::paddsb,
                    M::Paddsw => simd::paddsw,
                    M::Psubsb => simd::psubsb,
                    M::Psubsw => simd::psubsw,
                    M::Paddusb => simd::paddusb,
                    M::Paddusw => simd::paddusw,
                    M::Psubusb => simd::psubusb,
                    M::Psubusw => simd::psubusw,
                    M::Pcmpeqb => simd::pcmpeqb,
                    M::Pcmpeqw => simd::pcmpeqw,
                    M::Pcmpeqd => simd::pcmpeqd,
                    M::Pcmpgtb => simd::pcmpgtb,
                    M::Pcmpgtw => simd::pcmpgtw,
                    M::Pcmpgtd => simd::pcmpgtd,
                    M::Pminub => simd::pminub,
                    M::Pmaxub => simd::pmaxub,
                    M::Pminsw => simd::pminsw,
                    M::Pmaxsw => simd::pmaxsw,
                    M::Pavgb => simd::pavgb,
                    M::Pavgw => simd::pavgw,
                    M::Pmullw => simd::pmullw,
                    M::Pmulhw => simd::pmulhw,
                    M::Pmulhuw => simd::pmulhuw,
                    M::Pmuludq => simd::pmuludq,
                    M::Pmaddwd => simd::pmaddwd,
                    M::Psadbw => simd::psadbw,
                    M::Punpcklbw => simd::punpcklbw,
                    M::Punpcklwd => simd::punpcklwd,
                    M::Punpckldq | M::Unpcklps => simd::punpckldq,
                    M::Punpcklqdq | M::Unpcklpd => simd::punpcklqdq,
                    M::Punpckhbw => simd::punpckhbw,
                    M::Punpckhwd => simd::punpckhwd,
                    M::Punpckhdq | M::Unpckhps => simd::punpckhdq,
                    M::Punpckhqdq | M::Unpckhpd => simd::punpckhqdq,
                    M::Packsswb => simd::packsswb,
                    M::Packuswb => simd::packuswb,
                    M::Packssdw => simd::packssdw,
                    _ => {
                        crate::exec::warn_unimplemented(i);
                        return Err(Exc::ud());
                    }
                };
                if i.op_kind(1) == OpKind::Memory && i.memory_size().size() == 16 {
                    self.check_align16(i)?;
                }
                let d = i.op_register(0).number();
                let b = self.xmm_op(bus, i, 1)?;
                self.fpu.xmm[d] = f(self.fpu.xmm[d], b);
                Ok(())
            }
        }
    }

    fn fxsave(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        self.fpu_check()?;
        let a = self.ea(i);
        if a % 16 != 0 {
            return Err(Exc::gp(0));
        }
        let f = self.fpu;
        let w0 = f.fcw as u64 | (f.fsw as u64) << 16 | (f.ftwx as u64) << 32 | (f.fop as u64) << 48;
        self.write_lin(bus, a, 8, w0)?;
        self.write_lin(bus, a + 8, 8, f.fip)?;
        self.write_lin(bus, a + 16, 8, f.fdp)?;
        self.write_lin(bus, a + 24, 8, f.mxcsr as u64 | (MXCSR_MASK as u64) << 32)?;
        for (k, st) in f.fpr.iter().enumerate() {
            let mut b = [0u8; 16];
            b[..10].copy_from_slice(st);
            self.write_lin128(bus, a + 32 + 16 * k as u64, u128::from_le_bytes(b))?;
        }
        let nxmm = if self.bitness == 64 { 16 } else { 8 };
        for k in 0..nxmm {
            self.write_lin128(bus, a + 160 + 16 * k as u64, f.xmm[k])?;
        }
        Ok(())
    }

    fn fxrstor(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        self.fpu_check()?;
        let a = self.ea(i);
        if a % 16 != 0 {
            return Err(Exc::gp(0));
        }
        let mxcsr = self.read_lin(bus, a + 24, 4)? as u32;
        if mxcsr & !MXCSR_MASK != 0 {
            return Err(Exc::gp(0));
        }
        let w0 = self.read_lin(bus, a, 8)?;
        let mut f = self.fpu;
        f.fcw = w0 as u16;
        f.fsw = (w0 >> 16) as u16;
        f.ftwx = (w0 >> 32) as u8;
        f.fop = (w0 >> 48) as u16;
        f.fip = self.read_lin(bus, a + 8, 8)?;
        f.fdp = self.read_lin(bus, a + 16, 8)?;
        f.mxcsr = mxcsr;
        for k in 0..8 {
            let v = self.read_lin128(bus, a + 32 + 16 * k as u64)?.to_le_bytes();
            f.fpr[k].copy_from_slice(&v[..10]);
        }
        let nxmm = if self.bitness == 64 { 16 } else { 8 };
        for k in 0..nxmm {
            f.xmm[k] = self.read_lin128(bus, a + 160 + 16 * k as u64)?;
        }
        self.fpu = f;
        Ok(())
    }
}
