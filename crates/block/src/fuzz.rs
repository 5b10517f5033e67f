//! Entry points shared by the `cargo fuzz` targets (`fuzz/` at the repository root) and
//! the corpus regression tests: they must return, never panic, whatever `data` holds.

use crate::disk::Disk;
use crate::qcow2::Qcow2Disk;
use crate::storage::MemStorage;
use crate::vdi::VdiDisk;
use crate::vhdx::VhdxDisk;
use crate::vmdk::VmdkDisk;
use crate::vpc::VpcDisk;

/// How far an image may grow in memory while being fuzzed.
const GROWTH_LIMIT: u64 = 8 << 20;

/// Parses `data` as a qcow2 image and exercises it: header and table parsing, reads,
/// block status, the consistency check, then writes, discard, flush and check again on
/// a writable copy. Errors are expected; panics, hangs and huge allocations are bugs.
pub fn fuzz_image(data: &[u8]) {
    let limit = data.len() as u64 + GROWTH_LIMIT;
    let ro = MemStorage::new(data.to_vec(), limit);
    if let Ok(d) = Qcow2Disk::open(Box::new(ro), "fuzz", true) {
        let d = d.without_backing();
        exercise_reads(&d);
        let _ = d.check();
    }
    let rw = MemStorage::new(data.to_vec(), limit);
    if let Ok(d) = Qcow2Disk::open(Box::new(rw), "fuzz", false) {
        let d = d.without_backing();
        let size = d.size();
        let buf = [0x5au8; 4096];
        for off in [0, size / 2, size.saturating_sub(100)] {
            let n = (size - off.min(size)).min(buf.len() as u64) as usize;
            let _ = d.write_at(&buf[..n], off);
        }
        let _ = d.discard(0, size.min(1 << 20));
        let _ = d.write_zeroes(size / 3, (size - size / 3).min(70000));
        let _ = d.flush();
        exercise_reads(&d);
        let _ = d.check();
        let _ = d.resize(size.saturating_add(1 << 20));
        let _ = d.resize(size / 3 + 100);
        let _ = d.check();
    }
}

/// Parses `data` as a VDI image and exercises it: header and block map parsing, reads,
/// block status, the map walk and the structural check.
pub fn fuzz_vdi(data: &[u8]) {
    let s = MemStorage::new(data.to_vec(), data.len() as u64);
    if let Ok(d) = VdiDisk::open(Box::new(s), "fuzz", true) {
        exercise_reads(&d);
        walk_map(&d);
        let _ = d.check();
    }
}

/// Parses `data` as a VHD image (fixed or dynamic) and exercises it like
/// [`fuzz_vdi`].
pub fn fuzz_vpc(data: &[u8]) {
    let s = MemStorage::new(data.to_vec(), data.len() as u64);
    if let Ok(d) = VpcDisk::open(Box::new(s), "fuzz", true) {
        exercise_reads(&d);
        walk_map(&d);
        let _ = d.check();
    }
    // Probing sees the same bytes.
    let s = MemStorage::new(data.to_vec(), data.len() as u64);
    let _ = crate::open::probe_storage(&s);
}

/// Parses `data` as a VHDX image and exercises it like [`fuzz_vdi`]; then again with
/// the checksums of both headers and region tables recomputed, so that mutated header
/// and region fields reach the parsers behind the CRC-32C checks.
pub fn fuzz_vhdx(data: &[u8]) {
    let s = MemStorage::new(data.to_vec(), data.len() as u64);
    exercise_vhdx(Box::new(s));
    let mut fixed = data.to_vec();
    for (at, len) in [
        (64usize << 10, 4096usize),
        (128 << 10, 4096),
        (192 << 10, 64 << 10),
        (256 << 10, 64 << 10),
    ] {
        if let Some(b) = fixed.get_mut(at..at + len) {
            crate::vhdx::header::set_checksum(b);
        }
    }
    fix_log_checksums(&mut fixed);
    if fixed != data {
        let n = fixed.len() as u64;
        exercise_vhdx(Box::new(MemStorage::new(fixed, n)));
    }
}

/// Recomputes the checksum of every log entry that starts in a log one of the two
/// headers names (and lies inside the log without wrapping), so mutated descriptors
/// and data sectors reach the replay's checks.
fn fix_log_checksums(b: &mut [u8]) {
    use crate::structure::{le32, le64};
    for at in [64usize << 10, 128 << 10] {
        let Some(h) = b.get(at..at + 80) else {
            continue;
        };
        let (len, off) = (le32(h, 68) as usize, le64(h, 72));
        let Ok(off) = usize::try_from(off) else {
            continue;
        };
        let Some(end) = off.checked_add(len).filter(|&e| e <= b.len()) else {
            continue;
        };
        let mut s = off;
        while s + 4096 <= end {
            if &b[s..s + 4] == b"loge" {
                let n = le32(b, s + 8) as usize;
                if n >= 4096 && s + n <= end {
                    let e = &mut b[s..s + n];
                    e[4..8].fill(0);
                    let c = crate::vhdx::header::crc32c(e);
                    e[4..8].copy_from_slice(&c.to_le_bytes());
                }
            }
            s += 4096;
        }
    }
}

/// Parses `data` (as UTF-8, invalid sequences replaced) as an OVF descriptor and as
/// an OVF manifest, and walks what the descriptor gave.
pub fn fuzz_ovf(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(o) = crate::ovf::parse_ovf(&text, "fuzz") {
        for d in &o.disks {
            if let Some(r) = &d.file_ref {
                assert!(o.files.contains_key(r), "disk names an unknown file");
            }
        }
    }
    let _ = crate::ovf::parse_manifest(&text, "fuzz");
}

fn exercise_vhdx(s: Box<MemStorage>) {
    let _ = crate::open::probe_storage(s.as_ref());
    if let Ok(d) = VhdxDisk::open(s, "fuzz", true) {
        exercise_reads(&d);
        walk_map(&d);
        let _ = d.check();
    }
}

/// Parses `data` as a VMDK sparse or stream image and exercises it like [`fuzz_vdi`]
/// (compressed grains included), and as descriptor text.
pub fn fuzz_vmdk(data: &[u8]) {
    let s = MemStorage::new(data.to_vec(), data.len() as u64);
    if let Ok(d) = VmdkDisk::open(Box::new(s), "fuzz", true) {
        exercise_reads(&d);
        walk_map(&d);
        let _ = d.check();
    }
    // The same bytes as a descriptor file's text.
    let _ = crate::vmdk::descriptor::parse_descriptor(data, "fuzz");
}

/// Follows `map_extent` from the start for a bounded number of extents.
fn walk_map(d: &dyn Disk) {
    let size = d.size();
    let mut pos = 0;
    for _ in 0..4096 {
        if pos >= size {
            break;
        }
        match d.map_extent(pos, size - pos) {
            Ok(e) => {
                assert!(
                    e.len > 0 && e.len <= size - pos,
                    "extent length out of range"
                );
                pos += e.len;
            }
            Err(_) => break,
        }
    }
}

fn exercise_reads(d: &dyn Disk) {
    let size = d.size();
    let mut buf = vec![0u8; 256 << 10];
    for off in [0, size / 2, size.saturating_sub(buf.len() as u64)] {
        let n = (size - off.min(size)).min(buf.len() as u64) as usize;
        let _ = d.read_at(&mut buf[..n], off);
        let _ = d.block_status(off, n as u64);
    }
}
