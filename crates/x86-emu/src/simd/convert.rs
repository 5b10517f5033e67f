//! SSE/SSE2 conversions between integers, singles and doubles (CVT*), with MXCSR.
//!
//! Float-to-integer conversions that are out of range or NaN raise IE and give the
//! "integer indefinite" value (only the sign bit set). The `cvtt*` forms truncate; the
//! others round by MXCSR.RC. Int-to-float and narrowing conversions round by MXCSR.RC.

use super::float::{denormal_flag, packed32, packed64};
use super::lanes::*;
use super::mxcsr::{FpEnv, FpOut, Rounding, IE, PE};
use super::softfloat::{self as sf, Format, Value, F32, F64};

/// Converts a float lane to a signed integer of `width` bits (32 or 64), rounding by
/// `env.rounding` or toward zero when `truncate`. Returns the value zero-extended.
pub fn float_to_int(f: Format, bits: u128, width: u32, truncate: bool, env: FpEnv) -> (u64, u32) {
    let indefinite = (1u64 << (width - 1), IE);
    let u = sf::unpack(f, bits, env.daz);
    let (exp, sig) = match u.value {
        Value::Zero => return (0, 0),
        Value::Inf | Value::NaN { .. } => return indefinite,
        Value::Finite { exp, sig } => (exp, sig),
    };
    let len = 64 - sig.leading_zeros() as i32;
    if len + exp > width as i32 + 1 {
        return indefinite;
    }
    let rc = if truncate {
        Rounding::Zero
    } else {
        env.rounding
    };
    let (mag, inexact) = sf::round_shift(u128::from(sig), -exp, u.sign, rc);
    let limit = 1u128 << (width - 1);
    if (u.sign && mag > limit) || (!u.sign && mag >= limit) {
        return indefinite;
    }
    let v = if u.sign {
        (mag as u64).wrapping_neg()
    } else {
        mag as u64
    };
    let mask = if width == 64 {
        u64::MAX
    } else {
        (1 << width) - 1
    };
    (v & mask, if inexact { PE } else { 0 })
}

/// Converts a signed integer to format `f`, rounding by `env`.
pub fn int_to_float(f: Format, v: i64, env: FpEnv) -> (u128, u32) {
    sf::from_int(f, v < 0, v.unsigned_abs(), env)
}

/// Converts between float formats: SNaN raises IE and is quieted, NaN payloads keep their
/// high fraction bits, denormal sources raise DE, narrowing rounds by `env`.
pub fn float_to_float(from: Format, to: Format, bits: u128, env: FpEnv) -> (u128, u32) {
    let u = sf::unpack(from, bits, env.daz);
    let de = denormal_flag(env, &[u]);
    match u.value {
        Value::Zero => (to.zero(u.sign), de),
        Value::Inf => (to.inf(u.sign), 0),
        Value::NaN { quiet } => {
            let frac = bits & ((1u128 << from.frac_bits) - 1);
            let payload = if to.frac_bits >= from.frac_bits {
                frac << (to.frac_bits - from.frac_bits)
            } else {
                frac >> (from.frac_bits - to.frac_bits)
            };
            let nan = to.quiet(to.inf(u.sign) | payload);
            (nan, if quiet { 0 } else { IE })
        }
        Value::Finite { exp, sig } => {
            let (v, fl) = sf::round_pack(to, to.precision(), u.sign, exp, u128::from(sig), env);
            (v, fl | de)
        }
    }
}

fn env(mxcsr: u32) -> FpEnv {
    FpEnv::from_mxcsr(mxcsr)
}

/// CVTSI2SS a, r/m32|64 (`v` sign-extended).
pub fn cvtsi2ss(a: u128, v: i64, mxcsr: u32) -> FpOut<u128> {
    let (r, flags) = int_to_float(F32, v, env(mxcsr));
    FpOut {
        value: (a & !0xffff_ffffu128) | r,
        flags,
    }
}

/// CVTSI2SD a, r/m32|64 (`v` sign-extended).
pub fn cvtsi2sd(a: u128, v: i64, mxcsr: u32) -> FpOut<u128> {
    let (r, flags) = int_to_float(F64, v, env(mxcsr));
    FpOut {
        value: (a & !u128::from(u64::MAX)) | r,
        flags,
    }
}

fn to_int(f: Format, bits: u128, is64: bool, truncate: bool, mxcsr: u32) -> FpOut<u64> {
    let (value, flags) = float_to_int(f, bits, if is64 { 64 } else { 32 }, truncate, env(mxcsr));
    FpOut { value, flags }
}

/// CVTSS2SI: lane 0 of `b` to a 32- or 64-bit integer (zero-extended into the GPR).
pub fn cvtss2si(b: u128, is64: bool, mxcsr: u32) -> FpOut<u64> {
    to_int(F32, b & 0xffff_ffff, is64, false, mxcsr)
}
/// CVTTSS2SI.
pub fn cvttss2si(b: u128, is64: bool, mxcsr: u32) -> FpOut<u64> {
    to_int(F32, b & 0xffff_ffff, is64, true, mxcsr)
}
/// CVTSD2SI.
pub fn cvtsd2si(b: u128, is64: bool, mxcsr: u32) -> FpOut<u64> {
    to_int(F64, b & u128::from(u64::MAX), is64, false, mxcsr)
}
/// CVTTSD2SI.
pub fn cvttsd2si(b: u128, is64: bool, mxcsr: u32) -> FpOut<u64> {
    to_int(F64, b & u128::from(u64::MAX), is64, true, mxcsr)
}

/// CVTSS2SD a, b: lane 0 widened into `a`'s low double.
pub fn cvtss2sd(a: u128, b: u128, mxcsr: u32) -> FpOut<u128> {
    let (r, flags) = float_to_float(F32, F64, b & 0xffff_ffff, env(mxcsr));
    FpOut {
        value: (a & !u128::from(u64::MAX)) | r,
        flags,
    }
}

/// CVTSD2SS a, b: lane 0 narrowed into `a`'s low single.
pub fn cvtsd2ss(a: u128, b: u128, mxcsr: u32) -> FpOut<u128> {
    let (r, flags) = float_to_float(F64, F32, b & u128::from(u64::MAX), env(mxcsr));
    FpOut {
        value: (a & !0xffff_ffffu128) | r,
        flags,
    }
}

/// CVTPS2PD: the low two singles of `b` widened.
pub fn cvtps2pd(b: u128, mxcsr: u32) -> FpOut<u128> {
    let e = env(mxcsr);
    let s = u32x4(b);
    packed64(u128::from(s[0]) | (u128::from(s[1]) << 64), 0, |x, _| {
        let (v, f) = float_to_float(F32, F64, x.into(), e);
        (v as u64, f)
    })
}

/// CVTPD2PS: two doubles narrowed into the low two singles, upper half zeroed.
pub fn cvtpd2ps(b: u128, mxcsr: u32) -> FpOut<u128> {
    let e = env(mxcsr);
    let out = packed64(b, 0, |x, _| {
        let (v, f) = float_to_float(F64, F32, x.into(), e);
        (v as u64, f)
    });
    let d = u64x2(out.value);
    FpOut {
        value: from_u32x4([d[0] as u32, d[1] as u32, 0, 0]),
        flags: out.flags,
    }
}

/// CVTDQ2PS: four signed doublewords to singles.
pub fn cvtdq2ps(b: u128, mxcsr: u32) -> FpOut<u128> {
    let e = env(mxcsr);
    packed32(b, 0, |x, _| {
        let (v, f) = int_to_float(F32, i64::from(x as i32), e);
        (v as u32, f)
    })
}

/// CVTDQ2PD: the low two signed doublewords to doubles (exact).
pub fn cvtdq2pd(b: u128) -> u128 {
    let s = u32x4(b);
    let cv = |x: u32| int_to_float(F64, i64::from(x as i32), FpEnv::IEEE).0 as u64;
    from_u64x2([cv(s[0]), cv(s[1])])
}

fn ps2dq(b: u128, truncate: bool, mxcsr: u32) -> FpOut<u128> {
    let e = env(mxcsr);
    packed32(b, 0, |x, _| {
        let (v, f) = float_to_int(F32, x.into(), 32, truncate, e);
        (v as u32, f)
    })
}

/// CVTPS2DQ: four singles to signed doublewords, rounding by MXCSR.
pub fn cvtps2dq(b: u128, mxcsr: u32) -> FpOut<u128> {
    ps2dq(b, false, mxcsr)
}
/// CVTTPS2DQ: four singles to signed doublewords, truncating.
pub fn cvttps2dq(b: u128, mxcsr: u32) -> FpOut<u128> {
    ps2dq(b, true, mxcsr)
}

fn pd2dq(b: u128, truncate: bool, mxcsr: u32) -> FpOut<u64> {
    let e = env(mxcsr);
    let d = u64x2(b);
    let (v0, f0) = float_to_int(F64, d[0].into(), 32, truncate, e);
    let (v1, f1) = float_to_int(F64, d[1].into(), 32, truncate, e);
    FpOut {
        value: v0 | (v1 << 32),
        flags: f0 | f1,
    }
}

/// CVTPD2DQ: two doubles to signed doublewords in the low quadword, upper zeroed.
pub fn cvtpd2dq(b: u128, mxcsr: u32) -> FpOut<u128> {
    let o = pd2dq(b, false, mxcsr);
    FpOut {
        value: o.value.into(),
        flags: o.flags,
    }
}
/// CVTTPD2DQ: as [`cvtpd2dq`], truncating.
pub fn cvttpd2dq(b: u128, mxcsr: u32) -> FpOut<u128> {
    let o = pd2dq(b, true, mxcsr);
    FpOut {
        value: o.value.into(),
        flags: o.flags,
    }
}

/// CVTPD2PI (MMX destination).
pub fn cvtpd2pi(b: u128, mxcsr: u32) -> FpOut<u64> {
    pd2dq(b, false, mxcsr)
}
/// CVTTPD2PI (MMX destination).
pub fn cvttpd2pi(b: u128, mxcsr: u32) -> FpOut<u64> {
    pd2dq(b, true, mxcsr)
}
/// CVTPS2PI: the low two singles of `b` to an MMX pair of doublewords.
pub fn cvtps2pi(b: u128, mxcsr: u32) -> FpOut<u64> {
    let o = ps2dq(b & u128::from(u64::MAX), false, mxcsr);
    FpOut {
        value: o.value as u64,
        flags: o.flags,
    }
}
/// CVTTPS2PI.
pub fn cvttps2pi(b: u128, mxcsr: u32) -> FpOut<u64> {
    let o = ps2dq(b & u128::from(u64::MAX), true, mxcsr);
    FpOut {
        value: o.value as u64,
        flags: o.flags,
    }
}
/// CVTPI2PS: two MMX doublewords to the low two singles of `a` (upper kept).
pub fn cvtpi2ps(a: u128, mm: u64, mxcsr: u32) -> FpOut<u128> {
    let o = cvtdq2ps(mm.into(), mxcsr);
    FpOut {
        value: (a & !u128::from(u64::MAX)) | (o.value & u128::from(u64::MAX)),
        flags: o.flags,
    }
}
/// CVTPI2PD: two MMX doublewords to doubles (exact).
pub fn cvtpi2pd(mm: u64) -> u128 {
    cvtdq2pd(mm.into())
}
