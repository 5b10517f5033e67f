//! Integer arithmetic, logic, shifts/rotates, multiply/divide and bit operations.

use iced_x86::{Instruction, Mnemonic as M, OpKind};

use crate::bus::Bus;
use crate::cpu::{Cpu, RAX, RBX, RCX, RDX};
use crate::exception::{Exc, XResult};
use crate::flags::{mask, sign_bit, FlagOp, CF, OF};

#[inline]
fn sext(v: u64, size: u8) -> i64 {
    match size {
        1 => v as u8 as i8 as i64,
        2 => v as u16 as i16 as i64,
        4 => v as u32 as i32 as i64,
        _ => v as i64,
    }
}

impl Cpu {
    /// Read-modify-write of operand 0; atomic when LOCK-prefixed (or `force_lock`).
    /// Returns the old value.
    #[inline]
    pub(crate) fn rmw0(
        &mut self,
        bus: &mut dyn Bus,
        i: &Instruction,
        size: u8,
        force_lock: bool,
        f: &mut dyn FnMut(u64) -> u64,
    ) -> XResult<u64> {
        match i.op_kind(0) {
            OpKind::Register => {
                let r = i.op_register(0);
                let old = self.reg(r);
                let new = f(old);
                self.set_reg(r, new);
                Ok(old)
            }
            OpKind::Memory => {
                let a = self.ea(i);
                if i.has_lock_prefix() || force_lock {
                    self.rmw_lin(bus, a, size as usize, f)
                        .map(|v| v & mask(size))
                } else {
                    let old = self.read_lin(bus, a, size as usize)?;
                    let new = f(old);
                    self.write_lin(bus, a, size as usize, new)?;
                    Ok(old)
                }
            }
            _ => Err(Exc::ud()),
        }
    }

    /// ADD/OR/ADC/SBB/AND/SUB/XOR/CMP/TEST.
    pub(crate) fn alu2(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        let size = self.op_size(i, 0);
        let m = mask(size);
        let src = self.rd(bus, i, 1, size)? & m;
        let mn = i.mnemonic();
        if matches!(mn, M::Cmp | M::Test) {
            let a = self.rd(bus, i, 0, size)?;
            if mn == M::Cmp {
                self.flags
                    .set(FlagOp::Sub, size, a.wrapping_sub(src), a, src);
            } else {
                self.flags.set(FlagOp::Logic, size, a & src, 0, 0);
            }
            return Ok(());
        }
        let cin = self.flags.cf() as u64;
        let mut op = |a: u64| -> u64 {
            (match mn {
                M::Add => a.wrapping_add(src),
                M::Or => a | src,
                M::Adc => a.wrapping_add(src).wrapping_add(cin),
                M::Sbb => a.wrapping_sub(src).wrapping_sub(cin),
                M::And => a & src,
                M::Sub => a.wrapping_sub(src),
                _ => a ^ src,
            }) & m
        };
        let old = self.rmw0(bus, i, size, false, &mut op)? & m;
        let res = op(old);
        match mn {
            M::Add => self.flags.set(FlagOp::Add, size, res, old, src),
            M::Adc => self
                .flags
                .set_carry(FlagOp::Adc, size, res, old, src, cin != 0),
            M::Sbb => self
                .flags
                .set_carry(FlagOp::Sbb, size, res, old, src, cin != 0),
            M::Sub => self.flags.set(FlagOp::Sub, size, res, old, src),
            _ => self.flags.set(FlagOp::Logic, size, res, 0, 0),
        }
        Ok(())
    }

    /// INC/DEC/NEG/NOT.
    pub(crate) fn unary(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        let size = self.op_size(i, 0);
        let m = mask(size);
        let mn = i.mnemonic();
        let mut op = |a: u64| -> u64 {
            (match mn {
                M::Inc => a.wrapping_add(1),
                M::Dec => a.wrapping_sub(1),
                M::Neg => a.wrapping_neg(),
                _ => !a,
            }) & m
        };
        let old = self.rmw0(bus, i, size, false, &mut op)? & m;
        let res = op(old);
        match mn {
            M::Inc => self.flags.set_incdec(FlagOp::Inc, size, res, old),
            M::Dec => self.flags.set_incdec(FlagOp::Dec, size, res, old),
            M::Neg => self.flags.set(FlagOp::Neg, size, res, old, 0),
            _ => {}
        }
        Ok(())
    }

    fn set_cf_of(&mut self, cf: bool, of: bool) {
        self.flags.materialize();
        let f = &mut self.flags.rflags;
        *f &= !(CF | OF);
        if cf {
            *f |= CF;
        }
        if of {
            *f |= OF;
        }
    }

    /// Shifts and rotates (SHL/SHR/SAR/ROL/ROR/RCL/RCR).
    #[inline(never)]
    pub(crate) fn shift(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        let size = self.op_size(i, 0);
        let bits = size as u32 * 8;
        let m = mask(size);
        let cnt_raw = if i.op_count() > 1 {
            self.rd(bus, i, 1, 1)?
        } else {
            1
        };
        let cnt = (cnt_raw & if size == 8 { 63 } else { 31 }) as u32;
        if cnt == 0 {
            // No flags change, but the operand is still read (fault semantics) and a
            // 32-bit register destination is still written, which zero-extends it.
            let v = self.rd(bus, i, 0, size)?;
            if size == 4 && i.op0_kind() == iced_x86::OpKind::Register {
                self.wr(bus, i, 0, size, v & m)?;
            }
            return Ok(());
        }
        let mn = i.mnemonic();
        let cf_in = self.flags.cf();
        let v = self.rd(bus, i, 0, size)? & m;
        let sb = sign_bit(size);
        let (res, cf, of, szp) = match mn {
            M::Shl | M::Sal => {
                let r = ((v as u128) << cnt) as u64 & m;
                let cf = if cnt <= bits {
                    (v >> (bits - cnt)) & 1 != 0
                } else {
                    false
                };
                (r, cf, (r & sb != 0) != cf, true)
            }
            M::Shr => {
                let r = if cnt >= 64 { 0 } else { v >> cnt };
                let cf = if cnt - 1 < 64 {
                    (v >> (cnt - 1)) & 1 != 0
                } else {
                    false
                };
                (r, cf, v & sb != 0, true)
            }
            M::Sar => {
                let s = sext(v, size);
                let r = (s >> cnt.min(63)) as u64 & m;
                let cf = (s >> (cnt - 1).min(63)) & 1 != 0;
                (r, cf, false, true)
            }
            M::Rol => {
                let c = cnt % bits;
                let r = if c == 0 {
                    v
                } else {
                    ((v << c) | (v >> (bits - c))) & m
                };
                let cf = r & 1 != 0;
                (r, cf, (r & sb != 0) != cf, false)
            }
            M::Ror => {
                let c = cnt % bits;
                let r = if c == 0 {
                    v
                } else {
                    ((v >> c) | (v << (bits - c))) & m
                };
                let cf = r & sb != 0;
                (r, cf, (r & sb != 0) != (r & (sb >> 1) != 0), false)
            }
            M::Rcl => {
                let c = cnt % (bits + 1);
                let (mut r, mut cf) = (v, cf_in);
                for _ in 0..c {
                    let nc = r & sb != 0;
                    r = ((r << 1) | cf as u64) & m;
                    cf = nc;
                }
                (r, cf, (r & sb != 0) != cf, false)
            }
            _ => {
                // RCR
                let c = cnt % (bits + 1);
                let of = (v & sb != 0) != cf_in;
                let (mut r, mut cf) = (v, cf_in);
                for _ in 0..c {
                    let nc = r & 1 != 0;
                    r = (r >> 1) | if cf { sb } else { 0 };
                    cf = nc;
                }
                (r, cf, of, false)
            }
        };
        self.wr(bus, i, 0, size, res)?;
        if szp {
            self.flags.set_szp(size, res);
            self.flags.rflags &= !crate::flags::AF;
        }
        self.set_cf_of(cf, of);
        Ok(())
    }

    /// SHLD/SHRD.
    #[inline(never)]
    pub(crate) fn shift_double(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        let size = self.op_size(i, 0);
        let bits = size as u32 * 8;
        let m = mask(size);
        let cnt = (self.rd(bus, i, 2, 1)? & if size == 8 { 63 } else { 31 }) as u32;
        if cnt == 0 {
            // As for shifts: a 32-bit register destination is zero-extended.
            if size == 4 && i.op0_kind() == iced_x86::OpKind::Register {
                let v = self.rd(bus, i, 0, size)?;
                self.wr(bus, i, 0, size, v & m)?;
            }
            return Ok(());
        }
        let dst = self.rd(bus, i, 0, size)? & m;
        let src = self.reg(i.op_register(1)) & m;
        let sb = sign_bit(size);
        let (res, cf) = if i.mnemonic() == M::Shld {
            // Concatenate dst:src and shift left.
            let wide = ((dst as u128) << bits) | src as u128;
            let r = ((wide << cnt) >> bits) as u64 & m;
            let cf = (dst >> (bits - cnt.min(bits))) & 1 != 0;
            (r, cf)
        } else {
            let wide = ((src as u128) << bits) | dst as u128;
            let r = (wide >> cnt) as u64 & m;
            let cf = (wide >> (cnt - 1)) & 1 != 0;
            (r, cf)
        };
        self.wr(bus, i, 0, size, res)?;
        self.flags.set_szp(size, res);
        self.set_cf_of(cf, (res & sb) != (dst & sb));
        Ok(())
    }

    /// MUL/IMUL (all forms).
    #[inline(never)]
    pub(crate) fn mul(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        let signed = i.mnemonic() == M::Imul;
        if signed && i.op_count() >= 2 {
            let size = self.op_size(i, 0);
            let (a, b) = if i.op_count() == 3 {
                (self.rd(bus, i, 1, size)?, self.rd(bus, i, 2, size)?)
            } else {
                (self.rd(bus, i, 0, size)?, self.rd(bus, i, 1, size)?)
            };
            let p = sext(a, size) as i128 * sext(b, size) as i128;
            let r = p as u64 & mask(size);
            let ovf = sext(r, size) as i128 != p;
            self.set_reg(i.op_register(0), r);
            self.flags.set_szp(size, r);
            self.set_cf_of(ovf, ovf);
            return Ok(());
        }
        let size = self.op_size(i, 0);
        let src = self.rd(bus, i, 0, size)?;
        let a = self.gpr[RAX] & mask(size);
        let bits = size as u32 * 8;
        let (lo, hi, ovf) = if signed {
            let p = sext(a, size) as i128 * sext(src, size) as i128;
            let lo = p as u64 & mask(size);
            let hi = (p >> bits) as u64 & mask(size);
            (lo, hi, sext(lo, size) as i128 != p)
        } else {
            let p = a as u128 * (src & mask(size)) as u128;
            let lo = p as u64 & mask(size);
            let hi = (p >> bits) as u64 & mask(size);
            (lo, hi, hi != 0)
        };
        match size {
            1 => self.gpr[RAX] = (self.gpr[RAX] & !0xffff) | (hi << 8) | lo,
            2 => {
                self.gpr[RAX] = (self.gpr[RAX] & !0xffff) | lo;
                self.gpr[RDX] = (self.gpr[RDX] & !0xffff) | hi;
            }
            _ => {
                self.gpr[RAX] = lo;
                self.gpr[RDX] = hi;
            }
        }
        self.flags.set_szp(size, lo);
        self.set_cf_of(ovf, ovf);
        Ok(())
    }

    /// DIV/IDIV.
    #[inline(never)]
    pub(crate) fn div(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        let size = self.op_size(i, 0);
        let bits = size as u32 * 8;
        let m = mask(size);
        let d = self.rd(bus, i, 0, size)? & m;
        if d == 0 {
            return Err(Exc::de());
        }
        let (lo, hi) = if size == 1 {
            (self.gpr[RAX] & 0xff, (self.gpr[RAX] >> 8) & 0xff)
        } else {
            (self.gpr[RAX] & m, self.gpr[RDX] & m)
        };
        let (q, r) = if i.mnemonic() == M::Div {
            let n = ((hi as u128) << bits) | lo as u128;
            let q = n / d as u128;
            if q > m as u128 {
                return Err(Exc::de());
            }
            (q as u64, (n % d as u128) as u64)
        } else {
            let n = ((((hi as u128) << bits) | lo as u128) << (128 - 2 * bits)) as i128
                >> (128 - 2 * bits);
            let dv = sext(d, size) as i128;
            if n == i128::MIN && dv == -1 {
                return Err(Exc::de());
            }
            let q = n / dv;
            let r = n % dv;
            let lim = 1i128 << (bits - 1);
            if q >= lim || q < -lim {
                return Err(Exc::de());
            }
            (q as u64 & m, r as u64 & m)
        };
        match size {
            1 => self.gpr[RAX] = (self.gpr[RAX] & !0xffff) | (r << 8) | q,
            2 => {
                self.gpr[RAX] = (self.gpr[RAX] & !0xffff) | q;
                self.gpr[RDX] = (self.gpr[RDX] & !0xffff) | r;
            }
            _ => {
                self.gpr[RAX] = q;
                self.gpr[RDX] = r;
            }
        }
        Ok(())
    }

    /// BT/BTS/BTR/BTC.
    #[inline(never)]
    pub(crate) fn bit_test(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        let size = self.op_size(i, 0);
        let bits = size as u64 * 8;
        let mn = i.mnemonic();
        let off_raw = self.rd(bus, i, 1, size)?;
        let (bit, addr) = if i.op_kind(0) == OpKind::Memory && i.op_kind(1) == OpKind::Register {
            let so = sext(off_raw, size);
            let a = self
                .ea(i)
                .wrapping_add(((so >> (bits.trailing_zeros())) * size as i64) as u64);
            ((so as u64) & (bits - 1), Some(a))
        } else {
            (off_raw & (bits - 1), None)
        };
        let b = 1u64 << bit;
        let mut f = |v: u64| match mn {
            M::Bts => v | b,
            M::Btr => v & !b,
            M::Btc => v ^ b,
            _ => v,
        };
        let old = match addr {
            Some(a) => {
                if mn == M::Bt {
                    self.read_lin(bus, a, size as usize)?
                } else if i.has_lock_prefix() {
                    self.rmw_lin(bus, a, size as usize, &mut f)?
                } else {
                    let v = self.read_lin(bus, a, size as usize)?;
                    self.write_lin(bus, a, size as usize, f(v))?;
                    v
                }
            }
            None => {
                if mn == M::Bt {
                    self.rd(bus, i, 0, size)?
                } else {
                    self.rmw0(bus, i, size, false, &mut f)?
                }
            }
        };
        self.flags.set_bits(CF, old & b != 0);
        Ok(())
    }

    /// BSF/BSR/TZCNT/LZCNT/POPCNT. TZCNT/LZCNT are not advertised, so they
    /// behave as BSF/BSR like on CPUs without BMI1/LZCNT.
    #[inline(never)]
    pub(crate) fn bit_scan(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        let size = self.op_size(i, 0);
        let v = self.rd(bus, i, 1, size)? & mask(size);
        let mn = i.mnemonic();
        if mn == M::Popcnt {
            let r = v.count_ones() as u64;
            self.set_reg(i.op_register(0), r);
            self.flags.materialize();
            self.flags.rflags &= !crate::flags::ARITH;
            if v == 0 {
                self.flags.rflags |= crate::flags::ZF;
            }
            return Ok(());
        }
        self.flags.materialize();
        if v == 0 {
            self.flags.rflags |= crate::flags::ZF;
            return Ok(());
        }
        self.flags.rflags &= !crate::flags::ZF;
        let r = match mn {
            M::Bsf | M::Tzcnt => v.trailing_zeros() as u64,
            _ => 63 - v.leading_zeros() as u64,
        };
        self.set_reg(i.op_register(0), r);
        Ok(())
    }

    /// XADD.
    #[inline(never)]
    pub(crate) fn xadd(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        let size = self.op_size(i, 0);
        let m = mask(size);
        let src = self.reg(i.op_register(1)) & m;
        let old = self.rmw0(bus, i, size, false, &mut |a| a.wrapping_add(src) & m)? & m;
        let res = old.wrapping_add(src) & m;
        self.set_reg(i.op_register(1), old);
        if i.op_kind(0) == OpKind::Register {
            self.set_reg(i.op_register(0), res);
        }
        self.flags.set(FlagOp::Add, size, res, old, src);
        Ok(())
    }

    /// XCHG (always locked with a memory operand).
    #[inline(never)]
    pub(crate) fn xchg(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        let size = self.op_size(i, 0);
        if i.op_kind(0) == OpKind::Register && i.op_kind(1) == OpKind::Register {
            let (a, b) = (self.reg(i.op_register(0)), self.reg(i.op_register(1)));
            self.set_reg(i.op_register(0), b);
            self.set_reg(i.op_register(1), a);
            return Ok(());
        }
        // iced puts the memory operand first or second; normalise.
        let (mem, reg) = if i.op_kind(0) == OpKind::Memory {
            (0, 1)
        } else {
            (1, 0)
        };
        let r = i.op_register(reg);
        let v = self.reg(r);
        let a = self.ea(i);
        let _ = mem;
        let old = self.rmw_lin(bus, a, size as usize, &mut |_| v)?;
        self.set_reg(r, old);
        Ok(())
    }

    /// CMPXCHG.
    #[inline(never)]
    pub(crate) fn cmpxchg(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        let size = self.op_size(i, 0);
        let m = mask(size);
        let acc = self.gpr[RAX] & m;
        let src = self.reg(i.op_register(1)) & m;
        let old = if i.op_kind(0) == OpKind::Register {
            let d = self.reg(i.op_register(0)) & m;
            if d == acc {
                self.set_reg(i.op_register(0), src);
            }
            d
        } else {
            self.rmw0(bus, i, size, false, &mut |d| {
                if d & m == acc {
                    src
                } else {
                    d
                }
            })? & m
        };
        self.flags
            .set(FlagOp::Sub, size, acc.wrapping_sub(old), acc, old);
        if old != acc {
            match size {
                1 => self.gpr[RAX] = (self.gpr[RAX] & !0xff) | old,
                2 => self.gpr[RAX] = (self.gpr[RAX] & !0xffff) | old,
                _ => self.gpr[RAX] = old,
            }
        }
        Ok(())
    }

    /// CMPXCHG8B/CMPXCHG16B.
    #[inline(never)]
    pub(crate) fn cmpxchg_wide(&mut self, bus: &mut dyn Bus, i: &Instruction) -> XResult<()> {
        let a = self.ea(i);
        if i.mnemonic() == M::Cmpxchg8b {
            let exp = (self.gpr[RDX] & 0xffff_ffff) << 32 | (self.gpr[RAX] & 0xffff_ffff);
            let new = (self.gpr[RCX] & 0xffff_ffff) << 32 | (self.gpr[RBX] & 0xffff_ffff);
            let old = self.rmw_lin(bus, a, 8, &mut |d| if d == exp { new } else { d })?;
            let eq = old == exp;
            if !eq {
                self.gpr[RAX] = old & 0xffff_ffff;
                self.gpr[RDX] = old >> 32;
            }
            self.flags.set_bits(crate::flags::ZF, eq);
        } else {
            if a % 16 != 0 {
                return Err(Exc::gp(0));
            }
            // Not atomic against other vCPUs (CX16 is not advertised).
            let lo = self.read_lin(bus, a, 8)?;
            let hi = self.read_lin(bus, a + 8, 8)?;
            let eq = lo == self.gpr[RAX] && hi == self.gpr[RDX];
            if eq {
                self.write_lin(bus, a, 8, self.gpr[RBX])?;
                self.write_lin(bus, a + 8, 8, self.gpr[RCX])?;
            } else {
                self.write_lin(bus, a, 8, lo)?;
                self.gpr[RAX] = lo;
                self.gpr[RDX] = hi;
            }
            self.flags.set_bits(crate::flags::ZF, eq);
        }
        Ok(())
    }
}
