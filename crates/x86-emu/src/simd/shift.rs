//! SSE2 packed shifts (PSLL*, PSRL*, PSRA*, PSLLDQ, PSRLDQ).
//!
//! `count` is the whole shift count as the instruction sees it: the imm8 zero-extended,
//! or the low 64 bits of the XMM/m128 (or MMX/m64) source. Counts at or above the lane
//! width give zero (logical) or the sign fill (arithmetic). The MMX forms are the same
//! functions on zero-extended operands, keeping the low 64 bits.

use super::lanes::*;

fn shl<const W: u32>(x: u64, count: u64) -> u64 {
    if count >= u64::from(W) {
        0
    } else {
        x << count
    }
}

fn shr<const W: u32>(x: u64, count: u64) -> u64 {
    if count >= u64::from(W) {
        0
    } else {
        x >> count
    }
}

fn sar<const W: u32>(x: u64, count: u64) -> u64 {
    let c = count.min(u64::from(W) - 1) as u32;
    // Sign-extend the W-bit lane into i64, shift, and truncate back.
    let s = ((x << (64 - W)) as i64) >> (64 - W);
    ((s >> c) as u64) & (u64::MAX >> (64 - W))
}

/// PSLLW.
pub fn psllw(a: u128, count: u64) -> u128 {
    from_u16x8(u16x8(a).map(|x| shl::<16>(u64::from(x), count) as u16))
}
/// PSLLD.
pub fn pslld(a: u128, count: u64) -> u128 {
    from_u32x4(u32x4(a).map(|x| shl::<32>(u64::from(x), count) as u32))
}
/// PSLLQ.
pub fn psllq(a: u128, count: u64) -> u128 {
    from_u64x2(u64x2(a).map(|x| shl::<64>(x, count)))
}
/// PSRLW.
pub fn psrlw(a: u128, count: u64) -> u128 {
    from_u16x8(u16x8(a).map(|x| shr::<16>(u64::from(x), count) as u16))
}
/// PSRLD.
pub fn psrld(a: u128, count: u64) -> u128 {
    from_u32x4(u32x4(a).map(|x| shr::<32>(u64::from(x), count) as u32))
}
/// PSRLQ.
pub fn psrlq(a: u128, count: u64) -> u128 {
    from_u64x2(u64x2(a).map(|x| shr::<64>(x, count)))
}
/// PSRAW.
pub fn psraw(a: u128, count: u64) -> u128 {
    from_u16x8(u16x8(a).map(|x| sar::<16>(u64::from(x), count) as u16))
}
/// PSRAD.
pub fn psrad(a: u128, count: u64) -> u128 {
    from_u32x4(u32x4(a).map(|x| sar::<32>(u64::from(x), count) as u32))
}

/// PSLLDQ: byte shift left of the whole register by `imm` bytes (>15 gives zero).
pub fn pslldq(a: u128, imm: u8) -> u128 {
    if imm > 15 {
        0
    } else {
        a << (8 * u32::from(imm))
    }
}

/// PSRLDQ: byte shift right of the whole register by `imm` bytes (>15 gives zero).
pub fn psrldq(a: u128, imm: u8) -> u128 {
    if imm > 15 {
        0
    } else {
        a >> (8 * u32::from(imm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_at_and_over_width() {
        assert_eq!(psllw(0x0001, 15) & 0xffff, 0x8000);
        assert_eq!(psllw(0x0001, 16), 0);
        assert_eq!(psraw(0x8000, 100) & 0xffff, 0xffff);
        assert_eq!(psrad(0x4000_0000, 1) & 0xffff_ffff, 0x2000_0000);
        assert_eq!(psrlq(u128::MAX, u64::MAX), 0);
        assert_eq!(psrldq(1 << 8, 1), 1);
    }
}
