//! SSE/SSE2 shuffles, unpacks, packs, inserts/extracts and sign-mask moves.
//!
//! `a` is always the destination's old value (first source), `b` the second source.

use super::lanes::*;

/// PSHUFD: `dst[i] = src[imm >> 2i & 3]` on doublewords.
pub fn pshufd(src: u128, imm: u8) -> u128 {
    let s = u32x4(src);
    from_u32x4(core::array::from_fn(|i| s[usize::from(imm >> (2 * i)) & 3]))
}

/// PSHUFLW: shuffles the low four words, copies the high quadword.
pub fn pshuflw(src: u128, imm: u8) -> u128 {
    let lo = mmx_pshufw(src as u64, imm);
    (src & !u128::from(u64::MAX)) | u128::from(lo)
}

/// PSHUFHW: shuffles the high four words, copies the low quadword.
pub fn pshufhw(src: u128, imm: u8) -> u128 {
    let hi = mmx_pshufw((src >> 64) as u64, imm);
    (src & u128::from(u64::MAX)) | (u128::from(hi) << 64)
}

/// PSHUFW (MMX): `dst[i] = src[imm >> 2i & 3]` on the four words.
pub fn mmx_pshufw(src: u64, imm: u8) -> u64 {
    (0..4).fold(0, |acc, i| {
        let sel = u32::from(imm >> (2 * i)) & 3;
        acc | (((src >> (16 * sel)) & 0xffff) << (16 * i))
    })
}

/// SHUFPS: low two singles from `a`, high two from `b`, chosen by `imm`.
pub fn shufps(a: u128, b: u128, imm: u8) -> u128 {
    let (a, b) = (u32x4(a), u32x4(b));
    let sel = |i: usize| usize::from(imm >> (2 * i)) & 3;
    from_u32x4([a[sel(0)], a[sel(1)], b[sel(2)], b[sel(3)]])
}

/// SHUFPD: low double from `a` (imm bit 0), high double from `b` (imm bit 1).
pub fn shufpd(a: u128, b: u128, imm: u8) -> u128 {
    let (a, b) = (u64x2(a), u64x2(b));
    from_u64x2([a[usize::from(imm & 1)], b[usize::from((imm >> 1) & 1)]])
}

/// Interleaves the lanes of width `w` bits from the half `hi` of `a` and `b`.
fn interleave(a: u128, b: u128, w: u32, hi: bool) -> u128 {
    let n = 64 / w; // lanes taken from each source
    let mask = if w == 64 {
        u128::from(u64::MAX)
    } else {
        (1u128 << w) - 1
    };
    let base = if hi { 64 } else { 0 };
    (0..n).fold(0, |acc, i| {
        let la = (a >> (base + i * w)) & mask;
        let lb = (b >> (base + i * w)) & mask;
        acc | (la << (2 * i * w)) | (lb << ((2 * i + 1) * w))
    })
}

/// PUNPCKLBW.
pub fn punpcklbw(a: u128, b: u128) -> u128 {
    interleave(a, b, 8, false)
}
/// PUNPCKLWD.
pub fn punpcklwd(a: u128, b: u128) -> u128 {
    interleave(a, b, 16, false)
}
/// PUNPCKLDQ / UNPCKLPS.
pub fn punpckldq(a: u128, b: u128) -> u128 {
    interleave(a, b, 32, false)
}
/// PUNPCKLQDQ / UNPCKLPD.
pub fn punpcklqdq(a: u128, b: u128) -> u128 {
    interleave(a, b, 64, false)
}
/// PUNPCKHBW.
pub fn punpckhbw(a: u128, b: u128) -> u128 {
    interleave(a, b, 8, true)
}
/// PUNPCKHWD.
pub fn punpckhwd(a: u128, b: u128) -> u128 {
    interleave(a, b, 16, true)
}
/// PUNPCKHDQ / UNPCKHPS.
pub fn punpckhdq(a: u128, b: u128) -> u128 {
    interleave(a, b, 32, true)
}
/// PUNPCKHQDQ / UNPCKHPD.
pub fn punpckhqdq(a: u128, b: u128) -> u128 {
    interleave(a, b, 64, true)
}

/// MMX PUNPCKL{BW,WD,DQ} (`w` = 8, 16, 32): interleaves the low halves of two quadwords.
pub fn mmx_punpckl(a: u64, b: u64, w: u32) -> u64 {
    let full = interleave(u128::from(a), u128::from(b), w, false);
    // Lanes from the low 32 bits of each operand land in the low 64 bits.
    full as u64
}

/// MMX PUNPCKH{BW,WD,DQ} (`w` = 8, 16, 32): interleaves the high halves of two quadwords.
pub fn mmx_punpckh(a: u64, b: u64, w: u32) -> u64 {
    mmx_punpckl(a >> 32, b >> 32, w)
}

fn pack16_to_8(words: [u16; 16], f: impl Fn(i16) -> u8) -> u128 {
    from_u8x16(core::array::from_fn(|i| f(words[i] as i16)))
}

fn sat_s8(x: i16) -> u8 {
    x.clamp(i16::from(i8::MIN), i16::from(i8::MAX)) as i8 as u8
}
fn sat_u8(x: i16) -> u8 {
    x.clamp(0, 255) as u8
}

fn words_of(a: u128, b: u128) -> [u16; 16] {
    let (a, b) = (u16x8(a), u16x8(b));
    core::array::from_fn(|i| if i < 8 { a[i] } else { b[i - 8] })
}

/// PACKSSWB: signed words of `a` then `b` to signed-saturated bytes.
pub fn packsswb(a: u128, b: u128) -> u128 {
    pack16_to_8(words_of(a, b), sat_s8)
}

/// PACKUSWB: signed words of `a` then `b` to unsigned-saturated bytes.
pub fn packuswb(a: u128, b: u128) -> u128 {
    pack16_to_8(words_of(a, b), sat_u8)
}

/// PACKSSDW: signed doublewords of `a` then `b` to signed-saturated words.
pub fn packssdw(a: u128, b: u128) -> u128 {
    let (a, b) = (u32x4(a), u32x4(b));
    from_u16x8(core::array::from_fn(|i| {
        let d = if i < 4 { a[i] } else { b[i - 4] } as i32;
        d.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16 as u16
    }))
}

/// MMX PACKSSWB: `a`'s 4 words then `b`'s.
pub fn mmx_packsswb(a: u64, b: u64) -> u64 {
    packsswb(u128::from(a) | (u128::from(b) << 64), 0) as u64
}
/// MMX PACKUSWB.
pub fn mmx_packuswb(a: u64, b: u64) -> u64 {
    packuswb(u128::from(a) | (u128::from(b) << 64), 0) as u64
}
/// MMX PACKSSDW.
pub fn mmx_packssdw(a: u64, b: u64) -> u64 {
    packssdw(u128::from(a) | (u128::from(b) << 64), 0) as u64
}

/// MOVMSKPS: the 4 single sign bits.
pub fn movmskps(a: u128) -> u32 {
    u32x4(a)
        .iter()
        .enumerate()
        .fold(0, |m, (i, &x)| m | ((x >> 31) << i))
}

/// MOVMSKPD: the 2 double sign bits.
pub fn movmskpd(a: u128) -> u32 {
    u64x2(a)
        .iter()
        .enumerate()
        .fold(0, |m, (i, &x)| m | (((x >> 63) as u32) << i))
}

/// PINSRW: replaces word `imm & 7` of `a` with `w` (MMX: `imm & 3`, low 64 bits).
pub fn pinsrw(a: u128, w: u16, imm: u8) -> u128 {
    let sh = 16 * u32::from(imm & 7);
    (a & !(0xffffu128 << sh)) | (u128::from(w) << sh)
}

/// PEXTRW: word `imm & 7` of `a`, zero-extended (MMX: `imm & 3`).
pub fn pextrw(a: u128, imm: u8) -> u32 {
    u32::from((a >> (16 * u32::from(imm & 7))) as u16)
}

/// MOVSS xmm, xmm: low single from `b`, the rest of `a` kept.
pub fn movss_merge(a: u128, b: u128) -> u128 {
    (a & !0xffff_ffffu128) | (b & 0xffff_ffff)
}

/// MOVSD xmm, xmm: low double from `b`, the high double of `a` kept.
pub fn movsd_merge(a: u128, b: u128) -> u128 {
    (a & !u128::from(u64::MAX)) | (b & u128::from(u64::MAX))
}

/// MOVHLPS: high quadword of `b` into the low quadword of `a`.
pub fn movhlps(a: u128, b: u128) -> u128 {
    (a & !u128::from(u64::MAX)) | (b >> 64)
}

/// MOVLHPS: low quadword of `b` into the high quadword of `a`.
pub fn movlhps(a: u128, b: u128) -> u128 {
    (a & u128::from(u64::MAX)) | (b << 64)
}

/// MOVQ xmm, xmm/m64: the low quadword, upper quadword zeroed.
pub fn movq_zext(b: u128) -> u128 {
    b & u128::from(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffles_and_unpacks() {
        let v = 0x3333_3333_2222_2222_1111_1111_0000_0000u128;
        assert_eq!(pshufd(v, 0x1b), 0x0000_0000_1111_1111_2222_2222_3333_3333);
        assert_eq!(punpcklqdq(1, 2), 1 | (2 << 64));
        assert_eq!(punpcklbw(0x0201, 0x0403) & 0xffff_ffff, 0x0402_0301);
        assert_eq!(
            mmx_punpckh(0x0403_0000_0000, 0x0807_0000_0000, 8),
            0x0804_0703
        );
        assert_eq!(packsswb(0x7fff_8000, 0) & 0xffff, 0x7f80);
        assert_eq!(packuswb(0x0100_ffff, 0) & 0xffff, 0xff00);
        assert_eq!(movmskps(1 << 127), 8);
        assert_eq!(shufpd(1 | (2 << 64), 3 | (4 << 64), 0b01), 2 | (3 << 64));
    }
}
