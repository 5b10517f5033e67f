//! Copies of disk images for snapshots: the data extents only, so a sparse image
//! stays sparse (a 20 GiB raw image with 1 GiB written costs 1 GiB).
//!
//! Written here because `std::fs::copy` (copy_file_range over the whole length)
//! fills holes on filesystems without reflinks, and no crate of the field copies
//! by extent: this walks `SEEK_DATA`/`SEEK_HOLE` and copies each extent with
//! `copy_file_range`, which reflinks where the filesystem can.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// `lseek(fd, off, whence)`; `None` at ENXIO (no data or hole past `off`).
fn seek(f: &File, off: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: lseek on a descriptor `f` owns; no memory is passed.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off as libc::off_t, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(r as u64))
}

/// Copies `len` bytes at `off` from `src` to the same offset of `dst`.
fn copy_range(src: &File, dst: &File, off: u64, len: u64) -> io::Result<()> {
    let mut done = 0u64;
    while done < len {
        let mut so = (off + done) as libc::loff_t;
        let mut d_o = so;
        let chunk = (len - done).min(1 << 30) as usize;
        // SAFETY: both descriptors are open files this function borrows; the two
        // offsets are locals the kernel updates.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut so,
                dst.as_raw_fd(),
                &mut d_o,
                chunk,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the image got shorter while it was copied",
            ));
        }
        done += n as u64;
    }
    Ok(())
}

/// Copies the image `src` to `dst` (created or truncated, mode 0600), extent by
/// extent, then fsyncs it. Returns the bytes of data copied.
pub fn copy_sparse(src: &Path, dst: &Path) -> io::Result<u64> {
    let s = File::open(src)?;
    let size = s.metadata()?.len();
    let d = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(dst)?;
    d.set_len(size)?;
    let mut off = 0u64;
    let mut copied = 0u64;
    while off < size {
        let Some(data) = seek(&s, off, libc::SEEK_DATA)? else {
            break;
        };
        let end = seek(&s, data, libc::SEEK_HOLE)?.unwrap_or(size).min(size);
        copy_range(&s, &d, data, end - data)?;
        copied += end - data;
        off = end;
    }
    d.sync_all()?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn copies_data_and_keeps_holes() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("a.img");
        let mut f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&[0xab; 4096]).unwrap();
        f.seek(SeekFrom::Start(40 << 20)).unwrap();
        f.write_all(b"tail").unwrap();
        f.sync_all().unwrap();
        let dst = tmp.path().join("b.img");
        std::fs::write(&dst, vec![1u8; 100 << 20]).unwrap();
        let n = copy_sparse(&src, &dst).unwrap();
        assert!((4096 + 4..8 << 20).contains(&n), "copied {n} bytes");
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        let blocks = std::fs::metadata(&dst).unwrap().blocks() * 512;
        assert!(blocks < 16 << 20, "the copy takes {blocks} bytes on disk");
    }

    #[test]
    fn a_missing_source_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(copy_sparse(&tmp.path().join("none"), &tmp.path().join("x")).is_err());
    }
}
