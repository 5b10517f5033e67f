//! Host-FPU fast path for the common case of SSE arithmetic.
//!
//! With round-to-nearest, normal operands and a normal result comfortably above the
//! underflow threshold, the host's IEEE `f32`/`f64` operations give the same result as
//! the soft-float core, and the only possible flag is PE. Inexactness is decided exactly
//! with error-free transformations: TwoSum for add/sub, and an FMA residual for mul, div
//! and sqrt (exact because the residual is representable when no underflow is near, which
//! the thresholds below guarantee). Everything else returns `None` and takes the slow,
//! exact path. Rust's float operations run with the host's default MXCSR (nearest, no
//! DAZ/FTZ, exceptions masked), which is what this relies on.

use super::float::ArithOp;
use super::mxcsr::PE;

macro_rules! fast_impl {
    ($name:ident, $sqrt:ident, $t:ty, $bits:ty, $min_exp:expr) => {
        /// The fast path for one lane; `None` when the slow path must decide.
        pub fn $name(op: ArithOp, a: $bits, b: $bits) -> Option<($bits, u32)> {
            let (x, y) = (<$t>::from_bits(a), <$t>::from_bits(b));
            if !x.is_normal() || !y.is_normal() {
                return None;
            }
            let limit = <$t>::powi(2.0, $min_exp);
            let (r, exact) = match op {
                ArithOp::Add | ArithOp::Sub => {
                    let y = if op == ArithOp::Sub { -y } else { y };
                    let s = x + y;
                    let bb = s - x;
                    let err = (x - (s - bb)) + (y - bb);
                    (s, err == 0.0)
                }
                ArithOp::Mul => {
                    let r = x * y;
                    (r, x.mul_add(y, -r) == 0.0)
                }
                ArithOp::Div => {
                    if x.abs() < limit {
                        return None;
                    }
                    let r = x / y;
                    (r, (-r).mul_add(y, x) == 0.0)
                }
                ArithOp::Min | ArithOp::Max => return None,
            };
            if !r.is_normal() || r.abs() < limit {
                return None;
            }
            Some((r.to_bits(), if exact { 0 } else { PE }))
        }

        /// The SQRT fast path for one lane.
        pub fn $sqrt(b: $bits) -> Option<($bits, u32)> {
            let x = <$t>::from_bits(b);
            if !x.is_normal() || x < <$t>::powi(2.0, $min_exp) {
                return None;
            }
            let r = x.sqrt();
            Some((r.to_bits(), if (-r).mul_add(r, x) == 0.0 { 0 } else { PE }))
        }
    };
}

fast_impl!(arith64, sqrt64, f64, u64, -900);
fast_impl!(arith32, sqrt32, f32, u32, -96);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::float::{arith_exact, sqrt_exact};
    use crate::simd::mxcsr::FpEnv;
    use crate::simd::softfloat::{F32, F64};

    /// The fast path agrees with the exact core wherever it answers.
    #[test]
    fn agrees_with_softfloat() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let ops = [ArithOp::Add, ArithOp::Sub, ArithOp::Mul, ArithOp::Div];
        let mut answered = 0;
        for k in 0..200_000 {
            let op = ops[k % 4];
            // Narrow exponent spread so that exact and inexact cases both occur.
            let mut f64_near_one = |mask: u64| (next() & mask) | ((0x3f0 + next() % 32) << 52);
            let (a, b) = (
                f64_near_one(0x800f_ffff_f000_0000),
                f64_near_one(0x800f_ffff_ff00_0000),
            );
            if let Some(fast) = arith64(op, a, b) {
                answered += 1;
                let (v, f) = arith_exact(F64, op, a.into(), b.into(), FpEnv::IEEE);
                assert_eq!(fast, (v as u64, f), "{op:?} {a:#x} {b:#x}");
            }
            let mut f32_near_one =
                |mask: u32| (next() as u32 & mask) | ((0x70 + next() as u32 % 32) << 23);
            let (a32, b32) = (f32_near_one(0x807f_ff00), f32_near_one(0x807f_fff0));
            if let Some(fast) = arith32(op, a32, b32) {
                let (v, f) = arith_exact(F32, op, a32.into(), b32.into(), FpEnv::IEEE);
                assert_eq!(fast, (v as u32, f), "{op:?} {a32:#x} {b32:#x}");
            }
            if let Some(fast) = sqrt64(a & !(1 << 63)) {
                let (v, f) = sqrt_exact(F64, (a & !(1 << 63)).into(), FpEnv::IEEE);
                assert_eq!(fast, (v as u64, f));
            }
        }
        assert!(answered > 100_000);
    }
}
