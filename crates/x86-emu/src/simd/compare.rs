//! CMPPS/CMPPD/CMPSS/CMPSD (predicates 0..7) and COMISS/COMISD/UCOMISS/UCOMISD.

use super::float::{cmp_values, denormal_flag, packed32, packed64, scalar32, scalar64};
use super::mxcsr::{FpEnv, FpOut, IE};
use super::softfloat::{self as sf, Format, F32, F64};
use core::cmp::Ordering;

/// RFLAGS.CF.
pub const CF: u64 = 1 << 0;
/// RFLAGS.PF.
pub const PF: u64 = 1 << 2;
/// RFLAGS.AF.
pub const AF: u64 = 1 << 4;
/// RFLAGS.ZF.
pub const ZF: u64 = 1 << 6;
/// RFLAGS.SF.
pub const SF: u64 = 1 << 7;
/// RFLAGS.OF.
pub const OF: u64 = 1 << 11;
/// The flags COMIS*/UCOMIS* write (ZF, PF, CF set from the result; OF, SF, AF cleared).
pub const COMI_WRITTEN: u64 = CF | PF | AF | ZF | SF | OF;

/// Compares one lane under predicate `imm & 7` (EQ LT LE UNORD NEQ NLT NLE ORD);
/// LT/LE/NLT/NLE signal IE on QNaN, all of them on SNaN. Returns (true?, flags).
pub fn cmp_lane(f: Format, a: u128, b: u128, imm: u8, env: FpEnv) -> (bool, u32) {
    let ua = sf::unpack(f, a, env.daz);
    let ub = sf::unpack(f, b, env.daz);
    let de = denormal_flag(env, &[ua, ub]);
    let pred = imm & 7;
    let signaling = matches!(pred, 1 | 2 | 5 | 6);
    if ua.is_nan() || ub.is_nan() {
        let ie = if signaling || ua.is_snan() || ub.is_snan() {
            IE
        } else {
            0
        };
        // Unordered: true for UNORD, NEQ, NLT, NLE.
        return (matches!(pred, 3..=6), ie | de);
    }
    let o = cmp_values(&ua, &ub);
    let r = match pred {
        0 => o == Ordering::Equal,
        1 => o == Ordering::Less,
        2 => o != Ordering::Greater,
        3 => false,
        4 => o != Ordering::Equal,
        5 => o != Ordering::Less,
        6 => o == Ordering::Greater,
        _ => true,
    };
    (r, de)
}

fn mask32(mxcsr: u32, imm: u8) -> impl Fn(u32, u32) -> (u32, u32) {
    let env = FpEnv::from_mxcsr(mxcsr);
    move |x, y| {
        let (t, f) = cmp_lane(F32, x.into(), y.into(), imm, env);
        (if t { u32::MAX } else { 0 }, f)
    }
}

fn mask64(mxcsr: u32, imm: u8) -> impl Fn(u64, u64) -> (u64, u32) {
    let env = FpEnv::from_mxcsr(mxcsr);
    move |x, y| {
        let (t, f) = cmp_lane(F64, x.into(), y.into(), imm, env);
        (if t { u64::MAX } else { 0 }, f)
    }
}

/// CMPPS a, b, imm.
pub fn cmpps(a: u128, b: u128, imm: u8, mxcsr: u32) -> FpOut<u128> {
    packed32(a, b, mask32(mxcsr, imm))
}
/// CMPSS a, b, imm.
pub fn cmpss(a: u128, b: u128, imm: u8, mxcsr: u32) -> FpOut<u128> {
    scalar32(a, b, mask32(mxcsr, imm))
}
/// CMPPD a, b, imm.
pub fn cmppd(a: u128, b: u128, imm: u8, mxcsr: u32) -> FpOut<u128> {
    packed64(a, b, mask64(mxcsr, imm))
}
/// CMPSD a, b, imm (the SSE2 compare, not the string instruction).
pub fn cmpsd(a: u128, b: u128, imm: u8, mxcsr: u32) -> FpOut<u128> {
    scalar64(a, b, mask64(mxcsr, imm))
}

/// COMIS*/UCOMIS* on lane 0: the value is the RFLAGS bits to set among
/// [`COMI_WRITTEN`] (unordered ZF|PF|CF, less CF, equal ZF, greater none). `signal_qnan`
/// selects COMIS (IE on any NaN) over UCOMIS (IE on SNaN only).
pub fn comi(f: Format, a: u128, b: u128, signal_qnan: bool, mxcsr: u32) -> FpOut<u64> {
    let env = FpEnv::from_mxcsr(mxcsr);
    let ua = sf::unpack(f, a, env.daz);
    let ub = sf::unpack(f, b, env.daz);
    let de = denormal_flag(env, &[ua, ub]);
    if ua.is_nan() || ub.is_nan() {
        let ie = if signal_qnan || ua.is_snan() || ub.is_snan() {
            IE
        } else {
            0
        };
        return FpOut {
            value: ZF | PF | CF,
            flags: ie | de,
        };
    }
    let value = match cmp_values(&ua, &ub) {
        Ordering::Less => CF,
        Ordering::Equal => ZF,
        Ordering::Greater => 0,
    };
    FpOut { value, flags: de }
}

/// COMISS.
pub fn comiss(a: u128, b: u128, mxcsr: u32) -> FpOut<u64> {
    comi(F32, a & 0xffff_ffff, b & 0xffff_ffff, true, mxcsr)
}
/// UCOMISS.
pub fn ucomiss(a: u128, b: u128, mxcsr: u32) -> FpOut<u64> {
    comi(F32, a & 0xffff_ffff, b & 0xffff_ffff, false, mxcsr)
}
/// COMISD.
pub fn comisd(a: u128, b: u128, mxcsr: u32) -> FpOut<u64> {
    comi(
        F64,
        a & u128::from(u64::MAX),
        b & u128::from(u64::MAX),
        true,
        mxcsr,
    )
}
/// UCOMISD.
pub fn ucomisd(a: u128, b: u128, mxcsr: u32) -> FpOut<u64> {
    comi(
        F64,
        a & u128::from(u64::MAX),
        b & u128::from(u64::MAX),
        false,
        mxcsr,
    )
}
