//! SSE2 packed-integer arithmetic, comparison and logic (Intel SDM Vol. 2, PADD*..PXOR).
//!
//! Every function is lane-wise on a 128-bit value. The MMX forms of the lane-wise
//! operations are the same function applied to the 64-bit operands zero-extended, keeping
//! the low 64 bits of the result; `psadbw` and `pmovmskb` have `mmx_` variants.

use super::lanes::*;

macro_rules! lanewise {
    ($( $(#[$m:meta])* $name:ident = $zip:ident, |$a:ident: $t:ty, $b:ident| $body:expr; )*) => {
        $(
            $(#[$m])*
            #[inline]
            pub fn $name(a: u128, b: u128) -> u128 {
                $zip(a, b, |$a: $t, $b: $t| $body)
            }
        )*
    };
}

fn sat_i8(v: i32) -> u8 {
    v.clamp(i32::from(i8::MIN), i32::from(i8::MAX)) as i8 as u8
}
fn sat_i16(v: i32) -> u16 {
    v.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16 as u16
}
fn mask8(c: bool) -> u8 {
    if c {
        0xff
    } else {
        0
    }
}
fn mask16(c: bool) -> u16 {
    if c {
        0xffff
    } else {
        0
    }
}
fn mask32(c: bool) -> u32 {
    if c {
        u32::MAX
    } else {
        0
    }
}

lanewise! {
    /// PADDB: wrapping byte add.
    paddb = zip8, |a: u8, b| a.wrapping_add(b);
    /// PADDW: wrapping word add.
    paddw = zip16, |a: u16, b| a.wrapping_add(b);
    /// PADDD: wrapping doubleword add.
    paddd = zip32, |a: u32, b| a.wrapping_add(b);
    /// PADDQ: wrapping quadword add.
    paddq = zip64, |a: u64, b| a.wrapping_add(b);
    /// PSUBB: wrapping byte subtract (`a - b`).
    psubb = zip8, |a: u8, b| a.wrapping_sub(b);
    /// PSUBW: wrapping word subtract.
    psubw = zip16, |a: u16, b| a.wrapping_sub(b);
    /// PSUBD: wrapping doubleword subtract.
    psubd = zip32, |a: u32, b| a.wrapping_sub(b);
    /// PSUBQ: wrapping quadword subtract.
    psubq = zip64, |a: u64, b| a.wrapping_sub(b);
    /// PADDSB: signed saturating byte add.
    paddsb = zip8, |a: u8, b| sat_i8(i32::from(a as i8) + i32::from(b as i8));
    /// PADDSW: signed saturating word add.
    paddsw = zip16, |a: u16, b| sat_i16(i32::from(a as i16) + i32::from(b as i16));
    /// PSUBSB: signed saturating byte subtract.
    psubsb = zip8, |a: u8, b| sat_i8(i32::from(a as i8) - i32::from(b as i8));
    /// PSUBSW: signed saturating word subtract.
    psubsw = zip16, |a: u16, b| sat_i16(i32::from(a as i16) - i32::from(b as i16));
    /// PADDUSB: unsigned saturating byte add.
    paddusb = zip8, |a: u8, b| a.saturating_add(b);
    /// PADDUSW: unsigned saturating word add.
    paddusw = zip16, |a: u16, b| a.saturating_add(b);
    /// PSUBUSB: unsigned saturating byte subtract.
    psubusb = zip8, |a: u8, b| a.saturating_sub(b);
    /// PSUBUSW: unsigned saturating word subtract.
    psubusw = zip16, |a: u16, b| a.saturating_sub(b);
    /// PCMPEQB: all-ones where bytes are equal.
    pcmpeqb = zip8, |a: u8, b| mask8(a == b);
    /// PCMPEQW: all-ones where words are equal.
    pcmpeqw = zip16, |a: u16, b| mask16(a == b);
    /// PCMPEQD: all-ones where doublewords are equal.
    pcmpeqd = zip32, |a: u32, b| mask32(a == b);
    /// PCMPGTB: all-ones where signed byte `a > b`.
    pcmpgtb = zip8, |a: u8, b| mask8((a as i8) > (b as i8));
    /// PCMPGTW: all-ones where signed word `a > b`.
    pcmpgtw = zip16, |a: u16, b| mask16((a as i16) > (b as i16));
    /// PCMPGTD: all-ones where signed doubleword `a > b`.
    pcmpgtd = zip32, |a: u32, b| mask32((a as i32) > (b as i32));
    /// PMINUB: unsigned byte minimum.
    pminub = zip8, |a: u8, b| a.min(b);
    /// PMAXUB: unsigned byte maximum.
    pmaxub = zip8, |a: u8, b| a.max(b);
    /// PMINSW: signed word minimum.
    pminsw = zip16, |a: u16, b| (a as i16).min(b as i16) as u16;
    /// PMAXSW: signed word maximum.
    pmaxsw = zip16, |a: u16, b| (a as i16).max(b as i16) as u16;
    /// PAVGB: unsigned byte average rounded up, `(a + b + 1) >> 1`.
    pavgb = zip8, |a: u8, b| ((u16::from(a) + u16::from(b) + 1) >> 1) as u8;
    /// PAVGW: unsigned word average rounded up.
    pavgw = zip16, |a: u16, b| ((u32::from(a) + u32::from(b) + 1) >> 1) as u16;
    /// PMULLW: low 16 bits of the word products.
    pmullw = zip16, |a: u16, b| a.wrapping_mul(b);
    /// PMULHW: high 16 bits of the signed word products.
    pmulhw = zip16, |a: u16, b| ((i32::from(a as i16) * i32::from(b as i16)) >> 16) as u16;
    /// PMULHUW: high 16 bits of the unsigned word products.
    pmulhuw = zip16, |a: u16, b| ((u32::from(a) * u32::from(b)) >> 16) as u16;
}

/// PMULUDQ: unsigned 32x32->64 products of the even doublewords (0 and 2).
#[inline]
pub fn pmuludq(a: u128, b: u128) -> u128 {
    zip64(a, b, |a, b| (a & 0xffff_ffff) * (b & 0xffff_ffff))
}

/// PMADDWD: signed word products, adjacent pairs summed into doublewords (wrapping: only
/// `0x8000*0x8000*2` overflows, giving `0x8000_0000` as the hardware does).
#[inline]
pub fn pmaddwd(a: u128, b: u128) -> u128 {
    let (a, b) = (u16x8(a), u16x8(b));
    from_u32x4(core::array::from_fn(|i| {
        let p0 = i32::from(a[2 * i] as i16) * i32::from(b[2 * i] as i16);
        let p1 = i32::from(a[2 * i + 1] as i16) * i32::from(b[2 * i + 1] as i16);
        p0.wrapping_add(p1) as u32
    }))
}

/// PSADBW: sums of absolute byte differences, one per quadword, in its low word.
#[inline]
pub fn psadbw(a: u128, b: u128) -> u128 {
    zip64(a, b, mmx_psadbw)
}

/// PSADBW (MMX form): sum of the 8 absolute byte differences, zero-extended.
#[inline]
pub fn mmx_psadbw(a: u64, b: u64) -> u64 {
    let (a, b) = (a.to_le_bytes(), b.to_le_bytes());
    a.iter()
        .zip(b.iter())
        .map(|(&x, &y)| u64::from(x.abs_diff(y)))
        .sum()
}

/// PMOVMSKB: the 16 byte sign bits as a 16-bit mask (zero-extended into the GPR).
#[inline]
pub fn pmovmskb(a: u128) -> u32 {
    u8x16(a)
        .iter()
        .enumerate()
        .fold(0, |m, (i, &b)| m | (u32::from(b >> 7) << i))
}

/// PMOVMSKB (MMX form): the 8 byte sign bits.
#[inline]
pub fn mmx_pmovmskb(a: u64) -> u32 {
    pmovmskb(u128::from(a)) & 0xff
}

/// PAND / ANDPS / ANDPD.
#[inline]
pub fn pand(a: u128, b: u128) -> u128 {
    a & b
}

/// PANDN / ANDNPS / ANDNPD: `!a & b` (the destination is inverted).
#[inline]
pub fn pandn(a: u128, b: u128) -> u128 {
    !a & b
}

/// POR / ORPS / ORPD.
#[inline]
pub fn por(a: u128, b: u128) -> u128 {
    a | b
}

/// PXOR / XORPS / XORPD.
#[inline]
pub fn pxor(a: u128, b: u128) -> u128 {
    a ^ b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturation_and_masks() {
        assert_eq!(paddsb(0x7f, 0x01) & 0xff, 0x7f);
        assert_eq!(psubsw(0x8000, 0x0001) & 0xffff, 0x8000);
        assert_eq!(paddusb(0xff, 0x01) & 0xff, 0xff);
        assert_eq!(psubusw(0x0001, 0x0002) & 0xffff, 0);
        assert_eq!(pcmpgtb(0x01, 0xff) & 0xff, 0xff);
        assert_eq!(pmaddwd(0x8000_8000, 0x8000_8000) as u32, 0x8000_0000);
        assert_eq!(pmovmskb(0x80 | (0x80 << 120)), 0x8001);
        assert_eq!(psadbw(0x00ff, 0xff00) as u64, 0x1fe);
    }
}
