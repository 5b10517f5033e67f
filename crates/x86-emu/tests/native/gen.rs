//! Deterministic operand generation: a fixed-seed PRNG biased towards edge values.

/// xorshift64* with a fixed seed, so failures reproduce.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value; zero is remapped).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A random index below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A 128-bit value whose words are often integer boundary values.
    pub fn int_u128(&mut self) -> u128 {
        const EDGE16: [u16; 10] = [
            0, 1, 0x7f, 0x80, 0xff, 0x7fff, 0x8000, 0xffff, 0xff00, 0x8080,
        ];
        if self.below(4) == 0 {
            return u128::from(self.next_u64()) | (u128::from(self.next_u64()) << 64);
        }
        (0..8).fold(0u128, |acc, i| {
            let w = if self.below(3) == 0 {
                self.next_u64() as u16
            } else {
                EDGE16[self.below(EDGE16.len())]
            };
            acc | (u128::from(w) << (16 * i))
        })
    }

    /// A float bit pattern (`bits` = 32 or 64) biased to zero, denormals, infinities,
    /// NaNs, extremes of the exponent range and values near 1.
    pub fn float_bits(&mut self, bits: u32) -> u64 {
        let (ebits, fbits) = if bits == 32 { (8, 23) } else { (11, 52) };
        let emax = (1u64 << ebits) - 1;
        let fmask = (1u64 << fbits) - 1;
        let sign = self.next_u64() & 1;
        let r = self.next_u64();
        let frac = match self.below(6) {
            0 => 0,
            1 => 1,
            2 => fmask,
            3 => 1 << (fbits - 1),
            _ => r & fmask,
        };
        let exp = match self.below(12) {
            0 => 0,
            1 => emax,
            2 => emax - 1,
            3 => 1,
            4 => emax / 2,
            5 => (emax / 2).wrapping_add(self.next_u64() % 8).wrapping_sub(4),
            6 => self.next_u64() % (fbits + 2),
            7 => emax - 1 - self.next_u64() % (fbits + 2),
            _ => self.next_u64() % (emax + 1),
        };
        (sign << (bits - 1)) | ((exp & emax) << fbits) | frac
    }

    /// Four single-precision lanes from [`Rng::float_bits`].
    pub fn ps(&mut self) -> u128 {
        (0..4).fold(0u128, |acc, i| {
            acc | (u128::from(self.float_bits(32)) << (32 * i))
        })
    }

    /// Two double-precision lanes from [`Rng::float_bits`].
    pub fn pd(&mut self) -> u128 {
        u128::from(self.float_bits(64)) | (u128::from(self.float_bits(64)) << 64)
    }
}

/// A generator of 128-bit operands.
pub type Gen = fn(&mut Rng) -> u128;
