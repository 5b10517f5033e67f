//! Virtual PC / Hyper-V / Azure VHD images ("vpc" in qemu-img), fixed and dynamic:
//! read here, written by [`writer`] (`convert -O vpc`).
//!
//! Every VHD ends with a 512-byte big-endian footer: the cookie `conectix`, the offset
//! of the dynamic header (all ones for fixed disks), the disk size, CHS geometry, the
//! disk type (2 fixed, 3 dynamic, 4 differencing: refused) and a checksum (the ones'
//! complement of the byte sum of the footer with the checksum field zeroed).
//! - A fixed disk is its data followed by the footer.
//! - A dynamic disk starts with a copy of the footer, then a 1024-byte dynamic header
//!   (`cxsparse`, the block allocation table's offset and entry count, the block size,
//!   a checksum). The table holds one big-endian sector number per block (all ones:
//!   not allocated, reads as zeroes). An allocated block is a sector bitmap (one bit
//!   per sector, most significant bit first, padded to whole sectors; a clear bit means
//!   the sector was never written and reads as zeroes) followed by the block's data.
//!
//! Virtual size, as qemu-img computes it ([`footer::virtual_size`]): images made by
//! Hyper-V (`win `), disk2vhd (`d2v `), XenServer (`CTXS`) or qemu with `force_size`
//! (`qem2`), and images whose geometry is the maximum (65535/16/255), use the footer's
//! current size; all others (Virtual PC, qemu by default) the CHS geometry's size,
//! which is what Virtual PC does.

pub mod footer;
pub mod writer;

use crate::disk::{check_range, BlockStatus, Disk, DiskError, Extent, Result};
use crate::storage::Storage;
use crate::structure::{
    be32, be64, invalid, io, narrow_to_host, read_only_format, read_table, StructureReport,
};
pub use footer::COOKIE;
use footer::{
    checksum, footer_checksum_ok, virtual_size, FOOTER, SECTOR, TYPE_DIFFERENCING, TYPE_DYNAMIC,
    TYPE_FIXED,
};
pub use writer::{VpcWriter, VpcWriterOptions};

/// The dynamic header's cookie.
pub const DYN_COOKIE: &[u8; 8] = b"cxsparse";
/// The dynamic header's size.
pub const DYN_HEADER: u64 = 1024;
/// A block table entry for a block that is not allocated.
pub const UNALLOCATED: u32 = 0xffff_ffff;
const MAX_BLOCK_SIZE: u64 = 256 << 20;

/// The disk type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VpcKind {
    /// Data then footer.
    Fixed,
    /// Blocks allocated on first write.
    Dynamic,
}

/// Whether a file whose first bytes are `head` and last 512 bytes are `tail` is a VHD:
/// a dynamic disk's footer copy at offset 0, or a fixed disk's valid footer at the end.
pub fn probe(head: &[u8], tail: &[u8]) -> bool {
    if head.starts_with(COOKIE) {
        return true;
    }
    tail.len() == FOOTER as usize
        && tail.starts_with(COOKIE)
        && footer_checksum_ok(tail)
        && be32(tail, 60) == TYPE_FIXED
}

/// An open VHD image.
pub struct VpcDisk {
    storage: Box<dyn Storage>,
    path: String,
    kind: VpcKind,
    size: u64,
    file_len: u64,
    /// Dynamic disks: block size, bitmap bytes, table.
    block_size: u64,
    bitmap_size: u64,
    bat: Vec<u32>,
    bat_offset: u64,
    /// The footer copies at the start and the end differ (dynamic disks).
    footer_mismatch: bool,
}

impl VpcDisk {
    /// Opens a VHD image. Only read-only access is supported.
    pub fn open(storage: Box<dyn Storage>, path: &str, read_only: bool) -> Result<Self> {
        if !read_only {
            return Err(read_only_format(path, "vpc"));
        }
        let file_len = storage.len().map_err(|e| io(path, e))?;
        if file_len < FOOTER {
            return Err(invalid(
                path,
                format!("file too short for a VHD footer ({file_len} bytes)"),
            ));
        }
        let mut head = vec![0u8; FOOTER as usize];
        storage.read_at(&mut head, 0).map_err(|e| io(path, e))?;
        let mut tail = vec![0u8; FOOTER as usize];
        storage
            .read_at(&mut tail, file_len - FOOTER)
            .map_err(|e| io(path, e))?;
        let (footer, at_start) = if head.starts_with(COOKIE) {
            (&head, true)
        } else if tail.starts_with(COOKIE) {
            (&tail, false)
        } else {
            return Err(invalid(path, "no VHD footer ('conectix') found"));
        };
        if !footer_checksum_ok(footer) {
            return Err(invalid(path, "VHD footer checksum is wrong"));
        }
        let size = virtual_size(footer);
        if size > 1 << 60 {
            return Err(invalid(path, format!("virtual size {size} is absurd")));
        }
        let mut d = VpcDisk {
            storage,
            path: path.into(),
            kind: VpcKind::Fixed,
            size,
            file_len,
            block_size: 0,
            bitmap_size: 0,
            bat: Vec::new(),
            bat_offset: 0,
            footer_mismatch: false,
        };
        match be32(footer, 60) {
            TYPE_FIXED => {
                if at_start {
                    return Err(invalid(path, "fixed VHD with a footer at offset 0"));
                }
                if size > file_len - FOOTER {
                    return Err(invalid(
                        path,
                        format!(
                            "fixed VHD of {size} bytes in a file of {file_len} bytes \
                             (truncated?)"
                        ),
                    ));
                }
            }
            TYPE_DYNAMIC => {
                if !at_start {
                    return Err(invalid(
                        path,
                        "dynamic VHD without a footer copy at offset 0",
                    ));
                }
                d.kind = VpcKind::Dynamic;
                d.footer_mismatch = head != tail;
                d.open_dynamic(be64(footer, 16))?;
            }
            TYPE_DIFFERENCING => {
                return Err(DiskError::UnsupportedImage {
                    path: path.into(),
                    reason: "VHD differencing images".into(),
                })
            }
            t => return Err(invalid(path, format!("unknown VHD disk type {t}"))),
        }
        Ok(d)
    }

    fn open_dynamic(&mut self, dyn_offset: u64) -> Result<()> {
        let path = self.path.clone();
        let path = path.as_str();
        if dyn_offset < FOOTER
            || dyn_offset
                .checked_add(DYN_HEADER)
                .is_none_or(|e| e > self.file_len)
        {
            return Err(invalid(
                path,
                format!("dynamic header offset {dyn_offset:#x} is outside the file"),
            ));
        }
        let mut h = vec![0u8; DYN_HEADER as usize];
        self.storage
            .read_at(&mut h, dyn_offset)
            .map_err(|e| io(path, e))?;
        if !h.starts_with(DYN_COOKIE) {
            return Err(invalid(
                path,
                "no dynamic header ('cxsparse') where the footer says",
            ));
        }
        if be32(&h, 36) != checksum(&h, 36) {
            return Err(invalid(path, "VHD dynamic header checksum is wrong"));
        }
        let bat_offset = be64(&h, 16);
        let entries = u64::from(be32(&h, 28));
        let block_size = u64::from(be32(&h, 32));
        if !block_size.is_power_of_two() || !(SECTOR..=MAX_BLOCK_SIZE).contains(&block_size) {
            return Err(invalid(
                path,
                format!("block size {block_size} is not a power of two from 512 to 256 MiB"),
            ));
        }
        if entries * block_size < self.size {
            return Err(invalid(
                path,
                format!(
                    "virtual size {} does not fit in {entries} blocks of {block_size} bytes",
                    self.size
                ),
            ));
        }
        if bat_offset < FOOTER {
            return Err(invalid(
                path,
                "block allocation table overlaps the footer copy",
            ));
        }
        let raw = read_table(
            self.storage.as_ref(),
            path,
            "block allocation table",
            bat_offset,
            entries,
            4,
            self.file_len,
        )?;
        self.bat = raw.chunks_exact(4).map(|c| be32(c, 0)).collect();
        self.bat_offset = bat_offset;
        self.block_size = block_size;
        self.bitmap_size = (block_size / SECTOR).div_ceil(8).next_multiple_of(SECTOR);
        Ok(())
    }

    /// Fixed or dynamic.
    pub fn kind(&self) -> VpcKind {
        self.kind
    }

    /// The block size of a dynamic disk (`None` for fixed disks).
    pub fn block_size(&self) -> Option<u64> {
        (self.kind == VpcKind::Dynamic).then_some(self.block_size)
    }

    /// Where block `i` (bitmap first) starts in the file, or `None` if unallocated.
    fn block_start(&self, i: u64) -> Result<Option<u64>> {
        let e = self.bat.get(i as usize).copied().unwrap_or(UNALLOCATED);
        if e == UNALLOCATED {
            return Ok(None);
        }
        let start = u64::from(e) * SECTOR;
        let end = start + self.bitmap_size + self.block_size;
        if start < FOOTER || end > self.file_len {
            return Err(invalid(
                &self.path,
                format!("block {i} (at {start:#x}) lies outside the file"),
            ));
        }
        Ok(Some(start))
    }

    /// The run of sectors sharing one bitmap bit, starting at `offset` (inside one
    /// allocated block starting at `start`), at most `len` bytes: (written, length).
    fn bitmap_run(&self, start: u64, offset: u64, len: u64) -> Result<(bool, u64)> {
        let within = offset % self.block_size;
        let first = within / SECTOR;
        let last = (within + len - 1) / SECTOR;
        let lo = (first / 8) as usize;
        let hi = (last / 8) as usize;
        let mut bits = vec![0u8; hi - lo + 1];
        self.storage
            .read_at(&mut bits, start + lo as u64)
            .map_err(|e| io(&self.path, e))?;
        let bit = |s: u64| bits[(s / 8) as usize - lo] & (0x80 >> (s % 8)) != 0;
        let set = bit(first);
        let mut s = first + 1;
        while s <= last && bit(s) == set {
            s += 1;
        }
        let run_end = (s * SECTOR).min(within + len);
        Ok((set, run_end - within))
    }

    /// Structural check: table entries inside the file, past the table, not
    /// overlapping one another; footer copies equal.
    pub fn check(&self) -> StructureReport {
        let mut r = StructureReport::default();
        if self.kind == VpcKind::Fixed {
            r.image_end_offset = self.file_len;
            return r;
        }
        r.total_blocks = self.size.div_ceil(self.block_size);
        let bat_end = self.bat_offset + 4 * self.bat.len() as u64;
        r.image_end_offset = bat_end;
        let span = self.bitmap_size + self.block_size;
        let mut starts = Vec::new();
        for i in 0..self.bat.len() as u64 {
            match self.block_start(i) {
                Err(e) => {
                    r.allocated_blocks += 1;
                    r.error(|| e.to_string());
                }
                Ok(Some(s)) => {
                    r.allocated_blocks += 1;
                    if s < bat_end && s + span > self.bat_offset {
                        r.error(|| format!("block {i} overlaps the block allocation table"));
                    }
                    starts.push((s, i));
                    r.image_end_offset = r.image_end_offset.max(s + span);
                }
                Ok(None) => {}
            }
        }
        starts.sort_unstable();
        for w in starts.windows(2) {
            if w[0].0 + span > w[1].0 {
                let (a, b) = (w[0].1, w[1].1);
                r.error(|| format!("blocks {a} and {b} overlap in the file"));
            }
        }
        if self.footer_mismatch {
            r.error(|| {
                "the footer at the end of the file differs from its copy at offset 0".into()
            });
        }
        r
    }
}

impl Disk for VpcDisk {
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
            let e = self.locate(pos, (buf.len() - done) as u64)?;
            let out = &mut buf[done..done + e.len as usize];
            match e.offset {
                Some(at) if e.data => self
                    .storage
                    .read_at(out, at)
                    .map_err(|err| io(&self.path, err))?,
                _ => out.fill(0),
            }
            done += e.len as usize;
        }
        Ok(())
    }

    crate::disk::read_only_disk!();

    fn format(&self) -> &'static str {
        "vpc"
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
        let mut e = self.locate(offset, len)?;
        narrow_to_host(self.storage.as_ref(), &mut e)?;
        Ok(e)
    }
}

impl VpcDisk {
    /// Where `offset..offset + len` starts to be stored: one extent, at most up to the
    /// end of its block and of its run of sector bitmap bits.
    fn locate(&self, offset: u64, len: u64) -> Result<Extent> {
        check_range(offset, len, self.size)?;
        let mut e = Extent {
            len,
            data: true,
            zero: false,
            present: true,
            depth: 0,
            offset: Some(offset),
            file: self.path.clone(),
        };
        if self.kind == VpcKind::Fixed || len == 0 {
            return Ok(e);
        }
        let i = offset / self.block_size;
        let within = offset % self.block_size;
        e.len = (self.block_size - within).min(len);
        match self.block_start(i)? {
            None => {
                e.data = false;
                e.zero = true;
                e.present = false;
                e.offset = None;
            }
            Some(start) => {
                let (written, n) = self.bitmap_run(start, offset, e.len)?;
                e.len = n;
                if written {
                    e.offset = Some(start + self.bitmap_size + within);
                } else {
                    e.data = false;
                    e.zero = true;
                    e.present = false;
                    e.offset = None;
                }
            }
        }
        Ok(e)
    }
}
