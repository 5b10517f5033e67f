//! Images written in one go by `hako img convert` in formats that are otherwise only
//! read (VHD, VHDX): the output is created empty, guest data is written at any offset
//! (blocks are allocated on first write, so zero blocks never are), and `finish`
//! writes the remaining metadata and syncs.

use crate::disk::Result;

/// An image being written.
pub trait ImageWriter: Send + Sync {
    /// The virtual size of the image (which may be rounded up from what was asked
    /// for; the extra part reads as zeroes).
    fn size(&self) -> u64;
    /// Writes `buf` at guest offset `offset`. Several threads may write at once, to
    /// different ranges.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()>;
    /// Writes the block table and whatever else is left, and syncs. Called once, after
    /// every write has returned.
    fn finish(&self) -> Result<()>;
}

/// 16 random bytes (for GUIDs and unique ids): from the kernel's random source, or
/// mixed from the clock, the process id and a counter where it cannot be read.
pub fn random_bytes() -> [u8; 16] {
    use std::io::Read;
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return b;
    }
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    for half in b.chunks_mut(8) {
        // splitmix64
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        half.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    b
}

/// A random (version 4) GUID.
pub fn random_guid() -> [u8; 16] {
    let mut g = random_bytes();
    // Version 4 in the high nibble of the third field (little-endian on disk), the
    // RFC 4122 variant in the first byte of the fourth.
    g[7] = (g[7] & 0x0f) | 0x40;
    g[8] = (g[8] & 0x3f) | 0x80;
    g
}
