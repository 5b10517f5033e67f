//! Byte storage under an image format: a host file, or memory (tests and fuzzing).
//!
//! Formats do positioned I/O only (`pread`/`pwrite`), so one handle serves every
//! thread without a shared file position.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::sync::Mutex;

/// Positioned byte I/O on the container of an image.
pub trait Storage: Send + Sync {
    /// Reads `buf.len()` bytes at `offset`; bytes past the end of the storage read as zero.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, growing the storage if needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the storage is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates or extends to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes written data durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
    /// Deallocates a byte range, which then reads as zeroes. Fails (e.g. `EOPNOTSUPP`)
    /// where the host cannot; callers that only want space back may ignore that.
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Host bytes actually allocated (for `img info`'s disk usage).
    fn allocated_bytes(&self) -> io::Result<u64>;
    /// Finds the next data region at or after `offset`: `Some((start, end))`, or `None` if
    /// the rest is a hole. Storage without hole information reports everything as data.
    fn next_data(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        let len = self.len()?;
        Ok((offset < len).then_some((offset, len)))
    }
}

/// Shared storage (tests keep a handle to inspect what a format wrote).
impl<T: Storage + ?Sized> Storage for std::sync::Arc<T> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        (**self).write_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        (**self).len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        (**self).set_len(len)
    }
    fn sync(&self) -> io::Result<()> {
        (**self).sync()
    }
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        (**self).punch_hole(offset, len)
    }
    fn allocated_bytes(&self) -> io::Result<u64> {
        (**self).allocated_bytes()
    }
    fn next_data(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        (**self).next_data(offset)
    }
}

/// A host file.
#[derive(Debug)]
pub struct FileStorage {
    file: File,
}

impl FileStorage {
    /// Wraps an open file.
    pub fn new(file: File) -> Self {
        FileStorage { file }
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(off), Ok(l)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        // SAFETY: fallocate only reads its scalar arguments; the fd is owned by `self.file`
        // and stays open for the duration of the call.
        let r = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, l) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn seek(&self, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
        let Ok(off) = libc::off_t::try_from(offset) else {
            return Ok(None);
        };
        // SAFETY: lseek takes scalars only; the fd is valid while `self.file` lives. Moving
        // the file position is harmless: all data I/O here is positioned (pread/pwrite).
        let r = unsafe { libc::lseek(self.file.as_raw_fd(), off, whence) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                return Ok(None);
            }
            return Err(e);
        }
        Ok(Some(r as u64))
    }
}

impl Storage for FileStorage {
    fn read_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.file.read_at(buf, offset) {
                Ok(0) => {
                    buf.fill(0);
                    return Ok(());
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        use std::os::unix::fs::FileTypeExt;
        let m = self.file.metadata()?;
        if m.file_type().is_block_device() {
            // A block device's metadata says 0 bytes; its end is its size (P2V:
            // `convert /dev/sdX`).
            return Ok(self.seek(0, libc::SEEK_END)?.unwrap_or(0));
        }
        Ok(m.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    }

    fn allocated_bytes(&self) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(self.file.metadata()?.blocks() * 512)
    }

    fn next_data(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        let len = self.len()?;
        if offset >= len {
            return Ok(None);
        }
        // Block devices (and some filesystems) have no hole information: EINVAL.
        let no_holes = |e: &io::Error| e.raw_os_error() == Some(libc::EINVAL);
        let start = match self.seek(offset, libc::SEEK_DATA) {
            Ok(Some(start)) => start,
            Ok(None) => return Ok(None),
            Err(e) if no_holes(&e) => return Ok(Some((offset, len))),
            Err(e) => return Err(e),
        };
        let end = match self.seek(start, libc::SEEK_HOLE) {
            Ok(end) => end.unwrap_or(len).min(len),
            Err(e) if no_holes(&e) => len,
            Err(e) => return Err(e),
        };
        Ok(Some((start, end.max(start))))
    }
}

/// Storage in memory, for tests and fuzzing. Grows on write up to a fixed limit so that
/// a hostile image cannot make a test allocate without bound.
#[derive(Debug, Default)]
pub struct MemStorage {
    data: Mutex<Vec<u8>>,
    limit: u64,
}

impl MemStorage {
    /// Storage holding `data`, which may grow up to `limit` bytes.
    pub fn new(data: Vec<u8>, limit: u64) -> Self {
        MemStorage {
            data: Mutex::new(data),
            limit,
        }
    }

    /// A copy of the current contents.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_limit(&self, end: u64) -> io::Result<usize> {
        if end > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "memory storage limit reached",
            ));
        }
        usize::try_from(end).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    }
}

impl Storage for MemStorage {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let data = self.lock();
        buf.fill(0);
        if offset < data.len() as u64 {
            let start = offset as usize;
            let n = buf.len().min(data.len() - start);
            buf[..n].copy_from_slice(&data[start..start + n]);
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let end = self.check_limit(end)?;
        let mut data = self.lock();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[offset as usize..end].copy_from_slice(buf);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.lock().len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = self.check_limit(len)?;
        self.lock().resize(len, 0);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut data = self.lock();
        let size = data.len() as u64;
        let start = offset.min(size) as usize;
        let end = offset.saturating_add(len).min(size) as usize;
        data[start..end].fill(0);
        Ok(())
    }

    fn allocated_bytes(&self) -> io::Result<u64> {
        self.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_storage_reads_zero_past_end_and_respects_limit() {
        let s = MemStorage::new(vec![1, 2, 3], 16);
        let mut buf = [9u8; 5];
        s.read_at(&mut buf, 1).unwrap();
        assert_eq!(buf, [2, 3, 0, 0, 0]);
        s.write_at(&[7, 7], 6).unwrap();
        assert_eq!(s.len().unwrap(), 8);
        assert!(s.write_at(&[0; 10], 10).is_err());
        assert!(s.write_at(&[0], u64::MAX).is_err());
    }

    #[test]
    fn file_storage_finds_holes() {
        let f = tempfile::tempfile().unwrap();
        let s = FileStorage::new(f);
        s.set_len(4 << 20).unwrap();
        s.write_at(&[1u8; 4096], 2 << 20).unwrap();
        let (start, end) = s.next_data(0).unwrap().unwrap();
        // Filesystems without SEEK_DATA support report everything as data.
        assert!(start <= 2 << 20 && end >= (2 << 20) + 4096);
        let mut buf = [0u8; 8];
        s.read_at(&mut buf, (4 << 20) - 4).unwrap();
        assert_eq!(buf, [0; 8]);
    }
}
