//! Splitting a 128-bit register value into lanes and back (little-endian, lane 0 lowest).

/// The 16 byte lanes of `v`.
#[inline]
pub fn u8x16(v: u128) -> [u8; 16] {
    v.to_le_bytes()
}

/// Packs 16 byte lanes.
#[inline]
pub fn from_u8x16(l: [u8; 16]) -> u128 {
    u128::from_le_bytes(l)
}

/// The 8 word lanes of `v`.
#[inline]
pub fn u16x8(v: u128) -> [u16; 8] {
    core::array::from_fn(|i| (v >> (16 * i)) as u16)
}

/// Packs 8 word lanes.
#[inline]
pub fn from_u16x8(l: [u16; 8]) -> u128 {
    l.iter()
        .enumerate()
        .fold(0, |acc, (i, &x)| acc | (u128::from(x) << (16 * i)))
}

/// The 4 doubleword lanes of `v`.
#[inline]
pub fn u32x4(v: u128) -> [u32; 4] {
    core::array::from_fn(|i| (v >> (32 * i)) as u32)
}

/// Packs 4 doubleword lanes.
#[inline]
pub fn from_u32x4(l: [u32; 4]) -> u128 {
    l.iter()
        .enumerate()
        .fold(0, |acc, (i, &x)| acc | (u128::from(x) << (32 * i)))
}

/// The 2 quadword lanes of `v`.
#[inline]
pub fn u64x2(v: u128) -> [u64; 2] {
    [v as u64, (v >> 64) as u64]
}

/// Packs 2 quadword lanes.
#[inline]
pub fn from_u64x2(l: [u64; 2]) -> u128 {
    u128::from(l[0]) | (u128::from(l[1]) << 64)
}

/// Applies `f` lane by lane on byte lanes.
#[inline]
pub fn zip8(a: u128, b: u128, f: impl Fn(u8, u8) -> u8) -> u128 {
    let (a, b) = (u8x16(a), u8x16(b));
    from_u8x16(core::array::from_fn(|i| f(a[i], b[i])))
}

/// Applies `f` lane by lane on word lanes.
#[inline]
pub fn zip16(a: u128, b: u128, f: impl Fn(u16, u16) -> u16) -> u128 {
    let (a, b) = (u16x8(a), u16x8(b));
    from_u16x8(core::array::from_fn(|i| f(a[i], b[i])))
}

/// Applies `f` lane by lane on doubleword lanes.
#[inline]
pub fn zip32(a: u128, b: u128, f: impl Fn(u32, u32) -> u32) -> u128 {
    let (a, b) = (u32x4(a), u32x4(b));
    from_u32x4(core::array::from_fn(|i| f(a[i], b[i])))
}

/// Applies `f` lane by lane on quadword lanes.
#[inline]
pub fn zip64(a: u128, b: u128, f: impl Fn(u64, u64) -> u64) -> u128 {
    let (a, b) = (u64x2(a), u64x2(b));
    from_u64x2([f(a[0], b[0]), f(a[1], b[1])])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_round_trip() {
        let v = 0x0f0e_0d0c_0b0a_0908_0706_0504_0302_0100u128;
        assert_eq!(u8x16(v)[3], 3);
        assert_eq!(u16x8(v)[1], 0x0302);
        assert_eq!(u32x4(v)[3], 0x0f0e_0d0c);
        assert_eq!(u64x2(v)[1], 0x0f0e_0d0c_0b0a_0908);
        assert_eq!(from_u8x16(u8x16(v)), v);
        assert_eq!(from_u16x8(u16x8(v)), v);
        assert_eq!(from_u32x4(u32x4(v)), v);
        assert_eq!(from_u64x2(u64x2(v)), v);
    }
}
