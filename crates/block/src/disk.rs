//! The trait every disk format implements.

use std::io;

/// Errors from disk I/O.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// An image's metadata is invalid (the message names the file and the problem).
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    /// A feature of the image this implementation does not handle.
    #[error("{path}: unsupported: {reason}")]
    UnsupportedImage { path: String, reason: String },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("access at {offset:#x}+{len:#x} is beyond the end of the disk ({size:#x} bytes)")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    #[error("the disk is read-only")]
    ReadOnly,
    #[error("{0}")]
    Corrupt(String),
    #[error("operation not supported: {0}")]
    Unsupported(&'static str),
}

pub type Result<T> = std::result::Result<T, DiskError>;

/// The write side of a [`Disk`] impl for a format `hako` only reads (VDI, VPC,
/// VHDX, VMDK): every write fails with [`DiskError::ReadOnly`], a flush has
/// nothing to do. Used inside `impl Disk for ...`.
macro_rules! read_only_disk {
    () => {
        fn write_at(&self, _buf: &[u8], _offset: u64) -> $crate::disk::Result<()> {
            Err($crate::disk::DiskError::ReadOnly)
        }

        fn flush(&self) -> $crate::disk::Result<()> {
            Ok(())
        }

        fn discard(&self, _offset: u64, _len: u64) -> $crate::disk::Result<()> {
            Err($crate::disk::DiskError::ReadOnly)
        }

        fn write_zeroes(&self, _offset: u64, _len: u64) -> $crate::disk::Result<()> {
            Err($crate::disk::DiskError::ReadOnly)
        }

        fn resize(&self, _new_size: u64) -> $crate::disk::Result<()> {
            Err($crate::disk::DiskError::ReadOnly)
        }
    };
}
pub(crate) use read_only_disk;

/// A virtual disk: a byte-addressed array of `size()` bytes.
///
/// Methods take `&self` so several queues or threads can share one disk;
/// implementations use interior mutability for their metadata.
pub trait Disk: Send + Sync {
    /// Virtual size in bytes.
    fn size(&self) -> u64;
    fn read_only(&self) -> bool;
    /// Reads `buf.len()` bytes at `offset`. Unallocated areas read as zeroes.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()>;
    /// Makes all completed writes durable (`fdatasync` on the files involved).
    fn flush(&self) -> Result<()>;
    /// Deallocates a range if the format and host allow; reads may then return zeroes.
    fn discard(&self, offset: u64, len: u64) -> Result<()>;
    /// Makes a range read as zeroes.
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()>;
    /// Changes the virtual size.
    fn resize(&self, new_size: u64) -> Result<()>;
    /// The image format's name (`"raw"`, `"qcow2"`, ...).
    fn format(&self) -> &'static str {
        "unknown"
    }
    /// Tells how the start of `offset..offset + len` reads: returns the status and the
    /// length (at most `len`, at least 1 if `len > 0`) of the run sharing that status.
    /// Formats that do not know report everything as [`BlockStatus::Data`].
    fn block_status(&self, offset: u64, len: u64) -> Result<(BlockStatus, u64)> {
        let _ = offset;
        Ok((BlockStatus::Data, len))
    }
    /// Where the start of `offset..offset + len` comes from, for `hako img map`: the
    /// extent returned is at most `len` long (at least 1 if `len > 0`). The default
    /// derives it from [`Disk::block_status`]: present, depth 0, no host offset.
    fn map_extent(&self, offset: u64, len: u64) -> Result<Extent> {
        let (s, n) = self.block_status(offset, len)?;
        Ok(Extent {
            len: n,
            data: s == BlockStatus::Data,
            zero: s == BlockStatus::Zero,
            present: true,
            depth: 0,
            offset: None,
            file: String::new(),
        })
    }
}

/// One run of a disk as `qemu-img map` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    /// Length in bytes.
    pub len: u64,
    /// Holds data (read it) rather than being known zeroes.
    pub data: bool,
    /// Reads as zeroes.
    pub zero: bool,
    /// Allocated in some image of the chain (false: nothing stores it, reads as zeroes).
    pub present: bool,
    /// Which image of the backing chain holds it (0: the top image).
    pub depth: u32,
    /// Where the data is in that image's file, when it is stored there uncompressed.
    pub offset: Option<u64>,
    /// The file holding it (empty when not known).
    pub file: String,
}

impl Extent {
    /// Whether `next` continues this extent (same attributes, contiguous host offsets).
    pub fn continues(&self, next: &Extent) -> bool {
        self.data == next.data
            && self.zero == next.zero
            && self.present == next.present
            && self.depth == next.depth
            && self.file == next.file
            && match (self.offset, next.offset) {
                (None, None) => true,
                (Some(a), Some(b)) => a.checked_add(self.len) == Some(b),
                _ => false,
            }
    }
}

/// What [`Disk::block_status`] knows about a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockStatus {
    /// May hold non-zero data: read it.
    Data,
    /// Reads as zeroes (a hole, a zero cluster, or unallocated without backing data).
    Zero,
}

/// Checks that `offset..offset + len` lies within a disk of `size` bytes.
pub fn check_range(offset: u64, len: u64, size: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(DiskError::OutOfRange { offset, len, size }),
    }
}
