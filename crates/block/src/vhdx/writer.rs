//! Writing VHDX images (`convert -O vhdx`), dynamic (the default) or fixed, after
//! MS-VHDX v1.0.
//!
//! Layout (all on 1 MiB boundaries): the header section (file type identifier, two
//! headers with sequence numbers 1 and 2 and no pending log, two identical region
//! tables), an empty 1 MiB log at 1 MiB, the metadata region at 2 MiB (1 MiB), the BAT
//! at 3 MiB (as long as it needs, in whole MiB), then the payload blocks in the order
//! they were first written. Zero blocks of a dynamic disk stay NOT_PRESENT; sector
//! bitmap entries are NOT_PRESENT (no parent). A fixed disk (leave-blocks-allocated)
//! has every block FULLY_PRESENT from the start, in order; blocks not written are holes
//! in the file.
//!
//! The block size defaults to qemu-img's choice by disk size (8 MiB up to 1 GiB, 16 MiB
//! up to 100 GiB, 32 MiB up to 32 TiB, 64 MiB above); sectors are 512 bytes logical,
//! 4096 physical, as Hyper-V makes them.

use super::bat::{self, FULLY_PRESENT};
use super::header::{
    crc32c, Guid, ALIGN, BAT_REGION, HEADER_OFFSETS, HEADER_SECTION, HEADER_SIZE, METADATA_REGION,
    REGION_OFFSETS, REGION_TABLE_SIZE, SIGNATURE,
};
use super::metadata::{
    FILE_PARAMETERS, LOGICAL_SECTOR, MAX_BLOCK, MAX_DISK_SIZE, MIN_BLOCK, PAGE83, PHYSICAL_SECTOR,
    TABLE_SIZE, VIRTUAL_DISK_SIZE,
};
use crate::disk::{check_range, Result};
use crate::storage::Storage;
use crate::structure::{invalid, io};
use crate::writer::{random_guid, ImageWriter};
use std::sync::Mutex;

/// Where the (empty) log is, and its length.
pub const LOG_OFFSET: u64 = HEADER_SECTION;
/// The log's length.
pub const LOG_LENGTH: u64 = 1 << 20;
const METADATA_OFFSET: u64 = LOG_OFFSET + LOG_LENGTH;
const METADATA_LENGTH: u64 = 1 << 20;
const BAT_OFFSET: u64 = METADATA_OFFSET + METADATA_LENGTH;
const LOGICAL: u64 = 512;
const PHYSICAL: u64 = 4096;

/// How to write a VHDX.
#[derive(Debug, Clone, Copy, Default)]
pub struct VhdxWriterOptions {
    /// A fixed disk (`subformat=fixed`): every block allocated up front.
    pub fixed: bool,
    /// The payload block size; `None` for qemu-img's default by disk size.
    pub block_size: Option<u64>,
}

/// qemu-img's default block size for a disk of `size` bytes.
pub fn default_block_size(size: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    match size {
        s if s > 32 << 40 => 64 * MIB,
        s if s > 100 << 30 => 32 * MIB,
        s if s > 1 << 30 => 16 * MIB,
        _ => 8 * MIB,
    }
}

struct State {
    /// The raw BAT (payload and sector bitmap entries).
    bat: Vec<u64>,
    /// Where the next payload block goes.
    next: u64,
}

/// A VHDX being written.
pub struct VhdxWriter {
    storage: Box<dyn Storage>,
    path: String,
    size: u64,
    block_size: u64,
    chunk_ratio: u64,
    state: Mutex<State>,
}

fn put_guid(b: &mut [u8], at: usize, g: &Guid) {
    b[at..at + 16].copy_from_slice(g);
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Stores the CRC-32C of `b` (with the field zeroed) in its checksum field at 4.
fn seal(b: &mut [u8]) {
    b[4..8].fill(0);
    let c = crc32c(b);
    put32(b, 4, c);
}

/// The file type identifier: signature and creator (UTF-16LE).
fn identifier() -> Vec<u8> {
    let mut b = vec![0u8; 8 + 512];
    b[..8].copy_from_slice(SIGNATURE);
    let creator = concat!("hako ", env!("CARGO_PKG_VERSION"));
    for (i, u) in creator.encode_utf16().take(255).enumerate() {
        b[8 + 2 * i..10 + 2 * i].copy_from_slice(&u.to_le_bytes());
    }
    b
}

/// A header with sequence number `seq` and no pending log.
pub fn header(seq: u64, file_write: &Guid, data_write: &Guid) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_SIZE];
    h[..4].copy_from_slice(b"head");
    put64(&mut h, 8, seq);
    put_guid(&mut h, 16, file_write);
    put_guid(&mut h, 32, data_write);
    // LogGuid (48) zero: nothing to replay; LogVersion (64) 0.
    h[66..68].copy_from_slice(&1u16.to_le_bytes());
    put32(&mut h, 68, LOG_LENGTH as u32);
    put64(&mut h, 72, LOG_OFFSET);
    seal(&mut h);
    h
}

fn region_table(bat_length: u64) -> Vec<u8> {
    let mut r = vec![0u8; REGION_TABLE_SIZE];
    r[..4].copy_from_slice(b"regi");
    put32(&mut r, 8, 2);
    for (i, (id, off, len)) in [
        (BAT_REGION, BAT_OFFSET, bat_length),
        (METADATA_REGION, METADATA_OFFSET, METADATA_LENGTH),
    ]
    .iter()
    .enumerate()
    {
        let e = 16 + 32 * i;
        put_guid(&mut r, e, id);
        put64(&mut r, e + 16, *off);
        put32(&mut r, e + 24, *len as u32);
        put32(&mut r, e + 28, 1); // required
    }
    seal(&mut r);
    r
}

fn metadata(size: u64, block_size: u64, fixed: bool) -> Vec<u8> {
    let t = TABLE_SIZE as usize;
    let mut m = vec![0u8; t + 64];
    m[..8].copy_from_slice(b"metadata");
    // (item, offset after the table, length, flags: 2 virtual disk, 4 required)
    let items: [(Guid, usize, u32, u32); 5] = [
        (FILE_PARAMETERS, 0, 8, 4),
        (VIRTUAL_DISK_SIZE, 8, 8, 6),
        (PAGE83, 16, 16, 6),
        (LOGICAL_SECTOR, 32, 4, 6),
        (PHYSICAL_SECTOR, 36, 4, 6),
    ];
    m[10..12].copy_from_slice(&(items.len() as u16).to_le_bytes());
    for (i, (id, off, len, flags)) in items.iter().enumerate() {
        let e = 32 + 32 * i;
        put_guid(&mut m, e, id);
        put32(&mut m, e + 16, (t + off) as u32);
        put32(&mut m, e + 20, *len);
        put32(&mut m, e + 24, *flags);
    }
    put32(&mut m, t, block_size as u32);
    put32(&mut m, t + 4, u32::from(fixed));
    put64(&mut m, t + 8, size);
    put_guid(&mut m, t + 16, &random_guid());
    put32(&mut m, t + 32, LOGICAL as u32);
    put32(&mut m, t + 36, PHYSICAL as u32);
    m
}

impl VhdxWriter {
    /// Starts a VHDX of `size` bytes (rounded up to 512-byte sectors) on empty
    /// `storage`.
    pub fn create(
        storage: Box<dyn Storage>,
        path: &str,
        size: u64,
        opts: VhdxWriterOptions,
    ) -> Result<Self> {
        let size = size.div_ceil(LOGICAL) * LOGICAL;
        if size > MAX_DISK_SIZE {
            return Err(invalid(
                path,
                format!("size {size} is too large for a VHDX (at most 64 TiB)"),
            ));
        }
        let block_size = opts.block_size.unwrap_or_else(|| default_block_size(size));
        if !block_size.is_power_of_two()
            || !(u64::from(MIN_BLOCK)..=u64::from(MAX_BLOCK)).contains(&block_size)
        {
            return Err(invalid(
                path,
                format!("VHDX block size {block_size} is not a power of two from 1 MiB to 256 MiB"),
            ));
        }
        let chunk_ratio = bat::chunk_ratio(LOGICAL, block_size);
        let blocks = size.div_ceil(block_size);
        let entries = bat::table_entries(blocks, chunk_ratio);
        if entries * 8 > bat::MAX_BAT_BYTES {
            return Err(invalid(
                path,
                format!(
                    "a VHDX of {size} bytes in {block_size}-byte blocks needs a BAT larger \
                     than {} MiB; use a larger block_size",
                    bat::MAX_BAT_BYTES >> 20
                ),
            ));
        }
        let bat_length = (entries * 8).next_multiple_of(ALIGN).max(ALIGN);
        let put = |b: &[u8], at: u64| storage.write_at(b, at).map_err(|e| io(path, e));
        put(&identifier(), 0)?;
        let (fw, dw) = (random_guid(), random_guid());
        for (seq, &at) in (1..).zip(&HEADER_OFFSETS) {
            put(&header(seq, &fw, &dw), at)?;
        }
        let regions = region_table(bat_length);
        for &at in &REGION_OFFSETS {
            put(&regions, at)?;
        }
        put(&metadata(size, block_size, opts.fixed), METADATA_OFFSET)?;
        let mut st = State {
            bat: vec![0; entries as usize],
            next: BAT_OFFSET + bat_length,
        };
        if opts.fixed {
            for i in 0..blocks {
                st.bat[bat::entry_index(i, chunk_ratio) as usize] = st.next | FULLY_PRESENT;
                st.next += block_size;
            }
        }
        storage.set_len(st.next).map_err(|e| io(path, e))?;
        Ok(VhdxWriter {
            storage,
            path: path.into(),
            size,
            block_size,
            chunk_ratio,
            state: Mutex::new(st),
        })
    }

    /// The payload block size.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where payload block `i` is in the file, allocated at the end on first use.
    fn block(&self, i: u64) -> u64 {
        let mut st = self.lock();
        let at = bat::entry_index(i, self.chunk_ratio) as usize;
        if st.bat[at] & 7 == FULLY_PRESENT {
            return st.bat[at] & !(ALIGN - 1);
        }
        let off = st.next;
        st.bat[at] = off | FULLY_PRESENT;
        st.next += self.block_size;
        off
    }
}

impl ImageWriter for VhdxWriter {
    fn size(&self) -> u64 {
        self.size
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        check_range(offset, buf.len() as u64, self.size)?;
        let bs = self.block_size;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let within = pos % bs;
            let n = ((bs - within) as usize).min(buf.len() - done);
            let at = self.block(pos / bs) + within;
            self.storage
                .write_at(&buf[done..done + n], at)
                .map_err(|e| io(&self.path, e))?;
            done += n;
        }
        Ok(())
    }

    fn finish(&self) -> Result<()> {
        let st = self.lock();
        let table: Vec<u8> = st.bat.iter().flat_map(|e| e.to_le_bytes()).collect();
        let e = |err| io(&self.path, err);
        self.storage.write_at(&table, BAT_OFFSET).map_err(e)?;
        // Whole blocks lie inside the file, also a last one written only in part.
        if self.storage.len().map_err(e)? < st.next {
            self.storage.set_len(st.next).map_err(e)?;
        }
        self.storage.sync().map_err(e)
    }
}
