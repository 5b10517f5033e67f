//! Lazily computed arithmetic flags.
//!
//! Most instructions only record their operands and result; CF/PF/AF/ZF/SF/OF
//! are derived when something reads them (Jcc, pushf, adc...).

use serde::{Deserialize, Serialize};

pub const CF: u64 = 1 << 0;
pub const PF: u64 = 1 << 2;
pub const AF: u64 = 1 << 4;
pub const ZF: u64 = 1 << 6;
pub const SF: u64 = 1 << 7;
pub const TF: u64 = 1 << 8;
pub const IF: u64 = 1 << 9;
pub const DF: u64 = 1 << 10;
pub const OF: u64 = 1 << 11;
pub const IOPL: u64 = 3 << 12;
pub const NT: u64 = 1 << 14;
pub const RF: u64 = 1 << 16;
pub const VM: u64 = 1 << 17;
pub const AC: u64 = 1 << 18;
pub const VIF: u64 = 1 << 19;
pub const VIP: u64 = 1 << 20;
pub const ID: u64 = 1 << 21;
/// The six arithmetic flags.
pub const ARITH: u64 = CF | PF | AF | ZF | SF | OF;

/// The operation whose result the lazy flags describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlagOp {
    /// Flags are materialized in `rflags`.
    None,
    Add,
    Adc,
    Sub,
    Sbb,
    Logic,
    Inc,
    Dec,
    Neg,
}

/// Mask for an operand size in bytes.
#[inline]
pub fn mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// Sign bit for an operand size in bytes.
#[inline]
pub fn sign_bit(size: u8) -> u64 {
    1u64 << (size as u32 * 8 - 1)
}

#[inline]
fn parity(v: u64) -> bool {
    (v as u8).count_ones() % 2 == 0
}

/// RFLAGS with lazily evaluated arithmetic flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flags {
    /// All flags; the arithmetic ones are valid only when `op == None`.
    pub rflags: u64,
    pub op: FlagOp,
    pub size: u8,
    pub res: u64,
    pub a: u64,
    pub b: u64,
    /// Carry in (adc/sbb) or preserved CF (inc/dec).
    pub aux: bool,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            rflags: 2,
            op: FlagOp::None,
            size: 8,
            res: 0,
            a: 0,
            b: 0,
            aux: false,
        }
    }
}

impl Flags {
    /// Records an operation's result for lazy evaluation.
    #[inline]
    pub fn set(&mut self, op: FlagOp, size: u8, res: u64, a: u64, b: u64) {
        self.op = op;
        self.size = size;
        self.res = res & mask(size);
        self.a = a & mask(size);
        self.b = b & mask(size);
    }

    /// Records inc/dec (CF preserved).
    #[inline]
    pub fn set_incdec(&mut self, op: FlagOp, size: u8, res: u64, a: u64) {
        let cf = self.cf();
        self.set(op, size, res, a, 1);
        self.aux = cf;
    }

    /// Records adc/sbb with carry in.
    #[inline]
    pub fn set_carry(&mut self, op: FlagOp, size: u8, res: u64, a: u64, b: u64, cin: bool) {
        self.set(op, size, res, a, b);
        self.aux = cin;
    }

    /// Carry flag.
    #[inline]
    pub fn cf(&self) -> bool {
        let (a, b, r) = (self.a, self.b, self.res);
        match self.op {
            FlagOp::None => self.rflags & CF != 0,
            FlagOp::Add => r < a,
            FlagOp::Adc => r < a || (self.aux && r == a),
            FlagOp::Sub => a < b,
            FlagOp::Sbb => a < b || (self.aux && a == b),
            FlagOp::Logic => false,
            FlagOp::Inc | FlagOp::Dec => self.aux,
            FlagOp::Neg => a != 0,
        }
    }

    /// Zero flag.
    #[inline]
    pub fn zf(&self) -> bool {
        match self.op {
            FlagOp::None => self.rflags & ZF != 0,
            _ => self.res == 0,
        }
    }

    /// Sign flag.
    #[inline]
    pub fn sf(&self) -> bool {
        match self.op {
            FlagOp::None => self.rflags & SF != 0,
            _ => self.res & sign_bit(self.size) != 0,
        }
    }

    /// Parity flag (of the low byte).
    #[inline]
    pub fn pf(&self) -> bool {
        match self.op {
            FlagOp::None => self.rflags & PF != 0,
            _ => parity(self.res),
        }
    }

    /// Auxiliary carry flag.
    #[inline]
    pub fn af(&self) -> bool {
        let (a, b, r) = (self.a, self.b, self.res);
        match self.op {
            FlagOp::None => self.rflags & AF != 0,
            FlagOp::Add | FlagOp::Adc | FlagOp::Sub | FlagOp::Sbb => (a ^ b ^ r) & 0x10 != 0,
            FlagOp::Logic => false,
            FlagOp::Inc => r & 0xf == 0,
            FlagOp::Dec => r & 0xf == 0xf,
            FlagOp::Neg => (a ^ r) & 0x10 != 0,
        }
    }

    /// Overflow flag.
    #[inline]
    pub fn of(&self) -> bool {
        let (a, b, r) = (self.a, self.b, self.res);
        let sb = sign_bit(self.size);
        match self.op {
            FlagOp::None => self.rflags & OF != 0,
            FlagOp::Add | FlagOp::Adc => (a ^ r) & (b ^ r) & sb != 0,
            FlagOp::Sub | FlagOp::Sbb => (a ^ b) & (a ^ r) & sb != 0,
            FlagOp::Logic => false,
            FlagOp::Inc => r == sb,
            FlagOp::Dec => r == sb - 1,
            FlagOp::Neg => r == sb,
        }
    }

    /// The full RFLAGS value.
    pub fn get(&self) -> u64 {
        if self.op == FlagOp::None {
            return self.rflags | 2;
        }
        let mut f = (self.rflags & !ARITH) | 2;
        if self.cf() {
            f |= CF;
        }
        if self.pf() {
            f |= PF;
        }
        if self.af() {
            f |= AF;
        }
        if self.zf() {
            f |= ZF;
        }
        if self.sf() {
            f |= SF;
        }
        if self.of() {
            f |= OF;
        }
        f
    }

    /// Replaces the full RFLAGS value.
    pub fn load(&mut self, v: u64) {
        self.rflags = (v & !(1 << 3 | 1 << 5 | 1 << 15)) | 2;
        self.op = FlagOp::None;
    }

    /// Materializes the arithmetic flags into `rflags`.
    #[inline]
    pub fn materialize(&mut self) {
        if self.op != FlagOp::None {
            self.rflags = self.get();
            self.op = FlagOp::None;
        }
    }

    /// Sets or clears individual arithmetic flags (after materializing).
    #[inline]
    pub fn set_bits(&mut self, bits: u64, on: bool) {
        self.materialize();
        if on {
            self.rflags |= bits;
        } else {
            self.rflags &= !bits;
        }
    }

    /// Sets ZF/SF/PF from a result and clears/sets the rest explicitly.
    pub fn set_szp(&mut self, size: u8, res: u64) {
        self.materialize();
        let r = res & mask(size);
        self.rflags &= !(ZF | SF | PF);
        if r == 0 {
            self.rflags |= ZF;
        }
        if r & sign_bit(size) != 0 {
            self.rflags |= SF;
        }
        if parity(r) {
            self.rflags |= PF;
        }
    }

    /// Evaluates a condition code (the low 4 bits of Jcc/SETcc/CMOVcc opcodes).
    #[inline]
    pub fn cond(&self, cc: u8) -> bool {
        let r = match cc >> 1 {
            0 => self.of(),
            1 => self.cf(),
            2 => self.zf(),
            3 => self.cf() || self.zf(),
            4 => self.sf(),
            5 => self.pf(),
            6 => self.sf() != self.of(),
            _ => self.zf() || (self.sf() != self.of()),
        };
        r ^ (cc & 1 != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_flags() {
        let mut f = Flags::default();
        f.set(FlagOp::Add, 1, 0x7f + 1, 0x7f, 1);
        assert!(f.of() && f.sf() && !f.cf() && f.af() && !f.zf());
        f.set(FlagOp::Add, 1, 0xff + 1, 0xff, 1);
        assert!(f.cf() && f.zf() && !f.of());
    }

    #[test]
    fn sub_flags() {
        let mut f = Flags::default();
        f.set(FlagOp::Sub, 4, 1u64.wrapping_sub(2), 1, 2);
        assert!(f.cf() && f.sf() && !f.zf() && !f.of());
        f.set(FlagOp::Sub, 4, 0x8000_0000u64 - 1, 0x8000_0000, 1);
        assert!(f.of() && !f.cf());
        assert!(f.cond(0x0)); // jo
        assert!(f.cond(0x7)); // ja: !cf && !zf
    }

    #[test]
    fn inc_preserves_cf() {
        let mut f = Flags::default();
        f.load(CF | 2);
        f.set_incdec(FlagOp::Inc, 8, 1, 0);
        assert!(f.cf());
        assert_eq!(f.get() & (CF | ZF), CF);
    }
}
