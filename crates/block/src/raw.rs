//! Raw images: the disk is the file, byte for byte.

use crate::disk::{check_range, BlockStatus, Disk, DiskError, Result};
use crate::storage::Storage;
use std::sync::atomic::{AtomicU64, Ordering};

/// A raw disk image over any [`Storage`].
pub struct RawDisk {
    storage: Box<dyn Storage>,
    path: String,
    size: AtomicU64,
    read_only: bool,
    guard: bool,
}

impl RawDisk {
    /// Wraps `storage`; the virtual size is its current length.
    pub fn new(storage: Box<dyn Storage>, path: &str, read_only: bool) -> Result<Self> {
        let size = storage.len().map_err(|e| io_err(path, e))?;
        Ok(RawDisk {
            storage,
            path: path.to_string(),
            size: AtomicU64::new(size),
            read_only,
            guard: false,
        })
    }

    /// Refuses writes that would make the image probe as another format (a qcow2 or
    /// VDI header at the start, a VHD footer at the start or the end). Used for
    /// images whose raw format was probed.
    pub fn guard_header(mut self) -> Self {
        self.guard = true;
        self
    }

    fn check_guard(&self, buf: &[u8], offset: u64) -> Result<()> {
        use crate::open::{probe_bytes, ImageFormat, PROBE_HEAD};
        let size = self.size();
        let end = offset + buf.len() as u64;
        let tail_start = size.saturating_sub(512);
        let head_len = (PROBE_HEAD as u64).min(size);
        let touches_head = offset < head_len;
        let touches_tail = size >= 512 && end > tail_start;
        if !self.guard || buf.is_empty() || !(touches_head || touches_tail) {
            return Ok(());
        }
        // The region as it would be after the write.
        let after = |start: u64, len: u64| -> Result<Vec<u8>> {
            let mut b = vec![0u8; len as usize];
            self.storage
                .read_at(&mut b, start)
                .map_err(|e| self.io(e))?;
            let lo = offset.max(start);
            let hi = end.min(start + len);
            if lo < hi {
                b[(lo - start) as usize..(hi - start) as usize]
                    .copy_from_slice(&buf[(lo - offset) as usize..(hi - offset) as usize]);
            }
            Ok(b)
        };
        let head = after(0, head_len)?;
        let tail = if size >= 512 {
            after(tail_start, 512)?
        } else {
            Vec::new()
        };
        let becomes = probe_bytes(&head, &tail);
        if becomes != ImageFormat::Raw {
            return Err(DiskError::Invalid {
                path: self.path.clone(),
                reason: format!(
                    "refusing to write a {becomes} header into an image probed as raw \
                     (specify format=raw explicitly to allow it)"
                ),
            });
        }
        Ok(())
    }

    fn io(&self, e: std::io::Error) -> DiskError {
        io_err(&self.path, e)
    }

    fn writable(&self) -> Result<()> {
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        Ok(())
    }
}

fn io_err(path: &str, source: std::io::Error) -> DiskError {
    DiskError::Io {
        path: path.to_string(),
        source,
    }
}

impl Disk for RawDisk {
    fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(offset, buf.len() as u64, self.size())?;
        self.storage.read_at(buf, offset).map_err(|e| self.io(e))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.writable()?;
        check_range(offset, buf.len() as u64, self.size())?;
        self.check_guard(buf, offset)?;
        self.storage.write_at(buf, offset).map_err(|e| self.io(e))
    }

    fn flush(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.storage.sync().map_err(|e| self.io(e))
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.writable()?;
        check_range(offset, len, self.size())?;
        // Advisory: a host that cannot punch holes keeps the data.
        match self.storage.punch_hole(offset, len) {
            Err(e) if e.raw_os_error() != Some(libc::EOPNOTSUPP) => Err(self.io(e)),
            _ => Ok(()),
        }
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        self.writable()?;
        check_range(offset, len, self.size())?;
        // A punched hole reads as zeroes; where punching fails, write them.
        if len == 0 || self.storage.punch_hole(offset, len).is_ok() {
            return Ok(());
        }
        let zeroes = vec![0u8; len.min(1 << 20) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeroes.len() as u64) as usize;
            self.storage
                .write_at(&zeroes[..n], offset + done)
                .map_err(|e| self.io(e))?;
            done += n as u64;
        }
        Ok(())
    }

    fn resize(&self, new_size: u64) -> Result<()> {
        self.writable()?;
        self.storage.set_len(new_size).map_err(|e| self.io(e))?;
        self.size.store(new_size, Ordering::Relaxed);
        Ok(())
    }

    fn format(&self) -> &'static str {
        "raw"
    }

    fn map_extent(&self, offset: u64, len: u64) -> Result<crate::disk::Extent> {
        let (s, n) = self.block_status(offset, len)?;
        Ok(crate::disk::Extent {
            len: n,
            data: s == BlockStatus::Data,
            zero: s == BlockStatus::Zero,
            present: true,
            depth: 0,
            offset: Some(offset),
            file: self.path.clone(),
        })
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<(BlockStatus, u64)> {
        check_range(offset, len, self.size())?;
        if len == 0 {
            return Ok((BlockStatus::Data, 0));
        }
        let end = offset + len;
        match self.storage.next_data(offset).map_err(|e| self.io(e))? {
            None => Ok((BlockStatus::Zero, len)),
            Some((start, _)) if start > offset => Ok((BlockStatus::Zero, start.min(end) - offset)),
            Some((_, data_end)) => {
                Ok((BlockStatus::Data, data_end.clamp(offset + 1, end) - offset))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    #[test]
    fn raw_read_write_bounds_and_zeroes() {
        let d = RawDisk::new(
            Box::new(MemStorage::new(vec![0; 8192], 1 << 20)),
            "m",
            false,
        )
        .unwrap();
        d.write_at(&[5u8; 100], 4000).unwrap();
        let mut b = [0u8; 200];
        d.read_at(&mut b, 3950).unwrap();
        assert_eq!(&b[..50], &[0u8; 50][..]);
        assert_eq!(&b[50..150], &[5u8; 100][..]);
        assert!(matches!(
            d.read_at(&mut b, 8100),
            Err(DiskError::OutOfRange { .. })
        ));
        d.write_zeroes(4000, 50).unwrap();
        d.read_at(&mut b, 3950).unwrap();
        assert_eq!(&b[..100], &[0u8; 100][..]);
        assert_eq!(&b[100..150], &[5u8; 50][..]);
        d.resize(16384).unwrap();
        assert_eq!(d.size(), 16384);
        let ro = RawDisk::new(Box::new(MemStorage::new(vec![0; 512], 512)), "m", true).unwrap();
        assert!(matches!(ro.write_at(&[1], 0), Err(DiskError::ReadOnly)));
    }
}
