//! Refcounts: reading and writing refcount blocks, allocating clusters, and growing the
//! refcount table when the image outgrows it.

use super::header::{check_region, HeaderError, MAX_REFTABLE_BYTES};
use super::Inner;
use crate::disk::Result;

/// Reads entry `idx` of a refcount block with `1 << order`-bit entries.
pub fn rc_get(block: &[u8], idx: usize, order: u32) -> u64 {
    let bits = 1usize << order;
    if bits >= 8 {
        let n = bits / 8;
        block[idx * n..idx * n + n]
            .iter()
            .fold(0u64, |v, b| (v << 8) | *b as u64)
    } else {
        let bit = idx * bits;
        ((block[bit / 8] >> (bit % 8)) as u64) & ((1u64 << bits) - 1)
    }
}

/// Writes entry `idx` of a refcount block (the value must fit).
pub fn rc_set(block: &mut [u8], idx: usize, order: u32, value: u64) {
    let bits = 1usize << order;
    if bits >= 8 {
        let n = bits / 8;
        let bytes = value.to_be_bytes();
        block[idx * n..idx * n + n].copy_from_slice(&bytes[8 - n..]);
    } else {
        let bit = idx * bits;
        let mask = (((1u16 << bits) - 1) as u8) << (bit % 8);
        let b = &mut block[bit / 8];
        *b = (*b & !mask) | (((value as u8) << (bit % 8)) & mask);
    }
}

/// Largest refcount a block with `1 << order`-bit entries can hold.
pub fn rc_max(order: u32) -> u64 {
    if order >= 6 {
        u64::MAX
    } else {
        (1u64 << (1u32 << order)) - 1
    }
}

impl Inner {
    /// Refcount entries per refcount block.
    pub(super) fn rc_per_block(&self) -> u64 {
        (self.cs * 8) >> self.h.refcount_order
    }

    /// Loads refcount block `b` into the cache; `false` if the table has no block there.
    fn load_refblock(&mut self, b: u64) -> Result<bool> {
        if self.rc_blocks.contains(b) {
            return Ok(true);
        }
        let Some(&entry) = self.rc_table.get(b as usize) else {
            return Ok(false);
        };
        let off = entry & !(self.cs - 1) & 0x00ff_ffff_ffff_ffff;
        if off == 0 {
            return Ok(false);
        }
        if let Err(HeaderError::Invalid(m) | HeaderError::Unsupported(m)) =
            check_region("refcount block", off, self.cs, self.cs, self.file_len)
        {
            return Err(self.invalid(format!("refcount table entry {b}: {m}")));
        }
        if self.rc_blocks.is_full() {
            if let Some((victim, dirty)) = self.rc_blocks.victim() {
                if dirty {
                    self.write_back_refblock(victim)?;
                }
                self.rc_blocks.remove(victim);
            }
        }
        let mut data = vec![0u8; self.cs as usize];
        self.read_raw(&mut data, off)?;
        self.rc_blocks.insert(b, data, false);
        Ok(true)
    }

    fn write_back_refblock(&mut self, b: u64) -> Result<()> {
        let off = self.rc_table[b as usize] & !(self.cs - 1) & 0x00ff_ffff_ffff_ffff;
        let Some(data) = self.rc_blocks.peek(b) else {
            return Ok(());
        };
        let data = data.clone();
        self.write_raw(&data, off)?;
        self.rc_blocks.mark_clean(b);
        Ok(())
    }

    /// Writes every dirty refcount block (no sync).
    pub(super) fn write_dirty_refblocks(&mut self) -> Result<()> {
        for b in self.rc_blocks.dirty_keys() {
            self.write_back_refblock(b)?;
        }
        Ok(())
    }

    /// The refcount of host cluster `c` (0 where no refcount block exists).
    pub(super) fn refcount(&mut self, c: u64) -> Result<u64> {
        let per = self.rc_per_block();
        let b = c / per;
        if !self.load_refblock(b)? {
            return Ok(0);
        }
        let order = self.h.refcount_order;
        let block = self.rc_blocks.get_mut(b).expect("block was just loaded");
        Ok(rc_get(block, (c % per) as usize, order))
    }

    /// Sets the refcount of host cluster `c`, whose refcount block must exist.
    pub(super) fn set_refcount(&mut self, c: u64, value: u64) -> Result<()> {
        let per = self.rc_per_block();
        let b = c / per;
        if !self.load_refblock(b)? {
            return Err(self.invalid(format!("no refcount block covers cluster {c}")));
        }
        if value > rc_max(self.h.refcount_order) {
            return Err(self.invalid(format!("refcount of cluster {c} overflows")));
        }
        let order = self.h.refcount_order;
        let block = self.rc_blocks.get_mut(b).expect("block was just loaded");
        rc_set(block, (c % per) as usize, order, value);
        self.rc_blocks.mark_dirty(b);
        self.rc_seq += 1;
        Ok(())
    }

    /// Drops one reference on a host cluster (after its referrers are durable).
    pub(super) fn release_cluster(&mut self, host: u64) -> Result<()> {
        let c = host / self.cs;
        let r = self.refcount(c)?;
        if r == 0 {
            tracing::warn!("{}: freeing cluster {host:#x} with refcount 0", self.path);
            return Ok(());
        }
        self.set_refcount(c, r - 1)?;
        if r == 1 {
            self.free_hint = self.free_hint.min(c);
            let _ = self.storage.punch_hole(host, self.cs);
        }
        Ok(())
    }

    /// Makes sure a refcount block covers cluster `c`. Returns `true` if it had to
    /// create metadata (which may occupy `c`): the caller then restarts its search.
    fn ensure_refblock(&mut self, c: u64) -> Result<bool> {
        let per = self.rc_per_block();
        let b = c / per;
        if b >= self.rc_table.len() as u64 {
            self.grow_reftable(b)?;
            return Ok(true);
        }
        if self.load_refblock(b)? {
            return Ok(false);
        }
        // A new block placed at `c` itself, describing itself.
        let mut data = vec![0u8; self.cs as usize];
        rc_set(&mut data, (c % per) as usize, self.h.refcount_order, 1);
        let off = c * self.cs;
        self.write_raw(&data, off)?;
        self.sync()?;
        self.rc_table[b as usize] = off;
        let at = self.h.refcount_table_offset + b * 8;
        self.write_raw(&off.to_be_bytes(), at)?;
        Ok(true)
    }

    /// Whether cluster `c` holds the header, the refcount table or the L1 table. These
    /// are never handed out, even if a corrupt image says their refcount is zero.
    fn is_fixed_metadata(&self, c: u64) -> bool {
        let cs = self.cs;
        let inside = |off: u64, len: u64| c >= off / cs && c < (off + len).div_ceil(cs);
        c == 0
            || inside(
                self.h.refcount_table_offset,
                self.h.refcount_table_clusters as u64 * cs,
            )
            || inside(self.h.l1_table_offset, self.h.l1_size as u64 * 8)
    }

    /// Allocates `n` contiguous free clusters with refcount 1; returns the host offset.
    pub(super) fn alloc_clusters(&mut self, n: u64) -> Result<u64> {
        let max_cluster = (1u64 << 56) / self.cs;
        let mut restarts = 0;
        'search: loop {
            restarts += 1;
            if restarts > 64 {
                // Each restart adds refcount metadata; a sane image needs a few.
                return Err(
                    self.invalid("cannot allocate a cluster: refcount metadata is inconsistent")
                );
            }
            // Past the end of the file nothing is in use (everything allocated in this
            // session counts in `file_len`), so the search never walks far.
            let end = self.file_len.div_ceil(self.cs);
            let mut c = self.free_hint;
            let mut start = c;
            while c - start < n {
                if c >= max_cluster {
                    return Err(self.invalid("image file would exceed the format's limit"));
                }
                if c < end && (self.is_fixed_metadata(c) || self.refcount(c)? != 0) {
                    start = c + 1;
                }
                c += 1;
            }
            for k in start..start + n {
                if self.ensure_refblock(k)? {
                    continue 'search;
                }
            }
            for k in start..start + n {
                self.set_refcount(k, 1)?;
            }
            if n == 1 || start == self.free_hint {
                self.free_hint = start + n;
            }
            self.file_len = self.file_len.max((start + n) * self.cs);
            return Ok(start * self.cs);
        }
    }

    /// Replaces the refcount table with a larger one covering block index `need`.
    /// Placed past the end of the file with new refcount blocks describing it; the
    /// header switches to it only once it is durable, then the old table is freed.
    fn grow_reftable(&mut self, need: u64) -> Result<()> {
        let cs = self.cs;
        let per = self.rc_per_block();
        let per_table_cluster = cs / 8;
        let old_len = self.rc_table.len() as u64;
        let start = self.file_len.div_ceil(cs);
        let mut entries =
            (need + 1).max(old_len * 2).div_ceil(per_table_cluster) * per_table_cluster;
        let (nt, missing) = loop {
            let nt = entries / per_table_cluster;
            let mut missing: Vec<u64> = Vec::new();
            loop {
                let end = start + nt + missing.len() as u64;
                let m: Vec<u64> = (start / per..=(end - 1) / per)
                    .filter(|&b| b >= old_len || self.rc_table[b as usize] == 0)
                    .collect();
                if m.len() == missing.len() {
                    break;
                }
                missing = m;
            }
            let end = start + nt + missing.len() as u64;
            let max_b = (end - 1) / per;
            if max_b < entries && need < entries {
                break (nt, missing);
            }
            entries = (max_b.max(need) + 1).div_ceil(per_table_cluster) * per_table_cluster;
        };
        if entries * 8 > MAX_REFTABLE_BYTES {
            return Err(self.invalid("refcount table would exceed its size limit"));
        }
        let end = start + nt + missing.len() as u64;
        let mut table = self.rc_table.clone();
        table.resize(entries as usize, 0);
        let order = self.h.refcount_order;
        // New blocks, each describing the new clusters it covers.
        for (k, &b) in missing.iter().enumerate() {
            let at = start + nt + k as u64;
            table[b as usize] = at * cs;
            let mut data = vec![0u8; cs as usize];
            for c in (b * per).max(start)..((b + 1) * per).min(end) {
                rc_set(&mut data, (c % per) as usize, order, 1);
            }
            self.write_raw(&data, at * cs)?;
        }
        // Clusters covered by existing blocks.
        for c in start..end {
            let b = c / per;
            if missing.contains(&b) {
                continue;
            }
            if self.refcount(c)? != 0 {
                return Err(self.invalid(format!(
                    "cluster {c} past the end of the file is marked in use"
                )));
            }
            self.set_refcount(c, 1)?;
        }
        self.write_dirty_refblocks()?;
        let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
        self.write_raw(&bytes, start * cs)?;
        self.sync()?;
        let mut hdr = [0u8; 12];
        hdr[..8].copy_from_slice(&(start * cs).to_be_bytes());
        hdr[8..].copy_from_slice(&(nt as u32).to_be_bytes());
        self.write_raw(&hdr, 48)?;
        self.sync()?;
        let old_off = self.h.refcount_table_offset;
        let old_clusters = self.h.refcount_table_clusters as u64;
        self.rc_table = table;
        self.h.refcount_table_offset = start * cs;
        self.h.refcount_table_clusters = nt as u32;
        for i in 0..old_clusters {
            self.release_cluster(old_off + i * cs)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refcount_entries_of_every_width() {
        for order in 0..=6u32 {
            let mut block = vec![0u8; 512];
            let n = (512 * 8) >> order;
            let max = rc_max(order);
            for i in 0..n {
                rc_set(&mut block, i, order, (i as u64 * 7) & max);
            }
            for i in 0..n {
                assert_eq!(
                    rc_get(&block, i, order),
                    (i as u64 * 7) & max,
                    "order {order}"
                );
            }
        }
        // 16-bit entries are big-endian.
        let mut b = vec![0u8; 4];
        rc_set(&mut b, 1, 4, 0x1234);
        assert_eq!(b, [0, 0, 0x12, 0x34]);
        // Sub-byte entries fill from the least significant bit.
        let mut b = vec![0u8; 1];
        rc_set(&mut b, 1, 0, 1);
        assert_eq!(b, [2]);
    }
}
