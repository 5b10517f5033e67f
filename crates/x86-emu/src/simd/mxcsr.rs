//! MXCSR bits, rounding modes, and the result type of floating-point operations.

/// Invalid-operation flag (IE).
pub const IE: u32 = 1 << 0;
/// Denormal-operand flag (DE).
pub const DE: u32 = 1 << 1;
/// Divide-by-zero flag (ZE).
pub const ZE: u32 = 1 << 2;
/// Overflow flag (OE).
pub const OE: u32 = 1 << 3;
/// Underflow flag (UE).
pub const UE: u32 = 1 << 4;
/// Precision (inexact) flag (PE).
pub const PE: u32 = 1 << 5;
/// All six exception flags.
pub const FLAGS: u32 = 0x3f;
/// Denormals-are-zero.
pub const DAZ: u32 = 1 << 6;
/// The six exception masks (IM..PM), bits 7..12.
pub const MASKS: u32 = 0x3f << 7;
/// Flush-to-zero.
pub const FTZ: u32 = 1 << 15;
/// Bits that may be set (MXCSR_MASK of a CPU with DAZ): writing others is #GP.
pub const MXCSR_MASK: u32 = 0xffff;
/// MXCSR after reset.
pub const MXCSR_DEFAULT: u32 = 0x1f80;

/// IEEE rounding direction (MXCSR.RC, bits 13-14; also the x87 FCW.RC encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// Round to nearest, ties to even (RC=0).
    Nearest,
    /// Round toward negative infinity (RC=1).
    Down,
    /// Round toward positive infinity (RC=2).
    Up,
    /// Round toward zero (RC=3).
    Zero,
}

impl Rounding {
    /// Decodes a 2-bit RC field.
    pub fn from_rc(rc: u32) -> Rounding {
        match rc & 3 {
            0 => Rounding::Nearest,
            1 => Rounding::Down,
            2 => Rounding::Up,
            _ => Rounding::Zero,
        }
    }
}

/// The parts of MXCSR that control arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FpEnv {
    /// Rounding direction.
    pub rounding: Rounding,
    /// Denormal source operands read as zero (no DE flag).
    pub daz: bool,
    /// Tiny results become zero when underflow is masked.
    pub ftz: bool,
    /// Underflow masked (FTZ only applies then).
    pub underflow_masked: bool,
}

impl FpEnv {
    /// The environment an MXCSR value selects.
    pub fn from_mxcsr(mxcsr: u32) -> FpEnv {
        FpEnv {
            rounding: Rounding::from_rc(mxcsr >> 13),
            daz: mxcsr & DAZ != 0,
            ftz: mxcsr & FTZ != 0,
            underflow_masked: mxcsr & (UE << 7) != 0,
        }
    }

    /// Round-to-nearest, no DAZ/FTZ: plain IEEE 754.
    pub const IEEE: FpEnv = FpEnv {
        rounding: Rounding::Nearest,
        daz: false,
        ftz: false,
        underflow_masked: true,
    };
}

/// An unmasked SIMD floating-point exception: the destination is left unchanged and the
/// caller raises #XM (CR4.OSXMMEXCPT=1) or #UD (CR4.OSXMMEXCPT=0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unmasked SIMD floating-point exception (flags {flags:#x})")]
pub struct SimdFault {
    /// The exception flags the operation raised (already merged into MXCSR).
    pub flags: u32,
}

/// A floating-point result plus the exception flags its computation raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FpOut<T> {
    /// The result as the destination receives it when every raised exception is masked.
    pub value: T,
    /// Exception flags (IE..PE, bits 0..5) raised by this operation.
    pub flags: u32,
}

impl<T> FpOut<T> {
    /// Merges the flags into `mxcsr`; returns the value, or the fault when one of the
    /// raised exceptions is unmasked.
    ///
    /// Known approximation: with an unmasked pre-computation exception (IE, DE, ZE) the
    /// CPU does not evaluate post-computation flags (OE, UE, PE) of the other lanes; this
    /// merges every lane's flags. Kernels run with all exceptions masked.
    pub fn commit(self, mxcsr: &mut u32) -> Result<T, SimdFault> {
        let unmasked = self.flags & !(*mxcsr >> 7) & FLAGS;
        let flags = if unmasked & (IE | DE | ZE) != 0 {
            // Pre-computation faults stop before the result is rounded.
            self.flags & (IE | DE | ZE)
        } else {
            self.flags
        };
        *mxcsr |= flags;
        if unmasked != 0 {
            Err(SimdFault { flags })
        } else {
            Ok(self.value)
        }
    }
}

/// Checks a value for LDMXCSR/FXRSTOR: reserved bits set means #GP(0).
pub fn mxcsr_valid(v: u32) -> bool {
    v & !MXCSR_MASK == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_masked_and_unmasked() {
        let mut mx = MXCSR_DEFAULT;
        let out = FpOut {
            value: 7u32,
            flags: PE | UE,
        };
        assert_eq!(out.commit(&mut mx), Ok(7));
        assert_eq!(mx, MXCSR_DEFAULT | PE | UE);

        // Unmasked precision: the flags are merged, the value is withheld.
        let mut mx = MXCSR_DEFAULT & !(PE << 7);
        assert_eq!(out.commit(&mut mx), Err(SimdFault { flags: PE | UE }));
        assert_eq!(mx & FLAGS, PE | UE);

        // Unmasked invalid: post-computation flags are not reported.
        let mut mx = MXCSR_DEFAULT & !(IE << 7);
        let out = FpOut {
            value: 0u32,
            flags: IE | PE,
        };
        assert_eq!(out.commit(&mut mx), Err(SimdFault { flags: IE }));
        assert_eq!(mx & FLAGS, IE);
    }

    #[test]
    fn env_and_validity() {
        let e = FpEnv::from_mxcsr(0x1f80 | (3 << 13) | DAZ | FTZ);
        assert_eq!(e.rounding, Rounding::Zero);
        assert!(e.daz && e.ftz && e.underflow_masked);
        assert!(mxcsr_valid(0xffff));
        assert!(!mxcsr_valid(0x1_0000));
    }
}
