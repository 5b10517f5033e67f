//! The log (MS-VHDX 2.3): a circular buffer of 4 KiB sectors where metadata updates
//! are written before they reach their place in the file. A header whose LogGuid is
//! non-zero may have log entries not yet applied (the image was not closed cleanly);
//! reading the file without them would show stale metadata. This module finds the
//! entries to replay; [`super::replay`] applies them, in memory for reading or to the
//! file.
//!
//! An entry: a 64-byte header (`loge`, a CRC-32C over the whole entry, the entry
//! length, the tail (where the oldest entry still needed starts), the sequence number,
//! the descriptor count, the LogGuid, the flushed and the last file offset), its
//! 32-byte descriptors (`desc`: one 4 KiB sector to write, whose first 8 and last 4
//! bytes sit in the descriptor and the rest in a data sector; `zero`: a run of zeroes),
//! filling `ceil((count + 2) / 128)` sectors, then one data sector (`data`, the
//! sequence number split around 4084 bytes) per data descriptor.
//!
//! The active sequence: entries that follow one another in the buffer (wrapping at its
//! end) with consecutive sequence numbers, each with the header's LogGuid and a good
//! checksum. Its head is the last entry, and the replay runs from the entry the head's
//! tail names to the head. Of several sequences the one with the highest head
//! sequence number is active. No valid entry at all means there is nothing to replay
//! (the header was updated, the first entry never became durable).
//!
//! Entries whose checksum is right but whose contents are not (a descriptor or data
//! sector with the wrong signature or sequence number, unaligned offsets, writes into
//! the header section or the log, a file shorter than an entry says it was) make the
//! image corrupt: it is refused, as qemu-img refuses it.

use super::header::{crc32c_append, Guid, Header, ALIGN, HEADER_SECTION};
use crate::disk::{DiskError, Result};
use crate::storage::Storage;
use crate::structure::{invalid, le32, le64, read_table};

/// The log's unit.
pub const SECTOR: u64 = 4096;
/// The largest log read into memory.
pub const MAX_LOG: u64 = 64 << 20;
/// The largest file size an entry may ask for (`LastFileOffset`).
const MAX_FILE: u64 = 1 << 50;
/// Checksummed bytes a search may spend, in multiples of the log's length (a valid
/// log costs about one; a hostile one of overlapping entries is cut off).
const SEARCH_BUDGET: u64 = 8;

/// One write a log entry makes to the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogWrite {
    /// A 4 KiB sector at a 4 KiB aligned offset.
    Data {
        /// Where in the file.
        offset: u64,
        /// The sector (4096 bytes).
        data: Box<[u8]>,
    },
    /// A run of zeroes (4 KiB aligned, whole sectors).
    Zero {
        /// Where in the file.
        offset: u64,
        /// How many bytes.
        len: u64,
    },
}

/// The active sequence, ready to replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// Entries in the sequence.
    pub entries: u32,
    /// Their writes, in replay order.
    pub writes: Vec<LogWrite>,
    /// The file must be at least this long after the replay.
    pub last_file_offset: u64,
    /// The head entry's sequence number.
    pub head_sequence: u64,
}

/// Checks the log fields of the active header; returns the log's (offset, length)
/// for overlap checks (length 0 when there is no log).
pub fn check_log(path: &str, h: &Header) -> Result<(u64, u64)> {
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

/// An entry header, checked against the log.
#[derive(Debug, Clone, Copy)]
struct EntryHeader {
    at: u64,
    len: u64,
    tail: u64,
    seq: u64,
    count: u64,
    flushed: u64,
    last: u64,
}

/// Sectors the header and `count` descriptors fill.
fn descriptor_sectors(count: u64) -> u64 {
    (count + 2).div_ceil(128)
}

/// The log in memory, read as a circular buffer.
struct Ring<'a> {
    buf: &'a [u8],
    guid: Guid,
}

impl Ring<'_> {
    fn len(&self) -> u64 {
        self.buf.len() as u64
    }

    /// The 4 KiB sector `i` sectors after log offset `at` (wrapping).
    fn sector(&self, at: u64, i: u64) -> &[u8] {
        let o = ((at + i * SECTOR) % self.len()) as usize;
        &self.buf[o..o + SECTOR as usize]
    }

    /// The entry header at `at`, if it is one of this log's (signature, LogGuid,
    /// lengths); its checksum is not checked here.
    fn header(&self, at: u64) -> Option<EntryHeader> {
        let b = self.sector(at, 0);
        if &b[..4] != b"loge" || b[32..48] != self.guid {
            return None;
        }
        let h = EntryHeader {
            at,
            len: u64::from(le32(b, 8)),
            tail: u64::from(le32(b, 12)),
            seq: le64(b, 16),
            count: u64::from(le32(b, 24)),
            flushed: le64(b, 48),
            last: le64(b, 56),
        };
        let ok = h.len >= SECTOR
            && h.len % SECTOR == 0
            && h.len <= self.len()
            && h.seq != 0
            && descriptor_sectors(h.count) * SECTOR <= h.len;
        ok.then_some(h)
    }

    /// Whether the entry's CRC-32C (over its whole length, the field itself zeroed)
    /// matches.
    fn checksum_ok(&self, h: &EntryHeader) -> bool {
        let first = self.sector(h.at, 0);
        let mut crc = crc32c_append(0, &first[..4]);
        crc = crc32c_append(crc, &[0; 4]);
        crc = crc32c_append(crc, &first[8..]);
        for i in 1..h.len / SECTOR {
            crc = crc32c_append(crc, self.sector(h.at, i));
        }
        crc == le32(first, 4)
    }

    /// Descriptor `i` of the entry (32 bytes; never across a sector).
    fn descriptor(&self, h: &EntryHeader, i: u64) -> &[u8] {
        let byte = 64 + 32 * i;
        let s = self.sector(h.at, byte / SECTOR);
        let o = (byte % SECTOR) as usize;
        &s[o..o + 32]
    }
}

/// What an entry with a good checksum writes, after checking every descriptor and
/// data sector; `log` is the log's place in the file (writes may not touch it).
fn entry_writes(r: &Ring, h: &EntryHeader, path: &str, log: (u64, u64)) -> Result<Vec<LogWrite>> {
    let bad = |why: String| invalid(path, format!("VHDX log entry {}: {why}", h.seq));
    let first_data = descriptor_sectors(h.count);
    let mut data_sectors = 0u64;
    let mut writes = Vec::new();
    for i in 0..h.count {
        let d = r.descriptor(h, i);
        let (offset, seq) = (le64(d, 16), le64(d, 24));
        if seq != h.seq {
            return Err(bad(format!(
                "descriptor {i} has sequence number {seq}, not the entry's"
            )));
        }
        if offset % SECTOR != 0 {
            return Err(bad(format!(
                "descriptor {i} writes at {offset:#x}, not 4 KiB aligned"
            )));
        }
        let (w, len) = match &d[..4] {
            b"zero" => {
                let len = le64(d, 8);
                if len % SECTOR != 0 {
                    return Err(bad(format!(
                        "zero descriptor {i} of {len} bytes is not whole 4 KiB sectors"
                    )));
                }
                (LogWrite::Zero { offset, len }, len)
            }
            b"desc" => {
                let k = first_data + data_sectors;
                if (k + 1) * SECTOR > h.len {
                    return Err(bad(format!(
                        "data descriptor {i} has no data sector inside the entry"
                    )));
                }
                data_sectors += 1;
                let s = r.sector(h.at, k);
                let sseq = (u64::from(le32(s, 4)) << 32) | u64::from(le32(s, 4092));
                if &s[..4] != b"data" || sseq != h.seq {
                    return Err(bad(format!(
                        "the data sector of descriptor {i} has a wrong signature or \
                         sequence number"
                    )));
                }
                let mut data = vec![0u8; SECTOR as usize].into_boxed_slice();
                data[..8].copy_from_slice(&d[8..16]);
                data[8..4092].copy_from_slice(&s[8..4092]);
                data[4092..].copy_from_slice(&d[4..8]);
                (LogWrite::Data { offset, data }, SECTOR)
            }
            _ => {
                return Err(bad(format!(
                    "descriptor {i} is neither a data nor a zero descriptor"
                )))
            }
        };
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= MAX_FILE)
            .ok_or_else(|| bad(format!("descriptor {i} writes past any file size")))?;
        if offset < HEADER_SECTION && len > 0 {
            return Err(bad(format!(
                "descriptor {i} writes into the header section (at {offset:#x})"
            )));
        }
        if len > 0 && offset < log.0 + log.1 && log.0 < end {
            return Err(bad(format!(
                "descriptor {i} writes into the log itself (at {offset:#x})"
            )));
        }
        writes.push(w);
    }
    Ok(writes)
}

/// Finds and checks the active sequence of the log the header `h` names, in a file of
/// `file_len` bytes. `None` when the header has no LogGuid or no entry is valid.
pub fn read_log(s: &dyn Storage, path: &str, h: &Header, file_len: u64) -> Result<Option<Replay>> {
    let (offset, len) = check_log(path, h)?;
    if h.log_guid == [0u8; 16] || len == 0 {
        return Ok(None);
    }
    if len > MAX_LOG {
        return Err(DiskError::UnsupportedImage {
            path: path.into(),
            reason: format!(
                "VHDX log of {} MiB needs replaying, more than the {} MiB supported",
                len >> 20,
                MAX_LOG >> 20
            ),
        });
    }
    let buf = read_table(s, path, "VHDX log", offset, len, 1, file_len)?;
    let ring = Ring {
        buf: &buf,
        guid: h.log_guid,
    };
    let Some(chain) = active_sequence(&ring, path)? else {
        return Ok(None);
    };
    let mut replay = Replay {
        entries: chain.len() as u32,
        ..Default::default()
    };
    for e in &chain {
        if e.flushed > file_len {
            return Err(invalid(
                path,
                format!(
                    "the VHDX file is {file_len} bytes, shorter than the {} its log entry {} \
                     says were written (truncated?)",
                    e.flushed, e.seq
                ),
            ));
        }
        if e.last > MAX_FILE {
            return Err(invalid(
                path,
                format!(
                    "VHDX log entry {} asks for a file of {} bytes",
                    e.seq, e.last
                ),
            ));
        }
        replay
            .writes
            .extend(entry_writes(&ring, e, path, (offset, len))?);
        replay.last_file_offset = replay.last_file_offset.max(e.last);
        replay.head_sequence = e.seq;
    }
    Ok(Some(replay))
}

/// The entries of the active sequence, tail first; `None` if there is none.
fn active_sequence(r: &Ring, path: &str) -> Result<Option<Vec<EntryHeader>>> {
    let n = r.len();
    let mut budget = SEARCH_BUDGET * n;
    let valid = |at: u64, budget: &mut u64| -> Result<Option<EntryHeader>> {
        let Some(h) = r.header(at) else {
            return Ok(None);
        };
        *budget = budget.checked_sub(h.len).ok_or_else(|| {
            invalid(
                path,
                "VHDX log holds too many overlapping entries to search",
            )
        })?;
        Ok(r.checksum_ok(&h).then_some(h))
    };
    let mut best: Option<Vec<EntryHeader>> = None;
    let mut at = 0;
    while at < n {
        let Some(first) = valid(at, &mut budget)? else {
            at += SECTOR;
            continue;
        };
        let mut chain = vec![first];
        let mut covered = first.len;
        loop {
            let last = chain[chain.len() - 1];
            let next_at = (last.at + last.len) % n;
            if covered >= n {
                break;
            }
            match valid(next_at, &mut budget)? {
                Some(e) if Some(e.seq) == last.seq.checked_add(1) && covered + e.len <= n => {
                    covered += e.len;
                    chain.push(e);
                }
                _ => break,
            }
        }
        let head = chain[chain.len() - 1];
        if let Some(k) = chain.iter().position(|e| e.at == head.tail) {
            if best.as_ref().is_none_or(|b| b[b.len() - 1].seq < head.seq) {
                best = Some(chain[k..].to_vec());
            }
        }
        if at + covered >= n {
            break;
        }
        at += covered;
    }
    Ok(best)
}

/// The bytes of a log entry (for tests and tools that write logs): sequence number
/// `seq`, tail `tail`, LogGuid `guid`, the flushed and last file offsets, and
/// `writes` in order.
pub fn encode_entry(
    guid: &Guid,
    seq: u64,
    tail: u32,
    flushed: u64,
    last: u64,
    writes: &[LogWrite],
) -> Vec<u8> {
    let count = writes.len() as u64;
    let data: Vec<&[u8]> = writes
        .iter()
        .filter_map(|w| match w {
            LogWrite::Data { data, .. } => Some(&data[..]),
            LogWrite::Zero { .. } => None,
        })
        .collect();
    let desc_sectors = descriptor_sectors(count);
    let len = (desc_sectors + data.len() as u64) * SECTOR;
    let mut b = vec![0u8; len as usize];
    b[..4].copy_from_slice(b"loge");
    b[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    b[12..16].copy_from_slice(&tail.to_le_bytes());
    b[16..24].copy_from_slice(&seq.to_le_bytes());
    b[24..28].copy_from_slice(&(count as u32).to_le_bytes());
    b[32..48].copy_from_slice(guid);
    b[48..56].copy_from_slice(&flushed.to_le_bytes());
    b[56..64].copy_from_slice(&last.to_le_bytes());
    let mut k = 0usize;
    for (i, w) in writes.iter().enumerate() {
        let d = 64 + 32 * i;
        match w {
            LogWrite::Zero { offset, len } => {
                b[d..d + 4].copy_from_slice(b"zero");
                b[d + 8..d + 16].copy_from_slice(&len.to_le_bytes());
                b[d + 16..d + 24].copy_from_slice(&offset.to_le_bytes());
            }
            LogWrite::Data { offset, data } => {
                b[d..d + 4].copy_from_slice(b"desc");
                b[d + 4..d + 8].copy_from_slice(&data[4092..4096]);
                b[d + 8..d + 16].copy_from_slice(&data[..8]);
                b[d + 16..d + 24].copy_from_slice(&offset.to_le_bytes());
                let s = ((desc_sectors as usize) + k) * SECTOR as usize;
                b[s..s + 4].copy_from_slice(b"data");
                b[s + 4..s + 8].copy_from_slice(&((seq >> 32) as u32).to_le_bytes());
                b[s + 8..s + 4092].copy_from_slice(&data[8..4092]);
                b[s + 4092..s + 4096].copy_from_slice(&(seq as u32).to_le_bytes());
                k += 1;
            }
        }
        b[d + 24..d + 32].copy_from_slice(&seq.to_le_bytes());
    }
    let crc = super::header::crc32c(&b);
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    b
}
