//! Pieces shared by the read-only formats (VDI, VPC): the structural check report and
//! bounded table reads.

use crate::disk::{DiskError, Result};
use crate::storage::Storage;

/// What a structural check of a read-only format found (`hako img check`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StructureReport {
    /// Problems found (the image is corrupt if any).
    pub corruptions: u64,
    /// Their messages (the first [`MAX_MESSAGES`]).
    pub errors: Vec<String>,
    /// Blocks of the virtual disk.
    pub total_blocks: u64,
    /// Blocks stored in the file.
    pub allocated_blocks: u64,
    /// Where the last stored structure ends in the file.
    pub image_end_offset: u64,
}

/// Most errors a report keeps word for word (the rest are only counted).
pub const MAX_MESSAGES: usize = 100;

impl StructureReport {
    /// Records a problem.
    pub fn error(&mut self, msg: impl FnOnce() -> String) {
        self.corruptions += 1;
        if self.errors.len() < MAX_MESSAGES {
            self.errors.push(msg());
        }
    }
}

pub(crate) fn invalid(path: &str, reason: impl Into<String>) -> DiskError {
    DiskError::Invalid {
        path: path.to_string(),
        reason: reason.into(),
    }
}

pub(crate) fn io(path: &str, source: std::io::Error) -> DiskError {
    DiskError::Io {
        path: path.to_string(),
        source,
    }
}

/// Reads a table of `count` entries of `width` bytes at `offset`, after checking that
/// it lies inside a file of `file_len` bytes (so its size is bounded by the file's).
pub(crate) fn read_table(
    s: &dyn Storage,
    path: &str,
    what: &str,
    offset: u64,
    count: u64,
    width: u64,
    file_len: u64,
) -> Result<Vec<u8>> {
    let bytes = count
        .checked_mul(width)
        .filter(|&b| offset.checked_add(b).is_some_and(|end| end <= file_len))
        .ok_or_else(|| {
            invalid(
                path,
                format!(
                    "{what} ({count} entries at offset {offset:#x}) runs past the end of \
                     the file ({file_len} bytes)"
                ),
            )
        })?;
    let n = usize::try_from(bytes).map_err(|_| invalid(path, format!("{what} is too large")))?;
    let mut buf = vec![0u8; n];
    s.read_at(&mut buf, offset).map_err(|e| io(path, e))?;
    Ok(buf)
}

/// The error for opening a read-only format writable.
pub(crate) fn read_only_format(path: &str, format: &str) -> DiskError {
    DiskError::UnsupportedImage {
        path: path.to_string(),
        reason: format!(
            "{format} images are supported read-only (use readonly=on, or convert the \
             image to qcow2 with `hako img convert -O qcow2`)"
        ),
    }
}

pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

pub(crate) fn le64(b: &[u8], off: usize) -> u64 {
    u64::from(le32(b, off)) | (u64::from(le32(b, off + 4)) << 32)
}

pub(crate) fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

pub(crate) fn be64(b: &[u8], off: usize) -> u64 {
    (u64::from(be32(b, off)) << 32) | u64::from(be32(b, off + 4))
}

/// Whether the file's bytes at `host..host + len` start with a hole (reads as zeroes),
/// and how long that run is (at least 1 when `len > 0`).
pub(crate) fn host_run(s: &dyn Storage, path: &str, host: u64, len: u64) -> Result<(bool, u64)> {
    if len == 0 {
        return Ok((false, 0));
    }
    Ok(match s.next_data(host).map_err(|e| io(path, e))? {
        None => (true, len),
        Some((start, _)) if start > host => (true, (start - host).min(len)),
        Some((_, end)) => (false, end.saturating_sub(host).clamp(1, len)),
    })
}

/// Narrows a stored extent to the run that is uniformly hole or data in the file;
/// holes read as zeroes (`zero` set, as qemu-img map shows them).
pub(crate) fn narrow_to_host(s: &dyn Storage, e: &mut crate::disk::Extent) -> Result<()> {
    if let (true, Some(host)) = (e.data, e.offset) {
        let (hole, n) = host_run(s, &e.file, host, e.len)?;
        e.len = n;
        e.zero = hole;
    }
    Ok(())
}
