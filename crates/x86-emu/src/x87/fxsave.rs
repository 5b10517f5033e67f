//! The 512-byte FXSAVE/FXRSTOR image (Intel SDM Vol. 1, 10.5.1), 64-bit (REX.W) and
//! legacy layouts, to and from [`vmm_types::FpuState`].

use crate::simd::mxcsr::MXCSR_MASK;
use vmm_types::FpuState;

/// Errors from parsing an FXRSTOR image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FxrstorError {
    /// MXCSR has bits set outside MXCSR_MASK: FXRSTOR raises #GP(0).
    #[error("reserved MXCSR bits set ({0:#x}): #GP(0)")]
    ReservedMxcsr(u32),
}

/// Lays out `s` as FXSAVE64 (`rex_w`) or FXSAVE stores it. In the legacy layout FIP/FDP
/// are 32-bit with the CS/DS selectors (stored as zero) above them. XMM8-15 are stored in
/// either layout (the CPU stores only XMM0-7 outside 64-bit mode; callers there zero
/// them).
pub fn fxsave_image(s: &FpuState, rex_w: bool) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[0..2].copy_from_slice(&s.fcw.to_le_bytes());
    b[2..4].copy_from_slice(&s.fsw.to_le_bytes());
    b[4] = s.ftwx;
    b[6..8].copy_from_slice(&s.last_opcode.to_le_bytes());
    if rex_w {
        b[8..16].copy_from_slice(&s.last_ip.to_le_bytes());
        b[16..24].copy_from_slice(&s.last_dp.to_le_bytes());
    } else {
        b[8..12].copy_from_slice(&(s.last_ip as u32).to_le_bytes());
        b[16..20].copy_from_slice(&(s.last_dp as u32).to_le_bytes());
    }
    b[24..28].copy_from_slice(&s.mxcsr.to_le_bytes());
    b[28..32].copy_from_slice(&MXCSR_MASK.to_le_bytes());
    for (i, r) in s.fpr.iter().enumerate() {
        b[32 + 16 * i..32 + 16 * i + 10].copy_from_slice(&r[..10]);
    }
    for (i, x) in s.xmm.iter().enumerate() {
        b[160 + 16 * i..176 + 16 * i].copy_from_slice(x);
    }
    b
}

/// Parses an FXRSTOR image; reserved MXCSR bits are #GP(0). The reserved bytes of each
/// x87 register slot are ignored (returned as zero).
pub fn fxrstor_parse(b: &[u8; 512], rex_w: bool) -> Result<FpuState, FxrstorError> {
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
    let mxcsr = u32_at(24);
    if mxcsr & !MXCSR_MASK != 0 {
        return Err(FxrstorError::ReservedMxcsr(mxcsr));
    }
    let mut fpr = [[0u8; 16]; 8];
    for (i, r) in fpr.iter_mut().enumerate() {
        r[..10].copy_from_slice(&b[32 + 16 * i..42 + 16 * i]);
    }
    let mut xmm = [[0u8; 16]; 16];
    for (i, x) in xmm.iter_mut().enumerate() {
        x.copy_from_slice(&b[160 + 16 * i..176 + 16 * i]);
    }
    Ok(FpuState {
        fpr,
        fcw: u16_at(0),
        fsw: u16_at(2),
        ftwx: b[4],
        last_opcode: u16_at(6),
        last_ip: if rex_w {
            u64_at(8)
        } else {
            u64::from(u32_at(8))
        },
        last_dp: if rex_w {
            u64_at(16)
        } else {
            u64::from(u32_at(16))
        },
        xmm,
        mxcsr,
    })
}

impl super::X87State {
    /// The x87 part of an [`FpuState`] (XMM/MXCSR left at `base`'s values).
    pub fn to_fpu_state(&self, base: &FpuState) -> FpuState {
        let st = self.st_order();
        let mut fpr = [[0u8; 16]; 8];
        for (d, s) in fpr.iter_mut().zip(st.iter()) {
            d[..10].copy_from_slice(s);
        }
        FpuState {
            fpr,
            fcw: self.fcw,
            fsw: self.fsw,
            ftwx: self.abridged_tags(),
            last_opcode: self.fop,
            last_ip: self.fip,
            last_dp: self.fdp,
            ..*base
        }
    }

    /// The x87 state held in an [`FpuState`] (full tags recomputed from the values).
    pub fn from_fpu_state(s: &FpuState) -> super::X87State {
        let st: [[u8; 10]; 8] = core::array::from_fn(|i| {
            let mut r = [0u8; 10];
            r.copy_from_slice(&s.fpr[i][..10]);
            r
        });
        super::X87State::from_fxsave_fields(
            &st,
            s.fcw,
            s.fsw,
            s.ftwx,
            s.last_opcode,
            s.last_ip,
            s.last_dp,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_round_trip_and_reserved_mxcsr() {
        let mut s = FpuState {
            fcw: 0x27f,
            fsw: 0x3800,
            ftwx: 0x81,
            last_opcode: 0x1de,
            last_ip: 0x1234_5678_9abc,
            last_dp: 0xdead_beef_f00d,
            mxcsr: 0x9fc0,
            ..FpuState::default()
        };
        s.fpr[3][..10].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        s.xmm[15] = [0xab; 16];
        let img = fxsave_image(&s, true);
        assert_eq!(
            u32::from_le_bytes(img[28..32].try_into().unwrap()),
            MXCSR_MASK
        );
        assert_eq!(fxrstor_parse(&img, true), Ok(s));
        let legacy = fxrstor_parse(&fxsave_image(&s, false), false).unwrap();
        assert_eq!(legacy.last_ip, 0x5678_9abc);
        let mut bad = img;
        bad[26] = 1; // MXCSR bit 16
        assert_eq!(
            fxrstor_parse(&bad, true),
            Err(FxrstorError::ReservedMxcsr(0x1_9fc0))
        );
    }
}
