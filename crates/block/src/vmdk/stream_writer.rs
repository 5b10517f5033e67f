//! Writing streamOptimized VMDK images (VMware's export format, what OVA files carry):
//! grains compressed one after another, then the grain tables, the grain directory and
//! a footer header pointing at it, then the end-of-stream marker. Written strictly in
//! order, so the output can be produced in one pass; all-zero grains are left out.

use super::header::MAGIC;
use crate::disk::Result;
use crate::storage::Storage;
use crate::structure::{invalid, io};
use std::io::Write;

const SECTOR: u64 = 512;
/// Grain size written: 64 KiB, as VMware and qemu-img.
pub const GRAIN_SECTORS: u64 = 128;
const GTES: u64 = 512;
const DESCRIPTOR_SECTORS: u64 = 2;
const FLAGS: u32 = 1 | (1 << 16) | (1 << 17); // newline test, compressed, markers
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;

/// A streamOptimized image being written.
pub struct StreamWriter {
    storage: Box<dyn Storage>,
    path: String,
    capacity: u64,
    /// Where the next structure goes (bytes).
    pos: u64,
    /// Grain table entries for the whole disk (sector of each grain, 0 if none).
    gt: Vec<u32>,
    /// No grain below this index may be written any more.
    next: u64,
}

fn header(capacity: u64, gd_offset: u64) -> Vec<u8> {
    let mut h = vec![0u8; SECTOR as usize];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&3u32.to_le_bytes());
    h[8..12].copy_from_slice(&FLAGS.to_le_bytes());
    h[12..20].copy_from_slice(&capacity.to_le_bytes());
    h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
    h[28..36].copy_from_slice(&1u64.to_le_bytes());
    h[36..44].copy_from_slice(&DESCRIPTOR_SECTORS.to_le_bytes());
    h[44..48].copy_from_slice(&(GTES as u32).to_le_bytes());
    h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
    h[64..72].copy_from_slice(&(1 + DESCRIPTOR_SECTORS).to_le_bytes());
    h[73..77].copy_from_slice(b"\n \r\n");
    h[77..79].copy_from_slice(&1u16.to_le_bytes());
    h
}

fn marker(sectors: u64, kind: u32) -> Vec<u8> {
    let mut m = vec![0u8; SECTOR as usize];
    m[0..8].copy_from_slice(&sectors.to_le_bytes());
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

fn descriptor(capacity: u64, file_name: &str, cid: u32) -> Vec<u8> {
    // Geometry as VMware computes it for IDE disks: 16 heads, 63 sectors.
    let cylinders = (capacity / (16 * 63)).min(16383);
    let name = file_name.replace('"', "");
    let mut d = format!(
        "# Disk DescriptorFile\nversion=1\nCID={cid:08x}\nparentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\n# Extent description\n\
         RW {capacity} SPARSE \"{name}\"\n\n# The Disk Data Base\n#DDB\n\n\
         ddb.virtualHWVersion = \"4\"\nddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"16\"\nddb.geometry.sectors = \"63\"\n\
         ddb.adapterType = \"ide\"\n"
    )
    .into_bytes();
    d.resize((DESCRIPTOR_SECTORS * SECTOR) as usize, 0);
    d
}

impl StreamWriter {
    /// Starts an image of `size` bytes (rounded up to sectors) on empty `storage`;
    /// `file_name` is what the descriptor calls the file.
    pub fn create(
        storage: Box<dyn Storage>,
        path: &str,
        size: u64,
        file_name: &str,
    ) -> Result<Self> {
        let capacity = size.div_ceil(SECTOR);
        if capacity > (1 << 50) {
            return Err(invalid(
                path,
                format!("size {size} is too large for a VMDK"),
            ));
        }
        let grains = capacity.div_ceil(GRAIN_SECTORS);
        let n = usize::try_from(grains).map_err(|_| invalid(path, "too many grains"))?;
        let cid = (size as u32) ^ 0x5eed_cafe;
        let w = StreamWriter {
            storage,
            path: path.into(),
            capacity,
            pos: 0,
            gt: vec![0; n],
            next: 0,
        };
        w.put(0, &header(capacity, u64::MAX))?;
        w.put(SECTOR, &descriptor(capacity, file_name, cid))?;
        Ok(StreamWriter {
            pos: (1 + DESCRIPTOR_SECTORS) * SECTOR,
            ..w
        })
    }

    /// Bytes per grain.
    pub fn grain_bytes(&self) -> u64 {
        GRAIN_SECTORS * SECTOR
    }

    fn put(&self, at: u64, b: &[u8]) -> Result<()> {
        self.storage.write_at(b, at).map_err(|e| io(&self.path, e))
    }

    /// Appends `data` (at most one grain; a shorter last grain is padded with zeroes) as
    /// grain `index`. Grains must come in increasing order.
    pub fn write_grain(&mut self, index: u64, data: &[u8]) -> Result<()> {
        let gb = self.grain_bytes() as usize;
        if index < self.next || index as usize >= self.gt.len() || data.len() > gb {
            return Err(invalid(
                &self.path,
                format!("grain {index} written out of order or out of range"),
            ));
        }
        let mut e = flate2::write::ZlibEncoder::new(
            Vec::with_capacity(gb / 2),
            flate2::Compression::default(),
        );
        let pad = vec![0u8; gb - data.len()];
        let z = e
            .write_all(data)
            .and_then(|_| e.write_all(&pad))
            .and_then(|_| e.finish())
            .map_err(|err| io(&self.path, err))?;
        let mut rec = Vec::with_capacity(12 + z.len() + SECTOR as usize);
        rec.extend_from_slice(&(index * GRAIN_SECTORS).to_le_bytes());
        rec.extend_from_slice(&(z.len() as u32).to_le_bytes());
        rec.extend_from_slice(&z);
        rec.resize(rec.len().next_multiple_of(SECTOR as usize), 0);
        let sector = u32::try_from(self.pos / SECTOR)
            .map_err(|_| invalid(&self.path, "VMDK output past 2 TiB of compressed data"))?;
        self.put(self.pos, &rec)?;
        self.gt[index as usize] = sector;
        self.pos += rec.len() as u64;
        self.next = index + 1;
        Ok(())
    }

    /// Writes the grain tables, the directory, the footer and the end-of-stream
    /// marker, and syncs.
    pub fn finish(mut self) -> Result<()> {
        let tables = self.gt.len().div_ceil(GTES as usize);
        let mut gd = vec![0u32; tables];
        let gt = std::mem::take(&mut self.gt);
        for (t, entries) in gt.chunks(GTES as usize).enumerate() {
            if entries.iter().all(|&e| e == 0) {
                continue;
            }
            let mut b = vec![0u8; (GTES * 4) as usize];
            for (k, e) in entries.iter().enumerate() {
                b[4 * k..4 * k + 4].copy_from_slice(&e.to_le_bytes());
            }
            self.put(self.pos, &marker(GTES * 4 / SECTOR, MARKER_GT))?;
            gd[t] = u32::try_from(self.pos / SECTOR + 1)
                .map_err(|_| invalid(&self.path, "VMDK output too large"))?;
            self.put(self.pos + SECTOR, &b)?;
            self.pos += SECTOR + b.len() as u64;
        }
        let mut b: Vec<u8> = gd.iter().flat_map(|e| e.to_le_bytes()).collect();
        b.resize(
            b.len()
                .next_multiple_of(SECTOR as usize)
                .max(SECTOR as usize),
            0,
        );
        self.put(self.pos, &marker(b.len() as u64 / SECTOR, MARKER_GD))?;
        let gd_sector = self.pos / SECTOR + 1;
        self.put(self.pos + SECTOR, &b)?;
        self.pos += SECTOR + b.len() as u64;
        self.put(self.pos, &marker(1, MARKER_FOOTER))?;
        self.put(self.pos + SECTOR, &header(self.capacity, gd_sector))?;
        self.put(self.pos + 2 * SECTOR, &[0u8; SECTOR as usize])?;
        self.pos += 3 * SECTOR;
        self.storage.sync().map_err(|e| io(&self.path, e))
    }
}
