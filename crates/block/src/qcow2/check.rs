//! Consistency check: count the references every host cluster really has (header,
//! refcount table and blocks, L1, L2 tables, data) and compare with stored refcounts.

use super::entry::{decode_l1, decode_l2, Mapping, OFFSET_MASK};
use super::refcount::rc_get;
use super::Inner;
use crate::disk::{DiskError, Result};

/// Most clusters a check will track (64 Mi: 128 MiB of counters).
const MAX_CHECK_CLUSTERS: u64 = 64 << 20;
/// Corruption messages kept verbatim (the count is always exact).
const MAX_MESSAGES: usize = 100;

/// The result of a consistency check.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckReport {
    /// Descriptions of corruptions (at most 100; see `corruptions`).
    pub messages: Vec<String>,
    /// Number of corruptions: refcounts too low, bad offsets, wrong COPIED flags.
    pub corruptions: u64,
    /// Clusters whose refcount is higher than their references: (cluster, stored, real).
    pub leaks: Vec<(u64, u64, u64)>,
    /// Host clusters in use (data and metadata).
    pub allocated_clusters: u64,
    /// Guest clusters with data in this image (not zero, not from the backing file).
    pub data_clusters: u64,
    /// Of those, compressed.
    pub compressed_clusters: u64,
    /// Of those, not stored right after the previous guest cluster's data.
    pub fragmented_clusters: u64,
    /// Guest clusters of the virtual disk.
    pub total_clusters: u64,
    /// Length of the image file.
    pub image_end_offset: u64,
}

impl CheckReport {
    fn corrupt(&mut self, msg: String) {
        self.corruptions += 1;
        if self.messages.len() < MAX_MESSAGES {
            self.messages.push(msg);
        }
    }
}

struct Counter {
    refs: Vec<u16>,
    cs: u64,
}

impl Counter {
    fn add(&mut self, r: &mut CheckReport, off: u64, what: &str) {
        if off % self.cs != 0 {
            r.corrupt(format!("{what} at {off:#x} is not cluster aligned"));
            return;
        }
        let c = off / self.cs;
        match self.refs.get_mut(c as usize) {
            Some(n) => *n = n.saturating_add(1),
            None => r.corrupt(format!("{what} at {off:#x} lies past the end of the file")),
        }
    }
}

impl Inner {
    pub(super) fn check(&mut self) -> Result<CheckReport> {
        if self.h.nb_snapshots != 0 {
            return Err(DiskError::UnsupportedImage {
                path: self.path.clone(),
                reason: "checking images with internal snapshots".into(),
            });
        }
        self.flush()?;
        let cs = self.cs;
        let file_len = self.storage.len().map_err(|e| self.io(e))?;
        let nclusters = file_len.div_ceil(cs);
        if nclusters > MAX_CHECK_CLUSTERS {
            return Err(self.invalid(format!("{nclusters} clusters are too many to check")));
        }
        let mut r = CheckReport {
            total_clusters: self.h.size.div_ceil(cs),
            image_end_offset: file_len,
            ..Default::default()
        };
        let mut cnt = Counter {
            refs: vec![0; nclusters as usize],
            cs,
        };
        cnt.add(&mut r, 0, "header");
        for i in 0..self.h.refcount_table_clusters as u64 {
            cnt.add(
                &mut r,
                self.h.refcount_table_offset + i * cs,
                "refcount table",
            );
        }
        // Refcount blocks (validated here so the comparison below can trust them).
        let mut blocks: Vec<Option<u64>> = Vec::with_capacity(self.rc_table.len());
        for (i, &e) in self.rc_table.iter().enumerate() {
            let off = e & OFFSET_MASK;
            let ok = off != 0 && off % cs == 0 && off + cs <= file_len;
            if e != 0 && !ok {
                r.corrupt(format!("refcount table entry {i} ({e:#x}) is invalid"));
            }
            if ok {
                cnt.add(&mut r, off, "refcount block");
            }
            blocks.push(ok.then_some(off));
        }
        let l1_clusters = (self.h.l1_size as u64 * 8).div_ceil(cs);
        for i in 0..l1_clusters {
            cnt.add(&mut r, self.h.l1_table_offset + i * cs, "L1 table");
        }
        let v3 = self.h.version >= 3;
        let mut copied_checks: Vec<(u64, bool, String)> = Vec::new();
        let mut l2 = vec![0u8; cs as usize];
        let mut prev_host: Option<u64> = None;
        for (i, &e) in self.l1.clone().iter().enumerate() {
            let (off, copied) = match decode_l1(e, self.bits) {
                Ok(None) => continue,
                Ok(Some(x)) => x,
                Err(m) => {
                    r.corrupt(format!("L1 entry {i}: {m}"));
                    continue;
                }
            };
            if off + cs > file_len {
                r.corrupt(format!(
                    "L1 entry {i}: L2 table at {off:#x} lies past the end of the file"
                ));
                continue;
            }
            cnt.add(&mut r, off, "L2 table");
            copied_checks.push((off, copied, format!("L2 table at {off:#x}")));
            self.read_raw(&mut l2, off)?;
            for (j, chunk) in l2.chunks_exact(8).enumerate() {
                let entry = u64::from_be_bytes(chunk.try_into().expect("8 bytes"));
                match decode_l2(entry, self.bits, v3) {
                    Err(m) => r.corrupt(format!("L2 table {off:#x} entry {j}: {m}")),
                    Ok(Mapping::Unallocated | Mapping::Zero { alloc: None }) => {}
                    Ok(Mapping::Zero { alloc: Some(h) }) => cnt.add(&mut r, h, "zero cluster"),
                    Ok(Mapping::Data { host, copied }) => {
                        r.data_clusters += 1;
                        if prev_host.is_some_and(|p| p + cs != host) {
                            r.fragmented_clusters += 1;
                        }
                        prev_host = Some(host);
                        cnt.add(&mut r, host, "data cluster");
                        copied_checks.push((host, copied, format!("data cluster at {host:#x}")));
                    }
                    Ok(m @ Mapping::Compressed { .. }) => {
                        r.data_clusters += 1;
                        r.compressed_clusters += 1;
                        for h in m.host_clusters(self.bits) {
                            cnt.add(&mut r, h, "compressed cluster");
                        }
                    }
                }
            }
        }
        // Compare with the stored refcounts.
        let per = self.rc_per_block();
        let order = self.h.refcount_order;
        let mut block = vec![0u8; cs as usize];
        let mut loaded: Option<u64> = None;
        for c in 0..nclusters {
            let b = c / per;
            let s = match blocks.get(b as usize).copied().flatten() {
                None => 0,
                Some(off) => {
                    if loaded != Some(b) {
                        self.read_raw(&mut block, off)?;
                        loaded = Some(b);
                    }
                    rc_get(&block, (c % per) as usize, order)
                }
            };
            let real = cnt.refs[c as usize] as u64;
            if real > 0 {
                r.allocated_clusters += 1;
            }
            if s > real {
                r.leaks.push((c, s, real));
            } else if s < real {
                r.corrupt(format!(
                    "cluster {c} (offset {:#x}) has refcount {s} but {real} references",
                    c * cs
                ));
            }
        }
        for (off, copied, what) in copied_checks {
            let c = off / cs;
            if c >= nclusters {
                continue;
            }
            let s = self.refcount(c).unwrap_or(0);
            if (s == 1) != copied {
                r.corrupt(format!("{what}: COPIED flag {copied} but refcount {s}"));
            }
        }
        Ok(r)
    }

    pub(super) fn repair_leaks(&mut self, report: &CheckReport) -> Result<u64> {
        let mut n = 0;
        for &(c, stored, real) in &report.leaks {
            if self.refcount(c)? == stored {
                self.set_refcount(c, real)?;
                if real == 0 {
                    self.free_hint = self.free_hint.min(c);
                }
                n += 1;
            }
        }
        self.write_dirty_refblocks()?;
        self.sync()?;
        Ok(n)
    }
}
