//! The metadata region: a 64 KiB table of items (GUID, offset in the region, length,
//! flags) and the items a virtual disk needs: file parameters (block size,
//! leave-blocks-allocated, has-parent), virtual disk size, logical and physical sector
//! size, page 83 data (the disk's serial GUID).

use super::header::{guid, Guid, Region};
use crate::disk::{DiskError, Result};
use crate::storage::Storage;
use crate::structure::{invalid, le32, le64, read_table};

/// Size of the metadata table at the start of the region; items follow it.
pub const TABLE_SIZE: u64 = 64 << 10;
const MAX_ENTRIES: u16 = 2047;
const MAX_ITEM: u32 = 1 << 20;
/// Largest virtual disk the specification allows: 64 TiB.
pub const MAX_DISK_SIZE: u64 = 64 << 40;
/// Smallest payload block size.
pub const MIN_BLOCK: u32 = 1 << 20;
/// Largest payload block size.
pub const MAX_BLOCK: u32 = 256 << 20;

/// File parameters (block size, flags): CAA16737-FA36-4D43-B3B6-33F0AA44E76B.
pub const FILE_PARAMETERS: Guid = guid(
    0xcaa1_6737,
    0xfa36,
    0x4d43,
    [0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b],
);
/// Virtual disk size: 2FA54224-CD1B-4876-B211-5DBED83BF4B8.
pub const VIRTUAL_DISK_SIZE: Guid = guid(
    0x2fa5_4224,
    0xcd1b,
    0x4876,
    [0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8],
);
/// Page 83 data: BECA12AB-B2E6-4523-93EF-C309E000C746.
pub const PAGE83: Guid = guid(
    0xbeca_12ab,
    0xb2e6,
    0x4523,
    [0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46],
);
/// Logical sector size: 8141BF1D-A96F-4709-BA47-F233A8FAAB5F.
pub const LOGICAL_SECTOR: Guid = guid(
    0x8141_bf1d,
    0xa96f,
    0x4709,
    [0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f],
);
/// Physical sector size: CDA348C7-445D-4471-9CC9-E9885251C556.
pub const PHYSICAL_SECTOR: Guid = guid(
    0xcda3_48c7,
    0x445d,
    0x4471,
    [0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56],
);
/// Parent locator (differencing disks): A8D35F2D-B30B-454D-ABF7-D3D84834AB0C.
pub const PARENT_LOCATOR: Guid = guid(
    0xa8d3_5f2d,
    0xb30b,
    0x454d,
    [0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c],
);

/// What the metadata says about the virtual disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Payload block size (a power of two from 1 MiB to 256 MiB).
    pub block_size: u64,
    /// Blocks stay allocated (a fixed disk).
    pub leave_blocks_allocated: bool,
    /// Virtual disk size in bytes.
    pub size: u64,
    /// Logical sector size (512 or 4096).
    pub logical_sector: u64,
    /// Physical sector size (512 or 4096).
    pub physical_sector: u64,
    /// Page 83 data: the disk's serial GUID.
    pub page83: Guid,
}

/// Reads the metadata table and the items of the metadata region `r`.
pub fn read_params(s: &dyn Storage, path: &str, r: Region, file_len: u64) -> Result<Params> {
    if r.length < TABLE_SIZE {
        return Err(invalid(
            path,
            "VHDX metadata region is too short for its table",
        ));
    }
    let t = read_table(
        s,
        path,
        "VHDX metadata table",
        r.offset,
        TABLE_SIZE,
        1,
        file_len,
    )?;
    if &t[..8] != b"metadata" {
        return Err(invalid(
            path,
            "no VHDX metadata table signature ('metadata')",
        ));
    }
    let count = u16::from_le_bytes([t[10], t[11]]);
    if count > MAX_ENTRIES {
        return Err(invalid(
            path,
            format!("VHDX metadata table has {count} entries (at most {MAX_ENTRIES})"),
        ));
    }
    let mut items: Vec<(Guid, u64, u32)> = Vec::new();
    for i in 0..usize::from(count) {
        let e = &t[32 + 32 * i..64 + 32 * i];
        let mut id = [0u8; 16];
        id.copy_from_slice(&e[..16]);
        let (off, len, flags) = (le32(e, 16), le32(e, 20), le32(e, 24));
        if items.iter().any(|x| x.0 == id) {
            return Err(invalid(path, "VHDX metadata table lists an item twice"));
        }
        if len > 0
            && (u64::from(off) < TABLE_SIZE
                || len > MAX_ITEM
                || u64::from(off) + u64::from(len) > r.length)
        {
            return Err(invalid(
                path,
                format!("VHDX metadata item at {off:#x} ({len} bytes) is outside its region"),
            ));
        }
        let known = [
            FILE_PARAMETERS,
            VIRTUAL_DISK_SIZE,
            PAGE83,
            LOGICAL_SECTOR,
            PHYSICAL_SECTOR,
            PARENT_LOCATOR,
        ];
        if !known.contains(&id) && flags & 4 != 0 {
            return Err(DiskError::UnsupportedImage {
                path: path.into(),
                reason: "VHDX image with an unknown required metadata item".into(),
            });
        }
        items.push((id, r.offset + u64::from(off), len));
    }
    let item = |id: Guid, name: &str, want: u32| -> Result<Vec<u8>> {
        let Some(&(_, at, len)) = items.iter().find(|x| x.0 == id) else {
            return Err(invalid(
                path,
                format!("VHDX metadata lacks the {name} item"),
            ));
        };
        if len < want {
            return Err(invalid(
                path,
                format!("VHDX {name} metadata item is {len} bytes (expected {want})"),
            ));
        }
        read_table(s, path, name, at, u64::from(want), 1, file_len)
    };
    let fp = item(FILE_PARAMETERS, "file parameters", 8)?;
    let flags = le32(&fp, 4);
    if flags & 2 != 0 {
        return Err(DiskError::UnsupportedImage {
            path: path.into(),
            reason: "differencing VHDX images (with a parent disk) are not supported yet".into(),
        });
    }
    let block = le32(&fp, 0);
    if !block.is_power_of_two() || !(MIN_BLOCK..=MAX_BLOCK).contains(&block) {
        return Err(invalid(
            path,
            format!("VHDX block size {block} is not a power of two from 1 MiB to 256 MiB"),
        ));
    }
    let size = le64(&item(VIRTUAL_DISK_SIZE, "virtual disk size", 8)?, 0);
    let sector = |id, name| -> Result<u64> {
        let v = le32(&item(id, name, 4)?, 0);
        if v != 512 && v != 4096 {
            return Err(invalid(path, format!("VHDX {name} {v} is not 512 or 4096")));
        }
        Ok(u64::from(v))
    };
    let logical_sector = sector(LOGICAL_SECTOR, "logical sector size")?;
    let physical_sector = sector(PHYSICAL_SECTOR, "physical sector size")?;
    if size > MAX_DISK_SIZE || size % logical_sector != 0 {
        return Err(invalid(
            path,
            format!(
                "VHDX virtual size {size} is not a multiple of the {logical_sector}-byte \
                 sector up to 64 TiB"
            ),
        ));
    }
    let mut page83 = [0u8; 16];
    page83.copy_from_slice(&item(PAGE83, "page 83 data", 16)?);
    Ok(Params {
        block_size: u64::from(block),
        leave_blocks_allocated: flags & 1 != 0,
        size,
        logical_sector,
        physical_sector,
        page83,
    })
}
