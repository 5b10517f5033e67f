//! The block allocation table: one 64-bit entry per payload block, with a sector
//! bitmap entry after every `chunk_ratio` payload entries (chunk ratio =
//! 2^23 * logical sector size / block size). An entry holds a state (bits 0-2) and
//! the block's file offset in MiB (bits 20-63, so the offset is the entry with its low
//! 20 bits cleared).

use super::header::{Region, ALIGN};
use super::metadata::Params;
use crate::disk::Result;
use crate::storage::Storage;
use crate::structure::{invalid, le64, read_table};

/// Most bytes of BAT held in memory (16 Mi entries: 16 TiB in 1 MiB blocks, 64 TiB in
/// 4 MiB blocks).
pub const MAX_BAT_BYTES: u64 = 128 << 20;

/// Payload block states.
pub const NOT_PRESENT: u64 = 0;
/// Contents undefined (read as zeroes).
pub const UNDEFINED: u64 = 1;
/// Reads as zeroes.
pub const ZERO: u64 = 2;
/// Unmapped by the guest (read as zeroes).
pub const UNMAPPED: u64 = 3;
/// Stored in the file.
pub const FULLY_PRESENT: u64 = 6;
/// Partly in a parent disk (differencing disks only).
pub const PARTIALLY_PRESENT: u64 = 7;

/// How one payload block reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// Reads as zeroes; `present` when the state says so explicitly (zero, unmapped)
    /// rather than the block never being allocated.
    Zero { present: bool },
    /// Stored at this file offset.
    Data(u64),
}

/// The loaded table.
pub struct Bat {
    entries: Vec<u64>,
    chunk_ratio: u64,
    /// Payload blocks of the virtual disk.
    pub data_blocks: u64,
    block_size: u64,
    size: u64,
    file_len: u64,
}

/// Payload entries between two sector bitmap entries: 2^23 * logical sector size /
/// block size.
pub fn chunk_ratio(logical_sector: u64, block_size: u64) -> u64 {
    (1u64 << 23) * logical_sector / block_size
}

/// Entries of a BAT for `data_blocks` payload blocks: the payload entries and the
/// sector bitmap entries between them.
pub fn table_entries(data_blocks: u64, chunk_ratio: u64) -> u64 {
    match data_blocks {
        0 => 0,
        n => n + (n - 1) / chunk_ratio,
    }
}

/// Where payload block `i`'s entry is in the table.
pub fn entry_index(i: u64, chunk_ratio: u64) -> u64 {
    i + i / chunk_ratio
}

impl Bat {
    /// Reads the BAT of a disk described by `p` from region `r`.
    pub fn read(s: &dyn Storage, path: &str, p: &Params, r: Region, file_len: u64) -> Result<Self> {
        let chunk_ratio = chunk_ratio(p.logical_sector, p.block_size);
        let data_blocks = p.size.div_ceil(p.block_size);
        let total = table_entries(data_blocks, chunk_ratio);
        let bytes = total * 8;
        if bytes > r.length {
            return Err(invalid(
                path,
                format!(
                    "VHDX BAT needs {total} entries, more than its region of {} bytes holds",
                    r.length
                ),
            ));
        }
        if bytes > MAX_BAT_BYTES {
            return Err(invalid(
                path,
                format!(
                    "VHDX BAT of {bytes} bytes is larger than the {} MiB supported",
                    MAX_BAT_BYTES >> 20
                ),
            ));
        }
        let raw = read_table(s, path, "VHDX BAT", r.offset, total, 8, file_len)?;
        Ok(Bat {
            entries: raw.chunks_exact(8).map(|c| le64(c, 0)).collect(),
            chunk_ratio,
            data_blocks,
            block_size: p.block_size,
            size: p.size,
            file_len,
        })
    }

    /// The raw entry of payload block `i`.
    pub fn entry(&self, i: u64) -> u64 {
        let at = entry_index(i, self.chunk_ratio);
        self.entries
            .get(at as usize)
            .copied()
            .unwrap_or(NOT_PRESENT)
    }

    /// The bytes of payload block `i` the virtual disk uses (the last may be short).
    pub fn used(&self, i: u64) -> u64 {
        self.block_size
            .min(self.size.saturating_sub(i * self.block_size))
    }

    /// How payload block `i` reads, after checking its entry.
    pub fn block(&self, path: &str, i: u64) -> Result<Block> {
        let e = self.entry(i);
        match e & 7 {
            NOT_PRESENT | UNDEFINED => Ok(Block::Zero { present: false }),
            ZERO | UNMAPPED => Ok(Block::Zero { present: true }),
            FULLY_PRESENT => {
                let off = e & !(ALIGN - 1);
                let end = off.checked_add(self.used(i));
                if off < ALIGN || end.is_none_or(|end| end > self.file_len) {
                    return Err(invalid(
                        path,
                        format!("VHDX block {i} (at {off:#x}) lies outside the file"),
                    ));
                }
                Ok(Block::Data(off))
            }
            PARTIALLY_PRESENT => Err(invalid(
                path,
                format!("VHDX block {i} is partially present in a disk without a parent"),
            )),
            s => Err(invalid(
                path,
                format!("VHDX block {i} has the invalid state {s}"),
            )),
        }
    }
}
