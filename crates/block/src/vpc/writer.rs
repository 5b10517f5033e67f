//! Writing VHD images (`convert -O vpc`), dynamic (the default) or fixed.
//!
//! - Size: as qemu-img and Virtual PC, the disk is rounded up to the smallest CHS
//!   geometry that covers it ([`footer::geometry_for`]), and the footer's current size
//!   is that geometry's size, so every reader (qemu-img, which uses the geometry for
//!   this creator, Hyper-V, which uses the current size, hako) sees the same disk.
//!   Above the largest geometry (about 127 GiB) and with `force_size` the size is kept
//!   exactly (in whole sectors) and the geometry is the maximum, which makes readers use
//!   the current size; `force_size` also writes creator `qem2`, as qemu-img does.
//! - Dynamic layout: the footer copy at 0, the dynamic header at 512, the block
//!   allocation table at 1536 (padded to whole sectors), then 2 MiB blocks in the
//!   order they were first written, each a 512-byte sector bitmap (all ones, as
//!   qemu-img writes it: parts of a block never written are holes in the file and read
//!   as zeroes) then the data, placed so the data is 4 KiB aligned; then the footer.
//!   Blocks never written stay unallocated.
//! - Fixed layout: the data, then the footer; zeroes stay holes in the file.

use super::footer::{self, FooterFields, FOOTER, MAX_WRITE_SIZE, SECTOR, TYPE_DYNAMIC, TYPE_FIXED};
use super::{DYN_COOKIE, DYN_HEADER, UNALLOCATED};
use crate::disk::{check_range, Result};
use crate::storage::Storage;
use crate::structure::{invalid, io};
use crate::writer::ImageWriter;
use std::sync::Mutex;

/// Block size of dynamic disks written: 2 MiB, as qemu-img and Hyper-V.
pub const BLOCK_SIZE: u64 = 2 << 20;
const BITMAP: u64 = (BLOCK_SIZE / SECTOR).div_ceil(8).next_multiple_of(SECTOR);
const BAT_OFFSET: u64 = FOOTER + DYN_HEADER;
const DATA_ALIGN: u64 = 4096;

/// How to write a VHD.
#[derive(Debug, Clone, Copy, Default)]
pub struct VpcWriterOptions {
    /// A fixed disk (`subformat=fixed`) rather than a dynamic one.
    pub fixed: bool,
    /// Keep the size exactly instead of rounding it up to a CHS geometry
    /// (`force_size=on`; creator `qem2`).
    pub force_size: bool,
}

/// Allocation state of a dynamic disk being written.
struct State {
    /// Sector of each block's bitmap, or [`UNALLOCATED`].
    bat: Vec<u32>,
    /// Where the next block's bitmap goes.
    next: u64,
    /// Where the footer goes: the end of the last block (or of the table).
    end: u64,
}

/// A VHD being written.
pub struct VpcWriter {
    storage: Box<dyn Storage>,
    path: String,
    size: u64,
    fixed: bool,
    footer: [u8; FOOTER as usize],
    state: Mutex<State>,
}

/// The first sector-aligned offset at or after `at` from which a bitmap puts the
/// block data after it on a [`DATA_ALIGN`] boundary.
fn block_start(at: u64) -> u64 {
    (at + BITMAP).next_multiple_of(DATA_ALIGN) - BITMAP
}

fn dynamic_header(entries: u32) -> [u8; DYN_HEADER as usize] {
    let mut h = [0u8; DYN_HEADER as usize];
    h[0..8].copy_from_slice(DYN_COOKIE);
    h[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
    h[16..24].copy_from_slice(&BAT_OFFSET.to_be_bytes());
    h[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    h[28..32].copy_from_slice(&entries.to_be_bytes());
    h[32..36].copy_from_slice(&(BLOCK_SIZE as u32).to_be_bytes());
    let sum = footer::checksum(&h, 36);
    h[36..40].copy_from_slice(&sum.to_be_bytes());
    h
}

impl VpcWriter {
    /// Starts a VHD of at least `size` bytes on empty `storage` (see the module docs
    /// for the size actually used: [`ImageWriter::size`]).
    pub fn create(
        storage: Box<dyn Storage>,
        path: &str,
        size: u64,
        opts: VpcWriterOptions,
    ) -> Result<Self> {
        if size > MAX_WRITE_SIZE {
            return Err(invalid(
                path,
                format!(
                    "size {size} is too large for a VHD (at most {} GiB)",
                    MAX_WRITE_SIZE >> 30
                ),
            ));
        }
        let (geometry, size) = if opts.force_size {
            footer::forced(size)
        } else {
            footer::geometry_for(size)
        };
        let mut fields = FooterFields {
            disk_type: TYPE_DYNAMIC,
            data_offset: FOOTER,
            size,
            geometry,
            creator: if opts.force_size { *b"qem2" } else { *b"hako" },
            timestamp: footer::timestamp_now(),
            unique_id: crate::writer::random_bytes(),
        };
        let put = |b: &[u8], at: u64| storage.write_at(b, at).map_err(|e| io(path, e));
        let entries = size.div_ceil(BLOCK_SIZE);
        let table_bytes = (entries * 4).next_multiple_of(SECTOR);
        let state = if opts.fixed {
            fields.disk_type = TYPE_FIXED;
            fields.data_offset = u64::MAX;
            storage.set_len(size + FOOTER).map_err(|e| io(path, e))?;
            put(&footer::build(&fields), size)?;
            State {
                bat: Vec::new(),
                next: 0,
                end: size,
            }
        } else {
            let n =
                u32::try_from(entries).map_err(|_| invalid(path, "too many blocks for a VHD"))?;
            put(&footer::build(&fields), 0)?;
            put(&dynamic_header(n), FOOTER)?;
            let table_end = BAT_OFFSET + table_bytes;
            put(&vec![0xff; table_bytes as usize], BAT_OFFSET)?;
            State {
                bat: vec![UNALLOCATED; n as usize],
                next: block_start(table_end),
                end: table_end,
            }
        };
        Ok(VpcWriter {
            footer: footer::build(&fields),
            storage,
            path: path.into(),
            size,
            fixed: opts.fixed,
            state: Mutex::new(state),
        })
    }

    fn put(&self, b: &[u8], at: u64) -> Result<()> {
        self.storage.write_at(b, at).map_err(|e| io(&self.path, e))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where block `i`'s data starts in the file, allocating the block (its bitmap
    /// written, all ones) on first use.
    fn block_data(&self, i: u64) -> Result<u64> {
        let mut st = self.lock();
        let e = st.bat[i as usize];
        if e != UNALLOCATED {
            return Ok(u64::from(e) * SECTOR + BITMAP);
        }
        let start = st.next;
        let sector = u32::try_from(start / SECTOR)
            .ok()
            .filter(|&s| s != UNALLOCATED)
            .ok_or_else(|| invalid(&self.path, "VHD file would pass 2 TiB"))?;
        self.put(&[0xff; BITMAP as usize], start)?;
        st.bat[i as usize] = sector;
        st.end = start + BITMAP + BLOCK_SIZE;
        st.next = block_start(st.end);
        Ok(start + BITMAP)
    }
}

impl ImageWriter for VpcWriter {
    fn size(&self) -> u64 {
        self.size
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        check_range(offset, buf.len() as u64, self.size)?;
        if self.fixed {
            return self.put(buf, offset);
        }
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let within = pos % BLOCK_SIZE;
            let n = ((BLOCK_SIZE - within) as usize).min(buf.len() - done);
            let at = self.block_data(pos / BLOCK_SIZE)?;
            self.put(&buf[done..done + n], at + within)?;
            done += n;
        }
        Ok(())
    }

    fn finish(&self) -> Result<()> {
        let st = self.lock();
        if !self.fixed {
            let table: Vec<u8> = st.bat.iter().flat_map(|e| e.to_be_bytes()).collect();
            self.put(&table, BAT_OFFSET)?;
            self.put(&self.footer, st.end)?;
            self.storage
                .set_len(st.end + FOOTER)
                .map_err(|e| io(&self.path, e))?;
        }
        self.storage.sync().map_err(|e| io(&self.path, e))
    }
}
