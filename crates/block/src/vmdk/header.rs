//! The VMDK sparse extent header (`KDMV`, little-endian) and the embedded text
//! descriptor, validated field by field.
//!
//! Header layout: magic, version (1-3), flags (bit 0 newline test, bit 1 redundant
//! grain table, bit 2 zeroed-grain entries, bit 16 compressed grains, bit 17 stream
//! markers), capacity and grain size in sectors, descriptor offset and size (sectors),
//! grain table entries per table, redundant and primary grain directory offsets
//! (sectors; all ones in the primary header of a stream whose directory follows the
//! data, the real value being in the footer header near the end of the file), overhead,
//! unclean-shutdown flag, four newline-detection bytes, compression algorithm (1 =
//! deflate).

use crate::disk::{DiskError, Result};
use crate::structure::{invalid, le32, le64};

/// `KDMV` read as a little-endian u32.
pub const MAGIC: u32 = 0x564d_444b;
/// Directory offset meaning "in the footer".
pub const GD_AT_END: u64 = u64::MAX;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
/// Largest grain accepted: 16 MiB (VMware and qemu-img use 64 KiB).
pub const MAX_GRAIN_SECTORS: u64 = 1 << 15;
/// Largest grain table accepted (the format's tables have 512 entries).
pub const MAX_GTES: u64 = 4096;
/// Largest descriptor read.
pub const MAX_DESCRIPTOR: u64 = 1 << 20;
const SECTOR: u64 = 512;

/// A validated sparse extent header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseHeader {
    pub version: u32,
    pub flags: u32,
    /// Virtual size in sectors.
    pub capacity: u64,
    /// Grain size in sectors.
    pub grain_sectors: u64,
    pub descriptor_offset: u64,
    pub descriptor_size: u64,
    pub gtes_per_gt: u64,
    /// Primary grain directory (sectors), or [`GD_AT_END`].
    pub gd_offset: u64,
    pub compression: u16,
}

impl SparseHeader {
    /// Parses the 512-byte header at the start of `b`.
    pub fn parse(b: &[u8], path: &str) -> Result<Self> {
        if b.len() < 512 || le32(b, 0) != MAGIC {
            return Err(invalid(path, "no VMDK sparse header ('KDMV')"));
        }
        let h = SparseHeader {
            version: le32(b, 4),
            flags: le32(b, 8),
            capacity: le64(b, 12),
            grain_sectors: le64(b, 20),
            descriptor_offset: le64(b, 28),
            descriptor_size: le64(b, 36),
            gtes_per_gt: u64::from(le32(b, 44)),
            gd_offset: le64(b, 56),
            compression: u16::from_le_bytes([b[77], b[78]]),
        };
        if !(1..=3).contains(&h.version) {
            return Err(DiskError::UnsupportedImage {
                path: path.into(),
                reason: format!("VMDK sparse header version {}", h.version),
            });
        }
        if !h.grain_sectors.is_power_of_two() || h.grain_sectors > MAX_GRAIN_SECTORS {
            return Err(invalid(
                path,
                format!(
                    "grain size {} sectors is not a power of two up to {MAX_GRAIN_SECTORS}",
                    h.grain_sectors
                ),
            ));
        }
        if h.gtes_per_gt == 0 || h.gtes_per_gt > MAX_GTES {
            return Err(invalid(
                path,
                format!("{} grain table entries per table is absurd", h.gtes_per_gt),
            ));
        }
        if h.capacity > (1 << 60) / SECTOR {
            return Err(invalid(
                path,
                format!("capacity of {} sectors is absurd", h.capacity),
            ));
        }
        if h.compressed() && h.compression != 1 {
            return Err(DiskError::UnsupportedImage {
                path: path.into(),
                reason: format!("VMDK compression algorithm {}", h.compression),
            });
        }
        Ok(h)
    }

    /// Grains are deflate-compressed, each behind a (LBA, size) header.
    pub fn compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }

    /// The file has stream markers (streamOptimized).
    pub fn markers(&self) -> bool {
        self.flags & FLAG_MARKERS != 0
    }

    /// Bytes per grain.
    pub fn grain_bytes(&self) -> u64 {
        self.grain_sectors * SECTOR
    }

    /// Grain directory entries needed to cover the capacity.
    pub fn gd_entries(&self) -> u64 {
        self.capacity
            .div_ceil(self.grain_sectors)
            .div_ceil(self.gtes_per_gt)
    }
}
