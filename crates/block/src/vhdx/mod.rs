//! Hyper-V VHDX images ("vhdx" in qemu-img), dynamic and fixed, after the MS-VHDX
//! specification v1.0: read here, written by [`writer`] (`convert -O vhdx`). All
//! fields are little-endian.
//!
//! - The first 1 MiB is the header section ([`header`]): the file type identifier
//!   `vhdxfile` at 0, two 4 KiB headers at 64 KiB and 128 KiB (CRC-32C checksummed;
//!   the valid one with the higher sequence number is active), two copies of the
//!   region table at 192 KiB and 256 KiB naming the BAT and metadata regions.
//! - The metadata region ([`metadata`]) gives the block size, whether blocks stay
//!   allocated (fixed disks) or come from a parent (differencing disks: refused), the
//!   virtual size and the sector sizes.
//! - The BAT ([`bat`]) maps payload blocks to 1 MiB-aligned file offsets, or says they
//!   read as zeroes.
//! - A log that still needs replaying ([`log`]) is applied in memory when the image is
//!   opened ([`replay`]; the file is not changed), or to the file by
//!   [`replay_in_place`] (`hako img check -r all`).

pub mod bat;
pub mod header;
pub mod log;
pub mod metadata;
pub mod replay;
pub mod writer;

use crate::disk::{check_range, BlockStatus, Disk, Extent, Result};
use crate::storage::Storage;
use crate::structure::{io, narrow_to_host, read_only_format, StructureReport};
use bat::{Bat, Block};
use header::HEADER_SECTION;
use metadata::Params;
pub use replay::{replay_in_place, LogOverlay};
pub use writer::{VhdxWriter, VhdxWriterOptions};

/// Whether a file whose first bytes are `head` is a VHDX.
pub fn probe(head: &[u8]) -> bool {
    head.starts_with(header::SIGNATURE)
}

/// The disk type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VhdxKind {
    /// Blocks allocated on first write.
    Dynamic,
    /// Blocks allocated when the image was made (leave-blocks-allocated).
    Fixed,
}

/// An open VHDX image.
pub struct VhdxDisk {
    storage: Box<dyn Storage>,
    path: String,
    params: Params,
    bat: Bat,
    file_len: u64,
    /// Structures other than payload blocks: (name, offset, length).
    spans: Vec<(&'static str, u64, u64)>,
    /// Log entries applied in memory at open.
    replayed: u32,
}

impl VhdxDisk {
    /// Opens a VHDX image. Only read-only access is supported.
    pub fn open(storage: Box<dyn Storage>, path: &str, read_only: bool) -> Result<Self> {
        if !read_only {
            return Err(read_only_format(path, "vhdx"));
        }
        let file_len = storage.len().map_err(|e| io(path, e))?;
        let h = header::read_header(storage.as_ref(), path, file_len)?;
        let (log_offset, log_length) = log::check_log(path, &h)?;
        // A pending log is applied in memory: everything below reads the file as it
        // will be once the log is replayed.
        let replay = log::read_log(storage.as_ref(), path, &h, file_len)?;
        let replayed = replay.as_ref().map_or(0, |r| r.entries);
        let storage: Box<dyn Storage> = match replay {
            Some(r) => Box::new(LogOverlay::new(storage, &r).map_err(|e| io(path, e))?),
            None => storage,
        };
        let s = storage.as_ref();
        let file_len = s.len().map_err(|e| io(path, e))?;
        let regions = header::read_regions(s, path)?;
        let mut spans = vec![("header section", 0, HEADER_SECTION)];
        if log_length > 0 {
            spans.push(("log", log_offset, log_length));
        }
        for r in &regions.all {
            let name = if *r == regions.bat {
                "BAT region"
            } else if *r == regions.metadata {
                "metadata region"
            } else {
                "region"
            };
            spans.push((name, r.offset, r.length));
        }
        header::check_overlaps(path, &spans)?;
        let params = metadata::read_params(s, path, regions.metadata, file_len)?;
        let bat = Bat::read(s, path, &params, regions.bat, file_len)?;
        Ok(VhdxDisk {
            storage,
            path: path.into(),
            params,
            bat,
            file_len,
            spans,
            replayed,
        })
    }

    /// Log entries replayed in memory when the image was opened (0: the log was
    /// empty). The file itself still holds them unapplied; [`replay_in_place`] writes
    /// them.
    pub fn replayed_log_entries(&self) -> u32 {
        self.replayed
    }

    /// Dynamic or fixed.
    pub fn kind(&self) -> VhdxKind {
        if self.params.leave_blocks_allocated {
            VhdxKind::Fixed
        } else {
            VhdxKind::Dynamic
        }
    }

    /// The payload block size.
    pub fn block_size(&self) -> u64 {
        self.params.block_size
    }

    /// The logical and physical sector sizes.
    pub fn sector_sizes(&self) -> (u64, u64) {
        (self.params.logical_sector, self.params.physical_sector)
    }

    /// The page 83 data (the disk's serial GUID, as stored).
    pub fn page83(&self) -> [u8; 16] {
        self.params.page83
    }

    /// Where `offset..offset + len` starts to be stored: one extent, at most up to the
    /// end of its block.
    fn locate(&self, offset: u64, len: u64) -> Result<Extent> {
        check_range(offset, len, self.params.size)?;
        let bs = self.params.block_size;
        let within = offset % bs;
        let mut e = Extent {
            len: (bs - within).min(len),
            data: false,
            zero: true,
            present: false,
            depth: 0,
            offset: None,
            file: self.path.clone(),
        };
        if len == 0 {
            return Ok(e);
        }
        match self.bat.block(&self.path, offset / bs)? {
            Block::Zero { present } => e.present = present,
            Block::Data(at) => {
                e.data = true;
                e.zero = false;
                e.present = true;
                e.offset = Some(at + within);
            }
        }
        Ok(e)
    }

    /// Structural check: every block entry valid, inside the file, clear of the
    /// header section, regions, log and other blocks.
    pub fn check(&self) -> StructureReport {
        let mut r = StructureReport {
            total_blocks: self.bat.data_blocks,
            ..Default::default()
        };
        r.image_end_offset = self
            .spans
            .iter()
            .map(|s| s.1.saturating_add(s.2).min(self.file_len))
            .max()
            .unwrap_or(0);
        let bs = self.params.block_size;
        let mut starts = Vec::new();
        for i in 0..self.bat.data_blocks {
            match self.bat.block(&self.path, i) {
                Err(e) => r.error(|| e.to_string()),
                Ok(Block::Zero { .. }) => {}
                Ok(Block::Data(at)) => {
                    r.allocated_blocks += 1;
                    let hit = |s: &&(&str, u64, u64)| at < s.1.saturating_add(s.2) && s.1 < at + bs;
                    if let Some(s) = self.spans.iter().find(hit) {
                        r.error(|| format!("VHDX block {i} (at {at:#x}) overlaps the {}", s.0));
                    }
                    starts.push((at, i));
                    r.image_end_offset = r.image_end_offset.max(at + self.bat.used(i));
                }
            }
        }
        starts.sort_unstable();
        for w in starts.windows(2) {
            if w[0].0 + bs > w[1].0 {
                let (a, b) = (w[0].1, w[1].1);
                r.error(|| format!("VHDX blocks {a} and {b} overlap in the file"));
            }
        }
        r
    }
}

impl Disk for VhdxDisk {
    fn size(&self) -> u64 {
        self.params.size
    }

    fn read_only(&self) -> bool {
        true
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(offset, buf.len() as u64, self.params.size)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let e = self.locate(pos, (buf.len() - done) as u64)?;
            let out = &mut buf[done..done + e.len as usize];
            match e.offset {
                Some(at) => self
                    .storage
                    .read_at(out, at)
                    .map_err(|err| io(&self.path, err))?,
                None => out.fill(0),
            }
            done += e.len as usize;
        }
        Ok(())
    }

    crate::disk::read_only_disk!();

    fn format(&self) -> &'static str {
        "vhdx"
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
        let mut e = self.locate(offset, len)?;
        narrow_to_host(self.storage.as_ref(), &mut e)?;
        Ok(e)
    }
}
