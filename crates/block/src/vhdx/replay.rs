//! Applying a log's active sequence ([`super::log`]): in memory, as an overlay the
//! reader sees the file through (read-only opens: the file is not touched), or to the
//! file itself ([`replay_in_place`], `hako img check -r all`), after which the headers
//! say the log is empty.

use super::header::{set_checksum, HEADER_OFFSETS, HEADER_SIZE};
use super::log::{read_log, LogWrite, Replay, SECTOR};
use crate::disk::Result;
use crate::storage::Storage;
use crate::structure::{io, le64};
use std::collections::BTreeMap;

/// A read-only view of a file with a log's writes applied.
pub struct LogOverlay {
    inner: Box<dyn Storage>,
    /// Logged sectors, by file offset (4 KiB aligned).
    sectors: BTreeMap<u64, Box<[u8]>>,
    /// Logged zero runs, start -> end, disjoint from one another and from `sectors`.
    zeros: BTreeMap<u64, u64>,
    len: u64,
}

fn read_only() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        "a VHDX log replayed in memory is read-only",
    )
}

impl LogOverlay {
    /// `inner` as it reads once `replay` is applied.
    pub fn new(inner: Box<dyn Storage>, replay: &Replay) -> std::io::Result<Self> {
        let len = inner.len()?.max(replay.last_file_offset);
        let mut o = LogOverlay {
            inner,
            sectors: BTreeMap::new(),
            zeros: BTreeMap::new(),
            len,
        };
        for w in &replay.writes {
            match w {
                LogWrite::Data { offset, data } => {
                    o.carve_zeros(*offset, offset + SECTOR);
                    o.sectors.insert(*offset, data.clone());
                }
                LogWrite::Zero { offset, len } if *len > 0 => {
                    let end = offset + len;
                    o.carve_zeros(*offset, end);
                    let gone: Vec<u64> = o.sectors.range(*offset..end).map(|(k, _)| *k).collect();
                    for k in gone {
                        o.sectors.remove(&k);
                    }
                    o.zeros.insert(*offset, end);
                }
                LogWrite::Zero { .. } => {}
            }
            o.len = o.len.max(write_end(w));
        }
        Ok(o)
    }

    /// Removes `a..b` from the zero runs.
    fn carve_zeros(&mut self, a: u64, b: u64) {
        let hit: Vec<(u64, u64)> = self
            .zeros
            .range(..b)
            .rev()
            .take_while(|(_, &end)| end > a)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in hit {
            self.zeros.remove(&s);
            if s < a {
                self.zeros.insert(s, a);
            }
            if e > b {
                self.zeros.insert(b, e);
            }
        }
    }
}

fn write_end(w: &LogWrite) -> u64 {
    match w {
        LogWrite::Data { offset, .. } => offset + SECTOR,
        LogWrite::Zero { offset, len } => offset + len,
    }
}

impl Storage for LogOverlay {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_at(buf, offset)?;
        let end = offset.saturating_add(buf.len() as u64);
        let clip = |s: u64, e: u64| (s.max(offset) - offset, e.min(end) - offset);
        for (&s, &e) in self
            .zeros
            .range(..end)
            .rev()
            .take_while(|(_, &e)| e > offset)
        {
            let (a, b) = clip(s, e);
            buf[a as usize..b as usize].fill(0);
        }
        for (&s, data) in self.sectors.range(offset.saturating_sub(SECTOR - 1)..end) {
            let (a, b) = clip(s, s + SECTOR);
            let from = (s.max(offset) - s) as usize;
            buf[a as usize..b as usize].copy_from_slice(&data[from..from + (b - a) as usize]);
        }
        Ok(())
    }

    fn write_at(&self, _buf: &[u8], _offset: u64) -> std::io::Result<()> {
        Err(read_only())
    }

    fn len(&self) -> std::io::Result<u64> {
        Ok(self.len)
    }

    fn set_len(&self, _len: u64) -> std::io::Result<()> {
        Err(read_only())
    }

    fn sync(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn punch_hole(&self, _offset: u64, _len: u64) -> std::io::Result<()> {
        Err(read_only())
    }

    fn allocated_bytes(&self) -> std::io::Result<u64> {
        self.inner.allocated_bytes()
    }

    // Holes in the file say nothing about sectors the log writes: everything is data
    // (the default `next_data`).
}

/// Replays the log of the VHDX in `s` into the file and marks the log empty in both
/// headers (sequence numbers raised, a new FileWriteGuid); returns how many entries
/// were replayed (0: the log had nothing to replay and the file is unchanged).
pub fn replay_in_place(s: &dyn Storage, path: &str) -> Result<u32> {
    let e = |err| io(path, err);
    let file_len = s.len().map_err(e)?;
    let h = super::header::read_header(s, path, file_len)?;
    let Some(replay) = read_log(s, path, &h, file_len)? else {
        return Ok(0);
    };
    const ZEROES: u64 = 1 << 20;
    let zeroes = vec![0u8; ZEROES as usize];
    let mut want_len = replay.last_file_offset;
    for w in &replay.writes {
        match w {
            LogWrite::Data { offset, data } => s.write_at(data, *offset).map_err(e)?,
            LogWrite::Zero { offset, len } => {
                // Zeroes past the end of the file come from extending it.
                let end = (offset + len).min(s.len().map_err(e)?);
                let mut at = *offset;
                while at < end {
                    let n = (end - at).min(ZEROES);
                    s.write_at(&zeroes[..n as usize], at).map_err(e)?;
                    at += n;
                }
            }
        }
        want_len = want_len.max(write_end(w));
    }
    if s.len().map_err(e)? < want_len {
        s.set_len(want_len).map_err(e)?;
    }
    s.sync().map_err(e)?;
    // The current header, then the other slot with the log cleared and a higher
    // sequence number, then the first slot again, so both end up valid and clean.
    let mut raw = [vec![0u8; HEADER_SIZE], vec![0u8; HEADER_SIZE]];
    for (b, &at) in raw.iter_mut().zip(&HEADER_OFFSETS) {
        s.read_at(b, at).map_err(e)?;
    }
    let current = raw
        .iter()
        .position(|b| le64(b, 8) == h.sequence && b[48..64] == h.log_guid)
        .unwrap_or(0);
    let mut next = raw[current].clone();
    next[16..32].copy_from_slice(&crate::writer::random_guid());
    next[48..64].fill(0);
    for (k, slot) in [1 - current, current].into_iter().enumerate() {
        next[8..16].copy_from_slice(&(h.sequence + 1 + k as u64).to_le_bytes());
        set_checksum(&mut next);
        s.write_at(&next, HEADER_OFFSETS[slot]).map_err(e)?;
        s.sync().map_err(e)?;
    }
    Ok(replay.entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    #[test]
    fn later_writes_win_and_zero_runs_split() {
        let inner = MemStorage::new(vec![9u8; 8 * SECTOR as usize], 1 << 20);
        let sector = |b: u8| vec![b; SECTOR as usize].into_boxed_slice();
        let r = Replay {
            entries: 1,
            writes: vec![
                LogWrite::Zero {
                    offset: 0,
                    len: 6 * SECTOR,
                },
                LogWrite::Data {
                    offset: 2 * SECTOR,
                    data: sector(1),
                },
                LogWrite::Data {
                    offset: 4 * SECTOR,
                    data: sector(2),
                },
                LogWrite::Zero {
                    offset: 4 * SECTOR,
                    len: SECTOR,
                },
                LogWrite::Data {
                    offset: 9 * SECTOR,
                    data: sector(3),
                },
            ],
            last_file_offset: 12 * SECTOR,
            head_sequence: 1,
        };
        let o = LogOverlay::new(Box::new(inner), &r).unwrap();
        assert_eq!(o.len().unwrap(), 12 * SECTOR);
        let mut b = vec![7u8; 12 * SECTOR as usize];
        o.read_at(&mut b, 0).unwrap();
        let want: Vec<u8> = [0, 0, 1, 0, 0, 0, 9, 9, 0, 3, 0, 0]
            .iter()
            .flat_map(|&v| vec![v; SECTOR as usize])
            .collect();
        assert!(b == want);
        // Unaligned reads see the same bytes.
        let mut part = vec![0u8; 5000];
        o.read_at(&mut part, 2 * SECTOR - 100).unwrap();
        assert!(part[..] == want[(2 * SECTOR - 100) as usize..][..5000]);
        assert!(o.write_at(&[1], 0).is_err());
    }
}
