//! The data paths: read, write (allocation and copy-on-write), discard, write-zeroes,
//! and compressed writes.

use super::entry::{encode_compressed, Mapping, COPIED, ZERO};
use super::Inner;
use crate::disk::{DiskError, Result};

/// One guest cluster's part of a write.
enum Piece {
    /// Overwrite in place at `host` with `buf[start..start + len]`.
    Direct { host: u64, start: usize, len: usize },
    /// A newly allocated cluster: write `data` (a full composed cluster) or, when
    /// `data` is `None`, just `buf[start..start + len]` at `host + in_off`.
    New {
        gc: u64,
        host: u64,
        in_off: u64,
        start: usize,
        len: usize,
        data: Option<Vec<u8>>,
        old: Mapping,
    },
}

impl Inner {
    /// Reads guest bytes through the mapping, merging host-contiguous pieces.
    pub(super) fn read(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut done = 0usize;
        // Pending host run: (host, buf start, len).
        let mut run: Option<(u64, usize, usize)> = None;
        while done < buf.len() {
            let pos = offset + done as u64;
            let gc = pos >> self.bits;
            let in_off = pos & (self.cs - 1);
            let n = ((self.cs - in_off) as usize).min(buf.len() - done);
            let m = self.lookup(gc)?;
            if let Mapping::Data { host, .. } = m {
                let h = host + in_off;
                match &mut run {
                    Some((rh, rs, rl)) if *rh + *rl as u64 == h && *rs + *rl == done => *rl += n,
                    _ => {
                        if let Some((rh, rs, rl)) = run.take() {
                            self.read_raw(&mut buf[rs..rs + rl], rh)?;
                        }
                        run = Some((h, done, n));
                    }
                }
            } else {
                if let Some((rh, rs, rl)) = run.take() {
                    self.read_raw(&mut buf[rs..rs + rl], rh)?;
                }
                self.read_mapped(m, pos, &mut buf[done..done + n])?;
            }
            done += n;
        }
        if let Some((rh, rs, rl)) = run {
            self.read_raw(&mut buf[rs..rs + rl], rh)?;
        }
        Ok(())
    }

    /// Reads part of one guest cluster at guest offset `pos` given its mapping.
    fn read_mapped(&mut self, m: Mapping, pos: u64, out: &mut [u8]) -> Result<()> {
        match m {
            Mapping::Data { host, .. } => self.read_raw(out, host + (pos & (self.cs - 1))),
            Mapping::Zero { .. } => {
                out.fill(0);
                Ok(())
            }
            Mapping::Unallocated => self.read_backing(out, pos),
            Mapping::Compressed { offset, sectors } => {
                let in_off = (pos & (self.cs - 1)) as usize;
                let data = self.decompress_cluster(offset, sectors)?;
                out.copy_from_slice(&data[in_off..in_off + out.len()]);
                Ok(())
            }
        }
    }

    fn read_backing(&mut self, out: &mut [u8], pos: u64) -> Result<()> {
        let Some(b) = &self.backing else {
            if self.backing_missing {
                return Err(DiskError::Invalid {
                    path: self.path.clone(),
                    reason: "the image needs its backing file, which was not opened".into(),
                });
            }
            out.fill(0);
            return Ok(());
        };
        let bsize = b.size();
        let avail = bsize.saturating_sub(pos).min(out.len() as u64) as usize;
        if avail > 0 {
            b.read_at(&mut out[..avail], pos)?;
        }
        out[avail..].fill(0);
        Ok(())
    }

    /// Whether a mapping reads as zeroes over its whole guest cluster `gc`.
    fn reads_zero(&self, m: Mapping, gc: u64) -> bool {
        match m {
            Mapping::Zero { .. } => true,
            Mapping::Unallocated => match &self.backing {
                None => !self.backing_missing,
                Some(b) => (gc << self.bits) >= b.size(),
            },
            _ => false,
        }
    }

    /// Writes guest bytes, allocating clusters (with copy-on-write) where needed.
    pub(super) fn write(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        let cs = self.cs;
        let mut pieces = Vec::new();
        let mut done = 0usize;
        // Pass 1: mappings and allocations.
        while done < buf.len() {
            let pos = offset + done as u64;
            let gc = pos >> self.bits;
            let in_off = pos & (cs - 1);
            let n = ((cs - in_off) as usize).min(buf.len() - done);
            let m = self.lookup(gc)?;
            if let Mapping::Data { host, copied: true } = m {
                pieces.push(Piece::Direct {
                    host: host + in_off,
                    start: done,
                    len: n,
                });
            } else {
                self.alloc_l2(gc)?;
                let host = self.alloc_clusters(1)?;
                let fresh = host >= self.eof;
                let data = if n as u64 == cs || (fresh && self.reads_zero(m, gc)) {
                    None
                } else {
                    let mut c = vec![0u8; cs as usize];
                    if !self.reads_zero(m, gc) {
                        self.read_mapped(m, gc << self.bits, &mut c)?;
                    }
                    c[in_off as usize..in_off as usize + n].copy_from_slice(&buf[done..done + n]);
                    Some(c)
                };
                pieces.push(Piece::New {
                    gc,
                    host,
                    in_off,
                    start: done,
                    len: n,
                    data,
                    old: m,
                });
            }
            done += n;
        }
        // Pass 2: data, merging runs that are contiguous on both sides.
        let mut run: Option<(u64, usize, usize)> = None;
        for p in &pieces {
            let (h, s, l) = match p {
                Piece::Direct { host, start, len } => (*host, *start, *len),
                Piece::New {
                    host,
                    in_off,
                    start,
                    len,
                    data: None,
                    ..
                } => (host + in_off, *start, *len),
                Piece::New {
                    host,
                    data: Some(d),
                    ..
                } => {
                    if let Some((rh, rs, rl)) = run.take() {
                        self.write_raw(&buf[rs..rs + rl], rh)?;
                    }
                    self.write_raw(d, *host)?;
                    continue;
                }
            };
            match &mut run {
                Some((rh, rs, rl)) if *rh + *rl as u64 == h && *rs + *rl == s => *rl += l,
                _ => {
                    if let Some((rh, rs, rl)) = run.take() {
                        self.write_raw(&buf[rs..rs + rl], rh)?;
                    }
                    run = Some((h, s, l));
                }
            }
        }
        if let Some((rh, rs, rl)) = run {
            self.write_raw(&buf[rs..rs + rl], rh)?;
        }
        // Pass 3: map the new clusters.
        for p in pieces {
            if let Piece::New { gc, host, old, .. } = p {
                self.set_l2(gc, host | COPIED)?;
                self.free_later(old);
            }
        }
        Ok(())
    }

    /// Queues the host clusters an overwritten mapping held for release after the next
    /// L2 write-back.
    pub(super) fn free_later(&mut self, old: Mapping) {
        if let Mapping::Compressed { offset, sectors } = old {
            if self
                .zcache
                .as_ref()
                .is_some_and(|(k, _)| *k == (offset, sectors))
            {
                self.zcache = None;
            }
        }
        let clusters = old.host_clusters(self.bits);
        self.pending_frees.extend(clusters);
    }

    /// Makes whole clusters read as zeroes (or deallocates them); partial clusters at
    /// the edges get explicit zeroes when `explicit` is set, else are left alone.
    fn zero_clusters(&mut self, offset: u64, len: u64, explicit: bool) -> Result<()> {
        let cs = self.cs;
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let gc = pos >> self.bits;
            let cend = ((gc + 1) * cs).min(end);
            let whole = pos & (cs - 1) == 0 && (cend - pos == cs || cend == self.h.size);
            if !whole {
                if explicit {
                    self.write(&vec![0u8; (cend - pos) as usize], pos)?;
                }
                pos = cend;
                continue;
            }
            let m = self.lookup(gc)?;
            let has_backing = self.backing.is_some() || self.backing_missing;
            let new_entry = if self.h.version >= 3 && has_backing {
                Some(ZERO)
            } else if !has_backing {
                Some(0)
            } else {
                None
            };
            match new_entry {
                Some(e) => {
                    let already = matches!(
                        (m, e),
                        (Mapping::Unallocated, 0) | (Mapping::Zero { alloc: None }, ZERO)
                    );
                    if !already {
                        self.set_l2(gc, e)?;
                        self.free_later(m);
                    }
                }
                None if explicit => self.write(&vec![0u8; (cend - pos) as usize], pos)?,
                None => {}
            }
            pos = cend;
        }
        Ok(())
    }

    /// Discards whole clusters in the range; they then read as zeroes.
    pub(super) fn discard(&mut self, offset: u64, len: u64) -> Result<()> {
        self.zero_clusters(offset, len, false)
    }

    /// Makes the range read as zeroes.
    pub(super) fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<()> {
        self.zero_clusters(offset, len, true)
    }

    /// Writes one guest cluster compressed (see [`super::Qcow2Disk::write_compressed`]).
    pub(super) fn write_compressed(
        &mut self,
        guest_offset: u64,
        data: &[u8],
        packed: Option<&[u8]>,
    ) -> Result<()> {
        let cs = self.cs;
        let gc = guest_offset >> self.bits;
        let last = (gc + 1) << self.bits >= self.h.size;
        if guest_offset & (cs - 1) != 0 || (data.len() as u64 != cs && !last) {
            return Err(DiskError::Unsupported(
                "compressed writes of partial clusters",
            ));
        }
        crate::disk::check_range(guest_offset, data.len() as u64, self.h.size)?;
        if self.lookup(gc)? != Mapping::Unallocated {
            return Err(DiskError::Unsupported(
                "compressed writes over allocated clusters",
            ));
        }
        let Some(packed) = packed.filter(|p| (p.len() as u64) < cs - 512) else {
            return self.write(data, guest_offset);
        };
        let len = packed.len() as u64;
        self.alloc_l2(gc)?;
        let off = self.place_compressed(len)?;
        self.write_raw(packed, off)?;
        self.set_l2(gc, encode_compressed(off, len, self.bits))
    }

    /// Finds room for `len` compressed bytes, packing after the previous compressed
    /// cluster when possible; takes one reference on every host cluster touched.
    fn place_compressed(&mut self, len: u64) -> Result<u64> {
        let cs = self.cs;
        if let Some(cur) = self.compress_cursor.filter(|c| c % cs != 0) {
            let room = cs - cur % cs;
            let cur_cluster = cur - cur % cs;
            let extra = len.saturating_sub(room).div_ceil(cs);
            let ok = if extra == 0 {
                true
            } else {
                let got = self.alloc_clusters(extra)?;
                if got == cur_cluster + cs {
                    true
                } else {
                    // Not contiguous: give the clusters back (nothing references them).
                    for i in 0..extra {
                        self.set_refcount((got + i * cs) / cs, 0)?;
                    }
                    self.free_hint = self.free_hint.min(got / cs);
                    false
                }
            };
            let c = cur_cluster / cs;
            let r = self.refcount(c)?;
            if ok && r < super::refcount::rc_max(self.h.refcount_order) {
                self.set_refcount(c, r + 1)?;
                self.compress_cursor = Some(cur + len);
                return Ok(cur);
            }
            if ok && extra > 0 {
                // Narrow refcounts cannot count another sharer: undo, start afresh.
                let got = cur_cluster + cs;
                for i in 0..extra {
                    self.set_refcount((got + i * cs) / cs, 0)?;
                }
                self.free_hint = self.free_hint.min(got / cs);
            }
        }
        let n = len.div_ceil(cs);
        let off = self.alloc_clusters(n)?;
        self.compress_cursor = Some(off + len);
        Ok(off)
    }
}
