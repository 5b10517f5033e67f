//! The log. A header whose LogGuid is non-zero has log entries that were not yet
//! applied to the file (the image was not closed cleanly): reading it without
//! replaying them would show stale metadata or data. Replay is not implemented, so
//! such images are refused with a message saying how to replay the log elsewhere.

use super::header::{Header, ALIGN, HEADER_SECTION};
use crate::disk::{DiskError, Result};
use crate::structure::invalid;

/// Checks the log fields of the active header; returns the log's (offset, length)
/// for overlap checks (length 0 when there is no log).
pub fn check_log(path: &str, h: &Header) -> Result<(u64, u64)> {
    if h.log_guid != [0u8; 16] {
        return Err(DiskError::UnsupportedImage {
            path: path.into(),
            reason: "the VHDX image was not closed cleanly and its log needs replaying; \
                     open it once in Hyper-V or run `qemu-img check -r all` on it first"
                .into(),
        });
    }
    if h.log_version != 0 {
        return Err(DiskError::UnsupportedImage {
            path: path.into(),
            reason: format!("VHDX log version {} (only 0 is known)", h.log_version),
        });
    }
    let len = u64::from(h.log_length);
    if len == 0 {
        return Ok((h.log_offset, 0));
    }
    if h.log_offset % ALIGN != 0 || h.log_offset < HEADER_SECTION || len % ALIGN != 0 {
        return Err(invalid(
            path,
            format!(
                "VHDX log at {:#x} ({len} bytes) is not 1 MiB aligned past the header section",
                h.log_offset
            ),
        ));
    }
    Ok((h.log_offset, len))
}
