//! x87 arithmetic, stores, comparisons and register operations.

use super::*;
use crate::simd::compare::{CF, PF, ZF};
use crate::simd::convert::{float_to_float, float_to_int};
use crate::simd::float::{arith_non_nan, cmp_values, ArithOp};
use crate::simd::softfloat::{Format, Unpacked};
use crate::simd::{FpEnv, Rounding};
use core::cmp::Ordering;

/// An x87 arithmetic operation; the `R` forms reverse the operands (`src op dst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum X87Op {
    /// FADD.
    Add,
    /// FSUB: `dst - src`.
    Sub,
    /// FSUBR: `src - dst`.
    SubR,
    /// FMUL.
    Mul,
    /// FDIV: `dst / src`.
    Div,
    /// FDIVR: `src / dst`.
    DivR,
}

/// A source operand of an x87 arithmetic instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Src {
    /// ST(i).
    St(usize),
    /// m32fp bits.
    M32(u32),
    /// m64fp bits.
    M64(u64),
    /// m16int/m32int, sign-extended.
    Int(i64),
}

const MASK80: u128 = (1 << 80) - 1;

/// Widens without quieting (so NaN selection still sees an SNaN), reporting DE.
fn widen_raw(from: Format, bits: u128) -> (u128, u16) {
    let u = sf::unpack(from, bits, false);
    if u.is_nan() {
        let frac = bits & ((1u128 << from.frac_bits) - 1);
        let sign = if u.sign { 1u128 << 79 } else { 0 };
        return (
            sign | (0x7fff << 64) | (1 << 63) | (frac << (63 - from.frac_bits)),
            0,
        );
    }
    let (v, _) = float_to_float(from, F80, bits, FpEnv::IEEE);
    (v, if u.denormal { DE } else { 0 })
}

/// The x87 rule for a NaN result: SNaN loses to QNaN, else the larger significand wins
/// (ties: the positive one); the result is quieted.
fn pick_nan(a: u128, ua: &Unpacked, b: u128, ub: &Unpacked) -> u128 {
    let q = |x: u128| x | (1 << 62);
    match (ua.is_nan(), ub.is_nan()) {
        (true, false) => q(a),
        (false, _) => q(b),
        (true, true) => {
            if ua.is_snan() != ub.is_snan() {
                if ua.is_snan() {
                    q(b)
                } else {
                    q(a)
                }
            } else {
                let (ma, mb) = (a as u64 & !(1 << 63), b as u64 & !(1 << 63));
                // Equal significands: the positive one (as measured).
                if mb > ma || (mb == ma && (b >> 79) & 1 == 0) {
                    q(b)
                } else {
                    q(a)
                }
            }
        }
    }
}

/// The 80-bit layout with a 17-bit exponent, for results outside the 80-bit range.
const WIDE: Format = Format {
    exp_bits: 17,
    frac_bits: 63,
    explicit_int: true,
};

/// Moves a [`WIDE`] value into the 80-bit format with the exponent adjusted by -24576
/// (overflow) or +24576 (underflow), as the FPU delivers unmasked OE/UE results.
fn rebias(w: u128, scale: u16) -> u128 {
    let sign = (w >> 81) & 1;
    let exp = ((w >> 64) & 0x1ffff) as i64 - i64::from(WIDE.bias());
    let exp = if scale & OE != 0 {
        exp - 24576
    } else {
        exp + 24576
    };
    let field = (exp + i64::from(F80.bias())).clamp(0, 0x7ffe) as u128;
    (sign << 79) | (field << 64) | (w & u128::from(u64::MAX))
}

/// Unsupported 80-bit encodings (unnormals, pseudo-NaN/∞): invalid operands.
fn unsupported(v: u128) -> bool {
    let exp = (v >> 64) & 0x7fff;
    exp != 0 && (v >> 63) & 1 == 0
}

impl X87State {
    /// Rounding environment from FCW (no DAZ/FTZ on x87).
    pub fn env(&self) -> FpEnv {
        FpEnv {
            rounding: Rounding::from_rc(u32::from(self.fcw >> 10)),
            daz: false,
            ftz: false,
            underflow_masked: self.fcw & UE != 0,
        }
    }

    /// Precision control: 24, 53 or 64 bits.
    pub fn precision(&self) -> u32 {
        match (self.fcw >> 8) & 3 {
            0 => 24,
            2 => 53,
            _ => 64,
        }
    }

    /// Sets C1 when an inexact result was rounded away from zero; `exact_toward_zero`
    /// recomputes the result with rounding toward zero.
    fn set_c1_rounded(&mut self, flags: u32, bits: u128, toward_zero: impl FnOnce() -> u128) {
        self.fsw &= !C1;
        if flags & u32::from(PE) != 0 && toward_zero() & MASK80 != bits & MASK80 {
            self.fsw |= C1;
        }
    }

    /// FADD/FSUB/FSUBR/FMUL/FDIV/FDIVR: `ST(dst) = ST(dst) op src`, then pop if `pop`.
    /// Forms: `ST(0) op= ST(i)` (dst 0, `Src::St(i)`), `ST(i) op= ST(0)` (dst i,
    /// `Src::St(0)`, `pop` for FADDP...), and the memory forms (dst 0, FIADD... as
    /// `Src::Int`).
    pub fn arith(&mut self, op: X87Op, dst: usize, src: Src, pop: bool) {
        let (b, pre, src_empty) = match src {
            Src::St(i) => (self.st(i), 0, self.is_empty(i)),
            Src::M32(x) => {
                let (v, f) = widen_raw(sf::F32, x.into());
                (v, f, false)
            }
            Src::M64(x) => {
                let (v, f) = widen_raw(sf::F64, x.into());
                (v, f, false)
            }
            Src::Int(v) => (
                sf::from_int(F80, v < 0, v.unsigned_abs(), FpEnv::IEEE).0,
                0,
                false,
            ),
        };
        if src_empty || self.is_empty(dst) {
            if !self.stack_underflow() {
                self.set_st(dst, INDEFINITE);
                if pop {
                    self.pop();
                }
            }
            return;
        }
        let a = self.st(dst);
        let (x, y) = match op {
            X87Op::SubR | X87Op::DivR => (b, a),
            _ => (a, b),
        };
        let aop = match op {
            X87Op::Add => ArithOp::Add,
            X87Op::Sub | X87Op::SubR => ArithOp::Sub,
            X87Op::Mul => ArithOp::Mul,
            X87Op::Div | X87Op::DivR => ArithOp::Div,
        };
        let (value, flags) = self.compute(aop, x, y, pre);
        if self.commit(dst, value, flags) && pop {
            self.pop();
        }
    }

    /// Computes `x op y` in 80 bits with FCW's precision and rounding; flags in FSW bits.
    fn compute(&mut self, op: ArithOp, x: u128, y: u128, pre: u16) -> (u128, u16) {
        self.fsw &= !C1;
        let ux = sf::unpack(F80, x, false);
        let uy = sf::unpack(F80, y, false);
        if unsupported(x) || unsupported(y) {
            return (INDEFINITE, IE);
        }
        if ux.is_nan() || uy.is_nan() {
            let ie = if ux.is_snan() || uy.is_snan() { IE } else { 0 };
            return (pick_nan(x, &ux, y, &uy), ie);
        }
        let de = pre | if ux.denormal || uy.denormal { DE } else { 0 };
        let env = self.env();
        let p = self.precision();
        let (v, fl) = arith_non_nan(F80, p, op, &ux, &uy, env);
        let fl = fl as u16;
        let scale = fl & !self.fcw & (OE | UE);
        // An unmasked overflow/underflow delivers the result rounded with an unbounded
        // exponent and then rebiased by ∓24576 into range: compute it in a format with
        // two more exponent bits.
        let (fmt, v) = if scale != 0 && fl & (IE | ZE) == 0 {
            (WIDE, arith_non_nan(WIDE, p, op, &ux, &uy, env).0)
        } else {
            (F80, v)
        };
        let inexact = if fmt == WIDE {
            let env0 = FpEnv {
                rounding: Rounding::Zero,
                ..env
            };
            let (w0, wfl) = arith_non_nan(WIDE, p, op, &ux, &uy, env0);
            self.fsw &= !C1;
            if w0 != v {
                self.fsw |= C1;
            }
            wfl as u16 & PE
        } else {
            self.set_c1_rounded(u32::from(fl), v, || {
                let env0 = FpEnv {
                    rounding: Rounding::Zero,
                    ..env
                };
                arith_non_nan(F80, p, op, &ux, &uy, env0).0
            });
            fl & PE
        };
        let v = if fmt == WIDE { rebias(v, scale) } else { v };
        let fl = (fl & !PE) | inexact;
        let fl = if fl & (IE | ZE) != 0 { fl } else { fl | de };
        (v, fl)
    }

    /// Stores an arithmetic result unless an unmasked pre-computation exception
    /// occurred; returns whether it was stored.
    fn commit(&mut self, dst: usize, v: u128, flags: u16) -> bool {
        let unmasked = flags & !self.fcw & 0x3f;
        if unmasked & (IE | DE | ZE) != 0 {
            // The operation stops before computing: no post-computation flags, no C1.
            self.fsw &= !C1;
            self.raise(flags & (IE | DE | ZE));
            return false;
        }
        self.raise(flags);
        self.set_st(dst, v);
        true
    }
}

/// Which comparison: ordered (FCOM/FCOMI: IE on any NaN) or unordered (FUCOM/FUCOMI: IE on
/// SNaN only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpKind {
    /// FCOM*, FCOMI*, FICOM, FTST.
    Ordered,
    /// FUCOM*, FUCOMI*.
    Unordered,
}

impl X87State {
    /// FSQRT.
    pub fn fsqrt(&mut self) {
        if self.is_empty(0) {
            if !self.stack_underflow() {
                self.set_st(0, INDEFINITE);
            }
            return;
        }
        let x = self.st(0);
        let u = sf::unpack(F80, x, false);
        let env = self.env();
        let p = self.precision();
        let (v, fl) = if unsupported(x) {
            (INDEFINITE, IE)
        } else {
            match u.value {
                Value::NaN { quiet } => (x | (1 << 62), if quiet { 0 } else { IE }),
                Value::Zero => (x, 0),
                _ if u.sign => (INDEFINITE, IE),
                Value::Inf => (x, 0),
                Value::Finite { exp, sig } => {
                    let (v, fl) = sf::sqrt_finite(F80, p, (exp, sig), env);
                    let de = if u.denormal { DE } else { 0 };
                    (v, fl as u16 | de)
                }
            }
        };
        self.set_c1_rounded(u32::from(fl), v, || match u.value {
            Value::Finite { exp, sig } => {
                let env0 = FpEnv {
                    rounding: Rounding::Zero,
                    ..env
                };
                sf::sqrt_finite(F80, p, (exp, sig), env0).0
            }
            _ => v,
        });
        self.commit(0, v, fl);
    }

    /// FCHS.
    pub fn fchs(&mut self) {
        self.sign_op(|v| v ^ (1 << 79));
    }

    /// FABS.
    pub fn fabs(&mut self) {
        self.sign_op(|v| v & !(1 << 79));
    }

    fn sign_op(&mut self, f: impl FnOnce(u128) -> u128) {
        if self.is_empty(0) {
            if !self.stack_underflow() {
                self.set_st(0, INDEFINITE);
            }
            return;
        }
        self.fsw &= !C1;
        let v = f(self.st(0));
        self.set_st(0, v);
    }

    /// FXCH ST(i). Empty registers read as the indefinite when stack underflow is masked.
    pub fn fxch(&mut self, i: usize) {
        if self.is_empty(0) || self.is_empty(i) {
            if self.stack_underflow() {
                return;
            }
            for r in [0, i] {
                if self.is_empty(r) {
                    self.set_st(r, INDEFINITE);
                }
            }
        } else {
            self.fsw &= !C1;
        }
        let (a, b) = (self.st(0), self.st(i));
        self.set_st(0, b);
        self.set_st(i, a);
    }

    /// FST/FSTP ST(i).
    pub fn fst_st(&mut self, i: usize, pop: bool) {
        if self.is_empty(0) {
            if self.stack_underflow() {
                return;
            }
            self.set_st(i, INDEFINITE);
        } else {
            self.fsw &= !C1;
            let v = self.st(0);
            self.set_st(i, v);
        }
        if pop {
            self.pop();
        }
    }

    /// Converts ST(0) for a store to memory; `None` when nothing may be written (an
    /// unmasked exception). Pops on success when `pop`.
    fn store(
        &mut self,
        pop: bool,
        conv: impl Fn(u128, FpEnv) -> (u128, u16),
        indefinite: u128,
    ) -> Option<u128> {
        if self.is_empty(0) {
            if self.stack_underflow() {
                return None;
            }
            if pop {
                self.pop();
            }
            return Some(indefinite);
        }
        let x = self.st(0);
        let env = self.env();
        let (v, fl) = conv(x, env);
        self.set_c1_rounded(u32::from(fl), v, || {
            conv(
                x,
                FpEnv {
                    rounding: Rounding::Zero,
                    ..env
                },
            )
            .0
        });
        let unmasked = fl & !self.fcw & 0x3f;
        // Unmasked precision alone still stores; the others leave memory untouched and
        // report no precision/round-up (as measured).
        if unmasked & !PE != 0 {
            self.fsw &= !C1;
            self.raise(fl & !PE);
            return None;
        }
        self.raise(fl);
        if pop {
            self.pop();
        }
        Some(v)
    }

    fn store_float(&mut self, to: Format, pop: bool) -> Option<u128> {
        let conv = move |x: u128, env: FpEnv| {
            if unsupported(x) {
                return (to.default_nan(), IE);
            }
            let (v, fl) = float_to_float(F80, to, x, env);
            // Stores do not report denormal sources (as measured).
            (v, fl as u16 & !DE)
        };
        self.store(pop, conv, to.default_nan())
    }

    /// FST/FSTP m32: ST(0) rounded to single by FCW.RC.
    pub fn fst_m32(&mut self, pop: bool) -> Option<u32> {
        self.store_float(sf::F32, pop).map(|v| v as u32)
    }

    /// FST/FSTP m64.
    pub fn fst_m64(&mut self, pop: bool) -> Option<u64> {
        self.store_float(sf::F64, pop).map(|v| v as u64)
    }

    /// FSTP m80: the register as it is (even an unsupported encoding).
    pub fn fstp_m80(&mut self) -> Option<u128> {
        self.store(true, |x, _| (x, 0), INDEFINITE)
    }

    /// FIST/FISTP m16/m32/m64 (`width` 16, 32, 64): ST(0) rounded by FCW.RC; out of
    /// range or NaN gives IE and the integer indefinite. The value is zero-extended.
    pub fn fist(&mut self, width: u32, pop: bool) -> Option<u64> {
        let conv = move |x: u128, env: FpEnv| {
            if unsupported(x) {
                return (1u128 << (width - 1), IE);
            }
            let (v, fl) = float_to_int(F80, x, width, false, env);
            (u128::from(v), fl as u16)
        };
        self.store(pop, conv, 1u128 << (width - 1))
            .map(|v| v as u64)
    }

    /// Compares ST(0) with `src`: the ordering, None = unordered (also after a stack
    /// underflow). The result is written even when IE/DE are unmasked (measured).
    fn compare(&mut self, src: Src, kind: CmpKind, clear_c1: bool) -> Option<Ordering> {
        let (b, pre, src_empty) = match src {
            Src::St(i) => (self.st(i), 0, self.is_empty(i)),
            Src::M32(x) => {
                let (v, f) = widen_raw(sf::F32, x.into());
                (v, f, false)
            }
            Src::M64(x) => {
                let (v, f) = widen_raw(sf::F64, x.into());
                (v, f, false)
            }
            Src::Int(v) => (
                sf::from_int(F80, v < 0, v.unsigned_abs(), FpEnv::IEEE).0,
                0,
                false,
            ),
        };
        if clear_c1 {
            self.fsw &= !C1;
        }
        if src_empty || self.is_empty(0) {
            self.stack_underflow();
            return None;
        }
        let a = self.st(0);
        let ua = sf::unpack(F80, a, false);
        let ub = sf::unpack(F80, b, false);
        let nan = ua.is_nan() || ub.is_nan() || unsupported(a) || unsupported(b);
        let fl = if nan {
            let signal = kind == CmpKind::Ordered
                || ua.is_snan()
                || ub.is_snan()
                || unsupported(a)
                || unsupported(b);
            if signal {
                IE
            } else {
                0
            }
        } else if ua.denormal || ub.denormal || pre & DE != 0 {
            DE
        } else {
            0
        };
        // Even with IE/DE unmasked the condition codes / EFLAGS are written (measured).
        self.raise(fl);
        if nan {
            None
        } else {
            Some(cmp_values(&ua, &ub))
        }
    }

    /// FCOM/FCOMP/FCOMPP/FUCOM*/FICOM*/FTST: sets C3 C2 C0 (> 000, < 001, = 100,
    /// unordered 111), C1 = 0, and pops `pops` times (0..2).
    pub fn fcom(&mut self, src: Src, kind: CmpKind, pops: u32) {
        let o = self.compare(src, kind, true);
        let cc = match o {
            Some(Ordering::Greater) => 0,
            Some(Ordering::Less) => C0,
            Some(Ordering::Equal) => C3,
            None => C3 | C2 | C0,
        };
        self.fsw = (self.fsw & !(C3 | C2 | C1 | C0)) | cc;
        for _ in 0..pops {
            self.pop();
        }
    }

    /// FTST: compares ST(0) with +0.0.
    pub fn ftst(&mut self) {
        self.fcom(Src::Int(0), CmpKind::Ordered, 0);
    }

    /// FCOMI/FCOMIP/FUCOMI/FUCOMIP ST(0), ST(i): the RFLAGS bits to set among ZF, PF, CF
    /// (OF, SF, AF are cleared); always `Some` (RFLAGS is written even when IE is
    /// unmasked, as measured).
    pub fn fcomi(&mut self, i: usize, kind: CmpKind, pop: bool) -> Option<u64> {
        let o = self.compare(Src::St(i), kind, false);
        if pop {
            self.pop();
        }
        Some(match o {
            Some(Ordering::Greater) => 0,
            Some(Ordering::Less) => CF,
            Some(Ordering::Equal) => ZF,
            None => ZF | PF | CF,
        })
    }

    /// FXAM: classifies ST(0) into C3 C2 C0, C1 = sign.
    pub fn fxam(&mut self) {
        let v = self.st(0);
        let sign = if (v >> 79) & 1 != 0 { C1 } else { 0 };
        let cc = if self.is_empty(0) {
            C3 | C0
        } else if unsupported(v) {
            0
        } else {
            match sf::unpack(F80, v, false) {
                Unpacked {
                    value: Value::NaN { .. },
                    ..
                } => C0,
                Unpacked {
                    value: Value::Inf, ..
                } => C2 | C0,
                Unpacked {
                    value: Value::Zero, ..
                } => C3,
                Unpacked { denormal: true, .. } => C3 | C2,
                _ => C2,
            }
        };
        self.fsw = (self.fsw & !(C3 | C2 | C1 | C0)) | cc | sign;
    }
}
