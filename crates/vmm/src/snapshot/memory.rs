//! The memory file of a snapshot: guest RAM regions back to back, with zero pages
//! left as holes (a sparse file), and the two ways of loading it: a private
//! (copy-on-write) mapping, which costs nothing up front whatever the size, or a copy
//! that reads only the data the file holds.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use accel::GuestMemory;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend as _, GuestMemoryRegion, GuestRegionMmap,
    MmapRegion,
};

const PAGE: usize = 4096;
/// Pages written per `pwrite` when runs of them hold data.
const CHUNK_PAGES: usize = 256;

/// How a restored VM gets its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestoreMode {
    /// Map the memory file privately: pages are read when the guest touches them.
    #[default]
    Map,
    /// Read the file into fresh anonymous memory.
    Copy,
}

/// The guest RAM layout as (address, length) in file order.
pub fn layout(mem: &GuestMemory) -> Vec<(u64, u64)> {
    mem.iter().map(|r| (r.start_addr().0, r.len())).collect()
}

/// Fresh (zeroed, lazily allocated) guest memory of `layout`.
pub fn fresh(layout: &[(u64, u64)]) -> io::Result<GuestMemory> {
    let ranges: Vec<(GuestAddress, usize)> = layout
        .iter()
        .map(|&(a, l)| (GuestAddress(a), l as usize))
        .collect();
    GuestMemory::from_ranges(&ranges).map_err(io::Error::other)
}

/// What writing the memory file did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryWritten {
    pub total_bytes: u64,
    pub data_bytes: u64,
}

/// Writes every region of `mem` to `path`; all-zero pages become holes.
pub fn write(mem: &GuestMemory, path: &Path) -> io::Result<MemoryWritten> {
    let f = File::create(path)?;
    let mut off = 0u64;
    let mut data = 0u64;
    let mut buf = vec![0u8; PAGE * CHUNK_PAGES];
    for r in mem.iter() {
        let len = r.len() as usize;
        let mut done = 0usize;
        while done < len {
            let n = (len - done).min(buf.len());
            let chunk = &mut buf[..n];
            r.read_slice(chunk, vm_memory::MemoryRegionAddress(done as u64))
                .map_err(io::Error::other)?;
            // Write runs of non-zero pages; skip zero ones.
            let mut p = 0;
            while p < n {
                let end = (p + PAGE).min(n);
                if chunk[p..end].iter().all(|&b| b == 0) {
                    p = end;
                    continue;
                }
                let mut q = end;
                while q < n {
                    let e = (q + PAGE).min(n);
                    if chunk[q..e].iter().all(|&b| b == 0) {
                        break;
                    }
                    q = e;
                }
                f.write_all_at(&chunk[p..q], off + (done + p) as u64)?;
                data += (q - p) as u64;
                p = q;
            }
            done += n;
        }
        off += len as u64;
    }
    f.set_len(off)?;
    f.sync_all()?;
    Ok(MemoryWritten {
        total_bytes: off,
        data_bytes: data,
    })
}

fn check_size(f: &File, path: &Path, layout: &[(u64, u64)]) -> io::Result<()> {
    let want: u64 = layout.iter().map(|r| r.1).sum();
    let have = f.metadata()?.len();
    if have != want {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "memory file {} holds {have} bytes, the state describes {want}",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Guest memory with the contents of the memory file at `path`.
pub fn load(path: &Path, layout: &[(u64, u64)], mode: RestoreMode) -> io::Result<GuestMemory> {
    let f = File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    check_size(&f, path, layout)?;
    match mode {
        RestoreMode::Map => map_private(f, layout),
        RestoreMode::Copy => copy(&f, layout),
    }
}

fn map_private(f: File, layout: &[(u64, u64)]) -> io::Result<GuestMemory> {
    let f = std::sync::Arc::new(f);
    let mut regions = Vec::new();
    let mut off = 0u64;
    for &(addr, len) in layout {
        let size = usize::try_from(len).map_err(io::Error::other)?;
        let fo = FileOffset::from_arc(f.clone(), off);
        let m = MmapRegion::build(
            Some(fo),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_NORESERVE,
        )
        .map_err(io::Error::other)?;
        regions.push(
            GuestRegionMmap::new(m, GuestAddress(addr))
                .ok_or_else(|| io::Error::other("guest region overflows"))?,
        );
        off += len;
    }
    GuestMemory::from_regions(regions).map_err(io::Error::other)
}

/// The first offset at or after `from` that holds data (SEEK_DATA), if any.
fn next_data(fd: i32, from: u64) -> Option<u64> {
    // SAFETY: lseek on a descriptor we own has no memory effects.
    let r = unsafe { libc::lseek(fd, from as libc::off_t, libc::SEEK_DATA) };
    (r >= 0).then_some(r as u64)
}

/// The first hole at or after `from` (SEEK_HOLE; the end of the file counts as one).
fn next_hole(fd: i32, from: u64) -> u64 {
    // SAFETY: as above.
    let r = unsafe { libc::lseek(fd, from as libc::off_t, libc::SEEK_HOLE) };
    if r < 0 {
        u64::MAX
    } else {
        r as u64
    }
}

fn copy(f: &File, layout: &[(u64, u64)]) -> io::Result<GuestMemory> {
    let mem = fresh(layout)?;
    let fd = f.as_raw_fd();
    let mut buf = vec![0u8; PAGE * CHUNK_PAGES];
    let mut base = 0u64;
    for (r, &(_, len)) in mem.iter().zip(layout) {
        let end = base + len;
        let mut pos = base;
        // Only the data extents; holes are the zeros fresh memory already holds.
        while let Some(d) = next_data(fd, pos).filter(|&d| d < end) {
            let stop = next_hole(fd, d).min(end);
            let mut at = d;
            while at < stop {
                let n = ((stop - at) as usize).min(buf.len());
                f.read_exact_at(&mut buf[..n], at)?;
                r.write_slice(&buf[..n], vm_memory::MemoryRegionAddress(at - base))
                    .map_err(io::Error::other)?;
                at += n as u64;
            }
            pos = stop;
        }
        base = end;
    }
    Ok(mem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_pages_are_holes_and_both_modes_read_back() {
        let layout = [(0u64, 1u64 << 20), (1 << 32, 256 << 10)];
        let ranges: Vec<_> = layout
            .iter()
            .map(|&(a, l)| (GuestAddress(a), l as usize))
            .collect();
        let mem = GuestMemory::from_ranges(&ranges).unwrap();
        mem.write_slice(b"low", GuestAddress(0x1234)).unwrap();
        mem.write_slice(&[7u8; 9000], GuestAddress(0x8_0000))
            .unwrap();
        mem.write_slice(b"high", GuestAddress((1 << 32) + 0x3_fffc))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.bin");
        let w = write(&mem, &path).unwrap();
        assert_eq!(w.total_bytes, (1 << 20) + (256 << 10));
        assert_eq!(w.data_bytes, 5 * PAGE as u64, "only the pages with data");

        for mode in [RestoreMode::Map, RestoreMode::Copy] {
            let back = load(&path, &layout, mode).unwrap();
            let mut a = vec![0u8; 1 << 20];
            let mut b = vec![0u8; 1 << 20];
            mem.read_slice(&mut a, GuestAddress(0)).unwrap();
            back.read_slice(&mut b, GuestAddress(0)).unwrap();
            assert!(a == b, "{mode:?}: low RAM differs");
            let mut h = [0u8; 4];
            back.read_slice(&mut h, GuestAddress((1 << 32) + 0x3_fffc))
                .unwrap();
            assert_eq!(&h, b"high");
            // The mapping is private: writing it leaves the file alone.
            back.write_slice(b"XX", GuestAddress(0x1234)).unwrap();
        }
        let again = load(&path, &layout, RestoreMode::Map).unwrap();
        let mut l = [0u8; 3];
        again.read_slice(&mut l, GuestAddress(0x1234)).unwrap();
        assert_eq!(&l, b"low");

        // A file of the wrong size is refused.
        let short = [(0u64, 1u64 << 20)];
        assert!(load(&path, &short, RestoreMode::Copy).is_err());
    }
}
