//! The VM's log of written guest pages, for live migration: one bit per 4 KiB page
//! of each RAM region. Writers that go around the accelerator's own tracking mark
//! it: the devices' DMA (virtio), and on `emu` the CPU's stores. A round of
//! migration takes it (reads and clears every word atomically).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub const PAGE_SHIFT: u32 = 12;

struct Region {
    start: u64,
    len: u64,
    bits: Vec<AtomicU64>,
}

/// Written pages of guest RAM; marking is a no-op while logging is off.
pub struct DirtyLog {
    on: AtomicBool,
    regions: Vec<Region>,
}

impl DirtyLog {
    /// A log for RAM regions `(guest address, length)`.
    pub fn new(ranges: &[(u64, u64)]) -> DirtyLog {
        DirtyLog {
            on: AtomicBool::new(false),
            regions: ranges
                .iter()
                .map(|&(start, len)| Region {
                    start,
                    len,
                    bits: (0..(len >> PAGE_SHIFT).div_ceil(64))
                        .map(|_| AtomicU64::new(0))
                        .collect(),
                })
                .collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Starts or stops logging (starting clears the log).
    pub fn set_enabled(&self, on: bool) {
        if on {
            self.take();
        }
        self.on.store(on, Ordering::SeqCst);
    }

    /// Marks the pages of `[gpa, gpa + len)` written (only the parts that are RAM).
    #[inline]
    pub fn mark(&self, gpa: u64, len: u64) {
        if !self.enabled() || len == 0 {
            return;
        }
        for r in &self.regions {
            let lo = gpa.max(r.start);
            let hi = gpa.saturating_add(len).min(r.start + r.len);
            if lo >= hi {
                continue;
            }
            let first = (lo - r.start) >> PAGE_SHIFT;
            let last = (hi - 1 - r.start) >> PAGE_SHIFT;
            for p in first..=last {
                r.bits[(p / 64) as usize].fetch_or(1 << (p % 64), Ordering::Relaxed);
            }
        }
    }

    /// Marks the page holding `gpa`.
    #[inline]
    pub fn mark_page(&self, gpa: u64) {
        self.mark(gpa & !((1 << PAGE_SHIFT) - 1), 1);
    }

    /// ORs in a bitmap of written pages of the region starting at `start` (page `p`
    /// of it is bit `p % 64` of word `p / 64`, KVM's dirty-log layout). Nothing
    /// happens for an address that starts no region, or while logging is off.
    pub fn mark_bitmap(&self, start: u64, words: &[u64]) {
        if !self.enabled() {
            return;
        }
        if let Some(r) = self.regions.iter().find(|r| r.start == start) {
            for (dst, &w) in r.bits.iter().zip(words) {
                if w != 0 {
                    dst.fetch_or(w, Ordering::Relaxed);
                }
            }
        }
    }

    /// The written pages since the last take, as one bitmap per region (page `p` of
    /// a region is bit `p % 64` of word `p / 64`), clearing the log.
    pub fn take(&self) -> Vec<Vec<u64>> {
        self.regions
            .iter()
            .map(|r| r.bits.iter().map(|w| w.swap(0, Ordering::AcqRel)).collect())
            .collect()
    }

    /// The regions as `(guest address, length)`.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        self.regions.iter().map(|r| (r.start, r.len)).collect()
    }
}

impl std::fmt::Debug for DirtyLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirtyLog")
            .field("on", &self.enabled())
            .field("ranges", &self.ranges())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_only_while_on_and_take_clears() {
        let log = DirtyLog::new(&[(0, 1 << 20), (1 << 32, 64 << 12)]);
        log.mark(0x5000, 1);
        assert!(
            log.take().iter().flatten().all(|&w| w == 0),
            "off: nothing marked"
        );
        log.set_enabled(true);
        log.mark(0x5fff, 2); // straddles pages 5 and 6
        log.mark_page((1 << 32) + 63 * 4096 + 5);
        log.mark(0x20_0000, 4096); // not RAM
        let t = log.take();
        assert_eq!(t[0][0], 0b110_0000);
        assert_eq!(t[1], vec![1 << 63]);
        assert!(log.take().iter().flatten().all(|&w| w == 0), "take clears");
        log.mark_bitmap(1 << 32, &[0b101]);
        log.mark_bitmap(0x1000, &[1]); // not a region's start
        let t = log.take();
        assert_eq!(t[1], vec![0b101]);
        assert!(t[0].iter().all(|&w| w == 0));
    }
}
