//! Opening an image, L1/L2 lookup, L2 table allocation and L1 growth (resize).

use super::cache::TableCache;
use super::entry::{decode_l1, decode_l2, Mapping, COPIED, ZERO};
use super::header::{check_region, incompat, Header, HeaderError, MAX_L1_BYTES};
use super::{Inner, L2CacheSize, REFBLOCK_CACHE};
use crate::disk::{BlockStatus, DiskError, Extent, Result};
use crate::storage::Storage;

fn read_be64_table(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("chunk of 8")))
        .collect()
}

/// Tables the L2 cache holds.
fn l2_tables(size: L2CacheSize, cs: u64) -> usize {
    match size {
        L2CacheSize::Tables(n) => n.max(1),
        L2CacheSize::Bytes(b) => ((b / cs) as usize).max(super::MIN_L2_CACHE_TABLES),
    }
}

impl Inner {
    pub(super) fn open(
        storage: Box<dyn Storage>,
        path: &str,
        read_only: bool,
        l2_cache: L2CacheSize,
    ) -> Result<Inner> {
        let io = |source| DiskError::Io {
            path: path.to_string(),
            source,
        };
        let invalid = |reason: String| DiskError::Invalid {
            path: path.to_string(),
            reason,
        };
        let file_len = storage.len().map_err(io)?;
        let mut probe = vec![0u8; 104.min(file_len as usize)];
        storage.read_at(&mut probe, 0).map_err(io)?;
        let bits = if probe.len() >= 24 {
            u32::from_be_bytes(probe[20..24].try_into().expect("4 bytes"))
        } else {
            0
        };
        let first_len = if (9..=21).contains(&bits) {
            (1u64 << bits).min(file_len)
        } else {
            probe.len() as u64
        };
        let mut first = vec![0u8; first_len as usize];
        storage.read_at(&mut first, 0).map_err(io)?;
        let h = Header::parse(&first, file_len).map_err(|e| match e {
            HeaderError::NotQcow2 => invalid("not a qcow2 image (bad magic)".into()),
            HeaderError::Invalid(m) => invalid(format!("corrupt qcow2 header: {m}")),
            HeaderError::Unsupported(m) => DiskError::UnsupportedImage {
                path: path.to_string(),
                reason: m,
            },
        })?;
        if !read_only {
            let unsupported = |reason: &str| DiskError::UnsupportedImage {
                path: path.to_string(),
                reason: format!("{reason}; open it read-only"),
            };
            if h.incompatible_features & incompat::DIRTY != 0 {
                return Err(unsupported(
                    "the image is dirty (lazy refcounts); run `hako img check -r all`",
                ));
            }
            if h.incompatible_features & incompat::CORRUPT != 0 {
                return Err(unsupported("the image is marked corrupt"));
            }
            if h.nb_snapshots != 0 {
                return Err(unsupported("writing to images with internal snapshots"));
            }
        }
        let cs = h.cluster_size();
        let mut l1_bytes = vec![0u8; h.l1_size as usize * 8];
        storage
            .read_at(&mut l1_bytes, h.l1_table_offset)
            .map_err(io)?;
        let mut rt_bytes = vec![0u8; (h.refcount_table_clusters as u64 * cs) as usize];
        storage
            .read_at(&mut rt_bytes, h.refcount_table_offset)
            .map_err(io)?;
        let mut inner = Inner {
            storage,
            path: path.to_string(),
            bits: h.cluster_bits,
            cs,
            read_only,
            l1: read_be64_table(&l1_bytes),
            l2: TableCache::new(l2_tables(l2_cache, cs)),
            rc_table: read_be64_table(&rt_bytes),
            rc_blocks: TableCache::new(REFBLOCK_CACHE),
            pending_frees: Vec::new(),
            free_hint: 0,
            file_len,
            eof: file_len,
            seq: 0,
            synced: 0,
            rc_seq: 0,
            rc_durable: 0,
            new_l2: Default::default(),
            l1_waiting: Vec::new(),
            backing: None,
            backing_missing: h.backing_file.is_some(),
            zcache: None,
            compress_cursor: None,
            h,
        };
        if !read_only && inner.h.autoclear_features != 0 {
            // Unknown (or unmaintained, e.g. bitmaps) autoclear features must be
            // cleared by a writer that does not keep them up to date.
            inner.write_raw(&0u64.to_be_bytes(), 88)?;
            inner.sync()?;
            inner.h.autoclear_features = 0;
        }
        Ok(inner)
    }

    /// The L2 table at host offset `off`, loaded into the cache if needed.
    pub(super) fn l2_table(&mut self, off: u64) -> Result<&mut Vec<u64>> {
        if !self.l2.contains(off) {
            self.make_room_l2()?;
            let mut bytes = vec![0u8; self.cs as usize];
            self.read_raw(&mut bytes, off)?;
            self.l2.insert(off, read_be64_table(&bytes), false);
        }
        Ok(self.l2.get_mut(off).expect("table was just inserted"))
    }

    /// Evicts the least recently used L2 table if the cache is full, writing it back
    /// first if dirty.
    fn make_room_l2(&mut self) -> Result<()> {
        if self.l2.is_full() {
            if let Some((victim, dirty)) = self.l2.victim() {
                if dirty {
                    self.write_back_l2_ordered(victim)?;
                }
                self.l2.remove(victim);
            }
        }
        Ok(())
    }

    /// Writes one dirty L2 table, first making its dependencies durable if they are
    /// not yet (one refcount write-back and sync; see [`super::cache`]).
    fn write_back_l2_ordered(&mut self, off: u64) -> Result<()> {
        let dep = self.l2.dep(off);
        if dep.rc > self.rc_durable || dep.seq > self.synced {
            self.sync_refcounts()?;
        }
        self.write_back_l2(off)
    }

    /// Writes one cached L2 table to disk (no sync); the caller has made its
    /// dependencies durable. A new table's L1 entry then waits for the next sync.
    pub(super) fn write_back_l2(&mut self, off: u64) -> Result<()> {
        let Some(t) = self.l2.peek(off) else {
            return Ok(());
        };
        let bytes: Vec<u8> = t.iter().flat_map(|e| e.to_be_bytes()).collect();
        self.write_raw(&bytes, off)?;
        self.l2.mark_clean(off);
        if let Some(i) = self.new_l2.remove(&off) {
            self.l1_waiting.push((i, self.seq));
        }
        Ok(())
    }

    /// The L2 table offset for guest cluster `gc`, if one is allocated.
    fn l2_offset(&self, gc: u64) -> Result<Option<u64>> {
        let i = gc / (self.cs / 8);
        let Some(&e) = self.l1.get(i as usize) else {
            return Err(self.invalid(format!("guest cluster {gc} is beyond the L1 table")));
        };
        match decode_l1(e, self.bits) {
            Err(m) => Err(self.invalid(format!("L1 entry {i}: {m}"))),
            Ok(None) => Ok(None),
            Ok(Some((off, copied))) => {
                if let Err(HeaderError::Invalid(m) | HeaderError::Unsupported(m)) =
                    check_region("L2 table", off, self.cs, self.cs, self.file_len)
                {
                    return Err(self.invalid(format!("L1 entry {i}: {m}")));
                }
                if !copied && !self.read_only {
                    return Err(DiskError::UnsupportedImage {
                        path: self.path.clone(),
                        reason: format!("L2 table {off:#x} is shared (snapshot); open read-only"),
                    });
                }
                Ok(Some(off))
            }
        }
    }

    /// Where guest cluster `gc` lives.
    pub(super) fn lookup(&mut self, gc: u64) -> Result<Mapping> {
        let Some(off) = self.l2_offset(gc)? else {
            return Ok(Mapping::Unallocated);
        };
        let idx = (gc % (self.cs / 8)) as usize;
        let entry = self.l2_table(off)?[idx];
        decode_l2(entry, self.bits, self.h.version >= 3)
            .map_err(|m| self.invalid(format!("L2 table {off:#x} entry {idx}: {m}")))
    }

    /// Sets the L2 entry of guest cluster `gc`, allocating the L2 table if needed.
    pub(super) fn set_l2(&mut self, gc: u64, entry: u64) -> Result<()> {
        let off = match self.l2_offset(gc)? {
            Some(off) => off,
            None => self.alloc_l2(gc)?,
        };
        let idx = (gc % (self.cs / 8)) as usize;
        self.l2_table(off)?[idx] = entry;
        self.l2.mark_dirty(off);
        if entry != 0 && entry != ZERO {
            // A (new) cluster is referenced: its refcount and data go first.
            let dep = self.dep_now();
            self.l2.add_dep(off, dep);
        }
        Ok(())
    }

    /// Allocates an empty L2 table for guest cluster `gc` and links it into the L1.
    pub(super) fn alloc_l2(&mut self, gc: u64) -> Result<u64> {
        if let Some(off) = self.l2_offset(gc)? {
            return Ok(off);
        }
        let off = self.alloc_clusters(1)?;
        // The table starts in the cache, dirty, depending on its own refcount; the
        // on-disk L1 entry is written only once the table is durable (see `cache`).
        self.make_room_l2()?;
        let i = gc / (self.cs / 8);
        self.l1[i as usize] = off | COPIED;
        self.l2
            .insert(off, vec![0u64; (self.cs / 8) as usize], true);
        let dep = self.dep_now();
        self.l2.add_dep(off, dep);
        self.new_l2.insert(off, i as usize);
        Ok(off)
    }

    /// Changes the virtual size, growing the L1 table if needed.
    pub(super) fn resize(&mut self, new_size: u64) -> Result<()> {
        // Whole 512-byte sectors, as at creation.
        let new_size = new_size.div_ceil(512).saturating_mul(512);
        if new_size < self.h.size {
            return self.shrink(new_size);
        }
        if new_size > super::header::MAX_VIRTUAL_SIZE {
            return Err(self.invalid(format!("size {new_size} is too large")));
        }
        // After a shrink, the last cluster may hold stale bytes past the old end:
        // they must read as zeroes once they are inside the disk again.
        let old_size = self.h.size;
        let tail_end = old_size.div_ceil(self.cs) * self.cs;
        if old_size % self.cs != 0 && tail_end > old_size {
            let n = tail_end.min(new_size) - old_size;
            self.write_zeroes(old_size, n)?;
        }
        self.flush()?;
        let need = Header::l1_entries_for(self.bits, new_size);
        let old_l1 = (self.h.l1_table_offset, self.h.l1_size as u64);
        if need > self.l1.len() as u64 {
            if need * 8 > MAX_L1_BYTES {
                return Err(self.invalid(format!("size {new_size} needs too large an L1 table")));
            }
            let clusters = (need * 8).div_ceil(self.cs);
            let off = self.alloc_clusters(clusters)?;
            let mut l1 = self.l1.clone();
            l1.resize(need as usize, 0);
            let mut bytes: Vec<u8> = l1.iter().flat_map(|e| e.to_be_bytes()).collect();
            bytes.resize((clusters * self.cs) as usize, 0);
            self.write_raw(&bytes, off)?;
            self.write_dirty_refblocks()?;
            self.sync()?;
            self.l1 = l1;
            self.h.l1_table_offset = off;
            self.h.l1_size = need as u32;
        }
        // size, crypt_method, l1_size, l1_table_offset: bytes 24..48, one write.
        let mut hdr = [0u8; 24];
        hdr[..8].copy_from_slice(&new_size.to_be_bytes());
        hdr[12..16].copy_from_slice(&self.h.l1_size.to_be_bytes());
        hdr[16..].copy_from_slice(&self.h.l1_table_offset.to_be_bytes());
        self.write_raw(&hdr, 24)?;
        self.sync()?;
        self.h.size = new_size;
        if self.h.l1_table_offset != old_l1.0 && old_l1.1 > 0 {
            let old_clusters = (old_l1.1 * 8).div_ceil(self.cs);
            for i in 0..old_clusters {
                self.release_cluster(old_l1.0 + i * self.cs)?;
            }
            self.write_dirty_refblocks()?;
            self.sync()?;
        }
        Ok(())
    }

    /// Shrinks the virtual size: clusters past the new end are deallocated, L2 tables
    /// wholly past it are freed, then the header changes. An interrupted shrink leaves
    /// the old size with a deallocated tail.
    fn shrink(&mut self, new_size: u64) -> Result<()> {
        let cs = self.cs;
        let per_l2 = cs / 8;
        let first_gc = new_size.div_ceil(cs);
        let last_gc = self.h.size.div_ceil(cs);
        for i in first_gc / per_l2..=last_gc.saturating_sub(1) / per_l2 {
            let gc0 = i * per_l2;
            let Some(off) = self.l2_offset(gc0)? else {
                continue;
            };
            for gc in gc0.max(first_gc)..(gc0 + per_l2).min(last_gc) {
                let idx = (gc % per_l2) as usize;
                let entry = self.l2_table(off)?[idx];
                if entry == 0 {
                    continue;
                }
                let m = self.lookup(gc)?;
                self.set_l2(gc, 0)?;
                self.free_later(m);
            }
        }
        // Tables durable, then refcounts lowered.
        self.flush()?;
        let mut freed = Vec::new();
        for i in first_gc.div_ceil(per_l2)..self.l1.len() as u64 {
            if let Some(off) = self.l2_offset(i * per_l2)? {
                self.l1[i as usize] = 0;
                let at = self.h.l1_table_offset + i * 8;
                self.write_raw(&0u64.to_be_bytes(), at)?;
                freed.push(off);
            }
        }
        self.sync()?;
        for off in freed {
            self.l2.remove(off);
            self.release_cluster(off)?;
        }
        self.write_dirty_refblocks()?;
        self.write_raw(&new_size.to_be_bytes(), 24)?;
        self.sync()?;
        self.h.size = new_size;
        Ok(())
    }

    /// See [`crate::Disk::block_status`].
    pub(super) fn block_status(&mut self, offset: u64, len: u64) -> Result<(BlockStatus, u64)> {
        if len == 0 {
            return Ok((BlockStatus::Data, 0));
        }
        let end = offset + len;
        let mut pos = offset;
        let mut status = None;
        while pos < end {
            let gc = pos >> self.bits;
            let chunk_end = ((gc + 1) << self.bits).min(end);
            let s = match self.lookup(gc)? {
                Mapping::Zero { .. } => BlockStatus::Zero,
                Mapping::Data { .. } | Mapping::Compressed { .. } => BlockStatus::Data,
                Mapping::Unallocated => match &self.backing {
                    None if self.backing_missing => BlockStatus::Data,
                    None => BlockStatus::Zero,
                    Some(b) if pos >= b.size() => BlockStatus::Zero,
                    Some(b) => {
                        let n = chunk_end.min(b.size()) - pos;
                        let (s, m) = b.block_status(pos, n)?;
                        if m < n {
                            // Mixed inside this cluster: stop where the status changes.
                            return Ok(match status {
                                None => (s, m),
                                Some(prev) if prev == s => (prev, pos - offset + m),
                                Some(prev) => (prev, pos - offset),
                            });
                        }
                        s
                    }
                },
            };
            match status {
                None => status = Some(s),
                Some(prev) if prev != s => break,
                _ => {}
            }
            pos = chunk_end;
        }
        Ok((status.unwrap_or(BlockStatus::Data), pos - offset))
    }

    /// The `qemu-img map` view of the cluster holding `offset` (clipped to `len`).
    pub(super) fn map_extent(&mut self, offset: u64, len: u64) -> Result<Extent> {
        let gc = offset >> self.bits;
        let within = offset & (self.cs - 1);
        let n = ((gc + 1) << self.bits).min(offset + len) - offset;
        let mut e = Extent {
            len: n,
            data: false,
            zero: true,
            present: true,
            depth: 0,
            offset: None,
            file: self.path.clone(),
        };
        match self.lookup(gc)? {
            Mapping::Zero { .. } => {}
            Mapping::Data { host, .. } => {
                e.data = true;
                e.zero = false;
                e.offset = Some(host + within);
            }
            Mapping::Compressed { .. } => {
                e.data = true;
                e.zero = false;
            }
            Mapping::Unallocated => match &self.backing {
                Some(b) if offset < b.size() => {
                    let mut be = b.map_extent(offset, n.min(b.size() - offset))?;
                    be.depth += 1;
                    return Ok(be);
                }
                Some(_) => {
                    e.present = false;
                    e.depth = 1;
                }
                None if self.backing_missing => {
                    e.data = true;
                    e.zero = false;
                    e.present = false;
                    e.depth = 1;
                }
                None => e.present = false,
            },
        }
        Ok(e)
    }
}
