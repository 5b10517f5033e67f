//! VMware VMDK images, read-only: single-file sparse extents, i.e. `monolithicSparse`
//! and `streamOptimized` (deflate-compressed grains, what OVA exports carry, with the
//! grain directory either up front or after the data, in a footer).
//!
//! A sparse extent maps the disk in grains (64 KiB usually) through two levels: the
//! grain directory (one `u32` sector offset per grain table) and grain tables (one
//! `u32` sector offset per grain; 0 never written, 1 zeroed: both read as zeroes).
//! A compressed grain starts with its LBA (`u64`, sectors) and compressed size (`u32`),
//! followed by zlib data. The embedded text descriptor is checked for a parent
//! (differencing disks, refused) and for extents in other files (refused in a sparse
//! file). Descriptor files whose extents are separate files (flat or sparse) open
//! through [`open_vmdk`], under an [`ExtentPaths`] policy.

pub mod descriptor;
mod extents;
pub mod header;
mod stream_writer;

pub use extents::{open_vmdk, ExtentPaths, VmdkFile};
pub use stream_writer::StreamWriter;

use crate::disk::{check_range, BlockStatus, Disk, DiskError, Extent, Result};
use crate::storage::Storage;
use crate::structure::{invalid, io, le32, le64, narrow_to_host, read_table, StructureReport};
use descriptor::{parse_descriptor, Descriptor, ExtentKind};
use header::{SparseHeader, GD_AT_END, MAX_DESCRIPTOR};
use std::io::Read;
use std::sync::{Mutex, MutexGuard};

const SECTOR: u64 = 512;
/// A text descriptor file starts with this.
pub const DESCRIPTOR_FILE: &[u8] = b"# Disk DescriptorFile";

/// Whether the first bytes of a file are a VMDK sparse header or a text descriptor.
pub fn probe(head: &[u8]) -> bool {
    (head.len() >= 4 && le32(head, 0) == header::MAGIC) || head.starts_with(DESCRIPTOR_FILE)
}

/// Where one grain is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grain {
    /// Never written, or zeroed: reads as zeroes.
    Zero { present: bool },
    /// Stored as is at this byte offset.
    Data(u64),
    /// Compressed, its header at this byte offset.
    Compressed(u64),
}

/// An open VMDK image.
pub struct VmdkDisk {
    storage: Box<dyn Storage>,
    path: String,
    h: SparseHeader,
    desc: Descriptor,
    file_len: u64,
    gd: Vec<u32>,
    /// The last grain table read: (directory index, entries).
    gt: Mutex<Option<(u64, Vec<u32>)>>,
    /// The last grain decompressed: (grain index, data).
    zcache: Mutex<Option<(u64, Vec<u8>)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl VmdkDisk {
    /// Opens a VMDK sparse extent file. Only read-only access is supported.
    pub fn open(storage: Box<dyn Storage>, path: &str, read_only: bool) -> Result<Self> {
        if !read_only {
            return Err(crate::structure::read_only_format(path, "vmdk"));
        }
        let file_len = storage.len().map_err(|e| io(path, e))?;
        let mut b = vec![0u8; 512];
        storage.read_at(&mut b, 0).map_err(|e| io(path, e))?;
        if b.starts_with(DESCRIPTOR_FILE) {
            return Err(DiskError::UnsupportedImage {
                path: path.into(),
                reason: "a VMDK descriptor file where a sparse extent was expected (descriptor \
                         files open by path, through block::open)"
                    .into(),
            });
        }
        if file_len < 512 {
            return Err(invalid(
                path,
                format!("file too short for a VMDK header ({file_len} bytes)"),
            ));
        }
        let mut h = SparseHeader::parse(&b, path)?;
        if h.gd_offset == GD_AT_END {
            // streamOptimized with the directory after the data: the footer header
            // (second to last sector, before the end-of-stream marker) has it.
            if file_len < 1536 {
                return Err(invalid(path, "stream without a footer (truncated?)"));
            }
            storage
                .read_at(&mut b, file_len - 1024)
                .map_err(|e| io(path, e))?;
            let f = SparseHeader::parse(&b, path).map_err(|_| {
                invalid(path, "no valid footer header before the end of the stream")
            })?;
            if f.gd_offset == GD_AT_END
                || (f.capacity, f.grain_sectors, f.gtes_per_gt)
                    != (h.capacity, h.grain_sectors, h.gtes_per_gt)
            {
                return Err(invalid(path, "the footer header does not match the header"));
            }
            h.gd_offset = f.gd_offset;
        }
        let mut desc = Descriptor::default();
        if h.descriptor_size > 0 {
            let (off, len) = (
                h.descriptor_offset.checked_mul(SECTOR),
                h.descriptor_size.checked_mul(SECTOR),
            );
            match (off, len) {
                (Some(off), Some(len))
                    if len <= MAX_DESCRIPTOR
                        && off.checked_add(len).is_some_and(|e| e <= file_len) =>
                {
                    let mut t = vec![0u8; len as usize];
                    storage.read_at(&mut t, off).map_err(|e| io(path, e))?;
                    desc = parse_descriptor(&t, path)?;
                    if desc.extents.len() > 1
                        || desc.extents.iter().any(|e| e.kind != ExtentKind::Sparse)
                    {
                        return Err(DiskError::UnsupportedImage {
                            path: path.into(),
                            reason: "a sparse VMDK file whose embedded descriptor names \
                                     other extents"
                                .into(),
                        });
                    }
                }
                _ => return Err(invalid(path, "embedded descriptor lies outside the file")),
            }
        }
        let gd_off = h
            .gd_offset
            .checked_mul(SECTOR)
            .filter(|&o| o >= SECTOR)
            .ok_or_else(|| invalid(path, "grain directory offset is invalid"))?;
        let raw = read_table(
            storage.as_ref(),
            path,
            "grain directory",
            gd_off,
            h.gd_entries(),
            4,
            file_len,
        )?;
        let gd = raw.chunks_exact(4).map(|c| le32(c, 0)).collect();
        Ok(VmdkDisk {
            storage,
            path: path.into(),
            h,
            desc,
            file_len,
            gd,
            gt: Mutex::new(None),
            zcache: Mutex::new(None),
        })
    }

    /// The descriptor's `createType` (empty if the image has no descriptor).
    pub fn create_type(&self) -> &str {
        &self.desc.create_type
    }

    /// Bytes per grain (qemu-img reports it as the cluster size).
    pub fn grain_size(&self) -> u64 {
        self.h.grain_bytes()
    }

    /// The grain directory entry covering grain `gi` (0: no grain table).
    fn gd_entry(&self, gi: u64) -> u32 {
        let gdi = gi / self.h.gtes_per_gt;
        self.gd.get(gdi as usize).copied().unwrap_or(0)
    }

    fn gt_entry(&self, gi: u64) -> Result<u32> {
        let gdi = gi / self.h.gtes_per_gt;
        let k = (gi % self.h.gtes_per_gt) as usize;
        let Some(&gt_sector) = self.gd.get(gdi as usize) else {
            return Ok(0);
        };
        if gt_sector == 0 {
            return Ok(0);
        }
        let mut cache = lock(&self.gt);
        if let Some((i, t)) = cache.as_ref() {
            if *i == gdi {
                return Ok(t[k]);
            }
        }
        let raw = read_table(
            self.storage.as_ref(),
            &self.path,
            &format!("grain table {gdi}"),
            u64::from(gt_sector) * SECTOR,
            self.h.gtes_per_gt,
            4,
            self.file_len,
        )?;
        let t: Vec<u32> = raw.chunks_exact(4).map(|c| le32(c, 0)).collect();
        let e = t[k];
        *cache = Some((gdi, t));
        Ok(e)
    }

    fn grain(&self, gi: u64) -> Result<Grain> {
        Ok(match self.gt_entry(gi)? {
            0 => Grain::Zero { present: false },
            1 => Grain::Zero { present: true },
            e => {
                let off = u64::from(e) * SECTOR;
                if off >= self.file_len {
                    return Err(invalid(
                        &self.path,
                        format!("grain {gi} (at {off:#x}) is past the end of the file"),
                    ));
                }
                if self.h.compressed() {
                    Grain::Compressed(off)
                } else {
                    Grain::Data(off)
                }
            }
        })
    }

    /// Decompresses grain `gi` whose header is at `off` into `out` (a grain's bytes).
    fn inflate(&self, gi: u64, off: u64) -> Result<Vec<u8>> {
        let gb = self.h.grain_bytes();
        let mut hdr = [0u8; 12];
        self.storage
            .read_at(&mut hdr, off)
            .map_err(|e| io(&self.path, e))?;
        let (lba, size) = (le64(&hdr, 0), u64::from(le32(&hdr, 8)));
        if lba != gi * self.h.grain_sectors {
            return Err(invalid(
                &self.path,
                format!("compressed grain at {off:#x} is for sector {lba}, not grain {gi}"),
            ));
        }
        if size == 0 || size > 2 * gb + 4096 || off + 12 + size > self.file_len {
            return Err(invalid(
                &self.path,
                format!("compressed grain at {off:#x} has an invalid size {size}"),
            ));
        }
        let mut z = vec![0u8; size as usize];
        self.storage
            .read_at(&mut z, off + 12)
            .map_err(|e| io(&self.path, e))?;
        let mut out = Vec::with_capacity(gb as usize);
        flate2::read::ZlibDecoder::new(&z[..])
            .take(gb + 1)
            .read_to_end(&mut out)
            .map_err(|e| {
                invalid(
                    &self.path,
                    format!("compressed grain at {off:#x} is corrupt: {e}"),
                )
            })?;
        if out.len() as u64 > gb {
            return Err(invalid(
                &self.path,
                format!("compressed grain at {off:#x} inflates past the grain size"),
            ));
        }
        out.resize(gb as usize, 0);
        Ok(out)
    }

    /// Structural check: grain tables and grains inside the file, compressed grain
    /// headers consistent.
    pub fn check(&self) -> StructureReport {
        let gs = self.h.grain_sectors;
        let grains = self.h.capacity.div_ceil(gs);
        let mut r = StructureReport {
            total_blocks: grains,
            image_end_offset: self.file_len,
            ..Default::default()
        };
        let per = self.h.gtes_per_gt;
        let tables = self.gd.iter().enumerate().filter(|(_, &e)| e != 0);
        for (gdi, _) in tables {
            let first = gdi as u64 * per;
            for gi in first..(first + per).min(grains) {
                match self.grain(gi) {
                    Err(e) => {
                        r.error(|| e.to_string());
                        if e.to_string().contains("grain table") {
                            break; // the whole table is unreadable
                        }
                    }
                    Ok(Grain::Zero { .. }) => {}
                    Ok(Grain::Data(off)) => {
                        r.allocated_blocks += 1;
                        if off + self.h.grain_bytes() > self.file_len {
                            r.error(|| {
                                format!("grain {gi} (at {off:#x}) runs past the end of the file")
                            });
                        }
                    }
                    Ok(Grain::Compressed(off)) => {
                        r.allocated_blocks += 1;
                        if let Err(e) = self.inflate(gi, off) {
                            r.error(|| e.to_string());
                        }
                    }
                }
            }
        }
        r
    }

    fn read_grain(&self, gi: u64, within: u64, out: &mut [u8]) -> Result<()> {
        match self.grain(gi)? {
            Grain::Zero { .. } => out.fill(0),
            Grain::Data(off) => {
                let at = off + within;
                if at + out.len() as u64 > self.file_len {
                    return Err(invalid(
                        &self.path,
                        format!("grain {gi} (at {off:#x}) runs past the end of the file"),
                    ));
                }
                self.storage
                    .read_at(out, at)
                    .map_err(|e| io(&self.path, e))?;
            }
            Grain::Compressed(off) => {
                let mut z = lock(&self.zcache);
                if z.as_ref().is_none_or(|(i, _)| *i != gi) {
                    *z = Some((gi, self.inflate(gi, off)?));
                }
                if let Some((_, data)) = z.as_ref() {
                    let w = within as usize;
                    out.copy_from_slice(&data[w..w + out.len()]);
                }
            }
        }
        Ok(())
    }
}

impl Disk for VmdkDisk {
    fn size(&self) -> u64 {
        self.h.capacity * SECTOR
    }

    fn read_only(&self) -> bool {
        true
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(offset, buf.len() as u64, self.size())?;
        let gb = self.h.grain_bytes();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (gi, within) = (pos / gb, pos % gb);
            let n = ((gb - within) as usize).min(buf.len() - done);
            self.read_grain(gi, within, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    crate::disk::read_only_disk!();

    fn format(&self) -> &'static str {
        "vmdk"
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<(BlockStatus, u64)> {
        let e = self.map_extent(offset, len)?;
        let s = if e.zero {
            BlockStatus::Zero
        } else {
            BlockStatus::Data
        };
        Ok((s, e.len))
    }

    fn map_extent(&self, offset: u64, len: u64) -> Result<Extent> {
        check_range(offset, len, self.size())?;
        let gb = self.h.grain_bytes();
        let (gi, within) = (offset / gb, offset % gb);
        let mut e = Extent {
            len: (gb - within).min(len),
            data: true,
            zero: false,
            present: true,
            depth: 0,
            offset: None,
            file: self.path.clone(),
        };
        if len == 0 {
            return Ok(e);
        }
        if self.gd_entry(gi) == 0 {
            // No grain table: the rest of its span is unallocated.
            let span = self.h.gtes_per_gt * gb;
            e.len = (span - offset % span).min(len);
            e.data = false;
            e.zero = true;
            e.present = false;
            return Ok(e);
        }
        match self.grain(gi)? {
            Grain::Zero { present } => {
                e.data = false;
                e.zero = true;
                e.present = present;
            }
            Grain::Data(off) => {
                e.offset = Some(off + within);
                narrow_to_host(self.storage.as_ref(), &mut e)?;
            }
            Grain::Compressed(_) => {}
        }
        Ok(e)
    }
}
