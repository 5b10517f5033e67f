//! The VHDX header section (the first 1 MiB): the file type identifier, the two
//! headers and the two region tables, with their CRC-32C checksums.

use crate::disk::{DiskError, Result};
use crate::storage::Storage;
use crate::structure::{invalid, io, le32, le64};

/// The file type identifier's signature, at offset 0.
pub const SIGNATURE: &[u8; 8] = b"vhdxfile";
/// The header section: identifier, headers and region tables; regions start after it.
pub const HEADER_SECTION: u64 = 1 << 20;
/// Objects in the file (regions, the log, payload blocks) are aligned to 1 MiB.
pub const ALIGN: u64 = 1 << 20;
/// Where the two headers are.
pub const HEADER_OFFSETS: [u64; 2] = [64 << 10, 128 << 10];
/// Size of a header (its checksum covers all of it).
pub const HEADER_SIZE: usize = 4096;
/// Where the two copies of the region table are.
pub const REGION_OFFSETS: [u64; 2] = [192 << 10, 256 << 10];
/// Size of a region table (its checksum covers all of it).
pub const REGION_TABLE_SIZE: usize = 64 << 10;
const MAX_REGION_ENTRIES: u32 = 2047;

/// A GUID as stored on disk (the first three fields little-endian).
pub type Guid = [u8; 16];

/// The on-disk bytes of the GUID written `a-b-c-d[0..2]-d[2..8]`.
pub const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> Guid {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// The BAT region: 2DC27766-F623-4200-9D64-115E9BFD4A08.
pub const BAT_REGION: Guid = guid(
    0x2dc2_7766,
    0xf623,
    0x4200,
    [0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08],
);
/// The metadata region: 8B7CA206-4790-4B9A-B8FE-575F050F886E.
pub const METADATA_REGION: Guid = guid(
    0x8b7c_a206,
    0x4790,
    0x4b9a,
    [0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e],
);

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32C (Castagnoli) of `b`, as VHDX checksums use it.
pub fn crc32c(b: &[u8]) -> u32 {
    crc32c_append(0, b)
}

/// The CRC-32C of the bytes whose CRC-32C is `crc` followed by `b` (so a checksum can
/// be computed piece by piece: `crc32c_append(crc32c(a), b) == crc32c(a ++ b)`).
pub fn crc32c_append(crc: u32, b: &[u8]) -> u32 {
    !b.iter().fold(!crc, |c, &x| {
        CRC_TABLE[((c ^ u32::from(x)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// Whether the CRC-32C of `b` with its checksum field (4 bytes at 4) zeroed matches
/// the field.
pub fn checksum_ok(b: &[u8]) -> bool {
    let mut c = b.to_vec();
    c[4..8].fill(0);
    crc32c(&c) == le32(b, 4)
}

/// Recomputes the checksum field (at 4) of a header or region table.
pub fn set_checksum(b: &mut [u8]) {
    b[4..8].fill(0);
    let c = crc32c(b);
    b[4..8].copy_from_slice(&c.to_le_bytes());
}

/// The fields of the active header that matter for reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Sequence number (the higher of two valid headers is the active one).
    pub sequence: u64,
    /// Non-zero when the log holds entries to replay.
    pub log_guid: Guid,
    /// Must be 0.
    pub log_version: u16,
    /// Must be 1.
    pub version: u16,
    /// Size of the log in bytes.
    pub log_length: u32,
    /// Where the log is.
    pub log_offset: u64,
}

/// Parses a 4 KiB header; `None` if its signature or checksum is wrong.
fn parse_header(b: &[u8]) -> Option<Header> {
    if &b[..4] != b"head" || !checksum_ok(b) {
        return None;
    }
    let mut log_guid = [0u8; 16];
    log_guid.copy_from_slice(&b[48..64]);
    Some(Header {
        sequence: le64(b, 8),
        log_guid,
        log_version: u16::from_le_bytes([b[64], b[65]]),
        version: u16::from_le_bytes([b[66], b[67]]),
        log_length: le32(b, 68),
        log_offset: le64(b, 72),
    })
}

/// Checks the file type identifier and returns the active header: the valid one with
/// the higher sequence number (two valid headers with the same number must be
/// identical, as disk2vhd writes them).
pub fn read_header(s: &dyn Storage, path: &str, file_len: u64) -> Result<Header> {
    let end = REGION_OFFSETS[1] + REGION_TABLE_SIZE as u64;
    if file_len < end {
        return Err(invalid(
            path,
            format!("file too short for a VHDX header section ({file_len} bytes)"),
        ));
    }
    let mut sig = [0u8; 8];
    s.read_at(&mut sig, 0).map_err(|e| io(path, e))?;
    if &sig != SIGNATURE {
        return Err(invalid(path, "no VHDX file type identifier ('vhdxfile')"));
    }
    let mut raw = [vec![0u8; HEADER_SIZE], vec![0u8; HEADER_SIZE]];
    for (b, &at) in raw.iter_mut().zip(&HEADER_OFFSETS) {
        s.read_at(b, at).map_err(|e| io(path, e))?;
    }
    let h: Vec<Option<Header>> = raw.iter().map(|b| parse_header(b)).collect();
    let h = match (&h[0], &h[1]) {
        (None, None) => {
            return Err(invalid(
                path,
                "neither VHDX header is valid (bad signature or CRC-32C checksum)",
            ))
        }
        (Some(a), None) => a.clone(),
        (None, Some(b)) => b.clone(),
        (Some(a), Some(b)) if a.sequence > b.sequence => a.clone(),
        (Some(a), Some(b)) if b.sequence > a.sequence => b.clone(),
        (Some(a), Some(_)) if raw[0] == raw[1] => a.clone(),
        (Some(_), Some(_)) => {
            return Err(invalid(
                path,
                "the two VHDX headers differ but have the same sequence number",
            ))
        }
    };
    if h.version != 1 {
        return Err(DiskError::UnsupportedImage {
            path: path.into(),
            reason: format!("VHDX header version {} (only 1 is known)", h.version),
        });
    }
    Ok(h)
}

/// A region: where it is and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// File offset (1 MiB aligned, past the header section).
    pub offset: u64,
    /// Length in bytes (a multiple of 1 MiB).
    pub length: u64,
}

/// The regions a VHDX holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regions {
    /// The block allocation table.
    pub bat: Region,
    /// The metadata region.
    pub metadata: Region,
    /// Every region in the table (known or not), for overlap checks.
    pub all: Vec<Region>,
}

/// Reads the region table: the first copy whose signature and checksum are good.
pub fn read_regions(s: &dyn Storage, path: &str) -> Result<Regions> {
    let mut b = vec![0u8; REGION_TABLE_SIZE];
    for &at in &REGION_OFFSETS {
        s.read_at(&mut b, at).map_err(|e| io(path, e))?;
        if &b[..4] == b"regi" && checksum_ok(&b) {
            return parse_regions(&b, path);
        }
    }
    Err(invalid(
        path,
        "neither VHDX region table is valid (bad signature or CRC-32C checksum)",
    ))
}

fn parse_regions(b: &[u8], path: &str) -> Result<Regions> {
    let count = le32(b, 8);
    if count > MAX_REGION_ENTRIES {
        return Err(invalid(
            path,
            format!("VHDX region table has {count} entries (at most {MAX_REGION_ENTRIES})"),
        ));
    }
    let (mut bat, mut metadata) = (None, None);
    let mut all = Vec::new();
    let mut seen: Vec<Guid> = Vec::new();
    for i in 0..count as usize {
        let e = &b[16 + 32 * i..48 + 32 * i];
        let mut id = [0u8; 16];
        id.copy_from_slice(&e[..16]);
        let r = Region {
            offset: le64(e, 16),
            length: u64::from(le32(e, 24)),
        };
        let required = le32(e, 28) & 1 != 0;
        if seen.contains(&id) {
            return Err(invalid(path, "VHDX region table lists a region twice"));
        }
        seen.push(id);
        if r.offset % ALIGN != 0 || r.offset < HEADER_SECTION || r.length % ALIGN != 0 {
            return Err(invalid(
                path,
                format!(
                    "VHDX region at {:#x} ({} bytes) is not 1 MiB aligned past the header \
                     section",
                    r.offset, r.length
                ),
            ));
        }
        if id == BAT_REGION {
            bat = Some(r);
        } else if id == METADATA_REGION {
            metadata = Some(r);
        } else if required {
            return Err(DiskError::UnsupportedImage {
                path: path.into(),
                reason: "VHDX image with an unknown required region".into(),
            });
        }
        all.push(r);
    }
    let (Some(bat), Some(metadata)) = (bat, metadata) else {
        return Err(invalid(
            path,
            "VHDX region table lacks the BAT or the metadata region",
        ));
    };
    Ok(Regions { bat, metadata, all })
}

/// Fails if two of `spans` (name, offset, length) overlap.
pub fn check_overlaps(path: &str, spans: &[(&str, u64, u64)]) -> Result<()> {
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            let a_end = a.1.saturating_add(a.2);
            let b_end = b.1.saturating_add(b.2);
            if a.2 > 0 && b.2 > 0 && a.1 < b_end && b.1 < a_end {
                return Err(invalid(
                    path,
                    format!(
                        "VHDX {} ({:#x}, {} bytes) overlaps {} ({:#x}, {} bytes)",
                        a.0, a.1, a.2, b.0, b.1, b.2
                    ),
                ));
            }
        }
    }
    Ok(())
}
