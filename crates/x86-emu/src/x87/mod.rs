//! The x87 FPU: register stack, control/status/tag words, and the subset of instructions a
//! kernel and glibc use at start-up, plus the FXSAVE/FXRSTOR image.
//!
//! [`X87State`] is the whole architectural x87 state (serde-serializable). Its methods
//! implement the instructions on values the executor has already fetched (memory operands
//! are passed in as bits, stores return bits), so this module needs no bus. Arithmetic is
//! exact in the full 80-bit format with precision control (24/53/64 bits) and all four
//! rounding modes, using the same soft-float core as SSE ([`crate::simd::softfloat`]).
//!
//! Exceptions: flags are raised in FSW as the SDM describes, with SF/C1 for stack faults
//! and C1 = "rounded up" for inexact results. Masked exceptions give the masked response
//! (QNaN indefinite, integer indefinite, ±∞...). An unmasked exception sets ES and B;
//! the caller must then raise #MF (CR0.NE=1) at the next waiting x87 instruction
//! ([`X87State::pending_exception`]). Checked against the host FPU with IE/DE/ZE/PE
//! unmasked: arithmetic with an unmasked IE/DE/ZE stores nothing and reports only that
//! flag; loads stop only on IE; compares still write the condition codes/EFLAGS; stores to
//! memory write nothing on an unmasked IE/DE/ZE/OE/UE; an unmasked OE/UE with a register
//! destination stores the result with its exponent rebiased by ∓24576.
//!
//! # API summary (for the executor)
//! - control: `fninit`, `fnclex`, `fldcw(u16)`, `fnstcw() -> u16`, `fnstsw() -> u16`,
//!   `pending_exception()` (FWAIT/#MF), `ffree(i)`, `fincstp`, `fdecstp`.
//! - loads: `fld_m32(u32)`, `fld_m64(u64)`, `fld_m80(u128)`, `fld_st(i)`, `fild(i64)`,
//!   `fldz`, `fld1`; stores: `fst_m32/m64/m80(pop) -> Option<bits>` (None: unmasked
//!   exception, don't write), `fst_st(i, pop)`, `fist(width, pop) -> Option<i64 bits>`.
//! - arithmetic ([`ops`]): `arith(op, dst, src)` for every FADD/FSUB(R)/FMUL/FDIV(R) form,
//!   `fxch`, `fchs`, `fabs`, `fsqrt`, `fcom`, `fcomi -> rflags bits`, `ftst`, `fxam`.
//! - [`fxsave`]: `fxsave_image(&FpuState, rex_w) -> [u8; 512]`, `fxrstor_parse`.

pub mod fxsave;
pub mod ops;

use crate::simd::softfloat::{self as sf, Value, F80};
use serde::{Deserialize, Serialize};

/// FSW/FCW exception bits (same positions in both words, and as MXCSR's IE..PE).
pub const IE: u16 = 1 << 0;
/// Denormal operand.
pub const DE: u16 = 1 << 1;
/// Zero divide.
pub const ZE: u16 = 1 << 2;
/// Overflow.
pub const OE: u16 = 1 << 3;
/// Underflow.
pub const UE: u16 = 1 << 4;
/// Precision.
pub const PE: u16 = 1 << 5;
/// Stack fault (FSW only).
pub const SF: u16 = 1 << 6;
/// Error summary (FSW only).
pub const ES: u16 = 1 << 7;
/// Condition code C0.
pub const C0: u16 = 1 << 8;
/// Condition code C1.
pub const C1: u16 = 1 << 9;
/// Condition code C2.
pub const C2: u16 = 1 << 10;
/// Condition code C3.
pub const C3: u16 = 1 << 14;
/// FPU busy (mirrors ES).
pub const B: u16 = 1 << 15;
/// Tag: valid.
pub const TAG_VALID: u16 = 0;
/// Tag: zero.
pub const TAG_ZERO: u16 = 1;
/// Tag: special (NaN, ∞, denormal, unsupported).
pub const TAG_SPECIAL: u16 = 2;
/// Tag: empty.
pub const TAG_EMPTY: u16 = 3;

/// The QNaN "real indefinite" in 80-bit format.
pub const INDEFINITE: u128 = 0xffff_c000_0000_0000_0000;

/// Architectural x87 state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct X87State {
    /// Physical registers R0..R7 (ST(i) is R[(TOP + i) & 7]), 80-bit little-endian.
    pub regs: [[u8; 10]; 8],
    /// Control word.
    pub fcw: u16,
    /// Status word, TOP in bits 11..13.
    pub fsw: u16,
    /// Full tag word, two bits per physical register.
    pub ftw: u16,
    /// Last instruction opcode (11 bits).
    pub fop: u16,
    /// Last instruction pointer.
    pub fip: u64,
    /// Last data pointer.
    pub fdp: u64,
}

impl Default for X87State {
    fn default() -> Self {
        X87State {
            regs: [[0; 10]; 8],
            fcw: 0x37f,
            fsw: 0,
            ftw: 0xffff,
            fop: 0,
            fip: 0,
            fdp: 0,
        }
    }
}

/// The tag a value deserves when its register is not empty.
pub fn classify_tag(v: u128) -> u16 {
    let exp = (v >> 64) & 0x7fff;
    let mant = v as u64;
    if exp == 0x7fff || (exp != 0 && mant >> 63 == 0) {
        TAG_SPECIAL
    } else if exp == 0 {
        if mant == 0 {
            TAG_ZERO
        } else {
            TAG_SPECIAL
        }
    } else {
        TAG_VALID
    }
}

fn to_bytes(v: u128) -> [u8; 10] {
    let b = v.to_le_bytes();
    core::array::from_fn(|i| b[i])
}

fn from_bytes(b: &[u8; 10]) -> u128 {
    let mut full = [0u8; 16];
    full[..10].copy_from_slice(b);
    u128::from_le_bytes(full)
}

impl X87State {
    /// FNINIT.
    pub fn fninit(&mut self) {
        *self = X87State {
            regs: self.regs,
            ..X87State::default()
        };
    }

    /// FNCLEX: clears the exception flags, SF, ES and B.
    pub fn fnclex(&mut self) {
        self.fsw &= !(0xff | B);
    }

    /// FLDCW. Unmasking a pending exception sets ES/B (and #MF comes at the next waiting
    /// instruction).
    pub fn fldcw(&mut self, v: u16) {
        // Reserved bits 7 and 13..15 read as 0, bit 6 as 1 (as measured).
        self.fcw = (v & 0x1f3f) | 0x40;
        self.update_es();
    }

    /// FNSTCW.
    pub fn fnstcw(&self) -> u16 {
        self.fcw
    }

    /// FNSTSW (to m16 or AX).
    pub fn fnstsw(&self) -> u16 {
        self.fsw
    }

    /// Whether an unmasked exception is pending: FWAIT and waiting x87 instructions must
    /// raise #MF (CR0.NE=1) before executing.
    pub fn pending_exception(&self) -> bool {
        self.fsw & ES != 0
    }

    fn update_es(&mut self) {
        if self.fsw & !self.fcw & 0x3f != 0 {
            self.fsw |= ES | B;
        } else {
            self.fsw &= !(ES | B);
        }
    }

    /// Raises exception flags (IE..PE, SF); returns true when one of IE..PE is unmasked.
    pub fn raise(&mut self, flags: u16) -> bool {
        self.fsw |= flags & 0x7f;
        let unmasked = flags & !self.fcw & 0x3f != 0;
        if unmasked {
            self.fsw |= ES | B;
        }
        unmasked
    }

    /// TOP.
    pub fn top(&self) -> usize {
        usize::from((self.fsw >> 11) & 7)
    }

    fn set_top(&mut self, t: usize) {
        self.fsw = (self.fsw & !(7 << 11)) | (((t & 7) as u16) << 11);
    }

    fn phys(&self, i: usize) -> usize {
        (self.top() + i) & 7
    }

    /// The tag of ST(i).
    pub fn tag(&self, i: usize) -> u16 {
        (self.ftw >> (2 * self.phys(i))) & 3
    }

    /// Whether ST(i) is empty.
    pub fn is_empty(&self, i: usize) -> bool {
        self.tag(i) == TAG_EMPTY
    }

    fn set_tag_phys(&mut self, p: usize, t: u16) {
        self.ftw = (self.ftw & !(3 << (2 * p))) | (t << (2 * p));
    }

    /// ST(i) as an 80-bit value (whatever its tag).
    pub fn st(&self, i: usize) -> u128 {
        from_bytes(&self.regs[self.phys(i)])
    }

    /// Writes ST(i) and tags it by its value.
    pub fn set_st(&mut self, i: usize, v: u128) {
        let p = self.phys(i);
        self.regs[p] = to_bytes(v);
        self.set_tag_phys(p, classify_tag(v));
    }

    /// Marks ST(0) empty and increments TOP.
    pub fn pop(&mut self) {
        let p = self.phys(0);
        self.set_tag_phys(p, TAG_EMPTY);
        self.set_top(self.top() + 1);
    }

    /// Pushes `v` (already checked for stack overflow by the caller).
    fn push_raw(&mut self, v: u128) {
        self.set_top(self.top().wrapping_sub(1));
        self.set_st(0, v);
    }

    /// Stack underflow: IE|SF with C1=0. Returns true when unmasked.
    pub(crate) fn stack_underflow(&mut self) -> bool {
        self.fsw &= !C1;
        self.raise(IE | SF)
    }

    /// Pushes a loaded value with its flags: stack overflow if ST(7) is in use.
    fn push_checked(&mut self, v: u128, flags: u16) {
        if !self.is_empty(7) {
            self.fsw |= C1;
            if !self.raise(IE | SF) {
                self.push_raw(INDEFINITE);
            }
            return;
        }
        self.fsw &= !C1;
        self.raise(flags);
        // An unmasked IE (SNaN source) stops the load; an unmasked DE does not (measured).
        if flags & IE != 0 && self.fcw & IE == 0 {
            return;
        }
        self.push_raw(v);
    }

    /// FFREE ST(i).
    pub fn ffree(&mut self, i: usize) {
        self.fsw &= !C1;
        let p = self.phys(i);
        self.set_tag_phys(p, TAG_EMPTY);
    }

    /// FINCSTP.
    pub fn fincstp(&mut self) {
        self.fsw &= !C1;
        self.set_top(self.top() + 1);
    }

    /// FDECSTP.
    pub fn fdecstp(&mut self) {
        self.fsw &= !C1;
        self.set_top(self.top().wrapping_sub(1));
    }

    /// FLD ST(i).
    pub fn fld_st(&mut self, i: usize) {
        if self.is_empty(i) {
            if !self.stack_underflow() {
                self.push_raw(INDEFINITE);
            }
            return;
        }
        let v = self.st(i);
        self.push_checked(v, 0);
    }

    /// FLD m80: no conversion, no exceptions besides stack overflow.
    pub fn fld_m80(&mut self, v: u128) {
        self.push_checked(v & ((1 << 80) - 1), 0);
    }

    /// FLD m32.
    pub fn fld_m32(&mut self, bits: u32) {
        let (v, f) = widen(sf::F32, u128::from(bits));
        self.push_checked(v, f);
    }

    /// FLD m64.
    pub fn fld_m64(&mut self, bits: u64) {
        let (v, f) = widen(sf::F64, u128::from(bits));
        self.push_checked(v, f);
    }

    /// FILD m16/m32/m64 (`v` sign-extended): exact.
    pub fn fild(&mut self, v: i64) {
        let (bits, _) = sf::from_int(F80, v < 0, v.unsigned_abs(), crate::simd::FpEnv::IEEE);
        self.push_checked(bits, 0);
    }

    /// FLDZ.
    pub fn fldz(&mut self) {
        self.push_checked(0, 0);
    }

    /// FLD1.
    pub fn fld1(&mut self) {
        self.push_checked(0x3fff_8000_0000_0000_0000, 0);
    }
}

/// Widens an f32/f64 to 80 bits: SNaN raises IE (quieted), denormals raise DE.
fn widen(from: sf::Format, bits: u128) -> (u128, u16) {
    let u = sf::unpack(from, bits, false);
    let de = if u.denormal { DE } else { 0 };
    match u.value {
        Value::NaN { quiet } => {
            let (v, _) =
                crate::simd::convert::float_to_float(from, F80, bits, crate::simd::FpEnv::IEEE);
            (v, if quiet { 0 } else { IE })
        }
        _ => {
            let (v, _) =
                crate::simd::convert::float_to_float(from, F80, bits, crate::simd::FpEnv::IEEE);
            (v, de)
        }
    }
}

impl X87State {
    /// Tags in FXSAVE's abridged form (bit per physical register, 1 = not empty).
    pub fn abridged_tags(&self) -> u8 {
        (0..8).fold(0, |acc, p| {
            if (self.ftw >> (2 * p)) & 3 != TAG_EMPTY {
                acc | (1 << p)
            } else {
                acc
            }
        })
    }

    /// The registers in ST order, as FXSAVE stores them.
    pub fn st_order(&self) -> [[u8; 10]; 8] {
        core::array::from_fn(|i| self.regs[self.phys(i)])
    }

    /// Rebuilds the state from FXSAVE-style fields (ST-order registers, abridged tags).
    pub fn from_fxsave_fields(
        st: &[[u8; 10]; 8],
        fcw: u16,
        fsw: u16,
        ftwx: u8,
        fop: u16,
        fip: u64,
        fdp: u64,
    ) -> X87State {
        let mut s = X87State {
            regs: [[0; 10]; 8],
            fcw,
            fsw,
            ftw: 0,
            fop,
            fip,
            fdp,
        };
        let top = s.top();
        for (i, r) in st.iter().enumerate() {
            s.regs[(top + i) & 7] = *r;
        }
        for p in 0..8 {
            let t = if ftwx & (1 << p) == 0 {
                TAG_EMPTY
            } else {
                classify_tag(from_bytes(&s.regs[p]))
            };
            s.set_tag_phys(p, t);
        }
        s
    }
}
