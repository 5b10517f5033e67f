//! The VHD footer (512 bytes, big-endian; at the end of every VHD and, for dynamic
//! disks, copied at offset 0), its checksum, and the CHS geometry that decides the
//! virtual size most readers see.
//!
//! Footer layout: cookie `conectix` (0), features (8, 2 = reserved bit always set),
//! format version (12, 0x00010000), data offset (16: the dynamic header, all ones for
//! fixed disks), timestamp (24, seconds since 2000-01-01 UTC), creator application
//! (28), creator version (32), creator host OS (36), original size (40), current size
//! (48), geometry (56: cylinders u16, heads u8, sectors per track u8), disk type (60),
//! checksum (64), unique id (68, 16 bytes), saved state (84), zeroes.

use crate::structure::{be32, be64};

/// The footer's cookie.
pub const COOKIE: &[u8; 8] = b"conectix";
/// Footer size.
pub const FOOTER: u64 = 512;
/// Sector size of the geometry and of the sector bitmaps.
pub const SECTOR: u64 = 512;
/// Disk type: data then footer.
pub const TYPE_FIXED: u32 = 2;
/// Disk type: blocks allocated on first write.
pub const TYPE_DYNAMIC: u32 = 3;
/// Disk type: blocks from a parent (refused).
pub const TYPE_DIFFERENCING: u32 = 4;
/// The largest geometry, 65535 cylinders, 16 heads, 255 sectors (about 127 GiB).
pub const MAX_GEOMETRY: (u64, u64, u64) = (65535, 16, 255);
/// The largest disk written: 2040 GiB, as qemu-img (the block table holds 32-bit
/// sector numbers, so a dynamic file cannot pass 2 TiB).
pub const MAX_WRITE_SIZE: u64 = 0xff00_0000 * SECTOR;

/// The ones' complement of the byte sum of `b`, skipping the 4-byte checksum field at
/// `skip`.
pub fn checksum(b: &[u8], skip: usize) -> u32 {
    let sum = b
        .iter()
        .enumerate()
        .filter(|(i, _)| !(skip..skip + 4).contains(i))
        .fold(0u32, |s, (_, &x)| s.wrapping_add(u32::from(x)));
    !sum
}

/// Whether `f` holds a footer with a correct checksum.
pub fn footer_checksum_ok(f: &[u8]) -> bool {
    f.len() >= FOOTER as usize && be32(f, 64) == checksum(&f[..FOOTER as usize], 64)
}

/// The virtual size a footer describes, as qemu-img computes it: images made by
/// Hyper-V (`win `), disk2vhd (`d2v `), XenServer (`CTXS`) or qemu with `force_size`
/// (`qem2`), and images whose geometry is the maximum, use the footer's current size;
/// all others (Virtual PC, qemu by default, hako) the CHS geometry's size.
pub fn virtual_size(f: &[u8]) -> u64 {
    let current = be64(f, 48);
    let cyls = u64::from(u16::from_be_bytes([f[56], f[57]]));
    let (heads, secs) = (u64::from(f[58]), u64::from(f[59]));
    let creator = &f[28..32];
    let uses_current = matches!(creator, b"win " | b"d2v " | b"CTXS" | b"qem2")
        || (cyls, heads, secs) == MAX_GEOMETRY;
    if uses_current {
        current
    } else {
        cyls * heads * secs * SECTOR
    }
}

/// The CHS geometry the VHD specification (appendix "CHS calculation") gives a disk of
/// `sectors` sectors: it rounds down, so it may cover fewer sectors than asked for.
pub fn spec_geometry(sectors: u64) -> (u64, u64, u64) {
    let (c, h, s) = MAX_GEOMETRY;
    let total = sectors.min(c * h * s);
    let (spt, heads, cth);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        let mut t_spt = 17;
        let mut t_cth = total / t_spt;
        let mut t_heads = t_cth.div_ceil(1024).max(4);
        if t_cth >= t_heads * 1024 || t_heads > 16 {
            t_spt = 31;
            t_heads = 16;
            t_cth = total / t_spt;
        }
        if t_cth >= t_heads * 1024 {
            t_spt = 63;
            t_heads = 16;
            t_cth = total / t_spt;
        }
        (spt, heads, cth) = (t_spt, t_heads, t_cth);
    }
    (cth / heads, heads, spt)
}

/// The geometry and virtual size a disk of at least `size` bytes gets, as qemu-img
/// and Virtual PC make them: the smallest specification geometry covering the size
/// (so the disk grows to a whole number of cylinders); above the largest geometry
/// (about 127 GiB) the size itself, in whole sectors, with the maximum geometry.
pub fn geometry_for(size: u64) -> ((u64, u64, u64), u64) {
    let (mc, mh, ms) = MAX_GEOMETRY;
    let max = mc * mh * ms;
    let want = size.div_ceil(SECTOR);
    if want >= max {
        return (MAX_GEOMETRY, want * SECTOR);
    }
    // Each step raises the product by at least one sector once the geometry stops
    // rounding down, and the rounding loses less than one cylinder (at most
    // 16 * 255 sectors), so this ends within a few thousand steps.
    let mut n = want;
    loop {
        let g = spec_geometry(n);
        let covered = g.0 * g.1 * g.2;
        if covered >= want {
            return (g, covered * SECTOR);
        }
        n += 1;
    }
}

/// The geometry and size for `size` bytes exactly (qemu-img's `force_size`): the
/// maximum geometry, which makes every reader use the footer's current size.
pub fn forced(size: u64) -> ((u64, u64, u64), u64) {
    (MAX_GEOMETRY, size.div_ceil(SECTOR) * SECTOR)
}

/// What a footer written here says.
#[derive(Debug, Clone)]
pub struct FooterFields {
    /// Disk type ([`TYPE_FIXED`] or [`TYPE_DYNAMIC`]).
    pub disk_type: u32,
    /// Where the dynamic header is (`u64::MAX` for fixed disks).
    pub data_offset: u64,
    /// Current (and original) size in bytes.
    pub size: u64,
    /// Cylinders, heads, sectors per track.
    pub geometry: (u64, u64, u64),
    /// Creator application (`hako`, or `qem2` for a forced size).
    pub creator: [u8; 4],
    /// Seconds since 2000-01-01 00:00 UTC.
    pub timestamp: u32,
    /// The disk's unique id.
    pub unique_id: [u8; 16],
}

/// The 512 bytes of a footer, checksum included.
pub fn build(f: &FooterFields) -> [u8; FOOTER as usize] {
    let mut b = [0u8; FOOTER as usize];
    b[0..8].copy_from_slice(COOKIE);
    b[8..12].copy_from_slice(&2u32.to_be_bytes());
    b[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    b[16..24].copy_from_slice(&f.data_offset.to_be_bytes());
    b[24..28].copy_from_slice(&f.timestamp.to_be_bytes());
    b[28..32].copy_from_slice(&f.creator);
    b[32..36].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    b[36..40].copy_from_slice(b"Wi2k");
    b[40..48].copy_from_slice(&f.size.to_be_bytes());
    b[48..56].copy_from_slice(&f.size.to_be_bytes());
    let (c, h, s) = f.geometry;
    b[56..58].copy_from_slice(&(c as u16).to_be_bytes());
    b[58] = h as u8;
    b[59] = s as u8;
    b[60..64].copy_from_slice(&f.disk_type.to_be_bytes());
    b[68..84].copy_from_slice(&f.unique_id);
    let sum = checksum(&b, 64);
    b[64..68].copy_from_slice(&sum.to_be_bytes());
    b
}

/// Seconds since 2000-01-01 00:00 UTC now (the VHD epoch), 0 if the clock is before it.
pub fn timestamp_now() -> u32 {
    const EPOCH_2000: u64 = 946_684_800;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(now.saturating_sub(EPOCH_2000)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_follows_the_specification_and_qemu_img() {
        // Sizes and what `qemu-img create -f vpc` 7.2 makes of them.
        for (size, want, geo) in [
            (1u64 << 20, 1_079_296u64, (31, 4, 17)),
            (3 << 20, 3_168_256, (91, 4, 17)),
            (10_000 << 10, 10_270_720, (295, 4, 17)),
            (100 << 20, 104_865_792, (1004, 12, 17)),
            (1 << 30, 1_073_995_776, (2081, 16, 63)),
        ] {
            let (g, s) = geometry_for(size);
            assert_eq!((s, g), (want, geo), "{size}");
        }
        let big = 200u64 << 30;
        assert_eq!(geometry_for(big), (MAX_GEOMETRY, big));
        assert_eq!(forced(3 << 20), (MAX_GEOMETRY, 3 << 20));
        assert_eq!(geometry_for(1).1, 68 * 512);
    }

    #[test]
    fn built_footer_reads_back() {
        let f = build(&FooterFields {
            disk_type: TYPE_DYNAMIC,
            data_offset: 512,
            size: 3_168_256,
            geometry: (91, 4, 17),
            creator: *b"hako",
            timestamp: 1,
            unique_id: [3; 16],
        });
        assert!(footer_checksum_ok(&f));
        assert_eq!(virtual_size(&f), 3_168_256);
    }
}
