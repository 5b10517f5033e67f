//! The XSAVE image in the standard (non-compacted) format (Intel SDM Vol. 1, 13.4):
//! the 512-byte legacy region (the FXSAVE layout: x87 and SSE), the 64-byte header
//! at 512 (XSTATE_BV, XCOMP_BV = 0), then each extended component at its fixed
//! offset (AVX, the upper halves of YMM0-15, at 576, 256 bytes).

use crate::FpuState;

/// Size of the legacy (FXSAVE) region.
pub const LEGACY_SIZE: usize = 512;
/// Offset of the XSAVE header.
pub const HEADER_OFFSET: usize = 512;
/// Legacy region plus header: the smallest image.
pub const MIN_SIZE: usize = 576;
/// Offset and size of the AVX component (state component 2).
pub const AVX_OFFSET: usize = 576;
pub const AVX_SIZE: usize = 256;
/// XCR0 / XSTATE_BV bits.
pub const XFEATURE_X87: u64 = 1 << 0;
pub const XFEATURE_SSE: u64 = 1 << 1;
pub const XFEATURE_AVX: u64 = 1 << 2;

/// Writes `f` into the legacy region of `image` (at least [`LEGACY_SIZE`] bytes) in the
/// 64-bit FXSAVE layout. MXCSR_MASK (a property of the CPU, not state) and the
/// reserved and software-available bytes are written as zero.
pub fn write_legacy(image: &mut [u8], f: &FpuState) {
    let b = &mut image[..LEGACY_SIZE];
    b.fill(0);
    b[0..2].copy_from_slice(&f.fcw.to_le_bytes());
    b[2..4].copy_from_slice(&f.fsw.to_le_bytes());
    b[4] = f.ftwx;
    b[6..8].copy_from_slice(&f.last_opcode.to_le_bytes());
    b[8..16].copy_from_slice(&f.last_ip.to_le_bytes());
    b[16..24].copy_from_slice(&f.last_dp.to_le_bytes());
    b[24..28].copy_from_slice(&f.mxcsr.to_le_bytes());
    for (i, r) in f.fpr.iter().enumerate() {
        b[32 + 16 * i..42 + 16 * i].copy_from_slice(&r[..10]);
    }
    for (i, r) in f.xmm.iter().enumerate() {
        b[160 + 16 * i..176 + 16 * i].copy_from_slice(r);
    }
}

/// Reads the x87/SSE state from the legacy region of `image` (64-bit layout).
/// The reserved bytes of each x87 register slot come back as zero.
pub fn read_legacy(image: &[u8]) -> FpuState {
    let b = &image[..LEGACY_SIZE];
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
    let mut f = FpuState {
        fcw: u16_at(0),
        fsw: u16_at(2),
        ftwx: b[4],
        last_opcode: u16_at(6),
        last_ip: u64_at(8),
        last_dp: u64_at(16),
        mxcsr: u32_at(24),
        ..FpuState::default()
    };
    for (i, r) in f.fpr.iter_mut().enumerate() {
        r[..10].copy_from_slice(&b[32 + 16 * i..42 + 16 * i]);
    }
    for (i, r) in f.xmm.iter_mut().enumerate() {
        r.copy_from_slice(&b[160 + 16 * i..176 + 16 * i]);
    }
    f
}

/// XSTATE_BV of an image (0 for an image shorter than [`MIN_SIZE`]).
pub fn xstate_bv(image: &[u8]) -> u64 {
    image
        .get(HEADER_OFFSET..HEADER_OFFSET + 8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()))
}

/// The canonical image for `fpu` plus whatever extended components `image` carries
/// (bytes from [`MIN_SIZE`] on, XSTATE_BV bits 2 and up): the legacy region is
/// rewritten from `fpu`, XSTATE_BV has x87 and SSE set and only the `xcr0`
/// components beyond them, and the rest of the header (XCOMP_BV included) is zero.
/// The result is at least [`MIN_SIZE`] bytes long.
pub fn canonical(fpu: &FpuState, image: &[u8], xcr0: u64) -> Vec<u8> {
    let mut out = image.to_vec();
    if out.len() < MIN_SIZE {
        out.resize(MIN_SIZE, 0);
    }
    let bv =
        (xstate_bv(image) & xcr0 & !(XFEATURE_X87 | XFEATURE_SSE)) | XFEATURE_X87 | XFEATURE_SSE;
    write_legacy(&mut out, fpu);
    out[HEADER_OFFSET..MIN_SIZE].fill(0);
    out[HEADER_OFFSET..HEADER_OFFSET + 8].copy_from_slice(&bv.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_layout_round_trips() {
        let mut f = FpuState::default();
        f.fpr[1][..10].copy_from_slice(&[7; 10]);
        f.xmm[15] = [9; 16];
        f.mxcsr = 0x1fa0;
        f.last_dp = 0x1122_3344_5566_7788;
        let mut img = vec![0xee; MIN_SIZE];
        write_legacy(&mut img, &f);
        assert_eq!(&img[0..2], &0x37fu16.to_le_bytes());
        assert_eq!(&img[24..28], &0x1fa0u32.to_le_bytes());
        assert_eq!(&img[28..32], &[0; 4], "MXCSR_MASK is not state");
        assert_eq!(img[48], 7);
        assert_eq!(img[160 + 16 * 15], 9);
        assert_eq!(read_legacy(&img), f);
    }

    #[test]
    fn canonical_keeps_enabled_components_only() {
        let f = FpuState::default();
        let mut img = vec![0u8; AVX_OFFSET + AVX_SIZE];
        img[HEADER_OFFSET] = 0b101; // x87 + AVX present, SSE in init state
        img[HEADER_OFFSET + 8] = 0x80; // XCOMP_BV garbage
        img[AVX_OFFSET] = 0x42;
        let c = canonical(&f, &img, 0b111);
        assert_eq!(xstate_bv(&c), 0b111);
        assert_eq!(c[HEADER_OFFSET + 8], 0);
        assert_eq!(c[AVX_OFFSET], 0x42);
        assert_eq!(xstate_bv(&canonical(&f, &img, 0b011)), 0b011);
        let empty = canonical(&f, &[], 1);
        assert_eq!(empty.len(), MIN_SIZE);
        assert_eq!(read_legacy(&empty), f);
        assert_eq!(canonical(&f, &c, 0b111), c, "idempotent");
    }
}
