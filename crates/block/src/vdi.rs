//! VirtualBox VDI images (header version 1.1), dynamic and fixed, read-only.
//!
//! Layout (little-endian): a 64-byte text banner, the signature `0xbeda107f` at 0x40,
//! the version at 0x44, then the header proper (its size at 0x48): image type (1
//! dynamic, 2 fixed; undo and differencing images are refused), the offsets of the
//! block map and of the data area, the disk size and the block size. The block map
//! holds one `u32` per block of the virtual disk: the block's index in the data area,
//! or `0xffffffff` (never written) / `0xfffffffe` (discarded), both reading as zeroes.
//! Block `i` stored at index `n` starts at `data + n * (block_size + extra) + extra`.

use crate::disk::{check_range, BlockStatus, Disk, DiskError, Extent, Result};
use crate::storage::Storage;
use crate::structure::{
    invalid, io, le32, le64, narrow_to_host, read_only_format, read_table, StructureReport,
};
use std::collections::HashSet;

/// The signature at offset 0x40.
pub const SIGNATURE: u32 = 0xbeda_107f;
/// Offset of the signature.
pub const SIGNATURE_OFFSET: usize = 0x40;
const VERSION_1_1: u32 = 0x0001_0001;
/// Block map entry: the block was never written.
const UNALLOCATED: u32 = 0xffff_ffff;
/// Block map entry: the block was discarded (reads as zeroes).
const DISCARDED: u32 = 0xffff_fffe;
/// Bytes of the file holding every field read here.
const HEADER_END: u64 = 0x1d8;
/// Largest block size accepted (VirtualBox and QEMU use 1 MiB).
const MAX_BLOCK_SIZE: u64 = 256 << 20;

/// The image type field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VdiKind {
    /// Blocks allocated on first write.
    Dynamic,
    /// Every block preallocated.
    Fixed,
}

/// Whether the first bytes of a file (at least 0x44 of them) hold a VDI signature.
pub fn probe(head: &[u8]) -> bool {
    head.len() >= SIGNATURE_OFFSET + 4 && le32(head, SIGNATURE_OFFSET) == SIGNATURE
}

/// An open VDI image.
pub struct VdiDisk {
    storage: Box<dyn Storage>,
    path: String,
    kind: VdiKind,
    size: u64,
    block_size: u64,
    extra: u64,
    data_offset: u64,
    bmap_offset: u64,
    bmap: Vec<u32>,
    blocks_allocated: u32,
    file_len: u64,
}

impl VdiDisk {
    /// Opens a VDI image. Only read-only access is supported.
    pub fn open(storage: Box<dyn Storage>, path: &str, read_only: bool) -> Result<Self> {
        if !read_only {
            return Err(read_only_format(path, "vdi"));
        }
        let file_len = storage.len().map_err(|e| io(path, e))?;
        if file_len < HEADER_END {
            return Err(invalid(
                path,
                format!("file too short for a VDI header ({file_len} bytes)"),
            ));
        }
        let mut h = vec![0u8; HEADER_END as usize];
        storage.read_at(&mut h, 0).map_err(|e| io(path, e))?;
        if !probe(&h) {
            return Err(invalid(path, "no VDI signature at offset 0x40"));
        }
        let version = le32(&h, 0x44);
        if version != VERSION_1_1 {
            return Err(DiskError::UnsupportedImage {
                path: path.into(),
                reason: format!("VDI header version {version:#x} (only 1.1 is supported)"),
            });
        }
        let header_size = u64::from(le32(&h, 0x48));
        if 0x48 + header_size < 0x188 {
            return Err(invalid(
                path,
                format!("VDI header size {header_size} is too small"),
            ));
        }
        let kind = match le32(&h, 0x4c) {
            1 => VdiKind::Dynamic,
            2 => VdiKind::Fixed,
            3 => return Err(unsupported(path, "undo images")),
            4 => return Err(unsupported(path, "differencing images")),
            t => return Err(invalid(path, format!("unknown VDI image type {t}"))),
        };
        let bmap_offset = u64::from(le32(&h, 0x154));
        let data_offset = u64::from(le32(&h, 0x158));
        let sector_size = le32(&h, 0x168);
        let size = le64(&h, 0x170);
        let block_size = u64::from(le32(&h, 0x178));
        let extra = u64::from(le32(&h, 0x17c));
        let blocks = u64::from(le32(&h, 0x180));
        let blocks_allocated = le32(&h, 0x184);
        let header_end = 0x48 + header_size;
        if sector_size != 512 {
            return Err(unsupported(path, &format!("sector size {sector_size}")));
        }
        if !block_size.is_power_of_two() || !(512..=MAX_BLOCK_SIZE).contains(&block_size) {
            return Err(invalid(
                path,
                format!("block size {block_size} is not a power of two from 512 to 256 MiB"),
            ));
        }
        if extra > MAX_BLOCK_SIZE {
            return Err(invalid(path, format!("block extra data {extra} is absurd")));
        }
        if blocks.checked_mul(block_size).is_none_or(|cap| cap < size) {
            return Err(invalid(
                path,
                format!("disk size {size} does not fit in {blocks} blocks of {block_size} bytes"),
            ));
        }
        if bmap_offset < header_end || data_offset < header_end {
            return Err(invalid(
                path,
                format!(
                    "block map ({bmap_offset:#x}) or data ({data_offset:#x}) overlaps the \
                     header (which ends at {header_end:#x})"
                ),
            ));
        }
        let raw = read_table(
            storage.as_ref(),
            path,
            "block map",
            bmap_offset,
            blocks,
            4,
            file_len,
        )?;
        let bmap = raw.chunks_exact(4).map(|c| le32(c, 0)).collect();
        Ok(VdiDisk {
            storage,
            path: path.into(),
            kind,
            size,
            block_size,
            extra,
            data_offset,
            bmap_offset,
            bmap,
            blocks_allocated,
            file_len,
        })
    }

    /// Dynamic or fixed.
    pub fn kind(&self) -> VdiKind {
        self.kind
    }

    /// The block size (qemu-img reports it as the cluster size).
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// Where block `i`'s data is in the file, or `None` if it reads as zeroes.
    fn host_offset(&self, i: u64) -> Result<Option<u64>> {
        let e = self.bmap.get(i as usize).copied().unwrap_or(UNALLOCATED);
        if e == UNALLOCATED || e == DISCARDED {
            return Ok(None);
        }
        if u64::from(e) >= self.bmap.len() as u64 {
            return Err(invalid(
                &self.path,
                format!("block map entry {i} ({e}) is beyond the image's blocks"),
            ));
        }
        let at = self
            .data_offset
            .checked_add(u64::from(e) * (self.block_size + self.extra) + self.extra)
            .filter(|at| at.checked_add(self.block_size).is_some())
            .ok_or_else(|| invalid(&self.path, format!("block {i} has an absurd offset")))?;
        Ok(Some(at))
    }

    /// Structural check: every block map entry in range, no block stored twice, every
    /// stored block inside the file, the allocated count as recorded.
    pub fn check(&self) -> StructureReport {
        let mut r = StructureReport {
            total_blocks: self.size.div_ceil(self.block_size),
            image_end_offset: self.bmap_offset + 4 * self.bmap.len() as u64,
            ..Default::default()
        };
        let mut seen = HashSet::new();
        for (i, &e) in self.bmap.iter().enumerate() {
            if e == UNALLOCATED || e == DISCARDED {
                continue;
            }
            r.allocated_blocks += 1;
            match self.host_offset(i as u64) {
                Err(err) => r.error(|| err.to_string()),
                Ok(Some(at)) => {
                    if !seen.insert(e) {
                        r.error(|| format!("block {i} shares data block {e} with another block"));
                    }
                    let end = at + self.block_size;
                    if end > self.file_len {
                        r.error(|| {
                            format!("block {i} (data at {at:#x}) is past the end of the file")
                        });
                    }
                    r.image_end_offset = r.image_end_offset.max(end);
                }
                Ok(None) => {}
            }
        }
        if r.allocated_blocks != u64::from(self.blocks_allocated) {
            let (n, rec) = (r.allocated_blocks, self.blocks_allocated);
            r.error(|| format!("{n} blocks are allocated but the header records {rec}"));
        }
        r
    }
}

fn unsupported(path: &str, what: &str) -> DiskError {
    DiskError::UnsupportedImage {
        path: path.into(),
        reason: format!("VDI {what}"),
    }
}

impl Disk for VdiDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        true
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(offset, buf.len() as u64, self.size)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let i = pos / self.block_size;
            let within = pos % self.block_size;
            let n = ((self.block_size - within) as usize).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            match self.host_offset(i)? {
                None => out.fill(0),
                Some(at) => {
                    if at + self.block_size > self.file_len {
                        return Err(invalid(
                            &self.path,
                            format!("block {i} (data at {at:#x}) is past the end of the file"),
                        ));
                    }
                    self.storage
                        .read_at(out, at + within)
                        .map_err(|e| io(&self.path, e))?;
                }
            }
            done += n;
        }
        Ok(())
    }

    crate::disk::read_only_disk!();

    fn format(&self) -> &'static str {
        "vdi"
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<(BlockStatus, u64)> {
        let e = self.map_extent(offset, len)?;
        let s = if !e.zero {
            BlockStatus::Data
        } else {
            BlockStatus::Zero
        };
        Ok((s, e.len))
    }

    fn map_extent(&self, offset: u64, len: u64) -> Result<Extent> {
        check_range(offset, len, self.size)?;
        let i = offset / self.block_size;
        let within = offset % self.block_size;
        let n = (self.block_size - within).min(len);
        let host = self.host_offset(i)?;
        let mut e = Extent {
            len: n,
            data: host.is_some(),
            zero: host.is_none(),
            present: host.is_some(),
            depth: 0,
            offset: host.map(|h| h + within),
            file: self.path.clone(),
        };
        narrow_to_host(self.storage.as_ref(), &mut e)?;
        Ok(e)
    }
}
