//! Exact IEEE 754 binary arithmetic on bit patterns, for every rounding mode.
//!
//! Written by hand because the host's `f32`/`f64` only round to nearest and report no
//! exception flags. Operands are unpacked into an integer significand and exponent, the
//! operation is computed exactly (or with a sticky bit jammed into the lowest bit, far
//! below the rounding position), and [`round_pack`] rounds once. This makes results and
//! the flags OE/UE/PE exact in all four rounding modes, including subnormal results
//! (tininess is detected after rounding, as x86 does) and FTZ. The same core serves the
//! x87 80-bit format ([`F80`]) with precision control (`p` = 24/53/64).

use super::mxcsr::{FpEnv, Rounding, OE, PE, UE};

/// A binary floating-point format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// Exponent field width.
    pub exp_bits: u32,
    /// Stored significand bits below the integer bit.
    pub frac_bits: u32,
    /// Whether the integer bit is stored (x87 extended).
    pub explicit_int: bool,
}

/// IEEE single.
pub const F32: Format = Format {
    exp_bits: 8,
    frac_bits: 23,
    explicit_int: false,
};
/// IEEE double.
pub const F64: Format = Format {
    exp_bits: 11,
    frac_bits: 52,
    explicit_int: false,
};
/// x87 double-extended (80 bits, explicit integer bit).
pub const F80: Format = Format {
    exp_bits: 15,
    frac_bits: 63,
    explicit_int: true,
};

impl Format {
    /// Full precision in bits (24, 53, 64).
    pub const fn precision(self) -> u32 {
        self.frac_bits + 1
    }
    /// Exponent bias.
    pub const fn bias(self) -> i32 {
        (1 << (self.exp_bits - 1)) - 1
    }
    /// Total width in bits.
    pub const fn width(self) -> u32 {
        1 + self.exp_bits + self.frac_bits + if self.explicit_int { 1 } else { 0 }
    }
    fn exp_max(self) -> u128 {
        (1 << self.exp_bits) - 1
    }
    fn frac_mask(self) -> u128 {
        (1 << self.frac_bits) - 1
    }
    fn sign_bit(self) -> u128 {
        1 << (self.width() - 1)
    }
    /// Position of the quiet bit of a NaN.
    fn quiet_bit(self) -> u128 {
        1 << (self.frac_bits - 1)
    }
    /// The default ("indefinite") QNaN: sign set, quiet bit set.
    pub fn default_nan(self) -> u128 {
        let int = if self.explicit_int {
            1 << self.frac_bits
        } else {
            0
        };
        self.sign_bit() | (self.exp_max() << self.exp_shift()) | int | self.quiet_bit()
    }
    fn exp_shift(self) -> u32 {
        self.frac_bits + if self.explicit_int { 1 } else { 0 }
    }
    /// Infinity with the given sign.
    pub fn inf(self, sign: bool) -> u128 {
        let int = if self.explicit_int {
            1 << self.frac_bits
        } else {
            0
        };
        self.signed(sign, (self.exp_max() << self.exp_shift()) | int)
    }
    /// Zero with the given sign.
    pub fn zero(self, sign: bool) -> u128 {
        self.signed(sign, 0)
    }
    fn signed(self, sign: bool, mag: u128) -> u128 {
        if sign {
            mag | self.sign_bit()
        } else {
            mag
        }
    }
    /// The largest finite magnitude with the given sign.
    fn max_finite(self, sign: bool, p: u32) -> u128 {
        let sig = ((1u128 << p) - 1) << (self.precision() - p);
        let stored = if self.explicit_int {
            sig
        } else {
            sig & self.frac_mask()
        };
        self.signed(sign, ((self.exp_max() - 1) << self.exp_shift()) | stored)
    }
    /// Sets the quiet bit of a NaN.
    pub fn quiet(self, bits: u128) -> u128 {
        bits | self.quiet_bit()
    }
}

/// An unpacked operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// ±0 (also a denormal read under DAZ).
    Zero,
    /// `sig * 2^exp`, `sig != 0`.
    Finite {
        /// Unbiased exponent of the significand's bit 0.
        exp: i32,
        /// Integer significand.
        sig: u64,
    },
    /// ±∞.
    Inf,
    /// A NaN; `quiet` tells QNaN from SNaN.
    NaN {
        /// Whether the quiet bit is set.
        quiet: bool,
    },
}

/// An operand as unpacked from its bit pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    /// Sign bit.
    pub sign: bool,
    /// Class and magnitude.
    pub value: Value,
    /// A denormal (subnormal) encoding: DE unless DAZ turned it into zero.
    pub denormal: bool,
}

impl Unpacked {
    /// Whether this is a signaling NaN.
    pub fn is_snan(&self) -> bool {
        matches!(self.value, Value::NaN { quiet: false })
    }
    /// Whether this is any NaN.
    pub fn is_nan(&self) -> bool {
        matches!(self.value, Value::NaN { .. })
    }
}

/// Unpacks `bits` of format `f`; with `daz` denormals read as zero (and keep `denormal`
/// set so callers can tell). x87 unnormals and pseudo-NaN/∞ (integer bit clear with a
/// nonzero exponent) unpack as SNaN so that they raise IE, as the FPU treats them.
pub fn unpack(f: Format, bits: u128, daz: bool) -> Unpacked {
    let sign = bits & f.sign_bit() != 0;
    let e = (bits >> f.exp_shift()) & f.exp_max();
    let frac = bits & f.frac_mask();
    let int = !f.explicit_int || (bits >> f.frac_bits) & 1 != 0;
    let bias = f.bias();
    let fb = f.frac_bits as i32;
    let value = if e == f.exp_max() {
        if !int {
            Value::NaN { quiet: false }
        } else if frac == 0 {
            Value::Inf
        } else {
            Value::NaN {
                quiet: frac & f.quiet_bit() != 0,
            }
        }
    } else if e == 0 {
        // Explicit-int denormals (and pseudo-denormals) keep their integer bit.
        let sig = if f.explicit_int {
            bits & ((1 << f.precision()) - 1)
        } else {
            frac
        };
        if sig == 0 {
            Value::Zero
        } else {
            return Unpacked {
                sign,
                value: if daz {
                    Value::Zero
                } else {
                    Value::Finite {
                        exp: 1 - bias - fb,
                        sig: sig as u64,
                    }
                },
                denormal: true,
            };
        }
    } else if !int {
        Value::NaN { quiet: false }
    } else {
        Value::Finite {
            exp: e as i32 - bias - fb,
            sig: (frac | (1 << f.frac_bits)) as u64,
        }
    };
    Unpacked {
        sign,
        value,
        denormal: false,
    }
}

fn bit_len(x: u128) -> i32 {
    128 - x.leading_zeros() as i32
}

/// Rounds `sig` right by `shift` bits; returns the rounded integer and inexactness.
pub fn round_shift(sig: u128, shift: i32, sign: bool, rc: Rounding) -> (u128, bool) {
    if shift <= 0 {
        return (sig << (-shift) as u32, false);
    }
    let (m, rem_gt_half, rem_eq_half, inexact) = if shift > 128 {
        (0, false, false, sig != 0)
    } else if shift == 128 {
        let half = 1u128 << 127;
        (0, sig > half, sig == half, sig != 0)
    } else {
        let rem = sig & ((1u128 << shift) - 1);
        let half = 1u128 << (shift - 1);
        (sig >> shift, rem > half, rem == half, rem != 0)
    };
    let inc = match rc {
        Rounding::Nearest => rem_gt_half || (rem_eq_half && m & 1 == 1),
        Rounding::Up => inexact && !sign,
        Rounding::Down => inexact && sign,
        Rounding::Zero => false,
    };
    (m + u128::from(inc), inexact)
}

/// Rounds the exact value `(-1)^sign * sig * 2^exp` (`sig` may carry a sticky bit in bit
/// 0) to format `f` with `p` bits of precision (`p <= f.precision()`), honouring the
/// rounding mode and FTZ of `env`. Returns the bit pattern and the flags OE/UE/PE.
pub fn round_pack(f: Format, p: u32, sign: bool, exp: i32, sig: u128, env: FpEnv) -> (u128, u32) {
    if sig == 0 {
        return (f.zero(sign), 0);
    }
    let rc = env.rounding;
    let p = p as i32;
    let emin = 1 - f.bias();
    let emax = f.bias();
    let top = exp + bit_len(sig) - 1;
    // Tininess after rounding: round to p bits with an unbounded exponent range.
    let tiny = top < emin && {
        let lsb = top - (p - 1);
        let (m, _) = round_shift(sig, lsb - exp, sign, rc);
        lsb + bit_len(m) - 1 < emin
    };
    if tiny && env.ftz && env.underflow_masked {
        return (f.zero(sign), UE | PE);
    }
    // Subnormal results keep the rounding position of the smallest normal at precision
    // `p` (x87 precision control rounds denormals at that fixed bit too).
    let lsb = (top - (p - 1)).max(emin - (p - 1));
    let (mut m, inexact) = round_shift(sig, lsb - exp, sign, rc);
    let mut lsb = lsb;
    if bit_len(m) > p {
        m >>= 1;
        lsb += 1;
    }
    let mut flags = if inexact { PE } else { 0 };
    if tiny && (inexact || !env.underflow_masked) {
        flags |= UE;
    }
    if m == 0 {
        return (f.zero(sign), flags);
    }
    let top = lsb + bit_len(m) - 1;
    if top > emax {
        let to_inf = match rc {
            Rounding::Nearest => true,
            Rounding::Zero => false,
            Rounding::Up => !sign,
            Rounding::Down => sign,
        };
        let bits = if to_inf {
            f.inf(sign)
        } else {
            f.max_finite(sign, p as u32)
        };
        return (bits, flags | OE | PE);
    }
    let fb = f.frac_bits as i32;
    let (field, stored) = if top >= emin {
        ((top + f.bias()) as u128, m << (fb + 1 - bit_len(m)))
    } else {
        (0, m << (lsb - (emin - fb)))
    };
    let stored = if f.explicit_int {
        stored
    } else {
        stored & f.frac_mask()
    };
    (f.signed(sign, (field << f.exp_shift()) | stored), flags)
}

/// Right shift with the shifted-out bits jammed into bit 0.
fn shr_jam(x: u128, n: u32) -> u128 {
    if n == 0 {
        x
    } else if n >= 128 {
        u128::from(x != 0)
    } else {
        (x >> n) | u128::from(x & ((1u128 << n) - 1) != 0)
    }
}

/// Exact sum of two finite nonzero values, rounded.
pub fn add_finite(
    f: Format,
    p: u32,
    (sa, ea, ma): (bool, i32, u64),
    (sb, eb, mb): (bool, i32, u64),
    env: FpEnv,
) -> (u128, u32) {
    // Normalise both to bit 125, leaving headroom for the carry.
    let norm = |e: i32, m: u64| {
        let m = u128::from(m);
        let s = 125 - (bit_len(m) - 1);
        (e - s, m << s)
    };
    let (ea, ma) = norm(ea, ma);
    let (eb, mb) = norm(eb, mb);
    let ((big_s, big_e, big_m), (sml_s, sml_m)) = if ea >= eb {
        ((sa, ea, ma), (sb, shr_jam(mb, (ea - eb) as u32)))
    } else {
        ((sb, eb, mb), (sa, shr_jam(ma, (eb - ea) as u32)))
    };
    if big_s == sml_s {
        return round_pack(f, p, big_s, big_e, big_m + sml_m, env);
    }
    let (sign, mag) = if big_m >= sml_m {
        (big_s, big_m - sml_m)
    } else {
        (sml_s, sml_m - big_m)
    };
    if mag == 0 {
        return (f.zero(env.rounding == Rounding::Down), 0);
    }
    round_pack(f, p, sign, big_e, mag, env)
}

/// Exact product of two finite nonzero values, rounded.
pub fn mul_finite(
    f: Format,
    p: u32,
    sign: bool,
    (ea, ma): (i32, u64),
    (eb, mb): (i32, u64),
    env: FpEnv,
) -> (u128, u32) {
    round_pack(f, p, sign, ea + eb, u128::from(ma) * u128::from(mb), env)
}

/// Quotient of two finite nonzero values, rounded (126+ quotient bits plus sticky).
pub fn div_finite(
    f: Format,
    p: u32,
    sign: bool,
    (ea, ma): (i32, u64),
    (eb, mb): (i32, u64),
    env: FpEnv,
) -> (u128, u32) {
    let sa = 126 - (bit_len(u128::from(ma)) - 1);
    let sb = 63 - (bit_len(u128::from(mb)) - 1);
    let a = u128::from(ma) << sa;
    let b = u128::from(mb << sb);
    let (q1, r1) = (a / b, a % b);
    let (q2, r2) = ((r1 << 64) / b, (r1 << 64) % b);
    let q = (q1 << 64) | q2 | u128::from(r2 != 0);
    round_pack(f, p, sign, (ea - sa) - (eb - sb) - 64, q, env)
}

/// Square root of a finite positive value, rounded (65 root bits plus sticky).
pub fn sqrt_finite(f: Format, p: u32, (e, m): (i32, u64), env: FpEnv) -> (u128, u32) {
    let mut s = 126 - (bit_len(u128::from(m)) - 1);
    if (e - s) & 1 != 0 {
        s += 1;
    }
    let x = u128::from(m) << s;
    let r = x.isqrt();
    let rem = x - r * r;
    let bit = rem > r;
    let rem2 = if bit { 4 * rem - 4 * r - 1 } else { 4 * rem };
    let q = (r << 2) | (u128::from(bit) << 1) | u128::from(rem2 != 0);
    // x = m * 2^s, value = x * 2^(e-s); sqrt = sqrt(x) * 2^((e-s)/2); q = 4*sqrt(x).
    round_pack(f, p, false, (e - s) / 2 - 2, q, env)
}

/// Rounds an integer magnitude to format `f` (for int -> float conversions).
pub fn from_int(f: Format, sign: bool, mag: u64, env: FpEnv) -> (u128, u32) {
    round_pack(f, f.precision(), sign, 0, u128::from(mag), env)
}
