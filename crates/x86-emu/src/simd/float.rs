//! SSE/SSE2 floating-point arithmetic, min/max, comparisons, with MXCSR semantics.
//!
//! Packed forms work lane by lane and OR the flags of all lanes; scalar forms (`*ss`,
//! `*sd`) compute lane 0 and keep the upper lanes of the first operand `a`. NaN results
//! follow the SSE rule: a NaN first operand (quieted) wins over a NaN second operand;
//! invalid operations give the default QNaN. All results and flags are exact in every
//! rounding mode (see [`super::softfloat`]).

use super::fast;
use super::lanes::*;
use super::mxcsr::{FpEnv, FpOut, Rounding, DE, IE, ZE};
use super::softfloat::{self as sf, Format, Unpacked, Value, F32, F64};
use core::cmp::Ordering;

/// A two-operand arithmetic operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b`.
    Div,
    /// MIN*: `a < b ? a : b` (second operand on NaN or equal).
    Min,
    /// MAX*: `a > b ? a : b` (second operand on NaN or equal).
    Max,
}

/// DE for denormal operands; a NaN operand takes precedence (no DE then), as measured.
pub fn denormal_flag(env: FpEnv, ops: &[Unpacked]) -> u32 {
    if !env.daz && ops.iter().any(|u| u.denormal) && !ops.iter().any(|u| u.is_nan()) {
        DE
    } else {
        0
    }
}

fn finite(u: &Unpacked) -> (i32, u64) {
    match u.value {
        Value::Finite { exp, sig } => (exp, sig),
        _ => (0, 0),
    }
}

fn repack(f: Format, p: u32, u: &Unpacked, sign: bool, env: FpEnv) -> (u128, u32) {
    let (e, m) = finite(u);
    sf::round_pack(f, p, sign, e, u128::from(m), env)
}

/// Orders two non-NaN operands by value (±0 equal).
pub fn cmp_values(a: &Unpacked, b: &Unpacked) -> Ordering {
    fn key(u: &Unpacked) -> u128 {
        match u.value {
            Value::Zero | Value::NaN { .. } => 0,
            Value::Inf => u128::MAX,
            Value::Finite { exp, sig } => {
                let len = 64 - sig.leading_zeros() as i32;
                let top = (exp + len - 1 + 40000) as u128;
                (top << 64) | u128::from(sig << (64 - len))
            }
        }
    }
    let (ka, kb) = (key(a), key(b));
    if ka == 0 && kb == 0 {
        return Ordering::Equal;
    }
    let sa = a.sign && ka != 0;
    let sb = b.sign && kb != 0;
    match (sa, sb) {
        (false, false) => ka.cmp(&kb),
        (true, true) => kb.cmp(&ka),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
    }
}

/// One lane of an arithmetic operation on bit patterns of format `f`: the host-FPU fast
/// path when it applies ([`super::fast`]), else [`arith_exact`].
pub fn arith(f: Format, op: ArithOp, a: u128, b: u128, env: FpEnv) -> (u128, u32) {
    if env.rounding == Rounding::Nearest {
        let fast = if f == F64 {
            fast::arith64(op, a as u64, b as u64).map(|(v, fl)| (u128::from(v), fl))
        } else if f == F32 {
            fast::arith32(op, a as u32, b as u32).map(|(v, fl)| (u128::from(v), fl))
        } else {
            None
        };
        if let Some(r) = fast {
            return r;
        }
    }
    arith_exact(f, op, a, b, env)
}

/// One lane of an arithmetic operation, always through the exact soft-float core.
pub fn arith_exact(f: Format, op: ArithOp, a: u128, b: u128, env: FpEnv) -> (u128, u32) {
    let ua = sf::unpack(f, a, env.daz);
    let ub = sf::unpack(f, b, env.daz);
    let de = denormal_flag(env, &[ua, ub]);
    if matches!(op, ArithOp::Min | ArithOp::Max) {
        if ua.is_nan() || ub.is_nan() {
            // The second operand as read (a DAZ denormal as zero, an SNaN unquieted).
            let bits = if ub.value == Value::Zero {
                f.zero(ub.sign)
            } else {
                b
            };
            return (bits, IE | de);
        }
        let take_a = match cmp_values(&ua, &ub) {
            Ordering::Less => op == ArithOp::Min,
            Ordering::Greater => op == ArithOp::Max,
            Ordering::Equal => false,
        };
        // Under DAZ the chosen operand is returned as the zero it was read as.
        let (bits, u) = if take_a { (a, ua) } else { (b, ub) };
        let bits = if u.value == Value::Zero {
            f.zero(u.sign)
        } else {
            bits
        };
        return (bits, de);
    }
    if ua.is_nan() || ub.is_nan() {
        let ie = if ua.is_snan() || ub.is_snan() { IE } else { 0 };
        let v = if ua.is_nan() { f.quiet(a) } else { f.quiet(b) };
        return (v, ie | de);
    }
    let (v, fl) = arith_non_nan(f, f.precision(), op, &ua, &ub, env);
    (v, with_de(fl, de))
}

/// Adds DE unless the lane raised IE or ZE, which take precedence (as measured).
fn with_de(flags: u32, de: u32) -> u32 {
    if flags & (IE | ZE) != 0 {
        flags
    } else {
        flags | de
    }
}

/// The arithmetic of two non-NaN operands (shared with the x87 code), `p` = precision.
pub fn arith_non_nan(
    f: Format,
    p: u32,
    op: ArithOp,
    ua: &Unpacked,
    ub: &Unpacked,
    env: FpEnv,
) -> (u128, u32) {
    use Value::*;
    let invalid = (f.default_nan(), IE);
    let sign = ua.sign ^ ub.sign;
    match op {
        ArithOp::Add | ArithOp::Sub => {
            let sb = ub.sign ^ (op == ArithOp::Sub);
            match (ua.value, ub.value) {
                (Inf, Inf) if ua.sign != sb => invalid,
                (Inf, _) => (f.inf(ua.sign), 0),
                (_, Inf) => (f.inf(sb), 0),
                (Zero, Zero) => {
                    let s = if ua.sign == sb {
                        sb
                    } else {
                        env.rounding == Rounding::Down
                    };
                    (f.zero(s), 0)
                }
                (Zero, _) => repack(f, p, ub, sb, env),
                (_, Zero) => repack(f, p, ua, ua.sign, env),
                _ => {
                    let (ea, ma) = finite(ua);
                    let (eb, mb) = finite(ub);
                    sf::add_finite(f, p, (ua.sign, ea, ma), (sb, eb, mb), env)
                }
            }
        }
        ArithOp::Mul => match (ua.value, ub.value) {
            (Inf, Zero) | (Zero, Inf) => invalid,
            (Inf, _) | (_, Inf) => (f.inf(sign), 0),
            (Zero, _) | (_, Zero) => (f.zero(sign), 0),
            _ => sf::mul_finite(f, p, sign, finite(ua), finite(ub), env),
        },
        ArithOp::Div => match (ua.value, ub.value) {
            (Inf, Inf) | (Zero, Zero) => invalid,
            (Inf, _) => (f.inf(sign), 0),
            (_, Inf) | (Zero, _) => (f.zero(sign), 0),
            (_, Zero) => (f.inf(sign), ZE),
            _ => sf::div_finite(f, p, sign, finite(ua), finite(ub), env),
        },
        ArithOp::Min | ArithOp::Max => (f.default_nan(), IE),
    }
}

/// One lane of SQRT (fast path when it applies, else [`sqrt_exact`]).
pub fn sqrt(f: Format, b: u128, env: FpEnv) -> (u128, u32) {
    if env.rounding == Rounding::Nearest {
        let fast = if f == F64 {
            fast::sqrt64(b as u64).map(|(v, fl)| (u128::from(v), fl))
        } else if f == F32 {
            fast::sqrt32(b as u32).map(|(v, fl)| (u128::from(v), fl))
        } else {
            None
        };
        if let Some(r) = fast {
            return r;
        }
    }
    sqrt_exact(f, b, env)
}

/// One lane of SQRT through the exact soft-float core.
pub fn sqrt_exact(f: Format, b: u128, env: FpEnv) -> (u128, u32) {
    let u = sf::unpack(f, b, env.daz);
    let de = denormal_flag(env, &[u]);
    match u.value {
        Value::NaN { quiet } => (f.quiet(b), if quiet { 0 } else { IE }),
        Value::Zero => (f.zero(u.sign), de),
        _ if u.sign => (f.default_nan(), IE),
        Value::Inf => (f.inf(false), 0),
        Value::Finite { exp, sig } => {
            let (v, fl) = sf::sqrt_finite(f, f.precision(), (exp, sig), env);
            (v, fl | de)
        }
    }
}

/// Applies a lane function to 4 single lanes.
pub fn packed32(a: u128, b: u128, lane: impl Fn(u32, u32) -> (u32, u32)) -> FpOut<u128> {
    let (a, b) = (u32x4(a), u32x4(b));
    let mut flags = 0;
    let r = core::array::from_fn(|i| {
        let (v, f) = lane(a[i], b[i]);
        flags |= f;
        v
    });
    FpOut {
        value: from_u32x4(r),
        flags,
    }
}

/// Applies a lane function to 2 double lanes.
pub fn packed64(a: u128, b: u128, lane: impl Fn(u64, u64) -> (u64, u32)) -> FpOut<u128> {
    let (a, b) = (u64x2(a), u64x2(b));
    let (v0, f0) = lane(a[0], b[0]);
    let (v1, f1) = lane(a[1], b[1]);
    FpOut {
        value: from_u64x2([v0, v1]),
        flags: f0 | f1,
    }
}

/// Computes lane 0 only, keeping the upper 96 bits of `a`.
pub fn scalar32(a: u128, b: u128, lane: impl Fn(u32, u32) -> (u32, u32)) -> FpOut<u128> {
    let (v, flags) = lane(a as u32, b as u32);
    FpOut {
        value: (a & !0xffff_ffffu128) | u128::from(v),
        flags,
    }
}

/// Computes lane 0 only, keeping the upper 64 bits of `a`.
pub fn scalar64(a: u128, b: u128, lane: impl Fn(u64, u64) -> (u64, u32)) -> FpOut<u128> {
    let (v, flags) = lane(a as u64, b as u64);
    FpOut {
        value: (a & !u128::from(u64::MAX)) | u128::from(v),
        flags,
    }
}

fn lane32(op: ArithOp, mxcsr: u32) -> impl Fn(u32, u32) -> (u32, u32) {
    let env = FpEnv::from_mxcsr(mxcsr);
    move |x, y| {
        let (v, f) = arith(F32, op, x.into(), y.into(), env);
        (v as u32, f)
    }
}

fn lane64(op: ArithOp, mxcsr: u32) -> impl Fn(u64, u64) -> (u64, u32) {
    let env = FpEnv::from_mxcsr(mxcsr);
    move |x, y| {
        let (v, f) = arith(F64, op, x.into(), y.into(), env);
        (v as u64, f)
    }
}

macro_rules! arith_insns {
    ($($op:ident: $ps:ident $ss:ident $pd:ident $sd:ident;)*) => {
        $(
            #[doc = concat!("`", stringify!($ps), " a, b` under `mxcsr`.")]
            pub fn $ps(a: u128, b: u128, mxcsr: u32) -> FpOut<u128> {
                packed32(a, b, lane32(ArithOp::$op, mxcsr))
            }
            #[doc = concat!("`", stringify!($ss), " a, b` under `mxcsr`.")]
            pub fn $ss(a: u128, b: u128, mxcsr: u32) -> FpOut<u128> {
                scalar32(a, b, lane32(ArithOp::$op, mxcsr))
            }
            #[doc = concat!("`", stringify!($pd), " a, b` under `mxcsr`.")]
            pub fn $pd(a: u128, b: u128, mxcsr: u32) -> FpOut<u128> {
                packed64(a, b, lane64(ArithOp::$op, mxcsr))
            }
            #[doc = concat!("`", stringify!($sd), " a, b` under `mxcsr`.")]
            pub fn $sd(a: u128, b: u128, mxcsr: u32) -> FpOut<u128> {
                scalar64(a, b, lane64(ArithOp::$op, mxcsr))
            }
        )*
    };
}

arith_insns! {
    Add: addps addss addpd addsd;
    Sub: subps subss subpd subsd;
    Mul: mulps mulss mulpd mulsd;
    Div: divps divss divpd divsd;
    Min: minps minss minpd minsd;
    Max: maxps maxss maxpd maxsd;
}

fn sqrt32(mxcsr: u32) -> impl Fn(u32, u32) -> (u32, u32) {
    let env = FpEnv::from_mxcsr(mxcsr);
    move |_, y| {
        let (v, f) = sqrt(F32, y.into(), env);
        (v as u32, f)
    }
}

fn sqrt64(mxcsr: u32) -> impl Fn(u64, u64) -> (u64, u32) {
    let env = FpEnv::from_mxcsr(mxcsr);
    move |_, y| {
        let (v, f) = sqrt(F64, y.into(), env);
        (v as u64, f)
    }
}

/// SQRTPS of `b`.
pub fn sqrtps(b: u128, mxcsr: u32) -> FpOut<u128> {
    packed32(0, b, sqrt32(mxcsr))
}
/// SQRTSS: sqrt of `b`'s lane 0 into `a`'s lane 0.
pub fn sqrtss(a: u128, b: u128, mxcsr: u32) -> FpOut<u128> {
    scalar32(a, b, sqrt32(mxcsr))
}
/// SQRTPD of `b`.
pub fn sqrtpd(b: u128, mxcsr: u32) -> FpOut<u128> {
    packed64(0, b, sqrt64(mxcsr))
}
/// SQRTSD: sqrt of `b`'s lane 0 into `a`'s lane 0.
pub fn sqrtsd(a: u128, b: u128, mxcsr: u32) -> FpOut<u128> {
    scalar64(a, b, sqrt64(mxcsr))
}
